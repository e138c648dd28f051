"""The Braess traffic network of D3C (d3c.md §2.1; paper §3.1, App. E.1).

Four drivers commute from S to E over the routes top (S-A-E), bottom (S-B-E) and, with the shortcut
edge AB, shortcut (S-A-B-E). Edge SA costs `F * n_sa`, BE `G * n_be`, AE `C`, SB `D`, AB `E`, so
with route counts `n` the route times are `M n + b`, M = [[F,0,F],[0,G,G],[F,G,F+G]], b = (C,D,E).

A driver's strategy is a mixed route choice parametrised by softmax logits (d3c.md §2.1
recommendation; the paper does not say), and its loss is the exact expected commute

    E[l_i] = b.x_i + diag(M).x_i + x_i^T M sum_{j != i} x_j .

The default constants (F, G, C, D, E) = (10, 10, 45, 45, 0) give the paper's 65 minutes without
AB and 80 at the all-shortcut Nash equilibrium with it (inferred in d3c.md §2.1, verified there by
enumeration): PoA 80/65. `random_networks` is the paper's Algorithm 4 generator.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg.differentiable import DifferentiableGame

NUM_DRIVERS = 4


@struct.dataclass
class EnvParams:
    F: float = 10.0  # SA cost per driver
    G: float = 10.0  # BE cost per driver
    C: float = 45.0  # AE constant
    D: float = 45.0  # SB constant
    E: float = 0.0  # AB constant (the shortcut)


def route_matrix(params, shortcut: bool):
    """`(M, b)` of the route times `M n + b`."""
    f, g = params.F, params.G
    z = jnp.zeros_like(jnp.asarray(f, jnp.float32))
    m = jnp.array([[f, z, f], [z, g, g], [f, g, f + g]])
    b = jnp.array([params.C, params.D, params.E])
    return (m, b) if shortcut else (m[:2, :2], b[:2])


def _count_vectors(num_routes: int) -> np.ndarray:
    """Every split of the 4 drivers over the routes, `[K, routes]`."""
    return np.array([c for c in itertools.product(range(NUM_DRIVERS + 1), repeat=num_routes)
                     if sum(c) == NUM_DRIVERS], np.float32)


class Braess(DifferentiableGame):
    """4 drivers; `shortcut` (a shape: 3 routes with it, 2 without) is a constructor argument."""

    def __init__(self, shortcut: bool = True):
        if not isinstance(shortcut, (bool, np.bool_)):
            raise ValueError(f"shortcut={shortcut!r} is invalid: must be True or False")
        self.shortcut = bool(shortcut)
        self.num_agents = NUM_DRIVERS
        self.strategy_dim = 3 if self.shortcut else 2

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params) -> None:
        for name in ("F", "G", "C", "D", "E"):
            v = np.asarray(getattr(params, name), np.float64)
            if not np.all(np.isfinite(v) & (v >= 0)):
                raise ValueError(f"{name}={getattr(params, name)!r} is invalid: edge costs must be "
                                 "finite and >= 0")

    def route_probabilities(self, x):
        return jax.nn.softmax(x, axis=-1)

    def losses(self, x, params):
        p = self.route_probabilities(x)  # [4, routes]
        m, b = route_matrix(params, self.shortcut)
        others = jnp.sum(p, axis=0, keepdims=True) - p
        return p @ (b + jnp.diag(m)) + jnp.einsum("ir,rs,is->i", p, m, others)

    def init_strategies(self, key, params):
        return jax.random.normal(key, (self.num_agents, self.strategy_dim))  # d3c.md A3

    def route_totals(self, params):
        """Total commute of every count vector: `(counts[K, routes], totals[K])`."""
        counts = _count_vectors(self.strategy_dim)
        m, b = route_matrix(params, self.shortcut)
        n = jnp.asarray(counts)
        return counts, jnp.sum(n * (n @ m.T + b), axis=-1)

    def social_optimum(self, params):
        # M = F u u^T + G v v^T is PSD, so the expected total is a convex combination of pure
        # profiles' totals and the best pure split is the optimum (d3c.md §2.1)
        return jnp.min(self.route_totals(params)[1])

    def max_commute(self, x, params):
        """The longest expected commute among the drivers (Fig. 3's rho_max before normalising)."""
        return jnp.max(self.losses(x, params))


def random_networks(num: int, seed: int = 0, gap: float = 10.0) -> EnvParams:
    """`num` networks of the paper's Algorithm 4, stacked for `vmap` (d3c.md §2.1, A13).

    F, G ~ U{1..20}, C ~ U{4G+10..4G+20}, D ~ U{4F+10..4F+20}, and E uniform on
    {ceil(E_min)..E_max - 1} with E_min = max((tau_opt + gap)/4 - 4(F+G), 0) and
    E_max = min(C - 4G, D - 4F); excluding E_max keeps the shortcut strictly dominant, so the
    all-shortcut profile is the unique pure equilibrium (A13: gap Delta = 10)."""
    if int(num) < 1:
        raise ValueError(f"num={num!r} is invalid: must be a positive integer")
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < num:
        f, g = rng.integers(1, 21, size=2)
        c = rng.integers(4 * g + 10, 4 * g + 21)
        d = rng.integers(4 * f + 10, 4 * f + 21)
        n_sa = np.arange(1, 4)
        n_be = NUM_DRIVERS - n_sa
        tau_opt = np.min(n_sa * (f * n_sa + c) + n_be * (g * n_be + d))
        e_min = int(np.ceil(max((tau_opt + gap) / 4 - 4 * (f + g), 0)))
        e_max = min(c - 4 * g, d - 4 * f)
        if e_min < e_max:
            rows.append((f, g, c, d, rng.integers(e_min, e_max)))
    a = np.array(rows, np.float32)
    return EnvParams(F=jnp.asarray(a[:, 0]), G=jnp.asarray(a[:, 1]), C=jnp.asarray(a[:, 2]),
                     D=jnp.asarray(a[:, 3]), E=jnp.asarray(a[:, 4]))
