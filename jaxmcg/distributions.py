"""Categorical policies with the thesis' exploration floor, written without gathers.

The behaviour policy is pi_tilde = (1 - eps) * softmax(logits) + eps / |A| (thesis §2.5). Log
probabilities of taken actions use a one-hot product: `take_along_axis` becomes a scatter in the
backward pass, several times slower on CPU (spec/performance-notes.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmcg.losses import masked_mean


def mixed_log_probs(logits: jax.Array, eps: jax.Array | float) -> jax.Array:
    """Log-probabilities of the eps-mixed policy over the last axis."""
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.log((1.0 - eps) * probs + eps / logits.shape[-1])


def log_prob_of(log_probs: jax.Array, actions: jax.Array) -> jax.Array:
    """log pi(a) for integer `actions` with shape `log_probs.shape[:-1]`."""
    onehot = jax.nn.one_hot(actions, log_probs.shape[-1], dtype=log_probs.dtype)
    return jnp.sum(log_probs * onehot, axis=-1)


def entropy(log_probs: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def sample(key: jax.Array, log_probs: jax.Array) -> jax.Array:
    return jax.random.categorical(key, log_probs, axis=-1).astype(jnp.int32)


def linear_epsilon(iteration: jax.Array, start: float, end: float, div: float) -> jax.Array:
    """Exploration floor decayed linearly by (start - end) / div per iteration (thesis §2.5 [CODE])."""
    return jnp.maximum(end, start - iteration * (start - end) / div)


def epsilon(state) -> jax.Array:
    """The floor of an algorithm state with `iteration` and `config.eps_{start,end,div}`."""
    c = state.config
    return linear_epsilon(state.iteration, c.eps_start, c.eps_end, c.eps_div)


LOG_EPS = 1e-8  # DCL takes log(p + 1e-8) of probabilities everywhere (dcl.md §2.1)


def straight_through_gumbel(key: jax.Array, probs: jax.Array, tau) -> jax.Array:
    """Hard straight-through Gumbel-softmax sample from probabilities `probs[..., K]`.

    Forward: the one-hot of argmax(log(p + 1e-8) + g), an exact categorical sample (so `tau` does not
    change it); backward: the Jacobian of softmax((log(p + 1e-8) + g) / tau), as torch's
    `gumbel_softmax(hard=True)` that DCL's code uses (dcl.md §2.4).
    """
    g = jax.random.gumbel(key, probs.shape, probs.dtype)
    soft = jax.nn.softmax((jnp.log(probs + LOG_EPS) + g) / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), probs.shape[-1], dtype=probs.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))  # exactly one-hot forward


def selected_log_prob(probs: jax.Array, onehot: jax.Array) -> jax.Array:
    """log(p[k] + 1e-8) for the class k that `onehot` selects; the gradient reaches `probs` only,
    never the (straight-through) sample, as the authors index by its argmax (dcl.md §2.5)."""
    return jnp.sum(jax.lax.stop_gradient(onehot) * jnp.log(probs + LOG_EPS), axis=-1)


def mean_entropy(probs: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """-mean(p log(p + 1e-8)) over rows *and* classes (DCL's normalisation, dcl.md D22); rows are
    weighted by `weights[...]` when given."""
    h = -jnp.mean(probs * jnp.log(probs + LOG_EPS), axis=-1)
    return jnp.mean(h) if weights is None else masked_mean(h, weights)


def epsilon_greedy(key: jax.Array, q: jax.Array, eps: jax.Array | float) -> jax.Array:
    """argmax of `q[..., A]`, replaced with probability `eps` by a uniform action (QMIX, IQL, HSD:
    cm3-hsd.md §3, §5.2). Returns int32 actions of shape `q.shape[:-1]`."""
    k_explore, k_uniform = jax.random.split(key)
    greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)
    uniform = jax.random.randint(k_uniform, q.shape[:-1], 0, q.shape[-1], jnp.int32)
    return jnp.where(jax.random.uniform(k_explore, q.shape[:-1]) < eps, uniform, greedy)
