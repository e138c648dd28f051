"""LIO: Learning to Incentivize Others (thesis ch. 5, Algorithm 2; spec/thesis.md §2).

Every agent has a policy theta^i (REINFORCE with the exploration floor, plain SGD) and an incentive
function eta^i that gives the others rewards. The incentive function is trained by differentiating
the giver's extrinsic return on a new trajectory tau-hat through the recipients' policy step on tau:

    theta-hat^j(eta) = theta^j - lr * grad l(theta^j; tau, eta)               (inner step, Eq 5.3-5.4)
    L^i(eta^i) = -sum_{j != i} sum_t log pi_{theta-hat^j}(a-hat^j_t) G-hat^{i,env}_t   (Eq 5.10)
    C^i(eta^i) = sum_t gamma^t sum_j sigma_j(o^i_t, a^{-i}_t)        (cost on tau, unscaled, A2)

Iteration (faithful, two rollouts): `phases` = (policy step on tau, incentive step on tau-hat).
Pipelined (one rollout): tau-hat of one iteration is tau of the next, as MetaGrad does.

`learner="ac"` is LIO's actor-critic form for Cleanup (Eq B.9-B.10, A6, A7): each recipient's critic
takes an Adam step on its total reward first, the inner step uses the TD error
delta^j_t = r^j_t(eta) + gamma V(o'_t) - V(o_t) in place of the return, and the giver's outer
advantage is its TD error with the extrinsic reward under the same (total-reward) critic.

The inner step is linear in the returns, so the meta-gradient is computed exactly with one VJP and
one JVP per giver (`meta_grad="linearized"`, default) instead of grad-of-grad (`"autodiff"`); a
test checks both against finite differences.
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
from jaxmcg.incentives import (
    action_features_of,
    incentive_logits,
    incentive_sigmoids,
    init_incentive,
    off_diagonal,
    received,
)
from jaxmcg.losses import reinforce_loss, time_sum_env_mean
from jaxmcg.networks import NETWORKS, agent_slice, apply_per_agent, init_per_agent, resolve_network
from jaxmcg.policy import init_policy, log_probs, num_actions, obs_example, reinforce_terms
from jaxmcg.returns import discounted_prefix, discounted_returns
from jaxmcg.rollout import episode_rollout
from jaxmcg.sweep import concrete
from jaxmcg.wrappers import GiveAction, wrap_observe_given

INCENTIVE_UPDATES = ("own", "all_givers")


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (64, 32)  # ER policy MLP, thesis §2.10 (Cleanup: 64, 64)
    incentive_hidden: tuple[int, ...] = (64, 16)  # ER incentive MLP, thesis §2.10 (Cleanup: 64, 64)
    network: str = "auto"  # "mlp", "conv" (Cleanup, §2.10), or "auto": conv for image observations
    learner: str = "pg"  # recipients' inner step: "pg" (IPD, ER) or "ac" (Cleanup, Eq B.9)
    critic_hidden: tuple[int, ...] = (64, 64)  # learner="ac": V(o) with the policy's torso
    lr_critic: float = 1e-3  # learner="ac": Adam, thesis L1787
    tau: float = 0.01  # learner="ac": target critic, thesis L1787
    r_max: float = 2.0  # ER and Cleanup; 3.0 for the IPD (§2.10)
    # Defaults are calibrated for batch-mean losses over 256+ parallel episodes (README); the
    # thesis' one-episode values are in the presets: policy lr 1e-4, incentive lr 1e-3, eps_div 1e3.
    lr: float = 2e-3  # policy SGD (Table B.4: 1e-4)
    lr_incentive: float = 3e-3  # Adam (thesis L1759: 1e-3)
    lr_cost: float = 1e-4  # separate Adam on the cost, thesis L1759 ("alpha = 1, lr 1e-4")
    cost_coef: float = 1.0  # alpha; ER uses a separate optimiser with coefficient 1 (A2)
    separate_cost_optimizer: bool = True  # ER code; Cleanup code adds 1e-4 * cost to one Adam
    cost_scaled: bool = False  # False: cost on the unscaled sigmoids, as the authors' code (A2)
    # Adam's epsilon in the separate cost optimiser (TF1's and optax's default 1e-8). The l1 cost's
    # gradient has one sign, so at the default Adam turns it into steps of lr_cost however small
    # sigma' is; a larger epsilon makes the cost's step shrink with its gradient below that scale.
    # It did not cure the batched ER(5,3) (1e-4 .. 0.1; notes, stops 21-22): while payments are
    # large the cost's gradients are 1e-2..0.4, and it is the cost's Adam steps that grow the
    # incentive weights (60-90% of them increase |w| at 2k iterations; the meta-gradient's shrink).
    cost_adam_eps: float = 1e-8
    # Adam's epsilon in the incentive (meta-gradient) optimiser, 1e-8 as above. The meta-gradient
    # carries the recipients' lr (|g| ~ 1e-7..1e-4 on ER), so at 1e-8 Adam steps every weight by
    # about lr_incentive whatever |g| is, also where sigma' has underflowed; an epsilon near the
    # gradient's scale makes those steps shrink with it instead. 1e-6 did not keep the batched
    # ER(5,3)'s logits bounded (-660..+160 by 2k iterations; notes, stop 22).
    incentive_adam_eps: float = 1e-8
    # Not in the thesis (0 = off): adds logit_l2 * sum of squared pre-sigmoid incentive outputs on
    # tau to the cost's loss. With many episodes per update the cost's and the meta-gradient's Adams
    # push the shared layers apart at full rate, the logits reach +-100s and sigma' underflows, so
    # no payment can move again (notes, stops 21-22); the penalty keeps |logit| where the cost's
    # gradient sigma' balances it (about 4-7 for 1e-3..1e-4). On the batched ER(5,3) 1e-3 only
    # slowed the growth (-420..+1330 at 4k iterations; notes, stop 22); larger values are untried.
    logit_l2: float = 0.0
    # Not in the thesis (0 = off): decoupled weight decay on eta, as AdamW, applied once per
    # incentive step: eta -= lr_incentive * incentive_weight_decay * eta. Adam moves a weight by about
    # its lr whenever the gradient's sign persists, whatever sigma' is, so nothing else bounds the
    # weights; the decay caps them near 1 / incentive_weight_decay and pulls saturated payments,
    # whose gradients have underflowed, back to where sigma' is alive. On the batched ER(5,3)
    # (notes, stop 23) 1.0 and 0.3 keep |logit| <= 25 to 7k iterations, but all 10 seeds stay with
    # everyone paid at the lever (P(lever) 0.999 by 8k); 0.1 does not bound them (-93..73 at 2k).
    # Switched on (0.3) at 4.5k from the preset's checkpoint (notes, stop 24): of the two seeds then
    # at 16, one held at 17.0 to 9k and one slid from 7.5k (9.6 at 9k), where without it both fell
    # to -4 by 7k; the three seeds not yet coordinated went back to the lever (two reach 16.7-17.0
    # without it).
    incentive_weight_decay: float = 0.0
    # The first iteration the decay acts on (0 = from the start); a float so that --sweep can scan
    # it. lio-er-5-3-batched uses 0.3 from 9k (notes, stops 29-30): with lr_cost 1e-3, 3 of 5
    # seeds at 17 in three 5-seed runs and 2 in one; from 6k the median was -4.94 (the seeds at
    # 17 by then held it, the rising ones went to the lever); from 11k 4 of 5. With lr_cost 3e-3
    # (the preset since stop 30) 4 and 5 of 5.
    incentive_weight_decay_start: float = 0.0
    # Not in the thesis (0 = off): adds sum relu(|z| - logit_bound)^2 over the givers' pre-sigmoid
    # outputs z on tau to each giver's meta-gradient loss, so the incentive Adam (lr_incentive,
    # which outpaces the cost's) steps any weight that pushes a logit past +-logit_bound back,
    # while inside the bound the meta-gradient and the cost act as in the thesis. Unlike the
    # decay it has no pull towards z = 0 (sigma = 1/2, everyone paid R_max / 2 for everything).
    # On the batched ER(5,3) (bound 6 instead of the decay; notes, stop 30) it changed the dynamics
    # but did not help: no all-at-the-lever phase, 11.5-12.9 on two seeds by 2k iterations, then
    # every seed back at the lever by 4.5k, with a lever-puller paid about 1.3 per step for the
    # door as well as 2.6 for the lever moving to the door, where the shut door keeps the episode,
    # and the payments, going for five steps instead of one.
    logit_bound: float = 0.0
    entropy_coef: float = 0.01  # Table B.4 beta, LIO
    eps_start: float = 0.5  # Table B.4, LIO N=2
    eps_end: float = 0.1  # Table B.4 (0.3 for N=3)
    eps_div: float = 500.0  # in iterations (Table B.4: 1e3)
    gamma: float = 0.99  # thesis L1743
    pipeline: bool = False  # False: the thesis' two rollouts per iteration (Algorithm 2)
    meta_grad: str = "linearized"  # or "autodiff" (grad through the inner step)
    # A3: the authors' outer log-prob uses the plain softmax although tau-hat is sampled from the
    # eps-mixed policy. That biased surrogate (no baseline) gets the sign wrong when returns are
    # negative and a policy saturates: on the IPD it pays the partner for defecting. The default
    # scores tau-hat with the policy it was sampled from; paper presets keep the code's choice.
    outer_logprob_mixed: bool = True
    observe_given: bool = True  # cumulative-given block in observations (thesis L1727)
    decentralized: bool = False  # LIO-dec: opponent models fitted by max likelihood (§2.6)
    lr_opponent: float = 1e-3  # LIO-dec opponent-model Adam, one step per rollout (A9)
    givers: tuple[int, ...] | None = None  # agents with an incentive function; None = all.
    # The others are plain PG learners: LIO paired with PG (LIO-asym, thesis §2.9) is givers=(0,)
    # "own": giver i steps eta^i along -dL^i/deta^i (Eq 5.10). "all_givers": the released ER code,
    # whose reward op minimises L^i over every variable it reaches (no var_list), so giver i's Adam
    # also steps each other giver's eta^k along -dL^i/deta^k (N >= 3). At Table B.4's N = 3 rates
    # ER(5,3) needs it: a TF1 transcription of that code solved seeds the own-eta form did not
    # (notes, stop 19). The code applies the givers' steps one after another; here together.
    incentive_update: str = "own"

    def validate(self, num_agents: int | None = None) -> None:
        if num_agents is not None and self.givers is not None:
            bad = [g for g in self.givers if not 0 <= g < num_agents]
            if bad:
                raise ValueError(f"givers={self.givers} has invalid agent indices {bad}; "
                                 f"valid: 0..{num_agents - 1}")
        for name, value, valid in (("network", self.network, ("auto",) + NETWORKS),
                                   ("learner", self.learner, ("pg", "ac"))):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is invalid; valid: {', '.join(map(repr, valid))}")
        if self.meta_grad not in ("linearized", "autodiff"):
            raise ValueError(
                f"meta_grad={self.meta_grad!r} is invalid; valid: 'linearized', 'autodiff'"
            )
        if self.incentive_update not in INCENTIVE_UPDATES:
            raise ValueError(f"incentive_update={self.incentive_update!r} is invalid; valid: "
                             f"{', '.join(map(repr, INCENTIVE_UPDATES))}")
        if self.incentive_update == "all_givers" and self.decentralized:
            raise ValueError("incentive_update='all_givers' needs the others' true policies; with "
                             "decentralized=True the valid value is 'own'")
        for name in ("cost_adam_eps", "incentive_adam_eps"):  # floats may be swept: concrete ones
            if concrete(getattr(self, name)) and not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; valid: a number > 0")
        for name in ("logit_l2", "incentive_weight_decay", "incentive_weight_decay_start",
                     "logit_bound"):
            if concrete(getattr(self, name)) and not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; valid: a number >= 0")
        if (concrete(self.cost_adam_eps) and self.cost_adam_eps != 1e-8
                and not self.separate_cost_optimizer):
            raise ValueError(f"cost_adam_eps={self.cost_adam_eps!r} needs the separate cost optimiser; "
                             "with separate_cost_optimizer=False the valid value is 1e-8 (unused)")


@struct.dataclass
class State:
    params: dict  # theta, stacked over agents
    eta: dict  # incentive parameters, stacked over givers
    eta_opt_state: optax.OptState
    cost_opt_state: optax.OptState
    iteration: jax.Array
    phase: jax.Array  # faithful iteration: 0 = next batch is tau, 1 = next batch is tau-hat
    has_prev: jax.Array  # whether prev_* hold a batch (pipelined: false before the first update)
    prev_params: dict  # theta before the last policy step
    prev_batch: object  # tau of the last policy step
    prev_eps: jax.Array  # exploration floor tau was sampled with
    opp_params: dict  # LIO-dec: opp_params[i] = giver i's estimates of all policies
    opp_opt_state: optax.OptState
    critic_params: dict | None  # learner="ac": V(o) of every agent, on the total reward
    target_params: dict | None
    critic_opt_state: optax.OptState | None
    prev_critic_params: dict | None  # the critic the last policy step's TD errors came from
    config: Config = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)
    incentive: object = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False)
    action_features: object = struct.field(pytree_node=False)  # actions [.., N] -> [.., N, k]
    critic: object = struct.field(pytree_node=False, default=None)


wrap_env = wrap_observe_given


epsilon = D.epsilon


def _adam_pair(config):
    return (optax.adam(config.lr_incentive, eps=config.incentive_adam_eps),
            optax.adam(config.lr_cost, eps=config.cost_adam_eps))


def _init_eta_opt(eta_opt, config, eta, n: int):
    """One Adam state over eta, or (incentive_update="all_givers") one per giver over all of eta."""
    if config.incentive_update == "all_givers":
        return jax.vmap(lambda _: eta_opt.init(eta))(jnp.arange(n))
    return eta_opt.init(eta)


def init(key, env, env_params, config: Config, *, n_envs: int = 1, num_steps: int | None = None):
    """`env` must accept `GiveAction`s (wrap it with `wrap_env`). `n_envs` and `num_steps` size the
    batch carried between updates."""
    config.validate(env.num_agents)
    env = wrap_env(env, config)
    k_pol, k_inc, k_opp, k_critic = jax.random.split(key, 4)
    n, a = env.num_agents, num_actions(env, env_params)
    example = obs_example(env, env_params)
    kind = resolve_network(config.network, example)
    policy, params = init_policy(k_pol, env, env_params, config.hidden, kind)
    features = action_features_of(env, a)
    feature_dim = features(jnp.zeros((n,), jnp.int32)).shape[-1]
    incentive, eta = init_incentive(k_inc, n, example, feature_dim, config.incentive_hidden, kind)
    critic = critic_params = critic_opt_state = None
    if config.learner == "ac":
        critic, critic_params = C.init_critic(k_critic, n, example, config.critic_hidden, kind)
        critic_opt_state = optax.adam(config.lr_critic).init(critic_params)
    opp_params = jax.vmap(lambda k: init_per_agent(policy, k, n, example))(
        jax.random.split(k_opp, n)
    )
    eta_opt, cost_opt = _adam_pair(config)
    state = State(
        params=params, eta=eta, eta_opt_state=_init_eta_opt(eta_opt, config, eta, n),
        cost_opt_state=cost_opt.init(eta),
        iteration=jnp.zeros((), jnp.int32), phase=jnp.zeros((), jnp.int32),
        has_prev=jnp.zeros((), bool), prev_params=params, prev_batch=None,
        prev_eps=jnp.zeros((), jnp.float32), opp_params=opp_params,
        opp_opt_state=optax.adam(config.lr_opponent).init(opp_params),
        critic_params=critic_params, target_params=critic_params, critic_opt_state=critic_opt_state,
        prev_critic_params=critic_params,
        config=config, policy=policy, incentive=incentive, num_actions=a,
        action_features=features, critic=critic,
    )
    steps = num_steps or int(env_params.max_steps_in_episode)
    template = jax.eval_shape(
        lambda k: episode_rollout(env, env_params, lambda o, kk: act(state, o, kk), k, n_envs, steps),
        jax.random.PRNGKey(0),
    )
    return state.replace(
        prev_batch=jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)
    )


def _giver_mask(state, n: int) -> np.ndarray:
    givers = range(n) if state.config.givers is None else state.config.givers
    return np.isin(np.arange(n), list(givers)).astype(np.float32)[:, None]


def given_by(state, eta, obs, actions) -> jax.Array:
    """Incentives `[..., N giver, N recipient]` paid for joint `actions` seen from `obs`."""
    return state.config.r_max * _sigmoids(state, eta, obs, actions)


def _sigmoids(state, eta, obs, actions) -> jax.Array:
    sig = incentive_sigmoids(state.incentive, eta, obs, state.action_features(actions))
    return sig * _giver_mask(state, actions.shape[-1])


def _logits(state, eta, obs, actions) -> jax.Array:
    """The givers' pre-sigmoid incentive outputs `[..., N giver, N recipient]`; 0 for non-givers."""
    z = incentive_logits(state.incentive, eta, obs, state.action_features(actions))
    return z * _giver_mask(state, actions.shape[-1])


