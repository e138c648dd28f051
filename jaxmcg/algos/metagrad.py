"""MetaGrad: meta-gradient incentive design with pipelining (thesis ch. 6, Algorithm 3; spec/thesis.md
§3.1-3.4, A12, A13, A26, A28).

A central incentive designer (ID) pays agent i the node u[k^i_t] of its incentive function
u = mu_eta(s_t, a_t) = r_max * sigmoid(f_eta(s_t, a_t)), one node per action type k (ER: the three
moves; Cleanup: clean / apple / else). The agents are any single-update jaxmcg algorithm (`learner`:
PG on Escape Room, actor-critic with parameter sharing on Cleanup) learning from r^i + u[k^i]. The
ID differentiates its objective on the next trajectory through the agents' update:

    theta-hat(eta) = update(theta; tau, eta)                               (Eq 6.3, M = 1)
    L(eta) = -E_tau-hat[ A_t sum_i log pi_{theta-hat^i(eta)}(a-hat^i_t|o-hat^i_t) ]   (Eq 6.4, A12)
    psi(eta) = sum_t gamma^t sum_i u_i(eta) on tau, own Adam                        (A13)

A_t is the Monte-Carlo return of R^ID on tau-hat ("return", the ER code) or GAE from an ID critic
("gae", lambda = 0.99, the Cleanup code); `ppo_clip` gives the clipped ratio of Eq 6.5 for
`outer_epochs` > 1 (with one epoch the ratio is 1 and the clip inactive, as the code notes).

Pipelining (Algorithm 3, line 8): one rollout per iteration. `update(state, batch)` first takes the
ID step with (theta, tau) stored in `state` and tau-hat = `batch`, then the agents' step on `batch`
with the new eta, and stores (theta, batch) for the next call.

Tax design on Gather-Trade-Build (gtb.md §7.1, §8.3; `mechanism == "tax"`, chosen by the
environment through `jaxmcg.tax_design.TaxDesign`): the mechanism is the 7 marginal rates
tau = sigmoid(f_eta(planner view of the current state)), read by the environment at each period's
first step; there is no incentive and no cost psi. `incentivized` recomputes the rewards of tau with
the rates eta gives at each period's first step (`envs.gtb.reward_from_rates`, §11.6, G3), and
theta-hat is the agents' PPO step (ppo_shared) from their stored Adam moments, with [MG]'s sg(g)^2
in the second moment (`replica_second_moment`). R^ID_t = 0.01 prod_t eq_t (§5.3). With curriculum
(`designer_lstm`, §8.3) an LSTM follows the FCs of f_eta and of the ID critic: `act` takes one step
from the (c, h) that TaxDesign carries, and the replica reruns it over the stored episode.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import tax_design
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
from jaxmcg.losses import clipped_surrogate, time_sum_env_mean
from jaxmcg.networks import NETWORKS
from jaxmcg.rollout import episode_rollout

ADVANTAGES = ("return", "gae")
COSTS = ("paid", "nodes", "none")
SECOND_MOMENTS = ("stop_gradient", "differentiate")


@dataclasses.dataclass(frozen=True)
class Config:
    # agents: a registered single-update algorithm; Table C.1 MetaGrad ER(5,2): PG, entropy
    # 0.0166, lr 9.56e-5, h1 = h2 = 64, no exploration floor (A26)
    learner: str = "pg"
    learner_params: tuple = (("hidden", (64, 64)), ("lr", 9.56e-5), ("entropy_coef", 0.0166),
                             ("eps_start", 0.0), ("eps_end", 0.0))
    share_parameters: bool = False  # Cleanup agents share parameters (thesis L1129)
    network: str = "auto"  # incentive function: "mlp" (ER), "conv" (Cleanup), "auto" by the view
    hidden: tuple[int, ...] = (64, 32)  # d1, d2, Tables C.1-C.2 (Cleanup: h1 = h2 = 64, Table C.3)
    r_max: float = 2.0  # u in (0, 2): sigmoid x 2 (§3.4, A28)
    lr: float = 7.93e-4  # alpha_ID, Adam, Tables C.1-C.2
    advantage: str = "return"  # "return": REINFORCE on G^ID (ER code, A12); "gae": ID critic
    # Not in the thesis (one episode per update has no batch): subtract from G^ID_t its mean over
    # the batch's episodes at the same t. Without it the outer loss keeps raising the nodes of
    # actions already taken once the agents agree (G > 0 everywhere), and the separate Adam
    # steps of psi cannot bring the lever incentive down to 1 + eps in a short run.
    batch_baseline: bool = False
    gae_lambda: float = 0.99  # [CODE] Cleanup MetaGrad designer (§3.6)
    critic_hidden: tuple[int, ...] = (64, 64)  # ID critic: the ID's torso (§3.4)
    lr_critic: float = 2.4e-5  # alpha_v,ID, Table C.3
    critic_tau: float = 0.114  # designer c_v, Table C.3 (target-net rate)
    ppo_clip: float | None = None  # Eq 6.5 epsilon (Table C.3: 0.0172); None: plain meta-PG
    outer_epochs: int = 1  # eta steps per iteration on the same (tau, tau-hat)
    cost: str = "paid"  # A13: "paid" = sum_i u_i actually paid; "nodes" = sum_k sigma_k (ER
    # code, unscaled output nodes); "none" (Cleanup code)
    lr_cost: float = 6.03e-5  # alpha_cost, separate Adam, Tables C.1-C.2
    gamma: float = 0.99  # §3.6
    outer_logprob_mixed: bool = True  # score tau-hat with the eps-mixed policy it was sampled from (A3)
    # GTB (Adam agents, ppo_shared): Adam's v in theta-hat takes sg(g)^2 as [MG]'s replica (gtb.md
    # §8.3), or "differentiate" through g^2 as optax.adam would (the exact derivative)
    replica_second_moment: str = "stop_gradient"
    # GTB with curriculum (§8.3): an LSTM of this many units after the FCs of the incentive function
    # and of the ID critic, run over the episode's steps (the designer's (c, h) rides in TaxDesign's
    # state while acting); 0: feed-forward, as without curriculum
    designer_lstm: int = 0

    def __post_init__(self):  # JSON round trips turn the pairs into lists; keep them hashable
        object.__setattr__(self, "learner_params", tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in self.learner_params))

    def validate(self) -> None:
        for name, value, valid in (("network", self.network, ("auto",) + NETWORKS),
                                   ("advantage", self.advantage, ADVANTAGES),
                                   ("cost", self.cost, COSTS),
                                   ("replica_second_moment", self.replica_second_moment,
                                    SECOND_MOMENTS)):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is invalid; valid: {', '.join(map(repr, valid))}")
        if not self.r_max > 0:
            raise ValueError(f"r_max={self.r_max!r} gives an empty incentive range (0, r_max); "
                             "must be > 0")
        if not isinstance(self.outer_epochs, int) or self.outer_epochs < 1:
            raise ValueError(f"outer_epochs={self.outer_epochs!r} is invalid: must be an int >= 1")
        if self.ppo_clip is not None and not self.ppo_clip > 0:
            raise ValueError(f"ppo_clip={self.ppo_clip!r} is invalid: must be > 0 or None")
        if not 0.0 <= self.critic_tau <= 1.0:
            raise ValueError(f"critic_tau={self.critic_tau} is invalid: must be in [0, 1]")
        if isinstance(self.designer_lstm, bool) or not isinstance(self.designer_lstm, int) or (
                self.designer_lstm < 0):
            raise ValueError(f"designer_lstm={self.designer_lstm!r} is invalid: must be an integer "
                             ">= 0 (0: feed-forward)")


@struct.dataclass
class State:
    learner_state: object  # theta (and whatever the learner carries)
    prev_learner_state: object  # theta before the last agents' step
    prev_batch: object  # tau of the last agents' step (pipelining)
    has_prev: jax.Array
    eta: dict
    eta_opt_state: optax.OptState
    cost_opt_state: optax.OptState
    critic_params: dict | None
    target_params: dict | None
    critic_opt_state: optax.OptState | None
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    agents: object = struct.field(pytree_node=False)
    incentive: object = struct.field(pytree_node=False)
    critic: object = struct.field(pytree_node=False, default=None)
    env_params: object = None  # tax design: the economy's parameters (its reward path, §11.6)
    mechanism: str = struct.field(pytree_node=False, default="incentive")  # or "tax" (GTB)
    env: object = struct.field(pytree_node=False, default=None)  # tax design: the TaxDesign


wrap_env = wrap_designer


def check_env(env, env_params, config: Config) -> None:
    """A designer observation for `env`, a non-empty incentive range and a valid learner; on a tax
    economy (GTB) the planner view, ppo_shared agents and no incentive cost."""
    if tax_design.is_tax_env(env):
        config.validate()
        tax_design.check_tax_env(env, config, "metagrad")
        if config.cost != "none":
            raise ValueError(f"cost={config.cost!r} is invalid for tax rates: MetaGrad's tax "
                             "designer pays no incentives and has no cost psi (gtb.md §7.1); "
                             "valid: 'none'")
        make_agents(config, wrap_env(env, config), "metagrad")
        return
    if config.designer_lstm:
        raise ValueError(f"designer_lstm={config.designer_lstm} is for tax design (GTB with "
                         f"curriculum, gtb.md §8.3); {env.name} is not a tax economy (valid: 0)")
    check_designer_env(env, config)
    make_agents(config, env, "metagrad")


def init(key, env, env_params, config: Config, *, n_envs: int = 1, num_steps: int | None = None):
    """`n_envs` and `num_steps` size the trajectory carried between updates (pipelining)."""
    config.validate()
    if config.batch_baseline and n_envs < 2:  # the baseline would equal the return: A = 0
        raise ValueError(f"batch_baseline=True needs n_envs >= 2 (got n_envs={n_envs}): with one "
                         "episode the baseline equals the return and the meta-gradient is 0; "
                         "valid with n_envs=1: batch_baseline=False")
    tax = tax_design.is_tax_env(env)
    if tax:
        check_env(env, env_params, config)
    env = wrap_env(env, config)
    agents = make_agents(config, env, "metagrad")
    k_agents, k_nets = jax.random.split(key)
    if tax:  # 7 rates, no output bias (gtb.md §8.3)
        incentive, eta, critic, critic_params = tax_design.init_planner_nets(
            k_nets, env, env_params, config, tax_design.NUM_BRACKETS, False,
            config.advantage == "gae")
    else:
        incentive, eta, critic, critic_params = init_designer_nets(
            k_nets, env, env_params, config, env.spec.num_types, False,  # no output bias (A23)
            config.advantage == "gae")
    lstate = agents.init(k_agents, env, env_params)
    critic_opt_state = None if critic is None else optax.adam(config.lr_critic).init(critic_params)
    state = State(
        learner_state=lstate, prev_learner_state=lstate, prev_batch=None,
        has_prev=jnp.zeros((), bool), eta=eta, eta_opt_state=optax.adam(config.lr).init(eta),
        cost_opt_state=optax.adam(config.lr_cost).init(eta), critic_params=critic_params,
        target_params=critic_params, critic_opt_state=critic_opt_state,
        iteration=jnp.zeros((), jnp.int32), config=config, agents=agents, incentive=incentive,
        critic=critic)
    if tax:
        state = state.replace(env_params=env_params, mechanism="tax", env=env)
    return state.replace(prev_batch=empty_batch(env, env_params, state, n_envs, num_steps))


def empty_batch(env, env_params, state, n_envs: int, num_steps: int | None):
    """Zeros shaped like one rollout's trajectory (the carried batch before the first update)."""
    steps = num_steps or env.horizon(env_params)
    template = jax.eval_shape(
        lambda k: episode_rollout(env, env_params, lambda o, kk: act(state, o, kk), k, n_envs, steps),
        jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)


