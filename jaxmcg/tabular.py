"""Tabular Markov games: the form exact solvers (MGE, MMCE, CE-Q) work on (mge.md §5.1).

A `TabularGame` lists, for every joint state `s` (a flat index over the agents' positions and
whatever else the game tracks) and every joint action `j` (agent 0's action most significant, as
`np.ravel_multi_index` orders it), `K` possible outcomes: `next_state[s, j, k]` with probability
`next_prob[s, j, k]` (`K = 1` for deterministic games). This sparse form avoids the dense
`[S, J, S]` table, which `transition_matrix` still builds on request (DESIGN.md's `P[s, a_joint, s']`).

Rewards are joint-action rewards `reward[i, s, j]`; the paper's `R_i(x, a_i)` is the special case
that is constant over the other agents' actions. `final_reward[i, s]` is `R_{i,F}`, received in the
state reached after the last decision. Every field is an array, so games of one shape stack and
`vmap`; the agent and action counts are static.

`TabularEnv` runs a `TabularGame` as a jaxmcg `Environment`, so the tabular games sit in the
registry beside the others, pass the same smoke test and can train any jaxmcg learner.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment


@struct.dataclass
class TabularGame:
    next_state: jax.Array  # int32 [S, J, K]
    next_prob: jax.Array  # float [S, J, K], sums to 1 over K
    reward: jax.Array  # float [M, S, J]
    final_reward: jax.Array  # float [M, S]: R_{i,F}
    action_mask: jax.Array  # bool [M, S, A]: at least one valid action per (agent, state)
    init_dist: jax.Array  # float [S]
    absorbing: jax.Array  # bool [S]: game-over states (an episode that enters one has terminated)
    num_agents: int = struct.field(pytree_node=False, default=2)
    num_actions: int = struct.field(pytree_node=False, default=5)

    @property
    def num_states(self) -> int:
        return self.next_state.shape[-3]

    @property
    def num_joint_actions(self) -> int:
        return self.num_actions ** self.num_agents


def joint_actions(num_agents: int, num_actions: int) -> np.ndarray:
    """`[A^M, M]`: the agents' actions of every joint action index (agent 0 most significant)."""
    grids = np.indices((num_actions,) * num_agents).reshape(num_agents, -1)
    return grids.T.astype(np.int32)


def joint_action_index(actions: jax.Array, num_actions: int) -> jax.Array:
    """Joint action index of per-agent `actions[..., M]` (inverse of `joint_actions`)."""
    m = actions.shape[-1]
    weights = num_actions ** jnp.arange(m - 1, -1, -1)
    return jnp.sum(actions * weights, axis=-1)


def make_game(next_state, next_prob, reward, final_reward=None, action_mask=None, init_dist=None,
              absorbing=None, *, num_agents: int, num_actions: int, own_action_reward=False,
              dtype=np.float32) -> TabularGame:
    """Build and validate a `TabularGame` from numpy arrays.

    `next_state` may be `[S, J]` (deterministic) or `[S, J, K]`. `reward` is `[M, S, J]`, or
    `[M, S, A]` with `own_action_reward=True` (the paper's R_i(x, a_i), broadcast over the others'
    actions), or `[M, S]` for state rewards. Missing parts default to: no final reward, every action
    valid, uniform initial states over non-absorbing states, no absorbing states.
    """
    m, a = int(num_agents), int(num_actions)
    next_state = np.asarray(next_state)
    if next_state.ndim == 2:
        next_state = next_state[..., None]
        next_prob = np.ones(next_state.shape) if next_prob is None else np.asarray(next_prob)[..., None]
    s, j = next_state.shape[:2]
    reward = np.asarray(reward, dtype=np.float64)
    if reward.shape == (m, s):
        reward = np.broadcast_to(reward[:, :, None], (m, s, j))
    elif own_action_reward:
        if reward.shape != (m, s, a):
            raise ValueError(f"own-action reward has shape {reward.shape}; expected {(m, s, a)}")
        acts = joint_actions(m, a)  # [J, M]
        reward = np.stack([reward[i][:, acts[:, i]] for i in range(m)])
    final_reward = np.zeros((m, s)) if final_reward is None else np.asarray(final_reward)
    absorbing = np.zeros(s, bool) if absorbing is None else np.asarray(absorbing, bool)
    action_mask = np.ones((m, s, a), bool) if action_mask is None else np.asarray(action_mask, bool)
    if init_dist is None:
        init_dist = (~absorbing).astype(np.float64)
        init_dist = init_dist / init_dist.sum()
    game = TabularGame(
        next_state=jnp.asarray(next_state, jnp.int32),
        next_prob=jnp.asarray(np.asarray(next_prob), dtype),
        reward=jnp.asarray(reward, dtype),
        final_reward=jnp.asarray(final_reward, dtype),
        action_mask=jnp.asarray(action_mask),
        init_dist=jnp.asarray(init_dist, dtype),
        absorbing=jnp.asarray(absorbing),
        num_agents=m,
        num_actions=a,
    )
    validate_game(game)
    return game


