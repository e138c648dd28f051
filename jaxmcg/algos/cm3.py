"""CM3: cooperative multi-goal multi-stage multi-agent RL (thesis ch. 3, App. A; cm3-hsd.md §2).

Agents share a staged actor pi(a | o, g) (`jaxmcg.cm3_networks`) and are trained in two stages:

* Stage 1 (N = 1, the induced MDP: `particle_stage1`, `checkers_stage1`, `lane_merge_stage1`): the
  actor pi^1 and a critic Q^1(s^n, g, a) learn to reach random goals alone (Eq A.8-A.10).
* Stage 2 (all N agents): function augmentation (§2.4) adds an o_others branch to the actor and two
  critics built from Q^1, the global Q_n(s, **a**) (branch input (s^-n, a^-n)) and the credit
  function Q_n(s, a^m) (Stage-1 input (s^n, g^n, a^m), branch (s^m, s^-n)). The policy gradient is
  Prop. 2 (Eq 3.5-3.6): -(1/S) sum_i sum_m log pi^m(a^m) sg[sum_n A_{n,m}] with
  A_{n,m} = Q_n(s, **a**) - sum_a^ pi^m(a^) Q_n(s, a^ ^m).

One run is one command: on an N > 1 environment `init` trains Stage 1 itself first (a nested
`jaxmcg.train.make_train` of this module on the Stage-1 environment, `stage1_episodes` episodes, with
the `stage1_*` hyperparameters), then restores (§2.4): the actor's and Q_g's Stage-1 variables from
pi^1 and Q^1, Q_c's Stage-1 part copied from Q^1, every Stage-2 group fresh, targets = mains, fresh
Adams, an empty buffer and eps restarted at Stage 2's column. `stage1_episodes = 0` is the Direct
ablation (everything from scratch); `stage1_path` restores a Stage 1 saved by `save_stage1` instead
of training one. On an N = 1 environment the module is Stage 1 alone. The Stage-1 evaluation curve
(one point per 100 episodes) is kept in the state (`stage1_curve`); its last point is logged as
`cm3/stage1_return`.

A train step on a minibatch of S transitions runs in the authors' order [C-CM3 alg_credit.py
train_step] (§2.3): (1) Adam step on Q_g towards r^n + gamma (1 - done) Q'_g(s', a', g^n); (2) Adam
step on Q_c towards r^n + gamma (1 - done) Q'_c(s', a'^m, g^n), with a' sampled once from the
*target* actor at the current eps (A-CM3-16); (3) QV ablation: Adam step on V; (4) Adam step on the
actor, with Q_n(s, **a**) from the main Q_g before its step (A-CM3-15) and the baseline from the main
Q_c after its step, the probabilities from the actor before its step; (5) Polyak tau of every
target. done = 1 at the time limit too (A-CM3-6; `truncation_bootstrap` keeps the bootstrap there).

Loops (§2.6, §10.3), chosen by `loop` ("auto": on-policy for particle and Checkers Stage 1,
off-policy for Checkers Stage 2 and the lane merge). The training loop hands `update` the iteration's
`n_envs` whole episodes; both loops push their valid transitions into the replay buffer of the state.
* on-policy: an iteration is one "train call" of `episodes_per_train` = n_envs (10) episodes; from
  episode `warmup_episodes` (50) on it runs `epochs` minibatch steps, each drawn without
  replacement from the buffer, then clears the buffer and lowers eps by
  (eps_start - eps_end) n_envs / eps_div. As in the authors' code the first call also sees the
  warm-up episodes, which were never cleared.
* off-policy: one minibatch step every `steps_per_train` environment steps, counted globally
  (warm-up steps included) and taken only in episodes >= `warmup_episodes`; eps falls by
  (eps_start - eps_end)/eps_div after each such episode. The steps of an iteration run after its
  episodes rather than interleaved with them; with n_envs = 1 this is the only difference from the
  original accounting.
During warm-up actions are uniform only in Stage 1 and in from-scratch runs (A-CM3-19).
Evaluation (`act(..., evaluate=True)`) samples from pi with eps = 0 (A-CM3-17); `act_greedy`, the
argmax, is evaluated beside it (`greedy/collective_return`), as A-CM3-17 asks.

The lane merge stores the *executed* action (`info["executed_action"]`, after the feasibility
filter), as the original buffer does.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct

from jaxmcg import replay
from jaxmcg.cm3_networks import (
    Merge,
    PartsDense,
    as_parts,
    augment,
    conv_flat,
    dense,
    env_kind,
    floored_log_probs,
    floored_probs,
    layout,
    make_actor,
    piece,
)
from jaxmcg.critic import soft_update
from jaxmcg.distributions import linear_epsilon
from jaxmcg.losses import masked_mean
from jaxmcg.offpolicy import run_train_steps
from jaxmcg.sweep import concrete

LOOPS = ("auto", "on_policy", "off_policy")
ADVANTAGES = ("credit", "qv")
STAGE1_ENV_IDS = {"particle": "particle_stage1-v0", "checkers": "checkers_stage1-v0",
                  "lane_merge": "lane_merge_stage1-v0"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults: Table A.3 (cooperative navigation), columns S2 and S1 (`stage1_*`); `PAPER` holds
    the Checkers (A.5) and SUMO (A.4) columns."""

    advantage: str = "credit"  # "credit" (CM3) or "qv": sum_n Q_n(s, a) - V_n(s) (ablation, §2.3)
    loop: str = "auto"  # "auto", "on_policy", "off_policy" (§2.6)
    lr_actor: float = 1e-4  # Tables A.3-A.5
    lr_critic: float = 1e-3  # Q_g and Q_c
    lr_v: float = 1e-3  # QV ablation
    gamma: float = 0.99  # [C-CM3 alg_credit.py]
    tau: float = 0.01  # every target net
    eps_start: float = 0.5  # S2 (Direct: 1.0)
    eps_end: float = 0.05
    eps_div: float = 2e4  # episodes over which eps falls linearly (A-CM3-18) (Direct: 8e4)
    batch_size: int = 128
    epochs: int = 24  # on-policy minibatch steps per train call
    buffer_size: int = 10_000
    steps_per_train: int = 10  # off-policy: one minibatch step every 10 env steps
    warmup_episodes: int = 50  # `pretrain_episodes` (§2.6)
    truncation_bootstrap: bool = False  # False: done = 1 at the time limit, as the code (A-CM3-6)
    critic_other_goals: bool = False  # add g^-n to both critics' branches (thesis SUMO; A-CM3-8)
    # Stage 1, trained by `init` on the induced MDP before Stage 2 (0 = Direct, from scratch)
    stage1_episodes: int = 1000
    stage1_loop: str = "auto"
    stage1_eps_start: float = 1.0
    stage1_eps_end: float = 0.01
    stage1_eps_div: float = 1e3
    stage1_batch_size: int = 256
    stage1_epochs: int = 24
    stage1_buffer_size: int = 10_000
    stage1_n_envs: int = 10  # episodes per iteration (the on-policy `episodes_per_train`)
    stage1_eval_envs: int = 10  # `N_eval`, every `period` = 100 episodes
    stage1_path: str = ""  # a file of `save_stage1`: restore it instead of training Stage 1

    def validate(self) -> None:
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage={self.advantage!r} is invalid; valid: {', '.join(ADVANTAGES)}")
        for name in ("loop", "stage1_loop"):
            if getattr(self, name) not in LOOPS:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; valid: {', '.join(LOOPS)}")
        for name in ("batch_size", "epochs", "buffer_size", "steps_per_train", "stage1_batch_size",
                     "stage1_epochs", "stage1_buffer_size", "stage1_n_envs", "stage1_eval_envs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
        for name in ("warmup_episodes", "stage1_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 0")
        if self.stage1_path and not os.path.isfile(self.stage1_path):
            raise ValueError(f"stage1_path={self.stage1_path!r} is not a file (write one with "
                             "jaxmcg.algos.cm3.save_stage1)")
        if self.stage1_episodes % self.stage1_n_envs:
            raise ValueError(f"stage1_episodes={self.stage1_episodes} is not a multiple of "
                             f"stage1_n_envs={self.stage1_n_envs}")
        for prefix in ("", "stage1_"):  # floats may be swept (tracers): check concrete ones only
            start, end, div = (getattr(self, prefix + k) for k in ("eps_start", "eps_end", "eps_div"))
            if concrete(start, end) and not 0.0 <= end <= start <= 1.0:
                raise ValueError(f"{prefix}eps_start={start}, {prefix}eps_end={end} are invalid: "
                                 "need 0 <= eps_end <= eps_start <= 1")
            if concrete(div) and div <= 0:
                raise ValueError(f"{prefix}eps_div={div} is invalid: must be > 0")
        for name in ("tau", "gamma"):
            value = getattr(self, name)
            if concrete(value) and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is invalid: must be in [0, 1]")

    def stage1(self) -> Config:
        """This config with the Stage-1 column in the main fields (what `init` trains Stage 1 with)."""
        return dataclasses.replace(
            self, advantage="credit", loop=self.stage1_loop, eps_start=self.stage1_eps_start,
            eps_end=self.stage1_eps_end, eps_div=self.stage1_eps_div,
            batch_size=self.stage1_batch_size, epochs=self.stage1_epochs,
            buffer_size=self.stage1_buffer_size)


def _stage1_fields(episodes, eps_start, eps_end, eps_div, batch, epochs=24, buffer=10_000):
    return {"stage1_episodes": episodes, "stage1_eps_start": eps_start, "stage1_eps_end": eps_end,
            "stage1_eps_div": eps_div, "stage1_batch_size": batch, "stage1_epochs": epochs,
            "stage1_buffer_size": buffer}


# Tables A.3-A.5 (§2.8) as Config overrides: PAPER[kind][column], column "cm3" (S2 with its S1),
# "qv", "direct", and "stage1" (the S1 column in the main fields, for a Stage-1 environment run on
# its own). The loops follow from `loop="auto"`.
_A3_S1 = _stage1_fields(1000, 1.0, 0.01, 1e3, 256, 24)
_A4_S1 = _stage1_fields(2500, 0.5, 0.05, 2e3, 128, buffer=10_000)
_A5_S1 = _stage1_fields(5000, 1.0, 0.1, 5e2, 128, 10)
_A3 = {"eps_start": 0.5, "eps_end": 0.05, "eps_div": 2e4, "batch_size": 128, "epochs": 24,
       "buffer_size": 10_000, **_A3_S1}
_A4 = {"eps_start": 0.5, "eps_end": 0.05, "eps_div": 1e3, "batch_size": 128,
       "buffer_size": 20_000, **_A4_S1}
_A5 = {"eps_start": 0.5, "eps_end": 0.1, "eps_div": 1e3, "batch_size": 128, "buffer_size": 10_000,
       **_A5_S1}
PAPER = {
    "particle": {"cm3": _A3, "qv": {**_A3, "advantage": "qv"},
                 "direct": {**_A3, "eps_start": 1.0, "eps_div": 8e4, "stage1_episodes": 0}},
    "lane_merge": {"cm3": _A4, "qv": {**_A4, "advantage": "qv", "eps_div": 4e4},
                   "direct": {**_A4, "eps_div": 4e4, "stage1_episodes": 0}},
    "checkers": {"cm3": _A5, "qv": {**_A5, "advantage": "qv"},
                 "direct": {**_A5, "eps_start": 1.0, "eps_div": 1e4, "stage1_episodes": 0}},
}
for _kind, _s1 in (("particle", _A3_S1), ("lane_merge", _A4_S1), ("checkers", _A5_S1)):
    PAPER[_kind]["stage1"] = {k.removeprefix("stage1_"): v for k, v in _s1.items()
                              if k != "stage1_episodes"}


# ---- critics (§2.5, code-faithful) --------------------------------------------------------------

# kind -> (Stage-1 layer, Stage-2 branch, merged layer h*, output bias) [C-CM3 networks.py
# Q_global_1output / Q_credit, Q_global_sumo / Q_credit_sumo, Q_global_checkers / Q_credit_checkers]
CRITIC_SIZES = {"particle": (64, 128, 64, False), "checkers": (256, 32, 256, True),
                "lane_merge": (256, 128, 256, True)}


class Critic(nn.Module):
    """Q_g or Q_c (they differ only in their inputs, see `global_inputs`, `credit_inputs`): a dict
    `x` with `vec` (the Stage-1 vector), `branch` (Stage 2) and, for Checkers, the images `state_T`
    [.., 3, 9, 2] and `view_T` [.., 5, 5, 3]; returns Q `[...]` over the leading axes. `vec` and
    `branch` are arrays or tuples of parts whose leading axes broadcast (`PartsDense`), and the
    images may have size-1 axes where they repeat: the first layer then costs M + N rows, not M*N.

    Stage-1 part: [vec (+ conv(4, 3x5) s_T, conv(6, 3x3) o_self,T)] -> dense; Stage 2 adds
    branch -> dense; h* = relu(W h_1 + W h_branch) without bias (§2.4); linear output."""

    kind: str
    stage: int

    @nn.compact
    def __call__(self, x):
        hidden, branch, merge, out_bias = CRITIC_SIZES[self.kind]
        feats = as_parts(x["vec"])
        if self.kind == "checkers":
            feats = (conv_flat(x["state_T"], 4, (3, 5), "conv_state"),
                     conv_flat(x["view_T"], 6, (3, 3), "conv_view")) + feats
        inputs = {"self": nn.relu(PartsDense(hidden, name="branch_self")(feats))}
        if self.stage > 1:
            inputs["others"] = nn.relu(PartsDense(branch, name="branch_others")(x["branch"]))
        h = Merge(merge, use_bias=False, name="merge")(inputs)
        return dense(1, "out", use_bias=out_bias)(h)[..., 0]


class Value(nn.Module):
    """V_n(s) of the QV ablation, new in Stage 2 and not augmented (§2.3): [s^n, g^n, s^-n] -> 64 ->
    64 -> 1 [C-CM3 V_particle_ablation, also used for SUMO]; Checkers: conv(4, 3x5)(s_T) joins the
    vector, -> 128 -> 32 -> 1 [V_checkers_ablation]. No output bias."""

    kind: str

    @nn.compact
    def __call__(self, x):
        feats, (h1, h2) = as_parts(x["vec"]), (64, 64)
        if self.kind == "checkers":
            feats = (conv_flat(x["state_T"], 4, (3, 5), "conv_state"),) + feats
            h1, h2 = 128, 32
        h = nn.relu(PartsDense(h1, name="h1")(feats))
        h = nn.relu(dense(h2, "h2")(h))
        return dense(1, "out", use_bias=False)(h)[..., 0]


# ---- critic inputs, per transition (vmap over a batch) -----------------------------------------


def _others(n: int) -> np.ndarray:
    return np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32).reshape(n, n - 1)


