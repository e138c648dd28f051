"""AC-c: independent actor-critic with continuous give-reward actions (thesis §2.9 "AC-c", L1787).

The actor-critic analogue of PG-c (`pg_c`), the thesis' Cleanup baseline. Each agent's policy
factorizes as pi(a_d, a_r|o) = pi(a_d|o) pi(a_r|o): an eps-mixed categorical move a_d and amounts
a_r in [0, R_max]^(N-1) for the other agents (index order, self skipped), R_max = 2.0:

    u ~ N(f_eta(o), I),    a_r = R_max sigmoid(u),
    log pi(a_r|o) = log N(u; f_eta(o), I) - sum_k log(R_max sigmoid(u_k) (1 - sigmoid(u_k)))

(`pg_c.give_log_prob`). The learner is `ac`'s, in the authors' order (§2.2 AC variant, A6):
critic Adam step on the TD loss with the target net; then one SGD step of both actor parts on

    -sum_t [log pi~(a_d,t|o_t) + log pi(a_r,t|o_t)] delta_t - c_ent sum_t H(pi~(.|o_t))

(sum over time, mean over environments, A8; entropy of the move part only, as PG-c), with
delta_t = r_t + gamma V(o'_t) - V(o_t) from the main critic as a constant; then the soft target
update. r is each agent's total reward, extrinsic + received - cost_coef * given: the giver's policy
pays for giving (thesis L1640), and the critic learns the value of that total.

Defaults are Table B.5's 7x7 AC-c column and adapt to the observations as `ac_d`'s do
(`network="auto"`: the Cleanup conv torso for images, an MLP for flat observations; no cumulative-
given block on images). f_eta has its own torso of the same kind: `give_hidden=None` is (64, 64)
for conv (the thesis' Cleanup incentive-function sizes, §2.10) and the ER incentive MLP's (64, 16)
for flat observations. For 10x10 Cleanup pass lr=1e-3, eps_div=1000 (Table B.5).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import distributions as D
from jaxmcg.algos import pg_c
from jaxmcg.algos.ac_d import init_critics, make_update, resolve_config, validate_common, wrap_env
from jaxmcg.algos.pg_c import give_log_prob, give_mean
from jaxmcg.algos.pg_d import total_rewards  # noqa: F401  (extrinsic + received - cost * given)
from jaxmcg.losses import reinforce_loss
from jaxmcg.networks import init_per_agent, network
from jaxmcg.policy import num_actions, obs_example, reinforce_terms

# give_hidden=None: f_eta's sizes per torso (thesis §2.10): Cleanup FC64-FC64, ER incentive (64, 16)
DEFAULT_GIVE_HIDDEN = {"conv": (64, 64), "mlp": (64, 16)}


@dataclasses.dataclass(frozen=True)
class Config:
    network: str = "auto"  # "auto": "conv" for image observations, "mlp" for flat ones (ac_d doc)
    hidden: tuple[int, ...] | None = None  # move policy; None: ac_d.DEFAULT_HIDDEN[network]
    critic_hidden: tuple[int, ...] | None = None  # None: as `hidden`
    give_hidden: tuple[int, ...] | None = None  # f_eta; None: DEFAULT_GIVE_HIDDEN[network]
    r_max: float = 2.0  # thesis L1787
    cost_coef: float = 1.0  # the giver's reward pays what it gives (thesis L1640)
    lr: float = 1e-4  # actor SGD (both parts), Table B.5 AC-c 7x7 (10x10: 1e-3)
    # (at one episode per update; losses are batch means (A8), so many parallel episodes per
    # update learn slowly at this rate: pass a larger lr for short runs, as the tests do)
    lr_critic: float = 1e-3  # Adam, thesis L1787
    tau: float = 0.01  # target critic, thesis L1787
    entropy_coef: float = 0.1  # thesis L1784-1787, all Cleanup methods
    eps_start: float = 0.5  # Table B.5
    eps_end: float = 0.05  # Table B.5
    eps_div: float = 100.0  # Table B.5 AC-c 7x7 (10x10: 1000), in iterations
    gamma: float = 0.99  # thesis L1743
    mask_terminal: bool = False  # False: bootstrap at every step, as the authors' code (A6)
    observe_given: bool = True  # cumulative-given block, flat observations only (ac_d doc)
    # As pg_c: True also feeds the others' current one-hot moves to f_eta (as `extra`: at the MLP's
    # input, after the conv torso's first dense layer).
    condition_on_actions: bool = False
    # As pg_c (not in the thesis): clip f_eta(o) to [-mean_limit, mean_limit]; None: no clip.
    mean_limit: float | None = None

    def validate(self) -> None:
        validate_common(self)
        if not self.r_max > 0:
            raise ValueError(f"r_max={self.r_max} is invalid: must be > 0")
        if self.mean_limit is not None and not self.mean_limit > 0:
            raise ValueError(f"mean_limit={self.mean_limit} is invalid: must be > 0 or None")


@struct.dataclass
class State:
    """`ac.State`'s fields (so `ac.update` runs on it) and those `pg_c.act`/`give_mean` read."""

    params: dict  # {"move": policy parameters, "give": f_eta parameters}, each stacked over agents
    critic_params: dict
    target_params: dict
    critic_opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)  # resolved: no "auto", no None sizes
    policy: object = struct.field(pytree_node=False)
    give_net: object = struct.field(pytree_node=False)
    critic: object = struct.field(pytree_node=False)
    num_moves: int = struct.field(pytree_node=False)


