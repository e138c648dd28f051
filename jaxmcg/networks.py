"""Networks and per-agent parameter handling.

Agents never share parameters in the thesis' LIO experiments, so parameters are stacked along a
leading agent axis. `apply_per_agent` loops over agents at trace time: on CPU, XLA turns a `vmap`
over a few agents' separate weights into slow batched matmuls (spec/performance-notes.md).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """ReLU MLP; `use_output_bias=False` gives LIO's bias-free incentive output layer."""

    hidden: Sequence[int]
    out: int
    use_output_bias: bool = True

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out, use_bias=self.use_output_bias)(x)


def init_per_agent(module: nn.Module, key: jax.Array, num_agents: int, example: jax.Array):
    """Independent parameters for each agent, stacked on a leading axis of size `num_agents`."""
    keys = jax.random.split(key, num_agents)
    return jax.vmap(lambda k: module.init(k, example)["params"])(keys)


def agent_slice(stacked, i: int):
    """Parameters of agent `i` (a static slice, cheaper than a gather)."""
    return jax.tree_util.tree_map(lambda p: p[i], stacked)


def apply_per_agent(module: nn.Module, stacked, x: jax.Array) -> jax.Array:
    """Apply agent i's parameters to `x[..., i, :]`; returns `[..., num_agents, out]`."""
    n = x.shape[-2]
    outs = [module.apply({"params": agent_slice(stacked, i)}, x[..., i, :]) for i in range(n)]
    return jnp.stack(outs, axis=-2)
