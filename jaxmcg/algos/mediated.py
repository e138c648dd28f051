"""Mediated MARL (Ivanov, Zisman & Chernyshev, AAMAS 2023), a baseline of the DCL paper (dcl.md §4.2).

Every agent's action space gets one extra action, "delegate to the mediator" (index A, after the
game's A actions). A pro-social mediator then picks the real action of each delegating agent.

* The game is wrapped by `MediatedGame`: an action is a `Delegation`, the agents' choices in
  {0, ..., A} and the mediator's proposals in {0, ..., A - 1}, one per agent; the environment executes
  the proposal for the agents that chose A and the agents' own choices otherwise. The coalition
  C in {0, 1}^N marks who delegated.
* Agents: independent advantage actor-critics (M: tabular-games/src/base/meta_agent/
  meta_agent.py:54-98, line numbers as dcl.md §4.2 cites them) with
  TD(0) critics V^i(o^i):  delta^i = r^i + gamma (1 - d) V^i(o'^i) - V^i(o^i),
      actor loss  -mean(log pi^i(a^i|o^i) delta^i) - beta mean H(pi^i),   critic loss  mean (delta^i)^2.
* Mediator (M: tabular-games/src/vanilla_mediator/mediator/mediator.py:27-74): an actor
  mu(m | s, C, onehot(i)) shared by all agents it acts for, and a critic V_med(s, C) with one
  output per agent, trained on every step. With
      delta_med^j = r^j + gamma (1 - d) V_med^j(s', C') - V_med^j(s, C),
      critic loss  mean sum_j (delta_med^j)^2,
      actor loss   mean over (steps, delegating agents i) of
                   -log mu(m^i | s, C, i) sum_{j in C} delta_med^j - beta H(mu),
  where C' is the coalition at the next step of the same episode.
* Constrained mediator (M: pgg-iter/mediator/mediator.py, `calculate_ic`, `update_lambda`,
  `update_ppo_actor`): the advantage of the mediator's action for agent i gains lambda_i g_i, the
  slack of agent i's incentive-compatibility constraint V^i(s, C) >= V^i(s, C \\ {i}) estimated as
      g_i = r^i + gamma (1 - d) V_med^i(s', C') - V_med^i(s, C \\ {i}),
  and after each iteration log lambda_i <- clip(log lambda_i - dual_lr mean_i(g_i), -4, 4), the mean
  over the steps on which agent i delegated: a violated constraint (g < 0) raises lambda_i.
  Of that code's extras we keep none (simplicity; dcl.md §4.2 names only the multipliers): it skips
  singleton coalitions, scales negative slacks by 0.1 in the dual step, averages rather than sums
  the coalition's advantages, normalises advantages and trains with PPO.
  On the PD, lambda_i g_i also rewards the mediator for agent i's own payoff: with lambda_i > 1 it
  prefers D for agent i (C adds 1 to the coalition's sum, D adds 1 to r^i). Early on, the unfitted
  critic makes the slack about -1.5, lambda climbs to 2-7 within a few hundred iterations, the
  mediator turns to D, and the runs settle in mutual defection before lambda decays back (we
  measure SW -4.00; dcl.md §5.2 reports a non-convergent curve between -4 and -2 instead).

M is the authors' code, github.com/dimonenka/mediatedMARL (dcl.md §0 cites the DCL author's fork).

Each iteration runs `num_updates` rounds of one simultaneous Adam step on each of the four networks
(agents' actors, agents' critics, mediator actor, mediator critic), the advantages of a round coming
from the critics before that round's step, as in the authors' code.
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
from jaxmcg import spaces
from jaxmcg.environment import Environment, Wrapper, num_discrete_actions
from jaxmcg.losses import masked_mean
from jaxmcg.networks import TorchMLP, apply_per_agent, init_per_agent
from jaxmcg.policy import flat_obs_dim

NETS = ("actor", "critic", "med_actor", "med_critic")


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults: dcl.md Table 5 (PD, P:L899-L917), the Mediated-MARL column."""

    hidden: int = 8  # two hidden layers of this width, every network; Table 5 (Tables 6-7: 32)
    # Table 5's two learning rates serve the agents and the mediator alike (the table has one
    # Mediated-MARL column; the authors' vanilla.yaml gives the mediator 8e-4 / 1e-3 instead)
    lr: float = 4e-4  # actors, Table 5
    lr_critic: float = 8e-4  # critics, Table 5
    entropy_start: float = 1.0  # Table 5 (Tables 6-7: 2.0); one coefficient for agents and mediator
    entropy_decay: float = 5e-4  # per iteration (the authors' code: per update call, 1 per iteration)
    entropy_min: float = 0.0  # Table 5 (Tables 6-7: 0.001; the authors' code floors at 0.1)
    num_updates: int = 1  # rounds of steps per iteration on one batch; Table 5 (Tables 6-7: 30)
    gamma: float = 0.99  # Tables 6-7 (Table 5 has none; irrelevant at horizon 1)
    constrained: bool = False  # True: the incentive-compatibility constrained mediator
    dual_lr: float = 0.005  # step on log lambda (M: pgg-iter/conf/config.yaml lr_lambda)
    lambda_init: float = 1.0  # initial lambda (M: pgg-iter/conf/config.yaml lambda_start)
    log_lambda_bound: float = 4.0  # log lambda in [-bound, bound] (M: pgg-iter `update_lambda`)

    def validate(self) -> None:
        for name in ("hidden", "num_updates"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
        for name in ("lr", "lr_critic", "dual_lr", "lambda_init", "log_lambda_bound"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be > 0")
        for name in ("entropy_start", "entropy_decay", "entropy_min"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma!r} is invalid: must be in [0, 1]")
        if not isinstance(self.constrained, (bool, np.bool_)):
            raise ValueError(f"constrained={self.constrained!r} is invalid: must be True or False")


# Tables 6-7 (Grid game and RPC): hidden 32, entropy 2.0 -> 0.001, 30 updates per iteration (batch
# 512 is the train loop's n_envs * horizon = 32 * 16).
GRID_RPC = Config(hidden=32, entropy_start=2.0, entropy_min=0.001, num_updates=30)


# --- the game with a mediator ----------------------------------------------------------------------

@struct.dataclass
class Delegation:
    """One step's action, each `[N]` int: the agents' choices in {0, ..., A} (A = delegate) and the
    mediator's proposal for every agent in {0, ..., A - 1} (used only where the agent delegated)."""

    action: jax.Array
    mediator: jax.Array


def coalition_of(choices: jax.Array, num_base_actions: int) -> jax.Array:
    """1.0 where an agent chose the delegate action `num_base_actions`, else 0.0 (same shape)."""
    return (choices == num_base_actions).astype(jnp.float32)


class MediatedGame(Wrapper):
    """`env` with a delegate action (index A) per agent; see the module docstring. The state,
    observations and parameters are the inner game's; `info` adds `coalition` (`[N]` float) and
    `executed` (`[N]` int, the real joint action)."""

    def __init__(self, env: Environment):
        num_base_actions = num_discrete_actions(env, "Mediated MARL")
        super().__init__(env)
        self.num_base_actions = num_base_actions

    def reset_env(self, key, params):
        return self.inner.reset_env(key, params)

    def step_env(self, key, state, actions: Delegation, params):
        coalition = coalition_of(actions.action, self.num_base_actions)
        executed = jnp.where(coalition > 0, actions.mediator, actions.action).astype(jnp.int32)
        obs, state, reward, terminated, info = self.inner.step_env(key, state, executed, params)
        return obs, state, reward, terminated, {**info, "coalition": coalition,
                                                "executed": executed}

    def get_obs(self, state, params=None):  # the state is the inner game's own
        return self.inner.get_obs(state, params)

    def action_space(self, params=None):
        """The agents' choices: the game's actions and, last, delegate."""
        return spaces.Discrete(self.num_base_actions + 1)


def wrap_env(env, config: Config):
    config.validate()  # make_train calls this first: bad values fail before anything is traced
    return env if isinstance(env, MediatedGame) else MediatedGame(env)


# --- state -----------------------------------------------------------------------------------------

@struct.dataclass
class State:
    params: dict  # NETS -> parameters; "actor" and "critic" stacked over agents
    opt_state: dict
    log_lambda: jax.Array  # [N] log Lagrange multipliers (constant when unconstrained)
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    nets: dict = struct.field(pytree_node=False)
    num_base_actions: int = struct.field(pytree_node=False)


def _optimisers(config: Config) -> dict:
    # Adam without gradient clipping, as the authors' tabular-games code
    return {name: optax.adam(config.lr_critic if "critic" in name else config.lr) for name in NETS}


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    env = wrap_env(env, config)
    n, a, s = env.num_agents, env.num_base_actions, flat_obs_dim(env, env_params)
    hidden = (config.hidden, config.hidden)
    nets = {"actor": TorchMLP(hidden, a + 1), "critic": TorchMLP(hidden, 1),
            "med_actor": TorchMLP(hidden, a), "med_critic": TorchMLP(hidden, n)}
    keys = jax.random.split(key, len(NETS))
    obs = jnp.zeros((s,))
    params = {
        "actor": init_per_agent(nets["actor"], keys[0], n, obs),
        "critic": init_per_agent(nets["critic"], keys[1], n, obs),
        # the mediator sees the state, the coalition and (actor only) whom it acts for (M:
        # tabular-games vanilla controller's `n_inputs`); the state: see `mediator_state`
        "med_actor": nets["med_actor"].init(keys[2], jnp.zeros((n * s + 2 * n,)))["params"],
        "med_critic": nets["med_critic"].init(keys[3], jnp.zeros((n * s + n,)))["params"],
    }
    tx = _optimisers(config)
    return State(params=params, opt_state={k: tx[k].init(params[k]) for k in NETS},
                 log_lambda=jnp.full((n,), np.log(config.lambda_init), jnp.float32),
                 iteration=jnp.zeros((), jnp.int32), config=config, nets=nets,
                 num_base_actions=a)


def entropy_coef(state: State) -> jax.Array:
    """beta = max(entropy_min, entropy_start - entropy_decay * iteration) (dcl.md §2.9)."""
    c = state.config
    return jnp.maximum(c.entropy_min, c.entropy_start - c.entropy_decay * state.iteration)


# --- networks --------------------------------------------------------------------------------------

def mediator_state(obs: jax.Array) -> jax.Array:
    """The mediator's view of the state, `[..., N * S]` from `obs[..., N, S]`: all agents'
    observations joined. Ivanov et al.'s mediator sees the global state; in the DCL games every agent
    observes the whole state, and joining the observations keeps that true for any game."""
    return obs.reshape(obs.shape[:-2] + (-1,))


def mediator_actor_input(obs: jax.Array, coalition: jax.Array) -> jax.Array:
    """`[..., N, N*S + 2N]`: row i is (state, coalition, one-hot of i), the input with which the
    mediator chooses agent i's action."""
    n = coalition.shape[-1]
    s = jnp.broadcast_to(mediator_state(obs)[..., None, :], coalition.shape + (obs.shape[-1] * n,))
    c = jnp.broadcast_to(coalition[..., None, :], coalition.shape + (n,))
    who = jnp.broadcast_to(jnp.eye(n, dtype=obs.dtype), coalition.shape + (n,))
    return jnp.concatenate([s, c, who], axis=-1)


def mediator_log_probs(state: State, params, obs, coalition) -> jax.Array:
    """log mu(. | s, C, i) for every agent i, `[..., N, A]`."""
    logits = state.nets["med_actor"].apply({"params": params}, mediator_actor_input(obs, coalition))
    return jax.nn.log_softmax(logits, axis=-1)


def mediator_values(state: State, params, obs, coalition) -> jax.Array:
    """V_med(s, C), one value per agent, `[..., N]`."""
    x = jnp.concatenate([mediator_state(obs), coalition], axis=-1)
    return state.nets["med_critic"].apply({"params": params}, x)


def agent_log_probs(state: State, params, obs) -> jax.Array:
    """log pi^i(. | o^i) over the A game actions and delegate, `[..., N, A + 1]`."""
    return jax.nn.log_softmax(apply_per_agent(state.nets["actor"], params, obs), axis=-1)


def agent_values(state: State, params, obs) -> jax.Array:
    return C.values(state.nets["critic"], params, obs)


def act(state: State, obs, key, evaluate: bool = False):
    """Agents choose (`[E, N]` in {0..A}), then the mediator proposes an action for every agent
    given the coalition; the wrapper executes the proposals of the delegating agents only. The
    paper's curves are of the stochastic policies (dcl.md §5.1), so evaluation samples too."""
    del evaluate
    k_agents, k_mediator = jax.random.split(key)
    choice = D.sample(k_agents, agent_log_probs(state, state.params["actor"], obs))
    coalition = coalition_of(choice, state.num_base_actions)
    proposal = D.sample(k_mediator,
                        mediator_log_probs(state, state.params["med_actor"], obs, coalition))
    return Delegation(action=choice, mediator=proposal), {}


# --- losses ----------------------------------------------------------------------------------------

def prepare(batch, num_base_actions: int) -> dict:
    """The arrays the losses use, from a `Trajectory` of `Delegation`s, leaves `[T, E, ...]`.

    `next_coalition[t]` is the coalition of step t + 1 of the same episode. The authors set done at
    an episode's end (truncation included), so nothing bootstraps past it (`not_done` = 0) and the
    next coalition there never matters; after the rollout's last step it is taken as empty.
    """
    dtype = batch.reward.dtype
    coalition = coalition_of(batch.action.action, num_base_actions).astype(dtype)
    next_coalition = jnp.concatenate([coalition[1:], jnp.zeros_like(coalition[:1])], axis=0)
    done = (batch.terminated | batch.truncated).astype(dtype)
    return {"obs": batch.obs, "next_obs": batch.next_obs, "choice": batch.action.action,
            "proposal": batch.action.mediator, "reward": batch.reward, "coalition": coalition,
            "next_coalition": next_coalition, "not_done": 1.0 - done, "valid": batch.valid}


def agent_td_errors(state: State, critic_params, data) -> jax.Array:
    """delta^i = r^i + gamma (1 - d) V^i(o'^i) - V^i(o^i), `[T, E, N]`, differentiable in V(o) only
    (semi-gradient TD(0); the authors' code also back-propagates through V(o'), a residual gradient
    that makes no difference in the one-shot PD)."""
    v = agent_values(state, critic_params, data["obs"])
    v_next = jax.lax.stop_gradient(agent_values(state, critic_params, data["next_obs"]))
    return data["reward"] + state.config.gamma * data["not_done"][..., None] * v_next - v


def agent_critic_loss(critic_params, state: State, data) -> jax.Array:
    """Per-agent mean squared TD error over valid steps, `[N]`."""
    return masked_mean(jnp.square(agent_td_errors(state, critic_params, data)), data["valid"], axis=(0, 1))


def agent_actor_loss(actor_params, state: State, data, advantages, beta) -> jax.Array:
    """Per-agent `-mean(log pi(a|o) A) - beta mean H(pi)` over valid steps, `[N]`; `advantages`
    `[T, E, N]` are constants. H is the full entropy (torch's `Categorical.entropy`)."""
    lp = agent_log_probs(state, actor_params, data["obs"])
    score = -D.log_prob_of(lp, data["choice"]) * jax.lax.stop_gradient(advantages)
    return masked_mean(score - beta * D.entropy(lp), data["valid"], axis=(0, 1))


def mediator_td_errors(state: State, med_critic_params, data) -> jax.Array:
    """delta_med^j = r^j + gamma (1 - d) V_med^j(s', C') - V_med^j(s, C), `[T, E, N]`, differentiable
    in V_med(s, C) only (semi-gradient, as `agent_td_errors`)."""
    v = mediator_values(state, med_critic_params, data["obs"], data["coalition"])
    v_next = jax.lax.stop_gradient(
        mediator_values(state, med_critic_params, data["next_obs"], data["next_coalition"]))
    return data["reward"] + state.config.gamma * data["not_done"][..., None] * v_next - v


def mediator_critic_loss(med_critic_params, state: State, data) -> jax.Array:
    """mean over valid steps of sum_j (delta_med^j)^2, every step whoever delegated (M: `update_mediator`,
    the sum over heads of `MetaAgent.critic_loss`)."""
    sq = jnp.square(mediator_td_errors(state, med_critic_params, data))
    return jnp.sum(masked_mean(sq, data["valid"], axis=(0, 1)))


def ic_slack(state: State, med_critic_params, data) -> jax.Array:
    """g_i = r^i + gamma (1 - d) V_med^i(s', C') - V_med^i(s, C \\ {i}), `[T, E, N]`: agent i's
    estimated gain from being in the coalition (M: pgg-iter `calculate_ic`). Only the
    entries where agent i delegated are used."""
    c = state.config
    n = data["coalition"].shape[-1]
    without = data["coalition"][..., None, :] * (1.0 - jnp.eye(n))  # [T, E, N(i), N]: C \ {i}
    obs = jnp.broadcast_to(data["obs"][..., None, :, :], without.shape[:-1] + data["obs"].shape[-2:])
    v_out = jnp.diagonal(mediator_values(state, med_critic_params, obs, without), axis1=-2, axis2=-1)
    v_next = mediator_values(state, med_critic_params, data["next_obs"], data["next_coalition"])
    return jax.lax.stop_gradient(data["reward"] + c.gamma * data["not_done"][..., None] * v_next
                                 - v_out)


def mediator_advantages(state: State, med_critic_params, data, log_lambda):
    """`(A, g)`, each `[T, E, N]`: A[..., i], the advantage of the mediator's action for agent i, is
    sum_{j in C} delta_med^j, plus lambda_i g_i when constrained; g is the IC slack (`ic_slack`)."""
    delta = jax.lax.stop_gradient(mediator_td_errors(state, med_critic_params, data))
    coalition_sum = jnp.sum(delta * data["coalition"], axis=-1, keepdims=True)
    adv = jnp.broadcast_to(coalition_sum, delta.shape)
    g = ic_slack(state, med_critic_params, data)
    if state.config.constrained:
        adv = adv + jnp.exp(log_lambda) * g
    return adv, g


def mediator_actor_loss(med_actor_params, state: State, data, advantages, beta) -> jax.Array:
    """mean over valid (step, agent) pairs where the agent delegated of
    -log mu(m^i | s, C, i) A^i - beta H(mu(. | s, C, i)). The authors average per agent and then
    concatenate (M: `update_mediator`), which weighs each pair equally too; 0 if nobody delegated."""
    lp = mediator_log_probs(state, med_actor_params, data["obs"], data["coalition"])
    score = -D.log_prob_of(lp, data["proposal"]) * jax.lax.stop_gradient(advantages)
    return masked_mean(score - beta * D.entropy(lp), data["coalition"] * data["valid"][..., None])


def dual_update(log_lambda, slack, mask, dual_lr, bound):
    """log lambda_i <- clip(log lambda_i - dual_lr mean(g_i), -bound, bound), the mean over the
    entries `mask[..., i]` (where agent i delegated); unchanged for an agent without any.

    Descent on log lambda along the constraint's slack, as the authors' code (M: pgg-iter `update_lambda`):
    the Lagrangian's derivative in lambda is g, so a violated constraint (g < 0) raises lambda.
    """
    axes = tuple(range(slack.ndim - 1))
    new = jnp.clip(log_lambda - dual_lr * masked_mean(slack, mask, axis=axes), -bound, bound)
    return jnp.where(jnp.sum(mask, axis=axes) > 0, new, log_lambda)


# --- update ----------------------------------------------------------------------------------------

def losses(params, state: State, data, log_lambda, beta):
    """Every loss of one round at `params`, with the advantages from the critics in `params`
    (constants): `(total, aux)`; the four networks' parameters are disjoint, so the gradient of the
    total with respect to each network is the gradient of its own loss."""
    delta = jax.lax.stop_gradient(agent_td_errors(state, params["critic"], data))
    med_adv, slack = mediator_advantages(state, params["med_critic"], data, log_lambda)
    terms = {
        "agent_actor_loss": agent_actor_loss(params["actor"], state, data, delta, beta),
        "agent_critic_loss": agent_critic_loss(params["critic"], state, data),
        "mediator_actor_loss": mediator_actor_loss(params["med_actor"], state, data, med_adv, beta),
        "mediator_critic_loss": mediator_critic_loss(params["med_critic"], state, data),
    }
    total = sum(jnp.sum(v) for v in terms.values())
    return total, (terms, slack)


def update(state: State, batch):
    c = state.config
    data = prepare(batch, state.num_base_actions)
    beta = entropy_coef(state)
    tx = _optimisers(c)
    delegated = data["coalition"] * data["valid"][..., None]
    anyone = jnp.sum(delegated) > 0
    grad_fn = jax.grad(losses, has_aux=True)

    def round_(carry, _):
        params, opt_state = carry
        grads, (terms, slack) = grad_fn(params, state, data, state.log_lambda, beta)
        new_params, new_opt = {}, {}
        for name in NETS:
            upd, new_opt[name] = tx[name].update(grads[name], opt_state[name], params[name])
            new_params[name] = optax.apply_updates(params[name], upd)
        # the authors skip the mediator's step when nobody delegated (M: `update_mediator`); a zero gradient
        # would still move Adam's parameters through its momentum. Its critic learns from every step.
        keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda x, y: jnp.where(anyone, x, y), new, old)
        new_params["med_actor"] = keep(new_params["med_actor"], params["med_actor"])
        new_opt["med_actor"] = keep(new_opt["med_actor"], opt_state["med_actor"])
        return (new_params, new_opt), (terms, slack)

    (params, opt_state), (terms, slacks) = jax.lax.scan(
        round_, (state.params, state.opt_state), None, c.num_updates)
    # one dual step per iteration, on the slack from the critic before this iteration's rounds
    log_lambda = state.log_lambda
    if c.constrained:
        log_lambda = dual_update(log_lambda, slacks[0], delegated, c.dual_lr, c.log_lambda_bound)
    new_state = state.replace(params=params, opt_state=opt_state, log_lambda=log_lambda,
                              iteration=state.iteration + 1)
    metrics = {f"mediated/{k}": jnp.mean(v, axis=0) for k, v in terms.items()}  # before each step
    metrics.update({
        "mediated/delegation_rate": masked_mean(data["coalition"], data["valid"], axis=(0, 1)),
        "mediated/ic_slack": masked_mean(slacks[0], delegated, axis=(0, 1)),  # where i delegated
        "mediated/entropy_coef": beta,
    })
    if c.constrained:
        metrics["mediated/lambda"] = jnp.exp(log_lambda)  # [N]
    return new_state, metrics


def eval_metrics(state: State, batch) -> dict:
    """From the evaluation rollout: delegation rate `[N]` and the frequency of each executed game
    action `[N, A]`."""
    executed = jax.nn.one_hot(batch.info["executed"], state.num_base_actions)
    return {"mediated/eval_delegation_rate": masked_mean(batch.info["coalition"], batch.valid,
                                                         axis=(0, 1)),
            "mediated/eval_executed_frequency": masked_mean(executed, batch.valid, axis=(0, 1))}
