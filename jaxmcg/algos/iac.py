"""IAC, CM3's independent actor-critic baseline (cm3-hsd.md §3, §2.5, §2.6; thesis L504-506,
[C-CM3 alg_baseline.py with IAC=True, train_onpolicy.py]).

All agents share one staged actor π(a | o, g) (the Stage-2 architecture of `cm3_networks.Actor`,
trained from scratch) and one V(o, g) on the local observation (`cm3_networks.LocalV`), with a
target copy V'. Each train step on a minibatch of transitions (every agent of a transition is one
row), in the code's order:

1. V: Adam step on mean_{i,n} (r^n + γ(1 - done) V'(o'^n, g^n) - V(o^n, g^n))^2 (individual rewards);
2. π: Adam step on -mean_{i,n} log P(a^n) sg(δ^n), δ^n = r^n + γ(1 - done) V(o'^n) - V(o^n) with
   the **main** V at its pre-update values (the code fetches them in the same calls as the V step);
   P is the ε-floored softmax and log P is log(P + 1e-15) (§2.3);
3. V' <- τ V + (1 - τ) V' (the code also averages an actor copy that IAC never reads; omitted).

The on-policy loop of §2.6 (shared with `coma`): an iteration of the training loop collects
`n_envs` whole episodes (10 in the original: `episodes_per_train`) into a FIFO buffer of
`buffer_size` transitions; once `pretrain_episodes` (50) episodes have been collected, `update` runs
`epochs` minibatch steps, each on `batch_size` transitions drawn without replacement (the whole
buffer when it holds fewer), then decrements ε by (ε_start - ε_end) n_envs / ε_div and clears the
buffer. As in the code, the warm-up episodes stay in the buffer until that first train call, and
their actions are uniformly random (`act`). With n_envs = 10 this is exactly the original's
accounting. `done` is 1 at the time limit too, so the bootstrap is cut there (A-CM3-6);
`truncation_bootstrap=True` keeps it at truncations. Evaluation samples from π with ε = 0
(A-CM3-17).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import cm3_networks as N
from jaxmcg import replay
from jaxmcg.critic import soft_update


@dataclasses.dataclass(frozen=True)
class Config:
    # Table A.3 (cooperative navigation), IAC column; Checkers / lane merge: Tables A.4-A.5
    lr_actor: float = 1e-4
    lr_v: float = 1e-3
    gamma: float = 0.99  # [C-CM3 alg_baseline.py]
    tau: float = 0.01
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_div: float = 8e4  # episodes over which ε decays linearly (§2.8)
    batch_size: int = 128
    epochs: int = 24
    buffer_size: int = 10_000
    pretrain_episodes: int = 50  # random actions and no training before (§2.6)
    truncation_bootstrap: bool = False  # A-CM3-6: the code cuts the bootstrap at the time limit

    def validate(self) -> None:
        validate_loop(self)


def validate_loop(config) -> None:
    """The checks of the on-policy loop's settings (IAC's and COMA's Config)."""
    for name in ("batch_size", "epochs", "buffer_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
    if not isinstance(config.pretrain_episodes, int) or config.pretrain_episodes < 0:
        raise ValueError(f"pretrain_episodes={config.pretrain_episodes!r} must be an integer >= 0")
    if not 0.0 <= config.tau <= 1.0:
        raise ValueError(f"tau={config.tau} is invalid: must be in [0, 1]")
    if not 0.0 <= config.eps_end <= config.eps_start <= 1.0:
        raise ValueError(f"eps_start={config.eps_start}, eps_end={config.eps_end} are invalid: need "
                         "0 <= eps_end <= eps_start <= 1")
    if config.eps_div <= 0:
        raise ValueError(f"eps_div={config.eps_div} is invalid: must be > 0")


@struct.dataclass
class State:
    actor_params: dict
    v_params: dict
    v_target: dict
    actor_opt: optax.OptState
    v_opt: optax.OptState
    buffer: replay.Replay
    episodes: jax.Array  # episodes collected so far
    epsilon: jax.Array  # current exploration floor
    trains: jax.Array  # train calls so far
    key: jax.Array
    config: Config = struct.field(pytree_node=False)
    actor: N.Actor = struct.field(pytree_node=False)
    critic: N.LocalV = struct.field(pytree_node=False)


def check_env(env, env_params, config: Config) -> None:
    """CM3's networks exist for the particle, checkers and lane-merge environments only."""
    N.env_kind(env)


# --- the on-policy loop of §2.6, shared with coma -----------------------------------------------


def transitions(env, env_params) -> dict:
    """A zero transition shaped as `from_batch` stores one (one row), for `replay.init`."""
    n, d = env.num_agents, env.obs_dim

    def info(key):
        _, st = env.reset(key, env_params)
        return env.step(key, st, jnp.zeros((n,), jnp.int32), env_params)[5]

    shapes = jax.eval_shape(info, jax.random.PRNGKey(0))
    names = ["state", "next_state", "goal"] + [k for k in ("state_env", "next_state_env")
                                               if k in shapes]
    example = {k: jnp.zeros(shapes[k].shape, jnp.float32) for k in names}
    return {"obs": jnp.zeros((n, d)), "next_obs": jnp.zeros((n, d)),
            "action": jnp.zeros((n,), jnp.int32), "reward": jnp.zeros((n,)),
            "done": jnp.zeros(()), **example}


def from_batch(batch, truncation_bootstrap: bool = False) -> tuple[dict, jax.Array]:
    """`(items, valid)`: the batch's transitions as rows `[T·E, ...]` and the `[T·E]` validity.

    `done` is terminated or truncated (A-CM3-6), terminated only with `truncation_bootstrap`.
    The stored action is `info["executed_action"]` where the environment replaces infeasible
    actions (lane merge: the code stores what SUMO executed, §4.3.1)."""
    done = batch.terminated if truncation_bootstrap else batch.terminated | batch.truncated
    info = batch.info
    items = {"obs": batch.obs, "next_obs": batch.next_obs,
             "action": info.get("executed_action", batch.action).astype(jnp.int32),
             "reward": batch.reward, "done": done.astype(jnp.float32), "state": info["state"],
             "next_state": info["next_state"], "goal": info["goal"].astype(jnp.float32)}
    if "state_env" in info:
        items["state_env"] = info["state_env"]
        items["next_state_env"] = info["next_state_env"]
    t, e = batch.valid.shape
    rows = jax.tree_util.tree_map(lambda x: x.reshape((t * e,) + x.shape[2:]), items)
    return rows, batch.valid.reshape(-1) > 0


def check_buffer(config, env, env_params, n_envs: int | None, num_steps: int | None) -> None:
    if n_envs is not None:
        rows = n_envs * (num_steps or env.horizon(env_params))
        if rows > config.buffer_size:
            raise ValueError(f"n_envs={n_envs} episodes of up to {rows // n_envs} steps do not fit "
                             f"buffer_size={config.buffer_size}; the original collects 10 episodes "
                             "per train call (n_envs=10)")


def onpolicy_update(state, batch, train_step):
    """Push `batch` into the buffer; once `pretrain_episodes` are collected, run `epochs` steps
    `state, metrics = train_step(state, items, mask, eps, key)` on minibatches drawn without
    replacement, decrement ε, clear the buffer (§2.6). Returns `(state, metrics)` with the metrics
    averaged over the steps (zeros when nothing was trained) plus `epsilon` and `trained`."""
    c = state.config
    items, valid = from_batch(batch, c.truncation_bootstrap)
    buffer = replay.add(state.buffer, items, valid)
    n_episodes = batch.valid.shape[1]
    episodes = state.episodes + n_episodes
    key, k_train = jax.random.split(state.key)
    state = state.replace(buffer=buffer, episodes=episodes, key=key)

    def train(s):
        buf = s.buffer

        def body(s_, k):
            k_sample, k_step = jax.random.split(k)
            rows, mask = replay.sample(buf, k_sample, c.batch_size)
            return train_step(s_, rows, mask, s_.epsilon, k_step)

        s, m = jax.lax.scan(body, s, jax.random.split(k_train, c.epochs))
        eps = jnp.maximum(c.eps_end, s.epsilon - (c.eps_start - c.eps_end) * n_episodes / c.eps_div)
        cleared = buf.replace(ptr=jnp.zeros_like(buf.ptr), size=jnp.zeros_like(buf.size))
        s = s.replace(buffer=cleared, epsilon=eps.astype(s.epsilon.dtype), trains=s.trains + 1)
        return s, jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), m)

    def skip(s):
        shapes = jax.eval_shape(train, s)[1]
        return s, jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    trained = episodes >= c.pretrain_episodes
    eps_used = state.epsilon
    state, metrics = jax.lax.cond(trained, train, skip, state)
    return state, {**metrics, "epsilon": eps_used, "trained": trained.astype(jnp.float32)}