def act(state: State, obs, key, evaluate: bool = False):
    """The agents' actions; the incentives follow from the step's `info` (see `incentives`). Tax
    design: `{"agents": actions, "tax_rates": tau}` with tau of the current planner view, which the
    environment reads at a period's first step (§7.1; evaluation is the same, §7.1)."""
    actions, extras = state.agents.act(state.learner_state, obs, key, evaluate=evaluate)
    if state.mechanism != "tax":
        return actions, extras
    if not state.config.designer_lstm:
        return {"agents": actions, "tax_rates": tax_rates(state, state.eta, obs["designer"])}, extras
    carry = tuple(jnp.split(obs["designer_memory"], 2, axis=-1))  # (c, h) after the last step
    out, carry = state.incentive.apply({"params": state.eta}, obs["designer"], carry=carry,
                                       step=True)
    return {"agents": actions, "tax_rates": jax.nn.sigmoid(out),
            "designer_memory": jnp.concatenate(carry, axis=-1)}, extras


# ---- the incentive function ------------------------------------------------------------------


def incentive_nodes(state: State, eta, batch, scaled: bool = True) -> jax.Array:
    """mu_eta(s_t, a_t), `[T, E, K]`: r_max * sigmoid (unscaled sigmoid if not `scaled`)."""
    info = batch.info
    sig = jax.nn.sigmoid(state.incentive.apply({"params": eta}, info["designer_obs"],
                                               info["designer_features"]))
    return state.config.r_max * sig if scaled else sig


