"""IPPO (jaxmcg.algos.ippo): loss by hand, gradients, the KL rule, config checks, and PD learning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import FlatEnv
from gradcheck import assert_grad_matches_fd, f64
from seeds import train_seeds

import jaxmcg
from jaxmcg.algos import ippo
from jaxmcg.rollout import Trajectory, episode_rollout
from jaxmcg.train import TrainConfig, make_train


def _make(*names):
    """The first registered of `names` (the matrix games were renamed: pd_one_shot -> pd, ...)."""
    for name in names:
        try:
            return jaxmcg.make(name)
        except ValueError:
            continue
    raise ValueError(f"none of {names} is registered")


def _hand_batch(dtype=jnp.float32):
    """Three episodes of <= 3 steps: episode 0 truncated at the horizon, episode 1 terminated at t=1
    (t=2 is padding), episode 2 terminated at t=2. next_obs[t] = obs[t + 1] within an episode."""
    rng = np.random.default_rng(0)
    t, e, n, d = 3, 3, 2, 4
    obs = rng.normal(size=(t + 1, e, n, d))
    final = rng.normal(size=(t, e, n, d))  # what follows an episode's last step
    valid = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1]], np.float32)
    terminated = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    truncated = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]], bool)
    return Trajectory(
        obs=jnp.asarray(obs[:-1], dtype),
        action=jnp.asarray(rng.integers(0, 3, size=(t, e, n)), jnp.int32),
        reward=jnp.asarray(rng.normal(size=(t, e, n)) * 2, dtype),
        next_obs=jnp.asarray(np.where((terminated | truncated)[..., None, None], final, obs[1:]), dtype),
        valid=jnp.asarray(valid, dtype),
        terminated=jnp.asarray(terminated),
        truncated=jnp.asarray(truncated),
        extras={},
        info={},
    )


def _net(module, params, obs):
    """Agent i's network on obs[..., i, :], stacked on axis -2 (independently of apply_per_agent)."""
    per_agent = [jax.tree_util.tree_map(lambda p, i=i: p[i], params) for i in range(obs.shape[-2])]
    return jnp.stack([module.apply({"params": p}, obs[..., i, :]) for i, p in enumerate(per_agent)],
                     axis=-2)


@pytest.fixture(scope="module")
def flat_state():
    """An IPPO state on `FlatEnv` (initialised once: flax's first init is slow on CPU)."""
    return ippo.init(jax.random.PRNGKey(1), FlatEnv(), None, ippo.Config(hidden=(16, 16)))


def _loss_inputs(state, dtype=jnp.float32):
    """The hand batch, the log-probs of a policy near the state's (logits + N(0, 0.5^2) noise, so
    that some ratios are clipped), random advantages of both signs and random value targets."""
    batch = _hand_batch(dtype)
    rng = np.random.default_rng(5)
    noise = rng.normal(size=batch.action.shape + (3,)) * 0.5
    old_lp = jax.nn.log_softmax(_net(state.policy, state.params, batch.obs) + noise.astype(dtype))
    adv = jnp.asarray(rng.normal(size=batch.reward.shape) * 2, dtype)
    targets = jnp.asarray(rng.normal(size=batch.reward.shape) * 2, dtype)
    return batch, old_lp, adv, targets


# ---- losses --------------------------------------------------------------------------------------


def test_losses_match_a_numpy_evaluation(flat_state):
    """Clipped surrogate, KL(pi_old || pi), value loss and clip fraction, per agent, as means over the
    valid steps, against a numpy evaluation; the total is their beta / vf_coef weighted sum."""
    state = flat_state.replace(config=ippo.Config(hidden=(16, 16), clip=0.3, vf_coef=0.5),
                               kl_coef=jnp.array([0.2, 0.7]))
    batch, old_lp, adv, targets = _loss_inputs(state)
    args = (state.params, state.critic_params, state, batch, old_lp, adv, targets)
    terms = jax.jit(ippo.loss_terms)(*args)
    total, _ = jax.jit(ippo.total_loss)(*args)

    logits = np.asarray(_net(state.policy, state.params, batch.obs), np.float64)
    lp = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
    old = np.asarray(old_lp, np.float64)
    a = np.asarray(batch.action)[..., None]
    ratio = np.exp(np.take_along_axis(lp, a, -1) - np.take_along_axis(old, a, -1))[..., 0]
    A = np.asarray(adv)
    surr = np.minimum(ratio * A, np.clip(ratio, 0.7, 1.3) * A)
    kl = np.sum(np.exp(old) * (old - lp), -1)
    v = np.asarray(_net(state.critic, state.critic_params, batch.obs))[..., 0]
    w = np.asarray(batch.valid)[..., None]

    def mean(x):
        return np.sum(x * w, (0, 1)) / np.sum(w, (0, 1))

    clipped = mean(np.abs(ratio - 1) > 0.3)
    assert np.all(clipped > 0) and np.all(clipped < 1), clipped
    assert np.any((surr != ratio * A) & (w > 0))  # the min takes the clipped branch somewhere
    np.testing.assert_allclose(terms["policy_loss"], -mean(surr), rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], mean(kl), rtol=1e-5)
    np.testing.assert_allclose(terms["value_loss"], mean((v - np.asarray(targets)) ** 2), rtol=1e-5)
    np.testing.assert_allclose(terms["clip_fraction"], clipped, rtol=1e-6)
    expected = -mean(surr) + np.array([0.2, 0.7]) * mean(kl) + 0.5 * mean((v - targets) ** 2)
    np.testing.assert_allclose(total, expected.sum(), rtol=1e-5)


