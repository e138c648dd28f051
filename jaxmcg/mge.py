"""Markov-game equilibria with exploring agents (Etesami & Straehle 2020; mge.md §1-§5).

Every agent plays the Boltzmann policy `pi_i = softmax(beta Q_i)` over its own action given the
joint state, and the agents' Q-functions are coupled through the others' policies (eq. 3-8): a
logit quantal-response equilibrium of the Markov game.

- `mge_finite` is MGE-F (Alg. 2 with the damped update eq. 14): backward induction over the
  decisions tau = T-1..0, where each stage is a batch of independent one-shot logit QREs, one per
  joint state, with the stage payoff `u_i = R_i + E[V_i^{tau+1}(x')]` fixed (mge.md §1.4).
  `value="lse"` (`mmce_finite`) replaces the expectation value (eq. 4) by log-sum-exp / beta,
  the multi-agent maximum-causal-entropy recursion (Theorem 4, mge.md §1.9).
- `mge_finite_fixed` runs a fixed number of inner iterations per stage (`lax.scan`): it returns
  the residual of every inner iteration (Fig. 3) and can be differentiated (mge.md §5.7).
- `mge_infinite` is MGE-I (Alg. 1 as a joint solver, mge.md §1.6, §5.4).
- `theorem1`, `theorem2`, `theorem3` and `certificate` check the uniqueness conditions (§1.5);
  `detect_multiplicity` looks for several stage QREs by random restarts (§5.9 #4).
- `expected_features` gives Theorem 5's `E[F_i]` (§5.5).

Solvers are jitted with the horizon, `value` and `order` static, and `vmap` over `beta`, `alpha`,
`eps` and stacked games of one shape. Argument checks run before compiling and are skipped for
traced values (inside `vmap`).
"""
from __future__ import annotations

import functools
import string

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import logsumexp

from jaxmcg import tabular
from jaxmcg.sweep import concrete
from jaxmcg.tabular import TabularGame

VALUES = ("expect", "lse")
ORDERS = ("jacobi", "gs")


@struct.dataclass
class Solution:
    """MGE-F: `q`, `pi` `[T, M, S, A]` (decision tau = 0..T-1), `value` `[T + 1, M, S]` (`value[T]`
    is the final reward), `iterations`, `residual`, `converged` `[T]` per stage.
    MGE-I: `q`, `pi` `[M, S, A]`, `value` `[M, S]` and scalar diagnostics."""

    q: jax.Array
    pi: jax.Array
    value: jax.Array
    iterations: jax.Array
    residual: jax.Array  # sup-norm change of the last inner iteration
    converged: jax.Array  # residual < eps


# --------------------------------------------------------------------------------------------
# kernels (mge.md §5.2)


def boltzmann(q: jax.Array, beta, mask: jax.Array) -> jax.Array:
    """`softmax(beta q)` over the last axis restricted to `mask`; masked entries are exactly 0.

    The fill is `finfo.min`, not `-inf`, so that gradients stay finite (mge.md §5.9 #1)."""
    logits = jnp.where(mask, beta * q, jnp.finfo(q.dtype).min)
    return jax.nn.softmax(logits, axis=-1)


def value_expect(q: jax.Array, pi: jax.Array, mask: jax.Array) -> jax.Array:
    """Eq. 4: `sum_a pi(a) q(a)` over valid actions (masked `q` is never multiplied, so a `-inf`
    or garbage entry cannot give `0 * inf = NaN`)."""
    return jnp.sum(pi * jnp.where(mask, q, 0.0), axis=-1)


def value_lse(q: jax.Array, beta, mask: jax.Array) -> jax.Array:
    """Theorem 4 / Remark 1: `log sum_a exp(beta q(a)) / beta` over valid actions."""
    return logsumexp(beta * q, axis=-1, where=mask) / beta


def others_expectation(u_i: jax.Array, pis: jax.Array, i: int) -> jax.Array:
    """`sum_{a_-i} prod_{j != i} pis[j, s, a_j] u_i[s, a]`: agent i's expected payoff `[S, A]` of
    each own action against the others' policies.

    `u_i` is a joint-action payoff `[S, J]` (agent 0's action most significant), `pis` is
    `[M, S, A]`. The einsum is built at trace time (M static, mge.md §5.2)."""
    m, s, a = pis.shape
    acts = string.ascii_lowercase[:m]
    terms = ["z" + acts] + ["z" + acts[j] for j in range(m) if j != i]
    others = [pis[j] for j in range(m) if j != i]
    return jnp.einsum(",".join(terms) + "->z" + acts[i], u_i.reshape((s,) + (a,) * m), *others)


