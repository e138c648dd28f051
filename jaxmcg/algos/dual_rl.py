"""dual-RL: the incentive designer as an ordinary RL agent on the agents' time scale (thesis ch. 6
baseline, "AI Economist"; spec/thesis.md §3.5, Tables C.1-C.3).

At every step the ID observes (s_t, a_t) and picks one incentive value per action type k (the
nodes MetaGrad's mu_eta outputs); agent i receives the node of its own action type:

* `action="discrete"` (dual-RL (d)): a categorical over |S_r|^K joint choices, decoded base |S_r|
  over the K types [CODE], node k = S_r[digit_k];
* `action="continuous"` (dual-RL (c)): u ~ N(f_eta(s, a), I), node k = r_max sigmoid(u_k).

The ID's reward is R^ID_t minus the incentives it pays (§3.5: "the cost is subtracted"); it learns
by REINFORCE on the discounted return (ER) or with GAE from a critic (Cleanup, lambda = 0.99;
Table C.3's PPO clip is inactive at one epoch per batch, §3.2). The agents (any single-update jaxmcg
algorithm) learn from r^i + u on the same batch.

The ID acts after the agents within a step, on the step's `info`, so its choice is drawn from noise
sampled in `act` (stored in `extras`) and the parameters of the rollout: Gumbel-max for the
categorical, u = f + z for the Gaussian. `update` recomputes the same sample, which is exact
because the ID's parameters change only after the rollout.

`action="factored"`: the "AI Economist" planner of Gather-Trade-Build (gtb.md §7.2, §8.3; through
`jaxmcg.tax_design.TaxDesign`). Every step it picks, per tax bracket, one of 22 choices (NO-OP, which
keeps the rate in force, or a rate 0, 0.05, ..., 1) from the planner view of the current state; the
7 heads' log-probabilities add up. The §4 mask leaves only NO-OP where no period starts (those steps
carry no gradient: their log-probability is 0 whatever eta) and, where one starts, NO-OP and the
rates up to the annealing cap min(1, 0.1 + 0.9 e / 8000) after e completed training episodes (one
per iteration and environment copy, G21). The floored policy (eps 0.5 -> 0.05 over 5k, Table C.4)
spreads eps over the valid choices and the applied rate is clipped to the cap (G13 `cap_mode="clip"`;
"mask_only": eps over all 22 and no clip, [F]). Reward: ΔSW per step (G6; or `planner_reward=
"sum_prod_eq"`, 0.01 prod eq), GAE from the planner's critic (preset: 0.99, 0.98), the PPO loss
averaged over the samples ([MG] `ppo_agent.py`; one epoch, so the clip is inactive) minus
c_entropy x the sum of the 7 heads' entropies (G15). The agents (ppo_shared) learn from their env
rewards on the same batch.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxmcg import distributions as D
from jaxmcg import tax_design
from jaxmcg.algos.ppo_shared import clipped_adam, floored_log_probs
from jaxmcg.designer import (
    check_designer_env,
    designer_advantages,
    designer_critic_step,
    init_designer_nets,
    make_agents,
    paid_by_type,
    received_by_type,
    wrap_designer,
)
from jaxmcg.losses import clipped_surrogate, masked_mean, time_sum_env_mean
from jaxmcg.networks import NETWORKS

ACTIONS = ("discrete", "continuous", "factored")
CAP_MODES = ("clip", "mask_only")
PLANNER_REWARDS = ("delta_sw", "sum_prod_eq")


@dataclasses.dataclass(frozen=True)
class Config:
    action: str = "discrete"  # "discrete" = dual-RL (d), "continuous" = dual-RL (c)
    # agents: Table C.1 dual-RL (d) ER(5,2): PG, entropy 0.386, lr 3.41e-4, h1 128, h2 64,
    # no exploration floor (as MetaGrad's ER agents, A26)
    learner: str = "pg"
    learner_params: tuple = (("hidden", (128, 64)), ("lr", 3.41e-4), ("entropy_coef", 0.386),
                             ("eps_start", 0.0), ("eps_end", 0.0))
    share_parameters: bool = False  # Cleanup: shared agents (thesis L1129)
    values: tuple[float, ...] = (0.0, 1.1, 2.0)  # S_r of dual-RL (d), one of the sets of §3.5
    r_max: float = 2.0  # dual-RL (c): incentives in (0, r_max) (§3.5)
    network: str = "auto"
    hidden: tuple[int, ...] = (128, 64)  # (d): the agents' architecture; (c): d1, d2 (Table C.1)
    lr: float = 2.47e-3  # alpha_ID, Adam, Table C.1 dual-RL (d) (c: 1.17e-4)
    entropy_coef: float = 0.488  # designer c_entropy, Table C.1 (d); (c) has none
    advantage: str = "return"  # "return" (ER) or "gae" (Cleanup, Table C.3)
    gae_lambda: float = 0.99  # Table C.3 / thesis L2007
    critic_hidden: tuple[int, ...] = (64, 64)
    lr_critic: float = 1.72e-5  # alpha_v,ID, Table C.3 dual-RL (c)
    critic_tau: float = 0.846  # designer c_v, Table C.3 dual-RL (c)
    gamma: float = 0.99  # §3.6
    grad_clip: float | None = None  # global norm before Adam (GTB: 10, gtb.md §8.3; [MG] per tensor)
    # action="factored" (GTB planner, gtb.md §7.2, §8.3-8.5) only:
    eps_start: float = 0.5  # designer exploration floor 0.5 -> 0.05 over 5k episodes (Table C.4)
    eps_end: float = 0.05
    eps_div: float = 5000.0
    cap_start: float = 0.1  # annealing cap min(1, 0.1 + 0.9 e / 8000) [T L1981]
    cap_episodes: float = 8000.0
    cap_mode: str = "clip"  # G13: eps over valid choices and applied rates clipped; "mask_only" [F]
    factored_entropy: bool = True  # G15: c_entropy x sum of the heads' entropies; False: none [MG]
    planner_reward: str = "delta_sw"  # G6: ΔSW per step [F]; "sum_prod_eq": 0.01 prod eq
    ppo_clip: float | None = None  # designer PPO epsilon (Table C.4: 0.0216); inactive at one epoch

    def validate(self) -> None:
        for name, value, valid in (("action", self.action, ACTIONS),
                                   ("network", self.network, ("auto",) + NETWORKS),
                                   ("advantage", self.advantage, ("return", "gae")),
                                   ("cap_mode", self.cap_mode, CAP_MODES),
                                   ("planner_reward", self.planner_reward, PLANNER_REWARDS)):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is invalid; valid: {', '.join(map(repr, valid))}")
        for name in ("eps_start", "eps_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be in [0, 1]")
        if not 0.0 <= self.cap_start <= 1.0:
            raise ValueError(f"cap_start={self.cap_start} is invalid: must be in [0, 1]")
        for name in ("eps_div", "cap_episodes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be > 0")
        for name in ("grad_clip", "ppo_clip"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be > 0 or None")
        if self.action == "continuous" and not self.r_max > 0:
            raise ValueError(f"r_max={self.r_max!r} gives an empty incentive range (0, r_max); "
                             "must be > 0")
        if self.action == "discrete" and (len(self.values) < 2 or min(self.values) < 0):
            raise ValueError(f"values={self.values!r} is invalid: the discrete incentive set S_r "
                             "needs at least 2 values, all >= 0 (e.g. (0.0, 1.1))")

    def __post_init__(self):  # JSON round trips turn tuples into lists; keep them hashable
        object.__setattr__(self, "learner_params", tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in self.learner_params))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))


@struct.dataclass
class State:
    learner_state: object
    eta: dict  # the ID's policy
    opt_state: optax.OptState
    critic_params: dict | None
    target_params: dict | None
    critic_opt_state: optax.OptState | None
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    agents: object = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)
    num_types: int = struct.field(pytree_node=False)
    critic: object = struct.field(pytree_node=False, default=None)
    mechanism: str = struct.field(pytree_node=False, default="incentive")  # or "tax" (GTB)


wrap_env = wrap_designer


def check_env(env, env_params, config: Config) -> None:
    if tax_design.is_tax_env(env):
        config.validate()
        if config.action != "factored":
            raise ValueError(f"action={config.action!r} is invalid on {env.name}: its planner sets "
                             "7 tax rates; valid: 'factored' (gtb.md §7.2)")
        tax_design.check_tax_env(env, config, "dual_rl")
        make_agents(config, wrap_env(env, config), "dual_rl")
        return
    if config.action == "factored":
        raise ValueError(f"action='factored' sets the tax rates of a tax economy (GTB); valid on "
                         f"{env.name}: 'discrete', 'continuous'")
    check_designer_env(env, config if config.action == "continuous" else None)
    make_agents(config, env, "dual_rl")


def num_outputs(config: Config, num_types: int) -> int:
    """|S_r|^K logits for (d), K means for (c)."""
    return len(config.values) ** num_types if config.action == "discrete" else num_types


def decode(choice, values, num_types: int) -> jax.Array:
    """Node values `[..., K]` of joint choices `[...]`: base-|S_r| digits, type 0 least significant."""
    s = len(values)
    digits = (choice[..., None] // (s ** np.arange(num_types))) % s
    return jnp.asarray(values, jnp.float32)[digits]


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    tax = tax_design.is_tax_env(env)
    if tax or config.action == "factored":
        check_env(env, env_params, config)
    env = wrap_env(env, config)
    agents = make_agents(config, env, "dual_rl")
    k_agents, k_nets = jax.random.split(key)
    if tax:  # 7 heads of 22 choices (gtb.md §8.3)
        k = tax_design.NUM_BRACKETS
        policy, eta, critic, critic_params = tax_design.init_planner_nets(
            k_nets, env, env_params, config, k * tax_design.NUM_CHOICES, True,
            config.advantage == "gae")
    else:
        k = env.spec.num_types
        policy, eta, critic, critic_params = init_designer_nets(
            k_nets, env, env_params, config, num_outputs(config, k), True,
            config.advantage == "gae")
    return State(
        learner_state=agents.init(k_agents, env, env_params), eta=eta,
        opt_state=clipped_adam(config.lr, config.grad_clip).init(eta), critic_params=critic_params,
        target_params=critic_params,
        critic_opt_state=None if critic is None else optax.adam(config.lr_critic).init(critic_params),
        iteration=jnp.zeros((), jnp.int32), config=config, agents=agents, policy=policy,
        num_types=k, critic=critic, mechanism="tax" if tax else "incentive")


def act(state: State, obs, key, evaluate: bool = False):
    """The agents' actions; `extras["designer_noise"]` is the ID's noise for this step (Gumbel
    `[E, |S_r|^K]` or standard normal `[E, K]`). The ID samples in evaluation too (A19). Tax
    design: `{"agents": actions, "tax_rates": rates [E, 7]}` with the planner's choices `[E, 7]` in
    `extras["tax_choice"]`, sampled with the floor off in evaluation ([MG]: eps = 0, sampled)."""
    k_agents, k_noise = jax.random.split(key)
    actions, extras = state.agents.act(state.learner_state, obs, k_agents, evaluate=evaluate)
    if state.mechanism == "tax":
        lp = planner_log_probs(state, state.eta, obs, evaluate)
        choice = D.sample(k_noise, lp)
        rates = tax_design.apply_choice(choice, obs["rates"], rate_cap(state),
                                        state.config.cap_mode == "clip")
        return {"agents": actions, "tax_rates": rates}, {"learner": extras, "tax_choice": choice}
    shape = (actions.shape[0], num_outputs(state.config, state.num_types))
    noise = (jax.random.gumbel(k_noise, shape) if state.config.action == "discrete"
             else jax.random.normal(k_noise, shape))
    return actions, {"learner": extras, "designer_noise": noise}


def designer_action(state: State, eta, batch, sample_eta=None):
    """`(nodes [T, E, K], log pi_eta(choice) [T, E], entropy [T, E])` of the choices drawn in the
    rollout with `sample_eta` (default: `state.eta`, the parameters of the rollout), from the noise
    stored in `extras`. Entropy is 0 for the Gaussian: (c) has no entropy bonus (Table C.1)."""
    info, noise = batch.info, batch.extras["designer_noise"]
    apply = lambda p: state.policy.apply({"params": p}, info["designer_obs"],  # noqa: E731
                                         info["designer_features"])
    out = apply(eta)
    drawn = jax.lax.stop_gradient(apply(state.eta if sample_eta is None else sample_eta))
    if state.config.action == "discrete":
        logp = jax.nn.log_softmax(out, axis=-1)
        choice = jnp.argmax(jax.nn.log_softmax(drawn, axis=-1) + noise, axis=-1)  # Gumbel-max
        nodes = decode(choice, state.config.values, state.num_types)
        return nodes, D.log_prob_of(logp, choice), D.entropy(logp)
    u = drawn + noise  # u ~ N(f(s, a), I)
    logp = jnp.sum(-0.5 * jnp.square(u - out) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    return state.config.r_max * jax.nn.sigmoid(u), logp, jnp.zeros_like(logp)


def rate_cap(state: State) -> jax.Array:
    """The annealing cap after `state.iteration` completed training episodes per environment copy
    (G21: one per iteration; evaluation episodes do not count)."""
    c = state.config
    return tax_design.rate_cap(state.iteration, c.cap_start, c.cap_episodes)


def planner_epsilon(state: State, evaluate: bool = False) -> jax.Array:
    """The planner's exploration floor: linear eps_start -> eps_end over eps_div iterations, 0 in
    evaluation (Table C.4, §8.4)."""
    c = state.config
    eps = D.linear_epsilon(state.iteration, c.eps_start, c.eps_end, c.eps_div)
    return jnp.where(evaluate, 0.0, eps)


def planner_log_probs(state: State, eta, obs, evaluate: bool = False) -> jax.Array:
    """log pi_eta of each head's 22 choices, `[..., 7, 22]`: the §4 mask at the current cap, then
    the floor (over the valid choices with `cap_mode="clip"`, G13)."""
    logits = state.policy.apply({"params": eta}, obs["designer"])
    logits = logits.reshape(*logits.shape[:-1], tax_design.NUM_BRACKETS, tax_design.NUM_CHOICES)
    mask = tax_design.planner_mask(obs["period_start"], rate_cap(state))
    return floored_log_probs(logits, mask, planner_epsilon(state, evaluate),
                             state.config.cap_mode == "clip")


def planner_log_prob(state: State, eta, batch) -> jax.Array:
    """log pi_eta of the choices of `batch`, the 7 heads' log-probabilities summed, `[T, E]`."""
    lp = planner_log_probs(state, eta, batch.obs)
    return jnp.sum(D.log_prob_of(lp, batch.extras["tax_choice"]), axis=-1), lp