def _rows(x, idx):
    """`x[idx]` flattened per row: the others' rows of `x[N, d]` as `[N, (N-1) d]`."""
    return x[idx].reshape(idx.shape[0], -1)


def global_inputs(kind, lay, s, g, obs, s_env, a, num_actions, other_goals=False):
    """Q_g inputs for every goal owner n, leading axis [N]: vec = [s^n, g^n, onehot a^n
    (, o_self,V^n)], branch = [s^-n, onehot a^-n (, g^-n)] (§2.5), as tuples of parts (`Critic`)."""
    n = s.shape[0]
    others = _others(n)
    a1 = jax.nn.one_hot(a, num_actions, dtype=s.dtype)
    vec = [s, g, a1]
    branch = [_rows(s, others), _rows(a1, others)] + ([_rows(g, others)] if other_goals else [])
    x = {}
    if kind == "checkers":  # s_T once (size-1 axis), then broadcast by the first layer
        vec.append(piece(obs, lay, "self_V"))
        x["state_T"] = s_env.reshape(1, 3, 9, 2)
        x["view_T"] = piece(obs, lay, "self_T").reshape(n, 5, 5, 3)
    x["vec"], x["branch"] = tuple(vec), tuple(branch)
    return x


def credit_inputs(kind, lay, s, g, obs, s_env, a, num_actions, other_goals=False):
    """Q_c inputs for every (acting agent m, goal owner n), leading axes [M, N]: vec = [s^n, g^n,
    onehot a^m (, o_self,V^m)], branch = [s^m, s^-n (, g^-n)]; Checkers' local view o_self,T is
    agent m's (A-CM3-20). Parts indexed by n have shape [1, N, .], by m [M, 1, .]: the critic's
    first layer broadcasts them (`Critic`), so nothing is replicated M*N times before it."""
    n = s.shape[0]
    others = _others(n)
    a1 = jax.nn.one_hot(a, num_actions, dtype=s.dtype)
    of_n = lambda x: x[None]  # indexed by the goal owner n
    of_m = lambda x: x[:, None]  # indexed by the actor m
    vec = [of_n(s), of_n(g), of_m(a1)]
    branch = [of_m(s), of_n(_rows(s, others))] + ([of_n(_rows(g, others))] if other_goals else [])
    x = {}
    if kind == "checkers":  # s_T once, o_self,T once per acting agent m
        vec.append(of_m(piece(obs, lay, "self_V")))
        x["state_T"] = s_env.reshape(1, 1, 3, 9, 2)
        x["view_T"] = piece(obs, lay, "self_T").reshape(n, 1, 5, 5, 3)
    x["vec"], x["branch"] = tuple(vec), tuple(branch)
    return x