def act(state: State, obs, key, evaluate: bool = False):
    """Sample actions from the eps-mixed policies (eps = 0 when evaluating) and the incentives the
    givers pay for them; returns `(GiveAction, {})`."""
    eps = 0.0 if evaluate else epsilon(state)
    actions = D.sample(key, log_probs(state.policy, state.params, obs, eps))
    return GiveAction(actions, given_by(state, state.eta, obs, actions)), {}


# ---- the recipients' policy step (Eq 5.3-5.4), differentiable in eta ------------------------


def total_rewards(state: State, eta, batch) -> jax.Array:
    """r^j(eta) = r^{j,env} + sum_i r_eta^i[j] on `batch`, `[T, E, N]` (Eq 5.1)."""
    return batch.reward + received(given_by(state, eta, batch.obs, batch.action.action))


def _td_error(state: State, critic_params, batch, rewards) -> jax.Array:
    v = C.values(state.critic, critic_params, batch.obs)
    v_next = C.values(state.critic, critic_params, batch.next_obs)
    return C.td_error(rewards, v, v_next, state.config.gamma)  # no done-masking (A6)


def inner_advantages(state: State, eta, batch, critic_params=None) -> jax.Array:
    """What the recipients' step weighs log pi~ by: the return of the total reward ("pg", Eq 5.4) or
    its TD error under the critic of that step ("ac", Eq B.9); linear in the incentives."""
    if state.config.learner == "ac":
        critic_params = state.prev_critic_params if critic_params is None else critic_params
        incentives = received(given_by(state, eta, batch.obs, batch.action.action))
        return incentives + _td_error(state, critic_params, batch, batch.reward)
    rewards = total_rewards(state, eta, batch)
    return discounted_returns(rewards, batch.valid[..., None], state.config.gamma)


