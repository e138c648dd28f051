"""Checkers, CM3's multi-goal item-collection grid (cm3-hsd.md §4.2; thesis A.7.3, [C-CM3 checkers.py]).

A 7x13 grid (rows 0, 1, 5, 6 and columns 0, 1, 11, 12 are walls; the thesis' "5 rows" is a typo,
A-CM3-5) holds 24 items in a checkerboard over rows 2-4 x columns 2-9: colour 0 ("red") where
row + column is even, colour 1 ("yellow") elsewhere. Agent A (index 0, goal [1, 0]) starts at (2, 10),
agent B (index 1, goal [0, 1]) at (4, 10). Actions: 0 stay, 1 up, 2 down, 3 left, 4 right.

Step (§4.2): agents act sequentially in index order, so A cannot enter a cell B leaves in the same
step. A move succeeds iff the target cell is free (not a wall, not the other agent); a failed move
costs 0.1 (code only, A-CM3-12). Right after its move an agent collects the item of its cell: +1 for
its own colour, -0.5 for the other. The episode terminates when all 24 items are collected (Stage 1,
N = 1: when the agent's own 12 are), and is truncated after 75 steps. The optimum is 24.

World tensor W [7, 13, 3] (code coding, A-CM3-12): channels 0/1 are -1 item present, +1 collected,
0 never an item; channel 2 is +1 wall, -1 agent, 0 free.

Observation of agent i (flat, float32, layout `OBS_LAYOUT`): the 5x5x3 window of W centred on it
(centre cell's channel 2 set to 0), o_self,V = [(r - 3.5)/7, (c - 6.5)/13, #red/12, #yellow/12], the
one-hot previous own action (stay at t = 0), the goal one-hot, then the others' normalized (r, c).
The centralized critic inputs are in `info` (§10.1): `state_env` = s_T = W[2:5, 2:11, 0:2] flattened
(54), `state` = s_V per agent [N, 4] = raw (r, c, #red, #yellow), both before the step, with
`next_state_env` / `next_state` after it (before any auto-reset), and `goal` [N, 2].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

STAY, UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3, 4
NUM_ACTIONS = 5
_DELTAS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)  # (drow, dcol)
ROWS, COLS = 7, 13
STARTS = np.array([[2, 10], [4, 10]], np.int32)  # A, B in full-grid coordinates (A-CM3-5)
NUM_ITEMS = 24
VIEW = 5  # o_self,T window side


def initial_world() -> np.ndarray:
    """W [7, 13, 3] float32 at the start of an episode, without agents (§4.2)."""
    world = np.zeros((ROWS, COLS, 3), np.float32)
    world[:, :, 2] = 1.0
    world[2:5, 2:11, 2] = 0.0
    for r in range(2, 5):
        for c in range(2, 10):
            world[r, c, (r + c) % 2] = -1.0  # row 2: red at even columns (§4.2 pattern)
    return world


@struct.dataclass
class EnvState:
    world: jax.Array  # [7, 13, 3] W
    position: jax.Array  # [N, 2] int32 (row, col)
    collected: jax.Array  # [N, 2] int32 items of each colour collected by each agent
    goal: jax.Array  # [N] int32: 0 = A (red), 1 = B (yellow)
    prev_action: jax.Array  # [N] int32
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 75
    own_reward: float = 1.0
    other_reward: float = -0.5
    fail_penalty: float = 0.1  # code only (A-CM3-12)


class Checkers(Environment):
    """Checkers with `num_agents` = 2 (Stage 2) or 1 (Stage 1: the role is drawn uniformly each
    episode, the agent starts at its role's cell, both colours are present).

    `info`: `state`, `next_state` [N, 4]; `state_env`, `next_state_env` [54]; `goal` [N, 2];
    `collected` [N, 2] (items per colour per agent after the step); `failed_move` [N].
    """

    def __init__(self, num_agents: int = 2):
        if int(num_agents) not in (1, 2):
            raise ValueError(f"num_agents={num_agents} is invalid for Checkers; valid: 1 (Stage 1), "
                             "2 (Stage 2)")
        self.num_agents = int(num_agents)
        self._world0 = initial_world()
        n = self.num_agents
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32)
        self.obs_layout = {  # name -> (start, stop) in the flat observation
            "self_T": (0, VIEW * VIEW * 3),
            "self_V": (75, 79),
            "prev_action": (79, 84),
            "goal": (84, 86),
            "others": (86, 86 + 2 * (n - 1)),
        }
        self.obs_dim = 86 + 2 * (n - 1)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        if float(params.fail_penalty) < 0:
            raise ValueError(f"fail_penalty={params.fail_penalty} must be >= 0 (a cost)")

    def reset_env(self, key, params):
        n = self.num_agents
        if n == 1:  # Stage 1: random role, its start cell (§4.2)
            goal = jax.random.randint(key, (1,), 0, 2)
        else:
            goal = jnp.arange(2, dtype=jnp.int32)
        position = jnp.asarray(STARTS)[goal]
        world = jnp.asarray(self._world0).at[position[:, 0], position[:, 1], 2].set(-1.0)
        state = EnvState(world=world, position=position.astype(jnp.int32),
                         collected=jnp.zeros((n, 2), jnp.int32), goal=goal.astype(jnp.int32),
                         prev_action=jnp.zeros((n,), jnp.int32), time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        actions = jnp.asarray(actions, jnp.int32)
        world, position, collected = state.world, state.position, state.collected
        rewards, failed = [], []
        for i in range(self.num_agents):  # sequential in index order (§4.2), unrolled
            pos = position[i]
            target = pos + jnp.asarray(_DELTAS)[actions[i]]
            moving = actions[i] != STAY
            ok = moving & (world[target[0], target[1], 2] == 0)
            world = world.at[pos[0], pos[1], 2].set(jnp.where(ok, 0.0, -1.0))
            new = jnp.where(ok, target, pos)
            world = world.at[new[0], new[1], 2].set(-1.0)
            position = position.at[i].set(new)
            present = world[new[0], new[1], :2] == -1.0  # [2] item of each colour here
            world = world.at[new[0], new[1], :2].set(jnp.where(present, 1.0, world[new[0], new[1], :2]))
            collected = collected.at[i].add(present.astype(jnp.int32))
            own = jnp.arange(2) == state.goal[i]
            gain = jnp.sum(present * jnp.where(own, params.own_reward, params.other_reward))
            fail = moving & ~ok
            rewards.append(gain - params.fail_penalty * fail)
            failed.append(fail)
        next_state = state.replace(world=world, position=position, collected=collected,
                                   prev_action=actions, time=state.time + 1)
        if self.num_agents == 1:  # own colour complete (§4.2 Stage 1)
            remaining = jnp.sum(world[:, :, state.goal[0]] == -1.0)
        else:
            remaining = jnp.sum(world[:, :, :2] == -1.0)
        terminated = remaining == 0
        info = {"state": self.state_vector(state), "next_state": self.state_vector(next_state),
                "state_env": self.state_env(state), "next_state_env": self.state_env(next_state),
                "goal": jax.nn.one_hot(state.goal, 2), "collected": collected,
                "failed_move": jnp.stack(failed)}
        reward = jnp.stack(rewards).astype(jnp.float32)
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    @staticmethod
    def state_env(state) -> jax.Array:
        """s_T = W[2:5, 2:11, 0:2] flattened [54] (±1 coding, §4.2)."""
        return state.world[2:5, 2:11, :2].reshape(-1)

    @staticmethod
    def state_vector(state) -> jax.Array:
        """s_V per agent [N, 4] float32: raw (row, col, #red, #yellow), unnormalized (§4.2)."""
        return jnp.concatenate([state.position, state.collected], axis=1).astype(jnp.float32)

    def get_obs(self, state, params=None):
        n = self.num_agents
        rc = state.position.astype(jnp.float32)
        norm = jnp.stack([(rc[:, 0] - 3.5) / 7.0, (rc[:, 1] - 6.5) / 13.0], axis=1)  # [N, 2]

        def window(pos):  # 5x5x3 around pos: always inside thanks to the 2-cell walls
            # int32 zero: an int literal would be int64 under jax_enable_x64 and dynamic_slice rejects the mix
            zero = jnp.zeros((), pos.dtype)
            w = jax.lax.dynamic_slice(state.world, (pos[0] - 2, pos[1] - 2, zero), (VIEW, VIEW, 3))
            return w.at[2, 2, 2].set(0.0).reshape(-1)

        self_v = jnp.concatenate([norm, state.collected.astype(jnp.float32) / 12.0], axis=1)
        parts = [jax.vmap(window)(state.position), self_v,
                 jax.nn.one_hot(state.prev_action, NUM_ACTIONS), jax.nn.one_hot(state.goal, 2),
                 norm[self._others].reshape(n, 2 * (n - 1))]
        return jnp.concatenate(parts, axis=1).astype(jnp.float32)

    def observation_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (self.obs_dim,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)
