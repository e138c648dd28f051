"""Networks and per-agent parameter handling.

Agents never share parameters in the thesis' LIO experiments, so parameters are stacked along a
leading agent axis. `apply_per_agent` loops over agents at trace time: on CPU, XLA turns a `vmap`
over a few agents' separate weights into slow batched matmuls (spec/performance-notes.md).

Every module takes `(x, extra=None)`: `x` is one agent's observation (rank `obs_ndim`) and `extra` an
optional flat vector that the module joins where its paper says (the MLP at its input; the conv net
after its first dense layer, as the thesis' IA and LIO incentive networks, §2.9-2.10). An observation
is an array, or a dict `{"obs": x, "extra": e}` that carries its own `extra` (IA's smoothed rewards).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NETWORKS = ("mlp", "conv")


class MLP(nn.Module):
    """ReLU MLP; `use_output_bias=False` gives LIO's bias-free incentive output layer."""

    hidden: Sequence[int]
    out: int
    use_output_bias: bool = True
    obs_ndim = 1  # rank of one agent's observation (not a module field)

    @nn.compact
    def __call__(self, x, extra=None):
        if extra is not None:
            x = jnp.concatenate([x, extra], axis=-1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out, use_bias=self.use_output_bias)(x)


def torch_uniform(fan_in: int):
    """PyTorch's `nn.Linear` default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases."""
    bound = 1.0 / float(fan_in) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchMLP(nn.Module):
    """ReLU MLP with PyTorch's default initialisation, for papers whose numbers depend on it
    (DCL, dcl.md §2.1: flax's lecun-normal weights and zero biases train differently)."""

    hidden: Sequence[int]
    out: int
    obs_ndim = 1

    @nn.compact
    def __call__(self, x, extra=None):
        if extra is not None:
            x = jnp.concatenate([x, extra], axis=-1)
        for k, width in enumerate((*self.hidden, self.out)):
            init = torch_uniform(x.shape[-1])
            x = nn.Dense(width, kernel_init=init, bias_init=init)(x)
            if k < len(self.hidden):
                x = nn.relu(x)
        return x


class ConvNet(nn.Module):
    """The thesis' image torso (§2.10, A22): conv 6 filters 3x3 stride 1 SAME + ReLU, flatten, then a
    ReLU MLP (`hidden`, 64-64 in Cleanup) and a linear head. `extra` joins after the first dense
    layer, as IA's smoothed rewards and LIO's "who cleaned" input do (thesis L1784-1786)."""

    hidden: Sequence[int]
    out: int
    use_output_bias: bool = True
    filters: int = 6
    kernel: int = 3
    obs_ndim = 3

    @nn.compact
    def __call__(self, x, extra=None):
        x = nn.relu(nn.Conv(self.filters, (self.kernel, self.kernel), padding="SAME")(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        for k, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width)(x))
            if k == 0 and extra is not None:
                x = jnp.concatenate([x, extra], axis=-1)
        return nn.Dense(self.out, use_bias=self.use_output_bias)(x)


GLOROT = nn.initializers.glorot_uniform()  # TF's default kernel initialiser


