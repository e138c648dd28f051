"""Incentive functions r_eta^i(o^i, a^{-i}) of LIO (thesis §2.1, §2.10).

Giver i's network sees its own observation and the one-hot actions of the others at this step and
outputs one value per agent: R_max * sigmoid(.), with its own entry zeroed (no self-incentive) and no
bias in the output layer (A23, as the authors' code).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmcg.networks import MLP, apply_per_agent, init_per_agent


def others_onehot(actions: jax.Array, num_actions: int) -> jax.Array:
    """`[..., N, (N-1) * A]`: for each agent, the one-hot actions of the others in index order."""
    n = actions.shape[-1]
    onehot = jax.nn.one_hot(actions, num_actions, dtype=jnp.float32)
    rows = [
        jnp.concatenate([onehot[..., j, :] for j in range(n) if j != i], axis=-1) for i in range(n)
    ]
    return jnp.stack(rows, axis=-2)


def init_incentive(key, num_agents: int, obs_dim: int, num_actions: int, hidden):
    module = MLP(tuple(hidden), num_agents, use_output_bias=False)
    example = jnp.zeros((obs_dim + (num_agents - 1) * num_actions,), jnp.float32)
    return module, init_per_agent(module, key, num_agents, example)


def incentive_sigmoids(module, eta, obs: jax.Array, actions: jax.Array, num_actions: int):
    """Unscaled incentive outputs sigma_j(o^i, a^{-i}), `[..., N giver, N recipient]`, diag 0."""
    n = actions.shape[-1]
    x = jnp.concatenate([obs, others_onehot(actions, num_actions)], axis=-1)
    off_diagonal = jnp.asarray(1.0 - np.eye(n), jnp.float32)
    return jax.nn.sigmoid(apply_per_agent(module, eta, x)) * off_diagonal


def received(given: jax.Array) -> jax.Array:
    """Incentives each agent receives, summed over givers: `[..., N]` from `given[..., N, N]`."""
    return jnp.sum(given, axis=-2)
