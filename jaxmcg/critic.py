"""State-value critics for the thesis' actor-critic learners (thesis §2.2 "AC variant", Eq B.9-B.10, A6).

Small pure functions so that AC, LIO-AC and the Cleanup agents compose the same pieces:

    critic loss   L(phi) = mean over valid steps of (r + gamma V_target(o') - V_phi(o))^2
    TD error      delta  = r + gamma V_phi(o') - V_phi(o)   (main critic, a constant for the actor)
    target update phi~  <- tau phi + (1 - tau) phi~

Like the authors' code, nothing is masked at episode ends by default: the bootstrap also applies at
the last step of an episode (A6). `not_done` lets a caller mask it anyway.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmcg.losses import masked_mean
from jaxmcg.networks import NETWORKS, apply_per_agent, init_per_agent, network  # noqa: F401


def init_critic(key, num_agents: int, example_obs: jax.Array, hidden, kind: str = "mlp"):
    """`(module, stacked_params)` of independent V(o) networks, one per agent (no sharing, §2.10)."""
    module = network(kind, hidden, 1)
    return module, init_per_agent(module, key, num_agents, example_obs)


def values(module, params, obs) -> jax.Array:
    """V(o) of every agent, `[..., N]` from `obs[..., N, obs_dim]`."""
    return apply_per_agent(module, params, obs)[..., 0]


def td_targets(rewards, next_values, gamma: float, not_done=1.0) -> jax.Array:
    """r + gamma * V(o') (times `not_done`), treated as a constant."""
    return jax.lax.stop_gradient(rewards + gamma * not_done * next_values)


def td_error(rewards, values_, next_values, gamma: float, not_done=1.0) -> jax.Array:
    """delta = r + gamma V(o') - V(o), a constant for the actor (A6: both from the main critic)."""
    return jax.lax.stop_gradient(rewards + gamma * not_done * next_values - values_)


def critic_loss(values_, targets, valid) -> jax.Array:
    """Per-agent mean squared TD error over valid steps and environments, `[N]`.

    The authors' critic loss is a mean over the buffer (A8), so this one is a mean too: with E
    parallel episodes it is the mean over all their steps. `values_`, `targets`: `[T, E, N]`;
    `valid`: `[T, E]`.
    """
    return masked_mean(jnp.square(targets - values_), valid, axis=(0, 1))


def objective(module, params, target_params, batch, rewards, gamma: float, not_done=1.0):
    """Sum over agents of the critic losses of `batch` against the target net, with `rewards`
    `[T, E, N]` (extrinsic, or total with incentives); aux: V(o) of `params`, `[T, E, N]`."""
    targets = td_targets(rewards, values(module, target_params, batch.next_obs), gamma, not_done)
    v = values(module, params, batch.obs)
    return jnp.sum(critic_loss(v, targets, batch.valid)), v


def soft_update(target, online, tau: float):
    """Polyak averaging of every leaf: tau * online + (1 - tau) * target (thesis L1787: tau = 0.01)."""
    return jax.tree_util.tree_map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)
