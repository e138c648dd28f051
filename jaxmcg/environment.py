"""Multi-agent environment base class (gymnax 1.0 shape, with a leading agent axis).

Subclasses implement the raw transitions `reset_env` / `step_env`; this class owns jit, auto-reset
and time-limit truncation, so that every environment behaves the same inside `vmap` and `lax.scan`.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EnvState:
    """Fields every environment state carries; subclasses add their own."""

    time: jax.Array  # steps taken in the current episode


@struct.dataclass
class EnvParams:
    """Fields every environment's parameters carry; subclasses add their own."""

    max_steps_in_episode: int = 100


class Environment:
    """Base class of all jaxmcg Markov games.

    `reset(key, params) -> (obs, state)` and
    `step(key, state, actions, params) -> (obs, state, reward, terminated, truncated, info)`
    with `obs` of leading axis `num_agents`, `actions` of shape `[num_agents]` and `reward` float32
    `[num_agents]`. `step` resets the environment when the episode ends and keeps the observation
    before the reset in `info["final_obs"]`. Truncation (`state.time >= max_steps_in_episode`) is
    decided here, never by the subclass, and never overlaps termination.
    """

    num_agents: int

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return type(self).__name__

    @partial(jax.jit, static_argnums=(0,))
    def reset(self, key: jax.Array, params: EnvParams | None = None):
        params = self.default_params if params is None else params
        return self.reset_env(key, params)

    @partial(jax.jit, static_argnums=(0,))
    def step(self, key: jax.Array, state: Any, actions: jax.Array, params: EnvParams | None = None):
        params = self.default_params if params is None else params
        key_step, key_reset = jax.random.split(key)
        obs, next_state, reward, terminated, info = self.step_env(key_step, state, actions, params)
        truncated = jnp.logical_and(
            next_state.time >= params.max_steps_in_episode, jnp.logical_not(terminated)
        )
        done = jnp.logical_or(terminated, truncated)
        obs_reset, state_reset = self.reset_from(key_reset, next_state, params)
        next_state = jax.tree_util.tree_map(
            lambda r, s: jnp.where(done, r, s), state_reset, next_state
        )
        info = dict(info)
        info["final_obs"] = obs
        obs = jax.tree_util.tree_map(lambda r, o: jnp.where(done, r, o), obs_reset, obs)
        return obs, next_state, reward.astype(jnp.float32), terminated, truncated, info

    def reset_batch(self, keys: jax.Array, params: EnvParams):
        """Reset `len(keys)` environments at once: `(obs, state)` with a leading batch axis. The
        default vmaps `reset`; an environment whose paper draws its starts per batch (Trust-Your-
        Brother's balanced batches) overrides it. Rollouts start their episodes here."""
        return jax.vmap(self.reset, in_axes=(0, None))(keys, params)

    def horizon(self, params: EnvParams) -> int:
        """Steps (decisions) per episode when nothing terminates it: the rollout length."""
        return int(params.max_steps_in_episode)

    def reset_env(self, key: jax.Array, params: EnvParams):
        """Raw reset: `(obs, state)`."""
        raise NotImplementedError

    def reset_from(self, key: jax.Array, final_state: Any, params: EnvParams):
        """The auto-reset after an episode that ended in `final_state`: `(obs, state)`. The default
        is `reset_env` (episodes are independent); an environment whose world outlives an episode
        (the lane merge's background traffic) starts the next one from it."""
        return self.reset_env(key, params)

    def step_env(self, key: jax.Array, state: Any, actions: jax.Array, params: EnvParams):
        """Raw transition: `(obs, state, reward, terminated, info)`; no auto-reset, no truncation.

        `info` must have the same keys and shapes on every call (it is stacked by `lax.scan`).
        """
        raise NotImplementedError

    def get_obs(self, state: Any, params: EnvParams):
        raise NotImplementedError

    def observation_space(self, params: EnvParams | None = None):
        """Per-agent observation space (a gymnax space)."""
        raise NotImplementedError

    def action_space(self, params: EnvParams | None = None):
        """Per-agent action space (a gymnax space)."""
        raise NotImplementedError

    def validate_params(self, params: EnvParams) -> None:
        """Raise ValueError for impossible parameters, before any compilation. Subclasses call
        this first: it checks the horizon."""
        if int(params.max_steps_in_episode) < 1:
            raise ValueError(f"max_steps_in_episode={params.max_steps_in_episode} must be >= 1")


class Wrapper(Environment):
    """An environment built around another, `self.inner`. Parameters, their validation, the horizon,
    the spaces and the observations are the inner environment's unless a subclass says otherwise;
    the default `get_obs` expects the wrapper's state to keep the inner state in `.inner`."""

    def __init__(self, env: Environment):
        self.inner = env
        self.num_agents = env.num_agents

    @property
    def default_params(self):
        return self.inner.default_params

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({self.inner.name})"

    def validate_params(self, params) -> None:
        self.inner.validate_params(params)

    def horizon(self, params) -> int:
        return self.inner.horizon(params)

    def get_obs(self, state, params=None):
        return self.inner.get_obs(state.inner, params)

    def observation_space(self, params=None):
        return self.inner.observation_space(params)

    def action_space(self, params=None):
        return self.inner.action_space(params)


def num_discrete_actions(env: Environment, needed_by: str) -> int:
    """The size of `env`'s discrete action space; ValueError naming `needed_by` otherwise."""
    space = env.action_space(env.default_params)
    if not hasattr(space, "n"):
        raise ValueError(f"{needed_by} needs discrete actions; {env.name} has action space "
                         f"{type(space).__name__} (valid: Discrete)")
    return int(space.n)