def sample_actions(state, logits, key, evaluate: bool):
    """Actions `[E, N]` from the ε-floored policy (ε = 0 when evaluating, A-CM3-17); uniformly
    random in an environment whose episode number (1-based, counted across iterations) is below
    `pretrain_episodes` (§2.6: "idx_episode < pretrain_episodes")."""
    eps = 0.0 if evaluate else state.epsilon
    k_pi, k_uniform = jax.random.split(key)
    actions = jax.random.categorical(k_pi, N.floored_log_probs(logits, eps)).astype(jnp.int32)
    if evaluate:
        return actions
    e = logits.shape[0]
    episode = state.episodes + jnp.arange(e) + 1
    uniform = jax.random.randint(k_uniform, actions.shape, 0, logits.shape[-1], jnp.int32)
    return jnp.where((episode < state.config.pretrain_episodes)[:, None], uniform, actions)


def adam(lr: float):
    return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)  # TF AdamOptimizer defaults (§2.3)


def action_log_prob(logits, actions, eps):
    """log(P(a) + 1e-15) of the taken `actions` under the ε-floored policy."""
    logp = N.floored_log_probs(logits, eps)
    return jnp.sum(logp * jax.nn.one_hot(actions, logits.shape[-1], dtype=logp.dtype), axis=-1)


