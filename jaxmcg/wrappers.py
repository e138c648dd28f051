"""Wrappers that add what incentive-giving learners need to any registered environment."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment, Wrapper


@struct.dataclass
class GiveAction:
    """A joint action with the incentives given in the same step.

    `given[i, j]` is what agent i gives agent j (the diagonal is ignored).
    """

    action: jax.Array  # [N] int
    given: jax.Array  # [N, N] float


@struct.dataclass
class GivenState:
    inner: object
    given: jax.Array  # [N, N] cumulative incentives given in this episode
    time: jax.Array


class ObserveGiven(Wrapper):
    """Appends to agent i's flat observation the cumulative incentives it has given to each other
    agent in the current episode (N - 1 values, index order), as LIO's Escape Room does (thesis
    §5.1, L1727). Accepts `GiveAction`s, or plain integer actions meaning nothing was given.
    With `observe=False` the observation is unchanged (PG's 3N-dim view, A18)."""

    def __init__(self, env: Environment, observe: bool = True):
        super().__init__(env)
        self.observe = observe
        n = self.num_agents
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)])

    def _obs(self, inner_obs, given):
        if not self.observe:
            return inner_obs
        block = given[np.arange(self.num_agents)[:, None], self._others]  # [N, N-1] static gather
        return jnp.concatenate([inner_obs, block.astype(inner_obs.dtype)], axis=-1)

    def reset_env(self, key, params):
        obs, inner = self.inner.reset_env(key, params)
        given = jnp.zeros((self.num_agents, self.num_agents), jnp.float32)
        return self._obs(obs, given), GivenState(inner, given, inner.time)

    def step_env(self, key, state, actions, params):
        if isinstance(actions, GiveAction):
            action, given = actions.action, actions.given
        else:
            action, given = actions, jnp.zeros_like(state.given)
        obs, inner, reward, terminated, info = self.inner.step_env(key, state.inner, action, params)
        given = state.given + (given * (1.0 - jnp.eye(self.num_agents))).astype(state.given.dtype)
        return self._obs(obs, given), GivenState(inner, given, inner.time), reward, terminated, info

    def get_obs(self, state, params=None):
        return self._obs(self.inner.get_obs(state.inner, params), state.given)

    def observation_space(self, params=None):
        space = self.inner.observation_space(params)
        if not self.observe:
            return space
        if len(space.shape) != 1:
            raise ValueError(f"ObserveGiven needs flat observations, got shape {space.shape}")
        return spaces.Box(-jnp.inf, jnp.inf, (space.shape[0] + self.num_agents - 1,), jnp.float32)


def wrap_observe_given(env: Environment, config) -> ObserveGiven:
    """`ObserveGiven(env, observe=config.observe_given)`, or `env` itself if it is wrapped already.

    The `wrap_env` of every incentive-giving algorithm (LIO, PG-d, PG-c). Image observations
    (Cleanup) are never augmented: the authors' Cleanup agents observe only the image."""
    if isinstance(env, ObserveGiven):
        return env
    flat = len(env.observation_space(env.default_params).shape) == 1
    return ObserveGiven(env, observe=config.observe_given and flat)
