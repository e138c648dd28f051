"""Tax design on Gather-Trade-Build: what MetaGrad and dual-RL need beyond additive incentives
(gtb.md §7.1-7.2, §8.3, §11.1, §11.6; spec/thesis.md §3.4).

On GTB the designer's mechanism is the 7 marginal rates of the bracket tax, read by the environment
at the first step of each tax period. `TaxDesign` wraps the environment so that an algorithm's
`act(state, obs, key)` sees what the designer needs, and so that its action is the environment's
action pytree:

* observation `{"agents": the agents' observation [N, ...], "designer": the planner view of the
  CURRENT state {"tensor" [15, 15, 8], "vector" [118]} (G4 "foundation"), "rates": the rates in
  force [7], "period_start": 1.0 where this step opens a tax period (`tax_pos == 1`)}`;
* action `{"agents": int[N], "tax_rates": float[7]}` (gtb.md §11.1);
* with `TaxDesign(env, memory=M)` (MetaGrad's recurrent incentive function with curriculum, §8.3)
  the action also holds `"designer_memory"` [M], the designer's recurrent state after this step,
  which the wrapper keeps (zeros at every reset) and shows as the next observation's
  `"designer_memory"`: the rollout carries only the environment, so the designer's state rides in
  it;
* `info` adds `designer_obs` (the view before the step), `designer_next_obs` (after the step,
  before any reset), `designer_reward` = R^ID_t = 0.01 prod_t eq_t ([MG] `r_scalar`, §5.3) and
  `build_payment` [N] (the agents' skills, for per-skill statistics).

The environment module names its differentiable reward path (§11.6) in `TAX_ENVS`; it is imported on
demand, so the core does not import `envs`. The rest of the module is shared by the two designers:
the planner network (§8.3), the rates of each step's period and the rewards they give (MetaGrad's
replica, G3), the replica of the agents' PPO step with [MG]'s Adam (§8.3), dual-RL's factored
action (§4, §7.2) and the evaluation statistics (§9.3, G5).
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg.environment import Wrapper

NUM_BRACKETS = 7  # US-federal brackets (gtb.md §1)
RATE_STEP = 0.05  # dual-RL's rates 0, 0.05, ..., 1.0 (§4, §7.2)
NUM_CHOICES = 22  # NO-OP + 21 rates per bracket
ID_REWARD_SCALE = 0.01  # [MG] `r_scalar=1e-2`: R^ID = 0.01 prod eq (§5.3, §8.5)

# environment class -> its `reward_from_rates(rates, tax_info, params) -> [N]` (§11.6)
TAX_ENVS: dict[str, str] = {"envs.gtb:GTB": "envs.gtb:reward_from_rates"}


def _class_name(env) -> str:
    return f"{type(env).__module__}:{type(env).__name__}"


def register_tax_env(env_class: str, reward_from_rates: str) -> None:
    """Register environments of class `"module:ClassName"` for tax design, with the
    `"module:function"` that recomputes their rewards from the rates."""
    TAX_ENVS[env_class] = reward_from_rates


def is_tax_env(env) -> bool:
    """Whether `env` (or the environment a `TaxDesign` wraps) is a registered tax economy."""
    return isinstance(env, TaxDesign) or _class_name(env) in TAX_ENVS


@struct.dataclass
class TaxState:
    inner: Any  # the economy's state
    view: Any  # the planner view of `inner`
    memory: Any = None  # the designer's recurrent state [M] (`TaxDesign(env, memory=M)`), or None

    @property
    def time(self):
        return self.inner.time


class TaxDesign(Wrapper):
    """A tax economy seen by a designer that sets its rates (see the module docstring). Steps use the
    economy's own `step` (auto-reset, one agents' observation per step) and add the planner view of
    the state after any reset; that view is carried in the state, so the view before a step (in
    `info`) is not rendered again."""

    def __init__(self, env, memory: int = 0):
        if isinstance(env, TaxDesign):
            raise ValueError("the environment is a TaxDesign already")
        name = _class_name(env)
        if name not in TAX_ENVS:
            raise ValueError(f"{env.name} is not a tax economy; valid: environments of "
                             f"{', '.join(sorted(TAX_ENVS))} (jaxmcg.tax_design.register_tax_env)")
        if getattr(env, "designer_obs", "foundation") == "none":
            raise ValueError(f"designer_obs='none' gives {env.name}'s tax designer no observation; "
                             "valid: 'foundation' (gtb.md G4)")
        super().__init__(env)
        self.memory = memory
        module, _, attr = TAX_ENVS[name].partition(":")
        self.reward_from_rates = getattr(importlib.import_module(module), attr)

    @property
    def agents_env(self):
        """The environment the agents' learner sees (observations `obs["agents"]`)."""
        return self.inner

    def _obs(self, agents_obs, inner_state, view, memory):
        return self._with_memory({"agents": agents_obs, "designer": view, "rates": inner_state.rates,
                                  "period_start": (inner_state.tax_pos == 1).astype(jnp.float32)},
                                 memory)

    def _with_memory(self, obs, memory):
        return {**obs, "designer_memory": memory} if self.memory else obs

    def _empty_memory(self):
        return jnp.zeros((self.memory,), jnp.float32) if self.memory else None

    def _split_action(self, actions):
        """`(the economy's action, the designer's memory after the step or None)`."""
        if not self.memory:
            return actions, None
        memory = actions["designer_memory"].astype(jnp.float32)  # a fixed dtype in the scan's carry
        return {k: v for k, v in actions.items() if k != "designer_memory"}, memory

    def reset_env(self, key, params):
        obs, inner = self.inner.reset_env(key, params)
        view = self.inner.designer_observation(inner, params)
        memory = self._empty_memory()
        return self._obs(obs, inner, view, memory), TaxState(inner, view, memory)

    def get_obs(self, state, params=None):
        return self._obs(self.inner.get_obs(state.inner, params), state.inner, state.view,
                         state.memory)

    def _info(self, state, info):
        info = dict(info)
        info["designer_next_obs"] = info.pop("designer_obs")
        info["designer_obs"] = state.view
        info["designer_reward"] = (ID_REWARD_SCALE * info["prod"] * info["eq"]).astype(jnp.float32)
        info["build_payment"] = state.inner.pay
        return info

    def step_env(self, key, state, actions, params):
        actions, memory = self._split_action(actions)
        obs, inner, reward, terminated, info = self.inner.step_env(key, state.inner, actions, params)
        info = self._info(state, info)
        view = info["designer_next_obs"]
        state = TaxState(inner, view, memory)
        return self._obs(obs, inner, view, memory), state, reward, terminated, info

    @partial(jax.jit, static_argnums=(0,))
    def step(self, key, state, actions, params=None):
        params = self.default_params if params is None else params
        actions, memory = self._split_action(actions)
        obs, inner, reward, terminated, truncated, info = self.inner.step(key, state.inner, actions,
                                                                          params)
        info = self._info(state, info)
        after = info["designer_next_obs"]
        info["final_obs"] = self._with_memory(
            {"agents": info["final_obs"], "designer": after, "rates": info["tax"]["rates_env"],
             "period_start": info["period_start_next"].astype(jnp.float32)}, memory)
        view = self.inner.designer_observation(inner, params)  # after the reset, if any
        if self.memory:  # a new episode's designer starts from zeros
            memory = jnp.where(terminated | truncated, self._empty_memory(), memory)
        return (self._obs(obs, inner, view, memory), TaxState(inner, view, memory), reward,
                terminated, truncated, info)

    def designer_example(self, params):
        """Zeros shaped like one planner view."""
        view = jax.eval_shape(lambda k: self.reset_env(k, params)[1].view, jax.random.PRNGKey(0))
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), view)


