"""HSD: hierarchical MARL with unsupervised skill discovery (thesis ch. 4, Alg 1; cm3-hsd.md §5), and
its variants HSD-scripted and HSD-ext (§5.5).

* High level: every `t_seg` steps each agent picks a skill z^n, eps-greedy on shared utilities
  Q_phi(o^n) (o -> 128 -> 128 -> K), trained by QMIX (`jaxmcg.mixer.QMixer`, embed 64, on the global
  state) on the team reward of the segment.
* Low level: shared IQL Q_theta([o^n, onehot z^n]) (-> 64 -> 64 -> |A|), eps-greedy, trained on
  R_L = alpha R + (1 - alpha) R_I, where R_I = p_psi(z^n | tau^n) comes from the skill decoder
  (`jaxmcg.skill_decoder`, a bi-LSTM on every-2nd-step differences of obs[0:10]).
* alpha starts at 1 and drops by `alpha_step` (to `alpha_end`) after every evaluation of
  `eval_episodes` greedy episodes, run every `eval_period` episodes, whose win rate is >= `alpha_threshold`
  (">=", code, A-HSD-12).

Variants (`variant`): "hsd_scripted" has K = 2 hand-made subtasks and trains the low level only on
their rewards (role 0: the agent held the puck and the home team scored; role 1: the away team held
it and the agent holds it now; §5.5); "hsd_ext" fixes alpha at 0 (intrinsic reward only; the code
has no such flag, A-HSD-6 is a guess).

How it fits the training loop. `act` has no memory, but z must persist for t_seg steps, so
`wrap_env` wraps the environment in `SkillEnv`, whose state keeps the current skills and whose
observation is `{"obs", "skill", "time"}`; actions are `SkillAction(skill, action)`: at a segment start
(time mod t_seg = 0) `act` picks new skills, otherwise it repeats `obs["skill"]`. `update` rebuilds
from each episode of the batch what the authors' loop (train_hsd.py, §5.2) computes while acting:

* high-level transitions (s_h, o_h, z, R~, s', o', done) with R~ = gamma^{t_seg} * sum R over the
  segment and a one-gamma bootstrap (code, A-HSD-1), the exponent (T mod t_seg) on the last segment
  with done = 1; `smdp_exact` uses sum_i gamma^i R_i and a gamma^{t_seg} bootstrap instead;
* the decoder dataset D: each segment that ends before the episode does, plus the last t_seg
  observations at the end of the episode (A-HSD-16), per agent;
* R_I from the decoder as it is at update time, on the first step of the next segment under its new
  skill (code, A-HSD-2), none for the final segment; `intrinsic_on_last_step` puts it on the last
  step of every complete segment (thesis L616);
* one decoder Adam step on D[:1000] whenever |D| >= 1000 after an episode, then D is emptied.

HSD-scripted has no decoder (alg_hsd_scripted.py), and its low-level buffer has no done flag, so its
IQL target always bootstraps, as there.

Accounting (§10.3). Episodes of a batch are processed one after the other in a `lax.scan`; the replay
buffers, D and the train-step counters (one IQL step per 10 env steps, one QMIX step per 10
high-level decisions, counted globally and skipped before the warm-up ends) are carried in the state.
eps (both levels) decays per episode after the `pretrain_episodes` of uniformly random skills and
actions. With `n_envs = 1` this is the authors' sample accounting, except that an episode's train
steps run after it rather than interleaved with its steps; the decoder then only changes between
episodes, as in the original, so R_I is exactly the original's. With `n_envs > 1` all episodes of a
batch act with the same networks and eps, and at most one evaluation runs per update. The alpha
evaluation runs inside `update`, on the environment the state keeps (a static field). Table 4.1's
ad-hoc teams and pinned skills are `evaluate_episodes` on STS2 with fewer learning agents, or with
`fixed_skill`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import distributions as D
from jaxmcg import replay
from jaxmcg import skill_decoder as SD
from jaxmcg import value_agents as V
from jaxmcg.algos import iql
from jaxmcg.critic import soft_update
from jaxmcg.environment import Wrapper, num_discrete_actions
from jaxmcg.mixer import QMixer
from jaxmcg.offpolicy import chosen, mixed_targets, run_train_steps, train_step_count
from jaxmcg.rollout import episode_rollout

VARIANTS = ("hsd", "hsd_scripted", "hsd_ext")


@dataclasses.dataclass(frozen=True)
class Config:
    variant: str = "hsd"  # "hsd", "hsd_scripted" (K = 2 subtasks, §5.5), "hsd_ext" (alpha = 0)
    num_skills: int = 4  # K: 4 for Table 4.1 and Fig 4.4, 8 for Fig 4.3 and config.json (A-HSD-5)
    t_seg: int = 10  # steps per skill (Fig 4.4d: 5, 10, 20)
    hidden_low: tuple[int, ...] = (64, 64)  # Q_theta(o, z), §5.3
    hidden_high: tuple[int, ...] = (128, 128)  # utilities Q_phi(o), §5.3
    mixer_embed: int = 64  # §2.7
    decoder_hidden: int = 128  # LSTM units per direction, §5.3
    lr_low: float = 1e-4  # Adam, all three (§5.4)
    lr_high: float = 1e-4
    lr_decoder: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.01  # Polyak, both levels
    buffer_size: int = 100_000  # B_H and B_L each (A-HSD-9)
    batch_size: int = 256
    steps_per_train: int = 10  # one step per 10 env steps (low) / 10 decisions (high)
    pretrain_episodes: int = 10  # uniform skills and actions while idx < 10 (episodes 1-9)
    eps_start: float = 0.5
    eps_end: float = 0.05
    eps_div: float = 1000.0  # episodes from eps_start to eps_end
    alpha_start: float = 1.0
    alpha_end: float = 0.6
    alpha_step: float = 0.01  # Fig 4.4c sensitivity
    alpha_threshold: float = 0.7  # Fig 4.4b sensitivity (0.4 is "unstable")
    decoder_batch: int = 1000  # N_batch: |D| that triggers a decoder step
    k_skip: int = 2  # decoder keeps every k_skip-th observation
    obs_truncate: int = 10  # decoder keeps obs[:10] (A-HSD-11)
    eval_period: int = 100  # episodes between alpha evaluations
    eval_episodes: int = 20  # greedy episodes per alpha evaluation; 0: no evaluation, alpha fixed
    smdp_exact: bool = False  # A-HSD-1: sum_i gamma^i R_i and a gamma^{t_seg} bootstrap
    intrinsic_on_last_step: bool = False  # A-HSD-2: R_I on the segment's last step (thesis)
    fixed_skill: int = -1  # >= 0: agent 0's skill is pinned when evaluating (Table 4.1, A-HSD-8)
    truncation_bootstrap: bool = False  # False: done at the time limit cuts the bootstrap (A-CM3-6)

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is invalid; valid: {', '.join(VARIANTS)}")
        if self.variant == "hsd_scripted" and self.num_skills != 2:
            raise ValueError(f"num_skills={self.num_skills} is invalid for variant='hsd_scripted', "
                             "which has exactly 2 hand-defined subtasks (valid: 2)")
        for name in ("num_skills", "t_seg", "mixer_embed", "decoder_hidden", "buffer_size",
                     "batch_size", "steps_per_train", "decoder_batch", "k_skip", "obs_truncate",
                     "eval_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size={self.batch_size} is invalid: must be <= buffer_size="
                             f"{self.buffer_size} (minibatches are drawn without replacement)")
        if SD.segment_length(self.t_seg, self.k_skip) < 1:
            raise ValueError(f"t_seg={self.t_seg} with k_skip={self.k_skip} leaves "
                             f"{SD.segment_length(self.t_seg, self.k_skip)} decoder steps; "
                             "valid: t_seg > k_skip")
        if not isinstance(self.eval_episodes, int) or self.eval_episodes < 0:
            raise ValueError(f"eval_episodes={self.eval_episodes!r} is invalid: must be >= 0")
        if not isinstance(self.pretrain_episodes, int) or self.pretrain_episodes < 0:
            raise ValueError(f"pretrain_episodes={self.pretrain_episodes!r} is invalid: must be >= 0")
        if not 0.0 <= self.alpha_end <= self.alpha_start <= 1.0:
            raise ValueError(f"alpha_start={self.alpha_start}, alpha_end={self.alpha_end} are "
                             "invalid: need 0 <= alpha_end <= alpha_start <= 1")
        if self.alpha_step < 0:
            raise ValueError(f"alpha_step={self.alpha_step} is invalid: must be >= 0")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"gamma={self.gamma}, tau={self.tau} are invalid: both in [0, 1]")
        if not 0.0 <= self.eps_end <= self.eps_start <= 1.0 or self.eps_div <= 0:
            raise ValueError(f"eps_start={self.eps_start}, eps_end={self.eps_end}, "
                             f"eps_div={self.eps_div} are invalid: need 0 <= eps_end <= eps_start "
                             "<= 1 and eps_div > 0")
        if not -1 <= self.fixed_skill < self.num_skills:
            raise ValueError(f"fixed_skill={self.fixed_skill} is invalid; valid: -1 (none) or a "
                             f"skill 0..{self.num_skills - 1}")

    @property
    def uses_alpha(self) -> bool:
        """Whether alpha weighs the low-level reward (not in HSD-scripted or HSD-ext)."""
        return self.variant == "hsd"


# --- the environment HSD plays ----------------------------------------------------------------------

@struct.dataclass
class SkillAction:
    skill: jax.Array  # [N] int32, the skill in force during the step (new at a segment start)
    action: jax.Array  # [N] int32 primitive action


@struct.dataclass
class SkillState:
    inner: Any
    skill: jax.Array  # [N] the current segment's skills (0 after a reset; replaced at time 0)
    time: jax.Array


class SkillEnv(Wrapper):
    """The inner environment with the current skills in its state. Observation of agent n:
    `{"obs": o^n, "skill": z^n, "time": t}` (every leaf with a leading agent axis); action:
    `SkillAction`, whose `action` goes to the inner environment and whose `skill` is kept."""

    def _obs(self, obs, skill, time):
        return {"obs": obs, "skill": skill,
                "time": jnp.full((self.num_agents,), time, jnp.int32)}

    def reset_env(self, key, params):
        obs, inner = self.inner.reset_env(key, params)
        skill = jnp.zeros((self.num_agents,), jnp.int32)
        return self._obs(obs, skill, inner.time), SkillState(inner, skill, inner.time)

    def step_env(self, key, state, actions: SkillAction, params):
        obs, inner, reward, terminated, info = self.inner.step_env(key, state.inner, actions.action,
                                                                   params)
        skill = actions.skill.astype(jnp.int32)
        return (self._obs(obs, skill, inner.time), SkillState(inner, skill, inner.time), reward,
                terminated, info)

    def get_obs(self, state, params=None):
        return self._obs(self.inner.get_obs(state.inner, params), state.skill, state.time)


def wrap_env(env, config: Config) -> SkillEnv:
    """`env` as HSD plays it (itself if it is wrapped already)."""
    config.validate()  # make_train calls this first: bad values fail before anything is traced
    return env if isinstance(env, SkillEnv) else SkillEnv(env)


def _step_info(env, env_params):
    """Shapes of the inner environment's step info (traced, not compiled)."""
    inner = env.inner if isinstance(env, SkillEnv) else env
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    actions = jax.ShapeDtypeStruct((inner.num_agents,), jnp.int32)
    _, state = jax.eval_shape(inner.reset_env, key, env_params)
    return jax.eval_shape(lambda k, s, a: inner.step_env(k, s, a, env_params)[4], key, state, actions)