def inner_loss(theta, eta, state: State, batch, eps, critic_params=None) -> jax.Array:
    """Sum over recipients of the policy-gradient loss on extrinsic + received rewards."""
    c = state.config
    logp, ent = reinforce_terms(state.policy, theta, batch.obs, batch.action.action, eps)
    adv = inner_advantages(state, eta, batch, critic_params)
    return jnp.sum(reinforce_loss(logp, adv, ent, batch.valid, c.entropy_coef))


def inner_step(theta, eta, state: State, batch, eps):
    """theta-hat(eta) = theta - lr * grad l: the policy step, also replicated in the meta graph."""
    grads = jax.grad(inner_loss)(theta, eta, state, batch, eps)
    return jax.tree_util.tree_map(lambda p, g: p - state.config.lr * g, theta, grads)


# ---- the givers' outer objective (Eq 5.10 + 5.6) ---------------------------------------------


def _outer_eps(state):
    # tau-hat was sampled in the current iteration (faithful and pipelined alike)
    return epsilon(state) if state.config.outer_logprob_mixed else 0.0


def _outer_log_probs(state, theta_hat, batch_hat):
    return D.log_prob_of(
        log_probs(state.policy, theta_hat, batch_hat.obs, _outer_eps(state)),
        batch_hat.action.action,
    )


