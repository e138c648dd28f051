"""Multi-agent maximum-causal-entropy IRL (MMCE-IRL; mge.md §1.9-§1.10, §5.7).

Agent i's reward is `<theta_i, F_i(x, a_i)>` for features `features[M, S, A, N]`; the model
policies are the MMCE-F solution (`mge.mmce_finite`, log-sum-exp value, zero final reward), and
Theorem 5 gives the gradient of the dual in `theta_i` as `E_hat[F_i] - E_theta[F_i]` (feature sums
over the horizon, averaged over trajectories). The update is
`theta <- Proj_{||theta_i|| <= B}(theta + rho (E_hat F - E_theta F))`, the sign the paper's Alg. 4
line 9 gets wrong (mge.md §6 #19, §7 #7).

What the gradient is exactly (checked in tests/test_mmce_irl.py): with one agent, the gradient of
the dual `g(theta) = E_x0[V^0(x0)] - <theta, E_hat F>`; with several, the gradient of agent i's dual
`g_i` with the other agents' policies held fixed. The total derivative of `g_i` also moves
`pi_-i` (the equilibrium responds to `theta_i`), which the paper's proof drops (L666).

`mmce_irl` is the batch form (fixed demonstrations), `online_mmce_irl` Algorithm 4 proper
(demonstration prefixes of growing length). Both solve MMCE-F with the while-loop solver at every
step; `dual` uses the fixed-iteration solver so that `jax.grad` runs through it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import mge, tabular
from jaxmcg.sweep import concrete
from jaxmcg.tabular import TabularGame


@struct.dataclass
class IRLResult:
    """`theta[M, N]` after the last step, `gap[steps]` the `||E_hat F - E_theta F||_inf` of the
    inferred agents before each step, `solution` the MMCE-F solution at the final `theta`."""

    theta: jax.Array
    gap: jax.Array
    solution: mge.Solution


def agent_actions(joint: jax.Array, num_agents: int, num_actions: int) -> jax.Array:
    """Per-agent actions `[..., M]` of joint action indices (inverse of `joint_action_index`)."""
    powers = num_actions ** jnp.arange(num_agents - 1, -1, -1)
    return (jnp.asarray(joint)[..., None] // powers) % num_actions


def empirical_features(states: jax.Array, actions: jax.Array, features: jax.Array,
                       valid: jax.Array | None = None) -> jax.Array:
    """`E_hat[F_i]`, `[M, N]`: the feature sums `sum_tau F_i(x(tau), a_i(tau))` of demonstrations
    (`states[E, >= T]`, joint `actions[E, T]`, as `tabular.rollout` returns them) averaged over the
    E trajectories (mge.md §5.7: the same normalisation as `mge.expected_features`). `valid[E, T]`
    drops steps (e.g. after termination)."""
    m, _, a, _ = features.shape
    t = actions.shape[1]
    acts = agent_actions(actions, m, a)  # [E, T, M]
    s = jnp.asarray(states)[:, :t]
    f = jnp.stack([features[i][s, acts[..., i]] for i in range(m)])  # [M, E, T, N]
    if valid is not None:
        f = f * jnp.asarray(valid, f.dtype)[None, ..., None]
    return jnp.sum(f, axis=2).mean(axis=1)


def theta_game(game: TabularGame, theta: jax.Array, features: jax.Array, known=None) -> TabularGame:
    """`game` with reward `<theta_i, F_i(x, a_i)>` (broadcast over the others' actions) and zero
    final reward for every agent, except those flagged in `known[M]` (a static bool sequence),
    which keep the game's rewards (Alg. 4: agent i knows R_i)."""
    m, a = game.num_agents, game.num_actions
    acts = tabular.joint_actions(m, a)  # [J, M]
    own = jnp.einsum("msan,mn->msa", features.astype(game.reward.dtype), theta)
    reward = jnp.stack([own[i][:, acts[:, i]] for i in range(m)])
    final = jnp.zeros_like(game.final_reward)
    if known is not None:
        keep = jnp.asarray(np.asarray(known, bool))
        reward = jnp.where(keep[:, None, None], game.reward, reward)
        final = jnp.where(keep[:, None], game.final_reward, final)
    return game.replace(reward=reward, final_reward=final)


def project(theta: jax.Array, bound) -> jax.Array:
    """Each `theta_i` scaled onto the ball `||theta_i||_2 <= bound` (Rhinehart & Kitani, §5.7)."""
    norm = jnp.linalg.norm(theta, axis=-1, keepdims=True)
    return theta * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-30))


