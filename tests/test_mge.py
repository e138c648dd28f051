"""MGE-F / MMCE-F / MGE-I solvers (jaxmcg/mge.py, mge.md §9 items 1-4, 8): the kernels, the M = 1
reduction to Boltzmann and soft dynamic programming, normal-form logit QREs, the contraction regime
and its certificate, invariances, the numpy reference (benchmarks/mge_numpy.py), masking, vmap and
argument checks."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import mge_numpy as ref
from jaxmcg import mge, tabular

KEY = jax.random.PRNGKey(0)
# most tests share one game shape, horizon and fixed iteration count, so they share compilations
S, M, A, K, H, ITERS = 4, 2, 3, 2, 3, 200


def std_game(seed, scale=1.0, **kwargs):
    return ref.random_game(np.random.default_rng(seed), S, M, A, K, scale, **kwargs)


def one_shot(u):
    """A one-state, one-decision game with payoffs `u[M, A, ..., A]` (a normal-form game)."""
    m, a = u.shape[0], u.shape[1]
    return tabular.make_game(np.zeros((1, a ** m), int), None, u.reshape(m, 1, -1), num_agents=m,
                             num_actions=a, dtype=np.float64)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# kernels


def test_kernels(x64):
    mask = jnp.array([[True, False, True], [True, True, True]])
    q = jnp.array([[1.0, 50.0, 3.0], [0.0, 0.0, 0.0]])
    pi = mge.boltzmann(q, 2.0, mask)
    assert float(pi[0, 1]) == 0.0  # exactly, however large the masked Q
    np.testing.assert_allclose(pi[0], [1 / (1 + np.exp(4)), 0, 1 / (1 + np.exp(-4))], rtol=1e-12)
    np.testing.assert_allclose(pi[1], [1 / 3] * 3, rtol=1e-12)
    q_inf = q.at[0, 1].set(-jnp.inf)
    assert np.isfinite(mge.value_expect(q_inf, mge.boltzmann(q_inf, 2.0, mask), mask)).all()
    v = mge.value_lse(q, 2.0, mask)
    np.testing.assert_allclose(v[0], np.log(np.exp(2.0) + np.exp(6.0)) / 2, rtol=1e-12)
    # Remark 1: log-sum-exp = expectation + entropy / beta
    ent = -np.sum(np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1)), 0), -1)
    np.testing.assert_allclose(v, mge.value_expect(q, pi, mask) + ent / 2.0, rtol=1e-12)


def test_others_expectation_three_agents(x64):
    rng = np.random.default_rng(0)
    m, s, a = 3, 2, 3
    u = rng.normal(size=(s, a ** m))
    pis = softmax(rng.normal(size=(m, s, a)))
    acts = tabular.joint_actions(m, a)
    for i in range(m):
        want = np.zeros((s, a))
        for st, j in itertools.product(range(s), range(a ** m)):
            weight = np.prod([pis[k, st, acts[j, k]] for k in range(m) if k != i])
            want[st, acts[j, i]] += weight * u[st, j]
        np.testing.assert_allclose(mge.others_expectation(jnp.asarray(u), jnp.asarray(pis), i),
                                   want, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# M = 1 reduction (mge.md §9 #1)


def brute_force_dp(game, horizon, beta, value):
    """Single-agent Boltzmann (value="expect") or soft (value="lse") DP by explicit loops."""
    ns, pr = np.asarray(game.next_state), np.asarray(game.next_prob)
    r, rf, mask = np.asarray(game.reward)[0], np.asarray(game.final_reward)[0], \
        np.asarray(game.action_mask)[0]
    s, a, k = ns.shape
    v = rf.copy()
    qs, pis, vs = [], [], [v]
    for _ in range(horizon):
        q = np.zeros((s, a))
        for st, act in itertools.product(range(s), range(a)):
            if mask[st, act]:
                q[st, act] = r[st, act] + sum(pr[st, act, o] * v[ns[st, act, o]] for o in range(k))
        pi = softmax(np.where(mask, beta * q, -np.inf))
        if value == "expect":
            v = np.sum(pi * q, -1)
        else:
            v = np.log(np.sum(np.where(mask, np.exp(beta * q), 0), -1)) / beta
        qs.insert(0, q)
        pis.insert(0, pi)
        vs.insert(0, v)
    return np.array(qs), np.array(pis), np.array(vs)


@pytest.mark.parametrize("value", ["expect", "lse"])
def test_single_agent_reduction(x64, value):
    game = ref.random_game(np.random.default_rng(1), 6, 1, 4, 3, 2.0, mask_prob=0.3)
    sol = mge.mge_finite(game, 5, beta=1.5, eps=1e-13, value=value)
    q, pi, v = brute_force_dp(game, 5, 1.5, value)
    np.testing.assert_allclose(sol.q[:, 0], q, atol=1e-11)
    np.testing.assert_allclose(sol.pi[:, 0], pi, atol=1e-11)
    np.testing.assert_allclose(sol.value[:, 0], v, atol=1e-11)
    assert bool(sol.converged.all())
    if value == "lse":  # soft value iteration: V = E_pi Q + H(pi) / beta
        p = np.asarray(sol.pi[:, 0])
        ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)
        np.testing.assert_allclose(sol.value[:-1, 0], np.sum(p * q, -1) + ent / 1.5, atol=1e-11)


# --------------------------------------------------------------------------------------------
# normal-form logit QRE (mge.md §9 #2)


def test_matching_pennies_is_uniform_for_every_beta(x64):
    pennies = np.array([[1.0, -1.0], [-1.0, 1.0]])
    game = one_shot(np.stack([pennies, -pennies]))
    betas = jnp.array([0.5, 1.0, 2.0, 5.0, 10.0])
    q0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 1, 2)))  # off the equilibrium
    sols = jax.vmap(lambda b: mge.mge_finite(game, 1, beta=b, alpha=0.1, eps=1e-13, max_iter=5000,
                                             order="gs", q_init=q0))(betas)
    assert bool(sols.converged.all())
    np.testing.assert_allclose(sols.pi, 0.5, atol=1e-10)
    # undamped Jacobi from Q = 0 sits on it at once
    sol = mge.mge_finite(game, 1, beta=10.0, alpha=1.0, eps=1e-13)
    np.testing.assert_allclose(sol.pi, 0.5, atol=1e-12)


def test_coordination_game_small_beta_is_a_logit_qre(x64):
    coord = np.array([[2.0, 0.0], [0.0, 1.0]])
    u = np.stack([coord, coord.T])
    sol = mge.mge_finite(one_shot(u), 1, beta=0.5, eps=1e-14)
    p0, p1 = np.asarray(sol.pi[0, :, 0])
    np.testing.assert_allclose(p0, softmax(0.5 * coord @ p1), atol=1e-10)
    np.testing.assert_allclose(p1, softmax(0.5 * u[1].T @ p0), atol=1e-10)
    assert p0[0] > 0.5  # the (2, 2) outcome is the more likely one, not the uniform profile


def test_detect_multiplicity(x64):
    coord = np.array([[2.0, 0.0], [0.0, 1.0]])
    game = one_shot(np.stack([coord, coord]))
    small = mge.detect_multiplicity(KEY, game, game.final_reward, beta=0.5)
    assert small[0].shape == (1, 2, 2)  # unique at small beta
    large = mge.detect_multiplicity(KEY, game, game.final_reward, beta=10.0)[0]
    assert len(large) >= 2
    picks = sorted(int(np.argmax(p[0])) for p in large)
    assert picks[0] == 0 and picks[-1] == 1  # both near-pure coordination QREs
    for p in large:  # each is a fixed point pi_i = softmax(beta E_{pi_-i} u_i)
        np.testing.assert_allclose(p[0], softmax(10.0 * coord @ p[1]), atol=1e-8)


# --------------------------------------------------------------------------------------------
# contraction regime, certificate and uniqueness theorems (mge.md §1.5, §9 #3)


def test_contraction_regime(x64):
    horizon, beta = H, 1.0
    bound = 1 / (2 * beta * (2 - 1) * (1 + horizon))
    game = std_game(2, 0.95 * bound)
    assert mge.theorem2(game, horizon, beta)["holds"]
    base = mge.mge_finite(game, horizon, beta, alpha=1.0, eps=1e-13)
    assert bool(base.converged.all())
    cert = mge.certificate(game, base, beta)
    assert bool(cert["holds"].all()) and float(cert["value"].max()) < 1.0
    # empirical rate of undamped Jacobi: successive residual ratios <= L^tau < 1
    _, trace = mge.mge_finite_fixed(game, horizon, ITERS, beta, alpha=1.0)
    trace = np.asarray(trace)[:, :12]  # before round-off
    ratios = trace[:, 2:] / trace[:, 1:-1]
    assert (ratios <= np.asarray(cert["value"])[:, None] + 1e-9).all()
    rng = np.random.default_rng(3)
    for alpha, order in [(0.3, "jacobi"), (1.0, "gs"), (0.7, "gs")]:
        q0 = jnp.asarray(rng.uniform(-5, 5, (M, S, A)))  # initialisation does not matter either
        sol = mge.mge_finite(game, horizon, beta, alpha=alpha, eps=1e-13, order=order, q_init=q0)
        np.testing.assert_allclose(sol.pi, base.pi, atol=1e-8)
        np.testing.assert_allclose(sol.value, base.value, atol=1e-8)


def test_certificate_of_matching_pennies(x64):
    # osc over the opponent's action of +-1 payoffs is 2, so L = beta (M - 1) / 2 * 2 = beta
    pennies = np.array([[1.0, -1.0], [-1.0, 1.0]])
    game = one_shot(np.stack([pennies, -pennies]))
    sol = mge.mge_finite(game, 1, beta=0.7)
    np.testing.assert_allclose(mge.certificate(game, sol, 0.7)["value"], [0.7])
    assert not bool(mge.certificate(game, sol, 1.5)["holds"][0])
    # the oscillation runs over the opponent's valid actions only: here 4 unmasked, 0 masked
    u = np.stack([[[1.0, 5.0], [-1.0, -5.0]], np.zeros((2, 2))])
    sol = mge.mge_finite(one_shot(u), 1, beta=0.7)
    np.testing.assert_allclose(mge.certificate(one_shot(u), sol, 0.7)["value"], [0.7 / 2 * 4])
    masked = tabular.make_game(np.zeros((1, 4), int), None, u.reshape(2, 1, 4),
                               action_mask=[[[True, True]], [[True, False]]], num_agents=2,
                               num_actions=2, dtype=np.float64)
    sol = mge.mge_finite(masked, 1, beta=0.7)
    np.testing.assert_allclose(mge.certificate(masked, sol, 0.7)["value"], [0.0])


def test_theorem_bounds(x64):
    game = std_game(4)
    t1 = mge.theorem1(game, 0.9, 1.0)
    assert t1["bound"] == pytest.approx(0.01 / 3.6) and not t1["holds"]  # mge.md §1.5 table
    assert mge.theorem1(game.replace(reward=game.reward * 1e-3), 0.9, 1.0)["holds"]
    pursuit3 = ref.random_game(np.random.default_rng(4), 2, 3, 2, 1, 3.75)
    t2 = mge.theorem2(pursuit3, 3, 1.0)
    assert t2["bound"] == pytest.approx(1 / 16) and t2["value"] <= 3.75 and not t2["holds"]
    t3 = mge.theorem3(0.01, 0.1, 0.1, 2, 1.0)
    xi = 3 * 0.2
    assert t3["bound"] == pytest.approx(xi * np.exp(-3 * xi)) and t3["value"] == pytest.approx(0.04)
    assert t3["holds"] and not mge.theorem3(1.0, 0.1, 0.1, 2, 1.0)["holds"]


# --------------------------------------------------------------------------------------------
# invariances (mge.md §9 #4)


@pytest.mark.parametrize("value", ["expect", "lse"])
def test_temperature_reward_scale_invariance(x64, value):
    game = std_game(5, 3.0)
    c = 4.0
    scaled = game.replace(reward=game.reward / c, final_reward=game.final_reward / c)
    a = mge.mge_finite(game, H, beta=0.5, eps=1e-13, value=value)
    b = mge.mge_finite(scaled, H, beta=0.5 * c, eps=1e-13, value=value)
    assert bool(a.converged.all() & b.converged.all())
    np.testing.assert_allclose(b.pi, a.pi, atol=1e-9)
    np.testing.assert_allclose(b.value * c, a.value, atol=1e-9)


def test_symmetric_game_gives_symmetric_policies(x64):
    rng = np.random.default_rng(6)
    u0 = rng.uniform(-0.1, 0.1, (S, A, A))  # inside the contraction regime
    nxt = rng.integers(0, S, (S, A, A, K))
    nxt = np.minimum(nxt, nxt.transpose(0, 2, 1, 3))  # swapping the agents' actions: same outcomes
    final = rng.uniform(-0.1, 0.1, S)
    game = tabular.make_game(nxt.reshape(S, -1, K), np.full((S, A * A, K), 1 / K),
                             np.stack([u0, u0.transpose(0, 2, 1)]).reshape(2, S, -1),
                             np.stack([final, final]), num_agents=2, num_actions=A,
                             dtype=np.float64)
    q0 = jnp.asarray(rng.uniform(-1, 1, (M, S, A)))  # an asymmetric start
    sol = mge.mge_finite(game, H, beta=1.0, eps=1e-13, q_init=q0)
    np.testing.assert_allclose(sol.pi[:, 0], sol.pi[:, 1], atol=1e-10)
    assert np.abs(np.asarray(sol.pi[0, 0]) - 1 / 3).max() > 1e-3  # not trivially uniform


# --------------------------------------------------------------------------------------------
# numpy reference, MGE-I, masking, vmap


@pytest.mark.parametrize("m, mask_prob, value, order", [
    (2, 0.0, "expect", "jacobi"),
    (3, 0.3, "lse", "gs"),
])
def test_matches_numpy_reference(x64, m, mask_prob, value, order):
    game = ref.random_game(np.random.default_rng(7), S, m, A, K, 1.0, mask_prob=mask_prob)
    sol = mge.mge_finite(game, H, beta=1.3, alpha=0.6, eps=1e-11, value=value, order=order)
    want = ref.mge_finite(game, H, 1.3, 0.6, 1e-11, value=value, order=order)
    np.testing.assert_array_equal(sol.iterations, want["iterations"])
    for name in ("q", "pi", "value"):
        np.testing.assert_allclose(getattr(sol, name), want[name], atol=1e-11)


def test_mge_infinite_matches_numpy_reference(x64):
    game = std_game(8, mask_prob=0.2)
    game = game.replace(absorbing=jnp.array([False, False, False, True]))
    sol = mge.mge_infinite(game, 0.8, beta=1.0, alpha=0.5, eps=1e-11)
    want = ref.mge_infinite(game, 0.8, 1.0, 0.5, 1e-11)
    assert bool(sol.converged) and int(sol.iterations) == want["iterations"]
    np.testing.assert_allclose(sol.q, want["q"], atol=1e-10)
    np.testing.assert_allclose(sol.pi, want["pi"], atol=1e-10)
    assert float(jnp.abs(sol.value[:, 3]).max()) == 0.0
    # the fixed point satisfies eq. 3-4 with the same tolerance
    dense, r = ref.game_arrays(game)[:2]
    u = r + 0.8 * np.einsum("sjt,mt->msj", dense, np.asarray(sol.value))
    pis = np.asarray(sol.pi)
    mask = np.asarray(game.action_mask)
    q_check = np.where(mask, np.stack([ref.others_expectation(u[i], pis, i) for i in range(2)]), 0)
    np.testing.assert_allclose(sol.q, q_check, atol=1e-9)


def test_finite_fixed_iterations_and_trace(x64):
    game = std_game(9)
    sol = mge.mge_finite(game, H, alpha=0.5, eps=1e-12)
    fixed, trace = mge.mge_finite_fixed(game, H, ITERS, alpha=0.5, eps=1e-12)
    assert trace.shape == (H, ITERS) and bool(fixed.converged.all())
    np.testing.assert_allclose(fixed.pi, sol.pi, atol=1e-11)
    # the first residual of the first backward stage (tau = T - 1) is alpha max |U(0)|: from
    # Q = 0 the policies are uniform and U_i is agent i's payoff averaged over the other's action
    u = np.asarray(mge.stage_payoff(game, game.final_reward)).reshape(M, S, A, A)
    first = max(np.abs(u[0].mean(2)).max(), np.abs(u[1].mean(1)).max())
    np.testing.assert_allclose(trace[-1, 0], 0.5 * first, rtol=1e-12)
    assert trace[-1, 100] < 1e-6 * trace[-1, 0]


@pytest.mark.parametrize("value", ["expect", "lse"])
def test_masked_actions_no_nan_forward_and_gradient(x64, value):
    game = std_game(10, mask_prob=0.5)
    assert not bool(game.action_mask.all())
    sol = mge.mge_finite(game, H, value=value, eps=1e-10)
    assert all(np.isfinite(np.asarray(x)).all() for x in (sol.q, sol.pi, sol.value))
    assert float(jnp.where(game.action_mask, 0.0, sol.pi).max()) == 0.0

    def loss(reward, beta):
        s, _ = mge.mge_finite_fixed(game.replace(reward=reward), H, ITERS, beta, value=value)
        return jnp.sum(s.value[0] * game.init_dist) + jnp.sum(s.pi ** 2)

    g_r, g_b = jax.grad(loss, argnums=(0, 1))(game.reward, 1.0)
    assert np.isfinite(np.asarray(g_r)).all() and np.isfinite(float(g_b))
    assert float(jnp.abs(g_r).max()) > 0


def test_vmap_over_beta_and_games(x64):
    games = [std_game(11 + k) for k in range(3)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *games)
    batch = jax.vmap(lambda g: mge.mge_finite(g, H, eps=1e-12))(stacked)
    for k, g in enumerate(games):
        np.testing.assert_allclose(batch.pi[k], mge.mge_finite(g, H, eps=1e-12).pi, atol=1e-12)
    betas = [0.3, 1.0, 3.0]
    by_beta = jax.vmap(lambda b: mge.mge_finite(games[0], H, beta=b, eps=1e-12))(jnp.array(betas))
    for k, b in enumerate(betas):
        np.testing.assert_allclose(by_beta.pi[k], mge.mge_finite(games[0], H, beta=b, eps=1e-12).pi,
                                   atol=1e-12)


def test_expected_features_by_enumeration(x64):
    rng = np.random.default_rng(14)
    game = std_game(14)
    feats = rng.normal(size=(M, S, A, 2))
    sol = mge.mge_finite(game, H, eps=1e-12)
    pi, dense = np.asarray(sol.pi), ref.game_arrays(game)[0]
    acts = tabular.joint_actions(M, A)
    # joint[t, x, j]: probability of joint action j in state x at time t
    joint = np.stack([np.einsum("xa,xb->xab", pi[t, 0], pi[t, 1]).reshape(S, -1) for t in range(H)])
    want = np.zeros((M, 2))
    # enumerate every path (x0, j0, x1, j1, x2, j2) of the three decisions
    for path in itertools.product(range(S), range(A * A), repeat=H):
        xs, js = path[0::2], path[1::2]
        p = np.asarray(game.init_dist)[xs[0]]
        for t in range(H):
            p *= joint[t, xs[t], js[t]] * (dense[xs[t], js[t], xs[t + 1]] if t < H - 1 else 1.0)
        for i in range(M):
            want[i] += p * sum(feats[i, xs[t], acts[js[t], i]] for t in range(H))
    np.testing.assert_allclose(mge.expected_features(game, sol, jnp.asarray(feats)), want, atol=1e-12)
    joint = tabular.joint_policy(sol.pi)  # a joint policy gives the same
    np.testing.assert_allclose(mge.expected_features(game, joint, jnp.asarray(feats)), want, atol=1e-12)


# --------------------------------------------------------------------------------------------
# argument checks


GAME = ref.random_game(np.random.default_rng(13), 2, 2, 2, 1, 1.0, dtype=np.float32)


@pytest.mark.parametrize("kwargs, word", [
    ({"beta": 0.0}, "beta"), ({"beta": -1.0}, "beta"), ({"beta": np.inf}, "beta"),
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"eps": 0.0}, "eps"),
    ({"max_iter": 0}, "max_iter"), ({"max_iter": 2.5}, "max_iter"), ({"horizon": 0}, "horizon"),
    ({"horizon": 2.0}, "horizon"), ({"value": "max"}, "value"), ({"order": "random"}, "order"),
])
def test_bad_arguments_raise_before_compiling(kwargs, word):
    args = {"horizon": 2, **kwargs}
    with pytest.raises(ValueError, match=word):
        mge.mge_finite(GAME, **args)


def test_bad_arguments_mge_infinite():
    for gamma in (1.0, -0.1):
        with pytest.raises(ValueError, match="gamma"):
            mge.mge_infinite(GAME, gamma)
    with pytest.raises(ValueError, match="alpha"):
        mge.mge_infinite(GAME, 0.9, alpha=0.0)
    with pytest.raises(ValueError, match="TabularGame"):
        mge.mge_finite({"reward": 1}, 2)
    with pytest.raises(ValueError, match="num_iters"):
        mge.mge_finite_fixed(GAME, 2, 0)
