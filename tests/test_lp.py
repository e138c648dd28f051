"""The batched LP solver and the correlated-equilibrium LP (jaxmcg/lp.py, mge.md §3): against
scipy's HiGHS on random feasible LPs and random games, and on CE LPs with known answers (Aumann's
chicken, a prisoner's dilemma's unique pure NE, a game whose utilitarian optima form a segment)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from jaxmcg import lp, tabular

# 2x2 games, q[agent, joint action], joint index 2 a_0 + a_1
CHICKEN = np.array([[6, 2, 7, 0], [6, 7, 2, 0]], float)  # Aumann 1974: 0 = chicken, 1 = dare
PD = np.array([[3, 0, 5, 1], [3, 5, 0, 1]], float)  # 0 = cooperate, 1 = defect
# GG2's start state in small: action 0 "centre", 1 "barrier"; both centre collide. The two pure NEs
# (centre, barrier) and (barrier, centre) and all their mixtures are utilitarian CEs (welfare 3)
BARRIER = np.array([[-1, 2, 1, 0.5], [-1, 1, 2, 0.5]], float)
GAMES = np.stack([CHICKEN, PD, BARRIER])


def random_lps(rng, batch, n=12, m=20):
    """Feasible (a point of the simplex satisfies them) and bounded (x >= 0, sum x = 1) LPs."""
    x0 = rng.dirichlet(np.ones(n), batch)
    g = rng.normal(size=(batch, m, n))
    h = np.einsum("bmn,bn->bm", g, x0) + rng.uniform(0, 1, (batch, m))
    c = rng.normal(size=(batch, n))
    G = np.concatenate([g, np.broadcast_to(-np.eye(n), (batch, n, n))], 1)
    H = np.concatenate([h, np.zeros((batch, n))], 1)
    return c, G, H, np.ones((batch, 1, n)), np.ones((batch, 1))


@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 1e-7)])  # float32: the CE tests below
def test_solve_lp_matches_highs_on_random_lps(dtype, tol, x64):
    rng = np.random.default_rng(0)
    c, G, h, A, b = random_lps(rng, 40)
    sol = jax.jit(jax.vmap(lp.solve_lp))(*(jnp.asarray(v, dtype) for v in (c, G, h, A, b)))
    assert sol.x.dtype == dtype
    for k in range(len(c)):
        ref = linprog(c[k], A_ub=G[k], b_ub=h[k], A_eq=A[k], b_eq=b[k], bounds=(None, None),
                      method="highs")
        x = np.asarray(sol.x[k], np.float64)
        assert abs(c[k] @ x - ref.fun) < tol * (1 + abs(ref.fun)), k
        assert np.max(G[k] @ x - h[k]) < tol and abs(x.sum() - 1) < tol
    if dtype == jnp.float64:
        assert bool(jnp.all(sol.converged)) and int(jnp.max(sol.iterations)) <= 30


def test_solve_lp_without_equalities_box(x64):
    # min c.x on the box 0 <= x <= 1: x_k = 1 exactly where c_k < 0
    c = jnp.array([-1.0, 2.0, -0.5, 3.0])
    G = jnp.concatenate([jnp.eye(4), -jnp.eye(4)])
    h = jnp.concatenate([jnp.ones(4), jnp.zeros(4)])
    sol = lp.solve_lp(c, G, h)
    np.testing.assert_allclose(sol.x, [1, 0, 1, 0], atol=1e-8)
    assert bool(sol.converged) and abs(float(sol.objective) + 1.5) < 1e-8


def test_rationality_constraints_by_hand():
    g = np.asarray(lp.rationality_constraints(jnp.asarray(CHICKEN), 2))
    # agent 0 told chicken (0) deviating to dare: sum_b sigma(0, b) (q0(1, b) - q0(0, b))
    expected = [[7 - 6, 0 - 2, 0, 0],  # agent 0: 0 -> 1 (rows over a_1 = 0, 1)
                [0, 0, 6 - 7, 2 - 0],  # agent 0: 1 -> 0
                [7 - 6, 0, 0 - 2, 0],  # agent 1: 0 -> 1
                [0, 6 - 7, 0, 2 - 0]]  # agent 1: 1 -> 0
    np.testing.assert_allclose(g, expected)
    # three agents, three actions: one row per agent and ordered pair of distinct actions
    q = jnp.asarray(np.random.default_rng(1).normal(size=(3, 27)))
    assert lp.rationality_constraints(q, 3).shape == (3 * 3 * 2, 27)


def reference_ce(q, num_actions, objective):
    """scipy HiGHS value of the CE LP built independently of lp.py, from the CE definition."""
    m, j = q.shape
    acts = tabular.joint_actions(m, num_actions)
    rows = []
    for i, a, a2 in itertools.product(range(m), range(num_actions), range(num_actions)):
        if a == a2:
            continue
        row = np.zeros(j)
        for k, act in enumerate(acts):
            if act[i] == a:
                dev = act.copy()
                dev[i] = a2
                row[k] = q[i, np.ravel_multi_index(dev, (num_actions,) * m)] - q[i, k]
        rows.append(row)
    g = np.array(rows)
    if objective == "egalitarian":
        a_ub = np.concatenate([np.pad(g, ((0, 0), (0, 1))), np.concatenate([-q, np.ones((m, 1))], 1)])
        c = np.zeros(j + 1)
        c[-1] = -1
        res = linprog(c, A_ub=a_ub, b_ub=np.zeros(len(a_ub)), A_eq=np.pad(np.ones((1, j)), ((0, 0), (0, 1))),
                      b_eq=[1], bounds=[(0, None)] * j + [(None, None)], method="highs")
    else:
        w = q.sum(0) if objective == "utilitarian" else q[int(objective[-1])]
        res = linprog(-w, A_ub=g, b_ub=np.zeros(len(g)), A_eq=np.ones((1, j)), b_eq=[1],
                      bounds=(0, None), method="highs")
    return -res.fun, g


def objective_value(q, sigma, objective):
    v = q @ sigma
    if objective == "utilitarian":
        return v.sum()
    return v.min() if objective == "egalitarian" else v[int(objective[-1])]


def _weighted(num_actions):
    """One compiled solver for a batch of (q, weights, mask, tie_break): few compiles keep the
    file fast; `weights` rows: (1, ..., 1) utilitarian, e_i libertarian_i."""
    return jax.jit(jax.vmap(lambda q, w, mk, tb: lp.weighted_correlated_equilibrium(
        q, num_actions, w, mk, tie_break=tb)))


def _egalitarian(num_actions):
    return jax.jit(jax.vmap(lambda q, mk, tb: lp.correlated_equilibrium(
        q, num_actions, "egalitarian", mk, tie_break=tb)))


WEIGHTS = {"utilitarian": [1.0, 1.0], "libertarian_0": [1.0, 0.0], "libertarian_1": [0.0, 1.0]}
ALL = np.ones((2, 2), bool)


def solve_small(games, objective, tie_break, masks=None, dtype=jnp.float64):
    """CEs of 2x2 games `games[B, 2, 4]` for a named objective, through the shared compiles."""
    b = len(games)
    masks = np.broadcast_to(ALL, (b, 2, 2)) if masks is None else masks
    tb = jnp.full(b, tie_break, dtype)
    if objective == "egalitarian":
        return np.asarray(EGALITARIAN_2(jnp.asarray(games, dtype), jnp.asarray(masks), tb))
    w = jnp.asarray(np.broadcast_to(WEIGHTS[objective], (b, 2)), dtype)
    return np.asarray(WEIGHTED_2(jnp.asarray(games, dtype), w, jnp.asarray(masks), tb))


WEIGHTED_2, EGALITARIAN_2 = _weighted(2), _egalitarian(2)


@pytest.mark.parametrize("m, a, dtype, tol, objectives", [
    (2, 5, jnp.float64, 1e-7, ["utilitarian", "libertarian_0", "libertarian_1"]),
    (2, 2, jnp.float64, 1e-7, ["egalitarian"]),
    (3, 2, jnp.float32, 2e-4, ["utilitarian", "libertarian_0", "libertarian_2"]),
])
def test_ce_matches_highs_on_random_games(m, a, dtype, tol, objectives, x64):
    rng = np.random.default_rng(m * 10 + a)
    # integer payoffs make ties, degenerate vertices and CE polytopes without interior common
    qs = rng.integers(-3, 4, size=(12, m, a ** m)) * rng.choice([0.01, 1.0, 30.0], (12, 1, 1))
    b = len(qs)
    masks = jnp.ones((b, m, a), bool)
    tb = jnp.full(b, 1e-4, dtype)
    if objectives == ["egalitarian"]:  # 2x2 games: shares the compile of EGALITARIAN_2
        sigmas = {"egalitarian": EGALITARIAN_2(jnp.asarray(qs, dtype), masks, tb)}
    else:  # every objective in one batch, one compile
        w = np.stack([np.ones(m) if o == "utilitarian" else np.eye(m)[int(o[-1])]
                      for o in objectives])
        solve = _weighted(a)
        out = solve(jnp.asarray(np.repeat(qs, len(w), 0), dtype),
                    jnp.asarray(np.tile(w, (b, 1)), dtype), jnp.repeat(masks, len(w), 0),
                    jnp.repeat(tb, len(w)))
        sigmas = {o: out[k::len(w)] for k, o in enumerate(objectives)}
    for objective, sig in sigmas.items():
        for q, sigma in zip(qs, np.asarray(sig, np.float64)):
            best, g = reference_ce(q, a, objective)
            scale = np.abs(q).max()
            assert abs(sigma.sum() - 1) < 1e-5 and sigma.min() >= 0
            assert np.max(g @ sigma) < tol * scale, objective  # a correlated equilibrium
            # optimal up to the tie-break (1e-4 of the payoff scale, at most)
            assert objective_value(q, sigma, objective) > best - (1.1e-4 + tol) * scale, objective


def test_known_equilibria_of_small_games(x64):
    chicken, pd, barrier = solve_small(GAMES, "utilitarian", 0.0)
    # Aumann's chicken: the unique welfare-maximising CE, welfare 10.5
    np.testing.assert_allclose(chicken, [0.5, 0.25, 0.25, 0.0], atol=1e-7)
    np.testing.assert_allclose(pd, [0, 0, 0, 1], atol=1e-7)  # the unique NE (defect, defect)
    # without a tie-break the interior-point method returns the centre of the optimal segment
    np.testing.assert_allclose(barrier, [0, 0.5, 0.5, 0], atol=1e-6)
    for objective in ("libertarian_0", "libertarian_1", "egalitarian"):
        np.testing.assert_allclose(solve_small(GAMES, objective, 1e-4)[1], [0, 0, 0, 1], atol=1e-6)
    # each agent's own best CE: the pure NE where it dares / takes the centre
    np.testing.assert_allclose(solve_small(GAMES, "libertarian_0", 1e-4)[[0, 2]],
                               [[0, 0, 1, 0], [0, 1, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(solve_small(GAMES, "libertarian_1", 1e-4)[[0, 2]],
                               [[0, 1, 0, 0], [0, 0, 1, 0]], atol=1e-6)
    # egalitarian: only the even split of the two pure NEs gives both 1.5
    np.testing.assert_allclose(solve_small(GAMES, "egalitarian", 0.0)[2], [0, 0.5, 0.5, 0],
                               atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_tie_break_returns_a_vertex(dtype, x64):
    sigma = solve_small(BARRIER[None], "utilitarian", 1e-4, dtype=dtype)[0]
    assert sigma.max() > 0.99  # one pure NE, not the segment's centre (0.5, 0.5)
    weights = lp.tie_break_weights(4)
    assert np.argmax(sigma) == 1 + np.argmax(weights[1:3])  # the one the tie-break prefers


def test_named_objectives_match_weights(x64):
    # the string API (its own compile, so only one) agrees with the weighted one
    named = jax.vmap(lambda q: lp.correlated_equilibrium(q, 2, "libertarian_1"))(jnp.asarray(GAMES))
    np.testing.assert_allclose(named, solve_small(GAMES, "libertarian_1", 1e-4), atol=1e-6)


def test_mask_removes_actions(x64):
    # agent 0 may only cooperate in the PD: agent 1's best reply is to defect
    mask = np.array([[True, False], [True, True]])[None]
    for objective in ("utilitarian", "libertarian_0", "egalitarian"):
        sigma = solve_small(PD[None], objective, 1e-4, mask)[0]
        np.testing.assert_allclose(sigma, [0, 1, 0, 0], atol=1e-6)
    # in chicken, masking agent 1's "dare" leaves agent 0 free to dare: (dare, chicken)
    mask = np.array([[True, True], [True, False]])[None]
    sigma = solve_small(CHICKEN[None], "utilitarian", 1e-4, mask)[0]
    np.testing.assert_allclose(sigma, [0, 0, 1, 0], atol=1e-6)


def test_zero_and_constant_payoffs_give_a_distribution(x64):
    games = np.stack([np.zeros((2, 4)), np.full((2, 4), 3.0), np.array([[1, 1, 0, 0]] * 2, float)])
    for objective in ("libertarian_1", "egalitarian"):
        sigma = solve_small(games, objective, 1e-4)
        assert np.all(np.isfinite(sigma)) and np.allclose(sigma.sum(1), 1) and sigma.min() >= 0
    # the last game: agent 0's action 0 is dominant for both (payoff 1 vs 0)
    np.testing.assert_allclose(sigma[2, 2:], 0, atol=1e-6)


def test_invalid_input_raises():
    q = jnp.zeros((2, 4))
    for objective in ("libertarian_2", "libertarian", "nash", "libertarian_x"):
        with pytest.raises(ValueError, match="objective"):
            lp.correlated_equilibrium(q, 2, objective)
    with pytest.raises(ValueError, match="joint actions"):
        lp.correlated_equilibrium(jnp.zeros((2, 5)), 2)
    with pytest.raises(ValueError, match=r"\[M, J\]"):
        lp.correlated_equilibrium(jnp.zeros((3, 2, 4)), 2)
    with pytest.raises(ValueError, match="mask"):
        lp.correlated_equilibrium(q, 2, mask=jnp.ones((2, 3), bool))
    with pytest.raises(ValueError, match="tie_break"):
        lp.correlated_equilibrium(q, 2, tie_break=-1.0)
    with pytest.raises(ValueError, match="weights"):
        lp.weighted_correlated_equilibrium(q, 2, jnp.ones(3))
    with pytest.raises(ValueError, match="G has shape"):
        lp.solve_lp(jnp.zeros(3), jnp.zeros((4, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match="max_iter"):
        lp.solve_lp(jnp.zeros(2), jnp.eye(2), jnp.ones(2), max_iter=0)