def value_inputs(kind, lay, s, g, obs, s_env, a=None, num_actions=None, other_goals=False):
    """V inputs for every n, leading axis [N]: vec = [s^n, g^n, s^-n] (+ s_T for Checkers)."""
    n = s.shape[0]
    x = {"vec": jnp.concatenate([s, g, _rows(s, _others(n))], -1)}
    if kind == "checkers":
        x["state_T"] = s_env.reshape(1, 3, 9, 2)
    return x


# ---- the CM3 algebra (§2.3) ---------------------------------------------------------------------


def advantage_tensor(q_global: jax.Array, q_counterfactual: jax.Array, probs: jax.Array) -> jax.Array:
    """A[i, m, n] = Q_n(s_i, **a**_i) - sum_a^ pi^m(a^ | o^m_i) Q_n(s_i, a^ ^m), `[S, M, N]`, from
    `q_global[S, N]`, `q_counterfactual[S, M, N, A]` (= Q_n(s, a^m = a^)) and `probs[S, M, A]`."""
    def one(q, q_cf, p):
        return q[None, :] - jnp.einsum("ma,mna->mn", p, q_cf)
    return jax.vmap(one)(q_global, q_counterfactual, probs)


def policy_loss(log_prob_taken: jax.Array, weight: jax.Array, mask: jax.Array) -> jax.Array:
    """-(1/S) sum_i sum_m log pi^m(a^m_i) sg[weight_{i,m}] over the rows with `mask` (Prop. 2,
    weight = sum_n A_{n,m}); `log_prob_taken`, `weight`: `[S, M]`, `mask`: `[S]` (a row weight)."""
    return -masked_mean(jnp.sum(log_prob_taken * jax.lax.stop_gradient(weight), -1), mask)


