"""AMD (Baumann et al.): score norms, planner loss gradient, learning on ER(2,1)."""
import jax
import jax.numpy as jnp
import numpy as np
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg.algos import amd
from jaxmcg.rollout import episode_rollout

_CACHE = {}


def _batch():
    """`(state, batch)` of ER(2,1) with the default Config, 8 episodes; built once per module."""
    if not _CACHE:
        config = amd.Config()
        env, params = jaxmcg.make("escape_room", num_agents=2, min_lever_pullers=1)
        env = amd.wrap_env(env, config)
        state = amd.init(jax.random.PRNGKey(0), env, params, config)
        _CACHE["batch"] = state, jax.jit(lambda s: episode_rollout(
            env, params, lambda o, k: amd.act(s, o, k), jax.random.PRNGKey(1), 8, 5))(state)
    return _CACHE["batch"]


def test_score_norms_of_a_linear_softmax_policy():
    """For logits W o + b, ||grad log pi(a|o)||^2 = ||onehot(a) - pi||^2 (||o||^2 + 1)."""
    state, batch = _batch()
    norms = np.asarray(jax.jit(amd.score_norms)(state, batch))
    ls = state.learner_state
    lp = jax.nn.log_softmax(jnp.stack([
        ls.policy.apply({"params": jax.tree_util.tree_map(lambda p, j=j: p[j], ls.params)},
                        batch.obs[..., j, :]) for j in range(2)], -2), -1)
    resid = jax.nn.one_hot(batch.action, 3) - jnp.exp(lp)
    expected = jnp.sum(resid**2, -1) * (jnp.sum(batch.obs**2, -1) + 1.0)
    np.testing.assert_allclose(norms, expected, rtol=1e-5)


def test_planner_loss_gradient(x64):
    state, batch = f64(_batch())
    state = state.replace(eta=jax.tree_util.tree_map(lambda p: p + 0.01, state.eta))
    norms = amd.score_norms(state, batch)
    assert_grad_matches_fd(lambda e: amd.planner_loss(e, state, batch, norms), state.eta,
                           jax.random.PRNGKey(0), n_directions=2, n_coordinates=3)


def test_bad_input_rejected_before_compiling():
    ipd, params = jaxmcg.make("ipd")
    assert_rejected_before_compiling(lambda: amd.check_env(ipd, params, amd.Config()),
                                     ["no designer observation"])
    er, params = jaxmcg.make("escape_room")
    assert_rejected_before_compiling(lambda: amd.check_env(er, params, amd.Config(r_max=0.0)),
                                     ["empty"])


def test_amd_improves_collective_return_on_er_2_1():
    """A learning check that can fail: with AMD's planner (rate 3e-3 instead of the code's per-step
    2.74e-5, for 128 episodes per update) the collective extrinsic return of the linear AC agents
    on ER(2,1) rises by more than 2 over 300 iterations (first and last 20 iterations' means).
    One jitted iteration in a Python loop compiles much faster than `make_train`."""
    env, params = jaxmcg.make("escape_room", num_agents=2, min_lever_pullers=1)
    config = amd.Config(lr=3e-3)
    env = amd.wrap_env(env, config)
    state = amd.init(jax.random.PRNGKey(0), env, params, config)

    @jax.jit
    def iteration(state, key):
        batch = episode_rollout(env, params, lambda o, k: amd.act(state, o, k), key, 128, 5)
        collective = jnp.sum(batch.reward * batch.valid[..., None]) / 128
        return amd.update(state, batch)[0], collective

    cr = []
    for key in jax.random.split(jax.random.PRNGKey(1), 300):
        state, c = iteration(state, key)
        cr.append(float(c))
    assert np.mean(cr[-20:]) > np.mean(cr[:20]) + 2.0, cr[::20]
