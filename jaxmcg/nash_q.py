"""Nash-Q baseline (Hu & Wellman 2003, "Nash Q-learning for general-sum stochastic games", JMLR)
for 2-player tabular games, beside the baselines of `tabular_learners`.

Each agent learns joint-action `Q_i(s, a)`; the value of a state is agent i's payoff of a Nash
equilibrium (sigma_0, sigma_1) of the bimatrix stage game `(Q_0(s, .), Q_1(s, .))`:
`V_i(s) = sigma_0^T Q_i(s) sigma_1`. As `tabular_learners.ce_q` does, and for the same reason
(one stage-game solve per step is far too slow), the updates are synchronous sampled sweeps over
every (state, joint action) pair, with the stage equilibria of all states in one vmapped call.

`stage_nash` finds equilibria by support enumeration over a static table of all pairs of
equal-size supports (Nash equilibria of nondegenerate games have equal-size supports). Every
candidate is verified (non-negative, no profitable deviation), so singular systems and degenerate
ties cannot yield a wrong profile; pure equilibria (size-1 supports) are always found exactly.

Selection rule (Hu & Wellman took the first equilibrium Lemke-Howson returned; ours is
deterministic too): among the verified equilibria with the smallest support size (pure ones when
any exist), the one with the largest sum of the two payoffs, ties (relative 1e-6) broken by the
first in enumeration order: supports in lexicographic order of their action indices, agent 0's
support the slower index (for pure profiles: the lowest joint action index, agent 0 most
significant). If no equal-size-support candidate verifies (possible only in degenerate games), the
candidate with the smallest total regret (an approximate equilibrium) is returned.
"""
from __future__ import annotations

import dataclasses
import itertools
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import tabular
from jaxmcg import tabular_learners as tl


@lru_cache(maxsize=None)
def _support_table(num_actions: int):
    """Static table of all pairs of equal-size supports `(I, J)`.

    Returns `(row_supp [P, A], col_supp [P, A], size [P], src_y [P, A], src_x [P, A])`: `src_y[p,
    r]` is, for the column strategy's variable r, the row-player action whose indifference fills
    equation r (-1: the variable is outside J and fixed to 0); `src_x` likewise with roles swapped.
    """
    a = num_actions
    rows, cols, sizes, src_y, src_x = [], [], [], [], []
    for k in range(1, a + 1):
        for sup_i in itertools.combinations(range(a), k):
            for sup_j in itertools.combinations(range(a), k):
                r_mask = np.isin(np.arange(a), sup_i)
                c_mask = np.isin(np.arange(a), sup_j)
                sy = np.full(a, -1)
                sy[list(sup_j)] = sup_i
                sx = np.full(a, -1)
                sx[list(sup_i)] = sup_j
                rows.append(r_mask)
                cols.append(c_mask)
                sizes.append(k)
                src_y.append(sy)
                src_x.append(sx)
    return (np.array(rows), np.array(cols), np.array(sizes, np.int32), np.array(src_y, np.int32),
            np.array(src_x, np.int32))


def _indifferent_strategy(pay, src):
    """Strategy `y[A]` of one player that makes the other (payoffs `pay[A_other, A]`) indifferent
    over the actions named in `src`, with `y` zero where `src < 0` and summing to 1."""
    a = pay.shape[1]
    eye = jnp.eye(a, dtype=pay.dtype)
    use = (src >= 0)[:, None]
    top = jnp.where(use, pay[jnp.maximum(src, 0)], eye)
    top = jnp.concatenate([top, jnp.where(use, -1.0, 0.0).astype(pay.dtype)], axis=1)
    last = jnp.concatenate([jnp.ones((1, a), pay.dtype), jnp.zeros((1, 1), pay.dtype)], axis=1)
    mat = jnp.concatenate([top, last], axis=0)
    rhs = jnp.zeros(a + 1, pay.dtype).at[a].set(1.0)
    # a singular system (degenerate game) gives non-finite or meaningless values: the caller
    # replaces non-finite ones and verifies every candidate, so none is trusted unchecked
    return _solve_small(mat, rhs)[:a]