def planner_loss(eta, state: State, batch, advantages, old_log_prob=None) -> jax.Array:
    """-mean min(rho A, clip(rho, 1 +- ppo_clip) A) - c_entropy mean sum_heads H over the valid
    samples, rho = pi_eta(choice) / pi_old(choice) with the heads' log-probabilities summed ([MG]
    `ppo_agent.py`, G15). pi_old defaults to sg(pi_eta): at one epoch per batch rho = 1, so the
    clip is inactive and the gradient is the policy gradient's."""
    c = state.config
    logp, lp = planner_log_prob(state, eta, batch)
    old = jax.lax.stop_gradient(logp) if old_log_prob is None else old_log_prob
    surrogate = clipped_surrogate(jnp.exp(logp - old), advantages, c.ppo_clip)
    ent = jnp.sum(D.entropy(lp), axis=-1) if c.factored_entropy else jnp.zeros_like(logp)
    return -masked_mean(surrogate, batch.valid) - c.entropy_coef * masked_mean(ent, batch.valid)


def planner_rewards(state: State, batch) -> jax.Array:
    """The planner's reward per step `[T, E]`: ΔSW (G6) or 0.01 prod eq (`planner_reward`)."""
    key = "planner_reward" if state.config.planner_reward == "delta_sw" else "designer_reward"
    return batch.info[key]


