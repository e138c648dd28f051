"""jaxmcg.networks.LSTM, TF1's LSTMCell shared by HSD's skill decoder and the GTB critics: the cell's
equations, a step from a sequence's carry, and truncated backpropagation."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxmcg.networks import LSTM


def test_lstm_cell_is_tf_lstmcell_with_forget_bias():
    """The sequence's outputs against TF1 LSTMCell's equations written in numpy: gates (i, j, f, o)
    from one kernel on [x, h], c = sigma(f + 1) c + sigma(i) tanh(j), h = sigma(o) tanh(c)."""
    lstm = LSTM(5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    w = np.asarray(jax.jit(lstm.init)(jax.random.PRNGKey(1), x)["params"]["kernel"])
    assert w.shape == (4 + 5, 4 * 5)
    bias = rng.normal(size=20).astype(np.float32)
    cs, hs = jax.jit(lstm.apply)({"params": {"kernel": w, "bias": bias}}, x)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = h = np.zeros((2, 5))
    for t in range(3):
        i, j, f, o = np.split(np.concatenate([x[:, t], h], 1) @ w + bias, 4, 1)
        c = sig(f + 1.0) * c + sig(i) * np.tanh(j)
        h = sig(o) * np.tanh(c)
        np.testing.assert_allclose(np.asarray(hs[:, t]), h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(cs[:, t]), c, rtol=1e-5, atol=1e-6)


def test_step_continues_the_sequence_and_truncation_cuts_only_gradients():
    """A step from the carry after step t equals the sequence's step t + 1; with `truncation` 3 over 5
    steps the outputs are the same, the last output's gradient with respect to the first three
    inputs is exactly 0 (cut at t = 3), and the gradient with respect to the last chunk's inputs is
    unchanged."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    params = LSTM(6).init(jax.random.PRNGKey(0), x)
    cs, hs = LSTM(6).apply(params, x)
    c, h = LSTM(6).apply(params, x[:, 3], (cs[:, 2], hs[:, 2]), step=True)
    np.testing.assert_allclose(np.asarray(h), np.asarray(hs[:, 3]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c), np.asarray(cs[:, 3]), rtol=1e-5, atol=1e-6)
    _, cut_hs = LSTM(6, truncation=3).apply(params, x)
    np.testing.assert_allclose(np.asarray(cut_hs), np.asarray(hs), rtol=1e-6)

    def grad(truncation):
        return np.asarray(jax.grad(lambda x: jnp.sum(
            LSTM(6, truncation=truncation).apply(params, x)[1][:, -1]))(x))

    full, cut = grad(0), grad(3)
    assert np.all(cut[:, :3] == 0.0) and np.all(np.abs(full[:, :3]) > 0)
    np.testing.assert_allclose(cut[:, 3:], full[:, 3:], rtol=1e-5, atol=1e-7)
