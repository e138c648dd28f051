"""MGE-FB and the occupancy-measure game (jaxmcg/mge_fb.py; mge.md §1.8, §5.6, §8.6, §9 #5):
reduction to independent Boltzmann DPs (numpy references written here), M = 1 against a
brute-force recursion and MGE-F, the §8.6 damping result, Theorem 3, rollouts and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmcg import mge, mge_fb, tabular

KEY = jax.random.PRNGKey(0)
DELTAS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]  # stay, up, down, left, right


def random_game(seed, m=3, n=6, a=3, mu=0.0):
    """Stochastic per-agent kernels, own-action rewards, final rewards, one masked action per
    agent and cell (never all), float64."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n) * 0.5, size=(m, n, a))
    mask = np.ones((m, n, a), bool)
    mask[np.arange(m)[:, None], np.arange(n)[None], rng.integers(0, a, (m, n))] = False
    reward = rng.normal(size=(m, n, a))
    final = rng.normal(size=(m, n))
    x0 = rng.integers(0, n, m)
    return mge_fb.make_occupancy_game(P, reward, x0, final, mu, mask, dtype=np.float64)


def boltzmann_dp(P, reward, final, mask, beta, horizon):
    """Single-agent finite-horizon Boltzmann-expectation DP (eq. 10 without interaction), numpy:
    `Q[T, N, A]`, `pi[T, N, A]`, `V[T + 1, N]`."""
    n, a = reward.shape
    Q, pi, V = np.zeros((horizon, n, a)), np.zeros((horizon, n, a)), np.zeros((horizon + 1, n))
    V[horizon] = final
    for t in range(horizon - 1, -1, -1):
        Q[t] = np.where(mask, reward + P @ V[t + 1], 0.0)
        logits = np.where(mask, beta * Q[t], -np.inf)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        pi[t] = e / e.sum(-1, keepdims=True)
        V[t] = (pi[t] * Q[t]).sum(-1)
    return Q, pi, V


def occupancies(P, pi, x0):
    """`occ[T + 1, N]` of one agent under `pi[T, N, A]` from cell `x0` (eq. 12), numpy."""
    horizon, n, _ = pi.shape
    occ = np.zeros((horizon + 1, n))
    occ[0, x0] = 1.0
    for t in range(horizon):
        occ[t + 1] = np.einsum("x,xa,xay->y", occ[t], pi[t], P)
    return occ


@pytest.mark.parametrize("damping", ["occupancy", "q"])
def test_no_interaction_equals_independent_dps(x64, damping):
    """mu = 0: every agent solves its own Boltzmann DP (mge.md §9 #5), with per-agent beta."""
    game = random_game(0)
    beta = np.array([0.5, 1.0, 2.0])
    horizon = 4
    sol = mge_fb.mge_fb(game, horizon, beta=beta, num_iters=80, eta=0.5, damping=damping)
    for i in range(game.num_agents):
        args = [np.asarray(f[i]) for f in (game.P, game.reward, game.final_reward, game.mask)]
        Q, pi, V = boltzmann_dp(*args, beta[i], horizon)
        np.testing.assert_allclose(sol.q[i], Q, atol=1e-10)
        np.testing.assert_allclose(sol.pi[i], pi, atol=1e-10)
        np.testing.assert_allclose(sol.value[i], V, atol=1e-10)
        occ = occupancies(args[0], pi, int(game.x0[i]))
        np.testing.assert_allclose(sol.occupancy[i], occ, atol=1e-10)
    np.testing.assert_allclose(np.asarray(sol.occupancy).sum(-1), 1.0, atol=1e-12)
    masked = ~np.broadcast_to(np.asarray(game.mask)[:, None], sol.pi.shape)
    assert np.all(np.asarray(sol.pi)[masked] == 0) and np.all(np.asarray(sol.q)[masked] == 0)
    assert bool(sol.converged)


