"""The QMIX mixer shared by QMIX, HSD's high level and CM3-QMIX (cm3-hsd.md §2.7).

The authors' mixer is a single linear hypernetwork layer, not the two-layer hypernetwork of later
QMIX variants. With conditioning vector c (the state, plus all goals in CM3) and embedding H:

    W1 = |c H_w1| reshaped [N, H],  b1 = c H_b1,  h = elu(q W1 + b1)
    w2 = |c H_w2| [H],              b2 = relu(c H_b2a) H_b2b
    Q_tot = h . w2 + b2

Every hypernetwork map is bias-free [C-CM3, C-HSD networks.py Qmix_mixer].
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# the authors initialise the two weight hypernetworks with a truncated normal, sigma 0.01 (§5.3)
_HYPER_WEIGHT_INIT = nn.initializers.truncated_normal(0.01)
# TF's dense default elsewhere: Glorot-uniform kernels
_TF_DENSE_INIT = nn.initializers.glorot_uniform()


class QMixer(nn.Module):
    """`QMixer(num_agents, embed)(q[..., N], c[..., C]) -> Q_tot[...]`, monotone in every q^n."""

    num_agents: int
    embed: int = 64  # 64 for particle, SUMO and STS2; 128 for CM3-Checkers (§2.7)

    @nn.compact
    def __call__(self, q: jax.Array, c: jax.Array) -> jax.Array:
        n, h = self.num_agents, self.embed
        dense = lambda width, init, name: nn.Dense(width, use_bias=False, kernel_init=init, name=name)
        w1 = jnp.abs(dense(n * h, _HYPER_WEIGHT_INIT, "hyper_w1")(c)).reshape(*c.shape[:-1], n, h)
        b1 = dense(h, _TF_DENSE_INIT, "hyper_b1")(c)
        hidden = nn.elu(jnp.einsum("...n,...nh->...h", q, w1) + b1)
        w2 = jnp.abs(dense(h, _HYPER_WEIGHT_INIT, "hyper_w2")(c))
        b2 = dense(1, _TF_DENSE_INIT, "hyper_b2b")(nn.relu(dense(h, _TF_DENSE_INIT, "hyper_b2a")(c)))
        return jnp.sum(hidden * w2, axis=-1) + b2[..., 0]
