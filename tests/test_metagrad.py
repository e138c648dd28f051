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
from jaxmcg.train import TrainConfig, make_train

_SMALL_AC = (("hidden", (8,)), ("critic_hidden", (8,)), ("lr", 1e-2), ("eps_start", 0.2))


def _frozen(config, env_id="escape_room", n_envs=6, seed=0, **env_kw):
    """A state after one agents' step on tau, tau itself (stored in the state) and tau-hat sampled
    from the updated agents; float64 when x64 is on."""
    env, params = jaxmcg.make(env_id, **env_kw)
    env = metagrad.wrap_env(env, config)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    steps = env.horizon(params)
    state = metagrad.init(k1, env, params, config, n_envs=n_envs, num_steps=steps)
    to64 = f64 if jax.config.read("jax_enable_x64") else (lambda t: t)
    # every parameter shifted by 0.01: zero-initialised biases put ReLUs fed by an all-zero layer
    # exactly on their kink, where finite differences are meaningless (as test_ac_images.off_kinks)
    shift = lambda tree: jax.tree_util.tree_map(lambda p: p + 0.01, tree)  # noqa: E731
    state = to64(state.replace(
        eta=shift(state.eta),
        learner_state=state.learner_state.replace(params=shift(state.learner_state.params))))
    rollout = jax.jit(lambda s, k: episode_rollout(
        env, params, lambda o, kk: metagrad.act(s, o, kk), k, n_envs, steps))
    tau = to64(rollout(state, k2))
    state, _ = jax.jit(metagrad.update)(state, tau)  # no ID step yet; agents step on tau
    tau_hat = to64(rollout(state, k3))
    return state, tau, tau_hat


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
    _, state = wrapped.reset_env(jax.random.PRNGKey(0), params)
    # put an apple under agent 1 so that staying collects it
    r, c = (int(x) for x in env.spawn_points[1])
    state = state.replace(apples=state.apples.at[r, c].set(True))
    actions = jnp.array([FIRE, STAY])
    _, _, reward, _, info = wrapped.step_env(jax.random.PRNGKey(1), state, actions, params)
    np.testing.assert_allclose(info["designer_obs"], env.global_obs(state, params))
    assert info["designer_obs"].shape == env.global_obs_shape
    np.testing.assert_array_equal(info["designer_features"], [1.0, 0.0])
    np.testing.assert_allclose(reward, [0.0, 1.0])
    np.testing.assert_array_equal(info["designer_action_type"], [0, 1])
    assert float(info["designer_reward"]) == 1.0


def test_paid_by_type():
    nodes = jnp.array([[0.5, 1.0, 1.5]])
    np.testing.assert_allclose(paid_by_type(nodes, jnp.array([[2, 0, 0, 1]])), [[1.5, 0.5, 0.5, 1.0]])


@pytest.mark.parametrize("kind", ["er-pg", pytest.param("er-pg-gae-ppo", marks=pytest.mark.slow),
                                  "cleanup-ac-shared"])
