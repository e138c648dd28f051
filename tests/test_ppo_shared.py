"""PPO with a shared policy (jaxmcg.algos.ppo_shared, gtb.md §8.2, §8.4): masked floored policy,
the losses by hand, the recurrent critic, finite-difference gradients through the conv trunk and the
LSTM, config checks, and a short GTB learning run."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg.algos import ppo_shared as P
from jaxmcg.rollout import episode_rollout
from jaxmcg.train import TrainConfig, make_train

ENV, PARAMS = jaxmcg.make("gtb-15x15-v0", designer_obs="none", tax_model="free_market")


def test_floored_masked_policy():
    """Invalid actions get probability exactly eps / |A| (0 at eps = 0); valid ones the renormalised
    softmax mixed with the floor; `floor_valid_only` spreads eps over the valid actions only."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    soft = np.where(mask, np.exp(logits), 0.0)
    soft /= soft.sum(-1, keepdims=True)
    for eps in (0.0, 0.3):
        p = np.exp(np.asarray(P.floored_log_probs(jnp.asarray(logits), jnp.asarray(mask), eps)))
        np.testing.assert_allclose(p, (1 - eps) * soft + eps / 6, atol=1e-6)
        q = np.exp(np.asarray(P.floored_log_probs(jnp.asarray(logits), jnp.asarray(mask), eps, True)))
        np.testing.assert_allclose(q, (1 - eps) * soft + eps * mask / mask.sum(-1, keepdims=True),
                                   atol=1e-6)
        assert np.all(q[~mask] <= 1e-29)
    lp = P.floored_log_probs(jnp.asarray(logits), jnp.asarray(mask), 0.0)
    assert np.all(np.isfinite(np.asarray(lp))) and np.isfinite(float(P.D.entropy(lp).sum()))


@pytest.fixture(scope="module")
def small():
    """A conv-trunk state (small widths, feed-forward critic) and a 3-step batch of 2 GTB
    environments."""
    config = P.Config(hidden=(16,), conv_filters=2, conv_kernel=3, eps_start=0.2, eps_end=0.2,
                      critic_lstm=0)
    state = P.init(jax.random.PRNGKey(0), ENV, PARAMS, config)
    batch = episode_rollout(ENV, PARAMS, lambda obs, k: P.act(state, obs, k), jax.random.PRNGKey(1),
                            2, 3)
    return state, batch.replace(reward=batch.reward + jnp.linspace(-1, 1, 24).reshape(3, 2, 4))


@pytest.fixture(scope="module")
def small_lstm(small):
    """The same with §8.2's recurrent critic (8 units) and the same batch."""
    state, batch = small
    config = dataclasses.replace(state.config, critic_lstm=8)
    return P.init(jax.random.PRNGKey(0), ENV, PARAMS, config), batch


def test_shared_parameters_and_masks(small):
    """One network for all agents (an agent's log-probs depend only on its own observation) and
    sampled actions are valid or come from the floor."""
    state, batch = small
    obs = batch.obs[0, 0]  # [N, 1275]
    swapped = obs[jnp.array([1, 0, 2, 3])]
    lp = P.policy_log_probs(state, state.params, obs, 0.0)
    lp_s = P.policy_log_probs(state, state.params, swapped, 0.0)
    np.testing.assert_allclose(np.asarray(lp_s[0]), np.asarray(lp[1]), rtol=1e-6)
    mask = np.asarray(ENV.split_obs(batch.obs)["action_mask"]) > 0.5
    assert np.all(np.exp(np.asarray(P.policy_log_probs(state, state.params, batch.obs, 0.0)))[~mask]
                  <= 1e-29)


def test_losses_by_hand(small):
    """At old = current policy the ratio is 1, so the actor loss is -mean A - c_entropy mean H; the
    critic loss is the mean squared TD(0) error against V_target with no terminal masking; GAE
    matches a numpy recursion."""
    state, batch = small
    c = state.config
    eps = 0.2
    lp = P.policy_log_probs(state, state.params, batch.obs, eps)
    adv = jnp.asarray(np.random.default_rng(2).normal(size=batch.reward.shape), jnp.float32)
    loss, terms = P.actor_loss(state.params, state, batch, lp, adv, eps)
    ent = -np.sum(np.exp(np.asarray(lp)) * np.asarray(lp), -1)
    np.testing.assert_allclose(float(loss), -np.mean(adv) - c.c_entropy * ent.mean(), rtol=1e-5)
    v = np.asarray(P.values(state, state.critic_params, batch.obs))
    v_next = np.asarray(P.values(state, state.target_params, batch.next_obs))
    td = np.asarray(batch.reward) + c.gamma * v_next - v
    np.testing.assert_allclose(float(P.critic_loss(state.critic_params, state, batch)),
                               np.mean(td ** 2), rtol=1e-5)
    v_next = np.asarray(P.values(state, state.critic_params, batch.next_obs))
    _assert_gae(state, batch, v, v_next)