def _tax_update(state: State, batch):
    """The planner's PPO step (critic first, on the same batch) and the agents' step on their env
    rewards."""
    c = state.config
    rewards = planner_rewards(state, batch)
    adv = designer_advantages(state, batch, rewards)
    metrics = {}
    if c.advantage == "gae":
        state, metrics["dual_rl/critic_loss"] = designer_critic_step(state, batch, rewards)
    loss, grads = jax.value_and_grad(planner_loss)(state.eta, state, batch, adv)
    upd, opt_state = clipped_adam(c.lr, c.grad_clip).update(grads, state.opt_state, state.eta)
    lstate, lmetrics = state.agents.update(state.learner_state,
                                           batch.replace(extras=batch.extras["learner"]))
    metrics.update({"dual_rl/loss": loss, "dual_rl/cap": rate_cap(state),
                    "dual_rl/epsilon": planner_epsilon(state),
                    "dual_rl/rates": tax_design.mean_rates(batch), **lmetrics})
    state = state.replace(eta=optax.apply_updates(state.eta, upd), opt_state=opt_state,
                          learner_state=lstate, iteration=state.iteration + 1)
    return state, metrics


def _paid(state: State, batch) -> jax.Array:
    nodes, _, _ = designer_action(state, state.eta, batch)
    return paid_by_type(nodes, batch.info["designer_action_type"])  # [T, E, N]


