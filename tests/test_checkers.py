"""Checkers (cm3-hsd.md §4.2, validation §8.2): hand-built states with known outcomes."""
import jax
import jax.numpy as jnp
import numpy as np
from env_checks import assert_rejected_before_compiling

import jaxmcg
from envs.checkers import STARTS, Checkers, initial_world

# A 32-step joint plan (A, B actions) found by a breadth-first search over joint states that never
# collects the wrong colour and never fails a move; replayed below through the environment.
PLAN = [(2, 3), (3, 0), (4, 1), (2, 3), (3, 4), (3, 1), (1, 0), (1, 0), (2, 3), (3, 3), (4, 2),
        (1, 3), (3, 4), (3, 2), (2, 0), (2, 0), (1, 3), (3, 3), (4, 1), (2, 3), (3, 4), (3, 1),
        (1, 0), (1, 0), (2, 3), (3, 3), (4, 2), (1, 3), (3, 4), (3, 2), (2, 0), (2, 0)]


def _state(env, positions, world=None, goal=None):
    """A reset state with agents moved to `positions` (and optionally another world)."""
    _, state = env.reset(jax.random.PRNGKey(0))
    world = jnp.asarray(initial_world() if world is None else world)
    pos = jnp.asarray(positions, jnp.int32)
    world = world.at[pos[:, 0], pos[:, 1], 2].set(-1.0)
    state = state.replace(world=world, position=pos)
    return state if goal is None else state.replace(goal=jnp.asarray(goal, jnp.int32))


def test_item_layout_is_the_checkerboard():
    w = initial_world()
    assert w.shape == (7, 13, 3)
    assert (w[:, :, 0] == -1).sum() == 12 and (w[:, :, 1] == -1).sum() == 12
    assert list(np.nonzero(w[2, :, 0] == -1)[0]) == [2, 4, 6, 8]
    assert list(np.nonzero(w[3, :, 0] == -1)[0]) == [3, 5, 7, 9]
    assert list(np.nonzero(w[4, :, 1] == -1)[0]) == [3, 5, 7, 9]
    assert (w[2:5, 10, :2] == 0).all()  # empty start column
    free = np.argwhere(w[:, :, 2] == 0)
    assert free[:, 0].min() == 2 and free[:, 0].max() == 4
    assert free[:, 1].min() == 2 and free[:, 1].max() == 10 and len(free) == 27


def test_optimal_joint_plan_scores_24():
    env, params = jaxmcg.make("checkers-v0")
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    np.testing.assert_array_equal(state.position, STARTS)
    step = jax.jit(env.step_env)
    total = np.zeros(2)
    for t, a in enumerate(PLAN):
        assert not bool(state.time >= params.max_steps_in_episode)
        obs, state, r, term, info = step(jax.random.PRNGKey(t), state, jnp.asarray(a), params)
        total += np.asarray(r)
        assert bool(term) == (t == len(PLAN) - 1)
        assert not np.asarray(info["failed_move"]).any()
    assert total.sum() == 24.0 and list(total) == [12.0, 12.0]
    np.testing.assert_array_equal(state.collected, [[12, 0], [0, 12]])
    assert len(PLAN) <= 75
    assert (np.asarray(state.world)[:, :, :2] != -1).all()


def test_blocked_move_and_wrong_colour():
    env, params = jaxmcg.make("checkers-v0")
    state = _state(env, STARTS)
    # A up into the wall (row 1), B right into the wall (column 11): -0.1 each, nobody moves
    _, s1, r, term, info = env.step_env(jax.random.PRNGKey(0), state, jnp.array([1, 4]), params)
    np.testing.assert_allclose(r, [-0.1, -0.1], rtol=1e-6)
    np.testing.assert_array_equal(s1.position, STARTS)
    assert np.asarray(info["failed_move"]).all() and not bool(term)
    # staying is free
    _, _, r, _, _ = env.step_env(jax.random.PRNGKey(0), state, jnp.array([0, 0]), params)
    np.testing.assert_array_equal(r, [0.0, 0.0])
    # A left onto (2, 9): yellow -> -0.5 for A; B left onto (4, 9): yellow -> +1 for B
    _, s2, r, _, _ = env.step_env(jax.random.PRNGKey(0), state, jnp.array([3, 3]), params)
    np.testing.assert_allclose(r, [-0.5, 1.0])
    np.testing.assert_array_equal(s2.collected, [[0, 1], [0, 1]])
    assert s2.world[2, 9, 1] == 1.0 and s2.world[4, 9, 1] == 1.0  # marked collected
    assert s2.world[2, 10, 2] == 0.0 and s2.world[2, 9, 2] == -1.0  # occupancy moved