def _solve_small(mat, rhs):
    """`mat^-1 rhs` by Gaussian elimination with partial pivoting, unrolled over the (static,
    small) size: batched `jnp.linalg.solve` of thousands of 6x6 systems per sweep made Nash-Q on
    the grid games about 100x slower on a CPU (a LAPACK call per matrix)."""
    n = mat.shape[0]
    aug = jnp.concatenate([mat, rhs[:, None]], axis=1)
    rows = jnp.arange(n)
    for c in range(n):
        piv = jnp.argmax(jnp.where(rows >= c, jnp.abs(aug[:, c]), -1.0))
        r_c, r_p = aug[c], aug[piv]
        aug = aug.at[piv].set(r_c).at[c].set(r_p)
        factor = aug[:, c] / aug[c, c]
        aug = aug - jnp.where((rows != c)[:, None], factor[:, None] * aug[c][None], 0.0)
    return aug[:, n] / jnp.diagonal(aug)


def _regrets(pa, pb, x, y, mask):
    """Each player's best gain from a unilateral deviation to a valid pure action."""
    u0 = pa @ y
    u1 = x @ pb
    g0 = jnp.max(jnp.where(mask[0], u0, -jnp.inf)) - x @ u0
    g1 = jnp.max(jnp.where(mask[1], u1, -jnp.inf)) - u1 @ y
    return g0, g1


def stage_nash(q: jax.Array, num_actions: int, mask: jax.Array | None = None,
               tol: float | None = None):
    """A Nash equilibrium `(sigma_0 [A], sigma_1 [A])` of the bimatrix game `q[2, J]` (joint
    action j = a_0 * A + a_1), over the valid actions `mask[2, A]` (default: all), by support
    enumeration; the selection rule is in the module docstring. `tol` (default 1e-5 in float32,
    1e-9 in float64, relative to the payoff scale) bounds the accepted regret. Jit-able and
    vmappable (no data-dependent shapes)."""
    a = num_actions
    q = jnp.asarray(q)
    if q.shape != (2, a * a):
        raise ValueError(f"q has shape {q.shape}; expected {(2, a * a)}")
    dtype = q.dtype if jnp.issubdtype(q.dtype, jnp.floating) else jnp.float32
    mask = jnp.ones((2, a), bool) if mask is None else jnp.asarray(mask, bool)
    if tol is None:
        tol = 1e-9 if dtype == jnp.float64 else 1e-5
    q = jnp.where(jnp.isfinite(q), q, 0.0).astype(dtype)
    pa = q[0].reshape(a, a)  # row player (agent 0)
    pb = q[1].reshape(a, a)  # column player (agent 1)
    scale = 1.0 + jnp.max(jnp.abs(q))
    row_supp, col_supp, sizes, src_y, src_x = map(jnp.asarray, _support_table(a))

    def candidate(r_s, c_s, sy, sx):
        y = _indifferent_strategy(pa, sy)
        x = _indifferent_strategy(pb.T, sx)
        in_mask = jnp.all(~r_s | mask[0]) & jnp.all(~c_s | mask[1])
        finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
        nonneg = (jnp.min(x) >= -tol) & (jnp.min(y) >= -tol)
        x = jnp.where(finite, jnp.clip(jnp.where(r_s, x, 0.0), 0.0), r_s.astype(dtype))
        y = jnp.where(finite, jnp.clip(jnp.where(c_s, y, 0.0), 0.0), c_s.astype(dtype))
        x = x / jnp.maximum(jnp.sum(x), 1e-30)
        y = y / jnp.maximum(jnp.sum(y), 1e-30)
        g0, g1 = _regrets(pa, pb, x, y, mask)
        regret = jnp.where(in_mask & finite, g0 + g1, jnp.inf)
        is_ne = in_mask & finite & nonneg & (jnp.maximum(g0, g1) <= tol * scale)
        welfare = x @ (pa + pb) @ y
        return x, y, is_ne, regret, welfare

    xs, ys, is_ne, regret, welfare = jax.vmap(candidate)(row_supp, col_supp, src_y, src_x)
    k_min = jnp.min(jnp.where(is_ne, sizes, a + 1))
    pool = is_ne & (sizes == k_min)
    w = jnp.where(pool, welfare, -jnp.inf)
    best = jnp.max(w)
    top = pool & (w >= best - 1e-6 * (1.0 + jnp.abs(best)))
    pick = jnp.where(jnp.any(is_ne), jnp.argmax(top), jnp.argmin(regret))
    return xs[pick], ys[pick]