def check_env(env, env_params, config: Config) -> None:
    """Raise ValueError unless HSD can play `env` (before anything is compiled): discrete actions,
    flat observations of at least `obs_truncate` features, the global state `info["state"]` for the
    mixer, `info["outcome"]` (> 0 is a win) for the alpha evaluations, `info["role_events"]` for
    HSD-scripted's subtask rewards, and buffers that hold an episode."""
    config.validate()
    inner = env.inner if isinstance(env, SkillEnv) else env
    num_discrete_actions(inner, "HSD")
    shape = inner.observation_space(env_params).shape
    if len(shape) != 1 or shape[0] < config.obs_truncate:
        raise ValueError(f"HSD needs flat observations of at least obs_truncate="
                         f"{config.obs_truncate} features; {inner.name} has shape {shape}")
    info = _step_info(inner, env_params)
    needed = ["state", "next_state"]
    needed += ["outcome"] if config.uses_alpha and config.eval_episodes else []
    needed += ["role_events"] if config.variant == "hsd_scripted" else []
    missing = [k for k in needed if k not in info]
    if missing:
        hint = "; eval_episodes=0 runs without alpha evaluations" if "outcome" in missing else ""
        raise ValueError(f"{inner.name} gives no info[{missing[0]!r}], which HSD with "
                         f"variant={config.variant!r} and eval_episodes={config.eval_episodes} "
                         f"needs{hint}")
    horizon = inner.horizon(env_params)
    if config.buffer_size < horizon:
        raise ValueError(f"buffer_size={config.buffer_size} is smaller than an episode "
                         f"({horizon} steps); valid: buffer_size >= {horizon}")