def test_loss_gradients_match_finite_differences(flat_state, x64):
    """Gradient of the total loss w.r.t. both networks, with clipping active, in float64."""
    state = flat_state.replace(params=f64(flat_state.params),
                               critic_params=f64(flat_state.critic_params),
                               kl_coef=jnp.array([0.2, 0.7], jnp.float64))
    batch, old_lp, adv, targets = _loss_inputs(state, jnp.float64)
    assert batch.obs.dtype == old_lp.dtype == jnp.float64
    assert_grad_matches_fd(
        lambda p: ippo.total_loss(p[0], p[1], state, batch, old_lp, adv, targets)[0],
        (state.params, state.critic_params), jax.random.PRNGKey(3))


def test_lambda_one_advantage_is_monte_carlo_return_minus_value(flat_state):
    """GAE(lambda=1) = G_t - V(o_t) with G_t the discounted return to the episode's end: nothing is
    bootstrapped after a termination or a truncation; padded steps are zero."""
    gamma = 0.9
    state = flat_state.replace(config=ippo.Config(hidden=(16, 16), gamma=gamma))
    batch = _hand_batch()
    adv, targets = jax.jit(ippo.advantages_and_targets)(state, batch)
    r, w = np.asarray(batch.reward), np.asarray(batch.valid)[..., None]
    g = np.zeros_like(r)
    for t in reversed(range(3)):
        g[t] = r[t] * w[t] + (gamma * g[t + 1] * w[t + 1] if t < 2 else 0.0)
    v = np.asarray(_net(state.critic, state.critic_params, batch.obs))[..., 0]
    np.testing.assert_allclose(adv, (g - v) * w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, g * w, rtol=1e-5, atol=1e-5)


# ---- the update ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kl, factor", [(0.03, 1.5), (0.0201, 1.5), (0.02, 1.0), (0.01, 1.0),
                                        (0.005, 1.0), (0.0049, 0.5), (0.0, 0.5)])
def test_adaptive_kl_coefficient_rule(kl, factor):
    """x1.5 when KL > 2 target, x0.5 when KL < target / 2, unchanged in between (target 0.01)."""
    new = ippo.adapt_kl_coef(jnp.array([0.2, 0.4]), jnp.array([kl, kl]), 0.01)
    np.testing.assert_allclose(new, [0.2 * factor, 0.4 * factor], rtol=1e-6)


