"""n-player public goods game of DCL's many-player scenario (dcl.md §3.4, §6 D12; paper P:L332–L343,
Appendix 11 P:L963–L973, Table 8).

Each of the n agents (`n_agents`, default 2, any n >= 2) chooses a contribution C^i: action 1 =
contribute, 0 = free-ride. Agent i receives

    R^i = (beta / n) * sum_j C^j - C^i,        beta = `benefit` = 1.5,

so with k contributors the social welfare is (beta - 1) k, a contributor gets beta k / n - 1 and a
free-rider beta k / n. The game is one-shot (`max_steps_in_episode` = 1, D12) and every agent
observes the constant dummy state `[1, 0]`, as in DCL's other one-shot games.
`info["contributors"]`: int32 number of contributors k.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

FREE_RIDE, CONTRIBUTE = 0, 1


@struct.dataclass
class EnvState:
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 1
    benefit: float = 1.5  # beta; a social dilemma for 1 < beta < n


class PublicGoods(Environment):
    """Linear public goods game with `n_agents` players (a shape, so a constructor argument)."""

    def __init__(self, n_agents: int = 2):
        if isinstance(n_agents, bool) or int(n_agents) != n_agents or int(n_agents) < 2:
            raise ValueError(f"n_agents={n_agents!r} is invalid: the game needs an integer n >= 2")
        self.num_agents = int(n_agents)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        beta = np.asarray(params.benefit, np.float32)
        if not np.all(np.isfinite(beta) & (beta > 0)):
            raise ValueError(
                f"benefit={params.benefit!r} is invalid: it must be finite and > 0 "
                f"(a social dilemma needs 1 < benefit < n_agents = {self.num_agents})"
            )

    def reset_env(self, key, params):
        state = EnvState(time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        contrib = (jnp.asarray(actions, jnp.int32) == CONTRIBUTE).astype(jnp.float32)
        contributors = jnp.sum(contrib)
        # The paper's P:L965 writes R^i = beta * sum_j C^j - C^i, but its Table 8 (SW 0.997 for
        # n = 2 at full contribution, not 4) and its range beta in (1, n) only fit the standard
        # beta / n form (dcl.md §3.4, D12).
        reward = jnp.asarray(params.benefit, jnp.float32) / self.num_agents * contributors - contrib
        next_state = EnvState(time=state.time + 1)
        info = {"contributors": contributors.astype(jnp.int32)}
        return self.get_obs(next_state, params), next_state, reward, jnp.asarray(False), info

    def get_obs(self, state, params=None):
        return jnp.tile(jnp.array([1.0, 0.0], jnp.float32), (self.num_agents, 1))

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (2,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)
