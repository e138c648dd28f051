"""The Markov commitment game wrapper (jaxmcg/commitment.py, dcl.md §1.2, §2.11): all-or-nothing
enforcement, mega-step decoding and reward aggregation, horizons, n > 2 agents, bad input."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from jaxmcg.commitment import Commitment, CommitmentGame

KEY = jax.random.PRNGKey(0)


def decision(proposal, commit, action):
    as_int = lambda x: jnp.asarray(x, jnp.int32)  # noqa: E731
    return Commitment(as_int(proposal), as_int(commit), as_int(action))


def pd_game():
    env, params = jaxmcg.make("pd")
    return CommitmentGame(env), params


@pytest.mark.parametrize("commits", list(itertools.product((0, 1), repeat=2)))
def test_pd_executes_proposals_iff_all_commit(commits):
    game, params = pd_game()
    _, state = game.reset(KEY, params)
    # proposals (C, C), fallbacks (D, D): mutual commitment gives -1 each, otherwise -2 each
    _, _, reward, terminated, truncated, info = game.step(
        KEY, state, decision([0, 0], commits, [1, 1]), params)
    agreed = all(commits)
    np.testing.assert_array_equal(reward, [-1.0, -1.0] if agreed else [-2.0, -2.0])
    np.testing.assert_array_equal(info["executed"], [0, 0] if agreed else [1, 1])
    assert bool(info["agreement"]) == agreed
    np.testing.assert_array_equal(info["proposal"], [0, 0])
    np.testing.assert_array_equal(info["commit"], commits)
    assert bool(truncated) and not bool(terminated)  # one-shot PD: one decision per episode


def test_one_rejection_voids_the_deal_for_everyone_with_five_agents():
    env, params = jaxmcg.make("public_goods", n_agents=5)
    game = CommitmentGame(env)
    _, state = game.reset(KEY, params)
    everyone_contributes = decision([1] * 5, [1] * 5, [0] * 5)
    _, _, reward, *_ = game.step(KEY, state, everyone_contributes, params)
    np.testing.assert_allclose(reward, [0.5] * 5)  # 1.5 * 5 / 5 - 1
    for rejecter in range(5):
        commits = [1] * 5
        commits[rejecter] = 0
        _, _, reward, _, _, info = game.step(KEY, state, decision([1] * 5, commits, [0] * 5),
                                             params)
        np.testing.assert_allclose(reward, [0.0] * 5)  # everyone falls back to free-riding
        assert not bool(info["agreement"])


def test_mega_step_decodes_most_significant_first_and_discounts_inner_rewards():
    env, params = jaxmcg.make("rpc")  # T = 16, stage game [(0,0),(-1,2),(2,-1),(0,0)]
    game = CommitmentGame(env, mega_step=2, gamma=0.9)
    assert game.num_actions == 4 and game.horizon(params) == 8
    np.testing.assert_array_equal(game.decode(jnp.arange(4)), [[0, 0], [0, 1], [1, 0], [1, 1]])
    _, state = game.reset(KEY, params)
    # agent 0 proposes (A1, A2) = 1, agent 1 proposes (A2, A1) = 2: step rewards (-1, 2), (2, -1)
    _, state, reward, _, _, info = game.step(KEY, state, decision([1, 2], [1, 1], [3, 3]), params)
    np.testing.assert_allclose(reward, [-1 + 0.9 * 2, 2 + 0.9 * -1], rtol=1e-6)
    assert int(state.time) == 2
    np.testing.assert_array_equal(info["inner"]["joint_action"], [1, 2])  # stacked over K
    legacy = CommitmentGame(env, mega_step=2, gamma=0.9, legacy_mega_reward=True)
    _, s2 = legacy.reset(KEY, params)
    _, _, reward, *_ = legacy.step(KEY, s2, decision([1, 2], [1, 1], [3, 3]), params)
    np.testing.assert_allclose(reward, [0.9 * -1 + 2, 0.9 * 2 - 1], rtol=1e-6)  # code: g r1 + r2


def test_episode_truncates_after_horizon_over_k_decisions_and_resets():
    env, params = jaxmcg.make("rpc")
    game = CommitmentGame(env, mega_step=2)
    _, state = game.reset(KEY, params)
    for t in range(8):
        _, state, _, terminated, truncated, _ = game.step(
            KEY, state, decision([0, 0], [0, 1], [1, 1]), params)
        assert not bool(terminated) and bool(truncated) == (t == 7)
    assert int(state.time) == 0  # auto-reset


def test_grid_game_fallbacks_move_agents():
    env, params = jaxmcg.make("grid_game")
    game = CommitmentGame(env)
    _, state = game.reset(KEY, params)
    # agent 0 proposes to stay home (0) but its fallback walks forward (1); agent 1 rejects
    _, state, reward, _, _, info = game.step(KEY, state, decision([0, 1], [1, 0], [1, 0]), params)
    np.testing.assert_array_equal(info["executed"], [1, 0])
    np.testing.assert_array_equal(info["positions"], [1, 2])
    np.testing.assert_allclose(reward, [1 - 2 * 1, 1 - 2 * 1])  # r0 = p0 - 2(3 - p1)


def test_jit_and_vmap_over_many_games():
    game, params = pd_game()
    n = 1024
    keys = jax.random.split(KEY, n)
    _, states = jax.vmap(game.reset, in_axes=(0, None))(keys, params)
    bits = jax.random.bernoulli(KEY, 0.5, (n, 3, 2)).astype(jnp.int32)
    actions = Commitment(bits[:, 0], bits[:, 1], bits[:, 2])
    _, _, reward, _, _, info = jax.jit(jax.vmap(game.step, in_axes=(0, 0, 0, None)))(
        keys, states, actions, params)
    assert reward.shape == (n, 2)
    payoff = np.asarray(params.payoff)
    b = np.asarray(bits)
    agree = b[:, 1].all(axis=1)
    x = np.where(agree[:, None], b[:, 0], b[:, 2])
    np.testing.assert_array_equal(reward, payoff[x[:, 0], x[:, 1]])
    np.testing.assert_array_equal(info["agreement"], agree)


def test_bad_input_fails_before_compilation():
    env, params = jaxmcg.make("rpc")
    with pytest.raises(ValueError, match=r"mega_step=3 does not divide .*16.*\[1, 2, 4, 8, 16\]"):
        CommitmentGame(env, mega_step=3)
    with pytest.raises(ValueError, match="mega_step=0"):
        CommitmentGame(env, mega_step=0)

    class Continuous:  # an environment with a Box action space
        num_agents = 2
        name = "continuous"
        default_params = params

        def action_space(self, params=None):
            return jaxmcg.spaces.Box(0.0, 1.0, (2,), jnp.float32)

    with pytest.raises(ValueError, match="discrete actions.*Box.*Discrete"):
        CommitmentGame(Continuous())
