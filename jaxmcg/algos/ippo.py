"""Independent PPO, the DCL paper's IPPO baseline (dcl.md §4.1, Tables 5-7, §6 D15).

Each agent runs its own PPO on its own reward and treats the others as part of the environment. The
details the paper leaves open follow RLlib's PPO defaults (D15), which the paper's values match:

* Monte-Carlo advantages: GAE with lambda = 1, no bootstrap past the end of an episode (D17);
  value targets are advantage + V(o), i.e. the discounted return;
* per iteration, `num_epochs` full-batch gradient steps (no minibatches) on, per agent,

      L = mean_t -min(rho A, clip(rho, 1 - clip, 1 + clip) A) + beta KL(pi_old || pi)
          + vf_coef * mean_t (V(o) - G)^2,       rho = pi(a|o) / pi_old(a|o),

  means over the batch's valid steps, no entropy bonus;
* after the epochs, beta <- 1.5 beta if KL > 2 kl_target, 0.5 beta if KL < kl_target / 2, per
  agent, with KL(pi_old || pi_new) measured on the batch after the update (PPO paper §4).

Policy and value networks are separate (no sharing between them or between agents), each with its
own Adam (lr and lr_critic, the tables' two learning rates): both Adams take the gradient of the
one total loss L with respect to their own network, which is the gradient of the policy part for
the policy and vf_coef times the value part for the critic.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import critic as C
from jaxmcg import distributions as D
from jaxmcg.losses import clipped_surrogate, masked_mean
from jaxmcg.networks import MLP, TorchMLP, init_per_agent
from jaxmcg.policy import log_probs, num_actions, obs_example
from jaxmcg.returns import gae


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults: dcl.md Table 5 (PD, P:L899-L917) and §6 D15."""

    hidden: tuple[int, ...] = (8, 8)  # Table 5: hidden 8, 2 layers (policy and value nets)
    lr: float = 4e-4  # Table 5: LR of policies
    lr_critic: float = 8e-4  # Table 5: LR of value function
    clip: float = 0.3  # Table 5: clip parameter
    kl_coef: float = 0.2  # Table 5: initial KL coefficient
    kl_target: float = 0.01  # Table 5
    num_epochs: int = 1  # Table 5: updates per iteration (Grid/RPC: 30)
    gamma: float = 0.99  # Tables 6-7 (Table 5 has none; irrelevant at horizon 1)
    gae_lambda: float = 1.0  # D15 (RLlib default)
    vf_coef: float = 1.0  # D15 (RLlib default)
    normalize_advantages: bool = True  # RLlib's PPO standardises advantages per train batch
    # torch's nn.Linear init, U(+-1/sqrt(fan_in)) weights and biases, as the DCL nets (dcl.md §2.1).
    # False: flax's lecun-normal weights and zero biases, with which 2 of 8 PD seeds stalled near
    # P(D) = 0.7 for 1,000 iterations (a constant observation leaves few live ReLUs at width 8)
    torch_init: bool = True

    def validate(self) -> None:
        if not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r} is invalid: must be positive integers")
        if not isinstance(self.num_epochs, int) or self.num_epochs <= 0:
            raise ValueError(f"num_epochs={self.num_epochs!r} is invalid: must be a positive integer")
        for name in ("lr", "lr_critic", "clip", "kl_target"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be > 0")
        for name in ("kl_coef", "vf_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be >= 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be in [0, 1]")


# Tables 6-7 (Grid game and RPC): hidden 32, gamma 0.99, 30 updates per iteration (batch 512 is
# the train loop's n_envs * horizon).
GRID_RPC = Config(hidden=(32, 32), num_epochs=30)


@struct.dataclass
class State:
    params: dict  # policies, stacked over agents
    critic_params: dict  # V(o), stacked over agents
    opt_state: optax.OptState
    critic_opt_state: optax.OptState
    kl_coef: jax.Array  # [N] adaptive KL coefficient of each agent
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)
    critic: object = struct.field(pytree_node=False)


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    k_policy, k_critic = jax.random.split(key)
    net = TorchMLP if config.torch_init else MLP
    policy, critic = net(config.hidden, num_actions(env, env_params)), net(config.hidden, 1)
    example, n = obs_example(env, env_params), env.num_agents
    params = init_per_agent(policy, k_policy, n, example)
    critic_params = init_per_agent(critic, k_critic, n, example)
    return State(
        params=params,
        critic_params=critic_params,
        opt_state=optax.adam(config.lr).init(params),
        critic_opt_state=optax.adam(config.lr_critic).init(critic_params),
        kl_coef=jnp.full((env.num_agents,), config.kl_coef, jnp.float32),
        iteration=jnp.zeros((), jnp.int32),
        config=config,
        policy=policy,
        critic=critic,
    )


def act(state: State, obs, key, evaluate: bool = False):
    """Sample actions `[E, N]` from the policies. PPO explores through its stochastic policy only,
    so evaluation samples too (the paper's curves are of the stochastic policies, dcl.md §5.1)."""
    del evaluate
    return D.sample(key, log_probs(state.policy, state.params, obs, 0.0)), {}


