"""Independent REINFORCE with the thesis' exploration floor (thesis §2.2, §2.5, §2.9 "PG").

Each agent updates its own policy by plain SGD on -sum_t log pi_tilde(a_t|o_t) G_t - c_ent H,
where pi_tilde = (1 - eps) pi + eps / |A| and eps decays linearly per iteration.

Two options for D3C's Trust-Your-Brother learner (D3C App. G L1098; d3c.md §2.4): `output_bias=False`
(with `hidden=()`, its bias-free linear softmax) and `baseline="linear"`, a learned linear value
V_i(o) = w_i . o + b_i per agent, subtracted from G_t and trained by TD(0) at `lr_baseline`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxmcg import critic as C
from jaxmcg import distributions as D
from jaxmcg.losses import reinforce_loss
from jaxmcg.policy import init_policy, log_probs, obs_example, reinforce_terms
from jaxmcg.returns import discounted_returns


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (64, 32)  # ER policy MLP, thesis §2.10
    lr: float = 1e-2  # Table B.4: 1e-4 at one episode per update; batch-mean default (README)
    entropy_coef: float = 0.01  # Table B.4 beta, PG N=2
    eps_start: float = 0.5  # Table B.4
    eps_end: float = 0.05  # Table B.4
    eps_div: float = 100.0  # Table B.4, in iterations
    gamma: float = 0.99  # thesis L1743
    output_bias: bool = True  # False (with hidden=()): D3C TYB's linear softmax "with no bias"
    baseline: str = "none"  # "linear": D3C TYB's linear value baseline, trained by TD
    lr_baseline: float = 0.1  # D3C App. G L1098 (SGD)

    def validate(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r} is not implemented; valid: "
                             f"{', '.join(BASELINES)}")
        if self.baseline != "none" and not self.lr_baseline > 0:
            raise ValueError(f"lr_baseline={self.lr_baseline} is invalid: must be > 0")


BASELINES = ("none", "linear")


@struct.dataclass
class State:
    params: dict
    opt_state: optax.OptState
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    policy: object = struct.field(pytree_node=False)
    baseline_params: dict | None = None  # the linear V_i(o) of `baseline="linear"`, else None
    baseline: object = struct.field(pytree_node=False, default=None)


epsilon = D.epsilon


def init(key, env, env_params, config: Config) -> State:
    config.validate()
    policy, params = init_policy(key, env, env_params, config.hidden,
                                 use_output_bias=config.output_bias)
    baseline, baseline_params = None, None
    if config.baseline == "linear":
        # the policy's MLP has already checked that observations are flat
        baseline, baseline_params = C.init_critic(key, env.num_agents,
                                                  obs_example(env, env_params), ())
        # V = 0 at the start: a baseline that knows nothing subtracts nothing
        baseline_params = jax.tree_util.tree_map(jnp.zeros_like, baseline_params)
    return State(
        params=params,
        opt_state=optax.sgd(config.lr).init(params),
        iteration=jnp.zeros((), jnp.int32),
        config=config,
        policy=policy,
        baseline_params=baseline_params,
        baseline=baseline,
    )


def act(state: State, obs, key, evaluate: bool = False):
    """Sample actions `[E, N]` from the eps-mixed policies (eps = 0 when evaluating)."""
    eps = 0.0 if evaluate else epsilon(state)
    return D.sample(key, log_probs(state.policy, state.params, obs, eps)), {}


def policy_loss(params, state: State, batch, rewards) -> jax.Array:
    """Sum over agents of each agent's REINFORCE loss on `rewards[T, E, N]`, with G_t - V(o_t)
    in place of G_t when the state has a baseline."""
    c = state.config
    logp, ent = reinforce_terms(state.policy, params, batch.obs, batch.action, epsilon(state))
    returns = discounted_returns(rewards, batch.valid[..., None], c.gamma)
    if state.baseline is not None:
        returns = returns - jax.lax.stop_gradient(
            C.values(state.baseline, state.baseline_params, batch.obs))
    return jnp.sum(reinforce_loss(logp, returns, ent, batch.valid, c.entropy_coef))


def baseline_loss(baseline_params, state: State, batch, rewards) -> jax.Array:
    """Sum over agents of 1/2 the mean squared TD(0) error of V over valid steps, so that an SGD
    step is w += lr mean(delta o) (semi-gradient: the target r + gamma V(o') is a constant). The
    bootstrap stops at episode ends: V sees no time, and with gamma = 1 a bootstrap across the
    horizon would count the next episode's return."""
    c = state.config
    not_done = 1.0 - (batch.terminated | batch.truncated)[..., None].astype(rewards.dtype)
    v_next = C.values(state.baseline, baseline_params, batch.next_obs)
    targets = C.td_targets(rewards, v_next, c.gamma, not_done)
    v = C.values(state.baseline, baseline_params, batch.obs)
    return 0.5 * jnp.sum(C.critic_loss(v, targets, batch.valid))


def update(state: State, batch):
    """One REINFORCE step; with a baseline, the advantages use V before its own TD step."""
    c = state.config
    loss, grads = jax.value_and_grad(policy_loss)(state.params, state, batch, batch.reward)
    updates, opt_state = optax.sgd(c.lr).update(grads, state.opt_state, state.params)
    metrics = {"pg/loss": loss}
    baseline_params = state.baseline_params
    if state.baseline is not None:
        bloss, bgrads = jax.value_and_grad(baseline_loss)(baseline_params, state, batch, batch.reward)
        baseline_params = jax.tree_util.tree_map(lambda w, g: w - c.lr_baseline * g,
                                                 baseline_params, bgrads)
        metrics["pg/baseline_loss"] = bloss
    state = state.replace(
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        iteration=state.iteration + 1,
        baseline_params=baseline_params,
    )
    return state, {**metrics, "pg/epsilon": epsilon(state)}
