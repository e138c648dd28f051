"""D3C: each agent learns how to mix its loss with the others' by descending an upper bound on the
price of anarchy (Gemp et al. 2022; d3c.md §1).

Convention (d3c.md A1): the mixing matrix A is right-stochastic, agent i owns row A_i, and the
mixed losses are f^A = A^T f, i.e. f^A_i = sum_j A_ji f_j; for rewards, r_mixed = r @ A.

Exact version, for differentiable games (§1.6): with F^A_j = grad_{x_j} f^A_j the simultaneous
gradient-play direction,

    d/dt f^A_i = - sum_j < grad_{x_j} f^A_i , F^A_j >,
    d(d/dt f^A_i)/dA_il = - delta_il < grad_x f_i , F^A > - < grad_{x_l} f^A_i , grad_{x_l} f_i >,

and each agent steps its strategy x_i <- x_i - lr_x F^A_i and its row by entropic mirror descent
A_i <- softmax(clip(log A_i - lr_mixing g_i)) with g_i = 1[d/dt f^A_i + eps > 0] d(d/dt f^A_i)/dA_i
- nu e_i / A_ii (eq. 11, L165, L278). `mode="selfish"` is the gradient-descent baseline (A = I),
`mode="cooperation"` fixes A = 1/n (every player descends the total loss).

Evolution-strategies version, for RL learners (§1.7, Algorithms 1-2): `es_init` / `es_step` run
every agent's asynchronous trials on a vector of per-agent returns, without Python control flow.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import registry
from jaxmcg.differentiable import DifferentiableGame
from jaxmcg.rollout import episode_returns

MODES = ("d3c", "cooperation", "selfish")
ES_RETURNS = ("mixed", "raw", "mixed_unperturbed")


@dataclasses.dataclass(frozen=True)
class Config:
    # Differentiable domains: the paper gives no values; d3c.md A3 defaults (tested in §7)
    lr_x: float = 0.1  # eta_x
    lr_mixing: float = 0.1  # eta_A
    epsilon: float = 0.1  # eps; with 0 exact D3C stalls near Nash on the PD (A3)
    kl_weight: float = 0.0  # nu; 0 in every differentiable domain (A4)
    logit_clip: tuple = (-5.0, 5.0)  # [l, h] (Table 1); used in all domains (A6)
    init_self_weight: float = 0.99  # A^0_ii (Table 1)
    # ES version for RL learners. Table 1 has two rows, set by the presets and family defaults:
    # TYB (lr_mixing 1, perturbation 1, kl 0, trials 10-20, epsilon 0) and Coins / Cleanup /
    # HarvestPatch (lr_mixing 1e-3, perturbation 0.1, kl 1e-6, trials 5-10, epsilon 100).
    perturbation: float = 0.1  # delta
    trial_min: int = 5  # tau_min, in learner iterations (one update on a batch of episodes, A8)
    trial_max: int = 10  # tau_max
    learner: str = "ac"  # any registered single-update jaxmcg algorithm
    learner_params: tuple = ()  # (name, value) pairs for the learner's Config (CLI: learner.NAME=V)
    # "d3c"; "cooperation": A = 1/n fixed (the paper's upper baseline); "selfish": A = I (gradient
    # descent in differentiable games, independent learners in RL)
    mode: str = "d3c"
    # g of Algorithm 1, undiscounted: "mixed" (default, A11) sum_t r @ A~ with the trial's perturbed
    # rows; "raw" sum_t r; "mixed_unperturbed" sum_t r @ A with the unperturbed rows, so that G and
    # G_b weigh the returns alike and (G_b - G)/tau sees only what the learners changed, as the
    # exact version's d/dt f^A holds A fixed (§1.6). [ours] With "mixed", a trial whose A~_ii is
    # higher scores lower by dA~_ii * R_i before anyone learns, so with negative returns R_i
    # lose-shift walks A_ii down to the clip even when the learners are frozen (test). Stop 24,
    # 10 seeds each: on the IPD (d3c-ipd, 10k iterations) "mixed" takes A_ii 0.99 -> 0.01 and rho
    # 2 -> 1.0 on every seed, "mixed_unperturbed" leaves A_ii >= 0.98 and rho at 2.0; on TYB
    # (d3c-tyb, 60k) "mixed" reaches A_ii 0.01 by 46k, "raw" and "mixed_unperturbed" stay >= 0.97.
    es_return: str = "mixed"

    def __post_init__(self):  # JSON round trips turn the pairs into lists; keep them hashable
        object.__setattr__(self, "learner_params", tuple(tuple(p) for p in self.learner_params))

    def validate(self, num_agents: int | None = None) -> None:
        for name in ("lr_x", "lr_mixing", "perturbation"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be > 0")
        if not self.epsilon >= 0:
            raise ValueError(f"epsilon={self.epsilon!r} is invalid: must be >= 0 (d3c.md §1.5)")
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight={self.kl_weight!r} is invalid: must be >= 0")
        lo, hi = self.logit_clip
        if not lo < hi:
            raise ValueError(f"logit_clip={self.logit_clip!r} is invalid: need low < high")
        if not 0 < self.init_self_weight < 1:
            raise ValueError(f"init_self_weight={self.init_self_weight!r} is invalid: must be in "
                             "(0, 1) (mirror descent needs the interior of the simplex)")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is invalid; valid: {', '.join(MODES)}")
        if self.es_return not in ES_RETURNS:
            raise ValueError(f"es_return={self.es_return!r} is invalid; valid: "
                             f"{', '.join(ES_RETURNS)}")
        if not 1 <= self.trial_min <= self.trial_max:
            raise ValueError(f"trial_min={self.trial_min}, trial_max={self.trial_max} are invalid: "
                             "need 1 <= trial_min <= trial_max")


def learner_module(config: Config):
    """The learner algorithm module, or ValueError if `config.learner` cannot be one."""
    valid = [a for a in registry.list_algos() if a != "d3c"]
    if config.learner not in valid:
        raise ValueError(f"learner={config.learner!r} is not a jaxmcg algorithm; valid: "
                         f"{', '.join(valid)}")
    module = registry.get_algo(config.learner)
    if hasattr(module, "phases") or hasattr(module, "wrap_env"):
        raise ValueError(f"learner={config.learner!r} has several phases or wraps its environment; "
                         "D3C mixes the rewards of one update per iteration (e.g. pg, ac, ippo)")
    return module


def learner_config(config: Config):
    """The learner's Config from `config.learner_params`, validated."""
    module = learner_module(config)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    params = dict(config.learner_params)
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown learner parameter(s) {unknown} for {config.learner}; valid: "
                         f"{', '.join(sorted(fields))}")
    return module.Config(**params)