def incentives(state: State, eta, batch) -> jax.Array:
    """u[k^i_t] received by each agent, `[T, E, N]`."""
    return paid_by_type(incentive_nodes(state, eta, batch), batch.info["designer_action_type"])


def tax_rates(state: State, eta, view) -> jax.Array:
    """tau = sigmoid(f_eta(planner view)), `[..., 7]` (gtb.md §7.1, §8.3); with `designer_lstm` the
    views are episodes from their first step (time on axis 0), as `act` saw them one by one."""
    return jax.nn.sigmoid(state.incentive.apply({"params": eta}, view))


def incentivized(state: State, eta, batch):
    """`batch` with rewards r^i + u[k^i] (what the agents learn from, Eq 6.1). Tax design: the
    rewards under the rates eta sets at each period's first step, broadcast over the period
    (§11.6); equal to the env rewards where those are the rates the rollout applied."""
    if state.mechanism == "tax":
        tax = batch.info["tax"]
        rates = tax_design.period_rates(tax_rates(state, eta, batch.obs["designer"]),
                                        batch.obs["period_start"], tax["rates_env"])
        return batch.replace(reward=tax_design.taxed_rewards(state.env, state.env_params, batch,
                                                             rates))
    return batch.replace(reward=batch.reward + incentives(state, eta, batch))