def stage_payoff(game: TabularGame, value_next: jax.Array) -> jax.Array:
    """`u_i(x, a) = R_i(x, a) + sum_x' P(x' | x, a) V_i(x')`: the stage game `[M, S, J]` given the
    next values `value_next[M, S]` (mge.md §1.4)."""
    return game.reward + tabular.expected_next(game, value_next)


def _best_responses(u, pis, mask):
    """`U_i(Q_-i)` for every agent, `[M, S, A]`, zero on masked actions."""
    qn = jnp.stack([others_expectation(u[i], pis, i) for i in range(pis.shape[0])])
    return jnp.where(mask, qn, 0.0)


def _sweep(u, q, beta, alpha, mask, order):
    """One damped inner iteration (eq. 14). Jacobi: every agent responds to the same `Q^s`
    (Alg. 2 line 9). Gauss-Seidel: agents update in turn against the others' fresh policies
    (mge.md §5.3)."""
    pis = boltzmann(q, beta, mask)
    if order == "jacobi":
        return alpha * _best_responses(u, pis, mask) + (1.0 - alpha) * q
    for i in range(q.shape[0]):
        qi = alpha * jnp.where(mask[i], others_expectation(u[i], pis, i), 0.0) + (1.0 - alpha) * q[i]
        q = q.at[i].set(qi)
        pis = pis.at[i].set(boltzmann(qi, beta, mask[i]))
    return q


def _residual(q_new, q):
    return jnp.max(jnp.abs(q_new - q))


def stage_qre(u, mask, beta, q0, alpha=0.5, eps=1e-6, max_iter=10_000, order="jacobi"):
    """Inner loop of MGE-F (Alg. 2 lines 7-13): damped iteration from `q0[M, S, A]` on the stage
    game `u[M, S, J]` until the sup-norm change is below `eps` or `max_iter` iterations ran.
    Returns `(q, residual, iterations)`; stops at the *first* residual below `eps` (§5.9 #4)."""
    def cond(carry):
        _, res, it = carry
        return (res >= eps) & (it < max_iter)

    def body(carry):
        q, _, it = carry
        q_new = _sweep(u, q, beta, alpha, mask, order)
        return q_new, _residual(q_new, q), it + 1

    init = (q0, jnp.asarray(jnp.inf, q0.dtype), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, init)


def stage_qre_fixed(u, mask, beta, q0, alpha, num_iters, order="jacobi"):
    """`num_iters` damped inner iterations by `lax.scan` (differentiable, fixed cost). Returns
    `(q, trace[num_iters])`, the residual of every iteration (mge.md §5.7, §5.8)."""
    def body(q, _):
        q_new = _sweep(u, q, beta, alpha, mask, order)
        return q_new, _residual(q_new, q)

    return jax.lax.scan(body, q0, None, length=num_iters)


def _finish(u, q, beta, mask, value):
    """Alg. 2 lines 14-18: one more undamped application `Qhat = U(Q)`, its policy and value."""
    q_hat = _best_responses(u, boltzmann(q, beta, mask), mask)
    pi = boltzmann(q_hat, beta, mask)
    v = value_expect(q_hat, pi, mask) if value == "expect" else value_lse(q_hat, beta, mask)
    return q_hat, pi, v


# --------------------------------------------------------------------------------------------
# argument checks (before compiling; traced values inside vmap are not checked)


def _check_range(name, x, ok, valid):
    if not concrete(x):
        return
    arr = np.asarray(x, dtype=np.float64)
    if not (np.all(np.isfinite(arr)) and np.all(ok(arr))):
        raise ValueError(f"{name}={x!r} is invalid: valid values are {valid}")


def _check_int(name, x, low):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or int(x) < low:
        raise ValueError(f"{name}={x!r} is invalid: it must be an integer >= {low}")