def outer_advantages(state, batch_hat) -> jax.Array:
    """The givers' extrinsic credit on tau-hat, `[T, E, N]`: the return ("pg", Eq 5.10), or the TD
    error of the extrinsic reward under the total-reward critic ("ac", as the authors' code, A7)."""
    if state.config.learner == "ac":
        return _td_error(state, state.critic_params, batch_hat, batch_hat.reward)
    return discounted_returns(batch_hat.reward, batch_hat.valid[..., None], state.config.gamma)


def outer_loss(theta_hat, state: State, batch_hat, giver: int) -> jax.Array:
    """L^i: minus the giver's extrinsic return credited to the recipients' new log-probabilities."""
    n = batch_hat.reward.shape[-1]
    logp = _outer_log_probs(state, theta_hat, batch_hat)  # [T, E, N]
    g = outer_advantages(state, batch_hat)[..., giver]  # [T, E]
    others = jnp.asarray(np.arange(n) != giver, jnp.float32)
    return -time_sum_env_mean(jnp.sum(logp * others, axis=-1) * g, batch_hat.valid)


def incentive_cost(eta, state: State, batch) -> jax.Array:
    """sum_i C^i: discounted l1 norm of the incentives given on tau (unscaled unless cost_scaled)."""
    c = state.config
    sig = _sigmoids(state, eta, batch.obs, batch.action.action)
    scale = c.r_max if c.cost_scaled else 1.0
    discount = c.gamma ** jnp.arange(batch.reward.shape[0], dtype=jnp.float32)
    per_step = scale * jnp.sum(sig, axis=(-1, -2)) * discount[:, None]  # [T, E]
    return time_sum_env_mean(per_step, batch.valid)


