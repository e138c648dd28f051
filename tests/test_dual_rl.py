"""dual-RL: decoding of the discrete designer action, the reparameterised samples, learning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg.algos import dual_rl
from jaxmcg.rollout import episode_rollout


def test_decode_base_s():
    """Choice c -> node k = S_r[digit_k(c)], type 0 the least significant digit [CODE]."""
    values = (0.0, 1.1, 2.0)
    np.testing.assert_allclose(dual_rl.decode(jnp.array([0, 1, 3, 26]), values, 3),
                               [[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [2.0, 2.0, 2.0]], rtol=1e-6)
    all_choices = np.asarray(dual_rl.decode(jnp.arange(27), values, 3))
    assert len({tuple(r) for r in all_choices}) == 27  # a bijection onto S_r^3


_BATCHES = {}


def _batch(action):
    """`(state, batch)` of ER(3,2): 2000 episodes of 5 steps, the designer untrained (hidden 16);
    built once per `action` for this module."""
    if action not in _BATCHES:
        config = dual_rl.Config(action=action, hidden=(16,))
        env, params = jaxmcg.make("escape_room", num_agents=3, min_lever_pullers=2)
        env = dual_rl.wrap_env(env, config)
        state = dual_rl.init(jax.random.PRNGKey(0), env, params, config)
        rollout = jax.jit(lambda s, k: episode_rollout(env, params, lambda o, kk: dual_rl.act(s, o, kk),
                                                       k, 2000, 5))
        _BATCHES[action] = state, rollout(state, jax.random.PRNGKey(1))
    return _BATCHES[action]


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_designer_samples_follow_its_policy(action):
    """The choices recomputed from the stored noise are samples of pi_ID: their frequencies match
    the softmax (discrete), or u - f_eta is standard normal (continuous); incentives in range."""
    state, batch = _batch(action)
    nodes, logp, _ = jax.jit(dual_rl.designer_action)(state, state.eta, batch)
    first = jax.tree_util.tree_map(lambda x: x[:1], batch)  # t = 0
    if action == "discrete":
        assert np.all(np.isclose(np.asarray(nodes)[..., None], [0.0, 1.1, 2.0]).any(-1))
        # at t = 0 every env is in the same state; the joint actions vary
        info = first.info
        out = state.policy.apply({"params": state.eta}, info["designer_obs"], info["designer_features"])
        probs = np.asarray(jax.nn.softmax(out, -1))[0]  # [E, 27]
        choice = np.asarray(jnp.argmax(jax.nn.log_softmax(out, -1) + first.extras["designer_noise"], -1))[0]
        # E[onehot(choice)] = E[probs]: 2000 samples, 27 classes
        freq = np.bincount(choice, minlength=27) / choice.size
        assert np.abs(freq - probs.mean(0)).max() < 0.05
    else:
        assert float(jnp.min(nodes)) > 0 and float(jnp.max(nodes)) < state.config.r_max
        z = np.asarray(batch.extras["designer_noise"]).ravel()
        assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_designer_loss_gradient(x64, action):
    """The REINFORCE loss of the designer against finite differences (float64), the sample held
    fixed (drawn with the rollout's parameters); the first 64 episodes of the batch."""
    state, batch = _batch(action)
    state, batch = f64(state), f64(jax.tree_util.tree_map(lambda x: x[:, :64], batch))
    state = state.replace(eta=jax.tree_util.tree_map(lambda p: p + 0.01, state.eta))
    paid = dual_rl._paid(state, batch)
    adv = dual_rl.designer_advantages(state, batch, dual_rl.designer_rewards(state, batch, paid))
    assert_grad_matches_fd(lambda e: dual_rl.designer_loss(e, state, batch, adv), state.eta,
                           jax.random.PRNGKey(0), n_directions=2, n_coordinates=3)


def test_bad_input_rejected_before_compiling():
    ipd, params = jaxmcg.make("ipd")
    assert_rejected_before_compiling(
        lambda: dual_rl.check_env(ipd, params, dual_rl.Config()), ["no designer observation"])
    assert_rejected_before_compiling(
        lambda: dual_rl.Config(action="continuous", r_max=-1.0).validate(), ["r_max=-1.0", "empty"])
    assert_rejected_before_compiling(lambda: dual_rl.Config(values=(1.0,)).validate(), ["values="])


def test_dual_rl_designer_learns_to_cut_useless_payments():
    """A fast learning check that can fail: on ER(2,1), dual-RL (c)'s designer, which pays about
    1 per agent and step when untrained, learns from its reward (incentives subtracted) that the
    payments are a pure cost before the agents respond to them: it pays < 20% of that after 100
    iterations of 128 episodes (measured: 0.05 of ~10 per episode). The agents then never find
    the lever, as the thesis reports for dual-RL (§6.4). One jitted iteration in a Python loop
    compiles much faster than `make_train`."""
    env, params = jaxmcg.make("escape_room", num_agents=2, min_lever_pullers=1)
    config = dual_rl.Config(action="continuous", hidden=(64, 64), lr=3e-3, entropy_coef=0.0,
                            learner_params=(("hidden", (64, 64)), ("lr", 1e-2),
                                            ("entropy_coef", 0.0166), ("eps_start", 0.0),
                                            ("eps_end", 0.0)))
    env = dual_rl.wrap_env(env, config)
    state = dual_rl.init(jax.random.PRNGKey(0), env, params, config)

    @jax.jit
    def iteration(state, key):
        batch = episode_rollout(env, params, lambda o, k: dual_rl.act(state, o, k), key, 128, 5)
        paid = jnp.sum(dual_rl._paid(state, batch) * batch.valid[..., None]) / 128
        return dual_rl.update(state, batch)[0], paid

    paid = []
    for key in jax.random.split(jax.random.PRNGKey(1), 100):
        state, p = iteration(state, key)
        paid.append(float(p))
    assert paid[0] > 3.0 and np.mean(paid[-10:]) < 0.2 * paid[0], paid[::10]