def check_tax_env(env, config, needed_by: str) -> None:
    """ValueError before any compilation if `needed_by`'s designer cannot set `env`'s taxes with
    `config`: the economy must show the planner view, the agents must be ppo_shared (gtb.md §8.2;
    `make_agents` rejects share_parameters with it), and the planner network needs a hidden layer
    (§8.3)."""
    if not isinstance(env, TaxDesign):
        TaxDesign(env)  # raises for a blind or unknown economy
    if config.learner != "ppo_shared":
        raise ValueError(f"learner={config.learner!r} cannot be {needed_by}'s agents on "
                         f"{env.name}; valid: 'ppo_shared' (the masked shared PPO policy of gtb.md "
                         "§8.2)")
    for name in ("hidden", "critic_hidden"):
        if not tuple(getattr(config, name)):
            raise ValueError(f"{name}=() is invalid on {env.name}: the planner network needs at "
                             "least one hidden layer (gtb.md §8.3: FC256 x 2)")


# ---- the planner network (gtb.md §8.3) --------------------------------------------------------


class PlannerNet(nn.Module):
    """The agents' trunk (ppo_shared.Net: two 5x5 convolutions of 6 filters on the tensor, a dense
    layer to the vector's length, concatenated with the vector; `conv=False` uses the vector only)
    with the `hidden` ReLU layers (§8.3: FC256 x 2), then a linear layer of `out` units, without
    bias if not `use_output_bias` (MetaGrad's rates). Returns `[..., out]`."""

    hidden: Sequence[int]
    out: int
    conv: bool = True
    use_output_bias: bool = True

    @nn.compact
    def __call__(self, view):
        from jaxmcg.algos.ppo_shared import Net  # the core imports algorithms on demand only

        x = nn.relu(Net(tuple(self.hidden[:-1]), self.hidden[-1], self.conv)(view))
        return nn.Dense(self.out, use_bias=self.use_output_bias)(x)


