"""Cen: one centralized actor-critic acting for all agents, the thesis' Cleanup upper bound (§2.9 "Cen",
thesis L964, L1154-1156; architecture A24).

A single policy over the joint action (a categorical over A^N joint actions) and a single critic, both
seeing every agent's observation stacked on the channel axis (images `[H, W, N*C]`; flat
observations are concatenated), optimize the sum of the agents' rewards with `ac`'s update (critic
-> actor -> target, A6) and `ac`'s hyperparameters (Table B.5 AC; the thesis gives none for Cen).

The centralized learner is `ac` with one "agent": `centralize` turns a `[T, E, N, ...]` batch into a
one-agent batch (stacked observations, joint action index, summed reward), and `act` decodes the
sampled joint index into the `[E, N]` actions the environment takes.
Joint index: a = sum_i a_i * A^i (agent 0 is the least significant digit).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxmcg import critic as C
from jaxmcg import distributions as D
from jaxmcg.algos import ac
from jaxmcg.networks import init_per_agent, resolve_network
from jaxmcg.policy import log_probs, num_actions, obs_example


@dataclasses.dataclass(frozen=True)
class Config(ac.Config):
    network: str = "auto"  # "auto": Cleanup's conv torso for images (§2.10, A24: same sizes)
    hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    # lr, lr_critic, tau, entropy_coef, eps_*: ac.Config's, Table B.5 AC 7x7 (10x10: eps_div=5000)


@struct.dataclass
class State(ac.State):
    num_agents: int = struct.field(pytree_node=False)
    num_moves: int = struct.field(pytree_node=False)  # A, per-agent actions


epsilon = ac.epsilon


def encode(actions, num_moves: int) -> jax.Array:
    """Joint index sum_i a_i * A^i of per-agent actions `[..., N]` -> `[...]`."""
    place = num_moves ** np.arange(actions.shape[-1])
    return jnp.sum(actions.astype(jnp.int32) * place, axis=-1)


def decode(joint, num_agents: int, num_moves: int) -> jax.Array:
    """Per-agent actions `[..., N]` of joint indices `[...]` (the inverse of `encode`)."""
    place = num_moves ** np.arange(num_agents)
    return (joint[..., None] // place) % num_moves


def central_obs(obs, obs_ndim: int) -> jax.Array:
    """`[..., N, *S]` -> `[..., 1, *S']`: the agents' observations stacked on the last (channel)
    axis, in agent order, under a one-agent axis (A24)."""
    x = jnp.moveaxis(obs, -1 - obs_ndim, -2)  # [..., *S[:-1], N, C]
    x = x.reshape(x.shape[:-2] + (-1,))
    return jnp.expand_dims(x, -1 - obs_ndim)


def centralize(state: State, batch):
    """The one-agent batch of the centralized learner."""
    d = state.policy.obs_ndim
    return batch.replace(
        obs=central_obs(batch.obs, d),
        next_obs=central_obs(batch.next_obs, d),
        action=encode(batch.action, state.num_moves)[..., None],
        reward=jnp.sum(batch.reward, axis=-1, keepdims=True),
    )


def init(key, env, env_params, config: Config = Config()) -> State:
    config.validate()
    k_actor, k_critic = jax.random.split(key)
    n, a = env.num_agents, num_actions(env, env_params)
    kind = resolve_network(config.network, obs_example(env, env_params))
    policy = C.network(kind, config.hidden, a**n)
    example = central_obs(jnp.stack([obs_example(env, env_params)] * n), policy.obs_ndim)[0]
    critic, critic_params = C.init_critic(k_critic, 1, example, config.critic_hidden, kind)
    return State(
        params=init_per_agent(policy, k_actor, 1, example),
        critic_params=critic_params,
        target_params=critic_params,
        critic_opt_state=optax.adam(config.lr_critic).init(critic_params),
        iteration=jnp.zeros((), jnp.int32),
        config=config,
        policy=policy,
        critic=critic,
        num_agents=n,
        num_moves=a,
    )


def act(state: State, obs, key, evaluate: bool = False):
    """Sample a joint action from the eps-mixed central policy (eps = 0 when evaluating); return
    the per-agent actions `[E, N]`."""
    eps = 0.0 if evaluate else epsilon(state)
    lp = log_probs(state.policy, state.params, central_obs(obs, state.policy.obs_ndim), eps)
    joint = D.sample(key, lp)[..., 0]
    return decode(joint, state.num_agents, state.num_moves), {}


def update(state: State, batch):
    """`ac.update` on the centralized batch; metrics under `cen/` (per-agent entries have one
    entry, the team's)."""
    state, metrics = ac.update(state, centralize(state, batch))
    return state, {f"cen/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