def test_sequential_resolution_a_first():
    env, params = jaxmcg.make("checkers-v0")
    state = _state(env, [[3, 10], [4, 10]])
    # A moves down into B's cell while B leaves it: A fails (B has not moved yet), B succeeds
    _, s1, r, _, _ = env.step_env(jax.random.PRNGKey(0), state, jnp.array([2, 3]), params)
    np.testing.assert_array_equal(s1.position, [[3, 10], [4, 9]])
    np.testing.assert_allclose(r, [-0.1, 1.0], rtol=1e-6)
    # B moves up into A's cell while A leaves it: B moves after A, so both succeed
    _, s2, r, _, _ = env.step_env(jax.random.PRNGKey(0), state, jnp.array([1, 1]), params)
    np.testing.assert_array_equal(s2.position, [[2, 10], [3, 10]])
    np.testing.assert_array_equal(r, [0.0, 0.0])


def test_stage1_terminates_on_own_colour():
    env, params = jaxmcg.make("checkers_stage1-v0")
    roles = [int(env.reset(jax.random.PRNGKey(k), params)[1].goal[0]) for k in range(20)]
    assert set(roles) == {0, 1}
    for k in range(20):
        _, s = env.reset(jax.random.PRNGKey(k), params)
        np.testing.assert_array_equal(s.position[0], STARTS[int(s.goal[0])])
    world = initial_world()
    world[:, :, 0] = np.where(world[:, :, 0] == -1, 1.0, world[:, :, 0])  # every red collected
    world[2, 9, 0], world[2, 9, 1] = -1.0, 0.0  # but one, left of A's start
    state = _state(env, [[2, 10]], world, goal=[0])
    _, s1, r, term, _ = env.step_env(jax.random.PRNGKey(0), state, jnp.array([3]), params)
    assert bool(term) and float(r[0]) == 1.0
    assert (np.asarray(s1.world)[:, :, 1] == -1).sum() == 11  # yellow remains: own colour suffices
    # the same world for role B is not finished
    state_b = _state(env, [[2, 10]], world, goal=[1])
    _, _, r, term, _ = env.step_env(jax.random.PRNGKey(0), state_b, jnp.array([3]), params)
    assert not bool(term) and float(r[0]) == -0.5


def test_observation_and_state_layout():
    env, params = jaxmcg.make("checkers-v0")
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    lay = env.obs_layout
    assert obs.shape == (2, env.obs_dim) and env.obs_dim == 88
    win = np.asarray(obs[0, slice(*lay["self_T"])]).reshape(5, 5, 3)
    w = initial_world()
    expect = w[0:5, 8:13].copy()  # centred on A at (2, 10)
    expect[4, 2, 2] = -1.0  # B at (4, 10) is in A's window
    np.testing.assert_array_equal(win, expect)
    assert win[2, 2, 2] == 0.0
    np.testing.assert_allclose(obs[1, slice(*lay["self_V"])], [0.5 / 7, 3.5 / 13, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(obs[:, slice(*lay["prev_action"])], [[1, 0, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(obs[:, slice(*lay["goal"])], [[1, 0], [0, 1]])
    np.testing.assert_allclose(obs[0, slice(*lay["others"])], [0.5 / 7, 3.5 / 13], rtol=1e-6)
    _, s1, _, _, info = env.step_env(jax.random.PRNGKey(0), state, jnp.array([2, 3]), params)
    np.testing.assert_array_equal(info["state"], [[2, 10, 0, 0], [4, 10, 0, 0]])
    np.testing.assert_array_equal(info["next_state"], [[3, 10, 0, 0], [4, 9, 0, 1]])
    assert info["state_env"].shape == (54,)
    assert float(info["state_env"].sum()) == -24.0 and float(info["next_state_env"].sum()) == -22.0
    obs1 = env.get_obs(s1, params)
    np.testing.assert_array_equal(obs1[:, slice(*lay["prev_action"])], [[0, 0, 1, 0, 0],
                                                                        [0, 0, 0, 1, 0]])


def test_bad_parameters_rejected():
    assert_rejected_before_compiling(lambda: jaxmcg.make("checkers-v0", num_agents=3),
                                     ["num_agents=3", "valid: 1"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("checkers-v0", fail_penalty=-1.0),
                                     ["fail_penalty=-1.0"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("checkers-v0", max_steps_in_episode=0),
                                     ["max_steps_in_episode=0"])
    assert_rejected_before_compiling(lambda: Checkers(0), ["num_agents=0"])