def init_planner_nets(key, env: TaxDesign, env_params, config, out: int, use_output_bias: bool,
                      with_critic: bool):
    """`(module, params, critic, critic_params)` as `designer.init_designer_nets`: the planner
    network with `out` outputs and `config.hidden`, and its critic V(s) with the same trunk and
    `config.critic_hidden` (None if not `with_critic`). `network="auto"` is the conv trunk. With
    `config.designer_lstm` units (MetaGrad with curriculum, §8.3) both are `ppo_shared.RecurrentNet`:
    an LSTM after the hidden layers, over an episode's steps."""
    from jaxmcg.algos.ppo_shared import RecurrentNet

    view = env.designer_example(env_params)
    conv = config.network in ("auto", "conv")
    units = getattr(config, "designer_lstm", 0)
    if units:
        view = jax.tree_util.tree_map(lambda x: x[None], view)  # an episode of one step

    def make(hidden, n_out, bias):
        if units:
            return RecurrentNet(tuple(hidden), n_out, units, conv, use_output_bias=bias)
        return PlannerNet(tuple(hidden), n_out, conv, bias)

    k_net, k_critic = jax.random.split(key)
    module = make(config.hidden, out, use_output_bias)
    params = module.init(k_net, view)["params"]
    critic = critic_params = None
    if with_critic:
        critic = make(config.critic_hidden, 1, True)
        critic_params = critic.init(k_critic, view)["params"]
    return module, params, critic, critic_params


# ---- MetaGrad: rates of each period and the rewards they give (§11.6, G3) ----------------------


def period_rates(step_rates: jax.Array, period_start: jax.Array, fallback: jax.Array) -> jax.Array:
    """The rates in force at each step, `[T, E, 7]`: `step_rates[s]` of the last step s <= t that
    opened a period (`period_start[s]`, `[T, E]`), i.e. the designer's output at the period's first
    step broadcast over its steps (§11.6); `fallback[t]` where no period starts in the batch before
    t (a rollout that does not begin at a reset). A one-hot product over time, no gather."""
    t = step_rates.shape[0]
    steps = jnp.arange(t)[:, None]
    first = jax.lax.cummax(jnp.where(period_start > 0.5, steps, -1), axis=0)  # [T, E]
    onehot = (first[:, None, :] == jnp.arange(t)[None, :, None]).astype(step_rates.dtype)
    rates = jnp.einsum("tse,sek->tek", onehot, step_rates)
    return jnp.where((first >= 0)[..., None], rates, fallback)