def taken_log_prob(logits: jax.Array, actions: jax.Array, eps) -> jax.Array:
    """log(P(a) + 1e-15) of the eps-floored softmax at the taken `actions` (§2.3)."""
    onehot = jax.nn.one_hot(actions, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(floored_log_probs(logits, eps) * onehot, -1)


# ---- state and init ------------------------------------------------------------------------------


@struct.dataclass
class State:
    nets: dict  # {"actor", "q_global", ("q_credit" | "v")}: flax variables
    targets: dict  # the target copies, same keys
    opt: dict  # one Adam state per net, same keys
    buffer: replay.Replay
    key: jax.Array
    episodes: jax.Array  # completed training episodes (this stage)
    train_calls: jax.Array  # on-policy train calls (eps schedule)
    step_remainder: jax.Array  # off-policy: env steps since the last multiple of steps_per_train
    train_steps: jax.Array  # minibatch steps taken
    stage1_curve: jax.Array  # Stage-1 evaluation returns, one per 100 episodes ([0] if none)
    stage1_return: jax.Array  # its last point (nan without Stage 1)
    config: Config = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False)
    stage: int = struct.field(pytree_node=False)
    on_policy: bool = struct.field(pytree_node=False)
    random_warmup: bool = struct.field(pytree_node=False)
    episodes_per_train: int = struct.field(pytree_node=False)
    modules: dict = struct.field(pytree_node=False)  # name -> flax module
    lay: tuple = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False)


def check_env(env, env_params, config: Config) -> None:
    """CM3 runs on the CM3 environments (particle_*, checkers*, lane_merge*) only."""
    kind = env_kind(env)
    config.validate()
    if kind == "checkers" and env.num_agents > 2:
        raise ValueError(f"Checkers has 1 or 2 agents, not {env.num_agents}")


def resolve_loop(loop: str, kind: str, stage: int) -> str:
    """The loop of Tables A.3-A.5: off-policy for SUMO and Checkers Stage 2, else on-policy."""
    if loop != "auto":
        return loop
    return "off_policy" if kind == "lane_merge" or (kind == "checkers" and stage == 2) else "on_policy"


