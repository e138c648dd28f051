"""Plain numpy MGE-F and MGE-I, one game at a time, written from the spec's cleaned listings
(mge.md §1.6-§1.7) and independently of `jaxmcg/mge.py`: dense transitions `P[s, j, s']`, and the
others' policies contracted one agent at a time.

It is the oracle of `tests/test_mge.py` and the numpy side of `benchmarks/mge_batch.py`.
`random_game` builds the random test games of both.
"""
from __future__ import annotations

import numpy as np

from jaxmcg import tabular


def random_game(rng, num_states=5, num_agents=2, num_actions=3, num_outcomes=2, reward_scale=1.0,
                final_scale=None, mask_prob=0.0, dtype=np.float64):
    """A random `TabularGame`: `num_outcomes` random next states per (state, joint action) with
    Dirichlet probabilities, joint-action and final rewards uniform in `[-scale, scale]`, and each
    action masked with probability `mask_prob` (action 0 always valid)."""
    s, m, a, k = num_states, num_agents, num_actions, num_outcomes
    j = a ** m
    final_scale = reward_scale if final_scale is None else final_scale
    mask = rng.random((m, s, a)) >= mask_prob
    mask[..., 0] = True
    return tabular.make_game(
        rng.integers(0, s, (s, j, k)), rng.dirichlet(np.ones(k), (s, j)),
        rng.uniform(-reward_scale, reward_scale, (m, s, j)),
        rng.uniform(-final_scale, final_scale, (m, s)), mask,
        num_agents=m, num_actions=a, dtype=dtype)


def game_arrays(game):
    """Numpy float64 arrays of a `TabularGame`: dense `P[S, J, S]`, `R[M, S, J]`, `RF[M, S]`,
    `mask[M, S, A]`, `absorbing[S]`."""
    ns, pr = np.asarray(game.next_state), np.asarray(game.next_prob, np.float64)
    s, j, k = ns.shape
    dense = np.zeros((s, j, s))
    for kk in range(k):
        np.add.at(dense, (np.arange(s)[:, None], np.arange(j)[None], ns[:, :, kk]), pr[:, :, kk])
    return (dense, np.asarray(game.reward, np.float64), np.asarray(game.final_reward, np.float64),
            np.asarray(game.action_mask), np.asarray(game.absorbing))


def softmax(q, beta, mask):
    z = np.where(mask, beta * q, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def others_expectation(u_i, pis, i):
    """`Q_i[s, a_i] = sum_{a_-i} prod_{j != i} pi_j(a_j | s) u_i[s, a]` for `u_i[S, J]`."""
    m, s, a = pis.shape
    t = u_i.reshape((s,) + (a,) * m)
    for j in reversed(range(m)):  # highest agent first, so lower agents keep their axes
        if j == i:
            continue
        shape = [s] + [1] * (t.ndim - 1)
        shape[1 + j] = a
        t = (t * pis[j].reshape(shape)).sum(axis=1 + j)
    return t


def responses(u, q, beta, mask):
    pis = softmax(q, beta, mask)
    return np.where(mask, np.stack([others_expectation(u[i], pis, i) for i in range(len(q))]), 0.0)


def value_of(q, beta, mask, value):
    if value == "expect":
        return np.sum(softmax(q, beta, mask) * np.where(mask, q, 0.0), axis=-1)
    z = np.where(mask, beta * q, -np.inf)
    top = z.max(axis=-1)
    return (top + np.log(np.sum(np.exp(z - top[..., None]), axis=-1))) / beta


def sweep(u, q, beta, alpha, mask, order):
    """One damped inner iteration, Jacobi or Gauss-Seidel."""
    if order == "jacobi":
        return alpha * responses(u, q, beta, mask) + (1 - alpha) * q
    q = q.copy()
    for i in range(len(q)):
        pis = softmax(q, beta, mask)
        q[i] = alpha * np.where(mask[i], others_expectation(u[i], pis, i), 0.0) + (1 - alpha) * q[i]
    return q


def mge_finite(game, horizon, beta=1.0, alpha=0.5, eps=1e-6, max_iter=10_000, value="expect",
               order="jacobi", q_init=None):
    """MGE-F (Alg. 2 with eq. 14). Returns a dict with `q`, `pi` `[T, M, S, A]`, `value`
    `[T + 1, M, S]`, `iterations`, `residual` `[T]`."""
    dense, r, rf, mask, _ = game_arrays(game)
    m, s, a = mask.shape
    q = np.zeros((m, s, a)) if q_init is None else np.array(q_init, np.float64)
    out = {"q": np.zeros((horizon, m, s, a)), "pi": np.zeros((horizon, m, s, a)),
           "value": np.zeros((horizon + 1, m, s)), "iterations": np.zeros(horizon, int),
           "residual": np.zeros(horizon)}
    out["value"][horizon] = rf
    for tau in range(horizon - 1, -1, -1):
        u = r + np.einsum("sjt,mt->msj", dense, out["value"][tau + 1])
        res, it = np.inf, 0
        while res >= eps and it < max_iter:
            q_new = sweep(u, q, beta, alpha, mask, order)
            res, q, it = np.max(np.abs(q_new - q)), q_new, it + 1
        q_hat = responses(u, q, beta, mask)
        out["q"][tau], out["pi"][tau] = q_hat, softmax(q_hat, beta, mask)
        out["value"][tau] = value_of(q_hat, beta, mask, value)
        out["iterations"][tau], out["residual"][tau] = it, res
    return out


def mge_infinite(game, gamma, beta=1.0, alpha=0.2, eps=1e-6, max_iter=20_000, value="expect",
                 order="jacobi"):
    """MGE-I, joint solver (absorbing states have value 0). Returns a dict with `q`, `pi`,
    `value`, `iterations`, `residual`."""
    dense, r, _, mask, absorbing = game_arrays(game)
    q = np.zeros(mask.shape)
    res, it = np.inf, 0
    while res >= eps and it < max_iter:
        v = np.where(absorbing, 0.0, value_of(q, beta, mask, value))
        u = r + gamma * np.einsum("sjt,mt->msj", dense, v)
        q_new = sweep(u, q, beta, alpha, mask, order)
        res, q, it = np.max(np.abs(q_new - q)), q_new, it + 1
    v = np.where(absorbing, 0.0, value_of(q, beta, mask, value))
    return {"q": q, "pi": softmax(q, beta, mask), "value": v, "iterations": it, "residual": res}