def test_eps_stops_at_the_fixed_point(x64):
    """mu = 0, eta = 1: Q is exact after sweep 1, the occupancies after sweep 2 and nothing moves
    in sweep 3, where the eps rule stops; the rest of the trace is NaN."""
    game = random_game(1)
    sol = mge_fb.mge_fb(game, 3, num_iters=50, eta=1.0, eps=1e-12)
    res = np.asarray(sol.residual)
    assert int(sol.iterations) == 3 and bool(sol.converged)
    assert res[0] > 0.1 and res[1] > 1e-3 and res[2] == 0.0 and np.isnan(res[3:]).all()


def brute_force_value(P, reward, final, mask, beta, horizon, t, x):
    """`(Q^t(x, .), V^t(x))` by plain recursion over (time, cell): no arrays of values."""
    if t == horizon:
        return None, final[x]
    n, a = reward.shape
    q = np.zeros(a)
    for act in range(a):
        if mask[x, act]:
            cont = sum(P[x, act, y] * brute_force_value(P, reward, final, mask, beta, horizon,
                                                        t + 1, y)[1]
                       for y in range(n) if P[x, act, y] > 0)
            q[act] = reward[x, act] + cont
    w = np.where(mask[x], np.exp(beta * (q - q[mask[x]].max())), 0.0)
    return q, float(np.dot(w / w.sum(), q))


def test_single_agent_brute_force_and_mge_finite(x64):
    """M = 1 equals the brute-force Boltzmann-expectation recursion on the own-state MDP, and
    MGE-F (jaxmcg.mge) on that MDP as a tabular game (mge.md §9 #5)."""
    game = random_game(2, m=1, n=4, a=3)
    horizon, beta = 3, 1.5
    sol = mge_fb.mge_fb(game, horizon, beta=beta, num_iters=3, eta=1.0)
    args = [np.asarray(f[0]) for f in (game.P, game.reward, game.final_reward, game.mask)]
    for t in range(horizon):
        for x in range(4):
            q, v = brute_force_value(*args, beta, horizon, t, x)
            np.testing.assert_allclose(sol.q[0, t, x], q, atol=1e-10)
            np.testing.assert_allclose(sol.value[0, t, x], v, atol=1e-10)
    n, a = 4, 3
    tgame = tabular.make_game(
        np.broadcast_to(np.arange(n), (n, a, n)), args[0], args[1][None], args[2][None],
        args[3][None], num_agents=1, num_actions=a, dtype=np.float64)
    ref = mge.mge_finite(tgame, horizon, beta=beta, alpha=1.0, eps=1e-12)
    np.testing.assert_allclose(np.asarray(ref.q)[:, 0], sol.q[0], atol=1e-10)
    np.testing.assert_allclose(np.asarray(ref.pi)[:, 0], sol.pi[0], atol=1e-10)


# ---- mge.md §8.6: 5x5 grid, two agents swapping along the middle row ------------------------


def grid_kernel(rows, cols):
    """Deterministic 4-neighbour kernel `[N, 5, N]`; moves off the grid are masked (and stay)."""
    n = rows * cols
    P, mask = np.zeros((n, 5, n)), np.ones((n, 5), bool)
    for x in range(n):
        r, c = divmod(x, cols)
        for act, (dr, dc) in enumerate(DELTAS):
            inside = 0 <= r + dr < rows and 0 <= c + dc < cols
            P[x, act, (r + dr) * cols + c + dc if inside else x] = 1.0
            mask[x, act] = inside
    return P, mask


A_START, B_START = 10, 14  # (2, 0) and (2, 4)


def swap_game(scale, mu, dtype=np.float64):
    """Reconstruction of §8.6 [ours: the spec does not give the rewards]: R = 0 and
    R_F = `scale` at the other agent's start, moves off the grid masked."""
    P, mask = grid_kernel(5, 5)
    final = np.zeros((2, 25))
    final[0, B_START] = final[1, A_START] = scale
    return mge_fb.make_occupancy_game(P, np.zeros((2, 25, 5)), np.array([A_START, B_START]),
                                      final, mu, np.stack([mask, mask]), dtype=dtype)


def overlap(sol):
    occ = np.asarray(sol.occupancy)
    return float((occ[0] * occ[1]).sum())


