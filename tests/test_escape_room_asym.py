"""Asymmetric 2-player Escape Room (thesis §5.2): two-phase rounds, reward rules, zeros after A1
exits, no early termination, and what each agent observes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from envs.escape_room_asym import GOAL, START

KEY = jax.random.PRNGKey(0)
IGNORED = 1  # value passed for the agent whose action does not count this phase


@pytest.fixture(scope="module")
def game():
    return jaxmcg.make("escape_room_asym-v0")


def play_round(env, params, state, a1, a2):
    """One round = phase 0 (A2 acts) then phase 1 (A1 acts). Returns per-phase outputs."""
    out0 = env.step(KEY, state, jnp.array([IGNORED, a2]), params)
    out1 = env.step(KEY, out0[1], jnp.array([a1, IGNORED]), params)
    return out0, out1


def round_reward(out0, out1):
    return np.asarray(out0[2]) + np.asarray(out1[2])


def test_acting_mask_and_phase_rewards(game):
    env, params = game
    _, state = env.reset(KEY, params)
    out0, out1 = play_round(env, params, state, GOAL, GOAL)
    np.testing.assert_array_equal(out0[5]["acting"], [False, True])
    np.testing.assert_array_equal(out1[5]["acting"], [True, False])
    np.testing.assert_array_equal(out0[2], [0.0, -1.0])  # A2 paid on its own step
    np.testing.assert_array_equal(out1[2], [10.0, 0.0])  # A1 paid on its own step
    assert out1[2].dtype == jnp.float32


@pytest.mark.parametrize("a1", [START, GOAL])
@pytest.mark.parametrize("a2", [START, GOAL])
def test_first_round_rewards(game, a1, a2):
    env, params = game
    _, state = env.reset(KEY, params)
    out0, out1 = play_round(env, params, state, a1, a2)
    r1 = 10.0 if (a2 == GOAL and a1 == GOAL) else -1.0
    r2 = -1.0 if a2 != START else 0.0
    np.testing.assert_array_equal(round_reward(out0, out1), [r1, r2])
    assert bool(out1[5]["door_open"]) == (a2 == GOAL)
    assert bool(out1[5]["exited"]) == (r1 == 10.0)
    np.testing.assert_array_equal(out1[1].position, [a1, a2])


def test_a1_pays_every_step_and_a2_per_change(game):
    env, params = game
    _, state = env.reset(KEY, params)
    # A2: start->lever (-1), stays (0), lever->start (-1); A1 never reaches the open door
    script = [(START, GOAL, [-1.0, -1.0]), (START, GOAL, [-1.0, 0.0]), (GOAL, START, [-1.0, -1.0])]
    for a1, a2, expected in script:
        out0, out1 = play_round(env, params, state, a1, a2)
        np.testing.assert_array_equal(round_reward(out0, out1), expected)
        state = out1[1]
    # A1 already at the door gets +10 by staying there when A2 pulls the lever
    np.testing.assert_array_equal(state.position, [GOAL, START])
    out0, out1 = play_round(env, params, state, GOAL, GOAL)
    np.testing.assert_array_equal(round_reward(out0, out1), [10.0, -1.0])


def test_zero_rewards_after_exit_and_no_early_termination(game):
    env, params = game
    horizon = int(params.max_steps_in_episode)
    _, state = env.reset(KEY, params)
    out0, out1 = play_round(env, params, state, GOAL, GOAL)
    assert bool(out1[5]["solved"]) and not bool(out1[3]) and not bool(out1[4])
    state = out1[1]
    for r in range(1, horizon):
        # moves that would cost both agents if the game were not solved
        a1, a2 = (START, START) if r % 2 else (GOAL, GOAL)
        out0, out1 = play_round(env, params, state, a1, a2)
        np.testing.assert_array_equal(round_reward(out0, out1), [0.0, 0.0])
        for out in (out0, out1):
            assert not bool(out[3])  # never terminated
        assert not bool(out0[4])
        assert bool(out1[4]) == (r == horizon - 1)  # truncated after the last round
        state = out1[1]
    assert int(state.time) == 0 and not bool(state.solved)  # auto-reset


def test_truncation_counts_rounds():
    env, params = jaxmcg.make("escape_room_asym-v0", max_steps_in_episode=3)
    _, state = env.reset(KEY, params)
    truncated = []
    for t in range(6):
        acting_a1 = t % 2 == 1
        _, state, reward, terminated, trunc, _ = env.step(
            KEY, state, jnp.array([START, START]), params
        )
        truncated.append(bool(trunc))
        assert float(reward[0]) == (-1.0 if acting_a1 else 0.0)
        assert not bool(terminated)
    assert truncated == [False] * 5 + [True]


def test_a1_observes_a2_action_before_acting(game):
    env, params = game
    obs, state = env.reset(KEY, params)
    start_both = [1, 0, 1, 0, 0, 0]
    np.testing.assert_array_equal(obs, [start_both, start_both])
    obs, state, *_ = env.step(KEY, state, jnp.array([IGNORED, GOAL]), params)
    # positions have not moved yet; A1 now sees A2's lever action, A2 sees nothing new
    np.testing.assert_array_equal(obs[0], [1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(obs[1], start_both)
    obs, state, *_ = env.step(KEY, state, jnp.array([START, IGNORED]), params)
    # round resolved: A1 at start, A2 at lever; the shown action is cleared
    np.testing.assert_array_equal(obs[0], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(obs[1], [0, 1, 1, 0, 0, 0])


def test_ignored_actions_have_no_effect(game):
    env, params = game
    _, state = env.reset(KEY, params)
    outs = [play_round(env, params, state, GOAL, GOAL)]
    # swap the ignored values: A1's action in phase 0 and A2's in phase 1
    out0 = env.step(KEY, state, jnp.array([START, GOAL]), params)
    out1 = env.step(KEY, out0[1], jnp.array([GOAL, START]), params)
    outs.append((out0, out1))
    for a, b in zip(jax.tree_util.tree_leaves(outs[0]), jax.tree_util.tree_leaves(outs[1]),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_params():
    with pytest.raises(ValueError, match="max_steps_in_episode=0"):
        jaxmcg.make("escape_room_asym-v0", max_steps_in_episode=0)