def check_env(env, env_params, config: Config) -> None:
    """Differentiable games run the exact version; Markov games the ES version around a learner."""
    if isinstance(env, DifferentiableGame):
        return
    if env.num_agents < 2:
        raise ValueError(f"D3C mixes rewards between agents; {env.name} has one agent")
    lc = learner_config(config)
    if hasattr(lc, "validate"):
        lc.validate()


def initial_mixing(num_agents: int, self_weight: float = 0.99) -> jax.Array:
    """A^0: `self_weight` on the diagonal, the rest spread evenly over the others (Table 1)."""
    off = (1.0 - self_weight) / max(num_agents - 1, 1)
    return jnp.where(jnp.eye(num_agents, dtype=bool), self_weight, off)


def fixed_mixing(num_agents: int, mode: str, self_weight: float = 0.99) -> jax.Array:
    """The starting A of `mode`: A^0 for D3C, the identity when selfish, 1/n for cooperation."""
    if mode == "selfish":
        return jnp.eye(num_agents)
    if mode == "cooperation":
        return jnp.full((num_agents, num_agents), 1.0 / num_agents)
    return initial_mixing(num_agents, self_weight)


def check_mixing_matrix(A, atol: float = 1e-5) -> None:
    """ValueError unless `A` is square and right-stochastic (non-negative rows summing to 1)."""
    a = np.asarray(A, np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"mixing matrix has shape {a.shape}; it must be square [n, n]")
    if (a < -atol).any():
        raise ValueError(f"mixing matrix has negative entries (min {a.min():.3g}); rows must lie "
                         "on the simplex")
    sums = a.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=atol):
        i = int(np.argmax(np.abs(sums - 1)))
        raise ValueError(f"mixing matrix row {i} sums to {sums[i]:.6g}; every row must sum to 1 "
                         "(right-stochastic)")


