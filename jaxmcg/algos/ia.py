"""IA: independent actor-critic with inequity-averse rewards, the thesis' Cleanup baseline (§2.9, after
Hughes et al. 2018; architecture §2.10, hyperparameters Table B.5 "IA").

Each agent keeps a temporally smoothed reward e_i^t = gamma * lambda * e_i^(t-1) + r_i^t (e^(-1) = 0
at every episode start) and learns, with `ac`'s update (critic -> actor -> target, A6), from

    r'_i = r_i - alpha/(N-1) sum_j max(e_j - e_i, 0) - beta/(N-1) sum_j max(e_i - e_j, 0).

The vector of all agents' smoothed rewards is an extra observation, joined after the first FC layer
(thesis L1784-1787), of the actor and of the critic (Hughes et al.'s value head shares the torso).

`wrap_env` adds that observation: the wrapped environment carries e in its state and observes
`{"obs": image, "extra": e[N]}` per agent, while its reward stays extrinsic, so the training loop's
returns are extrinsic. `update` reads e^t from `next_obs` (taken before any auto-reset, so each
episode's e is its own) and shapes the reward there.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from jaxmcg import spaces
from jaxmcg.algos import ac
from jaxmcg.environment import Environment, Wrapper


@dataclasses.dataclass(frozen=True)
class Config(ac.Config):
    network: str = "conv"  # Cleanup policy/value torso (§2.10)
    hidden: tuple[int, ...] = (64, 64)  # §2.10, FC64 -> FC64
    critic_hidden: tuple[int, ...] = (64, 64)
    lr: float = 1e-3  # actor SGD, Table B.5 IA (7x7 and 10x10)
    eps_div: float = 1000.0  # Table B.5 IA 7x7 (10x10: 5000), in iterations
    alpha: float = 0.0  # disadvantageous inequity, thesis L1787
    beta: float = 0.05  # advantageous inequity, thesis L1787
    lam: float = 0.95  # temporal smoothing, thesis L1787 (decay per step: gamma * lam)

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam={self.lam} is invalid: must be in [0, 1]")


@struct.dataclass
class SmoothedState:
    inner: object
    smoothed: jax.Array  # [N] e^t of the current episode
    time: jax.Array


class ObserveSmoothedRewards(Wrapper):
    """Carries each agent's smoothed extrinsic reward e (decay `decay` = gamma * lambda) and observes
    `{"obs": inner_obs, "extra": e}` per agent (every agent sees all N values, in index order).
    Rewards, termination and info are the inner environment's."""

    def __init__(self, env: Environment, decay: float):
        super().__init__(env)
        self.decay = float(decay)

    def _obs(self, inner_obs, smoothed):
        return {"obs": inner_obs, "extra": jnp.broadcast_to(smoothed, (self.num_agents,) * 2)}

    def reset_env(self, key, params):
        obs, inner = self.inner.reset_env(key, params)
        smoothed = jnp.zeros((self.num_agents,), jnp.float32)
        return self._obs(obs, smoothed), SmoothedState(inner, smoothed, inner.time)

    def step_env(self, key, state, actions, params):
        obs, inner, reward, terminated, info = self.inner.step_env(key, state.inner, actions, params)
        smoothed = smooth(state.smoothed, reward, self.decay)
        return self._obs(obs, smoothed), SmoothedState(inner, smoothed, inner.time), reward, terminated, info

    def get_obs(self, state, params=None):
        return self._obs(self.inner.get_obs(state.inner, params), state.smoothed)

    def observation_space(self, params=None):
        n = self.num_agents
        extra = spaces.Box(-jnp.inf, jnp.inf, (n,), jnp.float32)
        return spaces.Dict({"obs": self.inner.observation_space(params), "extra": extra})


def smooth(previous, reward, decay):
    """e^t = decay * e^(t-1) + r^t."""
    return decay * previous + jnp.asarray(reward, jnp.float32)


def inequity_reward(reward, smoothed, alpha, beta):
    """r'_i = r_i - alpha/(N-1) sum_j max(e_j - e_i, 0) - beta/(N-1) sum_j max(e_i - e_j, 0) over the
    last (agent) axis of `reward` and `smoothed` (the j = i terms are zero)."""
    n = reward.shape[-1]
    diff = smoothed[..., None, :] - smoothed[..., :, None]  # [..., i, j] = e_j - e_i
    envy = jnp.sum(jnp.maximum(diff, 0.0), axis=-1)
    guilt = jnp.sum(jnp.maximum(-diff, 0.0), axis=-1)
    return reward - (alpha * envy + beta * guilt) / (n - 1)


def wrap_env(env, config: Config) -> ObserveSmoothedRewards:
    """`env` observing the smoothed rewards (itself if it is wrapped already)."""
    if isinstance(env, ObserveSmoothedRewards):
        return env
    return ObserveSmoothedRewards(env, config.gamma * config.lam)


State = ac.State
epsilon = ac.epsilon
act = ac.act


def init(key, env, env_params, config: Config = Config()) -> State:
    """`ac.init` on the wrapped environment (wrapped here if it is not)."""
    if env.num_agents < 2:
        raise ValueError(f"IA needs at least 2 agents, {env.name} has {env.num_agents}")
    return ac.init(key, wrap_env(env, config), env_params, config)


def update(state: State, batch):
    """`ac.update` on the inequity-averse rewards; metrics under `ia/` plus the shaped return."""
    c = state.config
    shaped = inequity_reward(batch.reward, batch.next_obs["extra"][..., 0, :], c.alpha, c.beta)
    state, metrics = ac.update(state, batch.replace(reward=shaped))
    metrics = {f"ia/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
    w = batch.valid[..., None]
    metrics["ia/shaped_return"] = jnp.mean(jnp.sum(shaped * w, axis=0), axis=0)  # [N] per episode
    return state, metrics
