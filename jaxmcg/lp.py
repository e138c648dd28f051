"""Small dense linear programs in JAX, and the correlated-equilibrium LP of CE-Q (mge.md §3).

`solve_lp` is a primal-dual interior-point method (Mehrotra's predictor-corrector, Wright 1997,
"Primal-Dual Interior-Point Methods", ch. 10; the inequality form and starting point of Vandenberghe's
CVXOPT notes) for `min c.x s.t. G x <= h, A x = b`. It is written for many small LPs at once: the
shapes are static, the Newton systems are dense Cholesky solves of the `n x n` normal matrix, and the
loop is a `lax.while_loop` that stops at `tol` or `max_iter`, so the whole solve jits and `vmap`s
(vmapped members that finish early are frozen). Float32 needs three safeguards, each tested on CE
LPs: a diagonally scaled normal matrix with one step of iterative refinement, a step that turns
non-finite is retried with more regularisation, and the best iterate seen is returned (float32
iterates stall a little above 1e-6 instead of converging further).

`correlated_equilibrium` builds the CE LP of one state (Greenwald & Hall 2003, "Correlated-Q
learning"): variables sigma over the J = A^M joint actions, one rationality inequality per agent and
pair of own actions, sigma >= 0, sum sigma = 1, and the variant's objective.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.linalg import cho_factor, cho_solve

from jaxmcg import tabular

_GOLDEN = 0.6180339887498949


@struct.dataclass
class LPSolution:
    x: jax.Array  # [n] primal solution
    y: jax.Array  # [p] equality multipliers
    z: jax.Array  # [m] inequality multipliers (>= 0)
    s: jax.Array  # [m] inequality slacks h - G x (>= 0)
    objective: jax.Array  # c.x
    iterations: jax.Array  # int32
    converged: jax.Array  # bool: merit below tol
    merit: jax.Array  # max of the relative primal and dual residuals and the relative duality gap


def _default_tol(dtype) -> float:
    return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def _max_step(v, dv):
    """Largest alpha in (0, 1] with v + alpha dv >= 0 (v > 0)."""
    ratio = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
    return jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf))


def _kkt_factor(G, A, w, reg):
    """Factor the reduced KKT system `[[G^T diag(w) G, A^T], [A, 0]]` by its Schur complement.

    `H = G^T diag(w) G` is factored with a symmetric diagonal scaling to unit diagonal (most of its
    ill-conditioning near the optimum is that scaling) plus `reg` on the scaled diagonal."""
    n = G.shape[1]
    H = (G.T * w) @ G
    d = jnp.sqrt(jnp.maximum(jnp.diag(H), jnp.finfo(H.dtype).tiny))
    hs = H / d[:, None] / d[None, :] + reg * jnp.eye(n, dtype=H.dtype)
    hf = (cho_factor(hs, lower=True), d)
    if A.shape[0] == 0:
        return hf, None, None
    hia = _h_solve(hf, A.T)  # H^-1 A^T
    sf = cho_factor(A @ hia, lower=True)
    return hf, hia, sf


def _h_solve(hf, r):
    chol, d = hf
    scale = d if r.ndim == 1 else d[:, None]
    return cho_solve(chol, r / scale) / scale


def _kkt_solve(fac, A, r1, r2):
    """Solve `H dx + A^T dy = r1, A dx = r2` with the factors of `_kkt_factor`."""
    hf, hia, sf = fac
    hr = _h_solve(hf, r1)
    if sf is None:
        return hr, jnp.zeros((0,), r1.dtype)
    dy = cho_solve(sf, A @ hr - r2)
    return hr - hia @ dy, dy


def _positive_shift(v):
    """CVXOPT's start: `v` itself if strictly positive, else `v + 1 - min(v)`."""
    low = jnp.min(v)
    return jnp.where(low > 0, v, v + (1.0 - low))