def _squared_logits_beyond(bound, eta, state: State, batch) -> jax.Array:
    """sum_t (env mean) of relu(|z| - bound)^2 over the givers' pre-sigmoid outputs z on tau."""
    z = _logits(state, eta, batch.obs, batch.action.action)
    return time_sum_env_mean(jnp.sum(jnp.square(jax.nn.relu(jnp.abs(z) - bound)), axis=(-1, -2)),
                             batch.valid)


def logit_penalty(eta, state: State, batch) -> jax.Array:
    """sum_t (env mean) of the givers' squared pre-sigmoid incentive outputs on tau (`logit_l2`)."""
    return _squared_logits_beyond(0.0, eta, state, batch)


def logit_overshoot(eta, state: State, batch) -> jax.Array:
    """sum_t (env mean) of relu(|z| - logit_bound)^2 over the givers' pre-sigmoid outputs on tau."""
    return _squared_logits_beyond(state.config.logit_bound, eta, state, batch)


def _own_slots(grads, n: int):
    """incentive_update="all_givers": place giver i's gradient on eta^i in giver i's Adam only."""
    return jax.tree_util.tree_map(
        lambda g: jnp.eye(n, dtype=g.dtype).reshape((n, n) + (1,) * (g.ndim - 1)) * g[None], grads)