@dataclasses.dataclass(frozen=True)
class NashQConfig:
    """Nash-Q with synchronous sampled updates (module docstring). Defaults as `CEQConfig`:
    mge.md §3 for gamma and the final learning rate; the rest ours."""

    gamma: float = 0.9  # mge.md §3
    num_iterations: int = 500  # sweeps over all (state, joint action) pairs, as CEQConfig
    lr_init: float = 1.0  # ours: the first sweep is a sampled Bellman backup
    lr_final: float = 0.001  # mge.md §3: "learning rate decaying to 0.001"

    def __post_init__(self):
        tl._check_common(self)
        tl._positive_int("num_iterations", self.num_iterations)


@struct.dataclass
class NashQResult:
    q: jax.Array  # [2, S, J] joint-action Q_i(s, a)
    sigmas: jax.Array  # [2, S, A] the stage Nash strategies of the final Q
    values: jax.Array  # [2, S] V_i(s) = sigma_0^T Q_i(s) sigma_1 (0 in absorbing states)
    joint_policy: jax.Array  # [S, J] the product of the two stage-Nash strategies
    delta: jax.Array  # [num_iterations] max |Q change| of each sweep


def stage_equilibria(q: jax.Array, game: tabular.TabularGame):
    """Stage Nash equilibria of `q[2, S, J]` in every state: `(sigmas [2, S, A], values [2, S])`;
    values are 0 in absorbing states."""
    a = game.num_actions
    x, y = jax.vmap(lambda qq, mk: stage_nash(qq, a, mk))(
        jnp.moveaxis(q, 1, 0), jnp.moveaxis(game.action_mask, 1, 0))
    sigmas = jnp.stack([x, y])
    pi = tabular.joint_policy(sigmas)  # [S, J]
    values = jnp.einsum("sj,msj->ms", pi, q)
    return sigmas, jnp.where(game.absorbing[None], 0.0, values)


def nash_q(key, game: tabular.TabularGame, config: NashQConfig = NashQConfig()) -> NashQResult:
    """Nash-Q by synchronous sampled sweeps:

        Q_i(s, a) <- Q_i(s, a) + lr_t (r_i(s, a) + gamma V_i(s') - Q_i(s, a)),  s' ~ P(. | s, a),

    for all (s, a) at once, with `V_i` from the stage Nash equilibria of the current Q. Raises
    ValueError unless the game has 2 agents. Returns a `NashQResult`.
    """
    if game.num_agents != 2:
        raise ValueError(f"nash_q needs a 2-player game; this one has {game.num_agents} agents")
    tabular.validate_game(game)
    q, sigmas, values, delta = _nash_q(key, game, config)
    return NashQResult(q=q, sigmas=sigmas, values=values,
                       joint_policy=tabular.joint_policy(sigmas), delta=delta)


@partial(jax.jit, static_argnames=("config",))
def _nash_q(key, game, config):
    solve = lambda q: stage_equilibria(q, game)
    return tl.sampled_sweeps(key, game, solve, config, (2, game.num_states, game.num_actions))
