"""AC-d: independent actor-critic with discrete give-reward actions (thesis §2.9 "AC-d", L1787).

The actor-critic analogue of PG-d (`pg_d`), the thesis' Cleanup baseline. Each agent's action space
is A x {no-op, give}^(N-1), one flat categorical over A * 2^(N-1) actions encoded as in `pg_d`
(flat = move + A * code, bit k of code: give R_a = 2.0 to the k-th other agent). The learner is
`ac`'s, in the authors' order (§2.2 AC variant, A6):

1. critic: Adam step on mean_(t,e) (r + gamma V_target(o') - V(o))^2;
2. actor: SGD step on -sum_t log pi~(flat_t|o_t) delta_t - c_ent sum_t H(pi~(.|o_t)) (sum over time,
   mean over environments, A8), delta_t = r_t + gamma V(o'_t) - V(o_t) from the main critic;
3. target: phi~ <- tau phi + (1 - tau) phi~.

Here r is each agent's *total* reward, extrinsic + received - cost_coef * given: the giver pays what
it gives (thesis L1745), and the critic learns the value of that total.

Defaults are Table B.5's 7x7 AC-d column; they adapt to the observations (choice recorded here):
- `network="auto"` is the thesis' Cleanup conv torso (§2.10: conv 6x3x3 SAME -> FC64 -> FC64) for
  image observations and an MLP for flat ones; `hidden=None` is (64, 64) for conv and the ER policy
  MLP's (64, 32) for flat observations; `critic_hidden=None` is `hidden`.
- The environment is wrapped in `ObserveGiven`, so agents can give. On flat observations (Escape
  Room) they also observe the amounts they gave this episode (A18). An image cannot carry that
  block, so on image observations (Cleanup) `observe_given` has no effect: the observation is the
  environment's own. (The thesis does not say the Cleanup baselines observed what they gave.)
For 10x10 Cleanup pass Table B.5's other column: lr=1e-3, eps_div=1000.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import critic as C
from jaxmcg import distributions as D
from jaxmcg.algos import ac, pg_d
from jaxmcg.algos.pg_d import give_metrics, num_flat_actions, total_rewards
from jaxmcg.networks import init_per_agent, network, resolve_network
from jaxmcg.policy import num_actions, obs_example
from jaxmcg.wrappers import ObserveGiven, wrap_observe_given

NETWORKS = ("auto",) + C.NETWORKS
# hidden=None: per torso (thesis §2.10): Cleanup policy/value FC64-FC64; ER policy MLP (64, 32)
DEFAULT_HIDDEN = {"conv": (64, 64), "mlp": (64, 32)}


@dataclasses.dataclass(frozen=True)
class Config:
    network: str = "auto"  # "auto": "conv" for image observations, "mlp" for flat ones (module doc)
    hidden: tuple[int, ...] | None = None  # None: DEFAULT_HIDDEN[network]
    critic_hidden: tuple[int, ...] | None = None  # None: as `hidden` (§2.10, same torso)
    give_value: float = 2.0  # R_a, thesis L1787
    cost_coef: float = 1.0  # the giver pays what it gives (thesis L1745)
    lr: float = 1e-4  # actor SGD, Table B.5 AC-d 7x7 (10x10: 1e-3)
    # (at one episode per update; losses are batch means (A8), so many parallel episodes per
    # update learn slowly at this rate: pass a larger lr for short runs, as the tests do)
    lr_critic: float = 1e-3  # Adam, thesis L1787
    tau: float = 0.01  # target critic, thesis L1787
    entropy_coef: float = 0.1  # thesis L1784-1787, all Cleanup methods
    eps_start: float = 0.5  # Table B.5
    eps_end: float = 0.05  # Table B.5
    eps_div: float = 100.0  # Table B.5 AC-d 7x7 (10x10: 1000), in iterations
    gamma: float = 0.99  # thesis L1743
    mask_terminal: bool = False  # False: bootstrap at every step, as the authors' code (A6)
    observe_given: bool = True  # cumulative-given block, flat observations only (module doc)

    def validate(self) -> None:
        validate_common(self)
        if not self.give_value > 0:
            raise ValueError(f"give_value={self.give_value} is invalid: must be > 0")


def validate_common(config) -> None:
    """Checks shared by ac_d and ac_c configs."""
    if config.network not in NETWORKS:
        raise ValueError(f"network={config.network!r} is not implemented; valid: {', '.join(NETWORKS)}")
    if not 0.0 <= config.tau <= 1.0:
        raise ValueError(f"tau={config.tau} is invalid: must be in [0, 1]")
    if not config.cost_coef >= 0:
        raise ValueError(f"cost_coef={config.cost_coef} is invalid: must be >= 0")


@struct.dataclass
class State:
    """`ac.State`'s fields (so `ac.update` runs on it) and `pg_d.act`'s (`num_moves`)."""

    params: dict  # flat-action actors, stacked over agents
    critic_params: dict
    target_params: dict
    critic_opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)  # resolved: no "auto", no None sizes
    policy: object = struct.field(pytree_node=False)
    critic: object = struct.field(pytree_node=False)
    num_moves: int = struct.field(pytree_node=False)  # A, the environment's own actions


epsilon = D.epsilon


# ---- observations and networks, shared with ac_c ------------------------------------------------


def has_image_obs(env, env_params=None) -> bool:
    """Whether one agent's observation is an image (rank > 1) rather than a flat vector."""
    inner = env.inner if isinstance(env, ObserveGiven) else env
    params = inner.default_params if env_params is None else env_params
    return len(inner.observation_space(params).shape) > 1