def meta_grad_autodiff(state: State, theta, eta, batch, batch_hat, eps, givers, all_etas=False):
    """d L^i / d eta^i for each giver i in `givers`, by grad through the inner step (`all_etas`:
    d L^i / d eta, over every giver's parameters)."""
    grads = []
    for i in givers:
        if all_etas:
            grads.append(jax.grad(lambda et, i=i: outer_loss(
                inner_step(theta, et, state, batch, eps), state, batch_hat, i))(eta))
            continue
        def loss_i(eta_i, i=i):
            eta_full = jax.tree_util.tree_map(lambda e, ei: e.at[i].set(ei), eta, eta_i)
            theta_hat = inner_step(theta, eta_full, state, batch, eps)
            return outer_loss(theta_hat, state, batch_hat, i)

        grads.append(jax.grad(loss_i)(agent_slice(eta, i)))
    return grads


def meta_grad_linearized(state: State, theta, eta, batch, batch_hat, eps, givers, theta_hat=None,
                         all_etas=False):
    """The same gradients, exactly, without second derivatives.

    theta-hat^j(eta) = const + (lr / E) sum_{t,e} g^j_{t,e} G^j_{t,e}(eta), g = grad log pi~(a|o),
    so dL^i/deta^i = (lr / E) sum_j sum_{t,e} (g^j_{t,e} . v_ij) dG^j_{t,e}/deta^i with
    v_ij = dL^i/dtheta-hat^j: one VJP on tau-hat (v), one JVP on tau (g . v), then one VJP through
    the incentive networks with the returns' adjoint (a discounted prefix sum) as cotangent; the AC
    learner's TD error depends on the incentives of its own step only, so its adjoint is the identity.
    """
    c = state.config
    n, e = batch.reward.shape[-1], batch.reward.shape[1]
    if theta_hat is None:
        theta_hat = inner_step(theta, eta, state, batch, eps)
    _, vjp_new = jax.vjp(lambda th: _outer_log_probs(state, th, batch_hat), theta_hat)
    _, jvp_old = jax.linearize(
        lambda th: reinforce_terms(state.policy, th, batch.obs, batch.action.action, eps)[0], theta
    )
    g_hat = outer_advantages(state, batch_hat)  # [T, E, N]
    valid, valid_hat = batch.valid[..., None], batch_hat.valid[..., None]
    # one forward pass of the incentive networks serves every giver's cotangent [T, E, giver, recipient]
    _, grad_of = jax.vjp(lambda et: given_by(state, et, batch.obs, batch.action.action), eta)
    cot = jnp.zeros(batch.reward.shape + (n,), batch.reward.dtype)  # [T, E, giver, recipient]
    full = []
    for i in givers:
        others = jnp.asarray(np.arange(n) != i, jnp.float32)
        (v_i,) = vjp_new(-valid_hat * g_hat[..., i : i + 1] * others / e)
        w_i = jvp_old(v_i)  # [T, E, N recipients]
        adjoint = w_i * valid if c.learner == "ac" else discounted_prefix(w_i * valid, c.gamma)
        if all_etas:  # every giver's gifts to j move theta-hat^j: the same adjoint on each row
            full.append(jnp.broadcast_to((c.lr / e * valid * adjoint)[..., None, :], cot.shape))
        else:
            cot = cot.at[..., i, :].set(c.lr / e * valid * adjoint)
    if all_etas:
        (grads,) = jax.vmap(grad_of)(jnp.stack(full))
        return [agent_slice(grads, k) for k in range(len(full))]
    (grad_eta,) = grad_of(cot)
    return [agent_slice(grad_eta, i) for i in givers]


def _stack(grads):
    return jax.tree_util.tree_map(lambda *g: jnp.stack(g), *grads)


def incentive_grads(state: State, theta, batch, batch_hat, eps):
    """Stacked d L^i / d eta^i for all givers, with the policies each giver believes in
    (incentive_update="all_givers": d L^i / d eta, `[N giver i, *eta]`)."""
    n = batch.reward.shape[-1]
    fn = meta_grad_linearized if state.config.meta_grad == "linearized" else meta_grad_autodiff
    if not state.config.decentralized:
        all_etas = state.config.incentive_update == "all_givers"
        kw = {"theta_hat": state.params} if fn is meta_grad_linearized else {}  # = theta-hat(eta)
        grads = _stack(fn(state, theta, state.eta, batch, batch_hat, eps, range(n),
                          all_etas=all_etas, **kw))
        if all_etas:  # only givers train (the code's can_give): a non-giver's L^i moves nothing
            mask = _giver_mask(state, n)[:, 0]
            grads = jax.tree_util.tree_map(
                lambda g: g * mask.reshape((n,) + (1,) * (g.ndim - 1)), grads)
        return grads
    grads = []
    for i in range(n):  # giver i replaces the others' theta by its estimates (LIO-dec, §2.6)
        belief = jax.tree_util.tree_map(
            lambda est, own, i=i: est[i].at[i].set(own[i]), state.opp_params, theta
        )
        grads += fn(state, belief, state.eta, batch, batch_hat, eps, [i])
    return _stack(grads)