def test_damping_needed_for_strong_interaction(x64):
    """Rewards x10, mu = 30, T = 8, K = 300 (mge.md §8.6): the paper's undamped sweep ends in a
    2-cycle (the iterates repeat with period 2, the residual stays large); eta = 0.5 converges
    to a solution where the agents pass each other, both modes of damping."""
    game = swap_game(10.0, 30.0)
    undamped = [mge_fb.mge_fb(game, 8, num_iters=k, eta=1.0) for k in (300, 301, 302)]
    res = np.asarray(undamped[0].residual)
    assert not bool(undamped[0].converged) and res[-50:].min() > 10.0
    np.testing.assert_allclose(undamped[2].q, undamped[0].q, atol=1e-8)  # period 2 ...
    assert np.abs(np.asarray(undamped[1].q) - np.asarray(undamped[0].q)).max() > 10.0  # ... not 1
    for damping in ("occupancy", "q"):
        sol = mge_fb.mge_fb(game, 8, num_iters=300, eta=0.5, damping=damping)
        assert bool(sol.converged) and float(sol.residual[-1]) < 1e-7, damping
        assert overlap(sol) < 0.01, damping  # spec: 0.004
        assert float(sol.occupancy[0, 8, B_START]) > 0.95, damping  # spec: 0.98


def bellman_gap(game, sol):
    """max |Qt - (R + Psi(occ) + E V')| of eq. 11 with the returned occupancies, numpy."""
    P, R, mask = (np.asarray(f) for f in (game.P, game.reward, game.mask))
    mu = np.asarray(game.mu) * (1 - np.eye(game.num_agents))
    occ, q, v = np.asarray(sol.occupancy), np.asarray(sol.q), np.asarray(sol.value)
    gap = 0.0
    for t in range(q.shape[1]):
        psi = -mu @ occ[:, t]  # [M, N]
        target = R + psi[..., None] + np.einsum("mxay,my->mxa", P, v[:, t + 1])
        gap = max(gap, np.abs(np.where(mask, target, 0.0) - q[:, t]).max())
    return gap


def test_fixed_point_satisfies_eq11(x64):
    """At convergence, Qt solves eq. 11 against the occupancies of its own policies."""
    game = swap_game(10.0, 30.0)
    sol = mge_fb.mge_fb(game, 8, num_iters=300, eta=0.5)
    assert bellman_gap(game, sol) < 1e-8


def test_interaction_is_directed(x64):
    """mu[i, j] is what i loses near j: with mu = [[0, 30], [0, 0]] agent 1 plays its own DP and
    agent 0 steers clear of it."""
    game = swap_game(10.0, [[0.0, 30.0], [0.0, 0.0]])
    sol = mge_fb.mge_fb(game, 8, num_iters=300, eta=0.5)
    args = [np.asarray(f[1]) for f in (game.P, game.reward, game.final_reward, game.mask)]
    Q, _, _ = boltzmann_dp(*args, 1.0, 8)
    np.testing.assert_allclose(sol.q[1], Q, atol=1e-10)
    Q0, _, _ = boltzmann_dp(*[np.asarray(f[0]) for f in (game.P, game.reward, game.final_reward,
                                                          game.mask)], 1.0, 8)
    free = mge_fb.mge_fb(swap_game(10.0, 0.0), 8, num_iters=2, eta=1.0)
    assert np.abs(np.asarray(sol.q[0]) - Q0).max() > 1.0
    assert overlap(sol) < 0.2 * overlap(free), (overlap(sol), overlap(free))


def test_weak_rewards_wander_nearly_uniformly(x64):
    """Rewards x1, mu = 3 (mge.md §8.6): converged at once for eta 1 and 0.5; beta R is small, so
    the agents wander: A rarely ends at its goal and its first move is nearly uniform."""
    game = swap_game(1.0, 3.0)
    for eta in (1.0, 0.5):
        sol = mge_fb.mge_fb(game, 8, num_iters=300, eta=eta)
        assert float(sol.residual[-1]) < 1e-10
        assert float(sol.occupancy[0, 8, B_START]) < 0.05  # spec: 0.024
        first = np.asarray(sol.pi[0, 0, A_START])
        assert first[3] == 0 and first.max() - first[first > 0].min() < 0.1  # left is masked