def mmce_gradient(game, theta, features, emp, horizon, known=None, beta=1.0, alpha=0.5,
                  eps=1e-8, max_iter=10_000):
    """Theorem 5: `(E_hat F - E_theta F, solution)`, `[M, N]`, with `E_theta` under the MMCE-F
    solution of `theta_game(game, theta, features, known)` over `horizon` decisions."""
    sol = mge.mmce_finite(theta_game(game, theta, features, known), horizon, beta, alpha, eps,
                          max_iter)
    return emp - mge.expected_features(game, sol, features), sol


def dual(theta, game, features, emp, horizon, num_iters, known=None, beta=1.0, alpha=0.5):
    """Per-agent duals `g_i(theta) = E_x0[V_i^0(x0)] - <theta_i, E_hat F_i>`, `[M]`, with the
    MMCE-F values from `num_iters` inner iterations per stage (differentiable, mge.md §5.7)."""
    sol, _ = mge.mge_finite_fixed(theta_game(game, theta, features, known), horizon, num_iters,
                                  beta, alpha, value="lse")
    return sol.value[0] @ game.init_dist - jnp.sum(theta * emp, axis=-1)


def _known(m, known_agent):
    if known_agent is None:
        return None
    if isinstance(known_agent, bool) or not isinstance(known_agent, (int, np.integer)) \
            or not 0 <= known_agent < m:
        raise ValueError(f"known_agent={known_agent!r} is invalid: valid values are None or 0..{m - 1}")
    return tuple(i == known_agent for i in range(m))


def _check_irl(game, features, theta0, rho, bound, beta, alpha, eps, max_iter):
    m, s, a = game.num_agents, game.num_states, game.num_actions
    if features.ndim != 4 or features.shape[:3] != (m, s, a):
        raise ValueError(f"features have shape {features.shape}; expected {(m, s, a)} + (N,)")
    if np.shape(theta0) != (m, features.shape[3]):
        raise ValueError(f"theta0 has shape {np.shape(theta0)}; expected {(m, features.shape[3])}")
    mge._check_range("rho", rho, lambda r: r > 0, "rho > 0")
    if concrete(bound) and not np.all(np.asarray(bound, np.float64) > 0):
        raise ValueError(f"bound={bound!r} is invalid: valid values are bound > 0 (inf: no projection)")
    mge._check_common(game, beta, alpha, eps, max_iter, "lse", "jacobi")


def _step(game, features, known, inferred, horizon, rho, bound, beta, alpha, eps, max_iter):
    def step(theta, emp_and_weights):
        emp, weights = emp_and_weights
        sol = mge.mmce_finite(theta_game(game, theta, features, known), horizon, beta, alpha, eps,
                              max_iter)
        grad = (emp - mge.expected_features(game, sol, features, weights=weights)) * inferred
        return project(theta + rho * grad, bound), jnp.max(jnp.abs(grad))
    return step


