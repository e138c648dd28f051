"""Independent REINFORCE with the thesis' exploration floor (thesis §2.2, §2.5, §2.9 "PG").

Each agent updates its own policy by plain SGD on -sum_t log pi_tilde(a_t|o_t) G_t - c_ent H,
where pi_tilde = (1 - eps) pi + eps / |A| and eps decays linearly per iteration.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import distributions as D
from jaxmcg.losses import reinforce_loss
from jaxmcg.policy import init_policy, log_probs, reinforce_terms
from jaxmcg.returns import discounted_returns


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (64, 32)  # ER policy MLP, thesis §2.10
    lr: float = 1e-2  # Table B.4: 1e-4 at one episode per update; batch-mean default (README)
    entropy_coef: float = 0.01  # Table B.4 beta, PG N=2
    eps_start: float = 0.5  # Table B.4
    eps_end: float = 0.05  # Table B.4
    eps_div: float = 100.0  # Table B.4, in iterations
    gamma: float = 0.99  # thesis L1743


@struct.dataclass
class State:
    params: dict
    opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)


epsilon = D.epsilon


def init(key, env, env_params, config: Config) -> State:
    policy, params = init_policy(key, env, env_params, config.hidden)
    return State(
        params=params,
        opt_state=optax.sgd(config.lr).init(params),
        iteration=jnp.zeros((), jnp.int32),
        config=config,
        policy=policy,
    )


def act(state: State, obs, key, evaluate: bool = False):
    """Sample actions `[E, N]` from the eps-mixed policies (eps = 0 when evaluating)."""
    eps = 0.0 if evaluate else epsilon(state)
    return D.sample(key, log_probs(state.policy, state.params, obs, eps)), {}


def policy_loss(params, state: State, batch, rewards) -> jax.Array:
    """Sum over agents of each agent's REINFORCE loss on `rewards[T, E, N]`."""
    c = state.config
    logp, ent = reinforce_terms(state.policy, params, batch.obs, batch.action, epsilon(state))
    returns = discounted_returns(rewards, batch.valid[..., None], c.gamma)
    return jnp.sum(reinforce_loss(logp, returns, ent, batch.valid, c.entropy_coef))


def update(state: State, batch):
    loss, grads = jax.value_and_grad(policy_loss)(state.params, state, batch, batch.reward)
    updates, opt_state = optax.sgd(state.config.lr).update(grads, state.opt_state, state.params)
    state = state.replace(
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        iteration=state.iteration + 1,
    )
    return state, {"pg/loss": loss, "pg/epsilon": epsilon(state)}
