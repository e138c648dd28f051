"""AMD: Adaptive Mechanism Design (Baumann, Graepel & Shawe-Taylor 2020), the thesis' ER(2,1)
baseline for MetaGrad (App. C.3, Fig C.1; spec/thesis.md §3.5).

A planner pays agent j the amount v_j = r_max sigmoid(f_eta(s_t, a_t))_j and anticipates one naive
policy-gradient step of each agent: the first-order change of the planner's value is
sum_j alpha_j <g_j v_j, g_j R^ID_t> with g_j = grad_{theta^j} log pi^j(a^j_t|s_t), so

    L_AMD(eta) = -sum_j alpha_j v_j(eta) R^ID_t ||g_j||^2 + c ||v(eta)||_2      ([CODE Planning_Agent])

summed over the steps of an episode, mean over episodes (A8), Adam with gradient clipping at 10.
The agents are actor-critic learners with single-layer linear policies, "to match the open-source
implementation" (thesis L2063); alpha_j is their learning rate. The code updates every step; here
the planner and the agents update once per batch of episodes.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg.designer import check_designer_env, init_designer_nets, make_agents, wrap_designer
from jaxmcg.losses import time_sum_env_mean
from jaxmcg.networks import NETWORKS


@dataclasses.dataclass(frozen=True)
class Config:
    # agents: actor-critic with a linear policy (hidden ()), gamma 0.95 ([CODE] config, §3.5)
    learner: str = "ac"
    learner_params: tuple = (("hidden", ()), ("critic_hidden", (64, 16)), ("lr", 1e-2),
                             ("gamma", 0.95), ("eps_start", 0.0), ("eps_end", 0.0))
    share_parameters: bool = False
    network: str = "auto"
    hidden: tuple[int, ...] = (64, 16)  # planner MLP, [CODE] config (§3.5)
    r_max: float = 2.0  # v in (0, r_max); the thesis' ER incentive range (§3.4)
    lr: float = 2.74e-5  # planner Adam, [CODE] config (§3.5)
    cost_coef: float = 4.24e-4  # c, [CODE] cost_param (§3.5)
    grad_clip: float = 10.0  # [CODE]

    def __post_init__(self):
        object.__setattr__(self, "learner_params", tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in self.learner_params))

    def validate(self) -> None:
        if self.network not in ("auto",) + NETWORKS:
            raise ValueError(f"network={self.network!r} is invalid; valid: auto, {', '.join(NETWORKS)}")
        if not self.r_max > 0:
            raise ValueError(f"r_max={self.r_max!r} gives an empty incentive range (0, r_max); "
                             "must be > 0")


@struct.dataclass
class State:
    learner_state: object
    eta: dict
    opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    agents: object = struct.field(pytree_node=False)
    planner: object = struct.field(pytree_node=False)


wrap_env = wrap_designer


def check_env(env, env_params, config: Config) -> None:
    check_designer_env(env, config)
    agents = make_agents(config, env, "amd")
    if not hasattr(agents.config, "lr"):
        raise ValueError(f"learner={config.learner!r} has no learning rate `lr`; AMD weighs each "
                         "agent's anticipated step by it (e.g. learner='ac' or 'pg')")


def _optimizer(config: Config):
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.lr))


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    env = wrap_env(env, config)
    agents = make_agents(config, env, "amd")
    k_agents, k_net = jax.random.split(key)
    planner, eta, _, _ = init_designer_nets(k_net, env, env_params, config, env.num_agents, True,
                                            False)
    return State(learner_state=agents.init(k_agents, env, env_params), eta=eta,
                 opt_state=_optimizer(config).init(eta), iteration=jnp.zeros((), jnp.int32),
                 config=config, agents=agents, planner=planner)


def act(state: State, obs, key, evaluate: bool = False):
    return state.agents.act(state.learner_state, obs, key, evaluate=evaluate)


def payments(state: State, eta, batch) -> jax.Array:
    """v_j(s_t, a_t) = r_max sigmoid(f_eta)_j, `[T, E, N]`."""
    info = batch.info
    out = state.planner.apply({"params": eta}, info["designer_obs"], info["designer_features"])
    return state.config.r_max * jax.nn.sigmoid(out)


def score_norms(state: State, batch) -> jax.Array:
    """||grad_{theta^j} log pi^j(a^j_t|o^j_t)||^2 per sample and agent, `[T, E, N]`."""
    agents, lstate = state.agents, state.learner_state

    def one(obs, action):  # one step of one environment: obs [N, ...], action [N]
        f = lambda p: agents.log_prob(lstate.replace(params=p), obs[None], action[None])[0]  # noqa: E731
        jac = jax.jacrev(f)(lstate.params)  # leaves [N, *param]
        return sum(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=-1)
                   for x in jax.tree_util.tree_leaves(jac))

    t, e = batch.action.shape[:2]
    flat = lambda x: x.reshape((t * e,) + x.shape[2:])  # noqa: E731
    norms = jax.vmap(one)(jax.tree_util.tree_map(flat, batch.obs), flat(batch.action))
    return norms.reshape(t, e, -1)


def planner_loss(eta, state: State, batch, norms) -> jax.Array:
    """L_AMD: minus the anticipated first-order gain, plus c ||v||_2 per step (module docstring)."""
    v = payments(state, eta, batch)
    alpha = state.agents.config.lr
    gain = alpha * jnp.sum(v * norms, axis=-1) * batch.info["designer_reward"]
    cost = state.config.cost_coef * jnp.sqrt(jnp.sum(jnp.square(v), axis=-1))
    return time_sum_env_mean(cost - gain, batch.valid)


def update(state: State, batch):
    """The agents' step on r + v (incentives of the rollout's eta) and the planner's step."""
    v = jax.lax.stop_gradient(payments(state, state.eta, batch))
    norms = jax.lax.stop_gradient(score_norms(state, batch))
    loss, grads = jax.value_and_grad(planner_loss)(state.eta, state, batch, norms)
    upd, opt_state = _optimizer(state.config).update(grads, state.opt_state, state.eta)
    lstate, lmetrics = state.agents.update(state.learner_state, batch.replace(reward=batch.reward + v))
    paid = jnp.mean(jnp.sum(v * batch.valid[..., None], axis=0), axis=0)
    return state.replace(eta=optax.apply_updates(state.eta, upd), opt_state=opt_state,
                         learner_state=lstate, iteration=state.iteration + 1), \
        {"amd/loss": loss, "amd/paid_per_episode": paid, **lmetrics}


def eval_metrics(state: State, batch) -> dict:
    """R^ID minus the payments (as the thesis reports) and the payments per agent per episode."""
    valid = batch.valid
    v = payments(state, state.eta, batch) * valid[..., None]
    rid = jnp.sum(batch.info["designer_reward"] * valid, axis=0)
    return {"designer_return": jnp.mean(rid - jnp.sum(v, axis=(0, 2))),
            "amd/received": jnp.mean(jnp.sum(v, axis=0), axis=0)}