def taxed_rewards(env: TaxDesign, env_params, batch, rates: jax.Array) -> jax.Array:
    """The agents' rewards `[T, E, N]` had each step's rates been `rates` `[T, E, 7]` (G3 default
    `reward_path="local"`): the env reward plus reward_from_rates(rates) - reward_from_rates(rates
    in force), so that it equals the env reward exactly at the env's rates and only tax steps
    depend on the rates. The rates are capped as the environment caps them."""
    rates = jnp.clip(jnp.minimum(rates, env_params.rate_cap), 0.0, 1.0)
    tax = batch.info["tax"]
    recompute = jax.vmap(jax.vmap(lambda r, x: env.reward_from_rates(r, x, env_params)))
    at_env = jax.lax.stop_gradient(recompute(tax["rates_env"], tax))
    return batch.reward + (recompute(rates, tax) - at_env).astype(batch.reward.dtype)


# ---- MetaGrad: the replica of the agents' PPO step (§8.3) ---------------------------------------

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults, which ppo_shared uses


def adam_replica_step(grads, opt_state, params, lr: float, second_moment_grads=None):
    """`params` after one Adam step from the moments in `opt_state` (optax.adam's state, found by
    name): m <- m + (1 - b1)(g - m), v <- v + (1 - b2)(s^2 - v), params - lr m_hat / (sqrt(v_hat) +
    1e-8), with s = `second_moment_grads` (default `grads`: optax.adam's value and derivative).
    MetaGrad passes s = sg(g) as [MG]'s replica (gtb.md §8.3): the same value, a derivative in g
    through the numerator only."""
    s = grads if second_moment_grads is None else second_moment_grads
    count = optax.tree_utils.tree_get(opt_state, "count") + 1
    mu = jax.tree_util.tree_map(lambda g, m: (1 - _ADAM_B1) * g + _ADAM_B1 * m, grads,
                                optax.tree_utils.tree_get(opt_state, "mu"))
    nu = jax.tree_util.tree_map(lambda g, v: (1 - _ADAM_B2) * jnp.square(g) + _ADAM_B2 * v, s,
                                optax.tree_utils.tree_get(opt_state, "nu"))
    c1, c2 = 1 - _ADAM_B1 ** count, 1 - _ADAM_B2 ** count

    def step(p, m, v):
        v_hat = v / c2.astype(v.dtype)
        # sqrt's derivative is infinite at v = 0 (a parameter whose gradient is 0 at the first
        # step): 0 there instead (a subgradient of |g|), so that differentiating v stays finite
        root = jnp.where(v_hat > 0, jnp.sqrt(jnp.where(v_hat > 0, v_hat, 1.0)), 0.0)
        u = (m / c1.astype(m.dtype)) / (root + _ADAM_EPS)
        return (p + -lr * u).astype(p.dtype)

    return jax.tree_util.tree_map(step, params, mu, nu)


def ppo_policy_grads(module, lstate, batch):
    """The gradient of the policy step of `module.update` (ppo_shared: floored masked policy, GAE of
    its critic, clipped surrogate and entropy, then the optional global-norm clipping), a
    differentiable function of `batch.reward`."""
    grads, _, _ = module.policy_gradient(lstate, batch)
    clip = lstate.config.grad_clip
    if clip is not None:
        grads, _ = optax.clip_by_global_norm(clip).update(grads, optax.EmptyState())
    return grads


def ppo_replica(module, lstate, batch, stop_second_moment: bool = True):
    """MetaGrad's in-graph replica theta-hat of the agents' PPO step (`module.update`'s policy half;
    the critic's step does not enter theta-hat): `lstate` with the new policy parameters and the
    iteration counted. With `stop_second_moment` Adam's v takes sg(g)^2 ([MG], §8.3)."""
    grads = ppo_policy_grads(module, lstate, batch)
    second = jax.lax.stop_gradient(grads) if stop_second_moment else grads
    params = adam_replica_step(grads, lstate.opt_state, lstate.params, lstate.config.lr, second)
    return lstate.replace(params=params, iteration=lstate.iteration + 1)


# ---- dual-RL: the factored planner action (§4, §7.2, G13, G21) ---------------------------------


