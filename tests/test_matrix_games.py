"""Iterated matrix games (envs/matrix_games.py): payoffs of every joint action, memory-1
observations, horizons, registry entries and parameter validation."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from envs.matrix_games import (
    CHICKEN_PAYOFF,
    CONFLICT_PAYOFF,
    IPD_PAYOFF,
    STAG_HUNT_PAYOFF,
)

KEY = jax.random.PRNGKey(0)

# (env id, expected payoffs of CC, CD, DC, DD as (row, column), horizon, observation dim)
REGISTERED = [
    # thesis Table 5.1
    ("ipd-v0", [(-1, -1), (-3, 0), (0, -3), (-2, -2)], 5, 5),
    ("matrix_game-v0", [(-1, -1), (-3, 0), (0, -3), (-2, -2)], 5, 5),
    # dcl.md §3.6
    ("stag_hunt-v0", [(5, 5), (0, 2), (2, 0), (1, 1)], 5, 5),
    ("chicken-v0", [(0, 0), (-1, 1), (1, -1), (-10, -10)], 5, 5),
    # dcl.md §3.3 (T = 16, dummy state) and §3.1 (T = 1, dummy state)
    ("rpc-v0", [(0, 0), (-1, 2), (2, -1), (0, 0)], 16, 2),
    ("pd-v0", [(-1, -1), (-3, 0), (0, -3), (-2, -2)], 1, 2),
]


def play(env, params, state, a_row, a_col):
    return env.step(KEY, state, jnp.array([a_row, a_col], jnp.int32), params)


@pytest.mark.parametrize("env_id, payoffs, horizon, obs_dim", REGISTERED)
def test_payoffs_of_every_joint_action(env_id, payoffs, horizon, obs_dim):
    env, params = jaxmcg.make(env_id)
    assert int(params.max_steps_in_episode) == horizon
    assert env.observation_space(params).shape == (obs_dim,)
    for joint, (a_row, a_col) in enumerate(itertools.product(range(2), repeat=2)):
        _, state = env.reset(KEY, params)
        _, _, reward, terminated, truncated, info = play(env, params, state, a_row, a_col)
        np.testing.assert_array_equal(reward, np.asarray(payoffs[joint], np.float32))
        assert reward.dtype == jnp.float32
        assert int(info["joint_action"]) == joint
        assert not bool(terminated)
        assert bool(truncated) == (horizon == 1)


def test_ipd_memory1_observations():
    env, params = jaxmcg.make("ipd")
    obs, state = env.reset(KEY, params)
    start = np.array([0, 0, 0, 0, 1], np.float32)
    np.testing.assert_array_equal(obs, [start, start])  # same joint state for both agents
    for a_row, a_col in [(0, 1), (1, 1), (1, 0), (0, 0)]:
        obs, state, _, _, _, _ = play(env, params, state, a_row, a_col)
        expected = np.eye(5, dtype=np.float32)[2 * a_row + a_col]
        np.testing.assert_array_equal(obs, [expected, expected])


def test_horizon_truncation_and_reset():
    env, params = jaxmcg.make("ipd-v0", max_steps_in_episode=3)
    _, state = env.reset(KEY, params)
    for t in range(3):
        obs, state, _, terminated, truncated, info = play(env, params, state, 1, 0)
        assert not bool(terminated) and bool(truncated) == (t == 2)
    # auto-reset: start indicator again; final_obs still shows the last joint action (DC)
    np.testing.assert_array_equal(obs[:, 4], [1.0, 1.0])
    np.testing.assert_array_equal(info["final_obs"][:, 2], [1.0, 1.0])
    assert int(state.time) == 0


def test_rpc_dummy_observation_is_constant():
    env, params = jaxmcg.make("rpc-v0")
    obs, state = env.reset(KEY, params)
    for _ in range(3):
        np.testing.assert_array_equal(obs, [[1, 0], [1, 0]])
        obs, state, *_ = play(env, params, state, 0, 1)


def test_general_payoff_three_actions():
    payoff = np.arange(18, dtype=np.float32).reshape(3, 3, 2)
    env, params = jaxmcg.make("matrix_game-v0", payoff=payoff)
    assert env.action_space(params).n == 3
    assert env.observation_space(params).shape == (10,)
    _, state = env.reset(KEY, params)
    for a_row, a_col in itertools.product(range(3), repeat=2):
        obs, state, reward, _, _, info = play(env, params, state, a_row, a_col)
        np.testing.assert_array_equal(reward, payoff[a_row, a_col])
        assert int(info["joint_action"]) == 3 * a_row + a_col
        if int(state.time) > 0:  # not just auto-reset
            np.testing.assert_array_equal(obs[0], np.eye(10)[3 * a_row + a_col])


def test_payoff_is_a_vmappable_parameter():
    env, params = jaxmcg.make("matrix_game-v0")
    tables = jnp.stack([jnp.asarray(t) for t in (IPD_PAYOFF, STAG_HUNT_PAYOFF, CHICKEN_PAYOFF,
                                                 CONFLICT_PAYOFF)])
    batch = params.replace(payoff=tables)
    _, state = env.reset(KEY, params)

    def reward_dd(p):
        return env.step(KEY, state, jnp.array([1, 1]), p)[2]

    axes = jax.tree_util.tree_map(lambda _: None, params).replace(payoff=0)
    rewards = jax.vmap(reward_dd, in_axes=(axes,))(batch)
    np.testing.assert_array_equal(rewards, [[-2, -2], [1, 1], [-10, -10], [0, 0]])


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"payoff": np.zeros((2, 2))}, "(2, 2)"),
        ({"payoff": np.zeros((2, 3, 2))}, "(2, 3, 2)"),
        ({"payoff": np.zeros((1, 1, 2))}, "A >= 2"),
        ({"payoff": "no_such_game"}, "no_such_game"),
        ({"max_steps_in_episode": 0}, "max_steps_in_episode=0"),
        ({"observation": "pixels"}, "pixels"),
    ],
)
def test_bad_params(overrides, needle):
    with pytest.raises(ValueError) as err:
        jaxmcg.make("matrix_game-v0", **overrides)
    assert needle in str(err.value)


def test_payoff_shape_checked_against_env():
    env, params = jaxmcg.make("ipd-v0")
    with pytest.raises(ValueError, match=r"\(3, 3, 2\)"):
        env.validate_params(params.replace(payoff=jnp.zeros((3, 3, 2))))