def _check_common(game, beta, alpha, eps, max_iter, value, order):
    if not isinstance(game, TabularGame):
        raise ValueError(f"game must be a tabular.TabularGame, got {type(game).__name__}")
    _check_range("beta", beta, lambda b: b > 0, "finite beta > 0")
    _check_range("alpha", alpha, lambda a: (a > 0) & (a <= 1), "alpha in (0, 1]")
    _check_range("eps", eps, lambda e: e > 0, "eps > 0")
    if concrete(max_iter):
        arr = np.asarray(max_iter)
        if arr.dtype.kind not in "iu" or np.any(arr < 1):
            raise ValueError(f"max_iter={max_iter!r} is invalid: it must be an integer >= 1")
    if value not in VALUES:
        raise ValueError(f"value={value!r} is invalid: valid values are {VALUES}")
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is invalid: valid values are {ORDERS}")


def _dtype(game):
    return game.reward.dtype


# --------------------------------------------------------------------------------------------
# MGE-F / MMCE-F (mge.md §1.7, §5.3)


def mge_finite(game: TabularGame, horizon: int, beta=1.0, alpha=0.5, eps=1e-6, max_iter=10_000,
               value: str = "expect", order: str = "jacobi", q_init=None) -> Solution:
    """MGE-F (Alg. 2, damped eq. 14) over `horizon` decisions with `V^T = R_F`.

    Each stage iterates from the previous stage's inner iterate (warm start, Alg. 2 line 14;
    zeros, or `q_init[M, S, A]`, at tau = T-1, mge.md §6 #13) until the sup-norm change is below
    `eps` (§6 #12), then applies the stage map once more undamped for `Q^tau`, `pi^tau` and `V^tau`.
    `value="lse"` gives MMCE-F. Returns a `Solution` with `[T, ...]` fields in time order.
    """
    _check_common(game, beta, alpha, eps, max_iter, value, order)
    _check_int("horizon", horizon, 1)
    return _mge_finite(game, beta, alpha, eps, max_iter, _q0(game, q_init),
                       horizon=int(horizon), value=value, order=order)


def mmce_finite(game: TabularGame, horizon: int, beta=1.0, alpha=0.5, eps=1e-6, max_iter=10_000,
                order: str = "jacobi", q_init=None) -> Solution:
    """MMCE-F: `mge_finite` with the log-sum-exp value (Theorem 4). For the paper's MCE problem
    with decisions at tau = 0..T use `horizon = T + 1`, zero final reward and `beta = 1` (§1.9)."""
    return mge_finite(game, horizon, beta, alpha, eps, max_iter, "lse", order, q_init)


def _q0(game, q_init):
    """The initial inner iterate (zeros by default, mge.md §6 #13), always an array so that the
    default and a given start share one compilation."""
    shape = (game.num_agents, game.num_states, game.num_actions)
    return jnp.zeros(shape, _dtype(game)) if q_init is None else jnp.asarray(q_init, _dtype(game))


@functools.partial(jax.jit, static_argnames=("horizon", "value", "order"))
def _mge_finite(game, beta, alpha, eps, max_iter, q_init, *, horizon, value, order):
    dt = _dtype(game)
    beta, alpha, eps = (jnp.asarray(x, dt) for x in (beta, alpha, eps))
    mask = game.action_mask

    def stage(carry, _):
        v_next, q_warm = carry
        u = stage_payoff(game, v_next)  # once per stage, not in the inner loop (§5.9 #8)
        q, res, it = stage_qre(u, mask, beta, q_warm, alpha, eps, max_iter, order)
        q_hat, pi, v = _finish(u, q, beta, mask, value)
        return (v, q), (q_hat, pi, v, it, res)

    init = (game.final_reward.astype(dt), q_init)
    _, (q, pi, v, it, res) = jax.lax.scan(stage, init, None, length=horizon, reverse=True)
    values = jnp.concatenate([v, game.final_reward.astype(dt)[None]])
    return Solution(q=q, pi=pi, value=values, iterations=it, residual=res, converged=res < eps)


