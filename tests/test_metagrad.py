"""MetaGrad: designer observations, meta-gradient against finite differences, pipelining, learning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg.algos import metagrad
from jaxmcg.designer import ObserveDesigner, paid_by_type
from jaxmcg.rollout import episode_rollout


def _frozen(config, env_id="escape_room", n_envs=6, seed=0, **env_kw):
    """A state after one agents' step on tau, tau itself (stored in the state) and tau-hat sampled
    from the updated agents, in float64."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        env, params = jaxmcg.make(env_id, **env_kw)
        env = metagrad.wrap_env(env, config)
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
        steps = env.horizon(params)
        state = metagrad.init(k1, env, params, config, n_envs=n_envs, num_steps=steps)
        # every parameter shifted by 0.01: zero-initialised biases put ReLUs fed by an all-zero
        # layer exactly on their kink, where finite differences are meaningless (as
        # test_ac_images.off_kinks)
        shift = lambda tree: jax.tree_util.tree_map(lambda p: p + 0.01, tree)  # noqa: E731
        state = f64(state.replace(
            eta=shift(state.eta),
            learner_state=state.learner_state.replace(params=shift(state.learner_state.params))))
        rollout = jax.jit(lambda s, k: episode_rollout(
            env, params, lambda o, kk: metagrad.act(s, o, kk), k, n_envs, steps))
        tau = f64(rollout(state, k2))
        # the agents' step of `update` (its ID step is a no-op before the first agents' step)
        state, _ = jax.jit(metagrad.agents_step)(state, tau)
        tau_hat = f64(rollout(state, k3))
    finally:
        jax.config.update("jax_enable_x64", previous)
    return state, tau, tau_hat


# ER(3,2) with small networks; the agents' lr 0.5 makes theta-hat depend visibly on eta
_ER_CONFIG = metagrad.Config(learner_params=(("hidden", (16, 16)), ("lr", 0.5),
                                             ("entropy_coef", 0.01)), hidden=(16, 8))


@pytest.fixture(scope="module")
def er_frozen():
    """`_frozen` on ER(3,2), built once for the tests of this module (float64; use with `x64`)."""
    return _frozen(_ER_CONFIG, num_agents=3, min_lever_pullers=2)