def mix_rewards(rewards: jax.Array, mixing: jax.Array) -> jax.Array:
    """Mixed rewards `r @ A`: agent i receives sum_j A_ji r_j (d3c.md A1). `rewards[..., n]`."""
    return rewards @ mixing


def update_directions(mixing, loss_jac):
    """`F^A[j] = grad_{x_j} f^A_j = sum_k A_kj grad_{x_j} f_k`, `[n, d]`, from `loss_jac[k, j, d]`."""
    return jnp.einsum("kj,kjd->jd", mixing, loss_jac)


def loss_rate(mixing, loss_jac):
    """`d/dt f^A_i` along simultaneous gradient play, `[n]`."""
    directions = update_directions(mixing, loss_jac)
    return -jnp.einsum("ki,kjd,jd->i", mixing, loss_jac, directions)


def loss_rate_gradient(mixing, loss_jac):
    """`G[i, l] = d(d/dt f^A_i)/dA_il`, the closed form of d3c.md §1.6 (agent i's own row only)."""
    directions = update_directions(mixing, loss_jac)
    own = jnp.einsum("ijd,jd->i", loss_jac, directions)  # <grad_x f_i, F^A>
    mixed_jac = jnp.einsum("ki,kld->ild", mixing, loss_jac)  # grad_{x_l} f^A_i
    cross = jnp.einsum("ild,ild->il", mixed_jac, loss_jac)  # <grad_{x_l} f^A_i, grad_{x_l} f_i>
    return -jnp.diag(own) - cross


def mirror_step(mixing, grad, lr, clip):
    """Entropic mirror descent on each row: softmax(clip(log A_i - lr g_i)) (L278, L203)."""
    logits = jnp.clip(jnp.log(mixing) - lr * grad, *clip)
    return jax.nn.softmax(logits, axis=-1)


def mixing_gradient(mixing, loss_jac, epsilon, kl_weight):
    """g_i of eq. 11 plus the KL regulariser: ReLU'(d/dt f^A_i + eps) dd/dA_i - nu e_i / A_ii."""
    active = (loss_rate(mixing, loss_jac) + epsilon > 0).astype(mixing.dtype)
    n = mixing.shape[0]
    kl = kl_weight * jnp.eye(n, dtype=mixing.dtype) / mixing
    return active[:, None] * loss_rate_gradient(mixing, loss_jac) - kl


@struct.dataclass
class ExactState:
    x: jax.Array  # [n, d] strategies
    mixing: jax.Array  # [n, n] right-stochastic A
    step: jax.Array


def game_init(key, game: DifferentiableGame, params, config: Config) -> ExactState:
    n = game.num_agents
    x = game.init_strategies(key, params)
    a0 = fixed_mixing(n, config.mode, config.init_self_weight)
    return ExactState(x=x, mixing=a0.astype(x.dtype), step=jnp.zeros((), jnp.int32))


def game_update(state: ExactState, game: DifferentiableGame, params, config: Config):
    """One simultaneous step of strategies and mixing rows; returns `(state, metrics)` with the
    metrics measured before the step."""
    loss_jac = game.loss_jacobian(state.x, params)
    losses = game.losses(state.x, params)
    directions = update_directions(state.mixing, loss_jac)
    x = game.project(state.x - config.lr_x * directions, params)
    mixing = state.mixing
    if config.mode == "d3c":
        grad = mixing_gradient(state.mixing, loss_jac, config.epsilon, config.kl_weight)
        mixing = mirror_step(state.mixing, grad, config.lr_mixing, config.logit_clip)
    total = jnp.sum(losses)
    metrics = {"losses": losses, "total_loss": total,
               "ratio_to_optimum": total / game.social_optimum(params),
               "loss_rate": loss_rate(state.mixing, loss_jac),
               "self_weight": jnp.diag(state.mixing)}
    return ExactState(x=x, mixing=mixing, step=state.step + 1), metrics


