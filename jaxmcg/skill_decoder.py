"""HSD's skill decoder p_psi(z | tau) and its trajectory preprocessing (cm3-hsd.md §5.3; thesis §4.2.4).

A segment tau^n is the agent's t_seg observations before each of the segment's actions. The decoder
sees every `k_skip`-th of them, truncated to the first `obs_truncate` features (STS2: puck relative
position and velocity, possession flags, own position and velocity; A-HSD-11), as differences of
consecutive kept steps: a `[ceil(t_seg / k_skip) - 1, obs_truncate]` input ([4, 10] for the
defaults). The model is the authors' bidirectional LSTM (128 units per direction), whose per-step
outputs [forward, backward] are averaged over time and mapped by a dense layer to K logits.

The LSTM cell is TF1's `LSTMCell(forget_bias=1.0)` (`jaxmcg.networks.LSTM`).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmcg.networks import GLOROT, LSTM


def segment_length(t_seg: int, k_skip: int) -> int:
    """Rows of the decoder input: ceil(t_seg / k_skip) - 1 (t_seg 10 -> 4, 5 -> 2, 20 -> 9; §5.3)."""
    return math.ceil(t_seg / k_skip) - 1


def preprocess(segment: jax.Array, k_skip: int, obs_truncate: int) -> jax.Array:
    """The decoder input of `segment[..., t_seg, obs_dim]`: every `k_skip`-th step from the first,
    features `[:obs_truncate]`, consecutive differences; `[..., segment_length, obs_truncate]`."""
    kept = segment[..., ::k_skip, :obs_truncate]
    return kept[..., 1:, :] - kept[..., :-1, :]


class SkillDecoder(nn.Module):
    """`SkillDecoder(num_skills)(x[..., T, F]) -> logits[..., K]` (softmax gives p_psi(z | tau))."""

    num_skills: int
    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        forward = LSTM(self.hidden, name="forward")(x)[1]
        # static_bidirectional_rnn: the backward cell reads the reversed sequence, its outputs are
        # reversed back so that step t holds [forward_t, backward_t]
        backward = jnp.flip(LSTM(self.hidden, name="backward")(jnp.flip(x, axis=-2))[1], axis=-2)
        pooled = jnp.mean(jnp.concatenate([forward, backward], axis=-1), axis=-2)
        return nn.Dense(self.num_skills, kernel_init=GLOROT, name="out")(pooled)


def skill_probability(decoder: SkillDecoder, params, x: jax.Array, skill: jax.Array) -> jax.Array:
    """p_psi(z = skill | x) for inputs `x[..., T, F]` and integer `skill[...]`: the intrinsic reward
    R_I (Eq 4.4) and the decoder's logged accuracy."""
    probs = jax.nn.softmax(decoder.apply({"params": params}, x), axis=-1)
    return jnp.sum(probs * jax.nn.one_hot(skill, decoder.num_skills, dtype=probs.dtype), axis=-1)


def decoder_loss(decoder: SkillDecoder, params, x: jax.Array, skill: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy of the true skills (over rows where `mask` is 1, default all)."""
    logp = jax.nn.log_softmax(decoder.apply({"params": params}, x), axis=-1)
    nll = -jnp.sum(logp * jax.nn.one_hot(skill, decoder.num_skills, dtype=logp.dtype), axis=-1)
    if mask is None:
        return jnp.mean(nll)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
