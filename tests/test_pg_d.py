"""PG-d: REINFORCE with discrete give-reward actions (jaxmcg.algos.pg_d)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64
from seeds import train_seeds

import jaxmcg
from jaxmcg.algos import pg_d
from jaxmcg.networks import agent_slice
from jaxmcg.rollout import Trajectory, episode_rollout
from jaxmcg.train import TrainConfig, make_train
from jaxmcg.wrappers import GiveAction

GAMMA = 0.99


def assert_trees_close(actual, expected, **tol):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol), actual, expected)


# ---- the action encoding ----------------------------------------------------------------------


def test_encoding_two_agents_matches_the_authors_layout():
    """N = 2: flat 0..2 = move only, 3..5 = the same move and give (room_symmetric_baseline.py)."""
    assert pg_d.num_flat_actions(3, 2) == 6
    move, bits = pg_d.decode(jnp.arange(6), 3, 2)
    np.testing.assert_array_equal(move, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(bits[:, 0], [0, 0, 0, 1, 1, 1])


def test_encoding_three_agents_and_round_trip():
    assert pg_d.num_flat_actions(3, 3) == 12
    flat = jnp.arange(12)
    move, bits = pg_d.decode(flat, 3, 3)
    np.testing.assert_array_equal(move, np.tile([0, 1, 2], 4))
    # code 1: first other only, 2: second other only, 3: both (as the authors' 3..5, 6..8, 9..11)
    np.testing.assert_array_equal(bits, np.repeat([[0, 0], [1, 0], [0, 1], [1, 1]], 3, axis=0))
    np.testing.assert_array_equal(pg_d.encode(move, bits, 3), flat)
    # bits index the *other* agents in index order: agent 1's others are (0, 2)
    bits_per_agent = jnp.array([[1, 0], [0, 1], [1, 1]])  # agent 0 -> 1; agent 1 -> 2; agent 2 -> 0, 1
    given = pg_d.given_matrix(bits_per_agent, 2.0)
    np.testing.assert_array_equal(given, [[0, 2, 0], [0, 0, 2], [2, 2, 0]])


def test_act_gives_what_the_flat_action_says():
    env, env_params = jaxmcg.make("escape_room", num_agents=3, min_lever_pullers=2)
    config = pg_d.Config()
    state = pg_d.init(jax.random.PRNGKey(0), env, env_params, config)
    wrapped = pg_d.wrap_env(env, config)
    assert wrapped.observation_space(env_params).shape == (9 + 2,)  # 3N + (N-1), A18
    batch = episode_rollout(wrapped, env_params, lambda o, k: pg_d.act(state, o, k),
                            jax.random.PRNGKey(1), 64, 5)
    flat = batch.extras["flat_action"]
    assert int(flat.max()) <= 11 and len(np.unique(np.asarray(flat))) == 12
    move, bits = pg_d.decode(flat, 3, 3)
    np.testing.assert_array_equal(batch.action.action, move)
    np.testing.assert_array_equal(batch.action.given, pg_d.given_matrix(bits, 2.0))
    # agents observe what they gave so far this episode (ObserveGiven), here agent 0 at step 1
    alive = np.asarray(batch.valid[1]) > 0  # episodes that did not end at step 0
    np.testing.assert_allclose(batch.obs[1, alive, 0, 9:], batch.action.given[0, alive, 0, 1:])


# ---- give / cost accounting on a hand-built batch ---------------------------------------------


def _hand_batch(obs_dim):
    """One ER(2,1)-like episode of 2 valid steps and one padded step (flat actions as encoded):
    t=0: agent 0 moves to start and gives (flat 4), agent 1 pulls the lever (flat 0); env [0, -1]
    t=1: agent 0 goes to the door (flat 2), agent 1 stays and gives (flat 3);          env [10, -1]
    t=2: padding, with junk that must be ignored."""
    flat = jnp.array([[[4, 0]], [[2, 3]], [[5, 5]]], jnp.int32)  # [T, E=1, N]
    move, bits = pg_d.decode(flat, 3, 2)
    given = pg_d.given_matrix(bits, 2.0)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(3, 1, 2, obs_dim)), jnp.float32)
    return Trajectory(
        obs=obs, action=GiveAction(move, given), reward=jnp.array([[[0.0, -1.0]], [[10.0, -1.0]],
                                                                   [[7.0, 7.0]]]),
        next_obs=obs, valid=jnp.array([[1.0], [1.0], [0.0]]), terminated=jnp.zeros((3, 1), bool),
        truncated=jnp.zeros((3, 1), bool), extras={"flat_action": flat}, info={},
    )


def test_give_and_cost_accounting_by_hand():
    env, env_params = jaxmcg.make("escape_room")
    config = pg_d.Config(entropy_coef=0.05)
    state = pg_d.init(jax.random.PRNGKey(0), env, env_params, config)
    batch = _hand_batch(7)
    totals = np.asarray(pg_d.total_rewards(batch, config.cost_coef))[:2, 0]
    # giver pays R_a = 2, recipient gets 2
    np.testing.assert_allclose(totals, [[0 - 2, -1 + 2], [10 + 2, -1 - 2]])

    m = pg_d.eval_metrics(state, batch)
    np.testing.assert_allclose(m["pg_d/total_return"], [10.0, -2.0])
    np.testing.assert_allclose(m["pg_d/given_per_episode"], [2.0, 2.0])
    # per step, by own move: agent 0 got 2 on its door step; agent 1 got 2 on one of two lever steps
    np.testing.assert_allclose(m["pg_d/received_by_action"], [[0, 0, 2], [1, 0, 0]])

    # the update's loss is REINFORCE on these totals: -sum_t log pi~(flat_t) G_t - c_ent sum_t H_t
    returns = np.stack([totals[0] + GAMMA * totals[1], totals[1]])
    eps = float(pg_d.epsilon(state))
    logits = np.stack([
        np.asarray(state.policy.apply({"params": agent_slice(state.params, i)}, batch.obs[:2, 0, i]))
        for i in range(2)
    ], axis=1)  # [T=2, N, 6]
    probs = (1 - eps) * np.asarray(jax.nn.softmax(logits)) + eps / 6
    flat = np.asarray(batch.extras["flat_action"])[:2, 0]
    logp = np.log(np.take_along_axis(probs, flat[..., None], -1))[..., 0]
    ent = -np.sum(probs * np.log(probs), -1)
    expected = -np.sum(logp * returns + 0.05 * ent)
    np.testing.assert_allclose(pg_d.policy_loss(state.params, state, batch), expected, rtol=1e-5)

    # with cost_coef = 0 the giver keeps what it gives
    free = np.asarray(pg_d.total_rewards(batch, 0.0))[:2, 0]
    np.testing.assert_allclose(free, [[0, 1], [12, -1]])


def test_update_is_an_sgd_step_on_the_loss():
    env, env_params = jaxmcg.make("escape_room")
    config = pg_d.Config(lr=0.3)
    state = pg_d.init(jax.random.PRNGKey(0), env, env_params, config)
    batch = _hand_batch(7)
    new, metrics = jax.jit(pg_d.update)(state, batch)
    grads = jax.grad(pg_d.policy_loss)(state.params, state, batch)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.3 * g, state.params, grads)
    assert_trees_close(new.params, expected, rtol=1e-5, atol=1e-7)
    assert int(new.iteration) == 1
    assert metrics["pg_d/epsilon"] == pytest.approx(0.5)


# ---- gradient check against finite differences (float64) --------------------------------------


def test_gradient_matches_finite_differences(x64):
    env, env_params = jaxmcg.make("escape_room")
    config = pg_d.Config(hidden=(16, 8))
    state = pg_d.init(jax.random.PRNGKey(0), env, env_params, config)
    wrapped = pg_d.wrap_env(env, config)
    batch = episode_rollout(wrapped, env_params, lambda o, k: pg_d.act(state, o, k),
                            jax.random.PRNGKey(1), 6, 5)
    assert float(jnp.sum(batch.action.given)) > 0  # the batch has gifts, so costs enter the returns
    state = state.replace(params=f64(state.params))
    batch = f64(batch)
    assert_grad_matches_fd(lambda p: pg_d.policy_loss(p, state, batch), state.params,
                           jax.random.PRNGKey(2))


# ---- learning ---------------------------------------------------------------------------------


def _train(config, *, iterations=300, n_envs=128, seeds=5, log_every=50):
    env, env_params = jaxmcg.make("escape_room")
    tc = TrainConfig(n_envs=n_envs, iterations=iterations, log_every=log_every, eval_envs=256)
    train = make_train(pg_d, env, env_params, config, tc)
    return train_seeds(train, seeds)[1]


def test_givers_stop_paying_and_escape_room_stays_unsolved():
    """Why PG-d rarely solves ER(2,1) (thesis §6.3: "sometimes succeed, high variance"): a gift
    changes nothing in the current episode for the giver (recipients do not observe it) and costs
    it R_a, so an independent learner's own gradient only ever pushes giving down; it cannot see
    that gifts shape the recipient's learning, which is what LIO adds.

    At a rate where PG converges within the run (lr 1e-2, 128 episodes per update), all 5 seeds
    must (a) give < 0.25 per episode (about 3 at uniform play: half the 6 flat actions give 2, over
    episodes of up to 5 steps) and (b) end with a negative collective return, like PG. The same run
    with giving made free (cost_coef=0) must keep some agent giving > 5 per episode, so (a) tests
    that the giver pays rather than being vacuous."""
    m = _train(pg_d.Config())
    given = m["pg_d/given_per_episode"][:, -1]  # [seeds, N], evaluation
    assert np.all(given < 0.25), given
    assert np.all(m["collective_return"][:, -1] < 0.0), m["collective_return"][:, -1]
    # totals = extrinsic + received - given; with (almost) no giving they match the env returns
    np.testing.assert_allclose(m["pg_d/total_return"].sum(-1), m["collective_return"], atol=1e-4)

    free = _train(pg_d.Config(cost_coef=0.0))
    assert np.max(free["pg_d/given_per_episode"][:, -1]) > 5.0, free["pg_d/given_per_episode"][:, -1]


@pytest.mark.slow
def test_paper_protocol_sometimes_succeeds():
    """The Table B.4 protocol itself: one episode per update, lr 1e-4, eps 0.5 -> 0.05 over 100
    episodes, 50k episodes, 20 runs (thesis §2.11, L969). The thesis: PG-d "sometimes succeeds, with
    high variance". Measured here: 3 of 20 runs end near the optimum 9, the rest at about -2. Assert
    that at least one run reaches >= 8 and that the median run does not."""
    m = _train(pg_d.Config(lr=1e-4), iterations=50_000, n_envs=1, seeds=20, log_every=2500)
    final = m["collective_return"][:, -1]
    assert np.max(final) >= 8.0, final
    assert np.median(final) < 8.0, final
