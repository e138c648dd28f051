"""The n-player convex prisoner's dilemma of D3C (d3c.md §2.2; paper §3.2, App. E.2).

Player i controls x_i[j], j = 1..n-1: how much it cooperates with its j-th opponent (0 = defect).
Every player k has loss f_k(x) = sum_{(i,j)} (x_ij - C[k, (i,j)])^2 with C[k, (i,j)] = c exactly
when k is player i's j-th opponent, k = ((i - j - 1) mod n) + 1 (1-indexed): each player wants to
defect on everyone, wants the others to defect on each other and to cooperate with it. Defection
is dominant; the Nash total is n(n-1)c^2 and the optimum x_ij = c/n has total (n-1)^2 c^2, so
the price of anarchy is n/(n-1) for every c (errata E1: the paper prints n/(c(n-1))).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg.differentiable import DifferentiableGame


@struct.dataclass
class EnvParams:
    c: float = 1.0  # the cooperation target (paper's main run: n = 10, c = 1)


def opponent_index(n: int) -> np.ndarray:
    """`[n, n-1]`: player i's j-th opponent (0-indexed form of k = ((i - j - 1) mod n) + 1)."""
    i, j = np.indices((n, n - 1))
    return (i - j - 1) % n


class ConvexPD(DifferentiableGame):
    def __init__(self, n_agents: int = 10):
        if isinstance(n_agents, bool) or int(n_agents) != n_agents or int(n_agents) < 2:
            raise ValueError(f"n_agents={n_agents!r} is invalid: the game needs an integer n >= 2")
        self.num_agents = int(n_agents)
        self.strategy_dim = self.num_agents - 1
        self._targets = jnp.asarray(
            opponent_index(self.num_agents)[None] == np.arange(self.num_agents)[:, None, None],
            jnp.float32)  # [k, i, j]: is k player i's j-th opponent

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params) -> None:
        c = np.asarray(params.c, np.float64)
        if not np.all(np.isfinite(c) & (c > 0)):
            raise ValueError(f"c={params.c!r} is invalid: must be finite and > 0")

    def losses(self, x, params):
        return jnp.sum((x[None] - params.c * self._targets) ** 2, axis=(1, 2))

    def social_optimum(self, params):
        return jnp.asarray((self.num_agents - 1) ** 2 * params.c ** 2, jnp.float32)

    def nash_total(self, params):
        return jnp.asarray(self.num_agents * (self.num_agents - 1) * params.c ** 2, jnp.float32)