def test_update_steps_each_network_with_its_adam_and_adapts_kl(flat_state):
    """One epoch: Adam's first step moves every parameter by lr * sign(grad) (lr for the policies,
    lr_critic for the critics); the new coefficient applies the rule to KL(pi_old || pi_new)."""
    config = ippo.Config(hidden=(16, 16), lr=1e-2, lr_critic=3e-2, normalize_advantages=False)
    state = flat_state.replace(config=config)
    batch = _hand_batch()
    new, metrics = jax.jit(ippo.update)(state, batch)

    old_lp = jax.nn.log_softmax(_net(state.policy, state.params, batch.obs))
    adv, targets = jax.jit(ippo.advantages_and_targets)(state, batch)
    grads = jax.jit(jax.grad(
        lambda p, c: ippo.total_loss(p, c, state, batch, old_lp, adv, targets)[0], argnums=(0, 1)
    ))(state.params, state.critic_params)
    for lr, before, after, g in zip((1e-2, 3e-2), (state.params, state.critic_params),
                                    (new.params, new.critic_params), grads):
        step = jax.tree_util.tree_map(lambda d, lr=lr: -lr * d / (jnp.abs(d) + 1e-8), g)
        jax.tree_util.tree_map(lambda b, a, s: np.testing.assert_allclose(a, b + s, rtol=1e-4,
                                                                          atol=1e-6),
                               before, after, step)

    new_lp = jax.nn.log_softmax(_net(new.policy, new.params, batch.obs))
    w = np.asarray(batch.valid)[..., None]
    kl = np.sum(np.sum(np.exp(old_lp) * (old_lp - new_lp), -1) * w, (0, 1)) / w.sum((0, 1))
    np.testing.assert_allclose(metrics["ippo/kl"], kl, rtol=1e-4)
    assert np.all(kl > 0)
    np.testing.assert_allclose(new.kl_coef, ippo.adapt_kl_coef(state.kl_coef, kl, 0.01), rtol=1e-6)
    assert int(new.iteration) == 1
    assert set(metrics) == {f"ippo/{k}" for k in
                            ("policy_loss", "value_loss", "kl", "kl_coef", "clip_fraction")}


def test_grid_rpc_preset_runs_thirty_epochs_on_rpc():
    """Tables 6-7 settings (hidden 32, 30 full-batch epochs) on the T=16 conflict game, 512
    decisions: the policy moves (KL > 0, some ratios clipped by the later epochs) and all is finite."""
    env, params = _make("conflict", "rpc")
    state = ippo.init(jax.random.PRNGKey(0), env, params, ippo.GRID_RPC)
    batch = episode_rollout(env, params, lambda o, k: ippo.act(state, o, k),
                            jax.random.PRNGKey(1), 32, 16)
    new, metrics = jax.jit(ippo.update)(state, batch)
    assert batch.action.shape == (16, 32, 2) and batch.action.dtype == jnp.int32
    for k, v in metrics.items():
        assert v.shape == (2,) and np.all(np.isfinite(v)), k
    assert np.all(metrics["ippo/kl"] > 0)
    assert np.all(np.asarray(metrics["ippo/value_loss"]) > 0)


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("lr_critic", -1e-3), ("clip", 0.0),
                                          ("kl_target", 0.0), ("kl_coef", -0.2), ("vf_coef", -1.0),
                                          ("gamma", 1.5), ("gae_lambda", -0.1), ("num_epochs", 0),
                                          ("num_epochs", 2.5), ("hidden", ()), ("hidden", (8, 0))])
def test_bad_config_is_rejected_before_compiling(field, value):
    env, params = _make("pd_one_shot", "pd")
    config = ippo.Config(**{field: value})
    with pytest.raises(ValueError, match=rf"^{field}=.*invalid"):
        ippo.init(jax.random.PRNGKey(0), env, params, config)
    train = make_train(ippo, env, params, config, TrainConfig(n_envs=4, iterations=1, log_every=1))
    with pytest.raises(ValueError, match=rf"^{field}="):  # raised while tracing, not by XLA
        jax.jit(train.init)(jax.random.PRNGKey(0))


def test_defaults_are_table_5():
    c = ippo.Config()
    c.validate()
    assert (c.hidden, c.lr, c.lr_critic, c.clip, c.kl_coef, c.kl_target, c.num_epochs) == \
        ((8, 8), 4e-4, 8e-4, 0.3, 0.2, 0.01, 1)
    assert (c.gae_lambda, c.vf_coef) == (1.0, 1.0)


# ---- learning ------------------------------------------------------------------------------------


def test_converges_to_mutual_defection_in_pd():
    """dcl.md §5.2/§5.8: IPPO on the one-shot PD reaches mutual defection, SW -4, within a few
    hundred iterations. Table 5 (batch 128, lrs 4e-4 / 8e-4, one update per iteration): every one of
    5 seeds ends with SW <= -3.8 and both agents defecting with probability > 0.9 after 600
    iterations (uniform play: SW -3)."""
    env, params = _make("pd_one_shot", "pd")
    tc = TrainConfig(n_envs=128, iterations=600, log_every=100, eval_envs=1024)
    train = make_train(ippo, env, params, ippo.Config(), tc)
    _, m = train_seeds(train, 5)
    sw = m["collective_return"][:, -1]
    p_defect = m["action_frequency"][:, -1, :, 1]  # [seed, agent]
    assert np.all(sw <= -3.8), sw
    assert np.all(p_defect > 0.9), p_defect
    assert np.all(np.isfinite(m["ippo/value_loss"]))