def _assert_gae(state, batch, v, v_next):
    """`P.advantages` against a numpy GAE recursion on the main critic's values."""
    c = state.config
    delta = np.asarray(batch.reward) + c.gamma * v_next - v
    want = np.zeros_like(delta)
    for t in reversed(range(len(delta))):
        want[t] = delta[t] + (c.gamma * c.gae_lambda * want[t + 1] if t + 1 < len(delta) else 0.0)
    np.testing.assert_allclose(np.asarray(P.advantages(state, batch)), want, rtol=1e-4, atol=1e-5)


def test_recurrent_critic(small_lstm):
    """V(o_t) depends on o_0..o_t only; V(o'_t) continues the episode (= V(o_{t+1}) where o'_t is
    the next step's observation, as in a GTB episode's first steps); the critic loss is the TD(0)
    error against the target critic's V(o'_t), and GAE uses the main critic's."""
    state, batch = small_lstm
    c = state.config
    v, v_next = (np.asarray(x) for x in P.critic_values(state, state.critic_params, batch))
    assert v.shape == v_next.shape == batch.reward.shape
    np.testing.assert_allclose(v_next[:-1], v[1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(P.values(state, state.critic_params, batch.obs)), v,
                               rtol=1e-6)
    later = jax.tree_util.tree_map(lambda x: x.at[2].set(x[0]), batch.obs)  # change step 2 only
    v_later = np.asarray(P.values(state, state.critic_params, later))
    np.testing.assert_array_equal(v_later[:2], v[:2])
    assert np.max(np.abs(v_later[2] - v[2])) > 1e-4
    target = np.asarray(batch.reward) + c.gamma * np.asarray(
        P.critic_values(state, state.target_params, batch)[1])
    np.testing.assert_allclose(float(P.critic_loss(state.critic_params, state, batch)),
                               np.mean((target - v) ** 2), rtol=1e-5)
    _assert_gae(state, batch, v, v_next)


def _jitter(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(f64(tree))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                              for x, k in zip(leaves, keys)])


def test_gradients_match_finite_differences(small, x64):
    """Actor loss (clipped ratios included: old log-probs perturbed) and critic loss through the conv
    trunk, float64, against central differences. The parameters are jittered first: at init the
    biases are 0 and out-of-map cells are all-zero inputs, so many ReLUs sit exactly at their kink."""
    state, batch = small
    state = state.replace(params=_jitter(state.params, 6),
                          critic_params=_jitter(state.critic_params, 7),
                          target_params=_jitter(state.target_params, 8))
    batch = f64(batch)
    rng = np.random.default_rng(3)
    old = P.policy_log_probs(state, state.params, batch.obs, 0.2)
    old = old + jnp.asarray(rng.normal(size=old.shape) * 0.3)
    adv = jnp.asarray(rng.normal(size=batch.reward.shape))
    assert_grad_matches_fd(lambda p: P.actor_loss(p, state, batch, old, adv, 0.2)[0], state.params,
                           jax.random.PRNGKey(4), h=1e-6, scale=0.1)
    assert_grad_matches_fd(lambda p: P.critic_loss(p, state, batch), state.critic_params,
                           jax.random.PRNGKey(5), h=1e-6, scale=0.1)


def test_recurrent_critic_gradient_matches_finite_differences(small_lstm, x64):
    """The critic loss through the LSTM (full-episode BPTT), float64. (Truncation gives a biased
    gradient by design: test_networks checks what it cuts.)"""
    state, batch = small_lstm
    state = state.replace(critic_params=_jitter(state.critic_params, 7),
                          target_params=_jitter(state.target_params, 8))
    batch = f64(batch)
    assert_grad_matches_fd(lambda p: P.critic_loss(p, state, batch), state.critic_params,
                           jax.random.PRNGKey(5), h=1e-6, scale=0.1)


def test_bad_config_rejected():
    key = jax.random.PRNGKey(0)
    for bad, needle in ((P.Config(clip=0.0), "clip"), (P.Config(c_v=1.5), "c_v"),
                        (P.Config(critic_lstm=-1), "critic_lstm"),
                        (P.Config(critic_truncation=1.5), "critic_truncation"),
                        (P.Config(grad_clip=-1.0), "grad_clip")):
        assert_rejected_before_compiling(lambda bad=bad: P.init(key, ENV, PARAMS, bad),
                                         [needle])


def test_learns_above_the_random_policy():
    """Free market, 8 envs, 30 iterations (MLP trunk for speed): the untrained policy is uniform over
    the valid actions (the random masked policy, about -30 collective return from the labour of
    moves and orders); PPO must raise the evaluated collective return by more than 10."""
    config = P.Config(conv=False, hidden=(32, 32), lr=3e-3, lr_critic=1e-3, clip=0.2,
                      c_entropy=0.01, eps_start=0.0, eps_end=0.0)
    train = make_train(P, ENV, PARAMS, config, TrainConfig(n_envs=8, iterations=30, log_every=10,
                                                           eval_envs=16))
    _, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    first, last = float(metrics["train/collective_return"][0]), float(metrics["collective_return"][-1])
    assert first < -15.0, first  # the start is the random masked policy
    assert last > first + 10.0, (first, last)