def test_theorem3_condition():
    """Hand-computed figures of 2LT <= xi exp(-beta (T+1) xi) (mge.md §1.5)."""
    game = mge_fb.make_occupancy_game(np.ones((1, 1, 1)), np.full((2, 1, 1), 0.001), [0, 0],
                                      np.zeros((2, 1)), [[5.0, 0.001], [0.0005, 5.0]])
    c = mge_fb.theorem3_condition(game, horizon=1, beta=1.0)
    xi = 2 * (0.001 + 0.001)  # (T + 1)(omega + phi), phi = L = max row sum off the diagonal
    assert c.L == pytest.approx(0.001) and c.xi == pytest.approx(xi)
    assert c.value == pytest.approx(0.002) and c.bound == pytest.approx(xi * np.exp(-2 * xi))
    assert c.holds
    assert not mge_fb.theorem3_condition(game, horizon=1, beta=200.0).holds
    swap = mge_fb.theorem3_condition(swap_game(10.0, 30.0, np.float32), horizon=8)
    assert swap.value == 480.0 and swap.xi == 360.0 and not swap.holds
    assert mge_fb.theorem3_condition(swap_game(1.0, 0.0, np.float32), 8).holds  # L = 0


def test_theorem3_regime_undamped_converges(x64):
    """Inside Theorem 3's condition the paper's undamped sweep converges."""
    game = random_game(3, m=2, n=4, a=2, mu=1e-3)
    game = game.replace(reward=game.reward * 1e-3, final_reward=game.final_reward * 1e-3)
    assert mge_fb.theorem3_condition(game, 2).holds
    sol = mge_fb.mge_fb(game, 2, num_iters=30, eta=1.0)
    assert float(sol.residual[-1]) < 1e-14


# ---- rollouts --------------------------------------------------------------------------------


def corridor_game():
    """One agent in the middle of 3 cells with the same final reward at both ends."""
    P = np.zeros((3, 3, 3))  # actions: stay, left, right
    for x in range(3):
        P[x, 0, x] = P[x, 1, max(x - 1, 0)] = P[x, 2, min(x + 1, 2)] = 1.0
    return mge_fb.make_occupancy_game(P[None], np.full((1, 3, 3), -0.1), [1], [[2.0, 0.0, 2.0]])


def test_greedy_breaks_ties_at_random():
    game = corridor_game()
    sol = mge_fb.mge_fb(game, 1, num_iters=2)
    assert float(sol.pi[0, 0, 1, 1]) == float(sol.pi[0, 0, 1, 2])
    keys = jax.random.split(KEY, 400)
    cells, acts, _ = jax.vmap(mge_fb.rollout, (0, None, None, None))(keys, game, sol.pi, True)
    left = float(np.mean(np.asarray(acts)[:, 0, 0] == 1))
    assert np.all(np.isin(np.asarray(acts)[:, 0, 0], [1, 2])) and 0.4 < left < 0.6


def test_sampled_returns_match_values(x64):
    """mu = 0: sampled episodes earn V^0(x0) on average (rewards and R_F at the right steps)."""
    game = random_game(4, m=2, n=5, a=3)
    sol = mge_fb.mge_fb(game, 4, num_iters=3, eta=1.0)
    keys = jax.random.split(KEY, 3000)
    _, _, rewards = jax.vmap(mge_fb.rollout, (0, None, None, None))(keys, game, sol.pi, False)
    ret = np.asarray(rewards).sum(1)  # [episodes, M]
    v0 = np.asarray(sol.value)[np.arange(2), 0, np.asarray(game.x0)]
    se = ret.std(0) / np.sqrt(len(ret))
    assert np.all(np.abs(ret.mean(0) - v0) < 4 * se + 1e-9), (ret.mean(0), v0, se)