def mge_finite_fixed(game: TabularGame, horizon: int, num_iters: int, beta=1.0, alpha=0.5,
                     eps=1e-6, value: str = "expect", order: str = "jacobi", q_init=None):
    """MGE-F with exactly `num_iters` inner iterations per stage (`lax.scan`, differentiable).

    Returns `(solution, trace)`: `trace[T, num_iters]` is the sup-norm change of every inner
    iteration of every stage (Fig. 3 plots `trace[T - 1]`, the first backward stage, mge.md §8.2);
    `solution.converged` is `trace[:, -1] < eps`."""
    _check_common(game, beta, alpha, eps, 1, value, order)
    _check_int("horizon", horizon, 1)
    _check_int("num_iters", num_iters, 1)
    return _mge_finite_fixed(game, beta, alpha, eps, _q0(game, q_init), horizon=int(horizon),
                             num_iters=int(num_iters), value=value, order=order)


@functools.partial(jax.jit, static_argnames=("horizon", "num_iters", "value", "order"))
def _mge_finite_fixed(game, beta, alpha, eps, q_init, *, horizon, num_iters, value, order):
    dt = _dtype(game)
    beta, alpha, eps = (jnp.asarray(x, dt) for x in (beta, alpha, eps))
    mask = game.action_mask

    def stage(carry, _):
        v_next, q_warm = carry
        u = stage_payoff(game, v_next)
        q, trace = stage_qre_fixed(u, mask, beta, q_warm, alpha, num_iters, order)
        q_hat, pi, v = _finish(u, q, beta, mask, value)
        return (v, q), (q_hat, pi, v, trace)

    init = (game.final_reward.astype(dt), q_init)
    _, (q, pi, v, trace) = jax.lax.scan(stage, init, None, length=horizon, reverse=True)
    values = jnp.concatenate([v, game.final_reward.astype(dt)[None]])
    iters = jnp.full((horizon,), num_iters, jnp.int32)
    sol = Solution(q=q, pi=pi, value=values, iterations=iters, residual=trace[:, -1],
                   converged=trace[:, -1] < eps)
    return sol, trace


# --------------------------------------------------------------------------------------------
# MGE-I (mge.md §1.6, §5.4)


def mge_infinite(game: TabularGame, gamma, beta=1.0, alpha=0.2, eps=1e-6, max_iter=20_000,
                 value: str = "expect", order: str = "jacobi", q_init=None) -> Solution:
    """MGE-I as a joint solver (all agents Jacobi, or Gauss-Seidel; damped, eq. 14):
    `Q_i <- alpha E_{pi_-i}[R_i + gamma E V_i(x')] + (1 - alpha) Q_i` until the sup-norm change is
    below `eps`. Values of absorbing states are 0 (the episode has ended, §5.4). Returns a
    `Solution` with `q`, `pi` `[M, S, A]`, `value` `[M, S]` and scalar diagnostics."""
    _check_common(game, beta, alpha, eps, max_iter, value, order)
    _check_range("gamma", gamma, lambda g: (g >= 0) & (g < 1), "gamma in [0, 1)")
    return _mge_infinite(game, gamma, beta, alpha, eps, max_iter, _q0(game, q_init), value=value,
                         order=order)


@functools.partial(jax.jit, static_argnames=("value", "order"))
def _mge_infinite(game, gamma, beta, alpha, eps, max_iter, q_init, *, value, order):
    dt = _dtype(game)
    gamma, beta, alpha, eps = (jnp.asarray(x, dt) for x in (gamma, beta, alpha, eps))
    mask = game.action_mask

    def values(q):
        v = value_expect(q, boltzmann(q, beta, mask), mask) if value == "expect" \
            else value_lse(q, beta, mask)
        return jnp.where(game.absorbing, 0.0, v)

    def cond(carry):
        _, res, it = carry
        return (res >= eps) & (it < max_iter)

    def body(carry):
        q, _, it = carry
        # V_i depends on Q_i only, so one payoff per sweep serves Gauss-Seidel too (§5.4)
        u = game.reward + gamma * tabular.expected_next(game, values(q))
        q_new = _sweep(u, q, beta, alpha, mask, order)
        return q_new, _residual(q_new, q), it + 1

    init = (q_init, jnp.asarray(jnp.inf, dt), jnp.zeros((), jnp.int32))
    q, res, it = jax.lax.while_loop(cond, body, init)
    return Solution(q=q, pi=boltzmann(q, beta, mask), value=values(q), iterations=it,
                    residual=res, converged=res < eps)


# --------------------------------------------------------------------------------------------
# uniqueness conditions (mge.md §1.5)


