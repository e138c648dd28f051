"""PG-c: independent REINFORCE with continuous give-reward actions (thesis §2.9 "PG-c", L1640, L1745).

Each agent's policy factorizes as pi(a_d, a_r|o) = pi(a_d|o) pi(a_r|o): an eps-mixed categorical
move a_d, and amounts a_r in [0, R_max]^(N-1) for the other agents (index order, self skipped):

    u ~ N(f_eta(o), I),    a_r = R_max sigmoid(u),
    log pi(a_r|o) = log N(u; f_eta(o), I) - sum_k log(R_max sigmoid(u_k) (1 - sigmoid(u_k))).

The Jacobian term depends on the sample only, so it changes the density but not the gradient.
Both parts are trained together by one plain-SGD REINFORCE step on the joint log-likelihood, with the
entropy bonus on the move part only (as the authors' code), on each agent's total reward
extrinsic + received - cost_coef * given: the giver's policy pays for giving (thesis L1640).
The environment is wrapped in `ObserveGiven` (cumulative given amounts in the observation, A18).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import distributions as D
from jaxmcg.algos.pg_d import make_update, others_to_matrix, total_rewards
from jaxmcg.incentives import others_onehot
from jaxmcg.losses import reinforce_loss
from jaxmcg.networks import MLP, apply_per_agent, init_per_agent
from jaxmcg.policy import flat_obs_dim, log_probs, num_actions, reinforce_terms
from jaxmcg.returns import discounted_returns
from jaxmcg.wrappers import GiveAction, wrap_observe_given


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (64, 32)  # move policy: the ER policy MLP (§2.10)
    give_hidden: tuple[int, ...] = (64, 16)  # f_eta: the ER incentive MLP sizes (authors' n_hr1/n_hr2)
    r_max: float = 2.0  # thesis L1759
    cost_coef: float = 1.0  # the giver's reward pays what it gives (thesis L1640; ER code: 1)
    # Table B.4 PG-c: 1e-3 at one episode per update. Batch-mean losses over hundreds of parallel
    # episodes learn slowly at that rate (see pg.Config.lr); pass a larger lr for short runs.
    lr: float = 1e-3
    entropy_coef: float = 0.1  # Table B.4 beta, PG-c
    eps_start: float = 1.0  # Table B.4
    eps_end: float = 0.1  # Table B.4
    eps_div: float = 1000.0  # Table B.4, in iterations
    gamma: float = 0.99  # thesis L1743
    observe_given: bool = True  # cumulative-given block in observations (L1727, A18)
    # The thesis writes pi(a_r|o). The authors' code also feeds the others' current moves to f_eta,
    # as LIO's incentive function; True reproduces that.
    condition_on_actions: bool = False
    # Not in the thesis: clip f_eta(o) to [-mean_limit, mean_limit] (no gradient outside). The
    # Gaussian score never vanishes, so with one episode per update (Table B.4) f_eta's weights
    # random-walk and can overflow (NaN in 2 of 20 runs of 50k episodes here). A clip stops that
    # but also pins f_eta at -limit for good once giving is unlearned. None: as the thesis.
    mean_limit: float | None = None

    def validate(self) -> None:
        if not self.r_max > 0:
            raise ValueError(f"r_max={self.r_max} is invalid: must be > 0")
        if not self.cost_coef >= 0:
            raise ValueError(f"cost_coef={self.cost_coef} is invalid: must be >= 0")
        if self.mean_limit is not None and not self.mean_limit > 0:
            raise ValueError(f"mean_limit={self.mean_limit} is invalid: must be > 0 or None")


@struct.dataclass
class State:
    params: dict  # {"move": policy parameters, "give": f_eta parameters}, each stacked over agents
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)
    give_net: object = struct.field(pytree_node=False)
    num_moves: int = struct.field(pytree_node=False)


wrap_env = wrap_observe_given


epsilon = D.epsilon


def give_log_prob(u, mean, r_max: float) -> jax.Array:
    """log pi(a_r|o) of a_r = r_max sigmoid(u), u ~ N(mean, I), summed over the last axis.

    Change of variables: log N(u; mean, I) - sum_k log(da_k/du_k), da/du = r_max s (1 - s).
    """
    log_normal = -0.5 * jnp.square(u - mean) - 0.5 * np.log(2.0 * np.pi)
    log_jac = np.log(r_max) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
    return jnp.sum(log_normal - log_jac, axis=-1)


def init(key, env, env_params, config: Config) -> State:
    """`env` should be wrapped with `wrap_env` (done here if it is not)."""
    config.validate()
    env = wrap_env(env, config)
    k_move, k_give = jax.random.split(key)
    a, n = num_actions(env, env_params), env.num_agents
    obs_dim = flat_obs_dim(env, env_params)
    policy = MLP(tuple(config.hidden), a)
    give_net = MLP(tuple(config.give_hidden), n - 1, use_output_bias=False)  # as LIO's (A23)
    example = jnp.zeros((obs_dim,), jnp.float32)
    extra = jnp.zeros(((n - 1) * a,), jnp.float32) if config.condition_on_actions else None
    params = {
        "move": init_per_agent(policy, k_move, n, example),
        "give": init_per_agent(give_net, k_give, n, example, extra),
    }
    return State(params=params, iteration=jnp.zeros((), jnp.int32), config=config,
                 policy=policy, give_net=give_net, num_moves=a)


def give_mean(state: State, give_params, obs, moves) -> jax.Array:
    """f_eta(o) (or f_eta(o, a^{-i}) with `condition_on_actions`), `[..., N, N-1]`.

    The others' one-hot moves enter as the module's `extra` input: the MLP joins them to o at its
    input; a conv net (ac_c on images) after its first dense layer."""
    extra = None
    if state.config.condition_on_actions:
        extra = others_onehot(moves, state.num_moves).astype(obs.dtype)
    mean = apply_per_agent(state.give_net, give_params, obs, extra)
    limit = state.config.mean_limit
    return mean if limit is None else jnp.clip(mean, -limit, limit)


def act(state: State, obs, key, evaluate: bool = False):
    """Sample moves (eps = 0 when evaluating) and amounts (sampled in evaluation too, as the authors'
    evaluation); returns `(GiveAction, {"u": u})` with the pre-sigmoid sample `u [E, N, N-1]` kept
    for the update (inverting the sigmoid loses precision)."""
    k_move, k_give = jax.random.split(key)
    eps = 0.0 if evaluate else epsilon(state)
    moves = D.sample(k_move, log_probs(state.policy, state.params["move"], obs, eps))
    mean = give_mean(state, state.params["give"], obs, moves)
    u = mean + jax.random.normal(k_give, mean.shape, mean.dtype)
    given = others_to_matrix(state.config.r_max * jax.nn.sigmoid(u))
    return GiveAction(moves, given), {"u": u}


def policy_loss(params, state: State, batch) -> jax.Array:
    """Sum over agents of -sum_t [log pi~(a_d|o) + log pi(a_r|o)] G_t - c_ent sum_t H(pi~(.|o))."""
    c = state.config
    moves = batch.action.action
    logp_move, ent = reinforce_terms(state.policy, params["move"], batch.obs, moves, epsilon(state))
    mean = give_mean(state, params["give"], batch.obs, moves)
    logp = logp_move + give_log_prob(batch.extras["u"], mean, c.r_max)
    returns = discounted_returns(total_rewards(batch, c.cost_coef), batch.valid[..., None], c.gamma)
    return jnp.sum(reinforce_loss(logp, returns, ent, batch.valid, c.entropy_coef))


update, eval_metrics = make_update("pg_c", policy_loss)