def stage1_env(env, env_params):
    """`(env, params)` of the induced MDP of `env` (§2.4, §4): the registered Stage-1 environment,
    with the Stage-2 horizon and rewards where the tables use the same (Checkers, SUMO)."""
    from jaxmcg.registry import make

    kind = env_kind(env)
    copy = {"particle": (), "checkers": ("max_steps_in_episode", "own_reward", "other_reward",
                                        "fail_penalty"),
            "lane_merge": ("max_steps_in_episode", "min_insert_gap")}[kind]
    overrides = {k: getattr(env_params, k) for k in copy  # plain numbers (not swept or arrays)
                 if isinstance(getattr(env_params, k), (int, float))}
    if kind == "lane_merge":
        overrides["lateral_mode"] = env.lateral_mode
    return make(STAGE1_ENV_IDS[kind], **overrides)


def _transition_example(env, env_params, kind):
    """One zero transition (what the buffer stores), shapes from a reset and a step."""
    obs, st = env.reset(jax.random.PRNGKey(0), env_params)
    n = env.num_agents
    _, _, _, _, _, info = jax.eval_shape(env.step, jax.random.PRNGKey(0), st,
                                         jnp.zeros((n,), jnp.int32), env_params)
    zeros = lambda x: jnp.zeros(x.shape, jnp.float32)
    t = {"obs": zeros(obs), "next_obs": zeros(obs), "action": jnp.zeros((n,), jnp.int32),
         "reward": jnp.zeros((n,)), "done": jnp.zeros(()),
         "state": zeros(info["state"]), "next_state": zeros(info["state"]),
         "goal": zeros(info["goal"])}
    if kind == "checkers":
        t["state_env"] = zeros(info["state_env"])
        t["next_state_env"] = zeros(info["state_env"])
    return t


def _inputs(state_or_static, fn, t, actions, nxt=False):
    """`fn` (global/credit/value_inputs) over a batch of transitions `t` (leading [B]) with actions
    `[B, N]`, at s (or s' when `nxt`)."""
    kind, lay, num_actions, other_goals = state_or_static
    pre = "next_" if nxt else ""
    s_env = t.get(pre + "state_env", jnp.zeros(t["reward"].shape[:1] + (54,)))
    one = lambda s, g, o, e, a: fn(kind, lay, s, g, o, e, a, num_actions, other_goals)
    return jax.vmap(one)(t[pre + "state"], t["goal"], t[pre + "obs"], s_env, actions)


def _static(state: State):
    return (state.kind, state.lay, state.num_actions, state.config.critic_other_goals)


def init(key, env, env_params, config: Config = Config(), n_envs: int = 10,
         num_steps: int | None = None) -> State:
    """Fresh networks on an N = 1 environment (Stage 1); on N > 1, Stage 1 trained on the induced MDP
    first (unless `stage1_episodes` = 0) and restored into the Stage-2 networks (§2.4)."""
    check_env(env, env_params, config)
    kind = env_kind(env)
    n = env.num_agents
    stage = 1 if n == 1 else 2
    num_actions = int(env.action_space(env_params).n)
    lay = layout(env)
    modules = {"actor": make_actor(env, stage, env_params), "q_global": Critic(kind, stage)}
    if stage == 2:
        modules["q_credit" if config.advantage == "credit" else "v"] = (
            Critic(kind, stage) if config.advantage == "credit" else Value(kind))
    static = (kind, lay, num_actions, config.critic_other_goals)
    s1_nets = load_stage1(config.stage1_path) if stage == 2 and config.stage1_path else None
    train1 = stage == 2 and s1_nets is None and config.stage1_episodes > 0

    # one jitted program for the arrays: eager flax init compiles every primitive separately
    @jax.jit
    def arrays(key):
        example = _transition_example(env, env_params, kind)
        batch1 = jax.tree_util.tree_map(lambda x: x[None], example)
        acts = jnp.zeros((1, n), jnp.int32)
        fns = {"q_global": global_inputs, "q_credit": credit_inputs, "v": value_inputs}
        k_stage1, k_state, *k_nets = jax.random.split(key, 2 + len(modules))
        nets = {"actor": modules["actor"].init(k_nets[0], example["obs"])}
        for k, name in zip(k_nets[1:], [m for m in modules if m != "actor"]):
            nets[name] = modules[name].init(k, _inputs(static, fns[name], batch1, acts))
        curve, stage1_return, restored = jnp.zeros((1,)), jnp.asarray(jnp.nan), s1_nets
        if train1:
            s1, curve = train_stage1(k_stage1, env, env_params, config)
            restored, stage1_return = s1.nets, curve[-1]
        if restored is not None:
            # §2.4 restore: Stage-1 variables of the actor and Q_g; Q_c's Stage-1 part copied from
            # Q^1; Stage-2 groups (and V) fresh
            nets["actor"] = augment(restored["actor"], nets["actor"])
            nets["q_global"] = augment(restored["q_global"], nets["q_global"])
            if "q_credit" in nets:
                nets["q_credit"] = augment(restored["q_global"], nets["q_credit"])
        lrs = {"actor": config.lr_actor, "q_global": config.lr_critic,
               "q_credit": config.lr_critic, "v": config.lr_v}
        opt = {k: _adam(lrs[k]).init(v) for k, v in nets.items()}
        buffer = replay.init(example, config.buffer_size)
        return nets, opt, buffer, k_state, curve, stage1_return

    nets, opt, buffer, k_state, curve, stage1_return = arrays(key)
    zero = jnp.zeros((), jnp.int32)
    return State(
        nets=nets, targets=nets, opt=opt,  # targets = mains (§2.4)
        buffer=buffer, key=k_state, episodes=zero,
        train_calls=zero, step_remainder=zero, train_steps=zero, stage1_curve=curve,
        stage1_return=stage1_return, config=config, kind=kind, stage=stage,
        on_policy=resolve_loop(config.loop, kind, stage) == "on_policy",
        random_warmup=stage == 1 or not (s1_nets is not None or train1),
        episodes_per_train=int(n_envs),
        modules=modules, lay=lay, num_actions=num_actions)