def fit_opponents(state: State, batch) -> State:
    """LIO-dec: one Adam step of each giver's estimates on the others' log-likelihood (A9)."""
    if not state.config.decentralized:
        return state
    n = batch.reward.shape[-1]
    others = off_diagonal(n)

    def nll(opp):
        lp = jnp.stack([
            D.log_prob_of(
                D.mixed_log_probs(apply_per_agent(state.policy, opp_i, batch.obs), 0.0),
                batch.action.action,
            )
            for opp_i in [agent_slice(opp, i) for i in range(n)]
        ], axis=-2)  # [T, E, modeler, modeled]
        return -jnp.sum(time_sum_env_mean(lp * others, batch.valid))

    grads = jax.grad(nll)(state.opp_params)
    updates, opt = optax.adam(state.config.lr_opponent).update(grads, state.opp_opt_state)
    return state.replace(opp_params=optax.apply_updates(state.opp_params, updates),
                         opp_opt_state=opt)


def incentive_step(state: State, batch_hat) -> tuple[State, dict]:
    """Adam steps on eta from the stored (theta, tau) and the new trajectory tau-hat.

    incentive_update="own": giver i steps its own eta^i (Eq 5.10). "all_givers": each giver's
    Adam steps all of eta along -dL^i/deta, as the released ER code's reward op (no var_list) does;
    that op also nudges the main policies, which its next copy from the prime policies overwrites,
    but it changes the later givers' gradients within the iteration: not replicated.
    """
    c = state.config
    theta, batch, eps = state.prev_params, state.prev_batch, state.prev_eps
    meta = incentive_grads(state, theta, batch, batch_hat, eps)
    cost, cost_grads = jax.value_and_grad(incentive_cost)(state.eta, state, batch)
    cost_grads = jax.tree_util.tree_map(lambda g: c.cost_coef * g, cost_grads)
    if c.logit_l2 > 0:  # with the cost, in the cost's optimiser when it has its own
        penalty_grads = jax.grad(logit_penalty)(state.eta, state, batch)
        cost_grads = jax.tree_util.tree_map(lambda g, p: g + c.logit_l2 * p, cost_grads, penalty_grads)
    n = batch.reward.shape[-1]
    if c.logit_bound > 0:  # in the meta-gradient's optimiser, as part of each giver's L^i
        bound_grads = jax.grad(logit_overshoot)(state.eta, state, batch)
        if c.incentive_update == "all_givers":
            bound_grads = _own_slots(bound_grads, n)
        meta = jax.tree_util.tree_map(jnp.add, meta, bound_grads)
    eta_opt, cost_opt = _adam_pair(c)
    eta_step = eta_opt.update
    if c.incentive_update == "all_givers":  # giver i's Adam on all of eta; the steps add up
        def eta_step(grads, opt_state):
            upd, opt_state = jax.vmap(eta_opt.update)(grads, opt_state)
            return jax.tree_util.tree_map(lambda u: jnp.sum(u, axis=0), upd), opt_state
    if c.separate_cost_optimizer:
        upd, eta_opt_state = eta_step(meta, state.eta_opt_state)
        eta = optax.apply_updates(state.eta, upd)
        upd, cost_opt_state = cost_opt.update(cost_grads, state.cost_opt_state)
        eta = optax.apply_updates(eta, upd)
    else:
        if c.incentive_update == "all_givers":  # giver i's own cost enters its own Adam only
            cost_grads = _own_slots(cost_grads, n)
        total = jax.tree_util.tree_map(jnp.add, meta, cost_grads)
        upd, eta_opt_state = eta_step(total, state.eta_opt_state)
        eta, cost_opt_state = optax.apply_updates(state.eta, upd), state.cost_opt_state
    if c.incentive_weight_decay > 0:  # once, not once per giver's Adam as adamw would under all_givers
        started = state.iteration >= c.incentive_weight_decay_start
        decay = c.lr_incentive * c.incentive_weight_decay * started
        eta = jax.tree_util.tree_map(lambda e, e0: e - decay * e0, eta, state.eta)
    keep = state.has_prev  # the pipelined variant has nothing to validate on its first update
    pick = lambda new, old: jax.tree_util.tree_map(lambda x, y: jnp.where(keep, x, y), new, old)
    state = state.replace(
        eta=pick(eta, state.eta),
        eta_opt_state=pick(eta_opt_state, state.eta_opt_state),
        cost_opt_state=pick(cost_opt_state, state.cost_opt_state),
    )
    return state, {"lio/incentive_cost": cost}


def critic_step(state: State, batch) -> tuple[State, dict]:
    """learner="ac": Adam step of every critic on its total reward with the target net (Eq B.10)."""
    c = state.config
    rewards = total_rewards(state, state.eta, batch)
    loss = lambda p: C.objective(state.critic, p, state.target_params, batch, rewards, c.gamma)[0]
    value, grads = jax.value_and_grad(loss)(state.critic_params)
    upd, opt_state = optax.adam(c.lr_critic).update(grads, state.critic_opt_state)
    return state.replace(critic_params=optax.apply_updates(state.critic_params, upd),
                         critic_opt_state=opt_state,
                         prev_critic_params=state.critic_params), {"lio/critic_loss": value}


