"""The replay buffer (FIFO, masked adds, sampling without replacement) and the QMIX mixer (§2.7)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmcg import replay
from jaxmcg.mixer import QMixer


def _buffer(capacity=5):
    return replay.init({"x": jnp.zeros(()), "y": jnp.zeros((2,), jnp.int32)}, capacity)


def test_add_is_fifo_and_skips_masked_rows():
    buf = _buffer(5)
    items = {"x": jnp.arange(4.0), "y": jnp.zeros((4, 2), jnp.int32)}
    buf = replay.add(buf, items, jnp.array([1, 0, 1, 1]))
    np.testing.assert_array_equal(buf.data["x"][:3], [0.0, 2.0, 3.0])
    assert int(buf.size) == 3 and int(buf.ptr) == 3
    buf = replay.add(buf, {"x": jnp.array([10.0, 11.0, 12.0]), "y": jnp.ones((3, 2), jnp.int32)})
    # the oldest slot (0.0) is overwritten by the third new row
    np.testing.assert_array_equal(buf.data["x"], [12.0, 2.0, 3.0, 10.0, 11.0])
    assert int(buf.size) == 5 and int(buf.ptr) == 1
    assert buf.data["y"].dtype == jnp.int32


def test_add_rejects_more_rows_than_capacity():
    with pytest.raises(ValueError, match="capacity 5"):
        replay.add(_buffer(5), {"x": jnp.zeros(6), "y": jnp.zeros((6, 2), jnp.int32)})
    with pytest.raises(ValueError, match="capacity=0"):
        replay.init(jnp.zeros(()), 0)


def test_sample_is_without_replacement_and_masks_a_short_buffer():
    buf = replay.add(_buffer(8), {"x": jnp.arange(3.0) + 1, "y": jnp.zeros((3, 2), jnp.int32)})
    items, mask = replay.sample(buf, jax.random.PRNGKey(0), 5)
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
    assert sorted(np.asarray(items["x"][:3]).tolist()) == [1.0, 2.0, 3.0]
    full = replay.add(_buffer(8), {"x": jnp.arange(8.0), "y": jnp.zeros((8, 2), jnp.int32)})
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    draws = jax.vmap(lambda k: replay.sample(full, k, 4)[0]["x"])(keys)
    assert all(len(set(row.tolist())) == 4 for row in np.asarray(draws))
    counts = np.bincount(np.asarray(draws, int).ravel(), minlength=8) / draws.size
    np.testing.assert_allclose(counts, 1 / 8, atol=0.01)  # uniform over slots


def test_masked_mean():
    x = jnp.array([[1.0, 3.0], [5.0, 7.0], [100.0, 100.0]])
    assert float(replay.masked_mean(x, jnp.array([1.0, 1.0, 0.0]))) == 4.0


def test_mixer_matches_the_formula_and_is_monotone():
    mixer = QMixer(num_agents=3, embed=4)
    q, c = jax.random.normal(jax.random.PRNGKey(0), (7, 3)), jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    params = mixer.init(jax.random.PRNGKey(2), q, c)["params"]
    assert all("bias" not in layer for layer in params.values())
    p = {k: np.asarray(v["kernel"], np.float64) for k, v in params.items()}
    qn, cn = np.asarray(q, np.float64), np.asarray(c, np.float64)
    expect = []
    for qi, ci in zip(qn, cn):
        w1 = np.abs(ci @ p["hyper_w1"]).reshape(3, 4)
        pre = qi @ w1 + ci @ p["hyper_b1"]
        h = np.where(pre > 0, pre, np.expm1(pre))
        b2 = np.maximum(ci @ p["hyper_b2a"], 0) @ p["hyper_b2b"]
        expect.append(h @ np.abs(ci @ p["hyper_w2"]) + b2[0])
    out = mixer.apply({"params": params}, q, c)
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-6)
    grads = jax.vmap(jax.grad(lambda qi, ci: mixer.apply({"params": params}, qi, ci)))(q, c)
    assert bool(jnp.all(grads >= 0))  # monotone in each agent's utility


def test_train_step_accounting_carries_the_remainder():
    from jaxmcg.offpolicy import run_train_steps, train_step_count
    remainder, taken = jnp.int32(0), 0
    for length in (37, 25, 8, 50):  # one step every 10 env steps, counted across episodes
        n, remainder = train_step_count(remainder, jnp.float32(length), 10)
        taken += int(n)
    assert taken == 12 and int(remainder) == 0
    calls, metrics = run_train_steps(lambda c, k: (c + 1, {"loss": c.astype(jnp.float32)}),
                                     jnp.int32(0), jax.random.PRNGKey(0), jnp.int32(3), 6)
    assert int(calls) == 3 and float(metrics["loss"]) == 1.0  # mean of 0, 1, 2 over the steps taken


def test_epsilon_greedy_rate():
    from jaxmcg.distributions import epsilon_greedy
    q = jnp.tile(jnp.array([0.0, 5.0, 1.0, 2.0]), (20000, 1))
    a = epsilon_greedy(jax.random.PRNGKey(0), q, 0.4)
    np.testing.assert_allclose(np.bincount(np.asarray(a), minlength=4) / 20000,
                               [0.1, 0.7, 0.1, 0.1], atol=0.015)
