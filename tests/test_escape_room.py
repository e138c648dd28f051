"""Escape Room ER(N, M): hand-built states with known outcomes (thesis §8 item 1, §5.1, A20) and a
numpy oracle (benchmarks/escape_room_numpy.py) on random action sequences."""
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from benchmarks.escape_room_numpy import EscapeRoomNumpy
from envs.escape_room import DOOR, LEVER, START, EnvState

KEY = jax.random.PRNGKey(0)
GAMES = [(2, 1), (3, 2), (5, 3), (5, 2), (10, 5)]


def make(n, m, **kw):
    return jaxmcg.make("escape_room-v0", num_agents=n, min_lever_pullers=m, **kw)


def state_at(positions, time=0):
    return EnvState(position=jnp.asarray(positions, jnp.int32), time=jnp.asarray(time, jnp.int32))


def step(env, params, state, actions):
    return env.step(KEY, state, jnp.asarray(actions, jnp.int32), params)


@pytest.mark.parametrize("n, m", GAMES)
def test_one_step_optimum(n, m):
    env, params = make(n, m)
    _, state = env.reset(KEY, params)
    actions = [LEVER] * m + [DOOR] * (n - m)
    _, _, reward, terminated, truncated, info = step(env, params, state, actions)
    assert float(reward.sum()) == 10 * (n - m) - m
    np.testing.assert_array_equal(reward, [-1.0] * m + [10.0] * (n - m))
    assert bool(terminated) and not bool(truncated)
    assert bool(info["door_open"]) and int(info["lever_pullers"]) == m


@pytest.mark.parametrize("n, m", GAMES)
def test_all_stay_truncates(n, m):
    env, params = make(n, m)
    _, state = env.reset(KEY, params)
    for t in range(5):
        _, state, reward, terminated, truncated, _ = step(env, params, state, [START] * n)
        np.testing.assert_array_equal(reward, np.zeros(n))
        assert not bool(terminated)
        assert bool(truncated) == (t == 4)
    assert int(state.time) == 0  # auto-reset after truncation


@pytest.mark.parametrize("n, m", GAMES)
def test_move_to_closed_door(n, m):
    env, params = make(n, m)
    # m - 1 lever actions: one short of opening the door
    actions = [LEVER] * (m - 1) + [DOOR] + [START] * (n - m)
    out = step(env, params, state_at([START] * n), actions)
    _, state, reward, terminated, truncated, info = out
    assert float(reward[m - 1]) == -1.0
    assert not bool(terminated) and not bool(truncated) and not bool(info["door_open"])
    np.testing.assert_array_equal(state.position, actions)


@pytest.mark.parametrize("n, m", GAMES)
def test_stay_at_door_when_door_opens(n, m):
    env, params = make(n, m)
    # agent n-1 already waits at the door; m agents move to the lever now
    positions = [START] * (n - 1) + [DOOR]
    actions = [LEVER] * m + [START] * (n - 1 - m) + [DOOR]
    _, _, reward, terminated, _, _ = step(env, params, state_at(positions, time=2), actions)
    assert float(reward[-1]) == 10.0
    np.testing.assert_array_equal(reward[:m], -np.ones(m))
    assert bool(terminated)


def test_door_counts_this_steps_lever_actions():
    env, params = make(3, 2)
    # both lever agents are already at the lever; only one chooses it again: door stays shut
    state = state_at([LEVER, LEVER, DOOR])
    _, _, reward, terminated, _, info = step(env, params, state, [LEVER, START, DOOR])
    assert int(info["lever_pullers"]) == 1 and not bool(info["door_open"])
    np.testing.assert_array_equal(reward, [0.0, -1.0, 0.0])
    assert not bool(terminated)
    # both stay at the lever (a stay counts): door opens, the agent waiting at the door exits
    _, _, reward, terminated, _, info = step(env, params, state, [LEVER, LEVER, DOOR])
    assert bool(info["door_open"]) and bool(terminated)
    np.testing.assert_array_equal(reward, [0.0, 0.0, 10.0])


def test_door_open_without_anyone_at_door_continues():
    env, params = make(2, 1)
    _, _, reward, terminated, _, info = step(env, params, state_at([START, START]), [LEVER, START])
    assert bool(info["door_open"]) and not bool(terminated)
    np.testing.assert_array_equal(reward, [-1.0, 0.0])


