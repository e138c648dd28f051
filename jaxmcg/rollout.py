"""Episode rollouts of a batch of environments under one policy, as a `lax.scan`.

The thesis' learners update once per episode, so a rollout resets every environment and runs
`num_steps` (the environment's horizon) steps. Steps after an episode ends are padding: `valid`
is zero there, and returns and losses ignore them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Trajectory:
    """A batch of episodes, every leaf `[time, env, ...]` (agent axis after env)."""

    obs: Any  # observation before the step
    action: Any  # what `act` returned for the environment (ints [T, E, N] or an action pytree)
    reward: jax.Array  # [T, E, N] extrinsic reward
    next_obs: Any  # observation after the step (before any auto-reset)
    valid: jax.Array  # [T, E] 1.0 where the step belongs to the episode
    terminated: jax.Array  # [T, E]
    truncated: jax.Array  # [T, E]
    extras: dict  # what `act` returned beside the actions (log-probs, incentives given, ...)
    info: dict  # the environment's per-step info (without final_obs)


ActFn = Callable[[Any, jax.Array], tuple[Any, dict]]


def episode_rollout(env, env_params, act_fn: ActFn, key: jax.Array, n_envs: int, num_steps: int,
                    constrain: Callable | None = None):
    """Run one episode in each of `n_envs` environments with `act_fn(obs[E, N, ...], key)`.

    Returns a `Trajectory`. Environments are reset at the start; only the first episode of each
    environment is valid, so `num_steps` should be the environment's horizon. `constrain` (see
    `jaxmcg.parallel.env_batch_constraint`) places the environment axis of the carried state on
    devices; the rest of the trajectory inherits it.
    """
    constrain = constrain or (lambda tree: tree)
    key, reset_key = jax.random.split(key)
    obs, state = env.reset_batch(jax.random.split(reset_key, n_envs), env_params)
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, step_key):
        obs, state, alive = constrain(carry)
        act_key, env_key = jax.random.split(step_key)
        action, extras = act_fn(obs, act_key)
        next_obs, state, reward, terminated, truncated, info = step(
            jax.random.split(env_key, n_envs), state, action, env_params
        )
        final_obs = info.pop("final_obs")
        transition = Trajectory(
            obs=obs,
            action=action,
            reward=reward,
            next_obs=final_obs,
            valid=alive.astype(jnp.float32),
            terminated=terminated,
            truncated=truncated,
            extras=extras,
            info=info,
        )
        alive = alive & ~(terminated | truncated)
        return (next_obs, state, alive), transition

    alive = jnp.ones((n_envs,), bool)
    _, traj = jax.lax.scan(body, (obs, state, alive), jax.random.split(key, num_steps))
    return traj


def episode_returns(traj: Trajectory) -> jax.Array:
    """Undiscounted extrinsic return of each environment's episode, `[E, N]`."""
    return jnp.sum(traj.reward * traj.valid[..., None], axis=0)
