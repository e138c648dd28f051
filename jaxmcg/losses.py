"""Policy-gradient losses in the thesis' convention (§2.2, A8): sum over time, mean over episodes.

With one episode per update this is exactly the authors' per-episode loss, so the tables' learning
rates keep their meaning; with E parallel episodes it is the mean of E such losses.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Mean of `x` over `axis` (default all) counting only entries where `mask` is 1; 0 where none is.

    `mask` covers `x`'s leading axes (`valid[T, E]` against `x[T, E, N]`) and is broadcast over the
    rest, so per-agent means over valid steps are `masked_mean(x, valid, axis=(0, 1))`.
    """
    mask = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
    return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def time_sum_env_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Sum over time and mean over environments of `x[T, E, ...]` on valid steps -> `[...]`."""
    valid = valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim))
    return jnp.mean(jnp.sum(x * valid, axis=0), axis=0)


def clipped_surrogate(ratio: jax.Array, advantages: jax.Array, clip) -> jax.Array:
    """PPO's min(rho A, clip(rho, 1 - clip, 1 + clip) A), elementwise; rho A when `clip` is None."""
    if clip is None:
        return ratio * advantages
    return jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * advantages)


def reinforce_loss(
    log_prob_taken: jax.Array,
    returns: jax.Array,
    entropies: jax.Array,
    valid: jax.Array,
    entropy_coef: float,
) -> jax.Array:
    """Per-agent REINFORCE loss -sum_t log pi(a_t|o_t) G_t - c_ent * sum_t H_t, `[N]`.

    All inputs but `valid` are `[T, E, N]`. `returns` must not depend on the policy parameters;
    it is deliberately not stopped, so that LIO can differentiate the update through incentives.
    """
    pg = log_prob_taken * returns
    return -time_sum_env_mean(pg + entropy_coef * entropies, valid)