def rate_cap(episodes, start: float = 0.1, anneal_episodes: float = 8000.0) -> jax.Array:
    """The annealing cap min(1, start + (1 - start) e / anneal_episodes) after `episodes` completed
    training episodes (§7.2 [T L1981]: 0.1 -> 1 over 8k)."""
    e = jnp.asarray(episodes, jnp.float32)
    return jnp.minimum(1.0, start + (1.0 - start) * e / anneal_episodes)


def choice_rates() -> jax.Array:
    """The rate of each choice `[22]`: index 0 is NO-OP (given as 0 here), index j the rate
    0.05 (j - 1)."""
    return jnp.maximum(jnp.arange(NUM_CHOICES, dtype=jnp.float32) - 1.0, 0.0) * RATE_STEP


def planner_mask(period_start: jax.Array, cap) -> jax.Array:
    """Valid choices `[..., 7, 22]` bool (§4): NO-OP always; the rates <= `cap` only where a period
    starts (`period_start` `[...]`), as the environment reads the rates only then."""
    rate_ok = choice_rates() <= jnp.asarray(cap)[..., None] + 1e-6
    valid = rate_ok & (period_start[..., None] > 0.5)
    valid = valid.at[..., 0].set(True)
    return jnp.broadcast_to(valid[..., None, :], (*valid.shape[:-1], NUM_BRACKETS, NUM_CHOICES))


def apply_choice(choice: jax.Array, previous: jax.Array, cap, clip: bool) -> jax.Array:
    """Rates `[..., 7]` from the choices `[..., 7]`: NO-OP keeps `previous` (the rates in force,
    zeros at an episode's start), index j sets 0.05 (j - 1); with `clip` (G13 `cap_mode="clip"`)
    capped at `cap`, so that a rate the exploration floor picks above the cap is not applied."""
    rates = jnp.where(choice == 0, previous, choice_rates()[choice])
    return jnp.minimum(rates, jnp.asarray(cap)[..., None]) if clip else rates


# ---- evaluation (§9.3, G5) -------------------------------------------------------------------


def by_skill(x: jax.Array, payment: jax.Array) -> jax.Array:
    """`x` `[E, N]` per agent -> `[N]` per skill rank (0 = worst build payment), mean over episodes;
    the ranks are assigned to agents at random each episode (gtb.md §2.3)."""
    n = payment.shape[-1]
    rank = jnp.sum(payment[..., None, :] < payment[..., :, None], axis=-1)  # [E, N]
    onehot = jax.nn.one_hot(rank, n, dtype=x.dtype)
    return jnp.mean(jnp.einsum("en,enr->er", x, onehot), axis=0)


def tax_metrics(state, batch, designer_reward: jax.Array) -> dict:
    """A tax designer's evaluation: `designer_return` (its reward `[T, E]` summed over the valid
    steps, mean over episodes), the agents' GTB statistics (their learner's `eval_metrics`: final
    prod, eq, SW, Σ prod eq, houses, trades), the mean rates in force per bracket over the valid
    steps (`tax/rates`, [7]), and per skill rank, worst to best, the tax paid and the build + trade
    income per episode (`tax/paid_by_skill`, `tax/income_by_skill`, [N]). `state` has `agents`
    and `learner_state`."""
    info, w = batch.info, batch.valid[..., None]
    pay = info["build_payment"][0]
    income = jnp.sum((info["income_build"] + info["income_trade"]) * w, axis=0)
    return {"designer_return": jnp.mean(jnp.sum(designer_reward * batch.valid, axis=0)),
            **state.agents.module.eval_metrics(state.learner_state, batch),
            "tax/rates": mean_rates(batch),
            "tax/paid_by_skill": by_skill(jnp.sum(info["tax_paid"] * w, axis=0), pay),
            "tax/income_by_skill": by_skill(income, pay)}


def mean_rates(batch) -> jax.Array:
    """Mean rates in force per bracket over the valid steps of `batch`, `[7]`."""
    w = batch.valid[..., None]
    return jnp.sum(batch.info["tax"]["rates_env"] * w, axis=(0, 1)) / jnp.maximum(
        jnp.sum(batch.valid), 1.0)
