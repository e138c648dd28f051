"""DCL Grid game (envs/grid_game.py, dcl.md §3.2): transitions at and away from the walls, rewards
from hand-built states, the reference returns of §3.2, observations and parameter validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import check_env

import jaxmcg
from envs.grid_game import EnvState, GridGame

KEY = jax.random.PRNGKey(0)
GAMMA = 0.99
B, F = 0, 1  # backward (toward cell 0), forward (toward cell N-1)
COOPERATE = (B, F)  # both stay at their start cells
DEFECT = (F, B)  # both walk toward the other's start


def state_at(p0, p1, t=0):
    return EnvState(positions=jnp.array([p0, p1], jnp.int32), time=jnp.asarray(t, jnp.int32))


def step(env, params, state, actions):
    return env.step(KEY, state, jnp.asarray(actions, jnp.int32), params)


def test_defaults_and_reset():
    env, params = jaxmcg.make("grid_game")
    assert env.grid_size == 4 and env.num_agents == 2
    assert int(params.max_steps_in_episode) == 16 and float(params.conflict) == 2.0
    assert env.observation_space(params).shape == (8,) and env.action_space(params).n == 2
    obs, state = env.reset(KEY, params)
    np.testing.assert_array_equal(state.positions, [0, 3])
    expected = [1, 0, 0, 0, 0, 0, 0, 1]
    np.testing.assert_array_equal(obs, [expected, expected])  # same view for both agents


# (N, positions before, actions, positions after); actions have the same absolute meaning for both
TRANSITIONS = [
    (4, (0, 3), (B, F), (0, 3)),  # both pushed into their own wall: no-op
    (4, (0, 3), (F, B), (1, 2)),
    (4, (3, 0), (F, B), (3, 0)),  # pushed into the far walls: no-op
    (4, (3, 0), (B, F), (2, 1)),
    (4, (1, 2), (F, F), (2, 3)),
    (4, (1, 2), (B, B), (0, 1)),
    (4, (2, 1), (F, B), (3, 0)),  # agents cross: no collisions
    (4, (2, 2), (F, F), (3, 3)),  # shared cell
    (4, (3, 3), (F, B), (3, 2)),
    (2, (0, 1), (F, B), (1, 0)),
    (2, (1, 0), (F, B), (1, 0)),
    (6, (2, 4), (F, B), (3, 3)),
    (6, (5, 0), (B, B), (4, 0)),
]


@pytest.mark.parametrize("n, before, actions, after", TRANSITIONS)
def test_transitions(n, before, actions, after):
    env, params = jaxmcg.make("grid_game", grid_size=n)
    obs, state, reward, terminated, truncated, info = step(env, params, state_at(*before), actions)
    np.testing.assert_array_equal(state.positions, after)
    np.testing.assert_array_equal(info["positions"], after)
    assert info["positions"].dtype == jnp.int32
    expected = np.concatenate([np.eye(n)[after[0]], np.eye(n)[after[1]]])
    np.testing.assert_array_equal(obs, [expected, expected])
    # rewards on the post-move positions, k = 2
    p0, adv1 = after[0], n - 1 - after[1]
    np.testing.assert_array_equal(reward, [p0 - 2 * adv1, adv1 - 2 * p0])
    assert reward.dtype == jnp.float32 and not bool(terminated) and not bool(truncated)


@pytest.mark.parametrize(
    "before, actions, k, expected",
    [
        ((1, 2), (F, B), 2.0, (2 - 2 * 2, 2 - 2 * 2)),  # -> (2, 1)
        ((0, 3), (F, F), 2.0, (1, -2)),  # -> (1, 3): agent 1 defects alone
        ((0, 3), (B, B), 2.0, (-2, 1)),  # -> (0, 2): agent 2 defects alone
        ((1, 2), (F, B), 0.5, (2 - 0.5 * 2, 2 - 0.5 * 2)),
        ((2, 1), (F, B), 3.0, (3 - 3 * 3, 3 - 3 * 3)),  # -> (3, 0)
    ],
)
def test_rewards_from_hand_built_states(before, actions, k, expected):
    env, params = jaxmcg.make("grid_game", conflict=k)
    _, _, reward, *_ = step(env, params, state_at(*before), actions)
    np.testing.assert_allclose(reward, expected, rtol=0, atol=1e-6)


def play_episode(env, params, policy):
    """Rewards [T, 2] of one episode where `policy(t)` gives the joint action."""
    _, state = env.reset(KEY, params)
    horizon = int(params.max_steps_in_episode)
    rewards = []
    for t in range(horizon):
        _, state, reward, terminated, truncated, _ = step(env, params, state, policy(t))
        rewards.append(np.asarray(reward))
        assert not bool(terminated) and bool(truncated) == (t == horizon - 1)
    assert int(state.time) == 0  # auto-reset after exactly T steps
    return np.stack(rewards)


def code_logged(rewards):
    acc = np.zeros(rewards.shape[1])
    for r in rewards:
        acc = GAMMA * acc + r
    return acc


def forward_discounted(rewards):
    return ((GAMMA ** np.arange(len(rewards)))[:, None] * rewards).sum(0)


@pytest.mark.parametrize(
    "joint, first_rewards, undiscounted, logged, forward",
    [
        ((COOPERATE, COOPERATE), [(0, 0), (0, 0), (0, 0)], (0, 0), (0, 0), (0, 0)),
        ((DEFECT, DEFECT), [(-1, -1), (-2, -2), (-3, -3), (-3, -3)], (-45, -45),
         (-41.97, -41.97), (-41.57, -41.57)),
        # agent 1 (index 0) defects, agent 2 cooperates
        (((F, F), (F, F)), [(1, -2), (2, -4), (3, -6)], (45, -90), (41.97, -83.95),
         (41.57, -83.15)),
    ],
)
def test_reference_returns(joint, first_rewards, undiscounted, logged, forward):
    env, params = jaxmcg.make("grid_game")
    rewards = play_episode(env, params, lambda t: joint[0])
    assert rewards.shape == (16, 2)
    np.testing.assert_array_equal(rewards[: len(first_rewards)], first_rewards)
    np.testing.assert_array_equal(rewards.sum(0), undiscounted)
    np.testing.assert_allclose(code_logged(rewards), logged, atol=0.01)
    np.testing.assert_allclose(code_logged(rewards).sum(), sum(logged), atol=0.01)
    np.testing.assert_allclose(forward_discounted(rewards), forward, atol=0.01)


def test_scripted_sequence():
    # agent 0: F F B F ..., agent 1: B F B B ...; positions and rewards by hand (N = 4, k = 2)
    script = [(F, B), (F, F), (B, B), (F, B), (F, B), (B, F)]
    positions = [(1, 2), (2, 3), (1, 2), (2, 1), (3, 0), (2, 1)]
    env, params = jaxmcg.make("grid_game")
    _, state = env.reset(KEY, params)
    for actions, pos in zip(script, positions, strict=True):
        _, state, reward, _, _, info = step(env, params, state, actions)
        np.testing.assert_array_equal(info["positions"], pos)
        adv1 = 3 - pos[1]
        np.testing.assert_array_equal(reward, [pos[0] - 2 * adv1, adv1 - 2 * pos[0]])


def test_obs_include_time():
    env, params = jaxmcg.make("grid_game", obs_include_time=True, max_steps_in_episode=4)
    assert env.observation_space(params).shape == (9,)
    obs, state = env.reset(KEY, params)
    np.testing.assert_array_equal(obs[:, -1], [0.0, 0.0])
    for t in range(1, 5):
        obs, state, _, _, truncated, info = step(env, params, state, DEFECT)
        if t < 4:
            np.testing.assert_allclose(obs[:, -1], [t / 4, t / 4])
    assert bool(truncated)
    np.testing.assert_allclose(info["final_obs"][:, -1], [1.0, 1.0])
    np.testing.assert_array_equal(obs[:, -1], [0.0, 0.0])  # auto-reset


def test_default_obs_has_no_time_index():
    env, params = jaxmcg.make("grid_game")
    obs0, state = env.reset(KEY, params)
    for _ in range(5):
        obs, state, *_ = step(env, params, state, COOPERATE)
    np.testing.assert_array_equal(obs, obs0)  # same positions, later time: same observation


def test_conflict_is_vmappable():
    env, params = jaxmcg.make("grid_game")
    ks = jnp.array([0.0, 1.0, 2.0, 3.0])
    axes = jax.tree_util.tree_map(lambda _: None, params).replace(conflict=0)
    reward = jax.vmap(lambda p: step(env, p, state_at(1, 2), DEFECT)[2], in_axes=(axes,))(
        params.replace(conflict=ks)
    )
    # -> (2, 1): r = 2 - 2k each
    np.testing.assert_allclose(reward, np.stack([2 - 2 * ks, 2 - 2 * ks], 1))


@pytest.mark.parametrize("overrides", [{"grid_size": 6, "obs_include_time": True},
                                       {"grid_size": 2, "max_steps_in_episode": 3}])
def test_contract_custom(overrides):
    check_env("grid_game-v0", n_envs=64, **overrides)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"grid_size": 1}, "grid_size=1"),
        ({"grid_size": 0}, "N >= 2"),
        ({"grid_size": 2.5}, "grid_size=2.5"),
        ({"max_steps_in_episode": 0}, "max_steps_in_episode=0"),
        ({"conflict": float("nan")}, "conflict=nan"),
        ({"k": 2.0}, "unknown parameter(s) ['k']"),
    ],
)
def test_bad_input(overrides, needle):
    with pytest.raises(ValueError) as err:
        jaxmcg.make("grid_game", **overrides)
    assert needle in str(err.value)


def test_constructor_validates():
    with pytest.raises(ValueError, match="grid_size=1"):
        GridGame(grid_size=1)