def validate_game(game: TabularGame, atol: float = 1e-5) -> None:
    """Raise ValueError, naming the first bad entry, if `game` is not a well-formed Markov game."""
    m, a = game.num_agents, game.num_actions
    ns, p = np.asarray(game.next_state), np.asarray(game.next_prob, np.float64)
    if ns.ndim != 3 or p.shape != ns.shape:
        raise ValueError(f"next_state {ns.shape} and next_prob {p.shape} must both be [S, J, K]")
    s, j, _ = ns.shape
    if j != a ** m:
        raise ValueError(f"{j} joint actions but num_actions={a} and num_agents={m} give {a ** m}")
    shapes = {"reward": (m, s, j), "final_reward": (m, s), "action_mask": (m, s, a),
              "init_dist": (s,), "absorbing": (s,)}
    for name, shape in shapes.items():
        if np.shape(getattr(game, name)) != shape:
            raise ValueError(f"{name} has shape {np.shape(getattr(game, name))}; expected {shape}")
    if ns.min() < 0 or ns.max() >= s:
        raise ValueError(f"next_state has indices in [{ns.min()}, {ns.max()}]; valid: 0..{s - 1}")
    if (p < -atol).any():
        bad = np.argwhere(p < -atol)[0]
        raise ValueError(f"next_prob{tuple(bad)} = {p[tuple(bad)]} is negative")
    sums = p.sum(-1)
    if not np.allclose(sums, 1.0, atol=atol):
        bad = np.argwhere(~np.isclose(sums, 1.0, atol=atol))[0]
        raise ValueError(f"transition probabilities of state {bad[0]}, joint action {bad[1]} sum to "
                         f"{sums[tuple(bad)]:.6g}; they must sum to 1")
    mask = np.asarray(game.action_mask)
    if not mask.any(-1).all():
        i, st = np.argwhere(~mask.any(-1))[0]
        raise ValueError(f"agent {i} has no valid action in state {st}; every state needs one")
    d = np.asarray(game.init_dist, np.float64)
    if (d < -atol).any() or not np.isclose(d.sum(), 1.0, atol=atol):
        raise ValueError(f"init_dist must be a distribution; it sums to {d.sum():.6g}")
    for name in ("reward", "final_reward"):
        if not np.isfinite(np.asarray(getattr(game, name))).all():
            raise ValueError(f"{name} has non-finite entries")


def transition_matrix(game: TabularGame) -> jax.Array:
    """Dense `P[s, j, s']` (DESIGN.md's form); `O(S^2 J)` memory, for small games and tests."""
    s = game.num_states
    onehot = jax.nn.one_hot(game.next_state, s, dtype=game.next_prob.dtype)
    return jnp.einsum("sjk,sjkt->sjt", game.next_prob, onehot)


def joint_policy(pis: jax.Array) -> jax.Array:
    """Product `[..., S, J]` of independent per-agent policies `pis[..., M, S, A]`."""
    m = pis.shape[-3]
    out = pis[..., 0, :, :]
    for i in range(1, m):
        out = (out[..., :, None] * pis[..., i, :, None, :]).reshape(*out.shape[:-1], -1)
    return out


def expected_next(game: TabularGame, values: jax.Array) -> jax.Array:
    """`E[values[..., s'] | s, j]` for `values[..., S]`: shape `[..., S, J]`."""
    return jnp.sum(game.next_prob * values[..., game.next_state], axis=-1)


def state_distributions(game: TabularGame, joint_pis: jax.Array, init_dist=None) -> jax.Array:
    """`d[t, s]`, t = 0..T, the joint-state distribution under time-indexed joint policies
    `joint_pis[T, S, J]` (mge.md §5.5), by scatter-adding the outcome probabilities."""
    d0 = game.init_dist if init_dist is None else init_dist
    s = game.num_states

    def step(d, pi):
        w = d[:, None, None] * pi[:, :, None] * game.next_prob  # [S, J, K]
        nxt = jnp.zeros(s, w.dtype).at[game.next_state.ravel()].add(w.ravel())
        return nxt, nxt

    _, ds = jax.lax.scan(step, d0, joint_pis)
    return jnp.concatenate([d0[None], ds])