def solve_lp(c, G, h, A=None, b=None, *, max_iter: int = 60, tol: float | None = None,
             reg: float | None = None) -> LPSolution:
    """Minimise `c.x` subject to `G x <= h` and `A x = b` (`x` free; put bounds in `G`).

    `c [n]`, `G [m, n]`, `h [m]`, `A [p, n]`, `b [p]` (A, b optional). `G` must have full column
    rank (bounds on every variable do it) and `A` full row rank. The LP must be feasible and
    bounded: there is no infeasibility certificate, and such LPs come back with `converged` False.
    Returns an `LPSolution`; `tol` (default 1e-9 in float64, 1e-6 in float32) bounds the relative
    primal and dual residuals and the relative duality gap.
    """
    c, G, h = jnp.asarray(c), jnp.asarray(G), jnp.asarray(h)
    dtype = jnp.result_type(c, G, h)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    c, G, h = c.astype(dtype), G.astype(dtype), h.astype(dtype)
    n, m = c.shape[-1], h.shape[-1]
    if G.shape != (m, n):
        raise ValueError(f"G has shape {G.shape}; expected (m, n) = {(m, n)} from h and c")
    A = jnp.zeros((0, n), dtype) if A is None else jnp.asarray(A, dtype)
    b = jnp.zeros((0,), dtype) if b is None else jnp.asarray(b, dtype)
    if A.ndim != 2 or A.shape[1] != n or b.shape != (A.shape[0],):
        raise ValueError(f"A {A.shape} and b {b.shape} must be [p, {n}] and [p]")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer")
    tol = _default_tol(dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol={tol!r} must be positive")
    reg = (1e-13 if dtype == jnp.float64 else 1e-7) if reg is None else float(reg)

    # starting point: least-squares primal and least-norm dual, shifted positive (CVXOPT)
    fac0 = _kkt_factor(G, A, jnp.ones(m, dtype), reg)
    x, y = _kkt_solve(fac0, A, G.T @ h, b)
    s = _positive_shift(h - G @ x)
    xd, y = _kkt_solve(fac0, A, -c, jnp.zeros_like(b))
    z = _positive_shift(G @ xd)
    scale_p = 1.0 + jnp.maximum(jnp.max(jnp.abs(h), initial=0.0), jnp.max(jnp.abs(b), initial=0.0))
    scale_d = 1.0 + jnp.max(jnp.abs(c))

    def residuals(x, y, z, s):
        rd = c + G.T @ z + A.T @ y
        rp = G @ x + s - h
        re = A @ x - b
        return rd, rp, re

    def merit(x, y, z, s):
        """Largest of the relative primal residual, dual residual and duality gap."""
        rd, rp, re = residuals(x, y, z, s)
        pres = jnp.maximum(jnp.max(jnp.abs(rp)), jnp.max(jnp.abs(re), initial=0.0)) / scale_p
        # relative to the size of the terms that cancel in rd: the dual optimal set is unbounded
        # when the CE polytope has no interior (a unique pure NE), and z grows large there
        size = scale_d + jnp.max(jnp.abs(G).T @ jnp.abs(z)) + jnp.max(jnp.abs(A).T @ jnp.abs(y),
                                                                     initial=0.0)
        dres = jnp.max(jnp.abs(rd)) / size
        gap = jnp.dot(s, z) / (1.0 + jnp.abs(jnp.dot(c, x)))
        return jnp.maximum(jnp.maximum(pres, dres), gap)

    def body(carry):
        state, best, best_merit, it, reg_now, idle = carry
        x, y, z, s = state
        rd, rp, re = residuals(x, y, z, s)
        mu = jnp.dot(s, z) / m
        w = z / s
        fac = _kkt_factor(G, A, w, reg_now)

        def reduced_solve(r1, r2):
            # one step of iterative refinement against the unregularised system, applied by
            # matvecs: it recovers most of what the float32 factorisation loses
            dx, dy = _kkt_solve(fac, A, r1, r2)
            e1 = r1 - G.T @ (w * (G @ dx)) - A.T @ dy
            ex, ey = _kkt_solve(fac, A, e1, r2 - A @ dx)
            return dx + ex, dy + ey

        def direction(rc):
            # Z ds + S dz = -rc; G dx + ds = -rp; G^T dz + A^T dy = -rd; A dx = -re
            dx, dy = reduced_solve(-rd - G.T @ (w * rp - rc / s), -re)
            dz = w * (G @ dx + rp) - rc / s
            ds = -(rc + s * dz) / z
            return dx, dy, dz, ds

        dx, dy, dz, ds = direction(s * z)  # affine-scaling predictor
        ap, ad = _max_step(s, ds), _max_step(z, dz)
        mu_aff = jnp.dot(s + ap * ds, z + ad * dz) / m
        sigma = jnp.clip(mu_aff / mu, 0.0, 1.0) ** 3
        dx, dy, dz, ds = direction(s * z + ds * dz - sigma * mu)  # Mehrotra corrector
        ap = jnp.minimum(1.0, 0.99 * _max_step(s, ds))
        ad = jnp.minimum(1.0, 0.99 * _max_step(z, dz))
        new = (x + ap * dx, y + ad * dy, z + ad * dz, s + ap * ds)
        ok = jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in new]))
        ok = ok & jnp.all(new[2] > 0) & jnp.all(new[3] > 0)
        new = jax.tree_util.tree_map(lambda a, o: jnp.where(ok, a, o), new, state)
        score = jnp.where(ok, merit(*new), jnp.inf)
        better = score < best_merit
        best = jax.tree_util.tree_map(lambda a, o: jnp.where(better, a, o), new, best)
        idle = jnp.where(score < 0.5 * best_merit, 0, idle + 1)
        # a failed step (a float32 factorisation that broke down) is retried with 100x the
        # regularisation, which decays back by 10x per successful step
        reg_now = jnp.where(ok, jnp.maximum(reg, reg_now / 10), reg_now * 100)
        return new, best, jnp.minimum(score, best_merit), it + 1, reg_now, idle

    def cond(carry):
        _, _, best_merit, it, reg_now, idle = carry
        # float32 stalls a little above tol: stop after 3 steps without halving the merit there
        stuck = (best_merit < 100 * tol) & (idle >= 3)
        return (it < max_iter) & (best_merit >= tol) & (reg_now < 1e-1) & ~stuck

    state = (x, y, z, s)
    init = (state, state, merit(*state), jnp.zeros((), jnp.int32), jnp.asarray(reg, dtype),
            jnp.zeros((), jnp.int32))
    _, (x, y, z, s), best_merit, it, _, _ = jax.lax.while_loop(cond, body, init)
    # float32 iterates may stop improving before tol; the best one found is returned (its merit
    # is below tol in float64, and below about 1e-5 in float32)
    return LPSolution(x=x, y=y, z=z, s=s, objective=jnp.dot(c, x), iterations=it,
                      converged=best_merit < tol, merit=best_merit)


