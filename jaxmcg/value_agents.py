"""What the value-based learners of thesis ch. 3-4 share: QMIX, IQL and HSD's two levels
(cm3-hsd.md §2.6, §2.7, §5.2-§5.5).

* The authors' episode schedule [C-CM3, C-HSD train_offpolicy.py]: episodes are numbered from 1;
  while `idx < pretrain_episodes` every action is uniform and nothing trains; a minibatch step runs
  whenever the global environment-step counter reaches a multiple of `steps_per_train` inside an
  episode with `idx >= pretrain_episodes` (the counter also runs during the warm-up); after each such
  episode eps drops by (eps_start - eps_end) / eps_div. `exploration` and `steps_owed` reproduce this.
* jaxmcg's loop hands `update` whole episodes (`n_envs` of them, numbered in env order), so the
  train steps an episode owes run after it rather than interleaved with its steps, and all of them
  sample the buffer holding the whole batch. With `n_envs=1` this is the only difference from the
  authors' accounting; with more, the episodes of one batch also share the parameters they act with
  (each keeps its own eps and warm-up flag).
* `offpolicy_update` pushes a batch's valid transitions (FIFO replay, `jaxmcg.replay`), runs the
  steps owed as a `lax.scan` that `lax.cond` skips past `n` (`jaxmcg.offpolicy.run_train_steps`),
  each one Adam step on a caller's loss then a Polyak update of the targets (tau after every step).
* The utility networks: `QNet` (o -> hidden -> A, STS2 and particle) and the CM3 branch nets of
  §2.5 for Checkers and the lane merge. TF's defaults: Glorot-uniform kernels, zero biases (§5.3);
  the bias-free matrices into a merge layer are the authors' N(0, 0.01) truncated normal.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxmcg import distributions as D
from jaxmcg import replay
from jaxmcg.cm3_networks import cross_init, piece
from jaxmcg.critic import soft_update
from jaxmcg.offpolicy import run_train_steps, train_step_count

NETWORKS = ("auto", "mlp", "checkers", "lane_merge")
TEAM_REWARDS = ("auto", "sum", "first")

_GLOROT = nn.initializers.glorot_uniform()  # TF dense/conv default kernel (§5.3 "Initialization")


# ---- configuration checks ------------------------------------------------------------------------


def positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")


def validate_common(config) -> None:
    """Checks of the fields every value learner's Config has (schedule, replay, optimiser, nets)."""
    for name in ("buffer_size", "batch_size", "steps_per_train", "pretrain_episodes"):
        positive_int(name, getattr(config, name))
    if config.batch_size > config.buffer_size:
        raise ValueError(f"batch_size={config.batch_size} is invalid: must be <= buffer_size="
                         f"{config.buffer_size} (minibatches are drawn without replacement)")
    hidden = config.hidden
    if not isinstance(hidden, tuple) or not hidden or not all(
            isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden={hidden!r} is invalid: must be a non-empty tuple of positive ints")
    if config.network not in NETWORKS:
        raise ValueError(f"network={config.network!r} is not implemented; valid: {', '.join(NETWORKS)}")
    if config.team_reward not in TEAM_REWARDS:
        raise ValueError(f"team_reward={config.team_reward!r} is invalid; valid: "
                         f"{', '.join(TEAM_REWARDS)}")
    for name in ("gamma", "tau", "eps_start", "eps_end"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} is invalid: must be in [0, 1]")
    if config.eps_end > config.eps_start:
        raise ValueError(f"eps_end={config.eps_end} is invalid: must be <= eps_start={config.eps_start}")
    if not config.eps_div > 0:
        raise ValueError(f"eps_div={config.eps_div} is invalid: must be > 0 (episodes of the decay)")
    if not config.lr > 0:
        raise ValueError(f"lr={config.lr} is invalid: must be > 0")


def step_shapes(env, env_params):
    """`(obs, info)` shapes of one environment step, traced with `jax.eval_shape` (nothing compiled)."""
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    obs, state = jax.eval_shape(lambda k: env.reset(k, env_params), key)
    actions = jax.ShapeDtypeStruct((env.num_agents,), jnp.int32)
    out = jax.eval_shape(lambda k, s, a: env.step(k, s, a, env_params), key, state, actions)
    info = dict(out[5])
    info.pop("final_obs", None)
    return obs, info


def num_actions(env, env_params, who: str) -> int:
    space = env.action_space(env_params)
    if not hasattr(space, "n"):
        raise ValueError(f"{who} needs discrete actions; {env.name} has {type(space).__name__} "
                         "actions (valid: a Discrete action space)")
    return int(space.n)


_NETWORK_OF_ENV = {"Checkers": "checkers", "LaneMerge": "lane_merge"}  # §2.5 per-env nets


def resolve_network(env, config) -> str:
    """The utility network: Config.network, with "auto" = the §2.5 branch net of Checkers or the
    lane merge, else the MLP; checks that the observation layout fits."""
    kind = config.network
    if kind == "auto":
        kind = _NETWORK_OF_ENV.get(type(env).__name__, "mlp")
    if kind == "mlp":
        return kind
    layout = getattr(env, "obs_layout", {})
    need = {"checkers": {"self_T": 75, "self_V": 4, "prev_action": 5, "goal": 2, "others": None},
            "lane_merge": {"self": 3, "goal": 4, "others": 13 * 9 * 2}}[kind]
    for name, width in need.items():
        if name not in layout or (width is not None and layout[name][1] - layout[name][0] != width):
            raise ValueError(f"network={kind!r} needs the {kind} observation layout ({name!r} of "
                             f"width {width}); {env.name} has {layout or 'none'}; valid for it: mlp")
    if len(config.hidden) != 2:
        raise ValueError(f"network={kind!r} takes hidden=(branch width, merge width), got "
                         f"hidden={config.hidden}")
    return kind


def resolve_team_reward(env, config) -> str:
    """"first" where the reward is the team reward already broadcast to every agent (STS2, §6.7),
    "sum" of the agents' rewards otherwise (CM3's envs: the authors sum `local_rewards`, §3)."""
    if config.team_reward != "auto":
        return config.team_reward
    return "first" if getattr(env, "team_reward_broadcast", False) else "sum"


def team_reward(reward: jax.Array, mode: str) -> jax.Array:
    """The team reward `[...]` of per-agent rewards `[..., N]`."""
    return reward[..., 0] if mode == "first" else jnp.sum(reward, axis=-1)


def done_flags(batch, truncation_bootstrap: bool) -> jax.Array:
    """1.0 where the bootstrap is cut: termination, and the time limit too unless
    `truncation_bootstrap` (the authors' done is true at the cap, A-CM3-6)."""
    done = batch.terminated if truncation_bootstrap else batch.terminated | batch.truncated
    return done.astype(jnp.float32)


def check_horizon(env, env_params, config) -> None:
    """Whole episodes go into the buffer at once: one must fit."""
    horizon = env.horizon(env_params)
    if horizon > config.buffer_size:
        raise ValueError(f"buffer_size={config.buffer_size} is smaller than one episode "
                         f"({horizon} steps); valid: buffer_size >= {horizon}")


def check_flat_discrete(env, env_params, config, who: str):
    """`(obs, info)` shapes of one step (eval_shape) after checking discrete actions, flat
    observations `[N, obs_dim]` and an episode that fits the buffer."""
    num_actions(env, env_params, who)
    obs, info = step_shapes(env, env_params)
    if len(obs.shape) != 2:
        raise ValueError(f"{who}'s networks take flat observations [N, obs_dim]; {env.name} gives "
                         f"{tuple(obs.shape)}")
    check_horizon(env, env_params, config)
    return obs, info


# ---- exploration ---------------------------------------------------------------------------------


def exploration(episodes: jax.Array, n_envs: int, config):
    """`(eps[E], warmup[E])` of the next `n_envs` episodes after `episodes` collected ones.

    Episode idx = episodes + e + 1 (the authors count from 1): uniform actions while
    idx < pretrain_episodes; eps = eps_start less one decrement (eps_start - eps_end) / eps_div per
    finished episode with idx >= pretrain_episodes, floored at eps_end (the authors stop decrementing
    once eps <= eps_end, so theirs can end up to one decrement below it).
    """
    idx = episodes + jnp.arange(n_envs) + 1
    decrements = jnp.maximum(idx - config.pretrain_episodes, 0)
    eps = D.linear_epsilon(decrements, config.eps_start, config.eps_end, config.eps_div)
    return eps, idx < config.pretrain_episodes


def epsilon_greedy_actions(q: jax.Array, key: jax.Array, episodes: jax.Array, config,
                           evaluate: bool = False) -> jax.Array:
    """Actions `[E, N]` from utilities `q[E, N, A]`: greedy when evaluating (§2.6: QMIX is greedy;
    HSD's evaluation too, §5.2), else eps-greedy with each episode's eps, uniform in the warm-up."""
    if evaluate:
        return jnp.argmax(q, axis=-1).astype(jnp.int32)
    eps, warmup = exploration(episodes, q.shape[0], config)
    eps = jnp.where(warmup, 1.0, eps)
    return D.epsilon_greedy(key, q, eps.reshape(eps.shape + (1,) * (q.ndim - 2)))


# ---- replay and the train-step accounting -------------------------------------------------------


def push(buffer: replay.Replay, transitions, valid: jax.Array) -> replay.Replay:
    """Add the valid transitions of a batch (leaves `[T, E, ...]`, `valid[T, E]`) episode after
    episode, as the authors' sequential episodes fill their FIFO buffer."""
    t, e = valid.shape
    rows = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), transitions)  # [E, T, ...]
    valid = valid.T
    if t * e <= buffer.capacity:
        flat = jax.tree_util.tree_map(lambda x: x.reshape(t * e, *x.shape[2:]), rows)
        return replay.add(buffer, flat, valid.reshape(-1))
    if t > buffer.capacity:
        raise ValueError(f"an episode of {t} steps does not fit a buffer of {buffer.capacity}; "
                         f"valid: buffer_size >= {t}")
    buffer, _ = jax.lax.scan(lambda b, ep: (replay.add(b, *ep), None), buffer, (rows, valid))
    return buffer


