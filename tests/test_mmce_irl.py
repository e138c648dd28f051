"""MMCE-IRL (jaxmcg/mmce_irl.py, mge.md §1.9-§1.10, §9 items 6-7): demonstration feature sums,
reward construction and projection, Theorem 5 against autodiff of the dual through the
fixed-iteration solver, and recovery of a known theta* from exact and sampled demonstrations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import mge_numpy as ref
from jaxmcg import mge, tabular
from jaxmcg import mmce_irl as irl

S, M, A, N, T = 6, 2, 3, 3, 4  # the recovery game: states, agents, actions, features, horizon


def cosine(x, y):
    return float(jnp.dot(x, y) / jnp.linalg.norm(x) / jnp.linalg.norm(y))


def test_agent_actions_inverts_joint_index():
    acts = tabular.joint_actions(3, 4)
    np.testing.assert_array_equal(irl.agent_actions(jnp.arange(64), 3, 4), acts)


def test_empirical_features_hand_built(x64):
    feats = np.zeros((2, 3, 2, 1))
    feats[0, :, :, 0] = [[1, 2], [3, 4], [5, 6]]  # agent 0: F(x, a)
    feats[1, :, :, 0] = [[10, 20], [30, 40], [50, 60]]
    states = jnp.array([[0, 1, 2], [2, 2, 0]])
    # joint index = 2 a_0 + a_1: episode 0 plays (0, 1) then (1, 0); episode 1 (1, 1) then (0, 0)
    actions = jnp.array([[1, 2], [3, 0]])
    emp = irl.empirical_features(states, actions, jnp.asarray(feats))
    # agent 0: (F(0,0) + F(1,1) + F(2,1) + F(2,0)) / 2 = (1 + 4 + 6 + 5) / 2
    np.testing.assert_allclose(emp, [[8.0], [(20 + 30 + 60 + 50) / 2]])
    valid = jnp.array([[True, False], [True, True]])  # drop episode 0's second step
    np.testing.assert_allclose(irl.empirical_features(states, actions, jnp.asarray(feats), valid),
                               [[6.0], [(20 + 60 + 50) / 2]])


def test_theta_game_and_projection(x64):
    game = ref.random_game(np.random.default_rng(0), 3, 2, 2, 1, 1.0)
    feats = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 2, 2)))
    theta = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    g = irl.theta_game(game, theta, feats)
    acts = tabular.joint_actions(2, 2)
    for i in range(2):
        want = (np.asarray(feats[i]) @ np.asarray(theta[i]))[:, acts[:, i]]  # own action only
        np.testing.assert_allclose(g.reward[i], want, rtol=1e-12)
    assert float(jnp.abs(g.final_reward).max()) == 0.0
    kept = irl.theta_game(game, theta, feats, known=(True, False))
    np.testing.assert_array_equal(kept.reward[0], game.reward[0])
    np.testing.assert_array_equal(kept.final_reward[0], game.final_reward[0])
    np.testing.assert_allclose(kept.reward[1], g.reward[1])
    proj = irl.project(theta, 2.0)
    np.testing.assert_allclose(proj[0], theta[0] * 2 / np.sqrt(5))  # scaled onto the ball
    np.testing.assert_allclose(proj[1], theta[1] * 2 / np.sqrt(9.25))
    np.testing.assert_allclose(irl.project(theta, 10.0), theta)  # inside: unchanged


# --------------------------------------------------------------------------------------------
# Theorem 5 (mge.md §9 #6)


def problem(seed, m, coupled=True):
    rng = np.random.default_rng(seed)
    if coupled:
        game = ref.random_game(rng, 4, m, 3, 4, 1.0)  # K = 4 as below: shared compilations
    else:  # two independent 2-state chains: joint state x = 2 x_0 + x_1
        p = rng.dirichlet(np.ones(2), (2, 2, 3))  # p[i, x_i, a_i, x_i']
        nxt = np.zeros((4, 9, 4), int)
        prob = np.zeros((4, 9, 4))
        for x, j, y in np.ndindex(4, 9, 4):
            (x0, x1), (a0, a1), (y0, y1) = divmod(x, 2), divmod(j, 3), divmod(y, 2)
            nxt[x, j, y], prob[x, j, y] = y, p[0, x0, a0, y0] * p[1, x1, a1, y1]
        game = tabular.make_game(nxt, prob, np.zeros((2, 4)), num_agents=2, num_actions=3,
                                 dtype=np.float64)
    feats = rng.uniform(-1, 1, (m, 4, 3, 2))
    if not coupled:  # agent i's features see its own chain only
        feats = np.stack([feats[i][[0, 0, 2, 2] if i == 0 else [0, 1, 0, 1]] for i in range(2)])
    theta = jnp.asarray(rng.normal(size=(m, 2)))
    emp = jnp.asarray(rng.normal(size=(m, 2)))
    return game, jnp.asarray(feats), theta, emp


def test_theorem5_single_agent_is_the_dual_gradient(x64):
    game, feats, theta, emp = problem(0, 1)
    grad, _ = irl.mmce_gradient(game, theta, feats, emp, 3, eps=1e-13)
    dual = lambda th: irl.dual(th, game, feats, emp, 3, 100)[0]
    np.testing.assert_allclose(grad, -jax.grad(dual)(theta), atol=1e-10)
    h = 1e-5  # and by central differences
    fd = [(dual(theta.at[0, n].add(h)) - dual(theta.at[0, n].add(-h))) / (2 * h) for n in range(2)]
    np.testing.assert_allclose(grad[0], -np.array(fd), atol=1e-8)


def test_theorem5_decoupled_game_total_gradient(x64):
    # agents that do not interact: the duals' cross derivatives vanish and Theorem 5 is exact
    game, feats, theta, emp = problem(1, 2, coupled=False)
    grad, _ = irl.mmce_gradient(game, theta, feats, emp, 3, eps=1e-13)
    jac = jax.jacfwd(lambda th: irl.dual(th, game, feats, emp, 3, 100))(theta)  # [M, M, N]
    np.testing.assert_allclose(grad, -jnp.stack([jac[0, 0], jac[1, 1]]), atol=1e-10)
    np.testing.assert_allclose(jac[0, 1], 0.0, atol=1e-10)


def test_theorem5_coupled_game_is_the_partial_gradient(x64):
    """With interacting agents Theorem 5 is the gradient of agent i's dual with the others'
    policies held fixed; the total derivative also moves pi_-i (the paper's proof drops it)."""
    game, feats, theta, emp = problem(2, 2)
    horizon = 3
    grad, sol = irl.mmce_gradient(game, theta, feats, emp, horizon, eps=1e-13)
    pis = jax.lax.stop_gradient(sol.pi)

    def frozen_dual(theta_i, i):
        # soft value iteration of agent i against the fixed pi_-i^tau of the equilibrium
        g = irl.theta_game(game, theta.at[i].set(theta_i), feats)
        v = g.final_reward[i]
        for tau in range(horizon - 1, -1, -1):
            u = g.reward[i] + tabular.expected_next(g, v)
            v = mge.value_lse(mge.others_expectation(u, pis[tau], i), 1.0, g.action_mask[i])
        return v @ game.init_dist - theta_i @ emp[i]

    for i in range(2):
        np.testing.assert_allclose(grad[i], -jax.grad(frozen_dual)(theta[i], i), atol=1e-10)
    jac = jax.jacfwd(lambda th: irl.dual(th, game, feats, emp, horizon, 100))(theta)
    own = -jnp.stack([jac[0, 0], jac[1, 1]])
    assert float(jnp.abs(own - grad).max()) > 1e-3  # the dropped term is not small here
    assert float(jnp.abs(jac[0, 1]).max()) > 1e-3


# --------------------------------------------------------------------------------------------
# recovery (mge.md §9 #7)


@pytest.fixture
def recovery(x64):
    rng = np.random.default_rng(3)
    game = ref.random_game(rng, S, M, A, 2, 1.0)
    feats = jnp.asarray(rng.uniform(-1, 1, (M, S, A, N)))
    theta_star = jnp.asarray(rng.normal(size=(M, N)))
    true_game = irl.theta_game(game, theta_star, feats)
    sol = mge.mmce_finite(true_game, T, eps=1e-12)
    return game, feats, theta_star, true_game, sol


def test_recovery_from_exact_expectations(recovery):
    game, feats, theta_star, _, sol = recovery
    emp = mge.expected_features(game, sol, feats)  # exact demonstrations
    res = irl.mmce_irl(game, feats, emp, T, jnp.zeros((M, N)), rho=0.5, num_steps=200, eps=1e-10)
    gap = emp - mge.expected_features(game, res.solution, feats)
    assert float(jnp.abs(gap).max()) < 1e-3
    assert float(res.gap[0]) > 0.1 and float(res.gap[-1]) < 1e-3
    for i in range(M):
        assert cosine(res.theta[i], theta_star[i]) > 0.95
    np.testing.assert_allclose(res.theta, theta_star, atol=1e-3)  # identifiable: N = 3 features
    np.testing.assert_allclose(res.solution.pi, sol.pi, atol=1e-3)


def test_recovery_when_agent_knows_its_own_reward(recovery):
    game, feats, theta_star, true_game, sol = recovery
    emp = mge.expected_features(game, sol, feats)
    # agent 0 (Alg. 4's i) knows R_0, which the true game carries; it infers theta_1 only
    res = irl.mmce_irl(true_game, feats, emp, T, jnp.zeros((M, N)), known_agent=0, rho=0.5,
                       num_steps=100, eps=1e-10)
    np.testing.assert_array_equal(res.theta[0], 0.0)  # never updated
    assert cosine(res.theta[1], theta_star[1]) > 0.95 and float(res.gap[-1]) < 1e-3
    np.testing.assert_allclose(res.solution.pi, sol.pi, atol=1e-3)


def test_recovery_from_sampled_demonstrations(recovery):
    game, feats, theta_star, _, sol = recovery
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    states, actions, _, _ = jax.vmap(lambda k: tabular.rollout(k, game, tabular.joint_policy(sol.pi))
                                     )(keys)
    emp = irl.empirical_features(states, actions, feats)
    res = irl.mmce_irl(game, feats, emp, T, jnp.zeros((M, N)), rho=0.5, num_steps=200, eps=1e-10)
    assert float(res.gap[-1]) < 1e-3  # the model matches the sampled feature sums
    for i in range(M):
        assert cosine(res.theta[i], theta_star[i]) > 0.95
    # total variation per visited state, weighted by the visit probability
    d = tabular.state_distributions(game, tabular.joint_policy(sol.pi))[:-1]
    tv = 0.5 * jnp.abs(res.solution.pi - sol.pi).sum(-1)  # [T, M, S]
    assert float(jnp.max(jnp.sum(d[:, None] * tv, -1) / jnp.sum(d, -1)[:, None])) < 0.02
    online = irl.online_mmce_irl(game, feats, states, actions, jnp.zeros((M, N)), rho=0.5,
                                 steps_per_time=50, eps=1e-10)
    assert online.gap.shape == (T * 50,) and float(online.gap[-1]) < 1e-3
    np.testing.assert_allclose(online.theta, res.theta, atol=1e-2)  # full prefix: same optimum


def test_bad_arguments(recovery):
    game, feats, *_ = recovery
    emp = jnp.zeros((M, N))
    with pytest.raises(ValueError, match="known_agent"):
        irl.mmce_irl(game, feats, emp, T, emp, known_agent=2)
    with pytest.raises(ValueError, match="theta0"):
        irl.mmce_irl(game, feats, emp, T, jnp.zeros((M, N + 1)))
    with pytest.raises(ValueError, match="features"):
        irl.mmce_irl(game, feats[:, :, :2], emp, T, emp)
    with pytest.raises(ValueError, match="rho"):
        irl.mmce_irl(game, feats, emp, T, emp, rho=0.0)
    with pytest.raises(ValueError, match="bound"):
        irl.mmce_irl(game, feats, emp, T, emp, bound=-1.0)
    with pytest.raises(ValueError, match="num_steps"):
        irl.mmce_irl(game, feats, emp, T, emp, num_steps=0)