# --------------------------------------------------------------------------------------------
# ES version (Algorithms 1-2)


@struct.dataclass
class ESState:
    log_mixing: jax.Array  # [n, n] log A (rows normalised)
    direction: jax.Array  # [n, n] a~_i, the current trial's unit perturbation of row i
    trial_mixing: jax.Array  # [n, n] A~, the perturbed rows the learners use now
    trial_length: jax.Array  # int [n] tau_i
    trial_start: jax.Array  # int [n] t_b
    running_return: jax.Array  # [n] G, the mean return within the current trial
    baseline_return: jax.Array  # [n] G_b, the previous trial's mean (0 for the first)
    t: jax.Array  # int, learner iterations done


def _new_trials(key, log_mixing, config: Config):
    """Algorithm 2 for every agent: a uniform direction on the unit sphere in R^n, the perturbed row
    softmax(log A_i + delta a~_i) (unclipped, L221) and a length tau ~ U{tau_min..tau_max}."""
    n = log_mixing.shape[0]
    k_dir, k_len = jax.random.split(key)
    g = jax.random.normal(k_dir, (n, n), log_mixing.dtype)
    direction = g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    trial = jax.nn.softmax(log_mixing + config.perturbation * direction, axis=-1)
    length = jax.random.randint(k_len, (n,), config.trial_min, config.trial_max + 1)
    return direction, trial, length


def es_init(key, num_agents: int, config: Config, dtype=jnp.float32) -> ESState:
    log_a = jnp.log(initial_mixing(num_agents, config.init_self_weight)).astype(dtype)
    direction, trial, length = _new_trials(key, log_a, config)
    zeros = jnp.zeros(num_agents, dtype)
    return ESState(log_mixing=log_a, direction=direction, trial_mixing=trial, trial_length=length,
                   trial_start=jnp.zeros(num_agents, jnp.int32), running_return=zeros,
                   baseline_return=zeros, t=jnp.zeros((), jnp.int32))


def es_step(key, state: ESState, returns: jax.Array, config: Config):
    """Algorithm 1 after one learner iteration with per-agent returns `returns[n]`: update each
    agent's running mean; agents whose trial is complete take the step
    A_i <- softmax(clip(log A_i - eta_A (ReLU((G_b - G)/tau + eps) a~_i - nu e_i / A_i))) on the
    unperturbed row and start a new trial (G_b <- G). Returns `(state, metrics)`."""
    t = state.t + 1
    elapsed = t - state.trial_start
    running = (state.running_return * (elapsed - 1) + returns) / elapsed
    done = elapsed == state.trial_length
    rho = jax.nn.relu((state.baseline_return - running) / state.trial_length + config.epsilon)
    mixing = jnp.exp(state.log_mixing)
    n = mixing.shape[0]
    kl = config.kl_weight * jnp.eye(n, dtype=mixing.dtype) / mixing
    grad = rho[:, None] * state.direction - kl
    logits = jnp.clip(state.log_mixing - config.lr_mixing * grad, *config.logit_clip)
    stepped = jax.nn.log_softmax(logits, axis=-1)
    log_mixing = jnp.where(done[:, None], stepped, state.log_mixing)
    direction, trial, length = _new_trials(key, log_mixing, config)
    new = ESState(
        log_mixing=log_mixing,
        direction=jnp.where(done[:, None], direction, state.direction),
        trial_mixing=jnp.where(done[:, None], trial, state.trial_mixing),
        trial_length=jnp.where(done, length, state.trial_length),
        trial_start=jnp.where(done, t, state.trial_start),
        running_return=jnp.where(done, 0.0, running),
        baseline_return=jnp.where(done, running, state.baseline_return),
        t=t,
    )
    metrics = {"trial_done": done, "rho_estimate": jnp.where(done, rho, 0.0),
               "self_weight": jnp.diag(jnp.exp(log_mixing))}
    return new, metrics


