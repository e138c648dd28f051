"""Asymmetric 2-player Escape Room (thesis §5.2; LIO appendix, code `room_asymmetric_lola.py`).

A1 (agent 0, the would-be giver) moves between {start, door}; A2 (agent 1, the recipient) between
{start, lever}. For both, action 0 = go to / stay at start, 1 = go to / stay at its goal (door for
A1, lever for A2). Both start at start. Per round:
* A2 gets -1 if its action changes its position, else 0.
* A1 gets +10 if A2 pulls the lever this round and A1 goes to the door, else -1.
* Once A1 has gone through the open door the game is solved: all rewards are 0 until
  `max_steps_in_episode` rounds have passed. The episode never terminates early.

**A1 observes A2's current action before choosing its own.** The original code samples A2's
action first and appends it to A1's observation in the training loop. Here each round takes two
env steps, so that actions keep shape `[2]` and any learner sees the ordering through the env:
* phase 0: only A2's action counts; A2's reward for this round is paid now, `[0, r2]`;
* phase 1: A2's action from phase 0 is shown in A1's observation; only A1's action counts; A1's
  reward is paid and the round resolves, `[r1, 0]`.
`info["acting"]` ([2] bool) says whose action counted at this env step. Keeping only agent i's
steps where `acting[i]` is true gives exactly agent i's original per-round sequence of
observations, actions and rewards (discount per *acting* step, i.e. per round, to match the
paper). `state.time` counts rounds, so an episode is `2 * max_steps_in_episode` env steps and
ends (truncation) on a phase-1 step, one env step after A2's last action.

Observation of each agent (6 floats): own position one-hot (2), the other's position one-hot (2),
the other's action in the current round if it has already acted (one-hot, 2; else zeros). Only A1
ever sees a non-zero last block. The thesis says both agents observe both positions; the code's A2
saw only its own, we follow the thesis. LOLA / PG-rewards' give actions are not part of this env.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

START, GOAL = 0, 1  # per-agent locations; GOAL is the door for A1 and the lever for A2
A1, A2 = 0, 1


@struct.dataclass
class EnvState:
    position: jax.Array  # [2] int32, each in {START, GOAL}
    a2_action: jax.Array  # int32, A2's action in the current round (valid in phase 1)
    phase: jax.Array  # int32: 0 = A2 acts, 1 = A1 acts
    solved: jax.Array  # bool: A1 has gone through the open door in this episode
    time: jax.Array  # completed rounds


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 5  # rounds; the thesis gives no value, 5 as in symmetric ER
    door_reward: float = 10.0  # A1, when A2 pulls the lever and A1 goes to the door
    step_cost: float = 1.0  # A1, every other unsolved round
    move_cost: float = 1.0  # A2, per change of position


class EscapeRoomAsym(Environment):
    """Asymmetric Escape Room with a two-phase step (see the module docstring).

    `info`: `acting` ([2] bool), `door_open` (A2 pulled the lever this round; phase 1 only),
    `exited` (A1 went through the open door at this step), `solved` (after this step).
    """

    num_agents = 2

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def reset_env(self, key, params):
        state = EnvState(
            position=jnp.full((2,), START, jnp.int32),
            a2_action=jnp.zeros((), jnp.int32),
            phase=jnp.zeros((), jnp.int32),
            solved=jnp.asarray(False),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        actions = jnp.asarray(actions, jnp.int32)
        a1, a2 = actions[A1], actions[A2]
        live = jnp.logical_not(state.solved)
        a1_phase = state.phase == 1

        # phase 0: A2 commits its action and pays for moving
        r2 = jnp.where(live & (a2 != state.position[A2]), -params.move_cost, 0.0)
        # phase 1: A1 answers the action A2 committed in phase 0
        door_open = a1_phase & (state.a2_action == GOAL)
        exited = door_open & (a1 == GOAL) & live
        r1 = jnp.where(live, jnp.where(exited, params.door_reward, -params.step_cost), 0.0)
        reward = jnp.where(a1_phase, jnp.stack([r1, 0.0]), jnp.stack([0.0, r2]))

        # like the code, positions keep following actions after the game is solved
        next_state = EnvState(
            position=jnp.where(a1_phase, jnp.stack([a1, state.a2_action]), state.position),
            a2_action=jnp.where(a1_phase, state.a2_action, a2),
            phase=1 - state.phase,
            solved=state.solved | exited,
            time=state.time + a1_phase.astype(jnp.int32),
        )
        info = {
            "acting": jnp.stack([a1_phase, jnp.logical_not(a1_phase)]),
            "door_open": door_open,
            "exited": exited,
            "solved": next_state.solved,
        }
        terminated = jnp.asarray(False)
        obs = self.get_obs(next_state, params)
        return obs, next_state, reward.astype(jnp.float32), terminated, info

    def get_obs(self, state, params=None):
        pos = jax.nn.one_hot(state.position, 2, dtype=jnp.float32)  # [2, 2]
        shown = jax.nn.one_hot(state.a2_action, 2, dtype=jnp.float32) * (state.phase == 1)
        obs_a1 = jnp.concatenate([pos[A1], pos[A2], shown])
        obs_a2 = jnp.concatenate([pos[A2], pos[A1], jnp.zeros(2, jnp.float32)])
        return jnp.stack([obs_a1, obs_a2])

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (6,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)