def save_stage1(path: str, state: State) -> None:
    """Write the actor and Q^1 of a Stage-1 `state` (one seed: slice a vmapped one first) for
    `Config.stage1_path`."""
    nets = jax.device_get({k: state.nets[k] for k in ("actor", "q_global")})
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(nets))


def load_stage1(path: str) -> dict:
    """`{"actor": ..., "q_global": ...}` as `save_stage1` wrote them."""
    with open(path, "rb") as f:
        return serialization.msgpack_restore(f.read())


def _adam(lr):
    return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)  # TF defaults (§2.3)


def train_stage1(key, env, env_params, config: Config):
    """Train Stage 1 on the induced MDP of `env` with `jaxmcg.train.make_train` (pure, nested in the
    caller's jit). Returns `(stage-1 State, evaluation curve [chunks])`, one point per `period` = 100
    episodes (or the largest divisor of the iterations below it)."""
    from jaxmcg.train import TrainConfig, make_train

    env1, params1 = stage1_env(env, env_params)
    n_envs = config.stage1_n_envs
    iterations = config.stage1_episodes // n_envs
    per_chunk = max(1, 100 // n_envs)
    log_every = max(d for d in range(1, min(iterations, per_chunk) + 1) if iterations % d == 0)
    train = make_train(sys.modules[__name__], env1, params1, config.stage1(),
                       TrainConfig(n_envs=n_envs, iterations=iterations, log_every=log_every,
                                   eval_envs=config.stage1_eval_envs))
    runner, metrics = train(key)
    return runner.algo_state, metrics["collective_return"]


# ---- acting ----------------------------------------------------------------------------------------


def epsilon(state: State, episode=None) -> jax.Array:
    """The floor eps: on-policy, after `train_calls` decrements of (start - end) n_envs / eps_div;
    off-policy, for the 1-based training `episode` (default: the next), after one decrement per
    episode from `warmup_episodes` on (§2.6)."""
    c = state.config
    if state.on_policy:
        return linear_epsilon(state.train_calls, c.eps_start, c.eps_end,
                              c.eps_div / state.episodes_per_train)
    episode = state.episodes + 1 if episode is None else episode
    return linear_epsilon(jnp.maximum(episode - c.warmup_episodes, 0), c.eps_start, c.eps_end,
                          c.eps_div)


def act(state: State, obs, key, evaluate: bool = False):
    """Actions `[E, N]` sampled from the eps-floored policy (eps = 0 but still sampled when
    evaluating, A-CM3-17); uniform during warm-up in Stage 1 and from-scratch runs (A-CM3-19).
    Environment e of the batch plays training episode `episodes + e + 1`."""
    k_pi, k_uniform = jax.random.split(key)
    logits = state.modules["actor"].apply(state.nets["actor"], obs)
    episode = state.episodes + 1 + jnp.arange(obs.shape[0])
    eps = 0.0 if evaluate else jnp.broadcast_to(epsilon(state, episode), episode.shape)[:, None, None]
    actions = jax.random.categorical(k_pi, floored_log_probs(logits, eps)).astype(jnp.int32)
    if state.random_warmup and not evaluate:
        uniform = jax.random.randint(k_uniform, actions.shape, 0, state.num_actions, jnp.int32)
        actions = jnp.where((episode < state.config.warmup_episodes)[:, None], uniform, actions)
    return actions, {}


def act_greedy(state: State, obs, key):
    """The argmax of pi, for the greedy evaluation logged beside the sampled one (A-CM3-17)."""
    logits = state.modules["actor"].apply(state.nets["actor"], obs)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), {}


# ---- one train step (§2.2-2.3) --------------------------------------------------------------------


def next_actions(state: State, targets, t, eps, key) -> jax.Array:
    """a' ~ the *target* actor at o' with the current eps (A-CM3-16), `[B, N]`; one sample for both
    critics' targets."""
    logits = state.modules["actor"].apply(targets["actor"], t["next_obs"])
    return jax.random.categorical(key, floored_log_probs(logits, eps)).astype(jnp.int32)


def _not_done(t):
    return 1.0 - t["done"]


def global_loss(params, state: State, targets, t, mask, next_a):
    """Mean over (i, n) of (r^n + gamma (1 - done) Q'_g(s', a', g^n) - Q_g(s, a, g^n))^2; aux: Q_g(s,
    a, g^n) `[B, N]`."""
    net, g = state.modules["q_global"], state.config.gamma
    q_next = net.apply(targets["q_global"], _inputs(_static(state), global_inputs, t, next_a, True))
    x = jax.lax.stop_gradient(t["reward"] + g * _not_done(t)[:, None] * q_next)
    q = net.apply(params, _inputs(_static(state), global_inputs, t, t["action"]))
    return masked_mean(jnp.square(x - q), mask), q


