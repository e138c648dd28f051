"""QMIX, the value-factorisation baseline of CM3 (cm3-hsd.md §3) and HSD (§5.5) [C-CM3 alg_qmix*.py,
C-HSD alg_qmix.py].

Agent utilities Q^n(o^n, .) over primitive actions come from one network shared by the agents; the
mixer of §2.7 (`jaxmcg.mixer.QMixer`, monotone in every utility) turns the chosen ones into Q_tot,
conditioned on the global state (STS2: the 34-entry state) or on [state, all goals] (CM3's envs;
Checkers adds conv features of s_T, embed 128). Trained on the team reward R (CM3: the sum of the
agents' rewards; STS2's reward is the team reward already):

    y = R + gamma (1 - done) Q'_tot(s', argmax_a Q'^n(o'^n, a)),   L = mean (y - Q_tot(s, a))^2

where both the argmax and the utilities fed to the target mixer come from the *target* agent net
(the HSD code, A-HSD-10; CM3-Checkers' code fed the main utilities to the target mixer, a bug we do
not copy, A-CM3-21). One Adam step on agents and mixer together, then Polyak tau = 0.01 on both.

Defaults are HSD's STS2 values (§5.5: 128-128 utilities, embed 64, lr 1e-4, eps 0.5 -> 0.05 over
1000 episodes, replay 1e5, batch 256 every 10 env steps, 10 warm-up episodes); the CM3 tables'
values (§2.8) are presets. The schedule, buffer and accounting are `jaxmcg.value_agents`: train
steps run after each batch of episodes rather than interleaved with its steps (see there).

Per-env networks (`network="auto"`, §2.5): particle and STS2 an MLP on the whole flat observation
(particle: [o_self, g, o_others], the authors' [o_others, o_self, g] up to the order of the first
layer's inputs); Checkers the thesis' branch net (A-CM3-14); the lane merge the conv branch net.

On the particle envs at Table A.3's settings Q_tot runs away (1e6 or more within 3k episodes) and the
greedy policy ends near or below random. The authors' learner does the same: a TF1 transcription of
alg_qmix.py and networks.py diverged alike on Intersection. Summing the utilities (VDN) keeps the
same pipeline bounded, so the cause is this mixer under these settings (README, CM3 results).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import replay
from jaxmcg import value_agents as V
from jaxmcg.mixer import QMixer
from jaxmcg.offpolicy import chosen, mixed_targets

# what conditions the mixer: the state; [state, all goals] (CM3); conv(s_T) + [s_V, all goals]
# (CM3-Checkers); all agents' observations (for envs without info["state"]); auto = what the env has
MIXER_INPUTS = ("auto", "state", "state_goal", "state_env_goal", "obs")
STATE_ENV_SHAPE = (3, 9, 2)  # Checkers s_T = W[2:5, 2:11, 0:2] (§2.5)


@dataclasses.dataclass(frozen=True)
class Config:
    # §5.5 / [C-HSD config_qmix.json]: STS2 values
    hidden: tuple[int, ...] = (128, 128)  # nn_qmix n_h1, n_h2 (particle: 64, 64; §2.5)
    network: str = "auto"  # "mlp", "checkers", "lane_merge"; "auto" by environment (§2.5)
    mixer_embed: int = 64  # n_h_mixer (Checkers: 128, §2.7)
    mixer_input: str = "auto"  # one of MIXER_INPUTS
    team_reward: str = "auto"  # "sum" of the agents' rewards, "first" (STS2 broadcasts it), "auto"
    lr: float = 1e-4  # lr_Q (Tables A.3/A.4: 1e-3; A.5: 1e-5)
    gamma: float = 0.99
    tau: float = 0.01
    eps_start: float = 0.5
    eps_end: float = 0.05
    eps_div: float = 1000.0  # episodes of the linear decay
    buffer_size: int = 100_000  # CM3: 1e4 (SUMO 2e4)
    batch_size: int = 256  # CM3: 128
    steps_per_train: int = 10
    pretrain_episodes: int = 10  # CM3: 50; uniform actions while idx < pretrain_episodes
    truncation_bootstrap: bool = False  # False: done at the time limit cuts the bootstrap (A-CM3-6)

    def validate(self) -> None:
        V.validate_common(self)
        if self.mixer_input not in MIXER_INPUTS:
            raise ValueError(f"mixer_input={self.mixer_input!r} is invalid; valid: "
                             f"{', '.join(MIXER_INPUTS)}")
        V.positive_int("mixer_embed", self.mixer_embed)


class Mixer(nn.Module):
    """`Mixer(...)(q[..., N], cond) -> Q_tot[...]`: QMixer on cond["c"], after a conv(4, 3x5)
    feature map of cond["grid"] (Checkers' s_T) when `grid_shape` is set [C-CM3
    Qmix_mixer_checkers: concat(conv, state, goals)]."""

    num_agents: int
    embed: int
    grid_shape: tuple | None = None

    @nn.compact
    def __call__(self, q, cond):
        c = cond["c"]
        if self.grid_shape is not None:
            c = jnp.concatenate([V.conv_flat(cond["grid"], self.grid_shape, 4, (3, 5)), c], -1)
        return QMixer(self.num_agents, self.embed)(q, c)


@struct.dataclass
class State:
    params: dict  # {"agent": shared utilities, "mixer": mixer}
    target_params: dict
    opt_state: optax.OptState
    buffer: replay.Replay
    episodes: jax.Array  # episodes collected so far
    remainder: jax.Array  # env steps since the last due train step, mod steps_per_train
    train_steps: jax.Array  # minibatch steps taken so far
    key: jax.Array  # minibatch sampling
    config: Config = struct.field(pytree_node=False)
    agent: object = struct.field(pytree_node=False)
    mixer: object = struct.field(pytree_node=False)
    setup: V.Setup = struct.field(pytree_node=False)


def _resolve_mixer_input(env, info, config) -> str:
    mode = config.mixer_input
    if mode == "auto":
        if "state" not in info:
            raise ValueError(f"QMIX's mixer is conditioned on info['state'], which {env.name} does "
                             "not give; use mixer_input='obs' (all agents' observations) "
                             f"(valid: {', '.join(MIXER_INPUTS)})")
        mode = ("state_env_goal" if "state_env" in info and "goal" in info
                else "state_goal" if "goal" in info else "state")
    need = {"state": ("state", "next_state"), "state_goal": ("state", "next_state", "goal"),
            "state_env_goal": ("state", "next_state", "goal", "state_env", "next_state_env"),
            "obs": ()}[mode]
    missing = [k for k in need if k not in info]
    if missing:
        raise ValueError(f"mixer_input={mode!r} needs info[{missing[0]!r}], which {env.name} does "
                         "not give; valid for it: obs" + (", auto" if "state" in info else ""))
    if mode == "state_env_goal" and info["state_env"].shape[-1] != 54:
        raise ValueError(f"mixer_input='state_env_goal' needs Checkers' 54-entry s_T; {env.name} "
                         f"gives {info['state_env'].shape}; valid for it: state, state_goal, obs")
    return mode


def check_env(env, env_params, config: Config) -> V.Setup:
    """Discrete actions, flat observations, what the mixer is conditioned on, an episode that fits
    the buffer (traced with eval_shape, nothing compiled); returns the resolved modes."""
    return _checked(env, env_params, config)[0]


def _checked(env, env_params, config: Config):
    """`(setup, obs shape, info shapes)` after the checks of `check_env`."""
    obs, info = V.check_flat_discrete(env, env_params, config, "QMIX")
    setup = V.Setup(V.resolve_network(env, config), V.resolve_team_reward(env, config),
                    _resolve_mixer_input(env, info, config))
    return setup, obs, info


def mixer_conditions(obs, next_obs, info: dict, mode: str):
    """`(cond, next_cond)` for the mixer from observations `[..., N, D]` and a step's info, leaves
    `[..., C]`: {"c": flat vector} plus {"grid": s_T} for Checkers. Goals are the episode's own
    (constant within it), so s' is paired with the same goals."""
    lead = obs.shape[:-2]
    flat = lambda x: x.reshape(*lead, -1)  # noqa: E731
    if mode == "obs":
        return {"c": flat(obs)}, {"c": flat(next_obs)}
    goal = [flat(info["goal"])] if mode in ("state_goal", "state_env_goal") else []
    cond = {"c": jnp.concatenate([flat(info["state"]), *goal], -1)}
    next_cond = {"c": jnp.concatenate([flat(info["next_state"]), *goal], -1)}
    if mode == "state_env_goal":
        cond["grid"], next_cond["grid"] = flat(info["state_env"]), flat(info["next_state_env"])
    return cond, next_cond


