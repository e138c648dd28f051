"""Tabular baselines of the MGE paper (mge.md §3, §4.5): independent Q-learning and correlated-Q
(uCE-Q, lCE-Q; Greenwald & Hall 2003, "Correlated-Q learning", ICML) on a `TabularGame`, plus the
evaluation of the policies they learn.

The learners see the game only through sampled steps (a joint action in a state gives a reward and a
next state drawn from `next_prob`); they never read the tables otherwise. Both learn discounted,
infinite-horizon values: a step into an `absorbing` state ends the episode (its value is 0) and
`final_reward` (R_F, a finite-horizon notion) is not used. Evaluation (`evaluate`) runs the learned
time-invariant joint policy with `tabular.rollout`, which scores it as the game does.

* `independent_q_learning`: each agent i learns `Q_i(s, a_i)` over its own actions, epsilon-greedy,
  with many parallel episodes inside one `lax.scan` (mge.md §3: gamma 0.9, learning rate decaying
  to 0.001, epsilon decaying to 0.01, 1e6 steps).
* `ce_q`: each agent learns joint-action `Q_i(s, a)`, with `V_i(s) = E_sigma Q_i(s, .)` for the
  correlated equilibrium sigma of the stage game `Q(s, .)` chosen by the variant (`lp.py`):
  utilitarian (uCE-Q) maximises the sum of the agents' values; libertarian (lCE-Q) gives each agent
  i its own sigma^i maximising its own value, `V_i = E_{sigma^i} Q_i` (Greenwald & Hall's
  "sigma = prod_i sigma^i, sigma^i in argmax_CE sum_a sigma(a) Q_i(s, a)"). Deviation from online
  CE-Q (one LP per step, far too slow on a CPU): synchronous sampled updates, i.e. every iteration
  updates every (state, joint action) from one sampled next state, with the LPs of all states
  vmapped. The CE-Q values do not depend on a behaviour policy, so updating every pair loses
  nothing but the on-line sampling order.

What lCE-Q executes is not fixed by the definition: the sigma^i disagree (on GG2 each agent's own
best CE gives it the centre path). `CEQConfig.leader` = 0 (default) plays sigma^0, which reproduces
the paper's lCE-Q (2, 1) on GG2 (mge.md §4.5: agent A scores 2); `leader=None` lets every agent
play its own marginal of its own sigma^i, which collides on GG2.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import lp, tabular

CE_OBJECTIVES = ("utilitarian", "libertarian", "egalitarian")


def _check_common(cfg) -> None:
    if not 0.0 <= cfg.gamma < 1.0:
        raise ValueError(f"gamma={cfg.gamma!r} is invalid: must be in [0, 1)")
    if not 0.0 < cfg.lr_final <= cfg.lr_init <= 1.0:
        raise ValueError(f"lr_init={cfg.lr_init!r}, lr_final={cfg.lr_final!r} are invalid: need "
                         "0 < lr_final <= lr_init <= 1")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")


def decay(start: float, end: float, steps: int, t):
    """Exponential schedule from `start` (t = 0) to `end` (t = steps - 1)."""
    frac = t / max(steps - 1, 1)
    return start * (end / start) ** frac


@dataclasses.dataclass(frozen=True)
class QLearningConfig:
    """Independent Q-learning. Defaults: mge.md §3 (gamma, final rates, steps); the rest ours."""

    gamma: float = 0.9  # mge.md §3
    # mge.md §3: environment steps, summed over the parallel episodes (rounded down to a multiple
    # of num_envs)
    num_steps: int = 1_000_000
    num_envs: int = 100  # parallel episodes (ours: a scan of 10^4 batched steps)
    lr_init: float = 0.5  # ours
    lr_final: float = 0.001  # mge.md §3: "learning rate decaying to 0.001"
    eps_init: float = 1.0  # ours
    eps_final: float = 0.01  # mge.md §3: "epsilon decaying to 0.01"
    max_episode_steps: int = 100  # ours: truncation (bootstrapped) of episodes that never end

    def __post_init__(self):
        _check_common(self)
        for name in ("num_steps", "num_envs", "max_episode_steps"):
            _positive_int(name, getattr(self, name))
        if self.num_steps < self.num_envs:
            raise ValueError(f"num_steps={self.num_steps} must be at least num_envs={self.num_envs}")
        if not 0.0 <= self.eps_final <= self.eps_init <= 1.0:
            raise ValueError(f"eps_init={self.eps_init!r}, eps_final={self.eps_final!r} are "
                             "invalid: need 0 <= eps_final <= eps_init <= 1")
        if self.eps_final == 0.0 and self.eps_init > 0.0:
            raise ValueError("eps_final=0 cannot end an exponential decay; use a positive value")


@struct.dataclass
class QLearningResult:
    q: jax.Array  # [M, S, A] Q_i(s, a_i); masked actions hold -inf
    joint_policy: jax.Array  # [S, J] greedy joint policy (uniform over each agent's argmax set)
    episodes: jax.Array  # int32: episodes that ended (absorbed or truncated) during training


def greedy_joint_policy(q: jax.Array, mask: jax.Array, rtol: float = 1e-6) -> jax.Array:
    """`[S, J]`: every agent uniform over its valid actions within `rtol` (relative to the row's
    scale) of its best `q[i, s, :]`; the product over agents (independent tie-breaking)."""
    qm = jnp.where(mask, q, -jnp.inf)
    best = jnp.max(qm, axis=-1, keepdims=True)
    tol = rtol * (1.0 + jnp.abs(best))
    top = mask & (qm >= best - tol)
    pis = top / jnp.sum(top, axis=-1, keepdims=True)
    return tabular.joint_policy(pis.astype(q.dtype))


def _sample_valid(key, valid):
    """Uniform sample among the True entries of `valid[..., A]`."""
    return jax.random.categorical(key, jnp.where(valid, 0.0, -jnp.inf))


def independent_q_learning(key, game: tabular.TabularGame,
                           config: QLearningConfig = QLearningConfig()) -> QLearningResult:
    """Independent epsilon-greedy Q-learning of every agent on its own actions (mge.md §3).

    `config.num_envs` episodes run in parallel from `init_dist`; each batched step every agent acts
    epsilon-greedily on `Q_i(s, .)` (uniform tie-breaking), the game samples the next states, and
    every visited `Q_i(s, a_i)` moves by the learning rate toward the mean over the batch of its
    targets `r_i + gamma max_a' Q_i(s', a')` (0 after an absorbing state). Averaging the batch's
    duplicates keeps a learning rate near 1 stable. Returns a `QLearningResult`.
    """
    tabular.validate_game(game)
    q, episodes = _q_learning(key, game, config)
    q = jnp.where(game.action_mask, q, -jnp.inf)
    return QLearningResult(q=q, joint_policy=greedy_joint_policy(q, game.action_mask),
                           episodes=episodes)


@partial(jax.jit, static_argnames=("config",))
def _q_learning(key, game, config):
    m, s_num, a_num = game.num_agents, game.num_states, game.num_actions
    n_envs = config.num_envs
    n_iter = config.num_steps // n_envs
    mask = game.action_mask
    agents = jnp.arange(m)[:, None]

    def reset(key):
        return jax.random.categorical(key, jnp.log(game.init_dist), shape=(n_envs,))

    def step(carry, t):
        q, states, times, key, episodes = carry
        key, k_greedy, k_rand, k_eps, k_next, k_reset = jax.random.split(key, 6)
        eps = decay(config.eps_init, config.eps_final, n_iter, t)
        lr = decay(config.lr_init, config.lr_final, n_iter, t)
        valid = mask[:, states]  # [M, E, A]
        qs = jnp.where(valid, q[:, states], -jnp.inf)
        best = jnp.max(qs, axis=-1, keepdims=True)
        top = valid & (qs >= best - 1e-6 * (1.0 + jnp.abs(best)))
        acts = jnp.where(jax.random.uniform(k_eps, (m, n_envs)) < eps,
                         _sample_valid(k_rand, valid), _sample_valid(k_greedy, top))  # [M, E]
        j = tabular.joint_action_index(acts.T, a_num)
        k = jax.random.categorical(k_next, jnp.log(game.next_prob[states, j]))
        nxt = game.next_state[states, j, k]
        reward = game.reward[:, states, j]  # [M, E]
        term = game.absorbing[nxt]
        v_next = jnp.max(jnp.where(mask[:, nxt], q[:, nxt], -jnp.inf), axis=-1)
        target = reward + config.gamma * jnp.where(term, 0.0, v_next)
        td = target - q[agents, states, acts]
        total = jnp.zeros_like(q).at[agents, states, acts].add(td)
        count = jnp.zeros_like(q).at[agents, states, acts].add(1.0)
        q = q + lr * total / jnp.maximum(count, 1.0)
        times = times + 1
        done = term | (times >= config.max_episode_steps)
        states = jnp.where(done, reset(k_reset), nxt)
        times = jnp.where(done, 0, times)
        return (q, states, times, key, episodes + jnp.sum(done)), None

    k0, key = jax.random.split(key)
    q0 = jnp.zeros((m, s_num, a_num), game.reward.dtype)
    carry = (q0, reset(k0), jnp.zeros(n_envs, jnp.int32), key, jnp.zeros((), jnp.int32))
    (q, _, _, _, episodes), _ = jax.lax.scan(step, carry, jnp.arange(n_iter))
    return q, episodes


@dataclasses.dataclass(frozen=True)
class CEQConfig:
    """Correlated-Q with synchronous sampled updates (module docstring). Defaults: mge.md §3 for
    gamma and the final learning rate; the rest ours."""

    objective: str = "utilitarian"  # uCE-Q; "libertarian" lCE-Q; "egalitarian" eCE-Q
    gamma: float = 0.9  # mge.md §3
    # synchronous sweeps over all (state, joint action) pairs; 500 sweeps of the grid games (82 x 25
    # pairs) are the 10^6 sampled updates of mge.md §3
    num_iterations: int = 500
    lr_init: float = 1.0  # ours: the first sweep is a sampled Bellman backup
    lr_final: float = 0.001  # mge.md §3: "learning rate decaying to 0.001"
    # lCE-Q plays sigma^leader (the CE agent `leader` prefers); None: every agent plays its own
    # marginal of its own sigma^i (decentralised; miscoordinates when the sigma^i disagree)
    leader: int | None = 0
    tie_break: float = 1e-4  # lp.correlated_equilibrium: pick a vertex among tied optima
    lp_max_iter: int = 60

    def __post_init__(self):
        _check_common(self)
        if self.objective not in CE_OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is invalid; valid: {CE_OBJECTIVES}")
        _positive_int("num_iterations", self.num_iterations)
        _positive_int("lp_max_iter", self.lp_max_iter)
        if self.leader is not None and (isinstance(self.leader, bool) or not isinstance(
                self.leader, (int, np.integer)) or self.leader < 0):
            raise ValueError(f"leader={self.leader!r} is invalid: an agent index or None")
        if not self.tie_break >= 0:
            raise ValueError(f"tie_break={self.tie_break!r} is invalid: must be >= 0")


@struct.dataclass
class CEQResult:
    q: jax.Array  # [M, S, J] joint-action Q_i(s, a)
    sigmas: jax.Array  # [C, S, J] the CEs of the final Q: C = 1, or M for lCE-Q (sigma^i)
    values: jax.Array  # [M, S] V_i(s) = E_sigma Q_i(s, .) (sigma^i for lCE-Q)
    joint_policy: jax.Array  # [S, J] the executed (correlated) joint policy
    delta: jax.Array  # [num_iterations] max |Q change| of each sweep


def stage_equilibria(q: jax.Array, game: tabular.TabularGame, objective: str = "utilitarian",
                     tie_break: float = 1e-4, lp_max_iter: int = 60):
    """CEs of the stage games `q[M, S, J]` of every state: `(sigmas [C, S, J], values [M, S])`
    (C = M for "libertarian", each agent's own sigma^i, else 1); values are 0 in absorbing states."""
    m, a = game.num_agents, game.num_actions
    qs = jnp.moveaxis(q, 1, 0)  # [S, M, J]
    masks = jnp.moveaxis(game.action_mask, 1, 0)  # [S, M, A]
    if objective == "egalitarian":
        sigmas = jax.vmap(lambda qq, mk: lp.correlated_equilibrium(
            qq, a, "egalitarian", mk, tie_break=tie_break, max_iter=lp_max_iter))(qs, masks)
        sigmas = sigmas[None]
    else:
        # one vmapped solve (one while_loop) for all agents' libertarian LPs: two independent
        # while_loops in one program deadlocked XLA's multi-threaded CPU runtime (jax 0.10.2)
        weights = jnp.eye(m, dtype=q.dtype) if objective == "libertarian" else jnp.ones((1, m), q.dtype)
        solve = lambda w, qq, mk: lp.weighted_correlated_equilibrium(
            qq, a, w, mk, tie_break=tie_break, max_iter=lp_max_iter)
        sigmas = jax.vmap(jax.vmap(solve, (None, 0, 0)), (0, None, None))(weights, qs, masks)
    vals = jnp.einsum("csj,msj->cms", sigmas, q)
    values = jnp.diagonal(vals).T if objective == "libertarian" else vals[0]  # agent i, sigma^i
    return sigmas, jnp.where(game.absorbing[None], 0.0, values)


def ce_policy(sigmas: jax.Array, game: tabular.TabularGame, leader: int | None = 0) -> jax.Array:
    """The executed joint policy `[S, J]` of `stage_equilibria`'s `sigmas[C, S, J]`: the one CE
    when C = 1; for lCE-Q `sigmas[leader]`, or with `leader=None` the product of every agent's
    marginal of its own sigma^i."""
    if sigmas.shape[0] == 1:
        return sigmas[0]
    if leader is not None:
        if not 0 <= leader < sigmas.shape[0]:
            raise ValueError(f"leader={leader} is invalid; valid: 0..{sigmas.shape[0] - 1}")
        return sigmas[leader]
    m, a = game.num_agents, game.num_actions
    s = sigmas.shape[1]
    marg = []
    for i in range(m):
        t = jnp.moveaxis(sigmas[i].reshape((s,) + (a,) * m), 1 + i, 1).reshape(s, a, -1)
        marg.append(jnp.sum(t, axis=-1))
    return tabular.joint_policy(jnp.stack(marg))


def ce_q(key, game: tabular.TabularGame, config: CEQConfig = CEQConfig()) -> CEQResult:
    """Correlated-Q (uCE-Q / lCE-Q / eCE-Q per `config.objective`) by synchronous sampled sweeps:

        Q_i(s, a) <- Q_i(s, a) + lr_t (r_i(s, a) + gamma V_i(s') - Q_i(s, a)),  s' ~ P(. | s, a),

    for all (s, a) at once, with `V_i` from the stage CEs of the current Q (`stage_equilibria`).
    Returns a `CEQResult`; its `joint_policy` is `ce_policy` of the final Q's CEs.
    """
    tabular.validate_game(game)
    if config.leader is not None and config.leader >= game.num_agents:
        raise ValueError(f"leader={config.leader} is invalid; valid: 0..{game.num_agents - 1} "
                         "or None")
    q, sigmas, values, delta = _ce_q(key, game, config)
    policy = ce_policy(sigmas, game, config.leader)
    return CEQResult(q=q, sigmas=sigmas, values=values, joint_policy=policy, delta=delta)


@partial(jax.jit, static_argnames=("config",))
def _ce_q(key, game, config):
    solve = lambda q: stage_equilibria(q, game, config.objective, config.tie_break,
                                       config.lp_max_iter)
    c = game.num_agents if config.objective == "libertarian" else 1
    return sampled_sweeps(key, game, solve, config, (c, game.num_states, game.num_joint_actions))


def sampled_sweeps(key, game, solve, config, sigma_shape):
    """The synchronous sampled updates of CE-Q and Nash-Q: `config.num_iterations` sweeps of

        Q_i(s, a) <- Q_i(s, a) + lr_t (r_i(s, a) + gamma V_i(s') - Q_i(s, a)),  s' ~ P(. | s, a),

    over all (s, a) at once, from Q = 0, where `solve(q) -> (sigmas, values [M, S])` gives the
    stage equilibria of the current Q (`sigmas` of shape `sigma_shape`) and `config` has `gamma`,
    `num_iterations`, `lr_init`, `lr_final`. Returns `(q, sigmas, values, delta)`: the final Q, its
    stage equilibria and values, and the max |Q change| of each sweep."""
    m, s_num, j_num = game.num_agents, game.num_states, game.num_joint_actions
    n_iter = config.num_iterations

    def sweep(carry, t):
        q, key, _, _ = carry
        key, k_next = jax.random.split(key)
        # the extra last sweep (t = n_iter) only solves the final Q's stage games: one copy of
        # the stage solver in the program instead of two halves the compile time
        lr = jnp.where(t < n_iter, decay(config.lr_init, config.lr_final, n_iter, t), 0.0)
        sigmas, values = solve(q)
        k = jax.random.categorical(k_next, jnp.log(game.next_prob))  # [S, J]
        nxt = jnp.take_along_axis(game.next_state, k[..., None], -1)[..., 0]
        cont = jnp.where(game.absorbing[nxt], 0.0, values[:, nxt])  # [M, S, J]
        new = q + lr * (game.reward + config.gamma * cont - q)
        return (new, key, sigmas, values), jnp.max(jnp.abs(new - q))

    q0 = jnp.zeros((m, s_num, j_num), game.reward.dtype)
    carry = (q0, key, jnp.zeros(sigma_shape, q0.dtype), jnp.zeros((m, s_num), q0.dtype))
    (q, _, sigmas, values), delta = jax.lax.scan(sweep, carry, jnp.arange(n_iter + 1))
    return q, sigmas, values, delta[:-1]


# --------------------------------------------------------------------------------------------
# Evaluation


def rollouts(key, game: tabular.TabularGame, joint_policy: jax.Array, horizon: int,
             episodes: int, greedy: bool = False, init_state=None):
    """`episodes` rollouts of `horizon` decisions under a time-invariant `joint_policy[S, J]`
    (tiled to `[T, S, J]`), or a time-indexed one `[T, S, J]`. Returns `(states [E, T+1],
    returns [E, M])`, the undiscounted sums of the rewards (the final reward included)."""
    _positive_int("horizon", horizon)
    _positive_int("episodes", episodes)
    pol = jnp.asarray(joint_policy)
    s_num, j_num = game.num_states, game.num_joint_actions
    if pol.shape == (s_num, j_num):
        pol = jnp.broadcast_to(pol, (horizon, s_num, j_num))
    elif pol.shape != (horizon, s_num, j_num):
        raise ValueError(f"joint_policy has shape {pol.shape}; expected {(s_num, j_num)} or "
                         f"{(horizon, s_num, j_num)}")
    states, rewards = _rollouts(key, game, pol, episodes, bool(greedy), init_state)
    return states, jnp.sum(rewards, axis=1)


@partial(jax.jit, static_argnames=("episodes", "greedy"))
def _rollouts(key, game, pol, episodes, greedy, init_state):
    keys = jax.random.split(key, episodes)
    states, _, rewards, _ = jax.vmap(
        lambda k: tabular.rollout(k, game, pol, greedy, init_state))(keys)
    return states, rewards


def evaluate(key, game: tabular.TabularGame, joint_policy: jax.Array, horizon: int,
             episodes: int, greedy: bool = False, init_state=None) -> jax.Array:
    """Mean per-agent return `[M]` of `rollouts` (the paper's "average score per game")."""
    _, returns = rollouts(key, game, joint_policy, horizon, episodes, greedy, init_state)
    return jnp.mean(returns, axis=0)
