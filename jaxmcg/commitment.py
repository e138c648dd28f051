"""Markov commitment games (dcl.md §1): any discrete-action environment as its commitment game.

At every decision each agent proposes its own next action (or, with mega-steps, its own next K
actions), sees the joint proposal and commits or rejects; the environment executes the joint
proposal if and only if every agent committed, and otherwise every agent's independently sampled
fallback action (dcl.md §1.2). Rewards and transitions depend only on the executed actions.

The three stages of a decision arrive together as one `Commitment` action: a learner samples the
commitments after seeing the proposals inside its `act` (proposals are public, so nothing is lost),
and the fallback actions are sampled every step, as the authors' rollout does (dcl.md §1.2), because
DCL's losses evaluate the critic at them even when they are not executed.

Mega-steps (dcl.md §2.11): proposals and fallbacks index `|A|^K` macro actions, first step the most
significant digit; one decision runs K inner steps and returns their discounted sum
`sum_t gamma^t r_{t+1}` (dcl.md D8), or the authors' `acc <- gamma acc + r` with
`legacy_mega_reward=True`. If the inner episode ends within a decision, the remaining inner steps
are skipped and add nothing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment, Wrapper, num_discrete_actions


@struct.dataclass
class Commitment:
    """One decision of every agent, each `[N]` int: macro-action indices for `proposal` and
    `action` (the fallback), and `commit` in {0 = reject, 1 = commit}."""

    proposal: jax.Array
    commit: jax.Array
    action: jax.Array


@struct.dataclass
class CommitmentState:
    inner: object
    time: jax.Array  # inner steps taken, so the inner horizon truncates the commitment game


class CommitmentGame(Wrapper):
    """The MCG of `env` with K-step commitments (`mega_step`); see the module docstring.

    Parameters are the inner environment's. `info` holds `proposal`, `commit`, `agreement` (all
    committed), `executed` (the executed macro actions, `[N]`) and the inner environment's `info`:
    its own keys when K = 1, and under `inner` stacked over the K inner steps otherwise.
    """

    def __init__(self, env: Environment, mega_step: int = 1, gamma: float = 0.99,
                 legacy_mega_reward: bool = False):
        num_base_actions = num_discrete_actions(env, "the commitment game")
        if not isinstance(mega_step, (int, np.integer)) or mega_step < 1:
            raise ValueError(f"mega_step={mega_step!r} is invalid: must be a positive integer")
        super().__init__(env)
        self.mega_step = int(mega_step)
        self.gamma = float(gamma)
        self.legacy_mega_reward = legacy_mega_reward
        self.num_base_actions = num_base_actions
        self.num_actions = self.num_base_actions ** self.mega_step
        self.validate_params(env.default_params)

    @property
    def name(self):
        return f"CommitmentGame({self.inner.name}, K={self.mega_step})"

    def validate_params(self, params) -> None:
        super().validate_params(params)
        horizon = int(params.max_steps_in_episode)
        if horizon % self.mega_step:
            raise ValueError(
                f"mega_step={self.mega_step} does not divide the horizon max_steps_in_episode="
                f"{horizon}; valid mega_step values: "
                f"{[k for k in range(1, horizon + 1) if horizon % k == 0]}"
            )

    def horizon(self, params) -> int:
        """Decisions per episode."""
        self.validate_params(params)
        return int(params.max_steps_in_episode) // self.mega_step

    def decode(self, macro: jax.Array) -> jax.Array:
        """Macro-action indices `[...]` -> inner actions `[..., K]`, first step most significant."""
        powers = self.num_base_actions ** np.arange(self.mega_step - 1, -1, -1)
        return (macro[..., None] // powers) % self.num_base_actions

    def reset_env(self, key, params):
        obs, inner = self.inner.reset_env(key, params)
        return obs, CommitmentState(inner, inner.time)

    def step_env(self, key, state, actions: Commitment, params):
        agreement = jnp.all(actions.commit == 1)
        executed = jnp.where(agreement, actions.proposal, actions.action).astype(jnp.int32)
        steps = self.decode(executed)  # [N, K]
        inner, obs = state.inner, None
        reward = jnp.zeros((self.num_agents,), jnp.float32)
        ended = jnp.asarray(False)
        infos = []
        for k, step_key in enumerate(jax.random.split(key, self.mega_step)):
            o, s, r, terminated, info = self.inner.step_env(step_key, inner, steps[:, k], params)
            r = jnp.where(ended, 0.0, r.astype(jnp.float32))
            if self.legacy_mega_reward:  # authors' code: acc <- gamma acc + r (dcl.md D8)
                reward = self.gamma * reward + r
            else:
                reward = reward + self.gamma ** k * r
            if k > 0:  # steps after the inner episode ended change nothing
                inner, obs = jax.tree_util.tree_map(
                    lambda new, old, ended=ended: jnp.where(ended, old, new), (s, o), (inner, obs))
            else:
                inner, obs = s, o
            ended = ended | terminated
            infos.append(info)
        info = infos[0] if self.mega_step == 1 else {
            "inner": jax.tree_util.tree_map(lambda *x: jnp.stack(x), *infos)}
        info = {**info, "proposal": actions.proposal, "commit": actions.commit,
                "agreement": agreement, "executed": executed}
        return obs, CommitmentState(inner, inner.time), reward, ended, info

    def action_space(self, params=None):
        """Per-agent space of macro actions (proposals and fallbacks); commitments are {0, 1}."""
        return spaces.Discrete(self.num_actions)
