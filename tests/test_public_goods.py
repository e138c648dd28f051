"""n-player public goods game (envs/public_goods.py, dcl.md §3.4, D12): rewards of contributors
and free-riders, SW = (beta - 1) k for every k and n, the beta / n form, observations, horizon and
parameter validation."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import check_env

import jaxmcg
from envs.public_goods import PublicGoods

KEY = jax.random.PRNGKey(0)


def play(env, params, actions):
    _, state = env.reset(KEY, params)
    return env.step(KEY, state, jnp.asarray(actions, jnp.int32), params)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_social_welfare_for_every_number_of_contributors(n):
    env, params = jaxmcg.make("public_goods", n_agents=n)
    rng = np.random.default_rng(n)
    for k in range(n + 1):
        actions = rng.permutation([1] * k + [0] * (n - k))  # who contributes must not matter
        _, _, reward, terminated, truncated, info = play(env, params, actions)
        assert reward.shape == (n,) and reward.dtype == jnp.float32
        np.testing.assert_allclose(float(reward.sum()), 0.5 * k, atol=1e-5)  # (beta - 1) k
        share = 1.5 * k / n
        np.testing.assert_allclose(reward, np.where(actions == 1, share - 1, share), atol=1e-6)
        assert int(info["contributors"]) == k
        assert not bool(terminated) and bool(truncated)  # one-shot


@pytest.mark.parametrize(
    "n, actions, expected",
    [
        # contributor beta k / n - 1, free-rider beta k / n (beta = 1.5)
        (2, [1, 1], [0.5, 0.5]),
        (2, [1, 0], [-0.25, 0.75]),
        (3, [1, 0, 0], [-0.5, 0.5, 0.5]),
        (5, [1, 1, 1, 1, 0], [0.2, 0.2, 0.2, 0.2, 1.2]),
        (10, [1] * 7 + [0] * 3, [0.05] * 7 + [1.05] * 3),
    ],
)
def test_individual_rewards(n, actions, expected):
    env, params = jaxmcg.make("public_goods", n_agents=n)
    np.testing.assert_allclose(play(env, params, actions)[2], expected, atol=1e-6)


def test_beta_over_n_not_literal_formula():
    # P:L965's literal R^i = beta * sum_j C^j - C^i would give SW 4 here; Table 8 reports ~1
    env, params = jaxmcg.make("public_goods")
    reward = play(env, params, [1, 1])[2]
    np.testing.assert_allclose(reward, [0.5, 0.5], atol=1e-6)
    assert abs(float(reward.sum()) - 4.0) > 1.0


def test_contributing_is_individually_irrational_but_socially_good():
    env, params = jaxmcg.make("public_goods", n_agents=5)
    for others in itertools.product([0, 1], repeat=4):
        with_c = play(env, params, [1, *others])[2]
        without = play(env, params, [0, *others])[2]
        assert float(with_c[0]) < float(without[0])  # free-riding dominates
        assert float(with_c.sum()) > float(without.sum())  # contributing raises SW


def test_dummy_observation_and_defaults():
    env, params = jaxmcg.make("public_goods", n_agents=10)
    assert env.num_agents == 10 and int(params.max_steps_in_episode) == 1
    assert float(params.benefit) == 1.5
    assert env.observation_space(params).shape == (2,) and env.action_space(params).n == 2
    obs, _ = env.reset(KEY, params)
    np.testing.assert_array_equal(obs, np.tile([1.0, 0.0], (10, 1)))
    obs, _, _, _, _, info = play(env, params, [1] * 10)
    np.testing.assert_array_equal(obs, np.tile([1.0, 0.0], (10, 1)))
    np.testing.assert_array_equal(info["final_obs"], np.tile([1.0, 0.0], (10, 1)))
    assert jaxmcg.make("public_goods")[0].num_agents == 2


def test_longer_horizon():
    env, params = jaxmcg.make("public_goods", n_agents=3, max_steps_in_episode=3)
    _, state = env.reset(KEY, params)
    for t in range(3):
        _, state, reward, _, truncated, _ = env.step(KEY, state, jnp.array([1, 1, 0]), params)
        np.testing.assert_allclose(reward, [0.0, 0.0, 1.0], atol=1e-6)
        assert bool(truncated) == (t == 2)


def test_benefit_is_vmappable():
    env, params = jaxmcg.make("public_goods", n_agents=3)
    betas = jnp.array([1.5, 2.0, 3.0])
    axes = jax.tree_util.tree_map(lambda _: None, params).replace(benefit=0)
    rewards = jax.vmap(lambda p: play(env, p, [1, 1, 0])[2], in_axes=(axes,))(
        params.replace(benefit=betas)
    )
    share = np.asarray(betas)[:, None] * 2 / 3
    np.testing.assert_allclose(rewards, share - np.array([1, 1, 0]), atol=1e-6)


def test_contract_ten_agents():
    check_env("public_goods-v0", n_envs=64, n_agents=10, max_steps_in_episode=2)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"n_agents": 1}, "n_agents=1"),
        ({"n_agents": 0}, "n >= 2"),
        ({"benefit": 0.0}, "benefit=0.0"),
        ({"benefit": -1.5}, "> 0"),
        ({"benefit": float("inf")}, "finite"),
        ({"max_steps_in_episode": 0}, "max_steps_in_episode=0"),
        ({"beta": 1.5}, "unknown parameter(s) ['beta']"),
    ],
)
def test_bad_input(overrides, needle):
    with pytest.raises(ValueError) as err:
        jaxmcg.make("public_goods", **overrides)
    assert needle in str(err.value)


def test_constructor_validates():
    with pytest.raises(ValueError, match="n_agents=1"):
        PublicGoods(n_agents=1)
