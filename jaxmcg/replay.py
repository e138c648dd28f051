"""A functional circular replay buffer (cm3-hsd.md §10.2 "Replay").

The buffer is a pytree: `data` holds every field with a leading `[capacity]` axis, `ptr` the next slot
to write and `size` how many slots hold transitions. It is carried in an algorithm's state, so adding
and sampling are pure functions that jit, scan and vmap over seeds.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Replay:
    data: Any  # pytree, every leaf [capacity, ...]
    ptr: jax.Array  # int32, next slot to write
    size: jax.Array  # int32, filled slots (<= capacity)

    @property
    def capacity(self) -> int:
        return jax.tree_util.tree_leaves(self.data)[0].shape[0]


def init(example: Any, capacity: int) -> Replay:
    """An empty buffer of `capacity` slots shaped like one transition `example` (a pytree)."""
    if not isinstance(capacity, int) or capacity <= 0:
        raise ValueError(f"capacity={capacity!r} is invalid: must be a positive integer")
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example)
    return Replay(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: Replay, items: Any, valid: jax.Array | None = None) -> Replay:
    """Append the rows of `items` (leaves `[B, ...]`) where `valid` (`[B]`, default all) is true, in
    row order, overwriting the oldest slots first (FIFO, as the authors' buffers).

    Requires `B <= capacity`, so that no two rows of one call land in the same slot.
    """
    n_rows = jax.tree_util.tree_leaves(items)[0].shape[0]
    if n_rows > buffer.capacity:
        raise ValueError(f"adding {n_rows} rows at once exceeds the buffer's capacity "
                         f"{buffer.capacity}; add fewer rows per call or enlarge the buffer")
    valid = jnp.ones((n_rows,), bool) if valid is None else valid.astype(bool)
    offset = jnp.cumsum(valid) - 1
    slot = jnp.where(valid, (buffer.ptr + offset) % buffer.capacity, buffer.capacity)
    data = jax.tree_util.tree_map(lambda d, x: d.at[slot].set(x.astype(d.dtype), mode="drop"),
                                  buffer.data, items)
    count = jnp.sum(valid).astype(jnp.int32)
    return Replay(data, (buffer.ptr + count) % buffer.capacity,
                  jnp.minimum(buffer.size + count, buffer.capacity))


def sample(buffer: Replay, key: jax.Array, batch_size: int) -> tuple[Any, jax.Array]:
    """`batch_size` transitions drawn uniformly **without replacement** from the filled slots.

    Returns `(items, mask)`: leaves `[batch_size, ...]` and a float `[batch_size]` mask that is 1 on
    real transitions. While the buffer holds fewer than `batch_size` transitions, every one of them is
    returned once and the rest of the batch is masked out (the authors then train on the whole
    buffer, cm3-hsd.md §2.6, §5.3), so losses must be means over `mask`.
    """
    filled = jnp.arange(buffer.capacity) < buffer.size
    # random priorities, empty slots last: the top batch_size are a uniform draw without replacement
    priority = jnp.where(filled, jax.random.uniform(key, (buffer.capacity,)), -1.0)
    _, index = jax.lax.top_k(priority, batch_size)
    mask = (jnp.arange(batch_size) < buffer.size).astype(jnp.float32)
    return jax.tree_util.tree_map(lambda d: d[index], buffer.data), mask


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x` over the rows where `mask` (`[B]`, broadcast over trailing axes) is 1."""
    mask = jnp.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim))
    count = jnp.sum(jnp.broadcast_to(mask, x.shape))
    return jnp.sum(x * mask) / jnp.maximum(count, 1.0)
