"""Incentive functions r_eta^i(o^i, a^{-i}) of LIO (thesis §2.1, §2.10).

Giver i's network sees its own observation and features of the others' actions at this step and
outputs one value per agent: R_max * sigmoid(.), with its own entry zeroed (no self-incentive) and no
bias in the output layer (A23, as the authors' code). The action features are one-hot actions (ER,
IPD), or whatever the environment's `incentive_action_features` gives: in Cleanup a one-hot
(not-fired, fired) of the cleaning beam per agent (thesis L1729, §2.10). On images the features join
after the conv torso's first dense layer (thesis L1784-1786); on flat observations at the input.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmcg.networks import apply_per_agent, init_per_agent, network


def others_features(features: jax.Array) -> jax.Array:
    """`[..., N, (N-1) * k]`: for each agent, the others' `[..., N, k]` features in index order."""
    n = features.shape[-2]
    rows = [
        jnp.concatenate([features[..., j, :] for j in range(n) if j != i], axis=-1) for i in range(n)
    ]
    return jnp.stack(rows, axis=-2)


def others_onehot(actions: jax.Array, num_actions: int) -> jax.Array:
    """`[..., N, (N-1) * A]`: for each agent, the one-hot actions of the others in index order."""
    return others_features(jax.nn.one_hot(actions, num_actions, dtype=jnp.float32))


def action_features_of(env, num_actions: int) -> Callable[[jax.Array], jax.Array]:
    """`actions [..., N] -> [..., N, k]`: the environment's `incentive_action_features` if it has one
    (looked up through wrappers), else one-hot actions."""
    e = env
    while e is not None:
        if hasattr(e, "incentive_action_features"):
            return e.incentive_action_features
        e = getattr(e, "inner", None)
    return lambda a: jax.nn.one_hot(a, num_actions, dtype=jnp.float32)


def init_incentive(key, num_agents: int, example_obs: jax.Array, feature_dim: int, hidden,
                   kind: str = "mlp"):
    """`(module, stacked_params)`; `feature_dim` is k of one agent's action features."""
    module = network(kind, hidden, num_agents, use_output_bias=False)
    extra = jnp.zeros(((num_agents - 1) * feature_dim,), jnp.float32)
    return module, init_per_agent(module, key, num_agents, example_obs, extra)


def off_diagonal(n: int) -> jax.Array:
    """`[N, N]` float32 mask, 0 on the diagonal: no agent pays itself."""
    return jnp.asarray(1.0 - np.eye(n), jnp.float32)


def incentive_logits(module, eta, obs: jax.Array, features: jax.Array) -> jax.Array:
    """Pre-sigmoid incentive outputs, `[..., N giver, N recipient]`, diag 0; `features`
    `[..., N, k]` are the per-agent action features of this step's joint action."""
    n = features.shape[-2]
    return apply_per_agent(module, eta, obs, others_features(features)) * off_diagonal(n)


def incentive_sigmoids(module, eta, obs: jax.Array, features: jax.Array) -> jax.Array:
    """Unscaled incentive outputs sigma_j(o^i, a^{-i}), `[..., N giver, N recipient]`, diag 0."""
    n = features.shape[-2]
    return jax.nn.sigmoid(incentive_logits(module, eta, obs, features)) * off_diagonal(n)


def received(given: jax.Array) -> jax.Array:
    """Incentives each agent receives, summed over givers: `[..., N]` from `given[..., N, N]`."""
    return jnp.sum(given, axis=-2)
