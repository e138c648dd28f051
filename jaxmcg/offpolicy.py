"""What the off-policy learners of thesis ch. 3-4 share: the authors' train-step accounting and the
Q-learning targets (QMIX, IQL, HSD, CM3's off-policy stages; cm3-hsd.md §2.6, §2.7, §5.3).

The training loop hands an algorithm whole episodes; the authors trained one minibatch every
`steps_per_train` environment steps, counted globally across episodes. `train_step_count` keeps that
count exactly (the remainder is carried between updates) and `run_train_steps` runs that many steps
after the episodes, as a fixed-length `lax.scan` whose surplus steps `lax.cond` skips (a data-dependent
`while_loop` would do too, but two of them in one jit can deadlock jax's CPU runtime).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def train_step_count(remainder: jax.Array, env_steps: jax.Array, steps_per_train: int):
    """`(n_steps, new_remainder)`: train steps owed for `env_steps` new environment steps when one is
    due every `steps_per_train` steps and `remainder` steps were left over from earlier updates."""
    total = remainder + env_steps.astype(jnp.int32)
    return total // steps_per_train, total % steps_per_train


def run_train_steps(step: Callable[[Any, jax.Array], tuple[Any, dict]], carry: Any,
                    key: jax.Array, n_steps: jax.Array, max_steps: int) -> tuple[Any, dict]:
    """Apply `carry, metrics = step(carry, key_i)` `n_steps` times (at most `max_steps`, a static bound).

    Returns the final carry and the metrics averaged over the steps taken (zeros when none was)."""
    def body(c, inp):
        i, k = inp
        c, m = jax.lax.cond(i < n_steps, step, lambda c_, k_: (c_, zeros), c, k)
        return c, jax.tree_util.tree_map(lambda x: x * (i < n_steps), m)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(step, carry, key)[1])
    carry, metrics = jax.lax.scan(body, carry, (jnp.arange(max_steps), jax.random.split(key, max_steps)))
    taken = jnp.maximum(jnp.minimum(n_steps, max_steps), 1)
    return carry, jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0) / taken, metrics)


def chosen(q: jax.Array, actions: jax.Array) -> jax.Array:
    """`q[..., A]` at the integer `actions[...]`."""
    return jnp.take_along_axis(q, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def max_targets(reward: jax.Array, next_q_target: jax.Array, done: jax.Array,
                gamma: float) -> jax.Array:
    """Independent Q-learning target r + gamma (1 - done) max_a Q'(o', a), without gradient (§5.3)."""
    return jax.lax.stop_gradient(
        reward + gamma * (1.0 - done) * jnp.max(next_q_target, axis=-1))


def mixed_targets(mix: Callable[[jax.Array, jax.Array], jax.Array], reward: jax.Array,
                  next_utilities_target: jax.Array, next_condition: jax.Array, done: jax.Array,
                  gamma: float) -> jax.Array:
    """QMIX target r + gamma (1 - done) Q'_tot(s', argmax_z Q'^n(o'^n)) (§2.7), without gradient.

    `mix(q[B, N], c[B, C])` is the *target* mixer; `next_utilities_target[B, N, K]` come from the
    *target* agent networks, whose argmax the authors take (no double Q, A-HSD-10). `gamma` may be
    an array broadcasting against `reward` (HSD's per-segment discounts, A-HSD-1 `smdp_exact`)."""
    best = jnp.max(next_utilities_target, axis=-1)
    return jax.lax.stop_gradient(reward + gamma * (1.0 - done) * mix(best, next_condition))
