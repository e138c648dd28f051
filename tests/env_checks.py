"""Reusable API check for any registered environment: `check_env(env_id, **overrides)`.

Checks DESIGN.md's environment contract under `jit` and `vmap`: shapes and dtypes, observations in
`observation_space`, finite values, `info["final_obs"]`, termination/truncation flags, and that a
key fixes the trajectory. Other tests call it on custom configurations, e.g.
`check_env("escape_room-v0", num_agents=5, min_lever_pullers=3)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxmcg
from jaxmcg import spaces
from jaxmcg.differentiable import is_differentiable_game


def _rollout(env, params, n_envs: int, n_steps: int):
    """jit(key -> trajectory) of `n_steps` vmapped steps with actions from `action_space`."""
    act_space = env.action_space(params)
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    sample = jax.vmap(jax.vmap(act_space.sample))  # keys [n_envs, num_agents] -> actions
    inside = jax.vmap(jax.vmap(env.observation_space(params).contains))  # [n_envs, num_agents]
    valid = jax.vmap(jax.vmap(act_space.contains))

    def run(key):
        key, key_reset = jax.random.split(key)
        obs0, state = reset(jax.random.split(key_reset, n_envs), params)

        def body(carry, _):
            obs, state, key = carry
            key, key_act, key_step = jax.random.split(key, 3)
            act_keys = jax.random.split(key_act, n_envs * env.num_agents)
            actions = sample(act_keys.reshape(n_envs, env.num_agents, *act_keys.shape[1:]))
            out = step(jax.random.split(key_step, n_envs), state, actions, params)
            next_obs, next_state, reward, terminated, truncated, info = out
            record = {
                # space membership is computed here, inside jit, to avoid eager compiles
                "inside": inside(next_obs),
                "final_inside": inside(info["final_obs"]),
                "actions_valid": valid(actions),
                "obs": obs,
                "actions": actions,
                "next_obs": next_obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "info": info,
            }
            return (next_obs, next_state, key), record

        _, traj = jax.lax.scan(body, (obs0, state, key), None, length=n_steps)
        return obs0, inside(obs0), traj

    return jax.jit(run)


def _check_obs(obs, space, lead_shape, what, inside=None):
    """Shape, dtype, finiteness and (given `inside`, from `space.contains`) membership."""
    assert obs.shape == (*lead_shape, *space.shape), (
        f"{what}: shape {obs.shape}, expected {(*lead_shape, *space.shape)}"
    )
    assert obs.dtype == jnp.dtype(space.dtype), f"{what}: dtype {obs.dtype} != {space.dtype}"
    assert np.all(np.isfinite(np.asarray(obs))), f"{what}: non-finite values"
    if inside is not None:
        inside = np.asarray(inside)
        assert inside.all(), f"{what}: {int((~inside).sum())} observations outside {space}"


def check_env(env_id: str, n_envs: int = 1024, n_steps: int = 20, seed: int = 0, **overrides):
    """Assert the environment contract for `jaxmcg.make(env_id, **overrides)`; return (env, params).

    Runs `n_steps` random steps of `n_envs` vmapped environments.
    """
    env, params = jaxmcg.make(env_id, **overrides)
    if is_differentiable_game(env):
        return check_differentiable_game(env, params, n_envs, seed), params
    n = env.num_agents
    obs_space, act_space = env.observation_space(params), env.action_space(params)

    # single env, jitted methods
    key = jax.random.PRNGKey(seed)
    obs, state = env.reset(key, params)
    _check_obs(obs, obs_space, (n,), f"{env_id} reset obs")
    actions = jax.vmap(act_space.sample)(jax.random.split(key, n))
    assert actions.shape == (n,), f"sampled actions shape {actions.shape} != {(n,)}"
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions, params)
    _check_obs(obs, obs_space, (n,), f"{env_id} step obs")
    assert reward.shape == (n,) and reward.dtype == jnp.float32, (reward.shape, reward.dtype)
    assert terminated.shape == () and terminated.dtype == jnp.bool_, terminated
    assert truncated.shape == () and truncated.dtype == jnp.bool_, truncated
    assert "final_obs" in info and info["final_obs"].shape == obs.shape

    # vmapped rollout with auto-reset
    run = _rollout(env, params, n_envs, n_steps)
    obs0, inside0, traj = jax.tree_util.tree_map(np.asarray, run(key))
    _check_obs(obs0, obs_space, (n_envs, n), f"{env_id} vmapped reset obs", inside0)
    lead = (n_steps, n_envs)
    _check_obs(traj["next_obs"], obs_space, (*lead, n), f"{env_id} rollout obs", traj["inside"])
    _check_obs(traj["info"]["final_obs"], obs_space, (*lead, n), f"{env_id} final_obs",
               traj["final_inside"])
    assert traj["actions"].shape == (*lead, n), traj["actions"].shape
    assert traj["actions_valid"].all(), "actions sampled outside action_space"
    reward = traj["reward"]
    assert reward.shape == (*lead, n), f"reward shape {reward.shape} != {(*lead, n)}"
    assert reward.dtype == jnp.float32, reward.dtype
    assert np.isfinite(reward).all(), "non-finite rewards"
    for flag in ("terminated", "truncated"):
        assert traj[flag].shape == lead and traj[flag].dtype == jnp.bool_, (flag, traj[flag])
    assert not (traj["terminated"] & traj["truncated"]).any(), "both terminated and truncated"
    for path, leaf in jax.tree_util.tree_leaves_with_path(traj["info"]):
        assert leaf.shape[:2] == lead, f"info{jax.tree_util.keystr(path)} shape {leaf.shape}"
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.isfinite(leaf).all(), f"info{jax.tree_util.keystr(path)} is not finite"
    # where nothing ended, final_obs is the observation returned
    done = traj["terminated"] | traj["truncated"]
    same = traj["info"]["final_obs"] == traj["next_obs"]
    assert same[~done].all(), "final_obs differs from obs on a step that did not end the episode"

    # a key fixes the trajectory; a different key may differ (no assertion)
    _, _, traj_again = run(key)
    for a, b in zip(jax.tree_util.tree_leaves(traj), jax.tree_util.tree_leaves(traj_again),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, _, traj_other = run(jax.random.PRNGKey(seed + 1))
    assert jax.tree_util.tree_structure(traj_other) == jax.tree_util.tree_structure(traj)
    return env, params


class FlatEnv:
    """Just enough of an environment for an algorithm's `init`: 2 agents, 4-dim observations,
    3 actions."""

    num_agents = 2
    name = "flat"

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (4,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(3)


def check_differentiable_game(game, params, n_runs: int = 1024, seed: int = 0):
    """The differentiable-game contract: `init_strategies` gives `[n, d]`, `losses` is `[n]`, finite,
    jit- and vmap-able over strategies, with finite gradients; `project` keeps the shape."""
    n, d = game.num_agents, game.strategy_dim
    keys = jax.random.split(jax.random.PRNGKey(seed), n_runs)
    x = jax.vmap(game.init_strategies, in_axes=(0, None))(keys, params)
    assert x.shape == (n_runs, n, d), f"strategies {x.shape} != {(n_runs, n, d)}"
    losses = jax.jit(jax.vmap(game.losses, in_axes=(0, None)))(x, params)
    assert losses.shape == (n_runs, n), losses.shape
    assert np.isfinite(np.asarray(losses)).all(), "non-finite losses"
    jac = jax.jit(jax.vmap(game.loss_jacobian, in_axes=(0, None)))(x, params)
    assert jac.shape == (n_runs, n, n, d) and np.isfinite(np.asarray(jac)).all()
    assert jax.vmap(game.project, in_axes=(0, None))(x, params).shape == x.shape
    return game


def assert_rejected_before_compiling(make_it, needles) -> None:
    """`make_it()` raises ValueError whose message contains every string in `needles`, and XLA
    compiled nothing on the way (bad input must be caught before any compilation)."""
    import pytest

    compiled = []
    listener = lambda name, *_, **__: compiled.append(name)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(ValueError) as err:
            make_it()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert not [e for e in compiled if "backend_compile" in e], compiled
