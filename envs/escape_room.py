"""Escape Room ER(N, M) (thesis §5.1; LIO ch. 5 and MetaGrad ch. 6).

N agents start at `start`. Each step every agent picks a location {lever, start, door}; choosing the
current location means staying. The door is open at a step iff at least M agents chose `lever` in
that step. Rewards are checked in order: +10 for choosing `door` while the door is open, else 0 for
staying, else -1 for moving. The episode terminates when the door is open and an agent is at the door
after the step, and is truncated after `max_steps_in_episode` = 5 steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

LEVER, START, DOOR = 0, 1, 2  # location indices of the authors' code (room_symmetric.py)
NUM_LOCATIONS = 3


@struct.dataclass
class EnvState:
    position: jax.Array  # [N] int32 location of each agent
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 5
    min_lever_pullers: int = 1  # M: lever actions needed in a step to open the door
    door_reward: float = 10.0
    move_cost: float = 1.0


class EscapeRoom(Environment):
    """ER(N, M). Observation of agent i: one-hot of its own location, then one-hot locations of the
    other agents in index order (3N floats). LIO's cumulative-given block is added by
    `jaxmcg.wrappers.ObserveGiven`.

    `info`: `door_open` (bool), `lever_pullers` (lever actions this step).
    """

    def __init__(self, num_agents: int = 2):
        if int(num_agents) < 2:
            raise ValueError(f"num_agents={num_agents} is invalid: Escape Room needs N >= 2")
        self.num_agents = int(num_agents)
        n = self.num_agents
        # row i lists agent i first, then the others in index order (static gather indices)
        self._obs_order = np.array([[i] + [j for j in range(n) if j != i] for i in range(n)])

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        m = int(params.min_lever_pullers)
        if not 1 <= m < self.num_agents:
            raise ValueError(
                f"ER({self.num_agents}, {m}) is invalid: min_lever_pullers must satisfy "
                f"1 <= M < N, i.e. one of {list(range(1, self.num_agents))}"
            )

    def reset_env(self, key, params):
        state = EnvState(
            position=jnp.full((self.num_agents,), START, jnp.int32), time=jnp.zeros((), jnp.int32)
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        actions = jnp.asarray(actions, jnp.int32)
        lever_pullers = jnp.sum(actions == LEVER)
        door_open = lever_pullers >= params.min_lever_pullers
        reward = jnp.where(
            door_open & (actions == DOOR),
            params.door_reward,
            jnp.where(actions == state.position, 0.0, -params.move_cost),
        ).astype(jnp.float32)
        next_state = EnvState(position=actions, time=state.time + 1)
        terminated = door_open & jnp.any(actions == DOOR)
        info = {"door_open": door_open, "lever_pullers": lever_pullers}
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    def get_obs(self, state, params=None):
        onehot = jax.nn.one_hot(state.position, NUM_LOCATIONS, dtype=jnp.float32)  # [N, 3]
        return onehot[self._obs_order].reshape(self.num_agents, NUM_LOCATIONS * self.num_agents)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (NUM_LOCATIONS * self.num_agents,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_LOCATIONS)
