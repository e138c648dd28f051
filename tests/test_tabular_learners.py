"""Tabular baselines (jaxmcg/tabular_learners.py, mge.md §3, §4.5, §9 #12): independent Q-learning
and correlated-Q on a hand-built game with known values, the policies they execute, evaluation, and
the grid-game reproduction (Q, uCE-Q, lCE-Q: (30, 30) on GG1, (1, 2) or (2, 1) on GG2 under the
first-arrival rule)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from jaxmcg import tabular
from jaxmcg import tabular_learners as TL

KEY = jax.random.PRNGKey(0)
GAMMA = 0.9
# the chain's values for both agents: in state 1 action 0 pays 2 and the game ends; in state 0
# action 1 pays 1 and the game moves on with probability 1/2, V0 = 1 + gamma (2 + V0) / 2
V1 = 2.0
V0 = (1 + GAMMA * V1 / 2) / (1 - GAMMA / 2)
Q_CHAIN = np.array([[GAMMA * (V1 + V0) / 2, V0], [V1, 0.0]])  # Q*_i(s, a_i), s = 0, 1
# GG2's start in small (tests/test_lp.py): action 0 "centre", 1 "barrier", both centre collide
BARRIER = np.array([[-1, 2, 1, 0.5], [-1, 1, 2, 0.5]])
CHAIN0, CHAIN1, OVER, STAGE = range(4)


def small_game():
    """States: 0 -> 1 (w.p. 1/2, else stays), 1 -> game over (2), 3: the one-shot BARRIER game.
    Rewards: state 0 pays each agent 1 for its action 1, state 1 pays 2 for action 0."""
    acts = tabular.joint_actions(2, 2)  # [4, 2]
    next_state = np.full((4, 4, 2), OVER)
    next_prob = np.tile([1.0, 0.0], (4, 4, 1))
    next_state[CHAIN0, :, 0], next_state[CHAIN0, :, 1] = CHAIN1, CHAIN0
    next_prob[CHAIN0] = 0.5
    reward = np.zeros((2, 4, 4))
    reward[:, CHAIN0] = acts.T == 1
    reward[:, CHAIN1] = 2.0 * (acts.T == 0)
    reward[:, STAGE] = BARRIER
    return tabular.make_game(next_state, next_prob, reward, init_dist=[0.5, 0, 0, 0.5],
                             absorbing=[False, False, True, False], num_agents=2, num_actions=2)


SMALL = small_game()


def test_config_validation():
    for bad in (dict(gamma=1.0), dict(gamma=-0.1), dict(lr_init=0.0001), dict(lr_final=0.0),
                dict(eps_init=1.5), dict(eps_final=0.5, eps_init=0.1), dict(eps_final=0.0),
                dict(num_steps=0), dict(num_envs=2.5), dict(num_steps=10, num_envs=20),
                dict(max_episode_steps=0)):
        with pytest.raises(ValueError):
            TL.QLearningConfig(**bad)
    for bad in (dict(objective="nash"), dict(gamma=1.2), dict(num_iterations=0),
                dict(leader=-1), dict(leader=True), dict(tie_break=-1.0), dict(lp_max_iter=0),
                dict(lr_init=2.0)):
        with pytest.raises(ValueError):
            TL.CEQConfig(**bad)
    with pytest.raises(ValueError, match="leader"):
        TL.ce_q(KEY, SMALL, TL.CEQConfig(leader=2, num_iterations=1))
    with pytest.raises(ValueError, match="joint_policy"):
        TL.evaluate(KEY, SMALL, jnp.ones((4, 3)), 5, 10)
    with pytest.raises(ValueError, match="episodes"):
        TL.evaluate(KEY, SMALL, jnp.ones((4, 4)) / 4, 5, 0)


def test_greedy_joint_policy_by_hand():
    q = jnp.array([[[1.0, 3.0, 3.0], [5.0, 0.0, -1.0]],  # agent 0: tie in state 0
                   [[0.0, 0.0, 9.0], [2.0, 2.0, 2.0]]])  # agent 1: action 2 masked in state 0
    mask = jnp.array([[[True] * 3, [True] * 3], [[True, True, False], [True] * 3]])
    pol = np.asarray(TL.greedy_joint_policy(q, mask))  # [2 states, 9 joint actions]
    expected0 = np.zeros((3, 3))
    expected0[1:, :2] = 0.25  # agent 0 uniform on {1, 2}, agent 1 on {0, 1} (9 is masked)
    expected1 = np.zeros((3, 3))
    expected1[0, :] = 1 / 3
    np.testing.assert_allclose(pol, [expected0.ravel(), expected1.ravel()], atol=1e-7)


def run(pol, init_state):
    """Greedy rollouts of the small game; one shape (T = 40, 4000 episodes) for one compile."""
    return TL.rollouts(KEY, SMALL, pol, 40, 4000, greedy=True, init_state=init_state)


def test_rollouts_and_evaluate_by_hand():
    # both agents play (1, 1) in state 0 and (0, 0) in state 1: each gets 1 per step in state 0
    # (2 steps in expectation) and 2 at the end: 4 per episode; state 3 plays (barrier, centre)
    pol = np.zeros((4, 4))
    pol[[CHAIN0, CHAIN1, OVER, STAGE], [3, 0, 0, 2]] = 1.0
    states, returns = run(pol, CHAIN0)
    assert states.shape == (4000, 41) and returns.shape == (4000, 2)
    np.testing.assert_array_equal(returns[:, 0], returns[:, 1])
    visits = np.asarray(jnp.sum(states[:, :-1] == CHAIN0, axis=1))  # geometric(1/2) steps
    np.testing.assert_allclose(returns[:, 0], visits + 2.0)
    assert abs(visits.mean() - 2.0) < 0.1
    np.testing.assert_allclose(run(pol, STAGE)[1], np.tile([1.0, 2.0], (4000, 1)))
    # a time-indexed policy [T, S, J] is taken as is: (centre, centre) at t = 0 collides
    timed = np.concatenate([np.tile(np.eye(4)[0], (1, 4, 1)), np.tile(pol, (39, 1, 1))])
    np.testing.assert_allclose(run(timed, STAGE)[1], np.tile([-1.0, -1.0], (4000, 1)))
    score = TL.evaluate(KEY, SMALL, pol, 40, 4000, greedy=True, init_state=CHAIN0)
    np.testing.assert_allclose(score, np.mean(returns, 0), rtol=1e-6)


def test_independent_q_learning_learns_the_chain_values():
    cfg = TL.QLearningConfig(num_steps=60_000, num_envs=60, max_episode_steps=30)
    res = TL.independent_q_learning(KEY, SMALL, cfg)
    assert res.q.shape == (2, 4, 2) and res.joint_policy.shape == (4, 4)
    for i in range(2):
        np.testing.assert_allclose(res.q[i, :2], Q_CHAIN, atol=0.05)
    # greedy: both take action 1 in state 0 and 0 in state 1
    np.testing.assert_allclose(res.joint_policy[CHAIN0], np.eye(4)[3], atol=1e-6)
    np.testing.assert_allclose(res.joint_policy[CHAIN1], np.eye(4)[0], atol=1e-6)
    assert int(res.episodes) > 1000


CEQ_SMALL = dict(num_iterations=5000)  # sampled noise of V0 about 0.017 (tol 0.05)


def test_ce_q_learns_the_chain_values():
    res = TL.ce_q(KEY, SMALL, TL.CEQConfig(**CEQ_SMALL))
    np.testing.assert_allclose(res.values[:, :2], [[V0, V1]] * 2, atol=0.05)
    # joint Q: own reward plus the discounted continuation, whatever the other agent does
    acts = tabular.joint_actions(2, 2)
    for i in range(2):
        np.testing.assert_allclose(res.q[i, CHAIN1], np.where(acts[:, i] == 0, V1, 0.0),
                                   atol=0.05)
        np.testing.assert_allclose(res.q[i, CHAIN0], Q_CHAIN[0, acts[:, i]], atol=0.05)
    np.testing.assert_allclose(res.joint_policy[CHAIN0], np.eye(4)[3], atol=1e-3)
    np.testing.assert_allclose(res.joint_policy[CHAIN1], np.eye(4)[0], atol=1e-3)
    np.testing.assert_array_equal(res.values[:, OVER], 0.0)
    # the barrier stage: a pure NE (the tie-break's vertex), welfare 3
    assert abs(float(jnp.sum(res.values[:, STAGE])) - 3.0) < 1e-3
    assert float(jnp.max(res.joint_policy[STAGE])) > 0.99
    assert res.sigmas.shape == (1, 4, 4) and res.delta.shape == (CEQ_SMALL["num_iterations"],)
    assert float(res.delta[-1]) < 0.01


def test_ce_policy_of_libertarian_sigmas_by_hand():
    # sigma^0 = (centre, barrier), sigma^1 = (barrier, centre) in every state
    sigmas = jnp.asarray(np.broadcast_to(np.eye(4)[[1, 2]][:, None], (2, 4, 4)))
    for leader, score in ((0, [2.0, 1.0]), (1, [1.0, 2.0]), (None, [-1.0, -1.0])):
        pol = TL.ce_policy(sigmas, SMALL, leader)
        # None: each plays its own marginal, both take the centre and collide
        np.testing.assert_allclose(run(pol, STAGE)[1][0], score)
    with pytest.raises(ValueError, match="leader"):
        TL.ce_policy(sigmas, SMALL, 2)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["libertarian", "egalitarian"])
def test_ce_q_variants_on_the_small_game(objective):
    res = TL.ce_q(KEY, SMALL, TL.CEQConfig(objective=objective, **CEQ_SMALL))
    np.testing.assert_allclose(res.values[:, :2], [[V0, V1]] * 2, atol=0.05)
    if objective == "libertarian":
        # each agent values the stage at its own best CE, 2; the executed policy is the leader's
        np.testing.assert_allclose(res.values[:, STAGE], [2.0, 2.0], atol=1e-3)
        np.testing.assert_allclose(res.sigmas[:, STAGE], [[0, 1, 0, 0], [0, 0, 1, 0]], atol=1e-3)
        np.testing.assert_allclose(res.joint_policy, res.sigmas[0])
    else:
        # only the even split of the two pure NEs gives both 1.5
        np.testing.assert_allclose(res.joint_policy[STAGE], [0, 0.5, 0.5, 0], atol=1e-3)
        np.testing.assert_allclose(res.values[:, STAGE], [1.5, 1.5], atol=1e-3)


# --------------------------------------------------------------------------------------------
# mge.md §9 #12: the grid games under the first-arrival rule


def grid(number):
    return jaxmcg.make(f"hw_grid{number}", termination="first")[1].game


def check_grid_scores(game_number, policy, seed=1):
    """Sampled execution, T = 20 (mge.md §6 #9-#10), 8000 plays (standard error <= 0.011)."""
    score = np.asarray(TL.evaluate(jax.random.PRNGKey(seed), grid(game_number), policy, 20,
                                   8000))
    if game_number == 1:
        np.testing.assert_allclose(score, [30.0, 30.0], atol=0.05)
    else:
        assert np.allclose(score, [1.0, 2.0], atol=0.05) or np.allclose(score, [2.0, 1.0],
                                                                         atol=0.05), score
    return score


START = 6 * 9 + 8  # A bottom-left, B bottom-right


@pytest.mark.parametrize("objective, games", [("utilitarian", (1, 2)), ("libertarian", (2,))])
def test_ce_q_grid_games_fast(objective, games):
    """60 sweeps instead of 500 (GG1's lCE-Q in the slow test only)."""
    cfg = TL.CEQConfig(objective=objective, num_iterations=60)
    for number in games:
        res = TL.ce_q(KEY, grid(number), cfg)
        score = check_grid_scores(number, res.joint_policy)
    # GG2 at the start: the centre path arrives at step 3 (2 gamma^2), the barrier path with
    # probability 1/2; uCE-Q picks one of the two pure NEs, lCE-Q's agents each value their own
    v = 2 * GAMMA ** 2
    if objective == "utilitarian":
        low, high = sorted(np.asarray(res.values[:, START]))
        assert abs(high - v) < 0.01 and abs(low - v / 2) < 0.2  # B's is noisy after 60 sweeps
    else:
        np.testing.assert_allclose(res.values[:, START], [v, v], atol=0.01)
        np.testing.assert_allclose(score, [2.0, 1.0], atol=0.05)  # the leader A takes the centre
        # decentralised lCE-Q: both head for the centre and collide
        pol = TL.ce_policy(res.sigmas, grid(2), None)
        assert np.all(np.asarray(TL.evaluate(KEY, grid(2), pol, 20, 8000)) < 0)


def test_q_learning_grid_games_fast():
    cfg = TL.QLearningConfig(num_steps=200_000)
    for number in (1, 2):
        check_grid_scores(number, TL.independent_q_learning(KEY, grid(number), cfg).joint_policy)


@pytest.mark.slow
@pytest.mark.parametrize("learner", ["q", "utilitarian", "libertarian"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_games_paper_defaults(learner, seed):
    """mge.md §4.5 Fig. 5 table with the §3 defaults (1e6 steps / 500 sweeps = 1e6 updates)."""
    key = jax.random.PRNGKey(seed)
    for number in (1, 2):
        if learner == "q":
            res = TL.independent_q_learning(key, grid(number))
        else:
            res = TL.ce_q(key, grid(number), TL.CEQConfig(objective=learner))
        score = check_grid_scores(number, res.joint_policy, seed + 10)
        # greedy execution of the same (pure) policies scores the same
        greedy = TL.evaluate(jax.random.PRNGKey(seed), grid(number), res.joint_policy, 20, 4000,
                             greedy=True)
        np.testing.assert_allclose(greedy, score, atol=0.06)


@pytest.mark.slow
def test_q_learning_pursuit_substitute_for_nscp():
    """mge.md §3: independent Q-learning as the NSCP substitute on pursuit-2 (greedy, T = 22).
    With the reconstructed arrows (prey {left, up}) the learned hunter corners the prey: about 20
    hunts per game, against the paper's NSCP 2.1 and MGE-F 2.9 (§4.1), which the lost Fig. 2
    graph keeps out of reach (§8.5: MGE-F on this graph 8.21)."""
    from envs import pursuit

    game = jaxmcg.make("pursuit-2")[1].game
    for seed in (0, 1):
        res = TL.independent_q_learning(jax.random.PRNGKey(seed), game)
        states, returns = TL.rollouts(jax.random.PRNGKey(7), game, res.joint_policy, 22, 4000,
                                      greedy=True)
        hunts = float(jnp.mean(pursuit.hunts(states, 2)))
        assert 18.0 < hunts < 21.0, hunts
        np.testing.assert_allclose(jnp.mean(returns, 0), [0.4 * hunts, -0.4 * hunts], rtol=1e-4)
