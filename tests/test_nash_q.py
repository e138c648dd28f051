"""Nash-Q baseline (jaxmcg/nash_q.py): stage Nash equilibria and the grid games (mge.md §9 #12)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from jaxmcg import nash_q as NQ
from jaxmcg import tabular
from jaxmcg import tabular_learners as TL

KEY = jax.random.PRNGKey(0)


def bimatrix(a, b):
    return jnp.stack([jnp.asarray(a, jnp.float32).ravel(), jnp.asarray(b, jnp.float32).ravel()])


def regrets(q, x, y, mask=None):
    n = len(x)
    pa, pb = np.asarray(q[0]).reshape(n, n), np.asarray(q[1]).reshape(n, n)
    mask = np.ones((2, n), bool) if mask is None else np.asarray(mask)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return ((pa @ y)[mask[0]].max() - x @ pa @ y, (x @ pb)[mask[1]].max() - x @ pb @ y)


def test_matching_pennies():
    a = np.array([[1.0, -1.0], [-1.0, 1.0]])
    x, y = NQ.stage_nash(bimatrix(a, -a), 2)
    np.testing.assert_allclose(x, [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(y, [0.5, 0.5], atol=1e-6)


def test_prisoners_dilemma():
    a = np.array([[-1.0, -3.0], [0.0, -2.0]])  # actions (C, D)
    x, y = NQ.stage_nash(bimatrix(a, a.T), 2)
    np.testing.assert_allclose(x, [0, 1])
    np.testing.assert_allclose(y, [0, 1])


def test_battle_of_the_sexes_selection_rule():
    a, b = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])
    # two pure NEs of equal welfare 3 (and a mixed one): the first in joint-action order
    x, y = NQ.stage_nash(bimatrix(a, b), 2)
    np.testing.assert_allclose(x, [1, 0])
    np.testing.assert_allclose(y, [1, 0])
    # a pure NE of larger welfare wins over an earlier one
    x, y = NQ.stage_nash(bimatrix(a, b + np.array([[0.0, 0.0], [0.0, 1.0]])), 2)
    np.testing.assert_allclose(x, [0, 1])
    np.testing.assert_allclose(y, [0, 1])


def test_degenerate_all_ties():
    x, y = NQ.stage_nash(jnp.zeros((2, 9)), 3)
    np.testing.assert_allclose(x, [1, 0, 0])
    np.testing.assert_allclose(y, [1, 0, 0])


@pytest.mark.parametrize("seed", range(5))
def test_random_5x5_is_a_nash_equilibrium(seed):
    q = jax.random.normal(jax.random.PRNGKey(seed), (2, 25))
    x, y = jax.jit(NQ.stage_nash, static_argnums=1)(q, 5)
    for p in (x, y):
        assert np.all(np.asarray(p) >= 0) and abs(float(jnp.sum(p)) - 1) < 1e-6
    assert max(regrets(q, x, y)) <= 1e-5


def test_masks_respected_and_vmap():
    q = jax.random.normal(jax.random.PRNGKey(7), (8, 2, 25))
    masks = jax.random.bernoulli(jax.random.PRNGKey(8), 0.5, (8, 2, 5)).at[:, :, 2].set(True)
    xs, ys = jax.vmap(lambda qq, mk: NQ.stage_nash(qq, 5, mk))(q, masks)
    for n in range(8):
        assert np.all(np.asarray(xs[n])[~np.asarray(masks[n, 0])] == 0)
        assert np.all(np.asarray(ys[n])[~np.asarray(masks[n, 1])] == 0)
        assert max(regrets(q[n], xs[n], ys[n], masks[n])) <= 1e-5
    # a dominant action that is masked out is never played
    a = np.array([[0.0, 0.0], [5.0, 5.0]])
    x, _ = NQ.stage_nash(bimatrix(a, a.T), 2, jnp.array([[True, False], [True, True]]))
    np.testing.assert_allclose(x, [1, 0])


def test_config_and_agent_count_validation():
    with pytest.raises(ValueError):
        NQ.NashQConfig(gamma=1.0)
    with pytest.raises(ValueError):
        NQ.NashQConfig(num_iterations=0)
    with pytest.raises(ValueError):
        NQ.NashQConfig(lr_init=0.01, lr_final=0.1)
    three = tabular.make_game(np.zeros((1, 8), np.int32), None, np.zeros((3, 1)), num_agents=3,
                              num_actions=2)
    with pytest.raises(ValueError, match="2-player"):
        NQ.nash_q(KEY, three)
    with pytest.raises(ValueError):
        NQ.stage_nash(jnp.zeros((2, 5)), 2)


def grid(number):
    return jaxmcg.make(f"hw_grid{number}", termination="first")[1].game


def test_nash_q_grid_games():
    """mge.md §9 #12 with the default 500 sweeps (about 7 s on a CPU for both games)."""
    res1 = NQ.nash_q(KEY, grid(1))
    greedy = TL.evaluate(KEY, grid(1), res1.joint_policy, 20, 4000, greedy=True)
    np.testing.assert_allclose(greedy, [30.0, 30.0], atol=0.05)
    res2 = NQ.nash_q(KEY, grid(2))
    for greedy in (False, True):
        score = np.asarray(TL.evaluate(jax.random.PRNGKey(1), grid(2), res2.joint_policy, 20,
                                       8000, greedy=greedy))
        assert np.allclose(score, [1.0, 2.0], atol=0.05) or np.allclose(score, [2.0, 1.0],
                                                                         atol=0.05), score
    np.testing.assert_allclose(np.sum(res2.joint_policy, -1), 1.0, atol=1e-5)
    assert res2.delta.shape == (500,) and float(res2.delta[-1]) < 0.01
