"""The occupancy-measure game and MGE-FB, the paper's forward-backward solver (mge.md §1.8, §5.6).

All agents share one cell space of `N` cells. Agent `i` moves by its own kernel `P[i, x, a, y]`
(mge.md §6 #18 allows per-agent kernels, e.g. cars and a pedestrian) and earns, at every decision
`tau = 0..T-1`, its individual reward `R_i(x_i, a_i)` plus the interaction term

    Psi(O_{-i}^tau(x_i)) = -sum_{j != i} mu_ij O_j^tau(x_i)        (footnote 6, per pair §1.8)

where `O_j^tau(x)` is the probability that agent `j` is at `x` at time `tau`; `R_{i,F}(x_i)` is paid
at `tau = T`. Policies `pi_i^tau(a | x_i)` depend on the agent's own cell and time only: the others
enter through their predicted occupancies (a mean-field approximation, mge.md §1.8 "Semantics").
Generalisation [ours]: cells may be grouped into interaction zones (`zone`), and then `O_j^tau(x_i)`
is `j`'s probability of being anywhere in the zone of `x_i` (the driving junction makes its zebra
crossing one zone); one cell per zone, the default, is the paper's term. Theorem 3's `L` and `phi`
are unchanged, since a zone's probability is at most the L1 norm of the occupancy.

`mge_fb` alternates a forward pass (eq. 12: occupancies under the current Boltzmann policies) and a
backward pass (eq. 11: Boltzmann-expectation Q-functions against the new occupancies), with the
damping `eta` of mge.md §5.6 (`eta = 1` is the paper's Algorithm 3). `theorem3_condition` is the
convergence condition of Theorem 3; `rollout` executes the per-agent policies.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import mge, tabular
from jaxmcg.sweep import concrete


@struct.dataclass
class OccupancyGame:
    P: jax.Array  # float [M, N, A, N]: P[i, x, a, y] = P_i(y | x, a)
    reward: jax.Array  # float [M, N, A]: R_i(x, a)
    final_reward: jax.Array  # float [M, N]: R_{i,F}(x)
    mu: jax.Array  # float [M, M]: mu[i, j] >= 0, what i loses per unit of j's occupancy; diagonal ignored
    x0: jax.Array  # int32 [M]: start cells
    mask: jax.Array  # bool [M, N, A]: valid actions, at least one per (agent, cell)
    zone: jax.Array  # int32 [N]: interaction zone of every cell (default: the cell itself)

    @property
    def num_agents(self) -> int:
        return self.reward.shape[-3]

    @property
    def num_cells(self) -> int:
        return self.reward.shape[-2]

    @property
    def num_actions(self) -> int:
        return self.reward.shape[-1]


def make_occupancy_game(P, reward, x0, final_reward=None, mu=None, mask=None, zone=None,
                        dtype=np.float32) -> OccupancyGame:
    """Build and validate an `OccupancyGame` from numpy arrays.

    `P` is `[M, N, A, N]`, or `[N, A, N]` shared by all agents (the paper's single kernel).
    `reward` is `[M, N, A]`, or `[M, N]` for state rewards. `mu` is `[M, M]` or a scalar for every
    pair. Defaults: no final reward, no interaction (`mu = 0`), every action valid, every cell its
    own interaction zone.
    """
    reward = np.asarray(reward, np.float64)
    if reward.ndim not in (2, 3):
        raise ValueError(f"reward has shape {reward.shape}; expected [M, N, A] or [M, N]")
    x0 = np.asarray(x0)
    m, n = reward.shape[:2]
    P = np.asarray(P, np.float64)
    if P.ndim == 3:
        P = np.broadcast_to(P, (m, *P.shape))
    if P.ndim != 4 or P.shape[0] != m or P.shape[1] != n or P.shape[3] != n:
        raise ValueError(f"P has shape {P.shape}; expected [M, N, A, N] = [{m}, {n}, A, {n}] "
                         f"or [N, A, N]")
    a = P.shape[2]
    if reward.ndim == 2:
        reward = np.broadcast_to(reward[:, :, None], (m, n, a))
    final_reward = np.zeros((m, n)) if final_reward is None else np.asarray(final_reward)
    mu = np.zeros((m, m)) if mu is None else np.asarray(mu, np.float64)
    if mu.ndim == 0:
        mu = np.full((m, m), float(mu))
    mask = np.ones((m, n, a), bool) if mask is None else np.asarray(mask, bool)
    zone = np.arange(n) if zone is None else np.asarray(zone)
    if x0.shape != (m,) or not np.issubdtype(x0.dtype, np.integer):
        raise ValueError(f"x0={x0.tolist()!r} must be {m} integer start cells, one per agent")
    game = OccupancyGame(
        P=jnp.asarray(P, dtype),
        reward=jnp.asarray(reward, dtype),
        final_reward=jnp.asarray(final_reward, dtype),
        mu=jnp.asarray(mu, dtype),
        x0=jnp.asarray(x0, jnp.int32),
        mask=jnp.asarray(mask),
        zone=jnp.asarray(zone, jnp.int32),
    )
    validate_occupancy_game(game)
    return game


def validate_occupancy_game(game: OccupancyGame, atol: float = 1e-5) -> None:
    """Raise ValueError, naming the first bad entry, if `game` is not a well-formed occupancy game."""
    m, n, a = np.shape(game.reward)
    shapes = {"P": (m, n, a, n), "final_reward": (m, n), "mu": (m, m), "x0": (m,),
              "mask": (m, n, a), "zone": (n,)}
    for name, shape in shapes.items():
        if np.shape(getattr(game, name)) != shape:
            raise ValueError(f"{name} has shape {np.shape(getattr(game, name))}; expected {shape}")
    mask = np.asarray(game.mask)
    if not mask.any(-1).all():
        i, x = np.argwhere(~mask.any(-1))[0]
        raise ValueError(f"agent {i} has no valid action in cell {x}; every cell needs one")
    P = np.asarray(game.P, np.float64)
    if (P < -atol).any() or not np.isfinite(P).all():
        bad = tuple(np.argwhere(~(P >= -atol))[0])
        raise ValueError(f"P{bad} = {P[bad]} is not a probability")
    # only valid actions are ever taken, so only their rows must be distributions
    sums = P.sum(-1)
    bad = mask & ~np.isclose(sums, 1.0, atol=atol)
    if bad.any():
        i, x, act = np.argwhere(bad)[0]
        raise ValueError(f"P[{i}, {x}, {act}] (agent {i}, cell {x}, action {act}) sums to "
                         f"{sums[i, x, act]:.6g}; the kernel of a valid action must sum to 1")
    x0 = np.asarray(game.x0)
    if x0.min() < 0 or x0.max() >= n:
        raise ValueError(f"x0={x0.tolist()} has cells outside the valid range 0..{n - 1}")
    mu = np.asarray(game.mu, np.float64)
    if not np.isfinite(mu).all() or (mu < 0).any():
        raise ValueError(f"mu={mu.tolist()} is invalid: interaction weights must be finite and >= 0")
    for name in ("reward", "final_reward"):
        if not np.isfinite(np.asarray(getattr(game, name))).all():
            raise ValueError(f"{name} has non-finite entries")
    zone = np.asarray(game.zone)
    if zone.min() < 0 or zone.max() >= n:
        raise ValueError(f"zone has ids in [{zone.min()}, {zone.max()}]; valid: 0..{n - 1}")


def coupling(game: OccupancyGame) -> jax.Array:
    """`[N, N]`: 1 where two cells share an interaction zone. `Psi_i(x) = -sum_j mu_ij sum_y
    C[x, y] O_j(y)`; with one cell per zone (the default) `C = I`, the paper's co-location term."""
    return (game.zone[:, None] == game.zone[None, :]).astype(game.reward.dtype)


# --------------------------------------------------------------------------------------------
# MGE-FB (Algorithm 3)


@struct.dataclass
class FBSolution:
    occupancy: jax.Array  # [M, T+1, N]: O_i^tau of the returned policies
    q: jax.Array  # [M, T, N, A]: Qt_i^tau, tau = 0..T-1 (0 on masked actions)
    pi: jax.Array  # [M, T, N, A]: Boltzmann policies Exp_beta{Qt_i^tau}
    value: jax.Array  # [M, T+1, N]: Vt_i^tau = E_pi[Qt_i^tau], Vt_i^T = R_{i,F}
    residual: jax.Array  # [K]: max(|dQt|_inf, max_tau |dObar^tau|_1) per outer iteration; NaN
    # after a stop
    iterations: jax.Array  # outer iterations run
    converged: jax.Array  # bool: last residual <= eps (eps=None: <= 1e-5 max(1, |Qt|_inf))


def _check_args(game, horizon, beta, num_iters, eta, eps):
    for name, val in (("horizon", horizon), ("num_iters", num_iters)):
        if isinstance(val, bool) or int(val) != val or int(val) < 1:
            raise ValueError(f"{name}={val!r} is invalid: it must be an integer >= 1")
    b = np.asarray(beta) if concrete(beta) else None
    if b is not None and (b.shape not in ((), (game.num_agents,))
                          or not (np.isfinite(b) & (b > 0)).all()):
        raise ValueError(f"beta={beta!r} is invalid: it must be > 0, a scalar or one per agent "
                         f"({game.num_agents})")
    e = np.asarray(eta) if concrete(eta) else None
    if e is not None and not (e.shape == () and 0.0 < e <= 1.0):
        raise ValueError(f"eta={eta!r} is invalid: the damping must lie in (0, 1] (1 = undamped)")
    if eps is not None and not float(eps) > 0:
        raise ValueError(f"eps={eps!r} is invalid: it must be > 0, or None to run all iterations")


def mge_fb(game: OccupancyGame, horizon: int, beta=1.0, num_iters: int = 200, eta=0.5,
           eps=None, damping: str = "occupancy") -> FBSolution:
    """MGE-FB (Algorithm 3) with damping `eta` (mge.md §5.6); `eta = 1` is the paper's algorithm.

    Each outer iteration k runs the forward pass (eq. 12) with the current Qt, then the backward
    pass (eq. 11) from `tau = T-1` down to 0, with `Qt^T(x, .) = R_F(x)` (the paper's `Qt^{T+1}` is
    an off-by-one, mge.md §7 #6). Starts from `Qt = 0`. The two damping modes of mge.md §5.6:

    * `"occupancy"` (default): the backward pass answers the running average
      `Obar <- (1 - eta) Obar + eta O_k`, as in fictitious play;
    * `"q"`: the backward pass answers `O_k` and `Qt^tau <- (1 - eta) Qt^tau + eta B(O^tau,
      Qt^{tau+1})`, where `Qt^{tau+1}` is the already damped next stage.

    Both have the fixed points of Algorithm 3. Both converge on mge.md §8.6's swap; on the default
    driving junction only the first does within K = 200 (envs/driving_junction.py).
    Runs `num_iters` iterations, or stops at the first whose residual
    `max(|Qt_k - Qt_{k-1}|_inf, max_tau |Obar_k^tau - Obar_{k-1}^tau|_1)` is below `eps`. `beta`
    is a scalar or one per agent (mge.md §6 #18). The returned occupancies are those of the returned
    policies (one last forward pass), so they are consistent with `pi` even without convergence.
    """
    if damping not in ("occupancy", "q"):
        raise ValueError(f"damping={damping!r} is invalid; valid: 'occupancy', 'q'")
    _check_args(game, horizon, beta, num_iters, eta, eps)
    return _mge_fb(game, beta, eta, -1.0 if eps is None else eps, eps is not None,
                   horizon=int(horizon), num_iters=int(num_iters), damp_q=damping == "q")


def _forward(game, pi, o0):
    """eq. 12: `O[M, T+1, N]` from `O^0 = o0` under policies `pi[M, T, N, A]`."""
    def step(o, pi_t):
        nxt = jnp.einsum("mxa,mxay->my", o[:, :, None] * pi_t, game.P)
        return nxt, nxt

    _, occ = jax.lax.scan(step, o0, jnp.swapaxes(pi, 0, 1))
    return jnp.concatenate([o0[:, None], jnp.swapaxes(occ, 0, 1)], axis=1)


@partial(jax.jit, static_argnames=("horizon", "num_iters", "damp_q"))
def _mge_fb(game, beta, eta, eps, stop_early, *, horizon, num_iters, damp_q):
    m, n, _ = game.reward.shape
    dtype = game.reward.dtype
    beta = jnp.broadcast_to(jnp.asarray(beta, dtype), (m,))[:, None, None]
    mu = game.mu * (1.0 - jnp.eye(m, dtype=dtype))
    o0 = jax.nn.one_hot(game.x0, n, dtype=dtype)
    mask = game.mask
    eta = jnp.asarray(eta, dtype)
    eta_q, eta_o = (eta, 1.0) if damp_q else (1.0, eta)

    def policies(q):
        return mge.boltzmann(q, beta[:, None], mask[:, None])

    def backward(q, occ):
        psi = -jnp.einsum("ij,jtx,xy->tiy", mu, occ[:, :horizon], coupling(game))  # [T, M, N]

        def step(v_next, xs):
            q_old, psi_t = xs
            target = game.reward + psi_t[..., None] + jnp.einsum("mxay,my->mxa", game.P, v_next)
            q_new = jnp.where(mask, (1.0 - eta_q) * q_old + eta_q * target, 0.0)
            v = jnp.sum(mge.boltzmann(q_new, beta, mask) * q_new, axis=-1)
            return v, q_new

        _, qs = jax.lax.scan(step, game.final_reward, (jnp.swapaxes(q, 0, 1), psi), reverse=True)
        return jnp.swapaxes(qs, 0, 1)

    def body(carry):
        q, obar, k, res = carry
        obar_new = (1.0 - eta_o) * obar + eta_o * _forward(game, policies(q), o0)
        q_new = backward(q, obar_new)
        r = jnp.maximum(jnp.max(jnp.abs(q_new - q)), jnp.max(jnp.sum(jnp.abs(obar_new - obar), -1)))
        return q_new, obar_new, k + 1, res.at[k].set(r)

    def cond(carry):
        _, _, k, res = carry
        last = res[jnp.maximum(k - 1, 0)]
        return (k < num_iters) & ~(stop_early & (k > 0) & (last <= eps))

    q0 = jnp.zeros((m, horizon, *game.reward.shape[1:]), dtype)
    # the running average starts at the occupancies of Qt = 0, which sweep 1 computes anyway, so
    # that eta < 1 never averages in a non-distribution
    occ0 = _forward(game, policies(q0), o0)
    res0 = jnp.full((num_iters,), jnp.nan, dtype)
    q, _, k, res = jax.lax.while_loop(cond, body, (q0, occ0, jnp.zeros((), jnp.int32), res0))
    pi = policies(q)
    value = jnp.concatenate([jnp.sum(pi * q, -1), game.final_reward[:, None]], axis=1)
    tol = jnp.where(stop_early, eps, 1e-5 * jnp.maximum(1.0, jnp.max(jnp.abs(q))))
    return FBSolution(occupancy=_forward(game, pi, o0), q=q, pi=pi, value=value, residual=res,
                      iterations=k, converged=res[k - 1] <= tol)


# --------------------------------------------------------------------------------------------
# Theorem 3 and execution


class Theorem3(NamedTuple):
    value: float  # 2 L T
    bound: float  # xi exp(-beta (T+1) xi)
    holds: bool  # value <= bound: Algorithm 3 (undamped) provably converges
    L: float  # max_i sum_{j != i} mu_ij, the Lipschitz constant of Psi (footnote 7)
    omega: float  # max_i max(|R_i|_inf, |R_{i,F}|_inf), over valid actions
    phi: float  # |Psi|_inf <= L, since occupancies are at most 1
    xi: float  # (T + 1)(omega + phi)


def theorem3_condition(game: OccupancyGame, horizon: int, beta=1.0) -> Theorem3:
    """Theorem 3's sufficient condition `2 L T <= xi exp(-beta (T+1) xi)` (mge.md §1.5) for `game`;
    with per-agent `beta` the largest is used."""
    mu = np.asarray(game.mu, np.float64) * (1.0 - np.eye(game.num_agents))
    big_l = float(mu.sum(1).max())
    reward = np.where(np.asarray(game.mask), np.abs(np.asarray(game.reward, np.float64)), 0.0)
    omega = float(max(reward.max(), np.abs(np.asarray(game.final_reward, np.float64)).max()))
    c = mge.theorem3(big_l, omega, big_l, int(horizon), float(np.max(beta)))
    return Theorem3(value=c["value"], bound=c["bound"], holds=c["holds"], L=big_l, omega=omega,
                    phi=big_l, xi=(int(horizon) + 1) * (omega + big_l))


@partial(jax.jit, static_argnames=("greedy",))
def rollout(key, game: OccupancyGame, pi, greedy: bool = False):
    """One episode of `T = pi.shape[1]` decisions of the per-agent policies `pi[M, T, N, A]`, each
    agent acting on its own cell and time only, from the start cells `game.x0`.

    Returns `cells[T+1, M]`, `actions[T, M]` and `rewards[T, M]`: the realised counterpart of the
    solver's model, `R_i(x_i, a_i) - sum_{j != i} mu_ij [x_j in the zone of x_i]` on the cells before the move
    (eq. 9 charges `Psi(O^tau)` at decision time tau), plus `R_{i,F}` of the last cells at the
    last step. `vmap` over keys for many episodes.
    """
    m = game.num_agents
    horizon = pi.shape[1]
    agents = jnp.arange(m)
    mu = game.mu * (1.0 - jnp.eye(m, dtype=game.mu.dtype))

    def body(cells, xs):
        pi_t, t, k = xs
        ka, kn = jax.random.split(k)
        probs = pi_t[agents, cells]  # [M, A]
        acts = jax.vmap(tabular.choose, (0, 0, None))(jax.random.split(ka, m), probs, greedy)
        nxt = jax.random.categorical(kn, jnp.log(game.P[agents, cells, acts]), axis=-1)
        zones = game.zone[cells]
        together = (zones[:, None] == zones[None, :]).astype(mu.dtype)
        r = game.reward[agents, cells, acts] - jnp.sum(mu * together, axis=1)
        r = r + jnp.where(t == horizon - 1, game.final_reward[agents, nxt], 0.0)
        return nxt.astype(jnp.int32), (nxt.astype(jnp.int32), acts, r)

    keys = jax.random.split(key, horizon)
    _, (cells, acts, rewards) = jax.lax.scan(
        body, game.x0, (jnp.swapaxes(pi, 0, 1), jnp.arange(horizon), keys))
    return jnp.concatenate([game.x0[None], cells]), acts.astype(jnp.int32), rewards
