"""PPO with one policy shared by all agents, action masks and an exploration floor: the agents of
the thesis's Gather-Trade-Build experiments (gtb.md §8.2, §8.4; [MG] `ppo_agent*.py`).

Per iteration, on the whole batch of episodes (every agent's samples pooled, gtb.md G20):

* behaviour policy: softmax(logits) restricted to the valid actions (invalid logits -> -inf, i.e.
  the softmax times the mask, renormalised), then floored, pi = (1 - eps) pi_masked + eps / |A|
  (§8.4), with eps linear from eps_start to eps_end over eps_div iterations and 0 in evaluation;
* advantages: GAE(gamma, lambda) of the main critic before its step, V(o') bootstrapped at every
  step including the last (the critic's TD(0) target has no terminal masking in [MG], §8.2);
* actor: ONE Adam step on  -mean min(rho A, clip(rho, 1 +- clip) A) - c_entropy mean H(pi),
  rho and H of the floored policy, means over (time, env, agent), no minibatches (§8.2);
* critic: ONE Adam step on mean (V(o) - (r + gamma V_target(o')))^2, then the soft target update
  V_target <- c_v V + (1 - c_v) V_target (§8.2); the critic is recurrent (below), V(o') the value
  after one more LSTM step on o' from the carry after o;
* optional global-norm gradient clipping (G7: 10 for US-federal and dual-RL agents).

The observation is split by the environment's `split_obs` hook into {"tensor", "vector",
"action_mask"} (GTB); an environment without the hook gives a flat vector and no mask. The network
is §8.2's: two 5x5 SAME convolutions of 6 filters (ReLU) on the tensor, flattened, a dense layer to
the vector's length (ReLU), concatenated with the vector, then the `hidden` ReLU layers and the
output. The critic has the same trunk and hidden layers, then §8.2's LSTM(128) run over the
episode's steps from a zero state (`critic_lstm` units; TF1's cell, as [MG]; 0 gives a feed-forward
critic), then a linear head. A batch is whole episodes from their first step (`episode_rollout`),
so the LSTM's time axis is the batch's axis 0.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import distributions as D
from jaxmcg.algos.ippo import categorical_kl
from jaxmcg.losses import clipped_surrogate, masked_mean
from jaxmcg.networks import LSTM
from jaxmcg.policy import num_actions
from jaxmcg.returns import gae

MASKED_LOGIT = -1e9  # invalid actions: probability exactly 0 after the softmax in float32
LOG_FLOOR = 1e-30  # log of probabilities that are 0 (masked, eps = 0); keeps 0 * log p finite


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults: the US-federal agents without curriculum (gtb.md §8.5, Table C.4)."""

    conv: bool = True  # §8.2 trunk on the tensor; False: dense layers on the flat observation
    conv_filters: int = 6  # §8.2 [T L1987]
    conv_kernel: int = 5
    hidden: tuple[int, ...] = (128, 128)  # §8.2 FC128 -> FC128
    lr: float = 1.39e-4  # alpha_theta, US federal (Table C.4)
    lr_critic: float = 5.0e-5  # alpha_v,agent
    clip: float = 0.166  # agent PPO epsilon
    c_entropy: float = 0.253
    c_v: float = 4.36e-3  # soft target-critic update rate
    gamma: float = 0.99  # [T L2007]
    gae_lambda: float = 0.98  # [T L2007]
    eps_start: float = 0.5  # §8.4 exploration floor: 0.5 -> 0.05 over 5k iterations
    eps_end: float = 0.05
    eps_div: float = 5000.0
    floor_valid_only: bool = False  # [MG] floors over all |A| (§8.2); True: eps / #valid on valid
    grad_clip: float | None = 10.0  # G7: global norm, dual-RL and US-federal agents; None: MetaGrad
    critic_lstm: int = 128  # §8.2: LSTM units after the critic's hidden layers; 0: feed-forward
    # G8: the thesis says "LSTM truncation 50" [T L2007], [MG] backpropagates through the whole
    # 100-step episode; 0 (the spec's default) is the full episode, k > 0 cuts the gradient every k
    critic_truncation: int = 0

    def validate(self) -> None:
        if not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r} is invalid: must be positive integers")
        for name in ("conv_filters", "conv_kernel"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be a positive integer")
        for name in ("lr", "lr_critic", "clip", "eps_div"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be > 0")
        for name in ("gamma", "gae_lambda", "c_v", "eps_start", "eps_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be in [0, 1]")
        if not self.c_entropy >= 0:
            raise ValueError(f"c_entropy={self.c_entropy} is invalid: must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip={self.grad_clip} is invalid: must be > 0 or None")
        for name in ("critic_lstm", "critic_truncation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}={v!r} is invalid: must be an integer >= 0 (0: off)")


class Net(nn.Module):
    """§8.2's trunk and head on {"tensor" [..., H, W, C], "vector" [..., V]} (or {"vector"} only):
    returns `[..., out]`."""

    hidden: Sequence[int]
    out: int
    conv: bool = True
    filters: int = 6
    kernel: int = 5

    @nn.compact
    def __call__(self, parts):
        x = parts["vector"]
        if self.conv:
            t = parts["tensor"]
            lead = t.shape[:-3]
            y = t.reshape(-1, *t.shape[-3:])
            for _ in range(2):
                y = nn.relu(nn.Conv(self.filters, (self.kernel, self.kernel), padding="SAME")(y))
            y = nn.relu(nn.Dense(x.shape[-1])(y.reshape(*lead, -1)))
            x = jnp.concatenate([y, x], axis=-1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class RecurrentNet(nn.Module):
    """`Net`'s trunk and `hidden` ReLU layers per step, an LSTM(`units`) over time, a linear head of
    `out` units: §8.2's agents' critic (out 1) and, with curriculum, §8.3's MetaGrad incentive
    function and ID critic. Inputs are episodes from their first step with time on axis 0:

    * `net(parts)` -> `[T, ..., out]`, from a zero state;
    * `net(parts, next_parts)` -> that and the head after one more LSTM step on `next_parts[t]` from
      the carry after step t (the next state's value in the same episode, also where it is a final
      observation and the next step's a reset's);
    * `net(parts_t, carry=(c, h), step=True)` -> `(out [..., out], (c, h))`: one step, for acting
      online (`carry` zeros at an episode's start)."""

    hidden: Sequence[int]
    out: int
    units: int
    conv: bool = True
    filters: int = 6
    kernel: int = 5
    truncation: int = 0
    use_output_bias: bool = True

    @nn.compact
    def __call__(self, parts, next_parts=None, carry=None, step: bool = False):
        trunk = Net(tuple(self.hidden[:-1]), self.hidden[-1], self.conv, self.filters, self.kernel)
        lstm = LSTM(self.units, truncation=self.truncation)
        head = nn.Dense(self.out, use_bias=self.use_output_bias)
        if step:
            carry = lstm(nn.relu(trunk(parts)), carry, step=True)
            return head(carry[1]), carry
        over_time = lambda f: jnp.moveaxis(f, 0, -2)  # noqa: E731  (the LSTM's time is axis -2)
        carry = lstm(over_time(nn.relu(trunk(parts))))
        out = jnp.moveaxis(head(carry[1]), -2, 0)
        if next_parts is None:
            return out
        _, h_next = lstm(over_time(nn.relu(trunk(next_parts))), carry, step=True)
        return out, jnp.moveaxis(head(h_next), -2, 0)


@struct.dataclass
class State:
    params: dict  # the shared policy
    critic_params: dict
    target_params: dict  # V_target
    opt_state: optax.OptState
    critic_opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    policy: Net = struct.field(pytree_node=False)
    critic: nn.Module = struct.field(pytree_node=False)  # Net, or RecurrentNet (critic_lstm)
    split: object = struct.field(pytree_node=False)  # obs -> {"tensor"?, "vector", "action_mask"?}


def observation_splitter(env, conv: bool):
    """`split(obs)` from the environment's `split_obs` hook; ValueError if `conv` needs a tensor the
    environment does not give."""
    if hasattr(env, "split_obs"):
        return lambda obs: env.split_obs(obs)
    if conv:
        raise ValueError(f"conv=True needs spatial observations (a split_obs hook giving a 'tensor'); "
                         f"{env.name} has none (valid: conv=False)")
    return lambda obs: {"vector": obs}


def clipped_adam(lr, grad_clip):
    """optax.adam(lr), after global-norm gradient clipping at `grad_clip` unless it is None (G7)."""
    adam = optax.adam(lr)
    return adam if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    split = observation_splitter(env, config.conv)
    example = split(jnp.zeros((1, *env.observation_space(env_params).shape), jnp.float32))
    if config.conv and "tensor" not in example:
        raise ValueError(f"conv=True needs a 'tensor' in {env.name}'s split_obs (valid: conv=False)")
    example = {k: v for k, v in example.items() if k != "action_mask"}
    kw = dict(conv=config.conv, filters=config.conv_filters, kernel=config.conv_kernel)
    policy = Net(config.hidden, num_actions(env, env_params), **kw)
    critic = (RecurrentNet(config.hidden, 1, config.critic_lstm, truncation=config.critic_truncation,
                           **kw) if config.critic_lstm else Net(config.hidden, 1, **kw))
    k_policy, k_critic = jax.random.split(key)
    params = policy.init(k_policy, example)["params"]
    critic_params = critic.init(k_critic, example)["params"]
    return State(
        params=params, critic_params=critic_params, target_params=critic_params,
        opt_state=clipped_adam(config.lr, config.grad_clip).init(params),
        critic_opt_state=optax.adam(config.lr_critic).init(critic_params),
        iteration=jnp.zeros((), jnp.int32), config=config, policy=policy, critic=critic, split=split)


def floored_log_probs(logits, mask, eps, valid_only: bool = False):
    """log pi of the masked, floored policy `[..., A]` (§8.2, §8.4): softmax over the valid actions
    (`mask` bool or None), then (1 - eps) pi + eps / |A| (or eps / #valid on the valid actions with
    `valid_only`). Entries of probability 0 are log(1e-30), finite so that one-hot products and
    entropies stay finite."""
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1)
    if valid_only and mask is not None:
        uniform = mask / jnp.sum(mask, axis=-1, keepdims=True)
    else:
        uniform = 1.0 / logits.shape[-1]
    return jnp.log(jnp.maximum((1.0 - eps) * probs + eps * uniform, LOG_FLOOR))


def _net_inputs(state: State, obs):
    return {k: v for k, v in state.split(obs).items() if k != "action_mask"}


def policy_log_probs(state: State, params, obs, eps):
    """Floored log pi of every agent `[..., N, A]`, the one network applied to each agent's
    observation."""
    mask = state.split(obs).get("action_mask")
    logits = state.policy.apply({"params": params}, _net_inputs(state, obs))
    return floored_log_probs(logits, None if mask is None else mask > 0.5, eps,
                             state.config.floor_valid_only)


def values(state: State, critic_params, obs):
    """V(o) `[...]`; for the recurrent critic `obs` is an episode from its first step (time on
    axis 0)."""
    return state.critic.apply({"params": critic_params}, _net_inputs(state, obs))[..., 0]


def critic_values(state: State, critic_params, batch):
    """`(V(o_t), V(o'_t))` `[T, E, N]` on a batch of episodes: the recurrent critic's next value is
    one more LSTM step from the carry after o_t (`RecurrentNet`)."""
    if not state.config.critic_lstm:
        return values(state, critic_params, batch.obs), values(state, critic_params, batch.next_obs)
    v, v_next = state.critic.apply({"params": critic_params}, _net_inputs(state, batch.obs),
                                   _net_inputs(state, batch.next_obs))
    return v[..., 0], v_next[..., 0]


def epsilon(state: State):
    return D.epsilon(state)


def act(state: State, obs, key, evaluate: bool = False):
    """Sample `[E, N]` from the floored policy; evaluation samples with eps = 0 (§8.1)."""
    eps = jnp.where(evaluate, 0.0, epsilon(state))
    return D.sample(key, policy_log_probs(state, state.params, obs, eps)), {}


def advantages(state: State, batch):
    """GAE(gamma, lambda) `[T, E, N]` of the main critic, bootstrapping V(o') at every step (§8.2)."""
    c = state.config
    v, v_next = critic_values(state, state.critic_params, batch)
    return gae(batch.reward, v, v_next, batch.valid[..., None], c.gamma, c.gae_lambda)


def actor_loss(params, state: State, batch, old_log_probs, adv, eps):
    """(-mean clipped surrogate - c_entropy mean entropy, terms); means over valid (t, env, agent)."""
    c = state.config
    lp = policy_log_probs(state, params, batch.obs, eps)
    ratio = jnp.exp(D.log_prob_of(lp, batch.action) - D.log_prob_of(old_log_probs, batch.action))
    surrogate = clipped_surrogate(ratio, adv, c.clip)
    ent = masked_mean(D.entropy(lp), batch.valid)
    pg = -masked_mean(surrogate, batch.valid)
    return pg - c.c_entropy * ent, {"policy_loss": pg, "entropy": ent,
                                    "kl": masked_mean(categorical_kl(old_log_probs, lp), batch.valid)}


def critic_loss(critic_params, state: State, batch):
    """mean (V(o) - (r + gamma V_target(o')))^2 over valid samples, no terminal masking (§8.2)."""
    target = batch.reward + state.config.gamma * critic_values(state, state.target_params, batch)[1]
    v = values(state, critic_params, batch.obs)
    return masked_mean(jnp.square(v - jax.lax.stop_gradient(target)), batch.valid)


def policy_gradient(state: State, batch):
    """`(grads, terms, eps)`: the gradient of `actor_loss` at `state.params` on `batch` (before any
    clipping), its terms and the floor eps. A differentiable function of `batch.reward`: a
    meta-learner differentiating this update through the rewards (MetaGrad's theta-hat(eta), gtb.md
    §8.3) needs the path reward -> advantage -> step, so the advantages are not stopped."""
    eps = epsilon(state)
    old_lp = jax.lax.stop_gradient(policy_log_probs(state, state.params, batch.obs, eps))
    adv = advantages(state, batch)
    grads, terms = jax.grad(actor_loss, has_aux=True)(state.params, state, batch, old_lp, adv, eps)
    return grads, terms, eps


def update(state: State, batch):
    c = state.config
    grads, terms, eps = policy_gradient(state, batch)
    upd, opt_state = clipped_adam(c.lr, c.grad_clip).update(grads, state.opt_state, state.params)
    value_loss, critic_grads = jax.value_and_grad(critic_loss)(state.critic_params, state, batch)
    critic_upd, critic_opt_state = optax.adam(c.lr_critic).update(critic_grads, state.critic_opt_state)
    critic_params = optax.apply_updates(state.critic_params, critic_upd)
    target = jax.tree_util.tree_map(lambda v, t: c.c_v * v + (1.0 - c.c_v) * t, critic_params,
                                    state.target_params)
    new_state = state.replace(
        params=optax.apply_updates(state.params, upd), critic_params=critic_params,
        target_params=target, opt_state=opt_state, critic_opt_state=critic_opt_state,
        iteration=state.iteration + 1)
    return new_state, {"ppo_shared/policy_loss": terms["policy_loss"],
                       "ppo_shared/entropy": terms["entropy"], "ppo_shared/value_loss": value_loss,
                       "ppo_shared/epsilon": eps}


def eval_metrics(state: State, batch) -> dict:
    """GTB's episode statistics (gtb.md §5.2, G5) when the environment reports them: houses built
    and trades per episode, and the final productivity, equality and eq * prod / N."""
    info = batch.info
    if "houses_built" not in info:
        return {}
    v = batch.valid
    last = lambda x: x[-1].mean()  # noqa: E731  (GTB episodes all end at the horizon)
    return {"gtb/houses_built": jnp.sum(info["houses_built"].sum(-1) * v, axis=0).mean(),
            "gtb/trades": jnp.sum(info["trades"] * v, axis=0).mean(),
            "gtb/prod": last(info["prod"]), "gtb/eq": last(info["eq"]), "gtb/sw": last(info["sw"]),
            "gtb/welfare_objective": jnp.sum(info["prod"] * info["eq"] * v, axis=0).mean()}