def categorical_kl(log_p, log_q):
    """KL(p || q) over the last axis."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def adapt_kl_coef(kl_coef, kl, kl_target):
    """RLlib's / the PPO paper's rule: x1.5 if KL > 2 target, x0.5 if KL < target / 2."""
    return jnp.where(kl > 2.0 * kl_target, 1.5 * kl_coef,
                     jnp.where(kl < 0.5 * kl_target, 0.5 * kl_coef, kl_coef))


def advantages_and_targets(state: State, batch):
    """`(A, G)`, each `[T, E, N]`: GAE(gamma, lambda) advantages of the critic before the update and
    the value targets A + V(o); V(o') is zero after an episode's last step (no bootstrap)."""
    c = state.config
    v = C.values(state.critic, state.critic_params, batch.obs)
    ended = (batch.terminated | batch.truncated)[..., None]
    v_next = jnp.where(ended, 0.0, C.values(state.critic, state.critic_params, batch.next_obs))
    adv = gae(batch.reward, v, v_next, batch.valid[..., None], c.gamma, c.gae_lambda)
    return adv, (adv + v) * batch.valid[..., None]


def loss_terms(params, critic_params, state: State, batch, old_log_probs, advantages, targets):
    """Per-agent `[N]` clipped surrogate loss, KL(pi_old || pi), value loss and clip fraction."""
    c = state.config
    lp = log_probs(state.policy, params, batch.obs, 0.0)
    ratio = jnp.exp(D.log_prob_of(lp, batch.action) - D.log_prob_of(old_log_probs, batch.action))
    surrogate = clipped_surrogate(ratio, advantages, c.clip)
    v = C.values(state.critic, critic_params, batch.obs)
    return {
        "policy_loss": -masked_mean(surrogate, batch.valid, axis=(0, 1)),
        "kl": masked_mean(categorical_kl(old_log_probs, lp), batch.valid, axis=(0, 1)),
        "value_loss": masked_mean(jnp.square(v - targets), batch.valid, axis=(0, 1)),
        "clip_fraction": masked_mean((jnp.abs(ratio - 1.0) > c.clip).astype(v.dtype), batch.valid,
                                     axis=(0, 1)),
    }


def total_loss(params, critic_params, state: State, batch, old_log_probs, advantages, targets):
    """Sum over agents of surrogate + beta KL + vf_coef value loss; aux: the per-agent terms."""
    t = loss_terms(params, critic_params, state, batch, old_log_probs, advantages, targets)
    per_agent = t["policy_loss"] + state.kl_coef * t["kl"] + state.config.vf_coef * t["value_loss"]
    return jnp.sum(per_agent), t


def update(state: State, batch):
    c = state.config
    old_lp = log_probs(state.policy, state.params, batch.obs, 0.0)  # batch is from these params
    adv, targets = advantages_and_targets(state, batch)
    if c.normalize_advantages:
        mean = masked_mean(adv, batch.valid, axis=(0, 1))
        std = jnp.sqrt(masked_mean(jnp.square(adv - mean), batch.valid, axis=(0, 1)))
        adv = (adv - mean) / (std + 1e-8)
    adam, adam_critic = optax.adam(c.lr), optax.adam(c.lr_critic)
    grad_fn = jax.grad(total_loss, argnums=(0, 1), has_aux=True)

    def epoch(carry, _):
        params, critic_params, opt_state, critic_opt_state = carry
        (grads, critic_grads), terms = grad_fn(params, critic_params, state, batch, old_lp, adv,
                                               targets)
        upd, opt_state = adam.update(grads, opt_state)
        critic_upd, critic_opt_state = adam_critic.update(critic_grads, critic_opt_state)
        params = optax.apply_updates(params, upd)
        critic_params = optax.apply_updates(critic_params, critic_upd)
        return (params, critic_params, opt_state, critic_opt_state), terms

    carry = (state.params, state.critic_params, state.opt_state, state.critic_opt_state)
    (params, critic_params, opt_state, critic_opt_state), terms = jax.lax.scan(
        epoch, carry, None, c.num_epochs)
    after = loss_terms(params, critic_params, state, batch, old_lp, adv, targets)
    kl_coef = adapt_kl_coef(state.kl_coef, after["kl"], c.kl_target)
    new_state = state.replace(
        params=params,
        critic_params=critic_params,
        opt_state=opt_state,
        critic_opt_state=critic_opt_state,
        kl_coef=kl_coef,
        iteration=state.iteration + 1,
    )
    return new_state, {  # all [N]; losses are means over the epochs, before each step
        "ippo/policy_loss": jnp.mean(terms["policy_loss"], axis=0),
        "ippo/value_loss": jnp.mean(terms["value_loss"], axis=0),
        "ippo/kl": after["kl"],  # after the update: the KL the coefficient adapts to
        "ippo/clip_fraction": after["clip_fraction"],
        "ippo/kl_coef": kl_coef,
    }