# --------------------------------------------------------------------------------------------
# ES version around an RL learner: the jaxmcg algorithm contract


@struct.dataclass
class State:
    learner_state: object
    es: ESState
    key: jax.Array
    config: Config = struct.field(pytree_node=False)
    learner: object = struct.field(pytree_node=False)


def init(key, env, env_params, config: Config) -> State:
    learner = learner_module(config)
    k_learner, k_es, key = jax.random.split(key, 3)
    learner_state = learner.init(k_learner, env, env_params, learner_config(config))
    es = es_init(k_es, env.num_agents, config)
    return State(learner_state=learner_state, es=es, key=key, config=config, learner=learner)


def act(state: State, obs, key, evaluate: bool = False):
    return state.learner.act(state.learner_state, obs, key, evaluate=evaluate)


def current_mixing(state: State) -> jax.Array:
    """The matrix the learners train on now: the perturbed rows of the running trials for D3C."""
    if state.config.mode == "d3c":
        return state.es.trial_mixing
    return fixed_mixing(state.es.log_mixing.shape[0], state.config.mode)


def unperturbed_mixing(state: State) -> jax.Array:
    """A without the trials' perturbations: D3C's current rows, or the baselines' fixed matrix."""
    if state.config.mode == "d3c":
        return jnp.exp(state.es.log_mixing)
    return current_mixing(state)


def es_return(kind: str, returns, trial_mixing, mixing) -> jax.Array:
    """g of Algorithm 1 (`Config.es_return`) from the raw returns `[..., n]`: `returns` ("raw"),
    mixed by the trial's perturbed rows `trial_mixing` ("mixed", what the learners train on) or by
    the unperturbed rows `mixing` ("mixed_unperturbed")."""
    if kind == "raw":
        return returns
    return mix_rewards(returns, trial_mixing if kind == "mixed" else mixing)


def update(state: State, batch):
    """Algorithm 3 then Algorithm 1: one learner update on rewards mixed by the perturbed rows,
    then each agent's trial bookkeeping with its (batch-mean, undiscounted) episode return."""
    c = state.config
    trial = current_mixing(state)
    mixed = batch.replace(reward=mix_rewards(batch.reward, trial))
    learner_state, metrics = state.learner.update(state.learner_state, mixed)
    g = es_return(c.es_return, jnp.mean(episode_returns(batch), axis=0), trial,
                  unperturbed_mixing(state))
    key, k = jax.random.split(state.key)
    es, es_metrics = es_step(k, state.es, g, c) if c.mode == "d3c" else (state.es, {})
    a = unperturbed_mixing(state.replace(es=es))
    n = a.shape[0]
    off = ~jnp.eye(n, dtype=bool)
    diag = jnp.diag(a)
    metrics = {**metrics, "d3c/mixed_return": g, "d3c/self_weight": diag,
               # relative attention (A10): row ratio (what agent i sets) and column ratio (what
               # its learner optimises), averaged over the others
               "d3c/attention_row": jnp.log(diag) - jnp.sum(jnp.log(a) * off, 1) / (n - 1),
               "d3c/attention_col": jnp.log(diag) - jnp.sum(jnp.log(a) * off, 0) / (n - 1)}
    if es_metrics:
        metrics["d3c/trials_done"] = es_metrics["trial_done"].astype(jnp.float32)
    return state.replace(learner_state=learner_state, es=es, key=key), metrics


def eval_metrics(state: State, batch):
    out = {}
    if hasattr(state.learner, "eval_metrics"):
        out.update(state.learner.eval_metrics(state.learner_state, batch))
    if "own_coins_picked" in batch.info:  # Coins, Fig. 8d: share of picked coins of one's own type
        valid = batch.valid[..., None]
        own = jnp.sum(batch.info["own_coins_picked"] * valid, axis=(0, 1))
        picked = jnp.sum(batch.info["coins_picked"] * valid, axis=(0, 1))
        out["d3c/own_coin_rate"] = own / jnp.maximum(picked, 1.0)
    return out