def theta_hat(state: State, eta):
    """The agents' state after their step on the stored tau with incentives of `eta` (Eq 6.3),
    the in-graph replica of the step `update` applied (tax design: the PPO step with [MG]'s Adam
    replica, §8.3)."""
    batch = incentivized(state, eta, state.prev_batch)
    if state.mechanism == "tax":
        return tax_design.ppo_replica(
            state.agents.module, state.prev_learner_state, state.agents.learner_batch(batch),
            state.config.replica_second_moment == "stop_gradient")
    return state.agents.update(state.prev_learner_state, batch)[0]


# ---- the designer's objective ----------------------------------------------------------------


def outer_advantages(state: State, batch_hat) -> jax.Array:
    """A_t on tau-hat, `[T, E]`: discounted return of R^ID ("return", the ER code) or GAE from the
    ID critic ("gae", the Cleanup code), A12."""
    adv = designer_advantages(state, batch_hat, batch_hat.info["designer_reward"])
    if state.config.batch_baseline:
        w = batch_hat.valid
        adv = (adv - jnp.sum(adv * w, axis=1, keepdims=True)
               / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)) * w
    return adv


def joint_log_prob(state: State, lstate, batch) -> jax.Array:
    """sum_i log pi^i(a^i_t|o^i_t) under `lstate`, `[T, E]` (the joint policy of Eq C.10)."""
    lp = state.agents.log_prob(lstate, batch.obs, batch.action, state.config.outer_logprob_mixed)
    return jnp.sum(lp, axis=-1)


def outer_loss(eta, state: State, batch_hat, advantages, old_log_prob=None) -> jax.Array:
    """-E[min(rho A, clip(rho) A)] with rho = pi_{theta-hat(eta)} / pi_old over tau-hat (Eq 6.5);
    without `ppo_clip` the meta-PG loss -sum_t A_t log pi_{theta-hat(eta)} (A12). Sum over time,
    mean over environments (A8)."""
    c = state.config
    logp = joint_log_prob(state, theta_hat(state, eta), batch_hat)
    if c.ppo_clip is None:
        return -time_sum_env_mean(logp * advantages, batch_hat.valid)
    old = jax.lax.stop_gradient(logp) if old_log_prob is None else old_log_prob
    ratio = jnp.exp(logp - old)
    return -time_sum_env_mean(clipped_surrogate(ratio, advantages, c.ppo_clip), batch_hat.valid)


def incentive_cost(eta, state: State, batch) -> jax.Array:
    """psi on tau: sum_t gamma^t of the incentives paid ("paid", A13) or of the unscaled output
    nodes ("nodes", the ER code); mean over environments."""
    c = state.config
    if c.cost == "paid":
        per_step = jnp.sum(incentives(state, eta, batch), axis=-1)
    else:
        per_step = jnp.sum(incentive_nodes(state, eta, batch, scaled=False), axis=-1)
    discount = c.gamma ** jnp.arange(per_step.shape[0], dtype=per_step.dtype)
    return time_sum_env_mean(per_step * discount[:, None], batch.valid)