# --- networks and state ------------------------------------------------------------------------------

@struct.dataclass
class State:
    low_params: dict  # Q_theta, shared by the agents
    low_target: dict
    low_opt: optax.OptState
    high_params: dict  # {"utility": Q_phi, "mixer": QMixer}
    high_target: dict
    high_opt: optax.OptState
    decoder_params: dict
    decoder_opt: optax.OptState
    buffer_low: replay.Replay  # B_L: one row per env step, all agents
    buffer_high: replay.Replay  # B_H: one row per segment
    dataset: dict  # D: {"x": [cap, rows, obs_truncate] preprocessed segments, "skill": [cap]}
    dataset_size: jax.Array
    remainder_low: jax.Array  # env steps since the last IQL step (global count mod 10)
    remainder_high: jax.Array  # decisions since the last QMIX step
    episode: jax.Array  # episodes completed
    alpha: jax.Array
    decoder_prob: jax.Array  # mean p(z_true | tau) at the last decoder step
    decoder_steps: jax.Array
    eval_win_rate: jax.Array  # of the last alpha evaluation
    key: jax.Array
    config: Config = struct.field(pytree_node=False)
    env: SkillEnv = struct.field(pytree_node=False)  # for the alpha evaluations inside update
    env_params: Any = struct.field(pytree_node=False)
    low_net: V.QNet = struct.field(pytree_node=False)
    utility_net: V.QNet = struct.field(pytree_node=False)
    mixer: QMixer = struct.field(pytree_node=False)
    decoder: SD.SkillDecoder = struct.field(pytree_node=False)