def steps_owed(remainder: jax.Array, valid: jax.Array, episodes: jax.Array, config):
    """`(n_steps, new_remainder)`: minibatch steps owed for the episodes of `valid[T, E]`, the
    episodes after `episodes` collected ones. Warm-up episodes advance the step counter but owe
    nothing (the authors' `idx_episode >= pretrain_episodes and step % steps_per_train == 0`)."""
    lengths = jnp.sum(valid, axis=0).astype(jnp.int32)  # [E]
    idx = episodes + jnp.arange(valid.shape[1]) + 1
    warm = jnp.sum(jnp.where(idx < config.pretrain_episodes, lengths, 0))
    _, remainder = train_step_count(remainder, warm, config.steps_per_train)
    return train_step_count(remainder, jnp.sum(lengths) - warm, config.steps_per_train)


def minibatch_step(params, target_params, opt_state, buffer, key, loss_fn, config):
    """One step: a minibatch drawn without replacement, an Adam step on
    `loss_fn(params, target_params, items, mask) -> (loss, q_mean)`, then the Polyak update of the
    targets with `config.tau` (§2.7, §5.3). Returns `(params, target_params, opt_state, metrics)`."""
    items, mask = replay.sample(buffer, key, config.batch_size)
    (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, target_params, items, mask)
    updates, opt_state = optax.adam(config.lr).update(grads, opt_state)
    params = optax.apply_updates(params, updates)
    target_params = soft_update(target_params, params, config.tau)
    return params, target_params, opt_state, {"loss": loss, "q_mean": q_mean}