def designer_rewards(state: State, batch, paid) -> jax.Array:
    """R^ID_t minus the incentives paid at t, `[T, E]` (§3.5)."""
    return batch.info["designer_reward"] - jnp.sum(paid, axis=-1)


def designer_loss(eta, state: State, batch, advantages) -> jax.Array:
    """-sum_t log pi_ID(choice_t) A_t - c_ent H_t, mean over environments."""
    _, logp, ent = designer_action(state, eta, batch)
    return -time_sum_env_mean(logp * advantages + state.config.entropy_coef * ent, batch.valid)


def update(state: State, batch):
    """The ID's policy-gradient step and the agents' step on the same batch."""
    if state.mechanism == "tax":
        return _tax_update(state, batch)
    c = state.config
    paid = jax.lax.stop_gradient(_paid(state, batch))
    rewards = designer_rewards(state, batch, paid)
    metrics = {}
    if c.advantage == "gae":
        adv = designer_advantages(state, batch, rewards)
        state, metrics["dual_rl/critic_loss"] = designer_critic_step(state, batch, rewards)
    else:
        adv = designer_advantages(state, batch, rewards)
    loss, grads = jax.value_and_grad(designer_loss)(state.eta, state, batch, adv)
    upd, opt_state = clipped_adam(c.lr, c.grad_clip).update(grads, state.opt_state, state.eta)
    agents_batch = batch.replace(reward=batch.reward + paid, extras=batch.extras["learner"])
    lstate, lmetrics = state.agents.update(state.learner_state, agents_batch)
    state = state.replace(eta=optax.apply_updates(state.eta, upd), opt_state=opt_state,
                          learner_state=lstate, iteration=state.iteration + 1)
    paid_ep = jnp.mean(jnp.sum(paid * batch.valid[..., None], axis=0), axis=0)
    return state, {"dual_rl/loss": loss, "dual_rl/paid_per_episode": paid_ep, **metrics, **lmetrics}


def eval_metrics(state: State, batch) -> dict:
    """R^ID minus the incentives paid (as the thesis reports), per-agent incentives per episode
    and per step of each action type (`[N, K]`). Tax design: the planner's return (Σ ΔSW, or
    0.01 Σ prod eq with `planner_reward="sum_prod_eq"`), the GTB statistics of G5 (`gtb/*`, among
    them the thesis objective Σ prod eq) and the rates and taxes of §9.3 (`tax/*`)."""
    valid = batch.valid
    if state.mechanism == "tax":
        return tax_design.tax_metrics(state, batch, planner_rewards(state, batch))
    paid = _paid(state, batch) * valid[..., None]
    return {
        "designer_return": jnp.mean(jnp.sum(designer_rewards(state, batch, paid) * valid, axis=0)),
        "dual_rl/received": jnp.mean(jnp.sum(paid, axis=0), axis=0),
        "dual_rl/received_by_type": received_by_type(paid, batch.info["designer_action_type"],
                                                     valid, state.num_types),
    }
