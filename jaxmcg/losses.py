"""Policy-gradient losses in the thesis' convention (§2.2, A8): sum over time, mean over episodes.

With one episode per update this is exactly the authors' per-episode loss, so the tables' learning
rates keep their meaning; with E parallel episodes it is the mean of E such losses.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def time_sum_env_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Sum over time and mean over environments of `x[T, E, ...]` on valid steps -> `[...]`."""
    valid = valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim))
    return jnp.mean(jnp.sum(x * valid, axis=0), axis=0)


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