def offpolicy_update(state, batch, transitions, loss_fn, prefix: str):
    """Push `transitions` (leaves `[T, E, ...]`) of `batch`, then run the minibatch steps owed.

    `state` has `params`, `target_params`, `opt_state`, `buffer`, `episodes`, `remainder`,
    `train_steps`, `key` and `config`. Returns the new state and metrics under `prefix/`: loss and
    q_mean (averaged over the steps taken; 0 when none was), epsilon (of this batch's first
    episode), buffer_size, train_steps (taken in this update), train_steps_total, episodes.
    """
    c = state.config
    n_rows = batch.valid.shape[0] * batch.valid.shape[1]
    buffer = push(state.buffer, transitions, batch.valid)
    n_steps, remainder = steps_owed(state.remainder, batch.valid, state.episodes, c)
    key, k_train = jax.random.split(state.key)

    def step(carry, k):
        p, t, o, m = minibatch_step(*carry, buffer, k, loss_fn, c)
        return (p, t, o), m

    max_steps = (n_rows + c.steps_per_train - 1) // c.steps_per_train  # static: remainder < spt
    (params, target_params, opt_state), metrics = run_train_steps(
        step, (state.params, state.target_params, state.opt_state), k_train, n_steps, max_steps)
    eps, _ = exploration(state.episodes, 1, c)
    n_episodes = batch.valid.shape[1]
    state = state.replace(params=params, target_params=target_params, opt_state=opt_state,
                          buffer=buffer, episodes=state.episodes + n_episodes, remainder=remainder,
                          train_steps=state.train_steps + n_steps, key=key)
    out = {f"{prefix}/{k}": v for k, v in metrics.items()}
    out.update({
        f"{prefix}/epsilon": eps[0],
        f"{prefix}/buffer_size": buffer.size.astype(jnp.float32),
        f"{prefix}/train_steps": n_steps.astype(jnp.float32),
        f"{prefix}/train_steps_total": state.train_steps.astype(jnp.float32),
        f"{prefix}/episodes": state.episodes.astype(jnp.float32),
    })
    return state, out


