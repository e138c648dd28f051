"""What a central incentive designer (thesis ch. 6) needs from an environment, and the agents it
incentivizes, shared by MetaGrad, dual-RL and AMD (spec/thesis.md §3.1-3.5).

* `DesignerSpec`: the designer's view of an environment: the global state s_t, features of the joint
  action a_t, the action type k^i_t of each agent (agent i receives the incentive node u[k^i_t]) and
  the designer's reward R^ID_t. Escape Room and Cleanup are registered here (§3.4, §5.1, §5.4); an
  environment of a user's may carry its own `designer_spec` attribute instead.
* `ObserveDesigner`: a wrapper that writes these into `info` on every step (`designer_obs`,
  `designer_next_obs`, `designer_features`, `designer_action_type`, `designer_reward`), so that the
  algorithms never reach into an environment's state.
* `Agents`: any single-update jaxmcg algorithm (pg, ac, ...) as the designer's agents, optionally
  with one set of parameters shared by all of them, with an `update` whose result is
  differentiable in the rewards of the batch. Under a tax designer (`jaxmcg.tax_design.TaxDesign`,
  GTB) the agents see only `obs["agents"]` and `action["agents"]`.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxmcg import distributions as D
from jaxmcg import registry
from jaxmcg.environment import Wrapper
from jaxmcg.policy import log_probs
from jaxmcg.returns import discounted_returns, gae
from jaxmcg.tax_design import TaxDesign, is_tax_env


@dataclasses.dataclass(frozen=True)
class DesignerSpec:
    """The designer's view of one environment family.

    `view(env, state, params)`: the global state, flat `[D]` or an image `[H, W, C]`;
    `features(env, actions, info)`: the joint-action input `[F]`;
    `action_type(env, actions, reward, info)`: `[N]` ints in `[0, num_types)`;
    `type_names`: one name per incentive node (its length is the number of nodes K).
    """

    view: Callable
    features: Callable
    action_type: Callable
    type_names: tuple[str, ...]

    @property
    def num_types(self) -> int:
        return len(self.type_names)


def _er_view(env, state, params):
    # thesis §5.1 / A18: the ID sees the concatenated one-hot locations of all agents (3N)
    return jax.nn.one_hot(state.position, 3, dtype=jnp.float32).reshape(-1)


def _onehot_joint_action(env, actions, info):
    # thesis §3.4: the ID's input is concat(global obs, one-hot joint action [3N])
    n_actions = int(env.action_space(env.default_params).n)
    return jax.nn.one_hot(actions, n_actions, dtype=jnp.float32).reshape(-1)


def _cleanup_type(env, actions, reward, info):
    # [CODE id_ssd], spec §3.4: 0 = fired the cleaning beam, 1 = collected an apple, 2 = otherwise
    fire = int(env.action_space(env.default_params).n) - 1  # FIRE is the last Cleanup action
    return jnp.where(actions == fire, 0, jnp.where(reward > 0, 1, 2)).astype(jnp.int32)


SPECS: dict[str, DesignerSpec] = {
    # Escape Room: one incentive node per action (lever, start, door); agent i gets u[a^i] (§3.4)
    "envs.escape_room:EscapeRoom": DesignerSpec(
        view=_er_view, features=_onehot_joint_action,
        action_type=lambda env, a, r, info: jnp.asarray(a, jnp.int32),
        type_names=("lever", "start", "door")),
    # Cleanup: the global RGB view (planner_ref_point [3, 3], §5.4) and a multi-hot of the agents
    # that used their cleaning beam (thesis L1962); nodes {clean, apple, else} (§3.4)
    "envs.cleanup:Cleanup": DesignerSpec(
        view=lambda env, s, p: env.global_obs(s, p),
        features=lambda env, a, info: info["fired"].astype(jnp.float32),
        action_type=_cleanup_type, type_names=("clean", "apple", "else")),
}


def register_designer_spec(env_class: str, spec: DesignerSpec) -> None:
    """Register `spec` for environments of class `"module:ClassName"`."""
    SPECS[env_class] = spec


def designer_spec(env) -> DesignerSpec:
    """The designer's view of `env` (its own `designer_spec` attribute, or a registered one);
    ValueError naming the environments that have one otherwise."""
    if isinstance(env, ObserveDesigner):
        return env.spec
    if hasattr(env, "designer_spec"):
        return env.designer_spec
    name = f"{type(env).__module__}:{type(env).__name__}"
    if name not in SPECS:
        raise ValueError(
            f"{env.name} provides no designer observation (global state, joint-action features, "
            f"action types) for a central incentive designer; valid: environments of "
            f"{', '.join(sorted(SPECS))}, or one with a `designer_spec` attribute "
            "(jaxmcg.designer.register_designer_spec)")
    return SPECS[name]


def check_designer_env(env, config) -> None:
    """Raise ValueError before any compilation if a designer cannot run on `env`, or if the
    incentive range (0, r_max) of `config` is empty."""
    r_max = getattr(config, "r_max", None)
    if r_max is not None and not r_max > 0:
        raise ValueError(f"r_max={r_max!r} gives an empty incentive range (0, r_max); must be > 0")
    designer_spec(env)
    if not hasattr(env.action_space(env.default_params), "n"):
        raise ValueError(f"{env.name} has a non-discrete action space; the designer's agents need "
                         "Discrete actions")


class ObserveDesigner(Wrapper):
    """Adds the designer's inputs to `info` at every step; the state and observations are the inner
    environment's. `designer_obs` is the view of the state the joint action was taken in and
    `designer_next_obs` that of the state after the step (before any auto-reset)."""

    def __init__(self, env):
        super().__init__(env)
        self.spec = designer_spec(env)

    def reset_env(self, key, params):
        return self.inner.reset_env(key, params)

    def get_obs(self, state, params=None):
        return self.inner.get_obs(state, params)

    def step_env(self, key, state, actions, params):
        view = self.spec.view(self.inner, state, params)
        obs, next_state, reward, terminated, info = self.inner.step_env(key, state, actions, params)
        info = dict(info)
        info["designer_obs"] = view
        info["designer_next_obs"] = self.spec.view(self.inner, next_state, params)
        info["designer_features"] = self.spec.features(self.inner, actions, info)
        info["designer_action_type"] = self.spec.action_type(self.inner, actions, reward, info)
        # R^ID = sum of the agents' extrinsic rewards in ER and Cleanup (thesis §3.4)
        info["designer_reward"] = jnp.sum(reward).astype(jnp.float32)
        return obs, next_state, reward, terminated, info

    def designer_example(self, params):
        """Zeros shaped like `(designer_obs, designer_features)` of one step."""
        def one_step(key):
            _, state = self.inner.reset_env(key, params)
            actions = jnp.zeros((self.num_agents,), jnp.int32)
            return self.step_env(key, state, actions, params)[4]

        info = jax.eval_shape(one_step, jax.random.PRNGKey(0))
        return (jnp.zeros(info["designer_obs"].shape, jnp.float32),
                jnp.zeros(info["designer_features"].shape, jnp.float32))


def wrap_designer(env, config=None):
    """`ObserveDesigner(env)`, or `TaxDesign(env)` for a tax economy (GTB, gtb.md §7; with room for
    the (c, h) of `config.designer_lstm` units, MetaGrad's recurrent designer), or `env` if it is
    wrapped already (the algorithms' `wrap_env`)."""
    if isinstance(env, (ObserveDesigner, TaxDesign)):
        return env
    if not is_tax_env(env):
        return ObserveDesigner(env)
    return TaxDesign(env, memory=2 * getattr(config, "designer_lstm", 0))


def paid_by_type(values: jax.Array, action_type: jax.Array) -> jax.Array:
    """Incentive each agent receives, `[..., N]`: node `values[..., K]` of its `action_type[..., N]`."""
    onehot = jax.nn.one_hot(action_type, values.shape[-1], dtype=values.dtype)
    return jnp.sum(onehot * values[..., None, :], axis=-1)


def received_by_type(paid: jax.Array, action_type: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """Mean incentive an agent received per step of each action type, `[N, K]` (0 where unseen)."""
    onehot = jax.nn.one_hot(action_type, k) * valid[..., None, None]
    total = jnp.sum(paid[..., None] * onehot, axis=(0, 1))
    return total / jnp.maximum(jnp.sum(onehot, axis=(0, 1)), 1.0)


# ---- the agents -------------------------------------------------------------------------------


class _OneAgent:
    """`env` seen as a one-agent environment, to initialise one set of shared parameters."""

    num_agents = 1

    def __init__(self, env):
        self.inner, self.name = env, env.name

    @property
    def default_params(self):
        return self.inner.default_params

    def observation_space(self, params=None):
        return self.inner.observation_space(params)

    def action_space(self, params=None):
        return self.inner.action_space(params)


def _fold(x, lead: int):
    """Merge the env and agent axes at `lead`, `lead + 1` into one env axis with one agent."""
    return x.reshape(x.shape[:lead] + (x.shape[lead] * x.shape[lead + 1], 1) + x.shape[lead + 2:])


def _unfold(x, lead: int, n: int):
    return x.reshape(x.shape[:lead] + (x.shape[lead] // n, n) + x.shape[lead + 2:])


def learner_module(name: str, needed_by: str):
    """The registered algorithm `name` as the agents' learner; ValueError if it cannot be one."""
    valid = [a for a in registry.list_algos() if a not in ("metagrad", "dual_rl", "amd", "d3c")]
    if name not in valid:
        raise ValueError(f"learner={name!r} is not a jaxmcg algorithm {needed_by} can train; "
                         f"valid: {', '.join(valid)}")
    module = registry.get_algo(name)
    if hasattr(module, "phases") or hasattr(module, "wrap_env"):
        raise ValueError(f"learner={name!r} has several phases or wraps its environment; "
                         f"{needed_by}'s agents take one update per batch (e.g. pg, ac)")
    return module


def learner_config(name: str, learner_params, needed_by: str):
    """The learner's Config from `(name, value)` pairs, unknown names rejected."""
    module = learner_module(name, needed_by)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    params = dict(learner_params)
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown learner parameter(s) {unknown} for {name}; valid: "
                         f"{', '.join(sorted(fields))}")
    return module.Config(**params)


@dataclasses.dataclass(frozen=True)
class Agents:
    """The incentivized agents: a jaxmcg algorithm `module` (Config `config`). With `shared`, one
    set of parameters acts for every agent (thesis L1129, Cleanup): agent i's episode is fed to the
    learner as one more episode of a single agent, so its losses are means over agents' episodes
    where independent agents' are sums over agents (A8 extended to agents)."""

    module: Any
    config: Any
    shared: bool
    num_agents: int
    part: str | None = None  # the agents' entry of observations and actions (TaxDesign: "agents")

    def init(self, key, env, env_params):
        if self.part is not None:
            env = env.agents_env
        return self.module.init(key, _OneAgent(env) if self.shared else env, env_params, self.config)

    def act(self, lstate, obs, key, evaluate: bool = False):
        if self.part is not None:
            obs = obs[self.part]
        if not self.shared:
            return self.module.act(lstate, obs, key, evaluate=evaluate)
        actions, extras = self.module.act(lstate, jax.tree_util.tree_map(lambda x: _fold(x, 0), obs),
                                          key, evaluate=evaluate)
        unfold = lambda x: _unfold(x, 0, self.num_agents)  # noqa: E731
        return unfold(actions), jax.tree_util.tree_map(unfold, extras)

    def learner_batch(self, batch):
        """`batch` as the learner sees it: the agents' entry of observations and actions, and with
        `shared` each agent's episode as one more episode of a single agent."""
        if self.part is not None:
            batch = batch.replace(obs=batch.obs[self.part], next_obs=batch.next_obs[self.part],
                                  action=batch.action[self.part])
        if not self.shared:
            return batch
        n = self.num_agents
        per_env = lambda x: jnp.repeat(x, n, axis=1)  # noqa: E731
        return batch.replace(
            obs=jax.tree_util.tree_map(lambda x: _fold(x, 1), batch.obs),
            next_obs=jax.tree_util.tree_map(lambda x: _fold(x, 1), batch.next_obs),
            action=_fold(batch.action, 1), reward=_fold(batch.reward, 1),
            valid=per_env(batch.valid), terminated=per_env(batch.terminated),
            truncated=per_env(batch.truncated),
            extras=jax.tree_util.tree_map(lambda x: _fold(x, 1), batch.extras), info={})

    def update(self, lstate, batch):
        """The learner's update on `batch` (rewards already incentivized), differentiable in
        `batch.reward`. `ac`-style updates stop gradients at the TD error (critic.td_error),
        including its reward term; their actor loss gets delta + r - sg(r), the same value with
        d delta / d r = 1, which is exactly the dependence the stop-gradient hides."""
        batch = self.learner_batch(batch)
        params = inspect.signature(self.module.update).parameters
        if "actor_loss_fn" in params:
            base = params["actor_loss_fn"].default

            def actor_loss(p, s, b, delta, eps):
                return base(p, s, b, delta + b.reward - jax.lax.stop_gradient(b.reward), eps)

            return self.module.update(lstate, batch, actor_loss_fn=actor_loss)
        return self.module.update(lstate, batch)

    def log_prob(self, lstate, obs, actions, mixed: bool = True) -> jax.Array:
        """log pi(a^i|o^i) of every agent, `[..., N]`, under the learner's policy (eps-mixed with
        the learner's current floor if `mixed`, spec A3): the learner's own `policy_log_probs`
        where it has one (ppo_shared's masked, floored policy, gtb.md §8.2)."""
        eps = self.module.epsilon(lstate) if mixed and hasattr(self.module, "epsilon") else 0.0
        if self.part is not None:
            obs, actions = obs[self.part], actions[self.part]
        if hasattr(self.module, "policy_log_probs"):  # never shared (make_agents)
            return D.log_prob_of(self.module.policy_log_probs(lstate, lstate.params, obs, eps),
                                 actions)
        if not self.shared:
            return D.log_prob_of(log_probs(lstate.policy, lstate.params, obs, eps), actions)
        lead = actions.ndim - 2
        obs = jax.tree_util.tree_map(lambda x: _fold(x, lead), obs)
        lp = D.log_prob_of(log_probs(lstate.policy, lstate.params, obs, eps), _fold(actions, lead))
        return _unfold(lp, lead, self.num_agents)


def make_agents(config, env, needed_by: str) -> Agents:
    """`Agents` from a designer Config's `learner`, `learner_params`, `share_parameters`."""
    module = learner_module(config.learner, needed_by)
    lconf = learner_config(config.learner, config.learner_params, needed_by)
    if hasattr(lconf, "validate"):
        lconf.validate()
    if config.share_parameters and hasattr(module, "policy_log_probs"):
        raise ValueError(f"share_parameters=True is invalid with learner={config.learner!r}, which "
                         "shares one policy already; valid: False")
    part = "agents" if isinstance(env, TaxDesign) else None
    return Agents(module, lconf, bool(config.share_parameters), env.num_agents, part)


# ---- the designer's networks and critic (shared by MetaGrad, dual-RL and AMD) ---------------


def init_designer_nets(key, env: ObserveDesigner, env_params, config, out: int,
                       use_output_bias: bool, with_critic: bool):
    """`(module, params, critic, critic_params)`: f(s, a) with `out` outputs from the designer's
    view and joint-action features, which join at the input (MLP, ER) or after the first dense
    layer (conv, Cleanup), as the thesis' ID networks (§3.4); the critic V(s) has the same torso
    and `config.critic_hidden` (None if not `with_critic`)."""
    from jaxmcg.networks import network, resolve_network

    obs, feats = env.designer_example(env_params)
    kind = resolve_network(config.network, obs)
    k_net, k_critic = jax.random.split(key)
    module = network(kind, config.hidden, out, use_output_bias=use_output_bias)
    params = module.init(k_net, obs, feats)["params"]
    critic = critic_params = None
    if with_critic:
        critic = network(kind, config.critic_hidden, 1)
        critic_params = critic.init(k_critic, obs)["params"]
    return module, params, critic, critic_params


def designer_values(state, params, obs) -> jax.Array:
    """V(s) of the designer's critic `state.critic`, `[...]`."""
    return state.critic.apply({"params": params}, obs)[..., 0]


def designer_critic_values(state, params, info):
    """`(V(s_t), V(s'_t))` `[T, E]` on the views `info["designer_obs"]`, `info["designer_next_obs"]`;
    a recurrent critic (`ppo_shared.RecurrentNet`) runs over the episode and takes s'_t as one more
    step from the carry after s_t."""
    if getattr(state.critic, "units", 0):
        v, v_next = state.critic.apply({"params": params}, info["designer_obs"],
                                       info["designer_next_obs"])
        return v[..., 0], v_next[..., 0]
    return (designer_values(state, params, info["designer_obs"]),
            designer_values(state, params, info["designer_next_obs"]))


def designer_advantages(state, batch, rewards) -> jax.Array:
    """`[T, E]`: the discounted return of `rewards` (`config.advantage == "return"`) or GAE from
    the designer's critic (standard (gamma lambda)^(l - t), A15); the bootstrap stops at
    termination."""
    c, info = state.config, batch.info
    if c.advantage == "return":
        return discounted_returns(rewards, batch.valid, c.gamma)
    v, v_next = designer_critic_values(state, state.critic_params, info)
    not_done = 1.0 - batch.terminated.astype(rewards.dtype)
    return jax.lax.stop_gradient(gae(rewards, v, v_next * not_done, batch.valid, c.gamma,
                                     c.gae_lambda))


def designer_critic_step(state, batch, rewards):
    """TD(0) Adam step (`config.lr_critic`) of the designer's critic on `rewards` `[T, E]` against
    its target net, then theta'_v <- c_v theta_v + (1 - c_v) theta'_v (c_v = `config.critic_tau`,
    §3.6). Returns `(state, loss)`."""
    c, info = state.config, batch.info
    not_done = 1.0 - batch.terminated.astype(rewards.dtype)
    target = jax.lax.stop_gradient(rewards + c.gamma * not_done * designer_critic_values(
        state, state.target_params, info)[1])

    def loss(p):
        err = target - designer_critic_values(state, p, info)[0]
        return jnp.sum(jnp.square(err) * batch.valid) / jnp.maximum(jnp.sum(batch.valid), 1.0)

    value, grads = jax.value_and_grad(loss)(state.critic_params)
    upd, opt_state = optax.adam(c.lr_critic).update(grads, state.critic_opt_state)
    params = optax.apply_updates(state.critic_params, upd)
    target_params = jax.tree_util.tree_map(lambda t, o: c.critic_tau * o + (1 - c.critic_tau) * t,
                                           state.target_params, params)
    return state.replace(critic_params=params, critic_opt_state=opt_state,
                         target_params=target_params), value
