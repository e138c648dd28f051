"""Driving junction (envs/driving_junction.py, mge.md §2.6): layout, masks and interaction weights,
transitions and rewards from hand-built states, the env against the solver's rollout, the §2.6
qualitative checks under greedy execution of the MGE-FB solution, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from envs import driving_junction as dj
from envs.driving_junction import DOWN, LEFT, RIGHT, STAY, UP, EnvState
from jaxmcg import mge_fb

KEY = jax.random.PRNGKey(0)
W = 11


def cell(r, c):
    return r * W + c


STARTS = [cell(6, 2), cell(7, 5), cell(5, 7), cell(4, 1)]  # cars 1-3, pedestrian
GOALS = [cell(0, 4), cell(0, 5), cell(1, 5), cell(4, 8)]
ZEBRA = [cell(4, 4), cell(4, 5)]


@pytest.fixture(scope="module")
def junction():
    env, params = jaxmcg.make("driving_junction")
    return env, params


@pytest.fixture(scope="module")
def solution(junction):
    env, params = junction
    return mge_fb.mge_fb(env.occupancy_game(params), params.max_steps_in_episode, **dj.SOLVER)


def state_at(cells, t=0):
    return EnvState(cells=jnp.asarray(cells, jnp.int32), time=jnp.asarray(t, jnp.int32))


def step(env, params, cells, actions, t=0):
    obs, state, reward, terminated, info = env.step_env(
        KEY, state_at(cells, t), jnp.asarray(actions, jnp.int32), params)
    return np.asarray(state.cells), np.asarray(reward), bool(terminated), obs


def test_default_layout(junction):
    env, params = junction
    game = env.occupancy_game(params)
    assert env.num_agents == 4 and env.grid.shape == (11, 11)
    np.testing.assert_array_equal(game.x0, STARTS)
    np.testing.assert_array_equal(params.goals, GOALS)
    assert int(params.max_steps_in_episode) == 25 and dj.SOLVER["num_iters"] == 200
    car, ped = 20.0, 0.0  # what a car loses near the pedestrian, and the reverse
    np.testing.assert_array_equal(game.mu, [[0, 10, 10, car], [10, 0, 10, car], [10, 10, 0, car],
                                            [ped, ped, ped, 0]])
    zone = np.asarray(game.zone)
    assert zone[ZEBRA[0]] == zone[ZEBRA[1]] and len(set(zone.tolist())) == 121 - 1
    # R_F = -(shortest distance over the agent's own cells)
    np.testing.assert_array_equal(np.asarray(game.final_reward)[np.arange(4), STARTS],
                                  [-8, -7, -6, -7])
    assert float(game.final_reward[3, cell(4, 0)]) == -8
    # the cars are 4, 3 and 3 moves from the zebra, on which the pedestrian walks at t = 3, 4: every
    # car could be on the zebra with the pedestrian, so the greedy checks below can fail
    assert [abs(6 - 4) + abs(2 - 4), abs(7 - 4), abs(5 - 4) + abs(7 - 5)] == [4, 3, 3]


def test_masks(junction):
    env, params = junction
    mask = np.asarray(env.occupancy_game(params).mask)
    # car 1 at (6, 2): up and left/right on the road; below is sidewalk
    np.testing.assert_array_equal(mask[0, cell(6, 2)], [True, True, False, True, True])
    # pedestrian at (4, 1): along the sidewalk only (above is off-limits, below is road)
    np.testing.assert_array_equal(mask[3, cell(4, 1)], [True, False, False, True, True])
    # both may use the zebra; a car on it may go on along the road, not onto the sidewalk
    np.testing.assert_array_equal(mask[0, cell(4, 4)], [True, True, True, False, True])
    np.testing.assert_array_equal(mask[3, cell(4, 4)], [True, False, False, True, True])
    # goals are absorbing: stay only; the map edge is masked
    for i, g in enumerate(GOALS):
        np.testing.assert_array_equal(mask[i, g], [True, False, False, False, False])
    np.testing.assert_array_equal(mask[1, cell(0, 4)], [True, False, True, False, True])


@pytest.mark.parametrize("before, actions, after", [
    (STARTS, [RIGHT, UP, LEFT, RIGHT], [cell(6, 3), cell(6, 5), cell(5, 6), cell(4, 2)]),
    (STARTS, [DOWN, RIGHT, UP, DOWN], STARTS),  # all masked: everyone stays
    (STARTS, [UP, STAY, DOWN, LEFT], [cell(5, 2), cell(7, 5), cell(6, 7), cell(4, 0)]),
    ([cell(4, 4), cell(5, 5), cell(5, 6), cell(4, 3)], [UP, UP, LEFT, RIGHT],
     [cell(3, 4), cell(4, 5), cell(5, 5), cell(4, 4)]),
])
def test_transitions(junction, before, actions, after):
    env, params = junction
    cells, _, _, _ = step(env, params, before, actions)
    np.testing.assert_array_equal(cells, after)


def test_goal_is_absorbing(junction):
    env, params = junction
    cells, reward, terminated, _ = step(env, params, [GOALS[0], *STARTS[1:]],
                                        [DOWN, STAY, STAY, STAY])
    assert cells[0] == GOALS[0] and reward[0] == 0.0 and not terminated
    cells, reward, terminated, _ = step(env, params, GOALS, [DOWN, LEFT, RIGHT, UP])
    np.testing.assert_array_equal(cells, GOALS)
    np.testing.assert_array_equal(reward, 0.0)
    assert terminated


def test_rewards_and_interaction(junction):
    env, params = junction
    _, reward, _, _ = step(env, params, STARTS, [RIGHT, UP, LEFT, RIGHT])
    np.testing.assert_array_equal(reward, [-1, -1, -1, -1])
    # car 1 and the pedestrian on different cells of the zebra (one zone, charged before the move):
    # the car loses mu_car_ped = 20, the pedestrian nothing; cars 2 and 3 share a cell: 10 each
    before = [cell(4, 4), cell(5, 5), cell(5, 5), cell(4, 5)]
    _, reward, _, _ = step(env, params, before, [STAY, UP, LEFT, RIGHT])
    np.testing.assert_array_equal(reward, [-21, -11, -11, -1])
    # without the zebra zone only shared cells count
    env2, params2 = jaxmcg.make("driving_junction", zebra_zone=False, mu_ped_car=5.0)
    _, reward, _, _ = step(env2, params2, before, [STAY, UP, LEFT, RIGHT])
    np.testing.assert_array_equal(reward, [-1, -11, -11, -1])
    _, reward, _, _ = step(env2, params2, [cell(4, 4), cell(5, 5), cell(5, 6), cell(4, 4)],
                           [STAY] * 4)
    np.testing.assert_array_equal(reward, [-21, -1, -1, -6])


def test_final_reward_at_last_step(junction):
    env, params = junction
    before = [cell(5, 3), cell(2, 5), cell(5, 7), cell(4, 6)]
    cells, reward, _, _ = step(env, params, before, [RIGHT, UP, STAY, RIGHT], t=24)
    np.testing.assert_array_equal(cells, [cell(5, 4), cell(1, 5), cell(5, 7), cell(4, 7)])
    np.testing.assert_array_equal(reward, [-1 - 5, -1 - 1, -1 - 6, -1 - 1])
    _, reward, _, _ = step(env, params, before, [RIGHT, UP, STAY, RIGHT], t=23)
    np.testing.assert_array_equal(reward, -1)


def test_observation(junction):
    env, params = junction
    _, _, _, obs = step(env, params, STARTS, [STAY] * 4, t=4)
    rc = np.array([[6, 2], [7, 5], [5, 7], [4, 1]]) / 10.0
    expected = [np.concatenate([rc[[i] + [j for j in range(4) if j != i]].ravel(), [5 / 25]])
                for i in range(4)]
    np.testing.assert_allclose(obs, expected, atol=1e-6)
    assert env.observation_space(params).shape == (9,)


def test_env_replays_solver_rollout(junction, solution):
    """The env's dynamics and rewards are those the solver's rollout assumes."""
    env, params = junction
    game = env.occupancy_game(params)
    cells, actions, rewards = mge_fb.rollout(KEY, game, solution.pi, greedy=False)
    obs, state = env.reset(KEY, params)
    for t in range(params.max_steps_in_episode):
        _, state, reward, terminated, info = env.step_env(KEY, state, actions[t], params)
        np.testing.assert_array_equal(state.cells, cells[t + 1])
        np.testing.assert_allclose(reward, rewards[t], atol=1e-5)


# ---- mge.md §2.6 qualitative acceptance ------------------------------------------------------


def test_solution_converges(junction, solution):
    assert float(solution.residual[-1]) < 1e-3 and bool(solution.converged)
    assert not mge_fb.theorem3_condition(junction[0].occupancy_game(junction[1]), 25).holds


def test_greedy_behaviour(junction, solution):
    """Under greedy execution (random tie-breaking, 16 episodes): no two agents share a cell, the
    pedestrian walks a shortest path without waiting, no car is on the zebra while the pedestrian
    is, every car reaches its goal and none arrives before its shortest time."""
    env, params = junction
    game = env.occupancy_game(params)
    keys = jax.random.split(KEY, 16)
    cells, _, _ = jax.vmap(mge_fb.rollout, (0, None, None, None))(keys, game, solution.pi, True)
    cells = np.asarray(cells)  # [episodes, T + 1, M]
    shortest = -np.asarray(game.final_reward)[np.arange(4), STARTS]
    for ep in cells:
        assert all(len(set(row)) == 4 for row in ep), ep
        ped = ep[:, 3]
        assert (np.diff(ped) != 0).sum() == shortest[3] and ped[int(shortest[3])] == GOALS[3]
        ped_on = np.isin(ped, ZEBRA)
        assert ped_on.any() and not (np.isin(ep[:, :3], ZEBRA).any(1) & ped_on).any()
        arrival = [int(np.argmax(ep[:, i] == GOALS[i])) for i in range(3)]
        assert all(ep[-1, i] == GOALS[i] and arrival[i] >= shortest[i] for i in range(3))
        np.testing.assert_array_equal(np.flatnonzero(ped_on), [3, 4])


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, match", [
    (["1.a", "..x"], "unknown characters"),
    (["1.a", ".."], "equal length"),
    (["1..", "..."], "exactly one start '1' and one goal 'a'"),
    (["1.1", "a.."], "exactly one start"),
    (["1#a", ".#."], "cannot reach its goal"),
    (["...", "..."], "no agents"),
])
def test_bad_layouts(layout, match):
    with pytest.raises(ValueError, match=match):
        jaxmcg.make("driving_junction", layout=layout)


def test_bad_parameters(junction):
    with pytest.raises(ValueError, match="mu_car_ped=-1"):
        jaxmcg.make("driving_junction", mu_car_ped=-1.0)
    with pytest.raises(ValueError, match="goals"):
        jaxmcg.make("driving_junction", goals=jnp.array([0, 1, 2, 500]))
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        jaxmcg.make("driving_junction", max_steps_in_episode=0)


def test_custom_layout_is_solvable():
    """A one-car corridor: the car drives straight to its goal."""
    env, params = jaxmcg.make("driving_junction", layout=["1...a"], max_steps_in_episode=6)
    sol = mge_fb.mge_fb(env.occupancy_game(params), 6, num_iters=5)
    cells, _, _ = mge_fb.rollout(KEY, env.occupancy_game(params), sol.pi, greedy=True)
    np.testing.assert_array_equal(np.asarray(cells)[:, 0], [0, 1, 2, 3, 4, 4, 4])