def init(key, env, env_params, config: Config = Config(), num_steps: int | None = None) -> State:
    """Fresh networks (targets equal to mains), empty buffers and D; `num_steps` (default: the
    horizon) sizes D."""
    env = wrap_env(env, config)
    check_env(env, env_params, config)
    c = config
    n, k_dim = env.num_agents, c.num_skills
    num_actions = num_discrete_actions(env, "HSD")
    obs_dim = env.observation_space(env_params).shape[0]
    state_dim = math.prod(_step_info(env, env_params)["state"].shape)
    # TF dense defaults, Glorot-uniform kernels and zero biases (§5.3)
    low_net, utility_net = V.QNet(c.hidden_low, num_actions), V.QNet(c.hidden_high, k_dim)
    mixer, decoder = QMixer(n, c.mixer_embed), SD.SkillDecoder(k_dim, c.decoder_hidden)
    rows = SD.segment_length(c.t_seg, c.k_skip)
    horizon = num_steps or env.horizon(env_params)
    capacity = c.decoder_batch + n * -(-horizon // c.t_seg)  # what one episode can add, at most

    def arrays(key):  # one compiled program, not one per eager op
        k_low, k_util, k_mix, k_dec, key = jax.random.split(key, 5)
        obs, cond = jnp.zeros((n, obs_dim)), jnp.zeros((state_dim,))
        low = low_net.init(k_low, jnp.zeros((n, obs_dim + k_dim)))["params"]
        high = {"utility": utility_net.init(k_util, obs)["params"],
                "mixer": mixer.init(k_mix, jnp.zeros((n,)), cond)["params"]}
        dec = decoder.init(k_dec, jnp.zeros((rows, c.obs_truncate)))["params"]
        ints, zero, izero = jnp.zeros((n,), jnp.int32), jnp.zeros(()), jnp.zeros((), jnp.int32)
        low_row = {"obs": obs, "action": ints, "reward": jnp.zeros((n,)), "next_obs": obs,
                   "skill": ints, "done": zero}
        high_row = {"state": cond, "obs": obs, "skill": ints, "reward": zero, "next_state": cond,
                    "next_obs": obs, "done": zero, "discount": zero}
        return dict(
            low_params=low, low_target=low, low_opt=optax.adam(c.lr_low).init(low),
            high_params=high, high_target=high, high_opt=optax.adam(c.lr_high).init(high),
            decoder_params=dec, decoder_opt=optax.adam(c.lr_decoder).init(dec),
            buffer_low=replay.init(low_row, c.buffer_size),
            buffer_high=replay.init(high_row, c.buffer_size),
            dataset={"x": jnp.zeros((capacity, rows, c.obs_truncate)),
                     "skill": jnp.zeros((capacity,), jnp.int32)},
            dataset_size=izero, remainder_low=izero, remainder_high=izero, episode=izero,
            alpha=jnp.asarray(c.alpha_start if c.variant == "hsd" else 0.0, jnp.float32),
            decoder_prob=jnp.zeros((), jnp.float32), decoder_steps=izero,
            eval_win_rate=jnp.zeros((), jnp.float32), key=key)

    return State(**jax.jit(arrays)(key), config=c, env=env, env_params=env_params,
                 low_net=low_net, utility_net=utility_net, mixer=mixer, decoder=decoder)


# --- acting ------------------------------------------------------------------------------------------

def epsilon(state: State) -> jax.Array:
    """eps (both levels) of the next episode: eps_start until the warm-up ends, then minus
    (eps_start - eps_end) / eps_div per episode, down to eps_end (train_hsd.py)."""
    return V.exploration(state.episode, 1, state.config)[0][0]


def _skill_input(obs, skill, num_skills):
    return jnp.concatenate([obs, jax.nn.one_hot(skill, num_skills, dtype=obs.dtype)], axis=-1)


def choose(state: State, obs, key, eps, uniform, fixed_skill: int = -1) -> SkillAction:
    """Skills (new ones at segment starts: eps-greedy on Q_phi, or uniform) and eps-greedy (or
    uniform) primitive actions on Q_theta(o, z) for observations `obs[..., N, ...]`; `fixed_skill`
    >= 0 pins agent 0's skill."""
    c = state.config
    k_z, k_a, k_uz, k_ua = jax.random.split(key, 4)
    o = obs["obs"]
    q_high = state.utility_net.apply({"params": state.high_params["utility"]}, o)
    new = D.epsilon_greedy(k_z, q_high, eps)
    new = jnp.where(uniform, jax.random.randint(k_uz, new.shape, 0, c.num_skills), new)
    skill = jnp.where(obs["time"] % c.t_seg == 0, new, obs["skill"]).astype(jnp.int32)
    if fixed_skill >= 0:
        skill = skill.at[..., 0].set(fixed_skill)
    q_low = state.low_net.apply({"params": state.low_params}, _skill_input(o, skill, c.num_skills))
    action = D.epsilon_greedy(k_a, q_low, eps)
    action = jnp.where(uniform, jax.random.randint(k_ua, action.shape, 0, q_low.shape[-1]), action)
    return SkillAction(skill=skill, action=action.astype(jnp.int32))


def act(state: State, obs, key, evaluate: bool = False):
    """`SkillAction`s for `obs[E, N, ...]`: eps-greedy at both levels with each episode's eps
    (uniform in the warm-up; episode e of the batch is number `state.episode + e + 1`), or greedy
    with agent 0's skill pinned to `fixed_skill` (if set) when evaluating."""
    if evaluate:
        return choose(state, obs, key, 0.0, False, state.config.fixed_skill), {}
    eps, warmup = V.exploration(state.episode, obs["obs"].shape[0], state.config)
    return choose(state, obs, key, eps[:, None], warmup[:, None]), {}


def evaluate_episodes(state: State, key, n_episodes: int, env=None, env_params=None,
                      fixed_skill: int = -1) -> dict:
    """`n_episodes` greedy episodes (eps = 0 at both levels, skills re-chosen every t_seg steps, no
    learning). `env` defaults to the training environment; another number of learning agents gives
    the ad-hoc teams of Table 4.1 (STS2 `num_agents=2`: the last home slot is scripted). Returns
    the win, lose and draw rates (`info["outcome"]` > 0, < 0, = 0) and the mean team return."""
    env = state.env if env is None else wrap_env(env, state.config)
    env_params = state.env_params if env_params is None else env_params
    policy = lambda obs, k: (choose(state, obs, k, 0.0, False, fixed_skill), {})  # noqa: E731
    traj = episode_rollout(env, env_params, policy, key, n_episodes, env.horizon(env_params))
    outcome = jnp.sum(traj.info["outcome"] * traj.valid, axis=0)
    team_return = jnp.sum(jnp.mean(traj.reward, axis=-1) * traj.valid, axis=0)
    return {"win_rate": jnp.mean(outcome > 0), "lose_rate": jnp.mean(outcome < 0),
            "draw_rate": jnp.mean(outcome == 0), "return": jnp.mean(team_return)}


# --- rebuilding one episode's transitions (§5.2) --------------------------------------------------

def subtask_rewards(role_events: jax.Array, skill: jax.Array) -> jax.Array:
    """HSD-scripted's reward `[..., N]` (env_wrapper.py calc_local_rewards, §5.5) from STS2's
    `role_events[..., N, 8]`: role 0 scores ("goal": held the puck, home scored); role 1 regains
    (steal, defensive rebound or blocked pass: the away team held it, the agent holds it now)."""
    scored = role_events[..., 0]
    regained = role_events[..., 5] + role_events[..., 6] + role_events[..., 7]
    return jnp.where(skill == 0, scored, regained).astype(jnp.float32)


def episode_transitions(state: State, episode: dict) -> dict:
    """What the authors' loop stores during one episode, from its trajectory (leaves `[T, ...]`:
    obs, next_obs `[T, N, D]`, skill, action `[T, N]`, reward `[T, N]`, valid, done `[T]`,
    state, next_state `[T, ...]`, role_events). Returns
    `low` (B_L rows `[T, ...]`) with `low_valid`, `high` (B_H rows `[S, ...]`, S = ceil(T/t_seg))
    with `high_valid`, the decoder segments `segments` (`x [W, rows, F]`, `skill [W]`, `valid [W]`,
    W = N (S + 1), in the authors' order), `intrinsic` (`[T, N]` R_I), `assigned` (`[S, N]` 1 where
    a segment's R_I was given, `intrinsic_values` its value), the length `length` and the number of
    high-level decisions `decisions`."""
    c = state.config
    ts = c.t_seg
    valid = episode["valid"]
    t_max = valid.shape[0]
    n_seg = -(-t_max // ts)
    length = jnp.sum(valid).astype(jnp.int32)
    decisions = (length + ts - 1) // ts
    obs, skill = episode["obs"], episode["skill"]
    n = obs.shape[1]
    reward = episode["reward"] * valid[:, None]
    team = jnp.mean(reward, axis=-1)
    done = episode["done"] * valid
    cond = episode["state"].reshape(t_max, -1)
    next_cond = episode["next_state"].reshape(t_max, -1)

    start = jnp.arange(n_seg) * ts
    exists, boundary = start < length, start + ts < length  # boundary: pushed at t = start + ts
    complete = start + ts <= length
    final = jnp.arange(n_seg) == decisions - 1
    seg_skill = skill[jnp.minimum(start, t_max - 1)]  # [S, N]

    # tau^n of every segment and the final window (the last t_seg observations), [.., N, t_seg, D]
    padded = jnp.concatenate([obs, jnp.zeros((n_seg * ts - t_max,) + obs.shape[1:], obs.dtype)])
    windows = jnp.swapaxes(padded.reshape(n_seg, ts, n, -1), 1, 2)
    last = jax.lax.dynamic_slice_in_dim(padded, jnp.maximum(length - ts, 0), ts)
    x = SD.preprocess(windows, c.k_skip, c.obs_truncate)  # [S, N, rows, F]
    x_last = SD.preprocess(jnp.swapaxes(last, 0, 1), c.k_skip, c.obs_truncate)

    # R_I = p_psi(z | tau) with the decoder as it is now (A-HSD-2)
    p = SD.skill_probability(state.decoder, state.decoder_params, x, seg_skill)  # [S, N]
    if c.intrinsic_on_last_step:
        given, at = complete, start + ts - 1
    else:  # code: first step of the next segment; the final segment gets none (A-HSD-16)
        given, at = boundary, start + ts
    if c.variant == "hsd_scripted":  # no decoder in alg_hsd_scripted.py
        given = jnp.zeros_like(given)
    place = jax.nn.one_hot(jnp.where(given, at, t_max), t_max, dtype=p.dtype)  # [S, T]
    intrinsic = place.T @ p

    if c.variant == "hsd_scripted":
        low_reward = subtask_rewards(episode["role_events"], skill) * valid[:, None]
    else:
        alpha = state.alpha if c.variant == "hsd" else 0.0
        low_reward = alpha * reward + (1.0 - alpha) * intrinsic
    low = {"obs": obs, "action": episode["action"], "reward": low_reward,
           "next_obs": episode["next_obs"], "skill": skill, "done": done}

    # B_H: (s_h, o_h, z, R~, s', o', done) per segment (A-HSD-1)
    in_seg = (jnp.arange(t_max) // ts)[None, :] == jnp.arange(n_seg)[:, None]  # [S, T]
    if c.smdp_exact:
        seg_reward = in_seg @ (team * c.gamma ** (jnp.arange(t_max) % ts))
        discount = jnp.full((n_seg,), c.gamma ** ts)
    else:  # code: gamma^{t_seg} * sum R, exponent (T mod t_seg) at done, one-gamma bootstrap
        exponent = jnp.where(final, length % ts, ts)
        seg_reward = c.gamma ** exponent * (in_seg @ team)
        discount = jnp.full((n_seg,), c.gamma)
    nxt = jnp.minimum(start + ts, t_max - 1)
    end = length - 1
    high = {"state": cond[jnp.minimum(start, t_max - 1)], "obs": obs[jnp.minimum(start, t_max - 1)],
            "skill": seg_skill, "reward": seg_reward,
            "next_state": jnp.where(final[:, None], next_cond[end], cond[nxt]),
            "next_obs": jnp.where(final[:, None, None], episode["next_obs"][end], obs[nxt]),
            "done": final * done[end], "discount": discount}

    # D: every boundary segment, then the last t_seg observations if the episode is that long
    seg_x = jnp.concatenate([x.reshape(n_seg * n, *x.shape[2:]), x_last])
    seg_z = jnp.concatenate([seg_skill.reshape(-1), skill[end]])
    seg_valid = jnp.concatenate([jnp.repeat(boundary, n), jnp.full((n,), length >= ts)])
    return {"low": low, "low_valid": valid, "high": high, "high_valid": exists,
            "segments": {"x": seg_x, "skill": seg_z, "valid": seg_valid},
            "intrinsic": intrinsic, "assigned": jnp.repeat(given[:, None], n, 1),
            "intrinsic_values": p, "length": length, "decisions": decisions}


def _episodes(batch, truncation_bootstrap: bool = False) -> dict:
    """The batch as per-episode arrays with leaves `[E, T, ...]`."""
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    info = batch.info
    out = {"obs": batch.obs["obs"], "next_obs": batch.next_obs["obs"],
           "skill": batch.action.skill, "action": batch.action.action, "reward": batch.reward,
           "valid": batch.valid, "done": V.done_flags(batch, truncation_bootstrap),
           "state": info["state"], "next_state": info["next_state"]}
    if "role_events" in info:
        out["role_events"] = info["role_events"]
    return jax.tree_util.tree_map(swap, out)


# --- losses ------------------------------------------------------------------------------------------

def low_loss(params, state: State, batch: dict, mask: jax.Array) -> jax.Array:
    """IQL on B_L rows (§5.3; `iql.loss` with the skill-conditioned network): mean over rows and
    agents of (y - Q_theta(o, z, a))^2 with y = R_L + gamma (1 - done) max_a Q_theta'(o', z, a)."""
    c = state.config
    q_fn = lambda p, o: state.low_net.apply(  # noqa: E731
        {"params": p}, _skill_input(o, batch["skill"], c.num_skills))
    # HSD-scripted's low-level buffer has no done flag: it always bootstraps (alg_hsd_scripted.py)
    if c.variant == "hsd_scripted":
        batch = dict(batch, done=jnp.zeros_like(batch["done"]))
    return iql.loss(params, state.low_target, batch, mask, q_fn, c.gamma)[0]


def high_loss(params, state: State, batch: dict, mask: jax.Array) -> jax.Array:
    """QMIX on B_H rows (§5.3, §2.7): mean of (y - Q_tot(s, z))^2 with y = R~ + discount (1 - done)
    Q'_tot(s', argmax_z Q_phi'(o')) over the target utilities (A-HSD-10)."""
    q = state.utility_net.apply({"params": params["utility"]}, batch["obs"])
    q_tot = state.mixer.apply({"params": params["mixer"]}, chosen(q, batch["skill"]), batch["state"])
    next_q = state.utility_net.apply({"params": state.high_target["utility"]}, batch["next_obs"])
    mix = lambda qs, s: state.mixer.apply({"params": state.high_target["mixer"]}, qs, s)  # noqa: E731
    y = mixed_targets(mix, batch["reward"], next_q, batch["next_state"], batch["done"],
                      batch["discount"])
    return replay.masked_mean(jnp.square(y - q_tot), mask)


# --- update ------------------------------------------------------------------------------------------

def _decoder_step(state: State) -> State:
    """One Adam step of the decoder on D[:decoder_batch] if |D| >= decoder_batch, then D is emptied;
    logs the mean p(z_true | tau) of the step's forward pass (train_decoder)."""
    c = state.config
    x, z = state.dataset["x"][:c.decoder_batch], state.dataset["skill"][:c.decoder_batch]

    def step(parts):
        params, opt, _, steps = parts
        grads = jax.grad(lambda p: SD.decoder_loss(state.decoder, p, x, z))(params)
        prob = jnp.mean(SD.skill_probability(state.decoder, params, x, z))
        updates, opt = optax.adam(c.lr_decoder).update(grads, opt)
        return optax.apply_updates(params, updates), opt, prob.astype(jnp.float32), steps + 1

    due = state.dataset_size >= c.decoder_batch
    parts = (state.decoder_params, state.decoder_opt, state.decoder_prob, state.decoder_steps)
    params, opt, prob, steps = jax.lax.cond(due, step, lambda p: p, parts)
    return state.replace(decoder_params=params, decoder_opt=opt, decoder_prob=prob,
                         decoder_steps=steps, dataset_size=jnp.where(due, 0, state.dataset_size))


def _add_segments(state: State, segments: dict) -> State:
    """Append the valid decoder segments to D in order."""
    valid = segments["valid"]
    slot = jnp.where(valid, state.dataset_size + jnp.cumsum(valid) - 1, state.dataset["skill"].shape[0])
    dataset = {k: state.dataset[k].at[slot].set(segments[k].astype(state.dataset[k].dtype),
                                                mode="drop") for k in ("x", "skill")}
    return state.replace(dataset=dataset, dataset_size=state.dataset_size + jnp.sum(valid))


def _one_episode(state: State, episode: dict):
    """Store one episode as the authors' loop does, with the decoder step after it."""
    c = state.config
    out = episode_transitions(state, episode)
    training = state.episode + 1 >= c.pretrain_episodes
    n_low, rem_low = train_step_count(state.remainder_low, out["length"], c.steps_per_train)
    n_high, rem_high = train_step_count(state.remainder_high, out["decisions"], c.steps_per_train)
    state = state.replace(
        buffer_low=replay.add(state.buffer_low, out["low"], out["low_valid"]),
        buffer_high=replay.add(state.buffer_high, out["high"], out["high_valid"]),
        remainder_low=rem_low, remainder_high=rem_high)
    if c.variant != "hsd_scripted":
        state = _decoder_step(_add_segments(state, out["segments"]))
    state = state.replace(episode=state.episode + 1)
    assigned = out["assigned"].astype(jnp.float32)
    outcome = jnp.sum(episode["outcome"] * episode["valid"]) if "outcome" in episode else 0.0
    return state, {"n_low": n_low * training, "n_high": n_high * training,
                   "intrinsic_sum": jnp.sum(out["intrinsic_values"] * assigned),
                   "intrinsic_count": jnp.sum(assigned), "win": outcome > 0}


def _train(state: State, key, n_low, n_high, t_max: int, n_envs: int):
    """The owed IQL and QMIX steps, each followed by its Polyak update."""
    c = state.config

    def low_step(carry, k):
        params, target, opt = carry
        batch, mask = replay.sample(state.buffer_low, k, c.batch_size)
        loss, grads = jax.value_and_grad(low_loss)(params, state.replace(low_target=target), batch,
                                                   mask)
        updates, opt = optax.adam(c.lr_low).update(grads, opt)
        params = optax.apply_updates(params, updates)
        return (params, soft_update(target, params, c.tau), opt), {"loss": loss}

    def high_step(carry, k):
        params, target, opt = carry
        batch, mask = replay.sample(state.buffer_high, k, c.batch_size)
        loss, grads = jax.value_and_grad(high_loss)(params, state.replace(high_target=target),
                                                    batch, mask)
        updates, opt = optax.adam(c.lr_high).update(grads, opt)
        params = optax.apply_updates(params, updates)
        return (params, soft_update(target, params, c.tau), opt), {"loss": loss}

    k_low, k_high = jax.random.split(key)
    spt = c.steps_per_train
    max_low = -(-(spt - 1 + t_max * n_envs) // spt)
    max_high = -(-(spt - 1 + -(-t_max // c.t_seg) * n_envs) // spt)
    (lp, lt, lo), low_m = run_train_steps(
        low_step, (state.low_params, state.low_target, state.low_opt), k_low, n_low, max_low)
    (hp, ht, ho), high_m = run_train_steps(
        high_step, (state.high_params, state.high_target, state.high_opt), k_high, n_high, max_high)
    state = state.replace(low_params=lp, low_target=lt, low_opt=lo, high_params=hp, high_target=ht,
                          high_opt=ho)
    return state, low_m["loss"], high_m["loss"]


def alpha_schedule(alpha, win_rate, config: Config):
    """alpha - alpha_step (not below alpha_end) if win_rate >= alpha_threshold, else alpha."""
    lowered = jnp.maximum(config.alpha_end, alpha - config.alpha_step)
    return jnp.where(win_rate >= config.alpha_threshold, lowered, alpha).astype(jnp.float32)


def update(state: State, batch):
    """Store the batch's episodes one after the other (buffers, D, decoder steps), run the owed
    train steps, and evaluate for the alpha schedule when an `eval_period` boundary was crossed."""
    c = state.config
    key, k_train, k_eval = jax.random.split(state.key, 3)
    t_max, n_envs = batch.valid.shape
    eps = epsilon(state)
    episodes = _episodes(batch, c.truncation_bootstrap)
    if "outcome" in batch.info:
        episodes["outcome"] = jnp.swapaxes(batch.info["outcome"], 0, 1)
    before = state.episode
    state, per_ep = jax.lax.scan(_one_episode, state.replace(key=key), episodes)
    state, low_l, high_l = _train(state, k_train, jnp.sum(per_ep["n_low"]),
                                  jnp.sum(per_ep["n_high"]), t_max, n_envs)
    if c.uses_alpha and c.eval_episodes > 0:
        due = before // c.eval_period != state.episode // c.eval_period
        win = jax.lax.cond(due, lambda: evaluate_episodes(state, k_eval, c.eval_episodes)[
            "win_rate"].astype(jnp.float32), lambda: state.eval_win_rate)
        state = state.replace(alpha=jnp.where(due, alpha_schedule(state.alpha, win, c), state.alpha),
                              eval_win_rate=win)
    count = jnp.sum(per_ep["intrinsic_count"])
    return state, {
        "hsd/alpha": state.alpha, "hsd/epsilon": eps, "hsd/low_loss": low_l, "hsd/high_loss": high_l,
        "hsd/decoder_prob": state.decoder_prob, "hsd/decoder_steps": state.decoder_steps,
        "hsd/intrinsic_reward": jnp.sum(per_ep["intrinsic_sum"]) / jnp.maximum(count, 1.0),
        "hsd/eval_win_rate": state.eval_win_rate,
        "hsd/train_win_rate": jnp.mean(per_ep["win"].astype(jnp.float32)),
        "hsd/episodes": state.episode}


def eval_metrics(state: State, batch) -> dict:
    """Win / lose / draw rates of the evaluation episodes, each skill's share of agent-steps, and
    (STS2) the §6.9 game events per episode credited to each skill `[K, 8]` (Figs 4.2a, 4.3a)."""
    k = state.config.num_skills
    valid = batch.valid
    onehot = jax.nn.one_hot(batch.action.skill, k) * valid[..., None, None]  # [T, E, N, K]
    out = {"hsd/skill_usage": jnp.sum(onehot, axis=(0, 1, 2)) / jnp.maximum(jnp.sum(onehot), 1.0)}
    if "outcome" in batch.info:
        outcome = jnp.sum(batch.info["outcome"] * valid, axis=0)
        out.update({"hsd/win_rate": jnp.mean(outcome > 0), "hsd/lose_rate": jnp.mean(outcome < 0),
                    "hsd/draw_rate": jnp.mean(outcome == 0)})
    if "role_events" in batch.info:
        events = jnp.einsum("tenk,tenv->kv", onehot, batch.info["role_events"].astype(jnp.float32))
        out["hsd/skill_events"] = events / valid.shape[1]
    return out