def _max_abs(x) -> float:
    return float(np.max(np.abs(np.asarray(x, np.float64))))


def theorem1(game: TabularGame, gamma: float, beta: float) -> dict:
    """Theorem 1 (MGE-I): `max_i ||R_i|| <= (1 - gamma)^2 / (2 gamma M beta)`.
    Returns `{"bound", "value": max |R|, "holds"}`."""
    m = game.num_agents
    bound = np.inf if gamma == 0 else (1 - gamma) ** 2 / (2 * gamma * m * beta)
    value = _max_abs(game.reward)
    return {"bound": float(bound), "value": value, "holds": bool(value <= bound)}


def theorem2(game: TabularGame, horizon: int, beta: float) -> dict:
    """Theorem 2 (MGE-F), read as `max_i {||R_i||, ||R_iF||} <= 1 / (2 beta (M - 1) (1 + T))`
    (Theorem 7's form, §1.5). Returns `{"bound", "value", "holds"}`; the bound is inf for M = 1."""
    m = game.num_agents
    bound = np.inf if m == 1 else 1.0 / (2 * beta * (m - 1) * (1 + horizon))
    value = max(_max_abs(game.reward), _max_abs(game.final_reward))
    return {"bound": float(bound), "value": value, "holds": bool(value <= bound)}


def theorem3(lipschitz: float, omega: float, phi: float, horizon: int, beta: float) -> dict:
    """Theorem 3 (MGE-FB): `2 L T <= xi exp(-beta (T + 1) xi)` with `xi = (T + 1)(omega + phi)`;
    `lipschitz` = L of Psi (`sum_j mu_j` for the linear penalty), `omega` bounds the rewards,
    `phi` bounds Psi. Returns `{"bound": xi exp(...), "value": 2 L T, "holds"}`."""
    xi = (horizon + 1) * (omega + phi)
    bound = xi * np.exp(-beta * (horizon + 1) * xi)
    value = 2.0 * lipschitz * horizon
    return {"bound": float(bound), "value": float(value), "holds": bool(value <= bound)}


def stage_lipschitz(u: jax.Array, mask: jax.Array, beta) -> jax.Array:
    """Runtime certificate `L_x = beta (M - 1) / 2 max_i max_{a_i} osc_{a_-i} u_i(x, a_i, a_-i)`
    per joint state `[S]` (mge.md §1.5), the sup-norm Lipschitz constant of the undamped Jacobi
    stage map; the oscillation runs over the others' valid actions."""
    m, s, a = mask.shape
    if m == 1:
        return jnp.zeros(s, u.dtype)
    out = jnp.zeros(s, u.dtype)
    for i in range(m):
        ui = jnp.moveaxis(u[i].reshape((s,) + (a,) * m), i + 1, 1).reshape(s, a, -1)
        valid = tabular.joint_policy(jnp.stack([mask[j] for j in range(m) if j != i])
                                     .astype(u.dtype)) > 0  # [S, A^(M-1)], same order as ui
        hi = jnp.max(jnp.where(valid[:, None], ui, -jnp.inf), axis=-1)
        lo = jnp.min(jnp.where(valid[:, None], ui, jnp.inf), axis=-1)
        osc = jnp.max(jnp.where(mask[i], hi - lo, 0.0), axis=-1)
        out = jnp.maximum(out, osc)
    return beta * (m - 1) / 2.0 * out


def certificate(game: TabularGame, solution: Solution, beta) -> dict:
    """The §1.5 certificate of an MGE-F solution: `per_state[T, S]` is `L^tau_x` from the stage
    payoffs `R + E V^{tau+1}`, `value[T]` its maximum over states, `holds[T] = value < 1` (then the
    stage QRE is unique and undamped Jacobi contracts at rate `value[tau]`), `bound` = 1."""
    u = jax.vmap(lambda v: stage_payoff(game, v))(solution.value[1:])
    per_state = jax.vmap(lambda ut: stage_lipschitz(ut, game.action_mask, beta))(u)
    value = jnp.max(per_state, axis=-1)
    return {"bound": 1.0, "value": value, "per_state": per_state, "holds": value < 1.0}