def credit_loss(params, state: State, targets, t, mask, next_a):
    """Mean over (i, m, n) of (r^n + gamma (1 - done) Q'_c(s', a'^m, g^n) - Q_c(s, a^m, g^n))^2."""
    net, g = state.modules["q_credit"], state.config.gamma
    q_next = net.apply(targets["q_credit"], _inputs(_static(state), credit_inputs, t, next_a, True))
    y = jax.lax.stop_gradient(t["reward"][:, None, :] + g * _not_done(t)[:, None, None] * q_next)
    q = net.apply(params, _inputs(_static(state), credit_inputs, t, t["action"]))
    return masked_mean(jnp.square(y - q), mask)


def value_loss(params, state: State, targets, t, mask, next_a=None):
    """QV ablation: mean over (i, n) of (r^n + gamma (1 - done) V'_n(s') - V_n(s))^2; aux V_n(s)."""
    net, g = state.modules["v"], state.config.gamma
    v_next = net.apply(targets["v"], _inputs(_static(state), value_inputs, t, t["action"], True))
    z = jax.lax.stop_gradient(t["reward"] + g * _not_done(t)[:, None] * v_next)
    v = net.apply(params, _inputs(_static(state), value_inputs, t, t["action"]))
    return masked_mean(jnp.square(z - v), mask), v


def counterfactual_q(state: State, nets, t) -> jax.Array:
    """Q_n(s, a^m = a^) for every a^, `[B, M, N, A]`: the credit function in Stage 2, Q^1 (Q_g at
    N = 1, as the code) in Stage 1."""
    name, fn = ("q_global", global_inputs) if state.stage == 1 else ("q_credit", credit_inputs)
    n = t["reward"].shape[-1]

    def for_action(a_hat):
        actions = jnp.full(t["action"].shape, a_hat, jnp.int32)
        q = state.modules[name].apply(nets[name], _inputs(_static(state), fn, t, actions))
        return q.reshape(q.shape[0], n, n)  # Stage 1: [B, 1] -> [B, 1, 1]

    q = jax.vmap(for_action)(jnp.arange(state.num_actions))  # [A, B, M, N]
    return jnp.moveaxis(q, 0, -1)


def actor_loss(params, state: State, t, mask, weight, eps):
    """`policy_loss` of the main actor at the stored actions, weight `[B, M]` = sum_n A_{n,m}."""
    logits = state.modules["actor"].apply(params, t["obs"])
    return policy_loss(taken_log_prob(logits, t["action"], eps), weight, mask)


