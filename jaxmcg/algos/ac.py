"""Independent actor-critic, the thesis' "AC" baseline (thesis §2.2 AC variant, §2.9, Eq B.9-B.10, A6).

Each agent has an eps-mixed categorical actor (plain SGD) and a state-value critic V(o) (Adam) with a
target copy. One update per batch of episodes, in the authors' order:

1. critic: Adam step on mean_(t,e) (r + gamma V_target(o') - V(o))^2;
2. actor: SGD step on -sum_t log pi~(a_t|o_t) delta_t - c_ent sum_t H_t (sum over time, mean over
   environments, A8), delta_t = r_t + gamma V(o'_t) - V(o_t) from the main critic as a constant;
3. target: phi~ <- tau phi + (1 - tau) phi~.

As in the authors' code, delta uses the main critic's values from before its step (they are computed
in the same pass as the critic's gradient) and nothing is masked at episode ends (A6); `mask_terminal`
stops the bootstrap after a termination instead.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import critic as C
from jaxmcg import distributions as D
from jaxmcg.losses import reinforce_loss
from jaxmcg.networks import init_per_agent, resolve_network
from jaxmcg.policy import log_probs, num_actions, obs_example, reinforce_terms


@dataclasses.dataclass(frozen=True)
class Config:
    network: str = "auto"  # actor and critic torso: "mlp", "conv" (§2.10), "auto": conv for images
    hidden: tuple[int, ...] = (64, 32)  # flat-observation envs: the ER policy MLP (§2.10)
    critic_hidden: tuple[int, ...] = (64, 32)  # V(o) has the policy's torso (§2.10, "or a linear scalar")
    lr: float = 1e-3  # actor SGD, Table B.5 AC (7x7 and 10x10)
    lr_critic: float = 1e-3  # Adam, thesis L1787
    tau: float = 0.01  # target critic, thesis L1787
    entropy_coef: float = 0.1  # thesis L1784-1787, all Cleanup methods
    eps_start: float = 0.5  # Table B.5
    eps_end: float = 0.05  # Table B.5
    eps_div: float = 100.0  # Table B.5 AC 7x7 (10x10: 5000), in iterations
    gamma: float = 0.99  # thesis L1743
    mask_terminal: bool = False  # False: bootstrap at every step, as the authors' code (A6)

    def validate(self) -> None:
        if self.network not in ("auto",) + C.NETWORKS:
            raise ValueError(
                f"network={self.network!r} is not implemented; valid: auto, {', '.join(C.NETWORKS)}"
            )
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau={self.tau} is invalid: must be in [0, 1]")


@struct.dataclass
class State:
    params: dict  # actors, stacked over agents
    critic_params: dict
    target_params: dict
    critic_opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)
    critic: object = struct.field(pytree_node=False)


epsilon = D.epsilon


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    k_actor, k_critic = jax.random.split(key)
    n = env.num_agents
    example = obs_example(env, env_params)
    kind = resolve_network(config.network, example)
    policy = C.network(kind, config.hidden, num_actions(env, env_params))
    params = init_per_agent(policy, k_actor, n, example)
    critic, critic_params = C.init_critic(k_critic, n, example, config.critic_hidden, kind)
    return State(
        params=params,
        critic_params=critic_params,
        target_params=critic_params,  # target <- main at the start, as the authors' code
        critic_opt_state=optax.adam(config.lr_critic).init(critic_params),
        iteration=jnp.zeros((), jnp.int32),
        config=config,
        policy=policy,
        critic=critic,
    )


def act(state: State, obs, key, evaluate: bool = False):
    """Sample actions `[E, N]` from the eps-mixed policies (eps = 0 when evaluating)."""
    eps = 0.0 if evaluate else epsilon(state)
    return D.sample(key, log_probs(state.policy, state.params, obs, eps)), {}


def _not_done(state: State, batch):
    if state.config.mask_terminal:
        return 1.0 - batch.terminated[..., None].astype(batch.reward.dtype)
    return 1.0


def critic_objective(critic_params, state: State, batch):
    """Sum over agents of the critic losses; aux: V(o) of the main critic, `[T, E, N]`."""
    return C.objective(state.critic, critic_params, state.target_params, batch, batch.reward,
                       state.config.gamma, _not_done(state, batch))


def actor_loss(params, state: State, batch, advantages, eps) -> jax.Array:
    """Sum over agents of -sum_t log pi~(a_t|o_t) A_t - c_ent sum_t H_t (mean over environments)."""
    logp, ent = reinforce_terms(state.policy, params, batch.obs, batch.action, eps)
    return jnp.sum(reinforce_loss(logp, advantages, ent, batch.valid, state.config.entropy_coef))


def update(state: State, batch, actor_loss_fn=actor_loss):
    """One AC update. `actor_loss_fn(params, state, batch, delta, eps)` (default `actor_loss`) lets
    the give-reward variants (ac_d, ac_c) reuse the critic/actor/target sequence with their own actor."""
    c = state.config
    eps = epsilon(state)
    # 1. critic step; v is the main critic before the step, as the authors' delta uses
    (closs, v), cgrads = jax.value_and_grad(critic_objective, has_aux=True)(
        state.critic_params, state, batch
    )
    v_next = C.values(state.critic, state.critic_params, batch.next_obs)
    upd, critic_opt_state = optax.adam(c.lr_critic).update(cgrads, state.critic_opt_state)
    critic_params = optax.apply_updates(state.critic_params, upd)
    # 2. actor step with the TD error as a constant advantage
    delta = C.td_error(batch.reward, v, v_next, c.gamma, _not_done(state, batch))
    ploss, grads = jax.value_and_grad(actor_loss_fn)(state.params, state, batch, delta, eps)
    params = jax.tree_util.tree_map(lambda p, g: p - c.lr * g, state.params, grads)
    # 3. soft target update
    target_params = C.soft_update(state.target_params, critic_params, c.tau)
    state = state.replace(
        params=params,
        critic_params=critic_params,
        target_params=target_params,
        critic_opt_state=critic_opt_state,
        iteration=state.iteration + 1,
    )
    w = batch.valid[..., None]
    n_valid = jnp.maximum(jnp.sum(w, axis=(0, 1)), 1.0)
    return state, {
        "ac/policy_loss": ploss,
        "ac/critic_loss": closs,
        "ac/value": jnp.sum(v * w, axis=(0, 1)) / n_valid,  # [N] mean V(o) on valid steps
        "ac/td_error": jnp.sum(delta * w, axis=(0, 1)) / n_valid,  # [N]
        "ac/epsilon": eps,
    }
