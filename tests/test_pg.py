"""Independent PG: gradient check and the thesis' failure on Escape Room."""
import jax
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64
from seeds import train_seeds

import jaxmcg
from jaxmcg import critic as C
from jaxmcg.algos import pg
from jaxmcg.policy import reinforce_terms
from jaxmcg.rollout import episode_rollout
from jaxmcg.train import TrainConfig, make_train


def test_pg_gradient_matches_finite_differences(x64):
    env, params = jaxmcg.make("escape_room")
    state = f64(pg.init(jax.random.PRNGKey(0), env, params, pg.Config()))
    act = lambda o, k: pg.act(state, o, k)
    batch = f64(jax.jit(lambda k: episode_rollout(env, params, act, k, 8, 5))(jax.random.PRNGKey(1)))
    assert_grad_matches_fd(lambda p: pg.policy_loss(p, state, batch, batch.reward), state.params,
                           jax.random.PRNGKey(2), h=1e-4, scale=0.01)


def test_pg_fails_on_er_2_1():
    """Thesis Fig 5.5: independent PG stays at start or goes greedily to the door; with a learning
    rate at which it converges (1e-2 at 256 episodes per update) the median ends <= 0."""
    env, params = jaxmcg.make("escape_room")
    train = make_train(pg, env, params, pg.Config(lr=1e-2),
                       TrainConfig(n_envs=256, iterations=1000, log_every=50, eval_envs=1024))
    _, m = train_seeds(train, 5)
    final = m["collective_return"][:, -3:].mean(axis=1)
    assert np.median(final) <= 0.0, final


def _tyb_batch(config, seed=1):
    env, params = jaxmcg.make("trust_your_brother", attacked_prey=-2)
    state = pg.init(jax.random.PRNGKey(0), env, params, config)
    act = lambda o, k: pg.act(state, o, k)
    batch = jax.jit(lambda k: episode_rollout(env, params, act, k, 10, 5))(jax.random.PRNGKey(seed))
    return env, params, state, batch


def test_linear_baseline_and_bias_free_policy():
    """D3C's TYB learner (App. G L1098): a bias-free linear softmax, and a linear V_i(o) = w.o + b
    that starts at 0, is subtracted from G_t and takes one TD(0) SGD step per batch, by hand here."""
    cfg = pg.Config(hidden=(), output_bias=False, baseline="linear", lr_baseline=0.1, gamma=1.0,
                    eps_start=0.0, eps_end=0.0, entropy_coef=0.0)
    env, params, state, batch = _tyb_batch(cfg)
    assert jax.tree_util.tree_map(np.shape, state.params) == {"Dense_0": {"kernel": (2, 2, 3)}}
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(state.baseline_params))
    new, metrics = jax.jit(pg.update)(state, batch)
    # TD(0) by hand: V = 0, so delta = r, and the bootstrap stops at the horizon (V(o') unused)
    o, r, done = np.asarray(batch.obs), np.asarray(batch.reward), np.asarray(batch.truncated)
    assert done[-1].all() and not done[:-1].any()
    w = new.baseline_params["Dense_0"]
    np.testing.assert_allclose(w["kernel"][:, :, 0], 0.1 * np.einsum("tei,teij->ij", r, o) / 50, atol=1e-6)
    np.testing.assert_allclose(w["bias"][:, 0], 0.1 * r.sum((0, 1)) / 50, atol=1e-6)
    assert np.isfinite(metrics["pg/baseline_loss"])
    # the policy step used V before its TD step (0 here), so it equals the no-baseline step
    plain = state.replace(baseline=None, baseline_params=None)
    g = jax.grad(pg.policy_loss)(state.params, state, batch, batch.reward)
    g_plain = jax.grad(pg.policy_loss)(plain.params, plain, batch, batch.reward)
    jax.tree_util.tree_map(np.testing.assert_allclose, g, g_plain)
    # a non-zero V: G_t - V(o_t), with V a constant for the policy's gradient
    moved = new.replace(params=state.params)
    v = np.asarray(C.values(moved.baseline, moved.baseline_params, batch.obs))
    assert np.abs(v).max() > 0
    loss = pg.policy_loss(moved.params, moved, batch, batch.reward)
    logp, _ = reinforce_terms(moved.policy, moved.params, batch.obs, batch.action, 0.0)
    g_t = np.cumsum(r[::-1], axis=0)[::-1]
    np.testing.assert_allclose(loss, -np.sum(np.asarray(logp) * (g_t - v)) / 10, rtol=1e-5)


def test_baseline_gradient_is_the_semi_gradient_of_td0():
    """With V != 0: grad = -mean_(t,e) delta_t [o_t, 1], delta_t = r_t + V(o_t+1) (0 after the
    horizon) - V(o_t), the target a constant (so no finite-difference check: it is not a gradient)."""
    cfg = pg.Config(hidden=(), output_bias=False, baseline="linear", gamma=1.0)
    _, _, state, batch = _tyb_batch(cfg)
    w = {"Dense_0": {"kernel": jax.random.normal(jax.random.PRNGKey(3), (2, 2, 1)),
                     "bias": jax.random.normal(jax.random.PRNGKey(4), (2, 1))}}
    state = state.replace(baseline_params=w)
    g = jax.grad(pg.baseline_loss)(w, state, batch, batch.reward)["Dense_0"]
    o, o2, r = (np.asarray(x, np.float64) for x in (batch.obs, batch.next_obs, batch.reward))
    k, b = np.asarray(w["Dense_0"]["kernel"][..., 0], np.float64), np.asarray(w["Dense_0"]["bias"][:, 0])
    value = lambda x: np.einsum("teij,ij->tei", x, k) + b
    not_done = 1.0 - np.asarray(batch.truncated, np.float64)[..., None]
    delta = r + not_done * value(o2) - value(o)
    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["kernel"][..., 0], -np.einsum("tei,teij->ij", delta, o) / 50, **tol)
    np.testing.assert_allclose(g["bias"][:, 0], -delta.sum((0, 1)) / 50, **tol)


def test_bad_baseline_is_rejected():
    env, params = jaxmcg.make("trust_your_brother")
    for cfg, words in ((pg.Config(baseline="quadratic"), ["quadratic", "none, linear"]),
                       (pg.Config(baseline="linear", lr_baseline=0.0), ["lr_baseline=0.0", "> 0"])):
        with pytest.raises(ValueError) as e:
            pg.init(jax.random.PRNGKey(0), env, params, cfg)
        assert all(w in str(e.value) for w in words), str(e.value)