class LSTM(nn.Module):
    """TF1's `LSTMCell(forget_bias)` (tanh), the cell of the authors' TF1 code (HSD's skill decoder,
    the GTB critics): one Glorot-uniform kernel on [x, h] -> 4H and a zero bias, gates in TF's
    (i, j, f, o) order, the forget bias added to the forget gate's pre-activation (flax's cells have
    no such constant, hence written out).

    `lstm(x[..., T, F], carry=None)` runs over the time axis -2 from `carry` (default zeros) and
    returns the carries after each step, `(c, h)` each `[..., T, H]` (h is the output);
    `lstm(x[..., F], carry, step=True)` takes one step and returns `(c, h)` `[..., H]`, so that a
    value after a sequence's step t and one more input is `lstm(x_next, (c[..., t, :], h[..., t,
    :]), step=True)`. With `truncation` k > 0 the gradient through the carry is stopped every k
    steps (truncated BPTT: the forward values are unchanged)."""

    hidden: int
    forget_bias: float = 1.0
    truncation: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, carry=None, *, step: bool = False):
        h_dim = self.hidden
        kernel = self.param("kernel", GLOROT, (x.shape[-1] + h_dim, 4 * h_dim))
        bias = self.param("bias", nn.initializers.zeros, (4 * h_dim,))

        def cell(carry, x_t):
            c, h = carry
            i, j, f, o = jnp.split(jnp.concatenate([x_t, h], axis=-1) @ kernel + bias, 4, axis=-1)
            c = jax.nn.sigmoid(f + self.forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
            return c, jax.nn.sigmoid(o) * jnp.tanh(c)

        if step:
            return cell(carry, x)
        if carry is None:
            zeros = jnp.zeros(x.shape[:-2] + (h_dim,), x.dtype)
            carry = (zeros, zeros)

        def body(carry, inputs):
            t, x_t = inputs
            if self.truncation > 0:
                cut = (t > 0) & (t % self.truncation == 0)
                carry = jax.tree_util.tree_map(
                    lambda v: jnp.where(cut, jax.lax.stop_gradient(v), v), carry)
            carry = cell(carry, x_t)
            return carry, carry

        xs = jnp.moveaxis(x, -2, 0)
        _, (cs, hs) = jax.lax.scan(body, carry, (jnp.arange(xs.shape[0]), xs))
        return jnp.moveaxis(cs, 0, -2), jnp.moveaxis(hs, 0, -2)


def network(kind: str, hidden, out: int, use_output_bias: bool = True) -> nn.Module:
    """Torso + linear head for actors, critics and incentive functions: `kind` in `NETWORKS`."""
    if kind == "mlp":
        return MLP(tuple(hidden), out, use_output_bias)
    if kind == "conv":
        return ConvNet(tuple(hidden), out, use_output_bias)
    raise ValueError(f"network={kind!r} is not implemented; valid: {', '.join(NETWORKS)}")


def resolve_network(kind: str, example) -> str:
    """`kind`, with "auto" replaced by "conv" for image observations (rank 3) and "mlp" otherwise."""
    if kind != "auto":
        return kind
    x, _ = split_obs(example)
    return "conv" if x.ndim == 3 else "mlp"


def split_obs(obs, extra=None):
    """`(x, extra)` of an observation: an array (with `extra` passed separately, or none), or a dict
    `{"obs": x, "extra": e}`."""
    if isinstance(obs, dict):
        if extra is not None:
            raise ValueError("extra given twice: the observation dict carries its own 'extra'")
        return obs["obs"], obs["extra"]
    return obs, extra


def init_per_agent(module: nn.Module, key: jax.Array, num_agents: int, example: jax.Array,
                   extra_example: jax.Array | None = None):
    """Independent parameters for each agent, stacked on a leading axis of size `num_agents`."""
    example, extra_example = split_obs(example, extra_example)
    if example.ndim != module.obs_ndim:
        valid = ", ".join(f"{k!r} (rank {network(k, (1,), 1).obs_ndim})" for k in NETWORKS)
        raise ValueError(f"network {type(module).__name__} takes observations of rank "
                         f"{module.obs_ndim}, got shape {example.shape}; valid networks: {valid}")
    keys = jax.random.split(key, num_agents)
    return jax.vmap(lambda k: module.init(k, example, extra_example)["params"])(keys)


def agent_slice(stacked, i: int):
    """Parameters of agent `i` (a static slice, cheaper than a gather)."""
    return jax.tree_util.tree_map(lambda p: p[i], stacked)


def _agent(x: jax.Array, i: int, obs_ndim: int) -> jax.Array:
    return x[(Ellipsis, i) + (slice(None),) * obs_ndim]


def apply_per_agent(module: nn.Module, stacked, x: jax.Array, extra: jax.Array | None = None):
    """Apply agent i's parameters to its observation in `x[..., i, <obs dims>]` (and its flat
    `extra[..., i, :]`); returns `[..., num_agents, out]`. `x` may be a `{"obs", "extra"}` dict."""
    x, extra = split_obs(x, extra)
    d = module.obs_ndim
    n = x.shape[-1 - d]
    outs = [
        module.apply({"params": agent_slice(stacked, i)}, _agent(x, i, d),
                     None if extra is None else extra[..., i, :])
        for i in range(n)
    ]
    return jnp.stack(outs, axis=-2)
