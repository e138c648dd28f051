"""COMA with goals, CM3's centralised-critic baseline (cm3-hsd.md §3, §2.5, §2.6; thesis L504-506,
[C-CM3 alg_baseline.py with use_Q=1, use_V=0; alg_baseline_checkers.py]).

All agents share the staged actor of `cm3_networks.Actor` (Stage-2 architecture, from scratch) and
one critic with |A| outputs, Q(s, a^{-n}, a^n = ·, g^n, g^{-n}, n, o_self^n)
(`cm3_networks.ComaCritic`; inputs [s, onehot a^{-n}, g^n, g^{-n}, onehot n, o_self^n], Checkers
adds conv features of s_T and o_self,T and uses o_self,V), with target copies of both. Each train
step on a minibatch (every agent of a transition is one row), in the code's order:

1. a' ~ π'(· | o', g; ε), the **target** actor with the current ε (A-CM3-16);
2. Q: Adam step on mean_{i,n} (R + γ(1 - done) Q'(s', a'^{-n}, g, n, o'^n)[a'^n]
   - Q(s, a^{-n}, g, n, o^n)[a^n])^2 with the **team** reward R = Σ_n r^n;
3. π: Adam step on -mean_i Σ_n log P(a^n) sg(Q[a^n] - Σ_â P(â) Q[â]), Q from the critic **after**
   its step (the code evaluates it in a later call), P the ε-floored softmax (§2.3);
4. Polyak τ on π' and Q'.

The on-policy loop (buffer, warm-up, ε decay, done at the time limit) is IAC's: see `iac`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import cm3_networks as N
from jaxmcg import replay
from jaxmcg.algos import iac
from jaxmcg.critic import soft_update

check_env = iac.check_env  # CM3 environments only


@dataclasses.dataclass(frozen=True)
class Config:
    # Table A.3 (cooperative navigation), COMA column; Checkers / lane merge: Tables A.4-A.5
    lr_actor: float = 1e-5
    lr_q: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.01
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_div: float = 2e4
    batch_size: int = 128
    epochs: int = 24
    buffer_size: int = 10_000
    pretrain_episodes: int = 50
    truncation_bootstrap: bool = False  # A-CM3-6
    units: int = 0  # critic width; 0: the thesis' 128 (particle, lane merge) / 256 (checkers), A-CM3-13

    def validate(self) -> None:
        iac.validate_loop(self)
        if not isinstance(self.units, int) or self.units < 0:
            raise ValueError(f"units={self.units!r} is invalid: a positive width, or 0 for the "
                             "thesis' width")


@struct.dataclass
class State:
    actor_params: dict
    actor_target: dict
    q_params: dict
    q_target: dict
    actor_opt: optax.OptState
    q_opt: optax.OptState
    buffer: replay.Replay
    episodes: jax.Array
    epsilon: jax.Array
    trains: jax.Array
    key: jax.Array
    config: Config = struct.field(pytree_node=False)
    actor: N.Actor = struct.field(pytree_node=False)
    critic: N.ComaCritic = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False)


def critic_inputs(kind: str, layout, num_actions: int, state, actions, goal, obs, state_env=None):
    """The critic's inputs for every agent n: `(x[B, N, F], state_env[B, N, 54] | None,
    view[B, N, 75] | None)` from the global state rows `state[B, N, k]`, integer `actions[B, N]`,
    goals `goal[B, N, g]`, observations `obs[B, N, D]` and Checkers' s_T `state_env[B, 54]`
    ([C-CM3 alg_baseline.py process_batch]: the concatenation order of `Q_global`)."""
    b, n = actions.shape
    onehot = jax.nn.one_hot(actions, num_actions, dtype=obs.dtype)
    s = jnp.broadcast_to(state.reshape(b, 1, -1), (b, n, state.shape[-2] * state.shape[-1]))
    label = jnp.broadcast_to(jnp.eye(n, dtype=obs.dtype), (b, n, n))
    own = N.piece(obs, layout, "self_V" if kind == "checkers" else "self")
    x = jnp.concatenate([s.astype(obs.dtype), N.others_of(onehot), goal.astype(obs.dtype),
                         N.others_of(goal).astype(obs.dtype), label, own], -1)
    if kind != "checkers":
        return x, None, None
    grid = jnp.broadcast_to(state_env[:, None, :], (b, n, state_env.shape[-1])).astype(obs.dtype)
    return x, grid, N.piece(obs, layout, "self_T")


def init(key, env, env_params, config: Config, n_envs: int | None = None,
         num_steps: int | None = None) -> State:
    config.validate()
    check_env(env, env_params, config)
    iac.check_buffer(config, env, env_params, n_envs, num_steps)
    kind = N.env_kind(env)
    actor = N.make_actor(env, N.baseline_stage(env), env_params)
    num_actions = actor.num_actions
    units = config.units or (256 if kind == "checkers" else 128)
    critic = N.ComaCritic(num_actions, units)
    example = iac.transitions(env, env_params)

    @jax.jit  # one compile: eagerly, every zeros/init op would compile on its own
    def build(key):
        k_actor, k_q, k_state = jax.random.split(key, 3)
        ex = jax.tree_util.tree_map(lambda x: x[None], example)
        inputs = critic_inputs(kind, actor.layout, num_actions, ex["state"], ex["action"], ex["goal"],
                               ex["obs"], ex.get("state_env"))
        actor_params = actor.init(k_actor, ex["obs"])["params"]
        q_params = critic.init(k_q, *inputs)["params"]
        return State(actor_params=actor_params, actor_target=actor_params, q_params=q_params,
                     q_target=q_params, actor_opt=iac.adam(config.lr_actor).init(actor_params),
                     q_opt=iac.adam(config.lr_q).init(q_params),
                     buffer=replay.init(example, config.buffer_size),
                     episodes=jnp.zeros((), jnp.int32),
                     epsilon=jnp.asarray(config.eps_start, jnp.float32),
                     trains=jnp.zeros((), jnp.int32), key=k_state, config=config, actor=actor,
                     critic=critic, kind=kind)

    return build(key)


def act(state: State, obs, key, evaluate: bool = False):
    logits = state.actor.apply({"params": state.actor_params}, obs)
    return iac.sample_actions(state, logits, key, evaluate), {}


act_greedy = iac.act_greedy  # the same actor fields (A-CM3-17's greedy evaluation)


def q_values(state: State, params, rows, actions, nxt: bool = False) -> jax.Array:
    """Q(s, a^{-n}, ·, g, n, o^n) `[B, N, A]` of the rows (their successor when `nxt`), with the
    other agents' actions from `actions[B, N]`."""
    p = "next_" if nxt else ""
    inputs = critic_inputs(state.kind, state.actor.layout, state.actor.num_actions,
                           rows[p + "state"], actions, rows["goal"], rows[p + "obs"],
                           rows.get(p + "state_env"))
    return state.critic.apply({"params": params}, *inputs)


def critic_loss(q_params, state: State, rows, mask, next_actions):
    """mean over valid rows and agents of (R + γ(1 - done) Q'(s', a')[a'^n] - Q(s, a)[a^n])^2,
    R = Σ_n r^n; `next_actions[B, N]` from the target actor."""
    c = state.config
    q_next = q_values(state, state.q_target, rows, next_actions, nxt=True)
    chosen_next = jnp.sum(q_next * jax.nn.one_hot(next_actions, q_next.shape[-1]), -1)
    team = jnp.sum(rows["reward"], axis=-1, keepdims=True)
    target = jax.lax.stop_gradient(team + c.gamma * (1.0 - rows["done"][:, None]) * chosen_next)
    q = q_values(state, q_params, rows, rows["action"])
    chosen = jnp.sum(q * jax.nn.one_hot(rows["action"], q.shape[-1]), -1)
    return replay.masked_mean(jnp.square(target - chosen), mask)


def counterfactual_advantage(q: jax.Array, probs: jax.Array, actions: jax.Array) -> jax.Array:
    """COMA's A^n = Q[a^n] - Σ_â P^n(â) Q[â] for `q`, `probs` `[..., N, A]`, `actions[..., N]`."""
    onehot = jax.nn.one_hot(actions, q.shape[-1], dtype=q.dtype)
    return jnp.sum(q * onehot, -1) - jnp.sum(q * probs, -1)


def actor_loss(actor_params, state: State, rows, mask, advantage, eps):
    """-mean over valid rows of Σ_n log P(a^n | o^n, g^n) · advantage^n (a constant)."""
    logits = state.actor.apply({"params": actor_params}, rows["obs"])
    logp = iac.action_log_prob(logits, rows["action"], eps)
    return -replay.masked_mean(jnp.sum(logp * jax.lax.stop_gradient(advantage), -1), mask)


def train_step(state: State, rows, mask, eps, key):
    c = state.config
    next_logits = state.actor.apply({"params": state.actor_target}, rows["next_obs"])
    next_actions = jax.random.categorical(key, N.floored_log_probs(next_logits, eps))
    q_loss, grads = jax.value_and_grad(critic_loss)(state.q_params, state, rows, mask, next_actions)
    updates, q_opt = iac.adam(c.lr_q).update(grads, state.q_opt)
    q_params = optax.apply_updates(state.q_params, updates)
    # the advantage uses the critic after its step and the current policy's P (§3)
    q = q_values(state, q_params, rows, rows["action"])
    probs = N.floored_probs(state.actor.apply({"params": state.actor_params}, rows["obs"]), eps)
    advantage = counterfactual_advantage(q, probs, rows["action"])
    p_loss, grads = jax.value_and_grad(actor_loss)(state.actor_params, state, rows, mask, advantage,
                                                   eps)
    updates, actor_opt = iac.adam(c.lr_actor).update(grads, state.actor_opt)
    actor_params = optax.apply_updates(state.actor_params, updates)
    state = state.replace(actor_params=actor_params, actor_opt=actor_opt, q_params=q_params,
                          q_opt=q_opt, actor_target=soft_update(state.actor_target, actor_params, c.tau),
                          q_target=soft_update(state.q_target, q_params, c.tau))
    return state, {"coma/q_loss": q_loss, "coma/policy_loss": p_loss,
                   "coma/advantage": replay.masked_mean(advantage, mask),
                   "coma/q_taken": replay.masked_mean(jnp.sum(
                       q * jax.nn.one_hot(rows["action"], q.shape[-1]), -1), mask)}


def update(state: State, batch):
    return iac.onpolicy_update(state, batch, train_step)
