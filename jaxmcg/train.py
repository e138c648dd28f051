"""The training loop: nested `lax.scan`s, seeds `vmap`ped, metrics returned rather than printed.

An iteration is a sequence of phases; each phase collects a fresh batch of episodes with the current
policy and feeds it to one update. Most algorithms have the single phase `update`; LIO's faithful
iteration has two (policy step on tau, incentive step on tau-hat). `log_every` iterations make a
chunk; after each chunk the policy is evaluated with exploration off, which gives one logged point
(`collective_return`). An algorithm whose evaluation still samples (CM3 and its baselines, A-CM3-17)
can define `act_greedy(state, obs, key)`; its argmax policy is then evaluated too
(`greedy/collective_return`).
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxmcg.differentiable import is_differentiable_game
from jaxmcg.parallel import env_batch_constraint
from jaxmcg.rollout import episode_returns, episode_rollout


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    n_envs: int = 4096  # parallel episodes per rollout
    iterations: int = 2000
    log_every: int = 20  # iterations per chunk; one logged (evaluated) point per chunk
    eval_envs: int = 1024  # episodes per evaluation
    num_steps: int | None = None  # rollout length; default: the environment's horizon

    def validate(self) -> None:
        for name in ("n_envs", "iterations", "log_every", "eval_envs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
        if self.iterations % self.log_every:
            raise ValueError(
                f"iterations={self.iterations} is not a multiple of log_every={self.log_every}"
            )


@struct.dataclass
class RunnerState:
    algo_state: Any
    key: jax.Array
    iteration: jax.Array


def phases_of(algo, config) -> tuple[Callable, ...]:
    """The update functions of one iteration, each fed by its own rollout."""
    return algo.phases(config) if hasattr(algo, "phases") else (algo.update,)


def _mean_tree(tree):
    return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), tree)


def action_frequency(batch, num_actions) -> jax.Array:
    """Share of valid steps on which each agent took each action, `[N, A]` (discrete only; of the
    agents' entry `action["agents"]` when a designer's action is a dict, GTB)."""
    actions = batch.action["agents"] if isinstance(batch.action, dict) else getattr(
        batch.action, "action", batch.action)
    if num_actions is None or not jnp.issubdtype(actions.dtype, jnp.integer):
        return jnp.zeros(())
    onehot = jax.nn.one_hot(actions, num_actions) * batch.valid[..., None, None]
    return jnp.sum(onehot, axis=(0, 1)) / jnp.maximum(jnp.sum(batch.valid), 1.0)


@dataclasses.dataclass(frozen=True)
class Train:
    """Returned by `make_train`: `train(key)` runs everything; `init`/`chunk` let a host loop log."""

    init: Callable  # key -> RunnerState
    chunk: Callable  # RunnerState -> (RunnerState, metrics)
    n_chunks: int
    env: Any

    def __call__(self, key):
        runner = self.init(key)
        return jax.lax.scan(lambda r, _: self.chunk(r), runner, None, self.n_chunks)


def make_train(algo, env, env_params, config, train_config: TrainConfig = TrainConfig(),
               mesh=None) -> Train:
    """Build the pure training functions of `algo` (a module) on `env` for one seed.

    `jax.vmap(train)(keys)` trains several seeds at once; so do `vmap(init)` and `vmap(chunk)`.
    With a `mesh` (`jaxmcg.parallel.make_mesh`) the environment batches are split over its `envs`
    axis; vmap seeds with `spmd_axis_name=jaxmcg.parallel.RUNS` to split them over its `runs` axis.
    """
    train_config.validate()
    if is_differentiable_game(env):
        return _make_train_game(algo, env, env_params, config, train_config)
    if hasattr(algo, "wrap_env"):
        env = algo.wrap_env(env, config)
    num_steps = train_config.num_steps or env.horizon(env_params)
    phases = phases_of(algo, config)
    constrain = env_batch_constraint(mesh)
    num_actions = getattr(env.action_space(env_params), "n", None)
    # algorithms that carry a batch between updates (LIO, MetaGrad) size it at init
    init_params = inspect.signature(algo.init).parameters
    init_kwargs = {k: v for k, v in (("n_envs", train_config.n_envs), ("num_steps", num_steps))
                   if k in init_params}

    def rollout(algo_state, key, n_envs, evaluate=False, greedy=False):
        act = lambda obs, k: algo.act(algo_state, obs, k, evaluate=evaluate)
        if greedy:
            act = lambda obs, k: algo.act_greedy(algo_state, obs, k)
        return episode_rollout(env, env_params, act, key, n_envs, num_steps, constrain)

    def init(key):
        key, init_key = jax.random.split(key)
        algo_state = algo.init(init_key, env, env_params, config, **init_kwargs)
        return RunnerState(algo_state, key, jnp.zeros((), jnp.int32))

    def iteration(runner: RunnerState, _):
        algo_state, key = runner.algo_state, runner.key
        metrics, steps = {}, 0.0
        for p, update in enumerate(phases):
            key, rollout_key = jax.random.split(key)
            batch = rollout(algo_state, rollout_key, train_config.n_envs)
            if p == 0:
                returns = jnp.mean(episode_returns(batch), axis=0)
                metrics["train/episode_return/mean"] = returns
                metrics["train/collective_return"] = jnp.sum(returns)
            steps = steps + jnp.sum(batch.valid)
            algo_state, update_metrics = update(algo_state, batch)
            metrics.update(update_metrics)
        metrics["env_steps"] = steps
        runner = RunnerState(algo_state, key, runner.iteration + 1)
        return runner, metrics

    def chunk(runner: RunnerState):
        runner, metrics = jax.lax.scan(iteration, runner, None, train_config.log_every)
        env_steps = jnp.sum(metrics.pop("env_steps"))
        metrics = _mean_tree(metrics)
        key, eval_key = jax.random.split(runner.key)
        runner = runner.replace(key=key)
        batch = rollout(runner.algo_state, eval_key, train_config.eval_envs, evaluate=True)
        returns = jnp.mean(episode_returns(batch), axis=0)
        metrics["episode_return/mean"] = returns
        metrics["collective_return"] = jnp.sum(returns)
        metrics["action_frequency"] = action_frequency(batch, num_actions)
        if hasattr(algo, "eval_metrics"):
            metrics.update(algo.eval_metrics(runner.algo_state, batch))
        if hasattr(algo, "act_greedy"):  # a second evaluation with the policy's argmax
            # a key folded from the evaluation's: the training stream stays what it was without it
            greedy = rollout(runner.algo_state, jax.random.fold_in(eval_key, 1),
                             train_config.eval_envs, greedy=True)
            greedy_returns = jnp.mean(episode_returns(greedy), axis=0)
            metrics["greedy/episode_return/mean"] = greedy_returns
            metrics["greedy/collective_return"] = jnp.sum(greedy_returns)
        metrics["iteration"] = runner.iteration
        metrics["env_steps"] = env_steps
        return runner, metrics

    return Train(init=init, chunk=chunk, n_chunks=train_config.iterations // train_config.log_every,
                 env=env)


def _make_train_game(algo, game, params, config, train_config: TrainConfig) -> Train:
    """The loop for a differentiable game: an iteration is one simultaneous step of every player's
    strategy (and whatever the algorithm learns beside it, e.g. D3C's mixing rows), through the
    algorithm's `game_init(key, game, params, config)` and `game_update(state, game, params,
    config) -> (state, metrics)`. Returns are negated losses, so the logged `collective_return` is
    minus the total loss at the last step of the chunk."""
    if not hasattr(algo, "game_update"):
        raise ValueError(f"{algo.__name__} does not learn in differentiable games such as "
                         f"{game.name}; use a Markov game (jaxmcg.list_envs())")

    def init(key):
        key, init_key = jax.random.split(key)
        return RunnerState(algo.game_init(init_key, game, params, config), key,
                           jnp.zeros((), jnp.int32))

    def iteration(runner: RunnerState, _):
        state, metrics = algo.game_update(runner.algo_state, game, params, config)
        return runner.replace(algo_state=state, iteration=runner.iteration + 1), metrics

    def chunk(runner: RunnerState):
        runner, metrics = jax.lax.scan(iteration, runner, None, train_config.log_every)
        metrics = jax.tree_util.tree_map(lambda x: x[-1], metrics)
        metrics["episode_return/mean"] = -metrics["losses"]
        metrics["collective_return"] = -metrics["total_loss"]
        metrics["iteration"] = runner.iteration
        metrics["env_steps"] = jnp.asarray(train_config.log_every, jnp.float32)
        return runner, metrics

    return Train(init=init, chunk=chunk, n_chunks=train_config.iterations // train_config.log_every,
                 env=game)