def _adam_step(state: State, name, params, grads, opt_state):
    lr = {"actor": state.config.lr_actor, "q_global": state.config.lr_critic,
          "q_credit": state.config.lr_critic, "v": state.config.lr_v}[name]
    updates, opt_state = _adam(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def train_step(state: State, learner, t, mask, eps, key):
    """One CM3 train step on the minibatch `t` (leaves [B, ...], rows weighted by `mask`) in the
    authors' order (§2.3). `learner` = (nets, targets, opt). Returns `(learner', metrics, advantage
    [B, M, N])`."""
    nets, targets, opt = (dict(x) for x in learner)
    next_a = next_actions(state, targets, t, eps, key)
    metrics = {}
    # 1. Q_g; its pre-update value enters the advantage (A-CM3-15)
    (loss, q_pre), grads = jax.value_and_grad(global_loss, has_aux=True)(
        nets["q_global"], state, targets, t, mask, next_a)
    nets["q_global"], opt["q_global"] = _adam_step(state, "q_global", nets["q_global"], grads,
                                                   opt["q_global"])
    metrics["cm3/loss_q_global"] = loss
    # 2. Q_c
    if "q_credit" in nets:
        loss, grads = jax.value_and_grad(credit_loss)(nets["q_credit"], state, targets, t, mask,
                                                      next_a)
        nets["q_credit"], opt["q_credit"] = _adam_step(state, "q_credit", nets["q_credit"], grads,
                                                       opt["q_credit"])
        metrics["cm3/loss_q_credit"] = loss
    # 3. V (QV ablation); V_n(s) before its step, as the code fetches it with the step
    if "v" in nets:
        (loss, v_pre), grads = jax.value_and_grad(value_loss, has_aux=True)(
            nets["v"], state, targets, t, mask)
        nets["v"], opt["v"] = _adam_step(state, "v", nets["v"], grads, opt["v"])
        metrics["cm3/loss_v"] = loss
        advantage = jnp.broadcast_to((q_pre - v_pre)[:, None, :], q_pre.shape + q_pre.shape[-1:])
    else:
        # baseline: main credit net (Q^1 in Stage 1) after its step, actor before its step
        probs = floored_probs(state.modules["actor"].apply(nets["actor"], t["obs"]), eps)
        advantage = advantage_tensor(q_pre, counterfactual_q(state, nets, t), probs)
    # 4. pi
    weight = jnp.sum(advantage, axis=-1)
    loss, grads = jax.value_and_grad(actor_loss)(nets["actor"], state, t, mask, weight, eps)
    nets["actor"], opt["actor"] = _adam_step(state, "actor", nets["actor"], grads, opt["actor"])
    metrics["cm3/loss_policy"] = loss
    metrics["cm3/advantage"] = masked_mean(weight, mask)
    metrics["cm3/q_global"] = masked_mean(q_pre, mask)
    # 5. Polyak averaging of every target
    targets = soft_update(targets, nets, state.config.tau)
    return (nets, targets, opt), metrics, advantage


# ---- update: the two loops (§2.6, §10.3) ------------------------------------------------------------


def transitions(state: State, batch):
    """The batch's steps as rows `[T*E]` of the buffer's transition dict, and their validity."""
    t_len, e = batch.valid.shape
    done = batch.terminated if state.config.truncation_bootstrap else (
        batch.terminated | batch.truncated)  # A-CM3-6
    action = batch.info["executed_action"] if state.kind == "lane_merge" else batch.action
    info = batch.info
    t = {"obs": batch.obs, "next_obs": batch.next_obs, "action": action.astype(jnp.int32),
         "reward": batch.reward, "done": done.astype(jnp.float32), "state": info["state"],
         "next_state": info["next_state"], "goal": info["goal"]}
    if state.kind == "checkers":
        t["state_env"], t["next_state_env"] = info["state_env"], info["next_state_env"]
    flat = lambda x: x.reshape((t_len * e,) + x.shape[2:])
    return jax.tree_util.tree_map(flat, t), flat(batch.valid) > 0


def push(buffer: replay.Replay, items, valid) -> replay.Replay:
    """`replay.add`, also when there are more rows than slots: then only the last `capacity` valid
    rows are kept, which is what a FIFO buffer ends up holding."""
    cap = buffer.capacity
    if valid.shape[0] <= cap:
        return replay.add(buffer, items, valid)
    from_end = jnp.cumsum(valid[::-1].astype(jnp.int32))[::-1]
    keep = valid & (from_end <= cap)
    slot = jnp.where(keep, jnp.cumsum(keep) - 1, cap)
    packed = jax.tree_util.tree_map(
        lambda x: jnp.zeros((cap,) + x.shape[1:], x.dtype).at[slot].set(x, mode="drop"), items)
    return replay.add(buffer, packed, jnp.arange(cap) < jnp.sum(keep))


def update(state: State, batch):
    """Push the iteration's episodes, then run the train steps its loop owes (module docstring)."""
    c = state.config
    t, valid = transitions(state, batch)
    n_episodes = batch.valid.shape[1]
    key, k_train = jax.random.split(state.key)
    buffer = push(state.buffer, t, valid)
    after = state.episodes + n_episodes
    if state.on_policy:
        eps = epsilon(state)
        do_train = after >= c.warmup_episodes
        n_steps, max_steps = jnp.where(do_train, c.epochs, 0), c.epochs
        remainder = state.step_remainder
    else:
        lengths = jnp.sum(batch.valid, axis=0).astype(jnp.int32)  # [E] steps of each episode
        start = state.step_remainder + jnp.cumsum(lengths) - lengths
        episode = state.episodes + 1 + jnp.arange(n_episodes)
        owed = (start + lengths) // c.steps_per_train - start // c.steps_per_train
        n_steps = jnp.sum(jnp.where(episode >= c.warmup_episodes, owed, 0))
        max_steps = math.ceil(valid.shape[0] / c.steps_per_train) + 1
        remainder = (state.step_remainder + jnp.sum(lengths)) % c.steps_per_train
        eps = epsilon(state, after)  # the eps of the iteration's last episode

    def step(learner, k):
        k_sample, k_next = jax.random.split(k)
        sample, mask = replay.sample(buffer, k_sample, c.batch_size)
        learner, metrics, _ = train_step(state, learner, sample, mask, eps, k_next)
        return learner, metrics

    learner, metrics = run_train_steps(step, (state.nets, state.targets, state.opt), k_train,
                                       n_steps, max_steps)
    if state.on_policy:  # the buffer is cleared after each train call
        buffer = buffer.replace(ptr=jnp.where(do_train, 0, buffer.ptr),
                                size=jnp.where(do_train, 0, buffer.size))
    nets, targets, opt = learner
    state = state.replace(
        nets=nets, targets=targets, opt=opt, buffer=buffer, key=key, episodes=after,
        train_calls=state.train_calls + (do_train if state.on_policy else 0),
        step_remainder=remainder, train_steps=state.train_steps + n_steps)
    metrics.update({"cm3/epsilon": eps, "cm3/train_steps": n_steps.astype(jnp.float32),
                    "cm3/buffer_size": state.buffer.size.astype(jnp.float32)})
    return state, metrics


def eval_metrics(state: State, batch) -> dict:
    """`cm3/stage1_return` (the last Stage-1 evaluation; nan without Stage 1) and, per environment
    (§10.4): particle collisions per episode (agent pairs x steps), Checkers items collected per
    agent and colour, lane-merge share of agent-episodes ending in each reward branch 1..5 of
    `envs.lane_merge.BRANCHES`."""
    out = {"cm3/stage1_return": state.stage1_return}
    valid = batch.valid
    info = batch.info
    if state.kind == "particle":
        pairs = jnp.sum(info["collisions"] * valid[..., None], axis=(0, 2)) / 2.0
        out["cm3/collisions"] = jnp.mean(pairs)
    elif state.kind == "checkers":
        out["cm3/collected"] = jnp.mean(jnp.max(info["collected"] * valid[..., None, None], 0), 0)
    else:
        from envs.lane_merge import branch_rates

        out["cm3/branch_rate"] = branch_rates(info["branch"], valid)
    return out