def detect_multiplicity(key, game: TabularGame, value_next, beta=1.0, states=None,
                        num_restarts: int = 64, alpha=0.5, eps=1e-10, max_iter=20_000,
                        order: str = "jacobi", tol: float = 1e-5):
    """Random restarts of the stage QRE with payoff `R + E[value_next]` (e.g. `solution.value[tau
    + 1]`, or `final_reward` for a one-shot game) at each joint state in `states` (default: all).

    Initial Q's are uniform over `[-r, r]`, `r = max |u| + 1`. Returns a list with, for each
    state, an array `[n, M, A]` of the distinct policies (sup-norm apart by more than `tol`) that
    converged restarts reached. Only attracting fixed points of the damped iteration can be found
    (an unstable mixed QRE is missed), so `n > 1` proves multiplicity, `n = 1` does not disprove it.
    """
    _check_common(game, beta, alpha, eps, max_iter, "expect", order)
    _check_int("num_restarts", num_restarts, 1)
    u = stage_payoff(game, jnp.asarray(value_next, _dtype(game)))
    mask = game.action_mask
    states = np.arange(game.num_states) if states is None else np.atleast_1d(np.asarray(states))
    u, mask = u[:, states][:, :, None], mask[:, states][:, :, None]  # each state its own game
    r = jnp.max(jnp.abs(u)) + 1.0
    m, n, a = game.num_agents, len(states), game.num_actions
    q0 = jax.random.uniform(key, (num_restarts, n, m, 1, a), u.dtype, -r, r)
    pis, ok = jax.device_get(_restarts(u, mask, beta, q0, alpha, eps, max_iter, order=order))
    found = []
    for k in range(n):
        distinct = []
        for pi in pis[ok[:, k], k]:
            if all(np.max(np.abs(pi - d)) > tol for d in distinct):
                distinct.append(pi)
        found.append(np.asarray(distinct).reshape(-1, m, a))
    return found


@functools.partial(jax.jit, static_argnames=("order",))
def _restarts(u, mask, beta, q0, alpha, eps, max_iter, *, order):
    """Policies `[R, n, M, A]` and convergence flags `[R, n]` of the stage QRE of every state (its
    own game, `u[M, n, 1, J]`) from every restart `q0[R, n, M, 1, A]`."""
    beta, alpha, eps = (jnp.asarray(x, u.dtype) for x in (beta, alpha, eps))

    def one(uk, mk, qk):
        q, res, _ = stage_qre(uk, mk, beta, qk, alpha, eps, max_iter, order)
        return _finish(uk, q, beta, mk, "expect")[1][:, 0], res < eps

    per_state = jax.vmap(one, in_axes=(1, 1, 0))
    return jax.vmap(lambda qr: per_state(u, mask, qr))(q0)


# --------------------------------------------------------------------------------------------
# expected features (mge.md §5.5, Theorem 5)


def agent_marginals(joint_pis: jax.Array, num_agents: int, num_actions: int) -> jax.Array:
    """Per-agent marginals `[..., M, S, A]` of a joint policy `joint_pis[..., S, J]`."""
    m, a = num_agents, num_actions
    full = joint_pis.reshape(joint_pis.shape[:-1] + (a,) * m)
    nd = full.ndim
    outs = [jnp.sum(full, axis=tuple(nd - m + j for j in range(m) if j != i)) for i in range(m)]
    return jnp.stack(outs, axis=-3)


def expected_features(game: TabularGame, policy, features: jax.Array, init_dist=None,
                      weights=None) -> jax.Array:
    """`E[sum_tau w_tau F_i(x(tau), a_i(tau))]`, `[M, N]`, for `features[M, S, A, N]` under a
    `Solution`, per-agent policies `[T, M, S, A]` or a joint policy `[T, S, J]`, from `init_dist`
    (default the game's). `weights[T]` (default ones) restricts the sum, e.g. to a prefix."""
    m, a = game.num_agents, game.num_actions
    pis = policy.pi if isinstance(policy, Solution) else jnp.asarray(policy)
    if pis.ndim == 3:
        joint, pis = pis, agent_marginals(pis, m, a)
    else:
        joint = tabular.joint_policy(pis)
    d = tabular.state_distributions(game, joint, init_dist)[:-1]  # [T, S]
    if weights is not None:
        d = d * jnp.asarray(weights, d.dtype)[:, None]
    return jnp.einsum("ts,tmsa,msan->mn", d, pis, features.astype(d.dtype))
