"""AMD (Baumann et al.): score norms, planner loss gradient, learning on ER(2,1)."""
import jax
import jax.numpy as jnp
import numpy as np
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg.algos import amd
from jaxmcg.rollout import episode_rollout
from jaxmcg.train import TrainConfig, make_train


def _batch(config, n_envs=8):
    env, params = jaxmcg.make("escape_room", num_agents=2, min_lever_pullers=1)
    env = amd.wrap_env(env, config)
    state = amd.init(jax.random.PRNGKey(0), env, params, config)
    batch = episode_rollout(env, params, lambda o, k: amd.act(state, o, k), jax.random.PRNGKey(1),
                            n_envs, 5)
    return state, batch


def test_score_norms_of_a_linear_softmax_policy():
    """For logits W o + b, ||grad log pi(a|o)||^2 = ||onehot(a) - pi||^2 (||o||^2 + 1)."""
    state, batch = _batch(amd.Config())
    norms = np.asarray(amd.score_norms(state, batch))
    ls = state.learner_state
    lp = jax.nn.log_softmax(jnp.stack([
        ls.policy.apply({"params": jax.tree_util.tree_map(lambda p, j=j: p[j], ls.params)},
                        batch.obs[..., j, :]) for j in range(2)], -2), -1)
    resid = jax.nn.one_hot(batch.action, 3) - jnp.exp(lp)
    expected = jnp.sum(resid**2, -1) * (jnp.sum(batch.obs**2, -1) + 1.0)
    np.testing.assert_allclose(norms, expected, rtol=1e-5)


def test_planner_loss_gradient(x64):
    state, batch = _batch(amd.Config())
    state, batch = f64(state), f64(batch)
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
    on ER(2,1) rises by more than 2 over 300 iterations."""
    env, params = jaxmcg.make("escape_room", num_agents=2, min_lever_pullers=1)
    config = amd.Config(lr=3e-3)
    tc = TrainConfig(n_envs=128, iterations=300, log_every=50, eval_envs=512)
    _, m = jax.jit(make_train(amd, env, params, config, tc))(jax.random.PRNGKey(0))
    cr = np.asarray(m["collective_return"])
    assert cr[-1] > cr[0] + 2.0, cr
