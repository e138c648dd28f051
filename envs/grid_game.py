"""DCL's two-player 1-D Grid game (dcl.md §3.2; paper P:L277–L288, Table 6; D13).

Cells `0..N-1` (`grid_size`, default N = 4). Agent 0 starts at cell 0 and agent 1 at cell N-1. Both
agents move at once with the same absolute meaning of an action: 1 = forward, `p <- min(p+1, N-1)`;
0 = backward, `p <- max(p-1, 0)` (a no-op only at cell 0). There are no collisions: agents may share
or cross cells. After the move each agent is paid on the new positions, with conflict factor
k = `conflict` (default 2):

    r0 = p0 - k (N-1-p1),        r1 = (N-1-p1) - k p0.

Moving toward the other's start earns +1 for oneself and -k for the other, so "defect" (agent 0
plays 1, agent 1 plays 0) is dominant; mutual cooperation (agent 0 plays 0, agent 1 plays 1) keeps
both at their start cells and pays 0. The episode is truncated after `max_steps_in_episode` = T = 16
steps.

Observation, identical for both agents: `concat(onehot_N(p0), onehot_N(p1))` (2N floats), with no
time index, as in the paper. `obs_include_time=True` appends `t/T` (D13).
`info["positions"]`: int32 `[2]` positions after the move.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

BACKWARD, FORWARD = 0, 1


@struct.dataclass
class EnvState:
    positions: jax.Array  # [2] int32 cells of agents 0 and 1
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 16
    conflict: float = 2.0  # k: what each agent loses per cell the other has advanced


class GridGame(Environment):
    """DCL Grid game on `grid_size` cells (a shape, so a constructor argument)."""

    num_agents = 2

    def __init__(self, grid_size: int = 4, obs_include_time: bool = False):
        if isinstance(grid_size, bool) or int(grid_size) != grid_size or int(grid_size) < 2:
            raise ValueError(f"grid_size={grid_size!r} is invalid: the grid needs an integer N >= 2")
        self.grid_size = int(grid_size)
        self.obs_include_time = bool(obs_include_time)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        if not np.all(np.isfinite(np.asarray(params.conflict, np.float32))):
            raise ValueError(f"conflict={params.conflict!r} must be a finite number")

    def reset_env(self, key, params):
        start = jnp.array([0, self.grid_size - 1], jnp.int32)
        state = EnvState(positions=start, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        step = jnp.where(jnp.asarray(actions, jnp.int32) == FORWARD, 1, -1)
        positions = jnp.clip(state.positions + step, 0, self.grid_size - 1).astype(jnp.int32)
        p0 = positions[0].astype(jnp.float32)
        advance1 = (self.grid_size - 1 - positions[1]).astype(jnp.float32)  # agent 1's progress
        k = jnp.asarray(params.conflict, jnp.float32)
        reward = jnp.stack([p0 - k * advance1, advance1 - k * p0])
        next_state = EnvState(positions=positions, time=state.time + 1)
        info = {"positions": positions}
        return self.get_obs(next_state, params), next_state, reward, jnp.asarray(False), info

    def get_obs(self, state, params=None):
        obs = jax.nn.one_hot(state.positions, self.grid_size, dtype=jnp.float32).reshape(-1)
        if self.obs_include_time:
            params = self.default_params if params is None else params
            frac = state.time.astype(jnp.float32) / params.max_steps_in_episode
            obs = jnp.concatenate([obs, frac[None]])
        return jnp.tile(obs, (self.num_agents, 1))

    def observation_space(self, params=None):
        dim = 2 * self.grid_size + int(self.obs_include_time)
        return spaces.Box(0.0, 1.0, (dim,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)