def mmce_irl(game: TabularGame, features, emp, horizon: int, theta0, known_agent=None, rho=0.5,
             bound=10.0, num_steps: int = 200, beta=1.0, alpha=0.5, eps=1e-8,
             max_iter=10_000) -> IRLResult:
    """Batch MMCE-IRL: `num_steps` projected Theorem-5 steps towards `emp` (`E_hat F`, `[M, N]`).
    `known_agent=i` is Alg. 4's agent i, which knows its reward (`game.reward[i]`, not features)
    and infers theta_j for j != i; `None` infers every agent (theta0 is used as given for i)."""
    _check_irl(game, features, theta0, rho, bound, beta, alpha, eps, max_iter)
    mge._check_int("horizon", horizon, 1)
    mge._check_int("num_steps", num_steps, 1)
    known = _known(game.num_agents, known_agent)
    return _mmce_irl(game, features, emp, theta0, rho, bound, beta, alpha, eps, max_iter,
                     horizon=int(horizon), num_steps=int(num_steps), known=known)


@functools.partial(jax.jit, static_argnames=("horizon", "num_steps", "known"))
def _mmce_irl(game, features, emp, theta0, rho, bound, beta, alpha, eps, max_iter, *, horizon,
              num_steps, known):
    inferred = 1.0 if known is None else jnp.asarray(~np.asarray(known), theta0.dtype)[:, None]
    step = _step(game, features, known, inferred, horizon, rho, bound, beta, alpha, eps, max_iter)
    ones = jnp.ones((num_steps, horizon), theta0.dtype)
    emps = jnp.broadcast_to(emp, (num_steps,) + emp.shape)
    theta, gap = jax.lax.scan(step, jnp.asarray(theta0), (emps, ones))
    sol = mge.mmce_finite(theta_game(game, theta, features, known), horizon, beta, alpha, eps,
                          max_iter)
    return IRLResult(theta=theta, gap=gap, solution=sol)


def online_mmce_irl(game: TabularGame, features, states, actions, theta0, known_agent=None,
                    rho=0.5, bound=10.0, steps_per_time: int = 20, beta=1.0, alpha=0.5, eps=1e-8,
                    max_iter=10_000) -> IRLResult:
    """Algorithm 4: at each time t = 1..T the history holds the first t steps of the observed
    trajectories (`states[E, T + 1]`, joint `actions[E, T]`); `steps_per_time` projected steps
    match their feature sums with the model's expectation over the same prefix (mge.md §1.10;
    the model plays the T-decision MMCE-F). `gap` has `T * steps_per_time` entries."""
    _check_irl(game, features, theta0, rho, bound, beta, alpha, eps, max_iter)
    mge._check_int("steps_per_time", steps_per_time, 1)
    horizon = int(actions.shape[1])
    prefix = (np.arange(horizon)[None] < np.arange(1, horizon + 1)[:, None])  # [t - 1, tau]
    per_step = jnp.stack([features[i][jnp.asarray(states)[:, :horizon], a_i] for i, a_i in
                          enumerate(jnp.moveaxis(agent_actions(actions, game.num_agents,
                                                               game.num_actions), -1, 0))])
    emps = jnp.einsum("metn,ut->umn", per_step, prefix.astype(per_step.dtype)) / actions.shape[0]
    weights = jnp.asarray(prefix, emps.dtype)
    known = _known(game.num_agents, known_agent)
    return _online(game, features, emps, weights, theta0, rho, bound, beta, alpha, eps, max_iter,
                   horizon=horizon, steps=int(steps_per_time), known=known)


@functools.partial(jax.jit, static_argnames=("horizon", "steps", "known"))
def _online(game, features, emps, weights, theta0, rho, bound, beta, alpha, eps, max_iter, *,
            horizon, steps, known):
    inferred = 1.0 if known is None else jnp.asarray(~np.asarray(known), theta0.dtype)[:, None]
    step = _step(game, features, known, inferred, horizon, rho, bound, beta, alpha, eps, max_iter)
    emps = jnp.repeat(emps, steps, axis=0)
    weights = jnp.repeat(weights, steps, axis=0)
    theta, gap = jax.lax.scan(step, jnp.asarray(theta0), (emps, weights))
    sol = mge.mmce_finite(theta_game(game, theta, features, known), horizon, beta, alpha, eps,
                          max_iter)
    return IRLResult(theta=theta, gap=gap, solution=sol)