def init(key, env, env_params, config: Config = Config()) -> State:
    config.validate()
    setup, obs, info = _checked(env, env_params, config)
    n = env.num_agents
    agent = V.make_network(setup.network, env, config.hidden, V.num_actions(env, env_params, "QMIX"))
    mixer = Mixer(n, config.mixer_embed, STATE_ENV_SHAPE if setup.mixer_input == "state_env_goal"
                  else None)
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
    cond, next_cond = jax.eval_shape(lambda i: mixer_conditions(
        zeros(obs), zeros(obs), jax.tree_util.tree_map(zeros, i), setup.mixer_input), info)

    def arrays(key):  # one compiled program: an eager init compiles op by op
        cond_, next_cond_ = (jax.tree_util.tree_map(zeros, c) for c in (cond, next_cond))
        k_agent, k_mixer, k_state = jax.random.split(key, 3)
        params = {"agent": agent.init(k_agent, zeros(obs))["params"],
                  "mixer": mixer.init(k_mixer, jnp.zeros((n,)), cond_)["params"]}
        example = {"obs": zeros(obs), "action": jnp.zeros((n,), jnp.int32), "reward": jnp.zeros(()),
                   "next_obs": zeros(obs), "done": jnp.zeros(()), "cond": cond_,
                   "next_cond": next_cond_}
        zero = jnp.zeros((), jnp.int32)
        return dict(params=params, target_params=params,  # targets <- mains at the start [C-*]
                    opt_state=optax.adam(config.lr).init(params),
                    buffer=replay.init(example, config.buffer_size), episodes=zero,
                    remainder=zero, train_steps=zero, key=k_state)

    return State(**jax.jit(arrays)(key), config=config, agent=agent, mixer=mixer, setup=setup)


