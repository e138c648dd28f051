"""Independent Q-learning, HSD's IQL baseline on STS2 (cm3-hsd.md §5.5; [C-HSD alg_iql.py]).

One Q(o) -> 128 -> 128 -> A network shared by the agents, trained off-policy on the team reward,
which every agent receives as its own:

    y^n = R + gamma (1 - done) max_a Q'(o'^n, a),   L = mean over (minibatch, agents) of (y^n - Q(o^n, a^n))^2

with an Adam step (lr 1e-4) and a Polyak update of Q' (tau = 0.01) after every step. Acting is
eps-greedy (0.5 -> 0.05 over 1000 episodes after the warm-up), greedy when evaluating; replay 1e5,
FIFO; batch 256 every 10 env steps; 10 warm-up episodes of uniform actions (§5.4).

The schedule, buffer and train-step accounting are `jaxmcg.value_agents`; train steps run after
each batch of episodes instead of interleaved with its steps (see there). `loss` is a pure function
of (params, target_params, minibatch) and a `q_fn`, so HSD's low level can pass a skill-conditioned
network (o and z concatenated) and its own per-agent rewards.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import replay
from jaxmcg import value_agents as V
from jaxmcg.offpolicy import chosen, max_targets


@dataclasses.dataclass(frozen=True)
class Config:
    # §5.5 / [C-HSD config_iql.json]: STS2 values
    hidden: tuple[int, ...] = (128, 128)  # nn_iql n_h1, n_h2
    network: str = "auto"  # "mlp"; "auto" = the §2.5 branch nets on Checkers / lane merge, else mlp
    team_reward: str = "auto"  # "sum" of the agents' rewards, "first" (STS2 broadcasts it), "auto"
    lr: float = 1e-4  # lr_Q
    gamma: float = 0.99
    tau: float = 0.01
    eps_start: float = 0.5
    eps_end: float = 0.05
    eps_div: float = 1000.0  # episodes of the linear decay
    buffer_size: int = 100_000
    batch_size: int = 256
    steps_per_train: int = 10
    pretrain_episodes: int = 10  # uniform actions while idx < 10 (episodes 1-9), no training
    truncation_bootstrap: bool = False  # False: done at the time limit cuts the bootstrap (A-CM3-6)

    def validate(self) -> None:
        V.validate_common(self)


@struct.dataclass
class State:
    params: dict  # shared Q network
    target_params: dict
    opt_state: optax.OptState
    buffer: replay.Replay
    episodes: jax.Array  # episodes collected so far
    remainder: jax.Array  # env steps since the last due train step, mod steps_per_train
    train_steps: jax.Array  # minibatch steps taken so far
    key: jax.Array  # minibatch sampling
    config: Config = struct.field(pytree_node=False)
    network: object = struct.field(pytree_node=False)
    setup: V.Setup = struct.field(pytree_node=False)


def check_env(env, env_params, config: Config) -> V.Setup:
    """Discrete actions, flat observations, an episode that fits the buffer (traced with
    eval_shape, nothing compiled); returns the resolved network and team-reward mode."""
    return _checked(env, env_params, config)[0]


def _checked(env, env_params, config: Config):
    """`(setup, obs shape)` after the checks of `check_env`."""
    obs, _ = V.check_flat_discrete(env, env_params, config, "IQL")
    return V.Setup(V.resolve_network(env, config), V.resolve_team_reward(env, config)), obs


def init(key, env, env_params, config: Config = Config()) -> State:
    config.validate()
    setup, obs = _checked(env, env_params, config)
    network = V.make_network(setup.network, env, config.hidden, V.num_actions(env, env_params, "IQL"))
    n = env.num_agents
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731

    def arrays(key):  # one compiled program: an eager init compiles op by op
        k_net, k_state = jax.random.split(key)
        params = network.init(k_net, zeros(obs))["params"]
        example = {"obs": zeros(obs), "action": jnp.zeros((n,), jnp.int32),
                   "reward": jnp.zeros((n,)), "next_obs": zeros(obs), "done": jnp.zeros(())}
        zero = jnp.zeros((), jnp.int32)
        return dict(params=params, target_params=params,  # target <- main at the start [C-HSD]
                    opt_state=optax.adam(config.lr).init(params),
                    buffer=replay.init(example, config.buffer_size), episodes=zero,
                    remainder=zero, train_steps=zero, key=k_state)

    return State(**jax.jit(arrays)(key), config=config, network=network, setup=setup)


def q_values(state: State, obs) -> jax.Array:
    """Q(o, .) of the main network, `[..., N, A]`."""
    return state.network.apply({"params": state.params}, obs)


def act(state: State, obs, key, evaluate: bool = False):
    """Actions `[E, N]`: eps-greedy on Q (uniform in the warm-up), greedy when evaluating."""
    return V.epsilon_greedy_actions(q_values(state, obs), key, state.episodes, state.config,
                                    evaluate), {}


def loss(params, target_params, batch: dict, mask: jax.Array,
         q_fn: Callable[[dict, jax.Array], jax.Array], gamma: float):
    """IQL loss on a minibatch: mean over valid rows (`mask[B]`) and agents of (y - Q(o, a))^2, with
    y = r + gamma (1 - done) max_a Q_target(o', a) (§5.3, §5.5).

    `batch`: obs, next_obs `[B, N, ...]`, action `[B, N]`, reward `[B, N]` (per agent: the team
    reward repeated, or HSD's low-level reward), done `[B]` or `[B, N]`; `q_fn(params, obs) ->
    [B, N, A]`. Returns `(loss, mean Q(o, a) over valid rows)`.
    """
    reward = batch["reward"]
    done = batch["done"].reshape(batch["done"].shape + (1,) * (reward.ndim - batch["done"].ndim))
    y = max_targets(reward, q_fn(target_params, batch["next_obs"]), done, gamma)
    q_taken = chosen(q_fn(params, batch["obs"]), batch["action"])
    return replay.masked_mean(jnp.square(y - q_taken), mask), replay.masked_mean(q_taken, mask)


def transitions(state: State, batch) -> dict:
    """The replay rows of a batch, leaves `[T, E, ...]`: the team reward given to every agent."""
    r = V.team_reward(batch.reward, state.setup.team_reward)
    return {"obs": batch.obs, "action": batch.action,
            "reward": jnp.broadcast_to(r[..., None], batch.reward.shape),
            "next_obs": batch.next_obs,
            "done": V.done_flags(batch, state.config.truncation_bootstrap)}


def update(state: State, batch):
    """Push the batch's valid transitions, then take the minibatch steps the authors' one step
    every `steps_per_train` env steps owes (none before the warm-up ends)."""
    q_fn = lambda p, o: state.network.apply({"params": p}, o)  # noqa: E731
    loss_fn = lambda p, t, items, mask: loss(p, t, items, mask, q_fn, state.config.gamma)  # noqa: E731
    return V.offpolicy_update(state, batch, transitions(state, batch), loss_fn, "iql")


def eval_metrics(state: State, batch) -> dict:
    """Win, lose and draw rates of the greedy evaluation episodes on STS2 (Table 4.1)."""
    return V.outcome_rates(batch, "iql")