def test_meta_gradient_matches_finite_differences(x64, kind):
    """dL/deta through the agents' update on a frozen (tau, tau-hat), against central differences
    (float64, relative error < 1e-4): PG agents with the MC-return outer loss (ER), PG with the
    GAE/PPO outer loss, and actor-critic agents with shared parameters on Cleanup, whose TD error
    stops gradients (the straight-through actor loss must give the true derivative)."""
    if kind == "cleanup-ac-shared":
        config = metagrad.Config(learner="ac", learner_params=_SMALL_AC, share_parameters=True,
                                 hidden=(8, 8), critic_hidden=(8,), advantage="gae", ppo_clip=0.2)
        state, tau, tau_hat = _frozen(config, "cleanup-7x7", n_envs=2, max_steps_in_episode=12)
    else:
        gae = kind == "er-pg-gae-ppo"
        config = metagrad.Config(learner_params=(("hidden", (16, 16)), ("lr", 0.5),
                                                 ("entropy_coef", 0.01)),
                                 advantage="gae" if gae else "return", ppo_clip=0.2 if gae else None,
                                 hidden=(16, 8), critic_hidden=(8,))
        state, tau, tau_hat = _frozen(config, num_agents=3, min_lever_pullers=2)
    np.testing.assert_array_equal(np.asarray(state.prev_batch.reward), np.asarray(tau.reward))
    adv = metagrad.outer_advantages(state, tau_hat)
    # PPO: pi_old is the agents' policy after their step (theta-hat at this eta), as designer_step
    old = metagrad.joint_log_prob(state, state.learner_state, tau_hat) if config.ppo_clip else None
    objective = lambda eta: metagrad.outer_loss(eta, state, tau_hat, adv, old)  # noqa: E731
    grad = jax.jit(jax.grad(objective))(state.eta)
    assert_grad_matches_fd(objective, state.eta, jax.random.PRNGKey(1), h=1e-6, scale=0.01,
                           grad=grad, n_directions=3, n_coordinates=4)


def test_replica_is_the_agents_step():
    """theta-hat(eta) of the meta-gradient is numerically the step the agents took (pipelining)."""
    config = metagrad.Config(learner_params=(("hidden", (16, 16)), ("lr", 0.5)))
    state, _, _ = _frozen(config, num_agents=3, min_lever_pullers=2)
    replica = jax.jit(metagrad.theta_hat)(state, state.eta)
    for a, b in zip(jax.tree_util.tree_leaves(replica.params),
                    jax.tree_util.tree_leaves(state.learner_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_incentives_in_range_and_cost_gradient():
    config = metagrad.Config(r_max=2.0)
    state, tau, _ = _frozen(config, num_agents=3, min_lever_pullers=2)
    u = metagrad.incentives(state, state.eta, tau)
    assert u.shape == tau.reward.shape
    assert float(jnp.min(u)) > 0.0 and float(jnp.max(u)) < 2.0
    # the cost only pushes incentives down
    g = jax.grad(metagrad.incentive_cost)(state.eta, state, tau)
    step = jax.tree_util.tree_map(lambda e, gg: e - 1e-3 * gg, state.eta, g)
    assert float(metagrad.incentive_cost(step, state, tau)) < float(
        metagrad.incentive_cost(state.eta, state, tau))


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


def test_metagrad_solves_er_2_1():
    """Thesis Fig 6.1d: on ER(2,1) the ID pays the lever-puller and not the winner, and its reward
    with incentives subtracted reaches 9 - (1 + eps) ~ 8. Here the agents' policies saturate
    before psi brings the lever payment down to 1 + eps, after which it drops below that and the
    saturated lever-puller keeps pulling (designer reward up to 9): the test asks for cooperation,
    a payment below the maximum 2 for the lever and about 0 for the door."""
    from experiments.presets import get_preset

    preset = get_preset("metagrad-er-2-1-batched")
    env, params = jaxmcg.make(preset["env"], **preset["env_params"])
    config = metagrad.Config(**preset["algo_params"])
    tc = TrainConfig(**{**preset["train"], "iterations": 600, "log_every": 50, "eval_envs": 512})
    train = make_train(metagrad, env, params, config, tc)
    _, m = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 2))
    dr = np.asarray(m["designer_return"])[:, -3:].mean(axis=1)
    assert np.median(dr) >= 7.0, dr
    rec = np.asarray(m["metagrad/received_by_type"])[:, -1]  # [seed, agent, type]
    freq = np.asarray(m["action_frequency"])[:, -1]  # [seed, agent, action]
    for s in range(2):
        if dr[s] >= 7.0:
            coop = int(np.argmax(freq[s, :, 0]))  # the lever-puller
            assert rec[s, coop, 0] <= 1.6, rec[s]
            assert rec[s, 1 - coop, 2] < 0.3, rec[s]  # the winner at the door