def test_auto_reset_and_final_obs():
    env, params = make(3, 1)
    pre = state_at([START, START, START], time=1)
    actions = [LEVER, DOOR, START]
    obs, state, _, terminated, _, info = step(env, params, pre, actions)
    assert bool(terminated)
    np.testing.assert_array_equal(state.position, [START] * 3)
    assert int(state.time) == 0
    reset_obs, _ = env.reset(KEY, params)
    np.testing.assert_array_equal(obs, reset_obs)
    np.testing.assert_array_equal(info["final_obs"], env.get_obs(state_at(actions), params))
    assert not np.array_equal(info["final_obs"], obs)


def test_observation_layout():
    env, params = make(3, 1)
    obs = np.asarray(env.get_obs(state_at([LEVER, START, DOOR]), params))
    onehot = np.eye(3, dtype=np.float32)
    lever, start, door = onehot[LEVER], onehot[START], onehot[DOOR]
    np.testing.assert_array_equal(obs[0], np.concatenate([lever, start, door]))
    np.testing.assert_array_equal(obs[1], np.concatenate([start, lever, door]))
    np.testing.assert_array_equal(obs[2], np.concatenate([door, lever, start]))
    assert obs.shape == (3, 9) and env.observation_space(params).shape == (9,)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"num_agents": 2, "min_lever_pullers": 2}, "ER(2, 2)"),
        ({"num_agents": 3, "min_lever_pullers": 0}, "ER(3, 0)"),
        ({"num_agents": 1}, "num_agents=1"),
        ({"max_steps_in_episode": 0}, "max_steps_in_episode=0"),
        ({"no_such_param": 1}, "no_such_param"),
    ],
)
def test_bad_params_fail_before_compilation(overrides, needle):
    compiled = []
    listener = lambda name, *_, **__: compiled.append(name)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(ValueError) as err:
            jaxmcg.make("escape_room-v0", **overrides)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert needle in str(err.value)
    assert not [e for e in compiled if "backend_compile" in e], compiled


# ---- numpy oracle -------------------------------------------------------------------------------

ORACLE_GAMES = [(2, 1), (3, 1), (3, 2), (5, 2), (5, 3)]


def _jax_episodes(env, params, actions):
    """Run each row of `actions` [E, T, N] from reset, with auto-reset, under jit + vmap."""

    def one(acts):
        obs, state = env.reset(KEY, params)

        def body(state, a):
            obs, state, reward, term, trunc, info = env.step(KEY, state, a, params)
            return state, (info["final_obs"], reward, term, trunc)

        return obs, jax.lax.scan(body, state, acts)[1]

    return jax.jit(jax.vmap(one))(jnp.asarray(actions, jnp.int32))


@pytest.mark.parametrize("n, m", ORACLE_GAMES)
def test_matches_numpy_oracle(n, m):
    env, params = make(n, m)
    rng = np.random.default_rng(1000 * n + m)
    n_episodes, horizon = 200, int(params.max_steps_in_episode)
    # per-episode action preferences so that rare events (door opening late, agents waiting at
    # the door, lever stays) are all common across the batch
    probs = rng.dirichlet(np.ones(3) * 0.7, size=(n_episodes, n))
    actions = np.empty((n_episodes, horizon, n), np.int64)
    for e in range(n_episodes):
        for i in range(n):
            actions[e, :, i] = rng.choice(3, size=horizon, p=probs[e, i])
    obs0, (final_obs, rewards, term, trunc) = jax.tree_util.tree_map(
        np.asarray, _jax_episodes(env, params, actions)
    )

    oracle = EscapeRoomNumpy(n, m, horizon)
    n_terminated = 0
    for e in range(n_episodes):
        np.testing.assert_array_equal(obs0[e], np.stack(oracle.reset()))
        for t in range(horizon):
            obs, reward, done = oracle.step(actions[e, t].tolist())
            np.testing.assert_array_equal(rewards[e, t], reward, err_msg=f"episode {e} step {t}")
            np.testing.assert_array_equal(final_obs[e, t], np.stack(obs))
            assert bool(term[e, t]) == oracle.terminated, (e, t)
            assert bool(trunc[e, t]) == (done and not oracle.terminated), (e, t)
            if done:
                n_terminated += oracle.terminated
                break
        else:
            raise AssertionError(f"episode {e} did not end within {horizon} steps")
    assert 0 < n_terminated < n_episodes  # both endings were exercised