def test_rollout_charges_co_location():
    """Two agents that can only stay on one cell lose mu_ij each step, per pair and direction."""
    stay = np.eye(2)[:, None, :]  # [N, A = 1, N]
    game = mge_fb.make_occupancy_game(stay, np.zeros((2, 2, 1)), [0, 0], None,
                                      [[9.0, 2.0], [5.0, 9.0]])  # the diagonal is ignored
    pi = jnp.ones((2, 3, 2, 1))
    cells, _, rewards = mge_fb.rollout(KEY, game, pi)
    np.testing.assert_array_equal(cells, 0)
    np.testing.assert_allclose(rewards, [[-2.0, -5.0]] * 3)


def test_vmap_over_beta_matches_single_solves():
    game = swap_game(1.0, 3.0, np.float32)
    betas = jnp.array([0.5, 2.0])
    batched = jax.vmap(lambda b: mge_fb.mge_fb(game, 4, beta=b, num_iters=20).q)(betas)
    for k, b in enumerate((0.5, 2.0)):
        np.testing.assert_allclose(batched[k], mge_fb.mge_fb(game, 4, beta=b, num_iters=20).q,
                                   atol=1e-5)


# ---- bad input -------------------------------------------------------------------------------


def test_builder_rejects_bad_games():
    P = np.ones((2, 1, 2)) / 2  # [N, A, N], N = 2, A = 1
    ok = dict(P=P, reward=np.zeros((1, 2, 1)), x0=[0])
    mge_fb.make_occupancy_game(**ok)
    with pytest.raises(ValueError, match="sums to 0.8"):
        mge_fb.make_occupancy_game(**{**ok, "P": P * 0.8})
    with pytest.raises(ValueError, match="no valid action in cell 1"):
        mge_fb.make_occupancy_game(**ok, mask=[[[True], [False]]])
    with pytest.raises(ValueError, match=r"outside the valid range 0\.\.1"):
        mge_fb.make_occupancy_game(**{**ok, "x0": [2]})
    with pytest.raises(ValueError, match="x0"):
        mge_fb.make_occupancy_game(**{**ok, "x0": [0, 1]})
    with pytest.raises(ValueError, match="mu"):
        mge_fb.make_occupancy_game(P, np.zeros((2, 2, 1)), [0, 1], mu=[[0, -1.0], [1.0, 0]])
    with pytest.raises(ValueError, match="P has shape"):
        mge_fb.make_occupancy_game(np.ones((3, 1, 3)) / 3, **{k: ok[k] for k in ("reward", "x0")})
    with pytest.raises(ValueError, match="not a probability"):
        mge_fb.make_occupancy_game(**{**ok, "P": np.array([[[1.5, -0.5]], [[0.5, 0.5]]])})
    with pytest.raises(ValueError, match="final_reward has non-finite"):
        mge_fb.make_occupancy_game(**ok, final_reward=[[np.inf, 0.0]])
    # a masked action's kernel is never used, so it may be left empty
    mask = np.array([[[True, False]] * 2])
    Pm = np.zeros((2, 2, 2))
    Pm[:, 0] = 0.5
    mge_fb.make_occupancy_game(Pm, np.zeros((1, 2, 2)), [0], mask=mask)


@pytest.mark.parametrize("kwargs, match", [
    ({"horizon": 0}, "horizon=0"),
    ({"num_iters": 0}, "num_iters=0"),
    ({"num_iters": 2.5}, "num_iters=2.5"),
    ({"eta": 0.0}, "eta=0.0"),
    ({"eta": 1.5}, "eta=1.5"),
    ({"beta": -1.0}, "beta=-1.0"),
    ({"beta": [1.0, 2.0, 3.0]}, "one per agent"),
    ({"eps": 0.0}, "eps=0.0"),
    ({"damping": "polyak"}, "valid: 'occupancy', 'q'"),
])
def test_solver_rejects_bad_arguments(kwargs, match):
    game = swap_game(1.0, 3.0, np.float32)
    args = {"horizon": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        mge_fb.mge_fb(game, **args)
