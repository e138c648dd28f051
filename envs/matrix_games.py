"""Iterated two-player matrix games: IPD, stag hunt, chicken, purely conflicting game.

The stage game is a payoff tensor `payoff[a_row, a_col, agent]` (float32 `[A, A, 2]`) held in
`EnvParams`, so payoffs can be `vmap`ped; agent 0 is the row player. Each env step is one round, and
the episode is truncated after `max_steps_in_episode` rounds (never terminated early).

Observations (a static, constructor choice):
* `"memory1"` (default): one-hot of the previous round's joint action, index `a_row * A + a_col`,
  plus a last "start" entry set only at the first round: `A*A + 1` floats; for the IPD the 5-dim
  CC, CD, DC, DD, start of LOLA, which LIO reuses (thesis §5.3). LOLA and LIO give both agents the
  *same* joint-state one-hot (row player's action first), not a view from each agent's perspective,
  so we do too.
* `"dummy"`: the constant state `[1, 0]` of DCL's repeated games (dcl.md §3.1, §3.3); agents see no
  history.

`info["joint_action"]`: int32 index `a_row * A + a_col` of this round's joint action.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

# Payoffs as ((row C, col C), (row C, col D)), ((row D, col C), (row D, col D)); entries are
# (row player's, column player's). Action 0 is the cooperative action in every game.
IPD_PAYOFF = (((-1.0, -1.0), (-3.0, 0.0)), ((0.0, -3.0), (-2.0, -2.0)))  # thesis Table 5.1
# dcl.md §3.6 (slides only): SS=(5,5), SH=(0,2), HS=(2,0), HH=(1,1); 0 = stag, 1 = hare
STAG_HUNT_PAYOFF = (((5.0, 5.0), (0.0, 2.0)), ((2.0, 0.0), (1.0, 1.0)))
# No source in spec/ gives numbers for chicken: textbook ordering with 0 = swerve, 1 = straight;
# tie 0, lose/win -1/+1, crash -10 (any crash value below -1 keeps the game's structure).
CHICKEN_PAYOFF = (((0.0, 0.0), (-1.0, 1.0)), ((1.0, -1.0), (-10.0, -10.0)))
# dcl.md §3.3 purely conflicting game (slides layout): [(0,0),(-1,2),(2,-1),(0,0)]
CONFLICT_PAYOFF = (((0.0, 0.0), (-1.0, 2.0)), ((2.0, -1.0), (0.0, 0.0)))

PAYOFFS = {
    "ipd": IPD_PAYOFF,
    "stag_hunt": STAG_HUNT_PAYOFF,
    "chicken": CHICKEN_PAYOFF,
    "conflict": CONFLICT_PAYOFF,
}
OBSERVATIONS = ("memory1", "dummy")


@struct.dataclass
class EnvState:
    prev_joint_action: jax.Array  # int32 in [0, A*A]; A*A means "start" (no previous round)
    time: jax.Array


@struct.dataclass
class EnvParams:
    payoff: jax.Array  # float32 [A, A, 2]: payoff[a_row, a_col, agent]
    max_steps_in_episode: int = 5


def _payoff_array(payoff) -> np.ndarray:
    if isinstance(payoff, str):
        if payoff not in PAYOFFS:
            raise ValueError(f"unknown payoff table {payoff!r}; valid: {', '.join(PAYOFFS)}")
        payoff = PAYOFFS[payoff]
    try:
        arr = np.asarray(payoff, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"payoff={payoff!r} is not a numeric [A, A, 2] array") from err
    if arr.ndim != 3 or arr.shape[0] != arr.shape[1] or arr.shape[2] != 2 or arr.shape[0] < 2:
        raise ValueError(
            f"payoff has shape {arr.shape}; it must be [A, A, 2] with A >= 2 actions "
            "(payoff[a_row, a_col, agent])"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"payoff must be finite, got {arr.tolist()}")
    return arr


class MatrixGame(Environment):
    """Iterated 2-player matrix game (thesis §5.3 for the IPD; dcl.md §3.1, §3.3, §3.6).

    `payoff` (an `[A, A, 2]` array or a name in `PAYOFFS`) fixes the number of actions A (a shape,
    so a constructor argument); its values are the default `EnvParams.payoff` and may be replaced or
    `vmap`ped like any other parameter.
    """

    num_agents = 2

    def __init__(
        self,
        payoff=IPD_PAYOFF,
        max_steps_in_episode: int = 5,
        observation: str = "memory1",
    ):
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation={observation!r} is invalid; valid: {list(OBSERVATIONS)}")
        self._payoff = _payoff_array(payoff)
        self.num_actions = int(self._payoff.shape[0])
        self.observation = observation
        self._max_steps = max_steps_in_episode
        self.validate_params(self.default_params)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(
            payoff=self._payoff, max_steps_in_episode=self._max_steps  # numpy: no compile at make()
        )

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        shape = tuple(np.shape(params.payoff))
        expected = (self.num_actions, self.num_actions, 2)
        if shape != expected:
            raise ValueError(
                f"payoff has shape {shape}; this game has {self.num_actions} actions, so it must "
                f"be {expected} (pass a new `payoff` to make() to change the number of actions)"
            )

    @property
    def _start(self) -> int:
        return self.num_actions * self.num_actions

    def reset_env(self, key, params):
        state = EnvState(
            prev_joint_action=jnp.asarray(self._start, jnp.int32), time=jnp.zeros((), jnp.int32)
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        actions = jnp.asarray(actions, jnp.int32)
        joint = actions[0] * self.num_actions + actions[1]
        reward = jnp.asarray(params.payoff, jnp.float32)[actions[0], actions[1]]
        next_state = EnvState(prev_joint_action=joint, time=state.time + 1)
        terminated = jnp.asarray(False)
        info = {"joint_action": joint}
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    def get_obs(self, state, params=None):
        if self.observation == "dummy":
            return jnp.tile(jnp.array([1.0, 0.0], jnp.float32), (self.num_agents, 1))
        onehot = jax.nn.one_hot(state.prev_joint_action, self._start + 1, dtype=jnp.float32)
        return jnp.tile(onehot, (self.num_agents, 1))

    def observation_space(self, params=None):
        dim = 2 if self.observation == "dummy" else self._start + 1
        return spaces.Box(0.0, 1.0, (dim,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(self.num_actions)
