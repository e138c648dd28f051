"""Hu-Wellman grid games I and II (envs/hw_grid.py, mge.md §2.4-§2.5): walls, collisions, barrier
probabilities, goal arrival under both termination rules, the absorbing game-over state, rewards
from hand-built states and input validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from envs import hw_grid
from envs.hw_grid import OVER
from envs.pursuit import DOWN, LEFT, RIGHT, STAY, UP
from jaxmcg import tabular


def outcomes(game, cells, actions):
    """({next state: probability}, expected rewards) from cells (A, B) under actions."""
    s = cells if cells == OVER else cells[0] * 9 + cells[1]
    j = int(tabular.joint_action_index(jnp.asarray(actions), 5))
    dist = {}
    for ns, p in zip(np.asarray(game.next_state[s, j]), np.asarray(game.next_prob[s, j]),
                     strict=True):
        if p > 0:
            key = "over" if ns == OVER else tuple(int(x) for x in divmod(int(ns), 9))
            dist[key] = dist.get(key, 0.0) + float(p)
    return dist, np.asarray(game.reward[:, s, j])


@pytest.mark.parametrize("env_id", ["hw_grid1", "hw_grid2"])
def test_defaults(env_id):
    env, params = jaxmcg.make(env_id)
    game = params.game
    assert game.num_states == 82 and game.next_state.shape == (82, 25, 4)
    assert int(params.max_steps_in_episode) == 20
    assert int(np.argmax(game.init_dist)) == 6 * 9 + 8 and float(game.init_dist.max()) == 1.0
    np.testing.assert_allclose(np.asarray(game.next_prob).sum(-1), 1.0, rtol=1e-6)
    assert np.flatnonzero(np.asarray(game.absorbing)).tolist() == [OVER]
    np.testing.assert_allclose(game.final_reward, 0.0)


@pytest.mark.parametrize("cells, actions, after, reward", [
    ((6, 8), (UP, UP), (3, 5), (0, 0)),
    ((6, 8), (LEFT, RIGHT), (6, 8), (0, 0)),  # walls block
    ((6, 8), (DOWN, DOWN), (6, 8), (0, 0)),
    ((6, 8), (RIGHT, LEFT), (6, 8), (-1, -1)),  # both into 7: bounced back
    ((7, 8), (STAY, LEFT), (7, 8), (-1, -1)),  # onto the other, who stays
    ((3, 4), (RIGHT, LEFT), (4, 3), (0, 0)),  # swapping is allowed
    ((4, 5), (RIGHT, UP), (5, 2), (0, 0)),  # following into a vacated cell
])
def test_gg1_moves_and_collisions(cells, actions, after, reward):
    dist, r = outcomes(hw_grid.hw_grid_game(1), cells, actions)
    assert dist == {after: 1.0}
    np.testing.assert_allclose(r, reward)


def test_gg1_goal_individual_rule():
    game = hw_grid.hw_grid_game(1, termination="individual")
    dist, r = outcomes(game, (5, 3), (UP, STAY))
    assert dist == {(2, 3): 1.0}
    np.testing.assert_allclose(r, [30, 0])
    for a in range(5):  # A is frozen on its goal and paid once
        dist, r = outcomes(game, (2, 3), (a, RIGHT))
        assert dist == {(2, 4): 1.0}
        np.testing.assert_allclose(r, [0, 0])
    dist, r = outcomes(game, (2, 3), (DOWN, UP))
    assert dist == {"over": 1.0}  # both arrived
    np.testing.assert_allclose(r, [0, 30])
    dist, r = outcomes(game, (5, 3), (UP, UP))
    assert dist == {"over": 1.0}
    np.testing.assert_allclose(r, [30, 30])
    dist, _ = outcomes(game, (1, 2), (RIGHT, STAY))  # goal cells are no collision cells
    assert dist == {(2, 2): 1.0}


def test_gg1_goal_first_rule():
    game = hw_grid.hw_grid_game(1, termination="first")
    dist, r = outcomes(game, (5, 3), (UP, STAY))
    assert dist == {"over": 1.0}
    np.testing.assert_allclose(r, [30, 0])
    dist, r = outcomes(game, (5, 3), (UP, UP))
    assert dist == {"over": 1.0}
    np.testing.assert_allclose(r, [30, 30])


def test_gg2_barriers():
    game = hw_grid.hw_grid_game(2)
    dist, r = outcomes(game, (6, 8), (UP, UP))
    assert dist == pytest.approx({(3, 5): 0.25, (3, 8): 0.25, (6, 5): 0.25, (6, 8): 0.25})
    np.testing.assert_allclose(r, [0, 0])
    dist, _ = outcomes(game, (6, 8), (UP, LEFT))
    assert dist == pytest.approx({(3, 7): 0.5, (6, 7): 0.5})
    dist, _ = outcomes(game, (3, 8), (DOWN, STAY))  # the barrier hinders upward moves only
    assert dist == {(6, 8): 1.0}
    dist, _ = outcomes(game, (7, 4), (UP, UP))  # the centre column has no barrier
    assert dist == {(4, 1): 1.0}
    # A crosses the barrier into 3 while B moves into 3: collides only when A gets through
    dist, r = outcomes(game, (6, 4), (UP, LEFT))
    assert dist == pytest.approx({(6, 4): 0.5, (6, 3): 0.5})
    np.testing.assert_allclose(r, [-0.5, -0.5])
    dist, _ = outcomes(hw_grid.hw_grid_game(2, barrier_success=0.2), (6, 8), (UP, STAY))
    assert dist == pytest.approx({(3, 8): 0.2, (6, 8): 0.8})


def test_gg2_common_goal():
    for rule in hw_grid.TERMINATIONS:
        game = hw_grid.hw_grid_game(2, termination=rule)
        dist, r = outcomes(game, (0, 2), (RIGHT, LEFT))  # both onto G at once: no collision
        assert dist == {"over": 1.0}
        np.testing.assert_allclose(r, [2, 2])
    dist, r = outcomes(hw_grid.hw_grid_game(2, termination="individual"), (1, 2), (LEFT, LEFT))
    assert dist == {"over": 1.0}  # B joins A, frozen on G
    np.testing.assert_allclose(r, [0, 2])
    dist, r = outcomes(hw_grid.hw_grid_game(2, termination="first"), (4, 2), (UP, STAY))
    assert dist == {"over": 1.0}
    np.testing.assert_allclose(r, [2, 0])


@pytest.mark.parametrize("absorbing_actions, valid", [("all", 5), ("single", 1)])
def test_absorbing_state(absorbing_actions, valid):
    game = hw_grid.hw_grid_game(1, absorbing_actions=absorbing_actions)
    for j in range(25):
        dist, r = outcomes(game, OVER, tuple(divmod(j, 5)))
        assert dist == {"over": 1.0}
        np.testing.assert_allclose(r, [0, 0])
    mask = np.asarray(game.action_mask)
    assert mask[:, OVER].sum(-1).tolist() == [valid, valid]
    assert mask[0, 2 * 9 + 4].sum() == valid and mask[1, 2 * 9 + 4].all()  # A frozen on goal 2
    assert mask[:, 6 * 9 + 8].all()  # live agents: every action, walls bump


def test_env_terminates_on_game_over():
    env, params = jaxmcg.make("hw_grid1")
    state = tabular.TabularState(time=jnp.asarray(3, jnp.int32),
                                 joint_state=jnp.asarray(5 * 9 + 3, jnp.int32))
    _, nxt, reward, terminated, truncated, info = env.step(
        jax.random.PRNGKey(0), state, jnp.array([UP, UP]), params)
    assert bool(terminated) and not bool(truncated)
    np.testing.assert_allclose(reward, [30, 30])
    assert int(info["joint_state"]) == OVER
    a, b, over = hw_grid.decode(jnp.array([5 * 9 + 3, OVER]))
    np.testing.assert_array_equal(a, [5, -1])
    np.testing.assert_array_equal(b, [3, -1])
    np.testing.assert_array_equal(over, [False, True])


@pytest.mark.parametrize("kwargs, match", [
    ({"game": 3}, "game=3"),
    ({"termination": "last"}, "termination='last'.*individual"),
    ({"absorbing_actions": "none"}, "absorbing_actions='none'.*single"),
    ({"barrier_success": 1.5}, "barrier_success"),
    ({"goal_reward": float("inf")}, "goal_reward"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hw_grid.HWGrid(**kwargs)