# --------------------------------------------------------------------------------------------
# Correlated equilibria (Greenwald & Hall 2003)


def _deviation_pairs(num_actions: int) -> np.ndarray:
    """`[A (A-1), 2]`: the ordered pairs (a, a') of distinct own actions."""
    a = np.arange(num_actions)
    pairs = np.stack(np.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def rationality_constraints(q: jax.Array, num_actions: int) -> jax.Array:
    """`[M A (A-1), J]` rows `g` with `g . sigma <= 0` iff sigma is a correlated equilibrium of the
    normal-form game with payoffs `q[M, J]`: for agent i told to play a, deviating to a' gains
    `sum_{a_-i} sigma(a, a_-i) (q_i(a', a_-i) - q_i(a, a_-i))`, which must be <= 0."""
    m, j = q.shape
    a = num_actions
    if j != a ** m:
        raise ValueError(f"q has {j} joint actions; num_actions={a} and {m} agents give {a ** m}")
    pairs = _deviation_pairs(a)
    rows = []
    for i in range(m):
        u = jnp.moveaxis(q[i].reshape((a,) * m), i, 0).reshape(a, -1)  # [A own, R others]
        gain = u[pairs[:, 1]] - u[pairs[:, 0]]  # [P, R]
        told = jax.nn.one_hot(pairs[:, 0], a, dtype=q.dtype)  # [P, A]: entries where a_i = a
        full = told[:, :, None] * gain[:, None, :]  # [P, A own, R]
        full = full.reshape((len(pairs), a) + (a,) * (m - 1))
        rows.append(jnp.moveaxis(full, 1, 1 + i).reshape(len(pairs), j))
    return jnp.concatenate(rows)


def _parse_objective(objective: str, num_agents: int):
    if objective in ("utilitarian", "egalitarian"):
        return objective, None
    if isinstance(objective, str) and objective.startswith("libertarian_"):
        idx = objective[len("libertarian_"):]
        if idx.isdigit() and int(idx) < num_agents:
            return "libertarian", int(idx)
    valid = ["utilitarian", "egalitarian"] + [f"libertarian_{i}" for i in range(num_agents)]
    raise ValueError(f"objective={objective!r} is invalid; valid: {', '.join(valid)}")


def tie_break_weights(num_joint: int) -> np.ndarray:
    """`[J]` the fixed secondary objective that picks one vertex among tied optima: the fractional
    parts of `(j + 1) / golden ratio`, distinct and with no short linear relations."""
    return np.mod((np.arange(num_joint) + 1) * _GOLDEN, 1.0)


def correlated_equilibrium(q: jax.Array, num_actions: int, objective: str = "utilitarian",
                           mask: jax.Array | None = None, *, tie_break: float = 1e-4,
                           max_iter: int = 60, tol: float | None = None) -> jax.Array:
    """The correlated equilibrium `sigma[J]` of the normal-form game `q[M, J]` (agent i's payoff of
    joint action j, agent 0 most significant) that maximises `objective`:

    * "utilitarian": `sum_i sigma . q_i` (uCE-Q);
    * "libertarian_<i>": agent i's own `sigma . q_i` (lCE-Q's sigma^i);
    * "egalitarian": `min_i sigma . q_i` (eCE-Q).

    Optima are often not unique (a face of the CE polytope: GG2's two pure NEs and all their
    mixtures are utilitarian). An interior-point method would return the face's analytic centre, a
    mixture; a simplex code, which Greenwald & Hall used, returns a vertex. `tie_break` (relative to
    the payoff scale) adds `tie_break_weights` to the objective so that a vertex is returned, as
    the paper's baselines' pure NEs need (mge.md §4.5); 0 gives the analytic centre. `mask[M, A]`
    (valid own actions) gives probability 0 to joint actions with an invalid action and drops
    deviations to invalid actions. Deviation gains below 1e-6 of the payoff scale count as ties
    (an epsilon-CE with epsilon = 1e-6 max|q|). Jit- and vmap-able (vmap over states); `q` float32
    or float64.
    """
    q = _check_payoffs(q)
    kind, agent = _parse_objective(objective, q.shape[0])
    if kind == "egalitarian":
        weights = None
    elif kind == "utilitarian":
        weights = jnp.ones(q.shape[0], q.dtype)
    else:
        weights = jax.nn.one_hot(agent, q.shape[0], dtype=q.dtype)
    return _ce_lp(q, num_actions, weights, mask, tie_break, max_iter, tol)


def weighted_correlated_equilibrium(q: jax.Array, num_actions: int, weights: jax.Array,
                                    mask: jax.Array | None = None, *, tie_break: float = 1e-4,
                                    max_iter: int = 60, tol: float | None = None) -> jax.Array:
    """As `correlated_equilibrium` with the objective `sum_i weights[i] sigma . q_i` for a traced
    `weights[M] >= 0`, so that one vmapped call (one `while_loop`) solves every agent's
    libertarian LP (`weights` = rows of the identity) at once."""
    q = _check_payoffs(q)
    weights = jnp.asarray(weights, q.dtype)
    if weights.shape != (q.shape[0],):
        raise ValueError(f"weights has shape {weights.shape}; expected {(q.shape[0],)}")
    return _ce_lp(q, num_actions, weights, mask, tie_break, max_iter, tol)


def _check_payoffs(q):
    q = jnp.asarray(q)
    if not jnp.issubdtype(q.dtype, jnp.floating):
        q = q.astype(jnp.float32)
    if q.ndim != 2:
        raise ValueError(f"q has shape {q.shape}; expected [M, J] (use vmap for a batch)")
    return q


def _ce_lp(q, num_actions, weights, mask, tie_break, max_iter, tol):
    """The CE LP of `q[M, J]`: maximise `weights . (sigma . q_i)_i`, or `min_i sigma . q_i` when
    `weights` is None, plus the tie-break; returns sigma[J]."""
    m, j = q.shape
    if isinstance(tie_break, (int, float)) and not tie_break >= 0:  # may also be traced
        raise ValueError(f"tie_break={tie_break!r} must be >= 0")
    dtype = q.dtype
    scale = jnp.max(jnp.abs(q))
    qn = q / jnp.where(scale > 0, scale, 1.0)  # payoffs in [-1, 1]
    g = rationality_constraints(qn, num_actions)
    pairs = np.tile(_deviation_pairs(num_actions), (m, 1))
    owner = np.repeat(np.arange(m), len(_deviation_pairs(num_actions)))
    acts = tabular.joint_actions(m, num_actions)  # [J, M]
    if mask is None:
        allowed = jnp.ones(j, bool)
        row_ok = jnp.ones(len(pairs), bool)
    else:
        mask = jnp.asarray(mask, bool)
        if mask.shape != (m, num_actions):
            raise ValueError(f"mask has shape {mask.shape}; expected {(m, num_actions)}")
        allowed = jnp.all(mask[np.arange(m)[None, :], acts], axis=-1)
        row_ok = mask[owner, pairs[:, 1]]  # no deviation to an invalid action
    # a forbidden joint action leaves every constraint (column zeroed) and costs 1 in the
    # minimisation, so the solver drives it to 0 on its own
    g = jnp.where(allowed[None, :], g, 0.0)
    size = jnp.max(jnp.abs(g), axis=1)
    # rows that are (numerically) zero, e.g. two actions with equal payoffs or Q = 0 at the start,
    # would make the feasible set have no interior: replace them by 0 <= 1
    live = row_ok & (size > 1e-6)
    g = jnp.where(live[:, None], g / jnp.where(live, size, 1.0)[:, None], 0.0)
    h = jnp.where(live, 0.0, 1.0).astype(dtype)
    tb = tie_break * jnp.asarray(tie_break_weights(j), dtype)
    if weights is None:
        c = -tb
    else:
        total = jnp.maximum(jnp.sum(weights), jnp.finfo(dtype).tiny)
        c = -(weights @ qn / total + tb)
    c = jnp.where(allowed, c, 1.0)
    ones = jnp.where(allowed, 1.0, 0.0).astype(dtype)[None, :]
    G = jnp.concatenate([g, -jnp.eye(j, dtype=dtype)])
    h = jnp.concatenate([h, jnp.zeros(j, dtype)])
    if weights is None:
        # egalitarian: x = [sigma, t], maximise t with t <= sigma . q_i for every i
        G = jnp.concatenate([jnp.pad(G, ((0, 0), (0, 1))),
                             jnp.concatenate([-jnp.where(allowed, qn, 0.0),
                                              jnp.ones((m, 1), dtype)], 1)])
        h = jnp.concatenate([h, jnp.zeros(m, dtype)])
        c = jnp.concatenate([c, -jnp.ones(1, dtype)])
        ones = jnp.pad(ones, ((0, 0), (0, 1)))
        # t is bounded below by -1 (payoffs lie in [-1, 1]) so that G has full column rank
        G = jnp.concatenate([G, -jax.nn.one_hot(jnp.array([j]), j + 1, dtype=dtype)])
        h = jnp.concatenate([h, jnp.ones(1, dtype)])
    sol = solve_lp(c, G, h, ones, jnp.ones(1, dtype), max_iter=max_iter, tol=tol)
    sigma = jnp.where(allowed, jnp.maximum(sol.x[:j], 0.0), 0.0)
    return sigma / jnp.sum(sigma)