def choose(key, probs, greedy):
    """Sample from `probs[J]`, or take its argmax with ties broken uniformly at random (first-index
    argmax would bias symmetric games, mge.md §5.5)."""
    if not greedy:
        return jax.random.categorical(key, jnp.log(probs))
    top = probs >= jnp.max(probs) * (1.0 - 1e-6)
    return jax.random.categorical(key, jnp.where(top, 0.0, -jnp.inf))


def rollout(key, game: TabularGame, joint_pis: jax.Array, greedy: bool = False, init_state=None):
    """One episode of `T = joint_pis.shape[0]` decisions under `joint_pis[T, S, J]` (a product of
    per-agent policies from `joint_policy`, or a correlated one).

    Returns `states[T + 1]`, `actions[T]` (joint indices), `rewards[T, M]` (the final reward is
    added at the last step) and `done[T]` (entered an absorbing state). `vmap` over keys for many
    episodes; `init_state` (default: drawn from `init_dist`) fixes the start.
    """
    key, k0 = jax.random.split(key)
    s0 = jax.random.categorical(k0, jnp.log(game.init_dist)) if init_state is None else init_state
    s0 = jnp.asarray(s0, jnp.int32)
    horizon = joint_pis.shape[0]

    def body(s, xs):
        pi, t, k = xs
        ka, kn = jax.random.split(k)
        j = choose(ka, pi[s], greedy)
        nxt = game.next_state[s, j][jax.random.categorical(kn, jnp.log(game.next_prob[s, j]))]
        r = game.reward[:, s, j] + jnp.where(t == horizon - 1, game.final_reward[:, nxt], 0.0)
        return nxt, (nxt, j, r, game.absorbing[nxt])

    keys = jax.random.split(key, horizon)
    _, (states, acts, rewards, done) = jax.lax.scan(
        body, s0, (joint_pis, jnp.arange(horizon), keys))
    return jnp.concatenate([s0[None], states]), acts, rewards, done


# --------------------------------------------------------------------------------------------
# TabularEnv: a TabularGame as a jaxmcg Environment


@struct.dataclass
class TabularState:
    time: jax.Array
    joint_state: jax.Array  # int32 index into the game's joint states


@struct.dataclass
class TabularParams:
    game: TabularGame
    max_steps_in_episode: int = 20  # T, the number of decisions


class TabularEnv(Environment):
    """Runs `self.game` (set by the subclass constructor): every agent observes the one-hot joint
    state (the solvers' policies condition on it), reward `reward[:, s, j]` plus `final_reward` of
    the state reached at the last decision, `terminated` when an absorbing state is entered.
    Subclasses set `self.game`, `self.horizon_default` and may override `observe`."""

    game: TabularGame
    horizon_default: int = 20
    action_names: tuple = ()  # for printing policies; default "a0", "a1", ...
    agent_names: tuple = ()  # default "agent 0", ...

    def describe_state(self, joint_state: int) -> str:
        """A readable form of a joint state index (subclasses decode positions)."""
        return f"state {int(joint_state)}"

    @property
    def num_agents(self) -> int:
        return self.game.num_agents

    @property
    def default_params(self) -> TabularParams:
        return TabularParams(game=self.game, max_steps_in_episode=self.horizon_default)

    def reset_env(self, key, params):
        s = jax.random.categorical(key, jnp.log(params.game.init_dist)).astype(jnp.int32)
        state = TabularState(time=jnp.zeros((), jnp.int32), joint_state=s)
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        game = params.game
        j = joint_action_index(actions.astype(jnp.int32), game.num_actions)
        k = jax.random.categorical(key, jnp.log(game.next_prob[state.joint_state, j]))
        nxt = game.next_state[state.joint_state, j, k]
        time = state.time + 1
        last = time >= params.max_steps_in_episode
        reward = game.reward[:, state.joint_state, j] + jnp.where(last, game.final_reward[:, nxt], 0.0)
        new = TabularState(time=time, joint_state=nxt)
        info = {"joint_state": nxt}
        return self.get_obs(new, params), new, reward, game.absorbing[nxt], info

    def get_obs(self, state, params):
        onehot = jax.nn.one_hot(state.joint_state, params.game.num_states, dtype=jnp.float32)
        return jnp.broadcast_to(onehot, (self.num_agents, params.game.num_states))

    def observation_space(self, params=None):
        params = self.default_params if params is None else params
        return spaces.Box(0.0, 1.0, (params.game.num_states,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(self.game.num_actions)

    def validate_params(self, params) -> None:
        super().validate_params(params)
        validate_game(params.game)