def test_escape_room_designer_info_by_hand():
    """ER(3,2): the ID sees the one-hot locations before the step, the one-hot joint action, and
    agent i's incentive node is its action; R^ID is the sum of the extrinsic rewards."""
    env, params = jaxmcg.make("escape_room", num_agents=3, min_lever_pullers=2)
    wrapped = ObserveDesigner(env)
    _, state = wrapped.reset_env(jax.random.PRNGKey(0), params)
    actions = jnp.array([0, 0, 2])  # two at the lever: the door opens, agent 2 exits
    _, state2, reward, term, info = wrapped.step_env(jax.random.PRNGKey(1), state, actions, params)
    np.testing.assert_array_equal(info["designer_obs"], np.tile([0, 1, 0], 3))  # all at start
    np.testing.assert_array_equal(info["designer_next_obs"], [1, 0, 0, 1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(info["designer_features"], [1, 0, 0, 1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(info["designer_action_type"], [0, 0, 2])
    np.testing.assert_allclose(reward, [-1, -1, 10])
    assert float(info["designer_reward"]) == 8.0 and bool(term)


def test_cleanup_designer_info_by_hand():
    """Cleanup: the global view of the state before the step, the multi-hot of the agents that fired
    the cleaning beam, types clean (0) / apple (1) / else (2)."""
    from envs.cleanup import FIRE, STAY

    env, params = jaxmcg.make("cleanup-7x7")
    wrapped = ObserveDesigner(env)
    _, state = jax.jit(wrapped.reset_env)(jax.random.PRNGKey(0), params)
    # put an apple under agent 1 so that staying collects it
    r, c = (int(x) for x in env.spawn_points[1])
    state = state.replace(apples=state.apples.at[r, c].set(True))
    actions = jnp.array([FIRE, STAY])
    _, _, reward, _, info = jax.jit(wrapped.step_env)(jax.random.PRNGKey(1), state, actions,
                                                      params)
    np.testing.assert_allclose(info["designer_obs"], jax.jit(env.global_obs)(state, params))
    assert info["designer_obs"].shape == env.global_obs_shape
    np.testing.assert_array_equal(info["designer_features"], [1.0, 0.0])
    np.testing.assert_allclose(reward, [0.0, 1.0])
    np.testing.assert_array_equal(info["designer_action_type"], [0, 1])
    assert float(info["designer_reward"]) == 1.0


def test_paid_by_type():
    nodes = jnp.array([[0.5, 1.0, 1.5]])
    np.testing.assert_allclose(paid_by_type(nodes, jnp.array([[2, 0, 0, 1]])), [[1.5, 0.5, 0.5, 1.0]])


def _check_meta_gradient(config, state, tau, tau_hat):
    np.testing.assert_array_equal(np.asarray(state.prev_batch.reward), np.asarray(tau.reward))
    adv = metagrad.outer_advantages(state, tau_hat)
    # PPO: pi_old is the agents' policy after their step (theta-hat at this eta), as designer_step
    old = metagrad.joint_log_prob(state, state.learner_state, tau_hat) if config.ppo_clip else None
    objective = lambda eta: metagrad.outer_loss(eta, state, tau_hat, adv, old)  # noqa: E731
    grad = jax.jit(jax.grad(objective))(state.eta)
    assert_grad_matches_fd(objective, state.eta, jax.random.PRNGKey(1), h=1e-6, scale=0.01,
                           grad=grad, n_directions=3, n_coordinates=4)


def test_meta_gradient_matches_finite_differences(x64, er_frozen):
    """dL/deta through the agents' PG update on a frozen (tau, tau-hat), with the MC-return outer
    loss of the ER code (A12), against central differences (float64, relative error < 1e-4).
    The GAE/PPO and Cleanup variants are in test_metagrad_slow.py."""
    _check_meta_gradient(_ER_CONFIG, *er_frozen)


def test_replica_is_the_agents_step(x64, er_frozen):
    """theta-hat(eta) of the meta-gradient is numerically the step the agents took (pipelining)."""
    state, _, _ = er_frozen
    replica = jax.jit(metagrad.theta_hat)(state, state.eta)
    for a, b in zip(jax.tree_util.tree_leaves(replica.params),
                    jax.tree_util.tree_leaves(state.learner_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_incentives_in_range_and_cost_gradient(x64, er_frozen):
    state, tau, _ = er_frozen
    u = jax.jit(metagrad.incentives)(state, state.eta, tau)
    assert u.shape == tau.reward.shape
    assert float(jnp.min(u)) > 0.0 and float(jnp.max(u)) < state.config.r_max

    @jax.jit
    def cost_before_and_after_a_step(eta):  # the cost only pushes incentives down
        g = jax.grad(metagrad.incentive_cost)(eta, state, tau)
        step = jax.tree_util.tree_map(lambda e, gg: e - 1e-3 * gg, eta, g)
        return metagrad.incentive_cost(eta, state, tau), metagrad.incentive_cost(step, state, tau)

    before, after = cost_before_and_after_a_step(state.eta)
    assert float(after) < float(before)


def test_bad_input_rejected_before_compiling():
    """A designer on an environment without a designer observation, or with an empty incentive
    range, fails before anything is compiled."""
    ipd, params = jaxmcg.make("ipd")
    assert_rejected_before_compiling(
        lambda: metagrad.check_env(ipd, params, metagrad.Config()), ["no designer observation",
                                                                      "envs.escape_room:EscapeRoom"])
    er, params = jaxmcg.make("escape_room")
    assert_rejected_before_compiling(
        lambda: metagrad.check_env(er, params, metagrad.Config(r_max=0.0)), ["r_max=0.0", "empty"])
    assert_rejected_before_compiling(lambda: metagrad.Config(advantage="td").validate(),
                                     ["advantage='td'", "'gae'"])
    assert_rejected_before_compiling(
        lambda: metagrad.check_env(er, params, metagrad.Config(learner="lio")), ["learner='lio'"])
    # one episode per update: the batch baseline would be the return itself (a zero meta-gradient)
    key = jax.random.PRNGKey(0)
    assert_rejected_before_compiling(
        lambda: metagrad.init(key, er, params, metagrad.Config(batch_baseline=True), n_envs=1),
        ["batch_baseline=True", "n_envs=1"])


def test_metagrad_solves_er_2_1():
    """A fast learning check that can fail: on ER(2,1) with the agents and designer of preset
    metagrad-er-2-1-batched (128 episodes per update), the designer's reward with incentives
    subtracted on the training episodes reaches >= 7 of the optimum 9 - (1 + eps) ~ 8 within 150
    iterations (measured with lr_cost 3e-3: 8.6 after 60). With the designer frozen at its initial incentive
    function (lr = lr_cost = 0) the same agents both go to the door and it gets -14.5. One jitted
    iteration in a Python loop compiles much faster than `make_train`. The payments of Fig 6.1d
    are checked in test_metagrad_slow.py."""
    from experiments.presets import get_preset

    preset = get_preset("metagrad-er-2-1-batched")
    env, params = jaxmcg.make(preset["env"], **preset["env_params"])
    config = metagrad.Config(**preset["algo_params"])
    env = metagrad.wrap_env(env, config)
    state = metagrad.init(jax.random.PRNGKey(0), env, params, config, n_envs=128, num_steps=5)

    @jax.jit
    def iteration(state, key):
        batch = episode_rollout(env, params, lambda o, k: metagrad.act(state, o, k), key, 128, 5)
        return metagrad.update(state, batch)[0], metagrad.eval_metrics(state, batch)

    returns = []
    for key in jax.random.split(jax.random.PRNGKey(1), 150):
        state, m = iteration(state, key)
        returns.append(float(m["designer_return"]))
    assert np.mean(returns[-10:]) >= 7.0, returns[::10]