# `ObserveGiven(env)`, observing the given block where observations are flat and
# `config.observe_given` (module doc); `env` itself if it is wrapped already.
wrap_env = wrap_observe_given


def resolve_config(config, env, env_params, sizes=("hidden", "critic_hidden")):
    """`config` with `network="auto"` and the `None` sizes in `sizes` filled in for `env`.

    Raises ValueError when an explicit network does not fit the observations."""
    image = has_image_obs(env, env_params)
    kind = resolve_network(config.network, obs_example(env, env_params))
    if image != (kind == "conv"):
        shape = env.observation_space(env_params).shape
        raise ValueError(
            f"network={kind!r} does not fit observations of shape {shape}: use 'conv' for images, "
            "'mlp' for flat vectors, or 'auto'"
        )
    hidden = tuple(config.hidden) if config.hidden is not None else DEFAULT_HIDDEN[kind]
    out = {"network": kind, "hidden": hidden}
    for name in sizes:
        if name != "hidden":
            value = getattr(config, name)
            out[name] = tuple(value) if value is not None else hidden
    return dataclasses.replace(config, **out)


def init_critics(key, num_agents: int, example, config):
    """`(module, params, target_params, adam_state)` of independent V(o) critics (target = main)."""
    critic, params = C.init_critic(key, num_agents, example, config.critic_hidden, config.network)
    return critic, params, params, optax.adam(config.lr_critic).init(params)


# ---- init / act / update ------------------------------------------------------------------------


def init(key, env, env_params, config: Config) -> State:
    """`env` should be wrapped with `wrap_env` (done here if it is not)."""
    config.validate()
    env = wrap_env(env, config)
    config = resolve_config(config, env, env_params)
    k_actor, k_critic = jax.random.split(key)
    a, n = num_actions(env, env_params), env.num_agents
    example = obs_example(env, env_params)
    policy = network(config.network, config.hidden, num_flat_actions(a, n))
    critic, critic_params, target_params, opt_state = init_critics(k_critic, n, example, config)
    return State(
        params=init_per_agent(policy, k_actor, n, example),
        critic_params=critic_params,
        target_params=target_params,
        critic_opt_state=opt_state,
        iteration=jnp.zeros((), jnp.int32),
        config=config,
        policy=policy,
        critic=critic,
        num_moves=a,
    )


# Sample flat actions from the eps-mixed policies (eps = 0 when evaluating) and decode them:
# `(GiveAction(move, given), {"flat_action": flat})`. State has the fields pg_d.act reads.
act = pg_d.act


def make_update(name: str, actor_loss_fn, actor_action=None):
    """`(update, eval_metrics)` of a give-reward actor-critic: `ac.update` (critic -> actor -> target)
    on the batch with each agent's total reward (`total_rewards`) in place of the extrinsic one and
    `actor_action(batch)` (default: unchanged) as the action, `actor_loss_fn` as the actor's loss.
    Metrics: `ac.update`'s under `<name>/`, and the give metrics (`pg_d.give_metrics`) of the
    training batch under `train/<name>/...` and of evaluation under `<name>/...`."""

    def update(state, batch):
        ac_batch = batch.replace(reward=total_rewards(batch, state.config.cost_coef))
        if actor_action is not None:
            ac_batch = ac_batch.replace(action=actor_action(batch))
        new_state, ac_metrics = ac.update(state, ac_batch, actor_loss_fn)
        metrics = {f"{name}/{k.split('/', 1)[1]}": v for k, v in ac_metrics.items()}
        train = {f"train/{k}": v for k, v in give_metrics(name, batch, state.num_moves).items()}
        return new_state, {**metrics, **train}

    def eval_metrics(state, batch) -> dict:
        """Per-agent total return (extrinsic + received - given), gifts per episode and received
        per own move, as pg_d.eval_metrics."""
        return give_metrics(name, batch, state.num_moves)

    return update, eval_metrics


def flat_action(batch):
    return batch.extras["flat_action"]


# The actor is `ac.actor_loss` on the flat actions: -sum_t log pi~(flat_t|o_t) delta_t - c_ent sum_t H.
actor_loss = ac.actor_loss
update, eval_metrics = make_update("ac_d", actor_loss, flat_action)