# --- IAC -----------------------------------------------------------------------------------------


def init(key, env, env_params, config: Config, n_envs: int | None = None,
         num_steps: int | None = None) -> State:
    config.validate()
    check_env(env, env_params, config)
    check_buffer(config, env, env_params, n_envs, num_steps)
    stage = N.baseline_stage(env)
    actor = N.make_actor(env, stage, env_params)
    critic = N.LocalV(N.env_kind(env), N.layout(env), stage)
    example = transitions(env, env_params)

    @jax.jit  # one compile: eagerly, every zeros/init op would compile on its own
    def build(key):
        k_actor, k_v, k_state = jax.random.split(key, 3)
        actor_params = actor.init(k_actor, example["obs"])["params"]
        v_params = critic.init(k_v, example["obs"])["params"]
        return State(actor_params=actor_params, v_params=v_params, v_target=v_params,
                     actor_opt=adam(config.lr_actor).init(actor_params),
                     v_opt=adam(config.lr_v).init(v_params),
                     buffer=replay.init(example, config.buffer_size),
                     episodes=jnp.zeros((), jnp.int32),
                     epsilon=jnp.asarray(config.eps_start, jnp.float32),
                     trains=jnp.zeros((), jnp.int32), key=k_state, config=config, actor=actor,
                     critic=critic)

    return build(key)


def act(state: State, obs, key, evaluate: bool = False):
    logits = state.actor.apply({"params": state.actor_params}, obs)
    return sample_actions(state, logits, key, evaluate), {}


def act_greedy(state: State, obs, key):
    """The argmax of pi, for the greedy evaluation logged beside the sampled one (A-CM3-17)."""
    logits = state.actor.apply({"params": state.actor_params}, obs)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), {}


def value(state: State, params, obs) -> jax.Array:
    return state.critic.apply({"params": params}, obs)


def critic_loss(v_params, state: State, rows, mask):
    """mean over valid rows and agents of (r + γ(1 - done) V'(o') - V(o))^2; aux: V(o) `[B, N]`."""
    c = state.config
    not_done = 1.0 - rows["done"][:, None]
    target = jax.lax.stop_gradient(
        rows["reward"] + c.gamma * not_done * value(state, state.v_target, rows["next_obs"]))
    v = value(state, v_params, rows["obs"])
    return replay.masked_mean(jnp.square(target - v), mask), v


def actor_loss(actor_params, state: State, rows, mask, delta, eps):
    """-mean over valid rows and agents of log P(a^n | o^n, g^n) · delta^n (a constant)."""
    logits = state.actor.apply({"params": actor_params}, rows["obs"])
    logp = action_log_prob(logits, rows["action"], eps)
    return -replay.masked_mean(logp * jax.lax.stop_gradient(delta), mask)


def train_step(state: State, rows, mask, eps, key):
    del key
    c = state.config
    (v_loss, v), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.v_params, state, rows,
                                                                        mask)
    v_next = value(state, state.v_params, rows["next_obs"])  # main V, pre-update (§3)
    updates, v_opt = adam(c.lr_v).update(grads, state.v_opt)
    v_params = optax.apply_updates(state.v_params, updates)
    not_done = 1.0 - rows["done"][:, None]
    delta = rows["reward"] + c.gamma * not_done * v_next - v
    p_loss, grads = jax.value_and_grad(actor_loss)(state.actor_params, state, rows, mask, delta, eps)
    updates, actor_opt = adam(c.lr_actor).update(grads, state.actor_opt)
    state = state.replace(actor_params=optax.apply_updates(state.actor_params, updates),
                          actor_opt=actor_opt, v_params=v_params, v_opt=v_opt,
                          v_target=soft_update(state.v_target, v_params, c.tau))
    return state, {"iac/v_loss": v_loss, "iac/policy_loss": p_loss,
                   "iac/value": replay.masked_mean(v, mask),
                   "iac/td_error": replay.masked_mean(delta, mask)}


def update(state: State, batch):
    return onpolicy_update(state, batch, train_step)
