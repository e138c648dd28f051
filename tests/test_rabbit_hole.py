"""Rabbit-hole game (envs/rabbit_hole.py, mge.md §2.3): the hole's attachment, masks, transitions and
rewards from hand-built states, the prize_once and capture_terminal flags, hole-entry counting and
input validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from envs import rabbit_hole
from envs.pursuit import DOWN, LEFT, RIGHT, STAY, UP
from jaxmcg import tabular

H, E = 25, 0  # default 5x5 map: hole and entrance (0, 0)
C = 26


def index(fox, rabbit, collected=0):
    return (collected * C + fox) * C + rabbit


def outcome(game, s, actions, grid_size=5, prize_once=False):
    """((fox, rabbit, collected, over) after one deterministic step, rewards)."""
    j = int(tabular.joint_action_index(jnp.asarray(actions), 5))
    assert float(game.next_prob[s, j, 0]) == 1.0
    parts = rabbit_hole.decode(game.next_state[s, j, 0], grid_size, prize_once)
    return tuple(int(x) for x in parts), np.asarray(game.reward[:, s, j])


def test_defaults():
    env, params = jaxmcg.make("rabbit_hole")
    game = params.game
    # the registered game pays the prize once (a "collected" bit doubles the states)
    assert env.prize_once and game.num_states == 2 * 26 * 26
    assert int(params.max_steps_in_episode) == 12
    init = np.asarray(game.init_dist)
    assert (init > 0).sum() == 25 * 24  # distinct grid cells, neither in the hole (§6 #20)
    fox, rabbit, bit, _ = rabbit_hole.decode(np.flatnonzero(init), prize_once=True)
    assert not np.asarray(bit).any()
    assert (np.asarray(fox) != np.asarray(rabbit)).all() and (np.asarray(rabbit) < H).all()
    assert not np.asarray(game.absorbing).any()
    np.testing.assert_allclose(np.asarray(game.next_prob).sum(-1), 1.0)


def test_map():
    world = rabbit_hole.RabbitHoleMap()
    assert (world.hole, world.entrance) == (H, E)
    assert world.moves[E, UP] == H and world.moves[H, DOWN] == E
    assert set(np.flatnonzero(world.mask[H])) == {STAY, DOWN}  # a dead end
    assert set(np.flatnonzero(world.mask[E])) == {STAY, UP, DOWN, RIGHT}
    assert set(np.flatnonzero(world.mask[4])) == {STAY, DOWN, LEFT}  # walls are masked
    assert world.moves[1, UP] == 1  # only E leads into the hole
    np.testing.assert_array_equal(world.dist_to_entrance[[E, 2, 12, 24, H]], [0, 2, 4, 8, 1])
    for entrance, out, back in [((0, 2), UP, DOWN), ((4, 0), DOWN, UP), ((2, 0), LEFT, RIGHT),
                                ((3, 4), RIGHT, LEFT)]:
        w = rabbit_hole.RabbitHoleMap(5, entrance)
        e = entrance[0] * 5 + entrance[1]
        assert w.moves[e, out] == H and w.moves[H, back] == e


@pytest.mark.parametrize("before, actions, after", [
    ((4, E), (STAY, UP), (4, H)),  # the rabbit enters the hole
    ((E, H), (UP, STAY), (H, H)),  # the fox follows it in
    ((4, H), (STAY, DOWN), (4, E)),
    ((4, H), (STAY, LEFT), (4, H)),  # masked in the hole: stays
    ((E, 24), (LEFT, RIGHT), (E, 24)),  # walls
    ((1, 5), (UP, UP), (1, E)),  # up from 1 is a wall: only E leads into the hole
    ((12, 13), (RIGHT, LEFT), (13, 12)),  # crossing is no capture
    ((12, 14), (RIGHT, LEFT), (13, 13)),
])
def test_transitions(before, actions, after):
    game = rabbit_hole.rabbit_hole_game()
    nxt, _ = outcome(game, index(*before), actions)
    assert nxt == (*after, 0, 0)


@pytest.mark.parametrize("cells, expected", [
    ((4, H), (0.0, 0.3)),
    ((13, 13), (2.0, -2.0)),
    ((H, H), (2.0, 0.3 - 2.0)),
    ((4, E), (0.0, 0.0)),
])
def test_rewards(cells, expected):
    game = rabbit_hole.rabbit_hole_game()
    s = index(*cells)
    for actions in [(STAY, STAY), (DOWN, DOWN)]:
        np.testing.assert_allclose(outcome(game, s, actions)[1], expected, rtol=1e-6)
    np.testing.assert_allclose(game.final_reward[:, s], expected, rtol=1e-6)  # R_F = R
    custom = rabbit_hole.rabbit_hole_game(prize=1.0, capture_reward=5.0)
    np.testing.assert_allclose(custom.reward[:, index(H, H), 0], [5.0, -4.0])


def test_prize_once():
    game = rabbit_hole.rabbit_hole_game(prize_once=True)
    assert game.num_states == 2 * C * C
    nxt, r = outcome(game, index(4, H), (STAY, STAY), prize_once=True)
    assert nxt == (4, H, 1, 0)
    np.testing.assert_allclose(r, [0.0, 0.3], rtol=1e-6)
    nxt, r = outcome(game, index(4, H, 1), (STAY, STAY), prize_once=True)
    assert nxt == (4, H, 1, 0)
    np.testing.assert_allclose(r, [0.0, 0.0])  # collected: no second prize
    nxt, _ = outcome(game, index(4, H, 1), (STAY, DOWN), prize_once=True)
    assert nxt == (4, E, 1, 0)  # the bit stays set
    nxt, _ = outcome(game, index(4, E), (STAY, UP), prize_once=True)
    assert nxt == (4, H, 0, 0)  # the bit is set by a step spent in H, not by entering


def test_capture_terminal():
    env, params = jaxmcg.make("rabbit_hole", capture_terminal=True, prize_once=False)
    game = params.game
    over = game.num_states - 1
    assert game.num_states == C * C + 1 and bool(game.absorbing[over])
    assert (np.asarray(game.next_state[index(13, 13)]) == over).all()
    assert (np.asarray(game.next_state[over]) == over).all()
    np.testing.assert_allclose(game.reward[:, index(13, 13)],
                               np.broadcast_to([[2.0], [-2.0]], (2, 25)))
    np.testing.assert_allclose(game.reward[:, over], 0.0)
    assert rabbit_hole.decode(over)[3]
    state = tabular.TabularState(time=jnp.asarray(0, jnp.int32),
                                 joint_state=jnp.asarray(index(13, 13), jnp.int32))
    _, _, reward, terminated, truncated, _ = env.step(
        jax.random.PRNGKey(0), state, jnp.array([STAY, STAY]), params)
    assert bool(terminated) and not bool(truncated)
    np.testing.assert_allclose(reward, [2.0, -2.0])
    nxt, _ = outcome(game, index(12, 14), (RIGHT, LEFT))
    assert nxt == (13, 13, 0, 0)  # the capture state itself is not terminal: it pays first


def test_hole_entries():
    world = rabbit_hole.RabbitHoleMap()
    states = jnp.array([index(22, 5), index(22, E), index(17, H), index(12, H), index(12, E)])
    entered, dist = rabbit_hole.hole_entries(states, world)
    np.testing.assert_array_equal(entered, [False, True, False, False])
    assert int(dist[1]) == 6  # fox at 22 = (4, 2): |4 - 0| + |2 - 0|
    entered, dist = rabbit_hole.hole_entries(jnp.array([index(H, E), index(H, H)]), world)
    assert bool(entered[0]) and int(dist[0]) == 1  # the fox waiting inside the hole


@pytest.mark.parametrize("kwargs, match", [
    ({"grid_size": 1}, "grid_size=1"),
    ({"entrance": (2, 2)}, "boundary"),
    ({"entrance": (5, 0)}, "boundary"),
    ({"entrance": 3}, r"\(row, col\)"),
    ({"prize": float("nan")}, "prize"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rabbit_hole.RabbitHole(**kwargs)