def designer_step(state: State, batch_hat) -> tuple[State, dict]:
    """The ID's update from the stored (theta, tau) and tau-hat = `batch_hat` (Algorithm 3 line 7);
    a no-op before the first agents' step (nothing to validate yet)."""
    c = state.config
    old = state
    metrics = {}
    if c.advantage == "gae":  # the critic learns from tau before the eta step [CODE id_ssd]
        state, closs = designer_critic_step(state, state.prev_batch,
                                            state.prev_batch.info["designer_reward"])
        metrics["metagrad/critic_loss"] = closs
    adv = outer_advantages(state, batch_hat)
    old_logp = jax.lax.stop_gradient(joint_log_prob(state, state.learner_state, batch_hat))
    eta_opt = optax.adam(c.lr)

    def epoch(carry, _):
        eta, opt_state = carry
        loss, grads = jax.value_and_grad(outer_loss)(eta, state, batch_hat, adv, old_logp)
        upd, opt_state = eta_opt.update(grads, opt_state)
        return (optax.apply_updates(eta, upd), opt_state), loss

    (eta, eta_opt_state), losses = jax.lax.scan(epoch, (state.eta, state.eta_opt_state), None,
                                                c.outer_epochs)
    cost_opt_state = state.cost_opt_state
    cost = (jnp.zeros(()) if state.mechanism == "tax"  # taxes have no psi (§7.1)
            else incentive_cost(state.eta, state, state.prev_batch))
    if c.cost != "none":  # the cost's own Adam, on the eta of this iteration (A13, as LIO's A2)
        grads = jax.grad(incentive_cost)(state.eta, state, state.prev_batch)
        upd, cost_opt_state = optax.adam(c.lr_cost).update(grads, state.cost_opt_state)
        eta = optax.apply_updates(eta, upd)
    new = state.replace(eta=eta, eta_opt_state=eta_opt_state, cost_opt_state=cost_opt_state)
    keep = state.has_prev
    state = jax.tree_util.tree_map(lambda x, y: jnp.where(keep, x, y), new, old)
    metrics.update({"metagrad/outer_loss": losses[-1], "metagrad/cost": cost,
                    "metagrad/advantage": time_sum_env_mean(adv, batch_hat.valid)})
    return state, metrics


def agents_step(state: State, batch) -> tuple[State, dict]:
    """The agents' update on `batch` with the current incentives (tax design: the env rewards under
    the rates the rollout applied); remembers (theta, batch)."""
    if state.mechanism == "tax":
        lstate, lmetrics = state.agents.update(state.learner_state, batch)
        metrics = {"metagrad/rates": tax_design.mean_rates(batch), **lmetrics}
    else:
        lstate, lmetrics = state.agents.update(state.learner_state,
                                               incentivized(state, state.eta, batch))
        u = incentives(state, state.eta, batch) * batch.valid[..., None]
        metrics = {"metagrad/paid_per_episode": jnp.mean(jnp.sum(u, axis=0), axis=0), **lmetrics}
    return state.replace(learner_state=lstate, prev_learner_state=state.learner_state,
                         prev_batch=batch, has_prev=jnp.ones((), bool)), metrics


def update(state: State, batch):
    """One pipelined iteration: ID step (tau-hat = `batch`), then the agents' step on `batch`."""
    state, dmetrics = designer_step(state, batch)
    state, ametrics = agents_step(state, batch)
    return state.replace(iteration=state.iteration + 1), {**dmetrics, **ametrics}


def eval_metrics(state: State, batch) -> dict:
    """Evaluation: R^ID minus the incentives paid (as the thesis reports), per-agent incentives
    received per episode, and per step of each action type (`[N, K]`). Tax design: the sum of
    R^ID = 0.01 prod eq (no incentives to subtract), the GTB statistics of G5 (`gtb/*`: final prod,
    eq and SW, Σ prod eq) and the rates and taxes of §9.3 (`tax/*`)."""
    valid = batch.valid
    if state.mechanism == "tax":
        return tax_design.tax_metrics(state, batch, batch.info["designer_reward"])
    u = incentives(state, state.eta, batch) * valid[..., None]
    rid = jnp.sum(batch.info["designer_reward"] * valid, axis=0)  # [E]
    k = state.incentive.out if hasattr(state.incentive, "out") else u.shape[-1]
    return {
        "designer_return": jnp.mean(rid - jnp.sum(u, axis=(0, 2))),
        "metagrad/received": jnp.mean(jnp.sum(u, axis=0), axis=0),
        "metagrad/received_by_type": received_by_type(u, batch.info["designer_action_type"], valid, k),
        "metagrad/incentive_nodes": jnp.sum(
            incentive_nodes(state, state.eta, batch) * valid[..., None], axis=(0, 1))
        / jnp.maximum(jnp.sum(valid), 1.0),
    }