def utilities(state: State, obs) -> jax.Array:
    """Q^n(o^n, .) of the main agent network, `[..., N, A]`."""
    return state.agent.apply({"params": state.params["agent"]}, obs)


def act(state: State, obs, key, evaluate: bool = False):
    """Actions `[E, N]`: eps-greedy on the utilities (uniform in the warm-up), greedy when
    evaluating (§2.6 "QMIX is greedy")."""
    return V.epsilon_greedy_actions(utilities(state, obs), key, state.episodes, state.config,
                                    evaluate), {}


def targets(target_params, batch: dict, agent, mixer, gamma: float) -> jax.Array:
    """y = R + gamma (1 - done) Q'_tot(s', argmax Q'^n(o'^n)) with the target agent and mixer, `[B]`."""
    next_q = agent.apply({"params": target_params["agent"]}, batch["next_obs"])
    mix = lambda q, c: mixer.apply({"params": target_params["mixer"]}, q, c)  # noqa: E731
    return mixed_targets(mix, batch["reward"], next_q, batch["next_cond"], batch["done"], gamma)


def loss(params, target_params, batch: dict, mask: jax.Array, agent, mixer, gamma: float):
    """QMIX loss on a minibatch: mean over valid rows (`mask[B]`) of (y - Q_tot(s, a))^2.

    `batch`: obs, next_obs `[B, N, D]`, action `[B, N]`, reward, done `[B]`, cond, next_cond (see
    `mixer_conditions`). Returns `(loss, mean Q_tot over valid rows)`.
    """
    q = chosen(agent.apply({"params": params["agent"]}, batch["obs"]), batch["action"])
    q_tot = mixer.apply({"params": params["mixer"]}, q, batch["cond"])
    y = targets(target_params, batch, agent, mixer, gamma)
    return replay.masked_mean(jnp.square(y - q_tot), mask), replay.masked_mean(q_tot, mask)


def transitions(state: State, batch) -> dict:
    """The replay rows of a batch, leaves `[T, E, ...]`."""
    cond, next_cond = mixer_conditions(batch.obs, batch.next_obs, batch.info,
                                       state.setup.mixer_input)
    return {"obs": batch.obs, "action": batch.action,
            "reward": V.team_reward(batch.reward, state.setup.team_reward),
            "next_obs": batch.next_obs,
            "done": V.done_flags(batch, state.config.truncation_bootstrap),
            "cond": cond, "next_cond": next_cond}


def update(state: State, batch):
    """Push the batch's valid transitions, then take the minibatch steps the authors' one step
    every `steps_per_train` env steps owes (none before the warm-up ends)."""
    loss_fn = lambda p, t, items, mask: loss(p, t, items, mask, state.agent, state.mixer,  # noqa: E731
                                             state.config.gamma)
    return V.offpolicy_update(state, batch, transitions(state, batch), loss_fn, "qmix")


def eval_metrics(state: State, batch) -> dict:
    """Win, lose and draw rates of the greedy evaluation episodes on STS2 (Table 4.1)."""
    return V.outcome_rates(batch, "qmix")