def policy_step(state: State, batch) -> tuple[State, dict]:
    """The recipients' SGD step on tau (with the current eta); remembers (theta, tau, eps).
    learner="ac": critic step, then the actor step with TD errors of the critic before its step,
    then the target update (A6)."""
    eps = epsilon(state)
    metrics = {}
    if state.config.learner == "ac":
        state, metrics = critic_step(state, batch)
    loss, grads = jax.value_and_grad(inner_loss)(state.params, state.eta, state, batch, eps)
    theta_hat = jax.tree_util.tree_map(lambda p, g: p - state.config.lr * g, state.params, grads)
    if state.config.learner == "ac":
        state = state.replace(target_params=C.soft_update(
            state.target_params, state.critic_params, state.config.tau))
    # a strongly typed eps: a weak-typed one would change the state's avals and recompile the chunk
    state = state.replace(params=theta_hat, prev_params=state.params, prev_batch=batch,
                          prev_eps=jnp.asarray(eps, jnp.float32), has_prev=jnp.ones((), bool))
    return state, {"lio/policy_loss": loss, **metrics, **given_metrics(state, batch)}


def given_metrics(state: State, batch) -> dict:
    """Incentives per episode given by each agent, received per step for each action, and each
    giver's fraction of payments with |logit| > 10 (sigma' < 5e-5: they no longer move)."""
    given = batch.action.given * batch.valid[..., None, None]  # [T, E, N, N]
    z = _logits(state, state.eta, batch.obs, batch.action.action)  # non-givers read 0
    n = z.shape[-1]
    pairs = batch.valid[..., None, None] * off_diagonal(n)
    saturated = jnp.sum((jnp.abs(z) > 10.0) * pairs, axis=(0, 1, 3)) / jnp.maximum(
        jnp.sum(pairs, axis=(0, 1, 3)), 1.0)
    onehot = jax.nn.one_hot(batch.action.action, state.num_actions) * batch.valid[..., None, None]
    rec = received(given)  # [T, E, N]
    per_action = jnp.sum(rec[..., None] * onehot, axis=(0, 1)) / jnp.maximum(
        jnp.sum(onehot, axis=(0, 1)), 1.0
    )
    return {
        "lio/given_per_episode": jnp.mean(jnp.sum(given, axis=(0, 3)), axis=0),  # [N]
        "lio/received_by_action": per_action,  # [N, A]
        "lio/saturated": saturated,  # [N]
    }


def faithful_policy_phase(state, batch):
    state, metrics = policy_step(state, batch)
    return state.replace(phase=jnp.ones((), jnp.int32)), metrics


def faithful_incentive_phase(state, batch_hat):
    state = fit_opponents(state, state.prev_batch)
    state, metrics = incentive_step(state, batch_hat)
    state = fit_opponents(state, batch_hat)
    return state.replace(phase=jnp.zeros((), jnp.int32), iteration=state.iteration + 1), metrics


def pipelined_update(state, batch):
    """tau-hat of the previous policy step is this batch, which is also the next tau."""
    state = fit_opponents(state, batch)
    state, inc_metrics = incentive_step(state, batch)
    state, pol_metrics = policy_step(state, batch)
    return state.replace(iteration=state.iteration + 1), {**inc_metrics, **pol_metrics}


def phases(config: Config):
    if config.pipeline:
        return (pipelined_update,)
    return (faithful_policy_phase, faithful_incentive_phase)


def update(state: State, batch):
    """One `update` per rollout. Faithful mode alternates the two phases on `state.phase`, so a
    caller outside jaxmcg's loop feeds tau, then tau-hat, then the next tau, ..."""
    if state.config.pipeline:
        return pipelined_update(state, batch)
    branches = (faithful_policy_phase, faithful_incentive_phase)
    shapes = {}
    for f in branches:
        shapes.update(jax.eval_shape(f, state, batch)[1])

    def complete(f):
        def run(s, b):
            s, m = f(s, b)
            return s, {k: m[k] if k in m else jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}

        return run

    return jax.lax.cond(state.phase == 0, *map(complete, branches), state, batch)


def eval_metrics(state: State, batch) -> dict:
    """Evaluation: per-agent total reward (extrinsic + received - given) as the thesis logs it."""
    given = batch.action.given * batch.valid[..., None, None]
    total = batch.reward * batch.valid[..., None] + received(given) - jnp.sum(given, axis=-1)
    return {"lio/total_return": jnp.mean(jnp.sum(total, axis=0), axis=0)}