epsilon = D.epsilon


def init(key, env, env_params, config: Config) -> State:
    """`env` should be wrapped with `wrap_env` (done here if it is not)."""
    config.validate()
    env = wrap_env(env, config)
    config = resolve_config(config, env, env_params)
    if config.give_hidden is None:
        config = dataclasses.replace(config, give_hidden=DEFAULT_GIVE_HIDDEN[config.network])
    k_move, k_give, k_critic = jax.random.split(key, 3)
    a, n = num_actions(env, env_params), env.num_agents
    example = obs_example(env, env_params)
    policy = network(config.network, config.hidden, a)
    give_net = network(config.network, config.give_hidden, n - 1, use_output_bias=False)  # as pg_c
    extra = jnp.zeros(((n - 1) * a,), jnp.float32) if config.condition_on_actions else None
    params = {
        "move": init_per_agent(policy, k_move, n, example),
        "give": init_per_agent(give_net, k_give, n, example, extra),
    }
    critic, critic_params, target_params, opt_state = init_critics(k_critic, n, example, config)
    return State(params=params, critic_params=critic_params, target_params=target_params,
                 critic_opt_state=opt_state, iteration=jnp.zeros((), jnp.int32), config=config,
                 policy=policy, give_net=give_net, critic=critic, num_moves=a)


# Sample moves (eps = 0 when evaluating) and amounts (sampled in evaluation too, as the authors'
# evaluation): `(GiveAction, {"u": u})`, u the pre-sigmoid sample. State has what pg_c.act reads.
act = pg_c.act


def actor_loss(params, state: State, batch, advantages, eps) -> jax.Array:
    """Sum over agents of -sum_t [log pi~(a_d|o) + log pi(a_r|o)] A_t - c_ent sum_t H(pi~(.|o))."""
    c = state.config
    moves = batch.action.action
    logp_move, ent = reinforce_terms(state.policy, params["move"], batch.obs, moves, eps)
    mean = give_mean(state, params["give"], batch.obs, moves)
    logp = logp_move + give_log_prob(batch.extras["u"], mean, c.r_max)
    return jnp.sum(reinforce_loss(logp, advantages, ent, batch.valid, c.entropy_coef))


update, eval_metrics = make_update("ac_c", actor_loss)
