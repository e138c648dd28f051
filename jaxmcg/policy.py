"""The independent categorical policy shared by PG, LIO and the give-reward baselines."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmcg import distributions as D
from jaxmcg.networks import apply_per_agent, init_per_agent, network


def obs_example(env, env_params) -> jax.Array:
    """Zeros shaped like one agent's observation (flat, image, or a dict of them as IA's
    `{"obs", "extra"}`), for initialising networks."""
    space = env.observation_space(env_params)
    if hasattr(space, "spaces"):  # spaces.Dict
        return {k: jnp.zeros(s.shape, jnp.float32) for k, s in space.spaces.items()}
    return jnp.zeros(space.shape, jnp.float32)


def flat_obs_dim(env, env_params) -> int:
    shape = env.observation_space(env_params).shape
    if len(shape) != 1:
        raise ValueError(
            f"{env.name} has observations of shape {shape}; this algorithm's MLP policy needs "
            "flat (1-D) observations"
        )
    return int(shape[0])


def num_actions(env, env_params) -> int:
    space = env.action_space(env_params)
    if not hasattr(space, "n"):
        raise ValueError(f"{env.name} has a non-discrete action space {space}; need Discrete")
    return int(space.n)


def init_policy(key, env, env_params, hidden, kind: str = "mlp", use_output_bias: bool = True):
    """`(module, stacked_params)` of independent policies (`kind` in `networks.NETWORKS`), one per
    agent."""
    module = network(kind, hidden, num_actions(env, env_params), use_output_bias)
    return module, init_per_agent(module, key, env.num_agents, obs_example(env, env_params))


def log_probs(module, params, obs, eps) -> jax.Array:
    """eps-mixed log pi(.|o) of every agent, `[..., N, A]`."""
    return D.mixed_log_probs(apply_per_agent(module, params, obs), eps)


def reinforce_terms(module, params, obs, actions, eps):
    """`(log pi(a|o), H(pi(.|o)))`, each `[..., N]`, of the eps-mixed policy."""
    lp = log_probs(module, params, obs, eps)
    return D.log_prob_of(lp, actions), D.entropy(lp)
