"""Pursuit games of the MGE paper (envs/pursuit.py, mge.md §2.1-§2.2): arrow masks, transitions and
rewards from hand-built joint states, named starts, the hunt counter and input validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from envs import pursuit
from envs.pursuit import DOWN, LEFT, RIGHT, STAY, UP
from jaxmcg import tabular

KEY = jax.random.PRNGKey(0)


def outcome(game, nodes, actions):
    """(next nodes, rewards) of a deterministic pursuit game from `nodes` under `actions`."""
    s = pursuit.state_index(nodes)
    j = int(tabular.joint_action_index(jnp.asarray(actions), game.num_actions))
    assert float(game.next_prob[s, j, 0]) == 1.0
    nxt = pursuit.positions(game.next_state[s, j, 0], game.num_agents)
    return tuple(int(n) for n in nxt), np.asarray(game.reward[:, s, j])


def valid(game, agent, nodes):
    return set(np.flatnonzero(np.asarray(game.action_mask[agent, pursuit.state_index(nodes)])))


def test_pursuit2_defaults():
    env, params = jaxmcg.make("pursuit-2")
    game = params.game
    assert env.num_agents == 2 and int(params.max_steps_in_episode) == 22
    assert game.num_states == 81 and game.num_actions == 5
    init = np.asarray(game.init_dist)
    h, p = np.divmod(np.arange(81), 9)
    np.testing.assert_allclose(init[h != p], 1 / 72, rtol=1e-6)  # mge.md §6 #20
    assert (init[h == p] == 0).all()
    np.testing.assert_allclose(np.asarray(game.next_prob).sum(-1), 1.0)


@pytest.mark.parametrize("agent, nodes, expected", [
    (0, (0, 4), {STAY, DOWN, RIGHT}),  # hunter H2 at node 0 (Fig. 4: 0 has -> and down)
    (0, (2, 4), {STAY, DOWN, LEFT}),
    (0, (4, 0), {STAY, UP, DOWN, LEFT, RIGHT}),
    (1, (4, 4), {STAY, UP, LEFT}),  # prey default {left, up}
    (1, (4, 0), {STAY}),  # prey in the top-left corner: no arrow
    (1, (4, 2), {STAY, LEFT}),
    (1, (4, 6), {STAY, UP}),
])
def test_pursuit2_masks(agent, nodes, expected):
    game = pursuit.pursuit2_game()
    assert valid(game, agent, (nodes[0], nodes[1])) == expected


@pytest.mark.parametrize("nodes, actions, after", [
    ((0, 8), (RIGHT, UP), (1, 5)),
    ((0, 8), (DOWN, LEFT), (3, 7)),
    ((0, 8), (UP, STAY), (0, 8)),  # off the grid: masked, stays
    ((4, 4), (STAY, DOWN), (4, 4)),  # prey has no down arrow: stays
    ((4, 4), (STAY, RIGHT), (4, 4)),
    ((3, 4), (RIGHT, LEFT), (4, 3)),  # crossing is allowed
    ((5, 4), (LEFT, STAY), (4, 4)),
])
def test_pursuit2_transitions(nodes, actions, after):
    nxt, _ = outcome(pursuit.pursuit2_game(), nodes, actions)
    assert nxt == after


def test_pursuit2_rewards_on_current_state():
    game = pursuit.pursuit2_game()
    for actions in [(STAY, STAY), (RIGHT, LEFT), (DOWN, UP)]:
        _, r = outcome(game, (4, 4), actions)
        np.testing.assert_allclose(r, [0.4, -0.4])  # co-located now, whatever the moves
        _, r = outcome(game, (3, 4), actions)
        np.testing.assert_allclose(r, [0.0, 0.0])  # moving onto the prey is paid next step
    np.testing.assert_allclose(game.final_reward, game.reward[:, :, 0])  # R_F = R (§6 #2)
    scaled = pursuit.pursuit2_game(capture_reward=1.5)
    np.testing.assert_allclose(outcome(scaled, (7, 7), (STAY, STAY))[1], [1.5, -1.5])


def test_pursuit2_custom_arrows():
    game = pursuit.pursuit2_game(hunter_arrows=("right", "down"), prey_arrows="H2")
    assert valid(game, 0, (4, 0)) == {STAY, DOWN, RIGHT}
    assert valid(game, 0, (8, 0)) == {STAY}
    assert valid(game, 1, (0, 4)) == {STAY, UP, DOWN, LEFT, RIGHT}
    assert outcome(game, (4, 0), (LEFT, STAY))[0] == (4, 0)  # no left arrow: stays
    per_node = np.zeros((9, 5), bool)
    per_node[4, UP] = per_node[0, UP] = True  # node 0's up arrow leaves the grid: dropped
    game = pursuit.pursuit2_game(hunter_arrows=per_node)
    assert valid(game, 0, (4, 0)) == {STAY, UP} and valid(game, 0, (0, 4)) == {STAY}
    assert outcome(game, (4, 0), (UP, STAY))[0] == (1, 0)


def test_pursuit3_rewards_and_size():
    game = pursuit.pursuit3_game()
    assert game.num_states == 729 and game.num_joint_actions == 125
    np.testing.assert_allclose(np.asarray(game.next_prob).sum(-1), 1.0)
    cases = {  # (h1, h2, p): (R_h1, R_h2, R_p), L280 and L295
        (4, 4, 0): (-15 / 4, -15 / 4, 0.0),
        (4, 4, 4): (-10 / 4, -10 / 4, -1 / 8),
        (4, 0, 4): (5 / 4, 0.0, -1 / 8),
        (0, 4, 4): (0.0, 5 / 4, -1 / 8),
        (0, 1, 2): (0.0, 0.0, 0.0),
    }
    for nodes, expected in cases.items():
        _, r = outcome(game, nodes, (STAY, STAY, STAY))
        np.testing.assert_allclose(r, expected, rtol=1e-6)
        np.testing.assert_allclose(game.final_reward[:, pursuit.state_index(nodes)], expected,
                                   rtol=1e-6)
    assert outcome(game, (0, 8, 2), (RIGHT, UP, DOWN))[0] == (1, 5, 5)
    assert outcome(game, (0, 8, 2), (LEFT, DOWN, RIGHT))[0] == (0, 8, 2)  # all off the grid


@pytest.mark.parametrize("start, nodes, horizon", [
    ("I1", (0, 8, 4), 3), ("I2", (0, 8, 2), 3), ("T1", (1, 5, 2), 1)])
def test_pursuit3_named_starts(start, nodes, horizon):
    env, params = jaxmcg.make("pursuit-3", start=start)
    init = np.asarray(params.game.init_dist)
    assert init.max() == 1.0
    assert tuple(np.asarray(pursuit.positions(init.argmax(), 3))) == nodes
    assert int(params.max_steps_in_episode) == horizon


def test_pursuit3_uniform_start():
    init = np.asarray(pursuit.pursuit3_game().init_dist)
    assert (init > 0).sum() == 9 * 8 * 7
    pos = np.asarray(pursuit.positions(np.flatnonzero(init), 3))
    assert (pos[:, 0] != pos[:, 1]).all() and (pos[:, 2] != pos[:, :2].T).all()


def test_env_step_and_hunts():
    env, params = jaxmcg.make("pursuit-2")
    state = tabular.TabularState(time=jnp.asarray(0, jnp.int32),
                                 joint_state=jnp.asarray(pursuit.state_index((3, 4)), jnp.int32))
    obs, state, reward, terminated, truncated, info = env.step(
        KEY, state, jnp.array([RIGHT, STAY]), params)
    assert int(state.joint_state) == pursuit.state_index((4, 4))
    np.testing.assert_array_equal(reward, [0.0, 0.0])  # paid on the next decision
    assert obs.shape == (2, 81) and float(obs[0, pursuit.state_index((4, 4))]) == 1.0
    _, _, reward, _, _, _ = env.step(KEY, state, jnp.array([STAY, STAY]), params)
    np.testing.assert_allclose(reward, [0.4, -0.4])
    states = jnp.array([[pursuit.state_index(x) for x in [(0, 4), (4, 4), (4, 4), (5, 4)]],
                        [pursuit.state_index(x) for x in [(0, 4), (1, 4), (8, 4), (5, 4)]]])
    np.testing.assert_array_equal(pursuit.hunts(states), [2, 0])
    trio = jnp.array([pursuit.state_index(x) for x in [(0, 8, 2), (1, 5, 1), (2, 2, 2)]])
    assert int(pursuit.hunts(trio, 3)) == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"hunter_arrows": "H3"}, "hunter_arrows='H3'"),
    ({"prey_arrows": ("left", "diagonal")}, "diagonal"),
    ({"prey_arrows": ()}, "prey_arrows"),
    ({"hunter_arrows": np.ones((3, 3), bool)}, r"shape \(3, 3\)"),
    ({"capture_reward": float("nan")}, "capture_reward"),
])
def test_pursuit2_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pursuit.Pursuit2(**kwargs)


def test_pursuit3_bad_input():
    with pytest.raises(ValueError, match="start='I3'.*'I1'"):
        jaxmcg.make("pursuit-3", start="I3")
    with pytest.raises(ValueError, match="catch_reward"):
        pursuit.Pursuit3(catch_reward=float("inf"))
    with pytest.raises(ValueError, match="must lie in 0..8"):
        pursuit.state_index((0, 9))