def outcome_rates(batch, prefix: str) -> dict:
    """Win, lose and draw rates of a batch of episodes when the env reports `info["outcome"]`
    (STS2: +1 home goal, -1 away goal, 0 draw; Table 4.1 gives win/lose %), else nothing."""
    if "outcome" not in batch.info:
        return {}
    outcome = jnp.sum(batch.info["outcome"] * batch.valid, axis=0)
    return {f"{prefix}/win_rate": jnp.mean(outcome > 0), f"{prefix}/lose_rate": jnp.mean(outcome < 0),
            f"{prefix}/draw_rate": jnp.mean(outcome == 0)}


# ---- utility networks ----------------------------------------------------------------------------


class QNet(nn.Module):
    """x -> dense(hidden) ReLU ... -> linear `out` [C-HSD networks.py Qmix_single; C-CM3
    Qmix_single_particle], applied to the last axis (shared over agents and batch)."""

    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=_GLOROT)(x))
        return nn.Dense(self.out, kernel_init=_GLOROT)(x)


def _tf_vector_init(key, shape, dtype=jnp.float32):
    """TF's Glorot-uniform default on a 1-D variable (fan_in = fan_out = n): U(+-sqrt(3 / n))."""
    bound = (3.0 / shape[0]) ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def conv_flat(x, shape, filters, kernel):
    """conv(filters, kernel), stride 1, SAME, ReLU, flattened (§2.5), on x[..., prod(shape)]."""
    grid = x.reshape(*x.shape[:-1], *shape)
    y = nn.relu(nn.Conv(filters, kernel, padding="SAME", kernel_init=_GLOROT)(grid))
    return y.reshape(*y.shape[:-3], -1)


class CheckersQNet(nn.Module):
    """QMIX agent for Checkers at the thesis' sizes (A-CM3-14; [C-CM3 Qmix_single_checkers]):
    conv(6, 3x3)(o_self,T) -> dense 32; [that, o_self,V, a_{t-1}, g] -> dense h1; o_others -> dense
    h1; relu(W h_self + W h_others + b) of width h2 -> linear A."""

    layout: tuple  # ((name, start, stop), ...) of env.obs_layout
    hidden: tuple[int, int]
    out: int

    @nn.compact
    def __call__(self, x):
        h1, h2 = self.hidden
        part = lambda name: piece(x, self.layout, name)  # noqa: E731
        conv = nn.relu(nn.Dense(32, kernel_init=_GLOROT)(conv_flat(part("self_T"), (5, 5, 3), 6,
                                                                   (3, 3))))
        own = jnp.concatenate([conv, part("self_V"), part("prev_action"), part("goal")], axis=-1)
        own = nn.relu(nn.Dense(h1, kernel_init=_GLOROT)(own))
        others = nn.relu(nn.Dense(h1, kernel_init=_GLOROT)(part("others")))
        merged = (own @ self.param("W_self_h2", cross_init, (h1, h2))
                  + others @ self.param("W_others_h2", cross_init, (h1, h2))
                  + self.param("b", _tf_vector_init, (h2,)))
        return nn.Dense(self.out, kernel_init=_GLOROT)(nn.relu(merged))


class LaneMergeQNet(nn.Module):
    """QMIX agent for the lane merge (§2.5 SUMO; [C-CM3 Qmix_single_sumo]): [o_self, g] -> dense h1;
    conv(4, 5x3)(o_others 13x9x2) -> dense h1; relu(W h_self + W h_conv) (no bias) of width h2 ->
    linear A."""

    layout: tuple
    hidden: tuple[int, int]
    out: int

    @nn.compact
    def __call__(self, x):
        h1, h2 = self.hidden
        part = lambda name: piece(x, self.layout, name)  # noqa: E731
        own = nn.relu(nn.Dense(h1, kernel_init=_GLOROT)(
            jnp.concatenate([part("self"), part("goal")], axis=-1)))
        conv = nn.relu(nn.Dense(h1, kernel_init=_GLOROT)(conv_flat(part("others"), (13, 9, 2), 4,
                                                                   (5, 3))))
        merged = (own @ self.param("W_self_h2", cross_init, (h1, h2))
                  + conv @ self.param("W_conv_h2", cross_init, (h1, h2)))
        return nn.Dense(self.out, kernel_init=_GLOROT)(nn.relu(merged))


def make_network(kind: str, env, hidden, out: int) -> nn.Module:
    """The utility network of kind `kind` (after `resolve_network`) with `out` outputs."""
    if kind == "mlp":
        return QNet(tuple(hidden), out)
    layout = tuple((k, int(a), int(b)) for k, (a, b) in env.obs_layout.items())
    cls = {"checkers": CheckersQNet, "lane_merge": LaneMergeQNet}[kind]
    return cls(layout, tuple(hidden), out)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What `check_env` resolves from the env and the Config (static)."""

    network: str
    team_reward: str
    mixer_input: str = "none"
