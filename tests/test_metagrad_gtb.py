"""MetaGrad as GTB's tax designer (gtb.md §7.1, §8.3, §11.6): the rates of a period, the replica of
the agents' PPO step, the meta-gradient against finite differences, bad input, learning."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64
from tax_design_checks import preset_chunk_metrics

import jaxmcg
from jaxmcg import tax_design
from jaxmcg.algos import metagrad
from jaxmcg.designer import designer_critic_values
from jaxmcg.rollout import episode_rollout

STEPS = 20  # two tax periods
# small networks; agents' lr 1e-2 so that theta-hat moves visibly with eta
_AGENTS = (("conv", False), ("hidden", (16,)), ("lr", 1e-2), ("lr_critic", 1e-2), ("clip", 0.2),
           ("c_entropy", 0.05), ("grad_clip", None), ("critic_lstm", 8))
CONFIG = metagrad.Config(learner="ppo_shared", learner_params=_AGENTS, network="mlp", hidden=(16,),
                         critic_hidden=(16,), advantage="gae", gae_lambda=0.98, cost="none",
                         lr=1e-3, lr_critic=1e-3, critic_tau=0.1)


def _jitter(tree, key, scale=0.05):
    """Every parameter plus N(0, scale^2): zero biases on all-zero inputs put ReLUs on their kink."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([x + scale * jax.random.normal(k, x.shape, x.dtype)
                              for x, k in zip(leaves, keys)])


def _two_agents_steps(config, keys, jitter):
    """`(env, params, state, tau, tau_hat)`: a state after two real agents' steps, the second on
    tau (stored in it, with the agents before it: their Adam moments hold one step, so that the
    exact derivative through Adam's v is not the degenerate first step's, where the update is
    about lr sign(g)), tau-hat from the updated agents; 2 environments of 20 steps, float32.
    `keys` seed the init, the first rollout, tau and tau-hat (the rollouts must hold taxed income,
    or the rates do not matter); `jitter(state)` perturbs the initial state."""
    env, params = jaxmcg.make("gtb-15x15-v0", tax_model="external", max_steps_in_episode=STEPS)
    metagrad.check_env(env, params, config)
    env = metagrad.wrap_env(env, config)
    k_init, k_first, k_tau, k_hat = keys
    state = jitter(metagrad.init(k_init, env, params, config, n_envs=2, num_steps=STEPS))
    rollout = jax.jit(lambda s, k: episode_rollout(
        env, params, lambda o, kk: metagrad.act(s, o, kk), k, 2, STEPS))
    agents_step = jax.jit(metagrad.agents_step)
    state, _ = agents_step(state, rollout(state, k_first))
    tau = rollout(state, k_tau)
    state, _ = agents_step(state, tau)
    return env, params, state, tau, rollout(state, k_hat)


@pytest.fixture(scope="module")
def frozen():
    """`_two_agents_steps` with the designer's and the agents' weights jittered."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)

    def jitter(state):
        ls = state.learner_state
        return state.replace(eta=_jitter(state.eta, k4), learner_state=ls.replace(
            params=_jitter(ls.params, k4), critic_params=_jitter(ls.critic_params, k3)))

    return _two_agents_steps(CONFIG, (k1, k4, k2, k3), jitter)


def test_rates_of_a_period_are_those_of_its_first_step(frozen):
    """The rates in force (info) are tau of each period's first step, broadcast over the period;
    changing the designer's output at the first step of period 2 changes only that period's rates
    and only the rewards of its tax step (t = 19), and changing it at another step changes
    nothing; at the env's rates the rewards are the env rewards exactly."""
    env, params, state, tau, _ = frozen
    step_rates = metagrad.tax_rates(state, state.eta, tau.obs["designer"])  # [T, E, 7]
    ps = tau.obs["period_start"]
    np.testing.assert_array_equal(np.asarray(ps[:, 0]), np.isin(np.arange(STEPS), [0, 10]))
    env_rates = tau.info["tax"]["rates_env"]
    np.testing.assert_allclose(tax_design.period_rates(step_rates, ps, env_rates), env_rates,
                               rtol=1e-6)
    np.testing.assert_allclose(env_rates[:10], np.broadcast_to(step_rates[0], (10, 2, 7)), rtol=1e-6)
    np.testing.assert_allclose(env_rates[10:], np.broadcast_to(step_rates[10], (10, 2, 7)), rtol=1e-6)
    np.testing.assert_array_equal(tax_design.taxed_rewards(env, params, tau, env_rates), tau.reward)
    enact = np.asarray(tau.info["tax"]["enact"][:, 0])
    np.testing.assert_array_equal(np.flatnonzero(enact), [9, 19])

    # agent 0 earned 12 coin in every period and holds enough to pay (so each tax step taxes it)
    tax = dict(tau.info["tax"], income=tau.info["tax"]["income"].at[:, :, 0].set(12.0),
               inv_coin_pre=tau.info["tax"]["inv_coin_pre"].at[:, :, 0].add(20.0))
    taxed = tau.replace(info={**tau.info, "tax": tax})

    def rewards_with(t, value):
        rates = tax_design.period_rates(step_rates.at[t].set(value), ps, env_rates)
        return rates, tax_design.taxed_rewards(env, params, taxed, rates)

    base_rates, base = rewards_with(0, step_rates[0])  # the designer's own outputs
    rates, rewards = rewards_with(10, 0.9)
    np.testing.assert_allclose(rates[10:], 0.9)
    np.testing.assert_array_equal(rates[:10], base_rates[:10])
    changed = np.any(np.asarray(rewards) != np.asarray(base), axis=2)  # [T, E]
    assert changed[19].all() and not changed[:19].any(), np.argwhere(changed)
    np.testing.assert_array_equal(rewards[:19], tau.reward[:19])  # non-tax steps: env rewards
    rates, rewards = rewards_with(13, 0.9)
    np.testing.assert_array_equal(rates, base_rates)
    np.testing.assert_array_equal(rewards, base)


def _outer(state, tau_hat):
    """The outer objective of `designer_step` as a function of eta (advantages and pi_old fixed)."""
    adv = metagrad.outer_advantages(state, tau_hat)
    return lambda eta: metagrad.outer_loss(eta, state, tau_hat, adv)


def test_replica_and_meta_gradient(frozen, x64):
    """In float64: (1) the replica theta-hat(eta) is the agents' real ppo_shared step (rtol 1e-6),
    with its Adam moments (their Adam state is the one before the step); (2) dL/deta through it
    against central differences, with Adam's v differentiated (the exact derivative) and with
    [MG]'s sg(g)^2 (default), whose gradient is the exact derivative of the loss with v held at
    its value at eta; (3) the two differ (the v term is not negligible)."""
    env, params, state, tau, tau_hat = frozen
    state, tau, tau_hat = f64(state), f64(tau), f64(tau_hat)
    real = jax.jit(lambda s: s.agents.update(s.prev_learner_state, s.prev_batch)[0])(state)
    for second in metagrad.SECOND_MOMENTS:
        s = state.replace(config=dataclasses.replace(CONFIG, replica_second_moment=second))
        replica = jax.jit(metagrad.theta_hat)(s, s.eta)
        for a, b in zip(jax.tree_util.tree_leaves(replica.params),
                        jax.tree_util.tree_leaves(real.params)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)

    exact = state.replace(config=dataclasses.replace(CONFIG, replica_second_moment="differentiate"))
    objective = _outer(exact, tau_hat)
    g_exact = jax.jit(jax.grad(objective))(exact.eta)
    assert_grad_matches_fd(objective, exact.eta, jax.random.PRNGKey(1), h=1e-4, scale=0.1,
                           grad=g_exact, n_directions=3, n_coordinates=3)

    g_mg = jax.jit(jax.grad(_outer(state, tau_hat)))(state.eta)
    module, agents = state.agents.module, state.agents
    grads_at_eta = tax_design.ppo_policy_grads(
        module, state.prev_learner_state,
        agents.learner_batch(metagrad.incentivized(state, state.eta, state.prev_batch)))
    adv = metagrad.outer_advantages(state, tau_hat)

    def v_held(eta):
        batch = agents.learner_batch(metagrad.incentivized(state, eta, state.prev_batch))
        lp = state.prev_learner_state
        params = tax_design.adam_replica_step(tax_design.ppo_policy_grads(module, lp, batch),
                                              lp.opt_state, lp.params, lp.config.lr, grads_at_eta)
        hat = lp.replace(params=params, iteration=lp.iteration + 1)
        logp = metagrad.joint_log_prob(state, hat, tau_hat)
        return -jnp.mean(jnp.sum(logp * adv * tau_hat.valid, axis=0))

    assert_grad_matches_fd(v_held, state.eta, jax.random.PRNGKey(2), h=1e-4, scale=0.1,
                           grad=g_mg, n_directions=3, n_coordinates=3)
    a, b = (jax.flatten_util.ravel_pytree(g)[0] for g in (g_mg, g_exact))
    assert float(jnp.linalg.norm(a - b)) > 1e-3 * float(jnp.linalg.norm(a))


def test_meta_gradient_sign_on_a_known_case(frozen):
    """A hand-built case with a known answer. Every agent sees the same observation and takes NO-OP
    at every step; at each tax step agent 0 has earned 12 coin (brackets 0 and 1: [0, 9.7) and
    [9.7, 39.475)) and holds 30, the others earned nothing and hold 10. Raising a rate of bracket 0
    or 1 moves coin from agent 0 to the poorer agents, whose CRRA utility is steeper, so the sum of
    the agents' rewards rises; with identical samples the agents' PPO step then raises
    log pi(NO-OP) more, which an outer advantage of +1 everywhere rewards: dL/d tau_b < 0 for
    b = 0, 1, and exactly 0 for the brackets no income reaches. One designer step on this batch
    (R^ID = 1 per step, so the ID critic's advantages are positive) raises tau_0 and tau_1 on
    average over the two periods' views and both environments."""
    env, params, state, tau, _ = frozen
    t, e, n = tau.reward.shape
    same = lambda x: jnp.broadcast_to(x[0, 0, 0], x.shape)  # noqa: E731
    zeros = jnp.zeros((t, e, n))
    tax = dict(tau.info["tax"], income=zeros.at[..., 0].set(12.0),
               inv_coin_pre=zeros.at[..., 0].set(30.0).at[..., 1:].set(10.0), esc_coin=zeros,
               labor=zeros, util_prev=zeros, rates_env=jnp.full((t, e, 7), 0.3))
    batch = tau.replace(obs=dict(tau.obs, agents=same(tau.obs["agents"])),
                        next_obs=dict(tau.next_obs, agents=same(tau.next_obs["agents"])),
                        action=dict(tau.action, agents=jnp.zeros((t, e, n), jnp.int32)),
                        reward=zeros, info={**tau.info, "tax": tax,
                                            "designer_reward": jnp.ones((t, e))})
    agents, lstate = state.agents, state.prev_learner_state

    @jax.jit
    def grad_and_step(rates):
        def loss(rates):
            rewards = tax_design.taxed_rewards(env, params, batch,
                                               jnp.broadcast_to(rates, (t, e, 7)))
            hat = tax_design.ppo_replica(agents.module, lstate,
                                         agents.learner_batch(batch.replace(reward=rewards)))
            return -jnp.mean(jnp.sum(metagrad.joint_log_prob(state, hat, batch), axis=0))

        s = state.replace(prev_batch=batch)
        new, _ = metagrad.designer_step(s, batch)
        views = jax.tree_util.tree_map(lambda x: x[jnp.array([0, 10])], batch.obs["designer"])
        return (jax.grad(loss)(rates), metagrad.tax_rates(s, s.eta, views),
                metagrad.tax_rates(new, new.eta, views))

    g, before, after = (np.asarray(x) for x in grad_and_step(jnp.full(7, 0.3)))
    assert g[0] < 0 and g[1] < 0 and np.all(g[2:] == 0), g
    # on average over the two periods' views and environments (the hidden layer moves the other
    # outputs too; measured: +0.006, one of the 8 values -0.0003)
    assert np.mean(after[..., :2] - before[..., :2]) > 0.002, (before[..., :2], after[..., :2])


def test_bad_input_rejected_before_compiling():
    """Blind planner, other learners, shared ppo_shared, an incentive cost, an empty planner
    network: each fails before anything is compiled, naming the value and the valid ones."""
    blind, params = jaxmcg.make("gtb-15x15-v0", designer_obs="none")
    assert_rejected_before_compiling(lambda: metagrad.check_env(blind, params, CONFIG),
                                     ["designer_obs='none'", "'foundation'"])
    env, params = jaxmcg.make("gtb-15x15-v0")
    key = jax.random.PRNGKey(0)
    for bad, needles in (
            (dataclasses.replace(CONFIG, learner="pg"), ["learner='pg'", "'ppo_shared'"]),
            (dataclasses.replace(CONFIG, share_parameters=True), ["share_parameters=True"]),
            (dataclasses.replace(CONFIG, cost="paid"), ["cost='paid'", "'none'"]),
            (dataclasses.replace(CONFIG, hidden=()), ["hidden=()"]),
            (dataclasses.replace(CONFIG, replica_second_moment="x"),
             ["replica_second_moment='x'", "'stop_gradient'"]),
            (dataclasses.replace(CONFIG, designer_lstm=-1), ["designer_lstm=-1", ">= 0"])):
        assert_rejected_before_compiling(lambda bad=bad: metagrad.check_env(env, params, bad),
                                         needles)
        assert_rejected_before_compiling(
            lambda bad=bad: metagrad.init(key, env, params, bad), needles)
    er, er_params = jaxmcg.make("escape_room")
    assert_rejected_before_compiling(lambda: metagrad.check_env(
        er, er_params, metagrad.Config(designer_lstm=8)), ["designer_lstm=8", "tax economy"])


@pytest.mark.parametrize("preset", ["metagrad-gtb", "metagrad-gtb-curriculum"])
def test_preset_chunk_keeps_state_avals(preset):
    """The presets build (thesis networks, §8.3, with the curriculum's LSTM designer) and a chunk
    returns the runner state with the shapes and dtypes it was given (one compile per run),
    without compiling anything."""
    metrics = preset_chunk_metrics(metagrad, preset)
    assert metrics["tax/rates"].shape == (7,) and metrics["tax/paid_by_skill"].shape == (4,)
    assert metrics["action_frequency"].shape == (4, 50)


@pytest.fixture(scope="module")
def recurrent():
    """`(state, tau, tau_hat)` of `_two_agents_steps` with curriculum's LSTM designer (8 units,
    §8.3), its weights jittered."""
    config = dataclasses.replace(CONFIG, designer_lstm=8, replica_second_moment="differentiate")
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    _, _, state, tau, tau_hat = _two_agents_steps(config, (k1, k1, k2, k3), lambda state: state.replace(
        eta=_jitter(state.eta, k2, 0.3), critic_params=_jitter(state.critic_params, k2)))
    return state, tau, tau_hat


def test_recurrent_designer_acts_as_it_replays(recurrent):
    """Acting step by step from the (c, h) TaxDesign carries (zeros at the episode's start) sets the
    rates the incentive function gives when run over the stored episode (what the replica
    differentiates); the ID critic's next value continues the episode."""
    state, tau, _ = recurrent
    memory = np.asarray(tau.obs["designer_memory"])
    assert memory.shape == (STEPS, 2, 16) and np.all(memory[0] == 0) and np.all(memory[1] != 0)
    replayed = np.asarray(metagrad.tax_rates(state, state.eta, tau.obs["designer"]))
    np.testing.assert_allclose(np.asarray(tau.action["tax_rates"]), replayed, rtol=1e-5)
    assert np.ptp(replayed[:, 0, 0]) > 1e-3  # the rates move with the history
    v, v_next = (np.asarray(x) for x in designer_critic_values(state, state.critic_params,
                                                               tau.info))
    np.testing.assert_allclose(v_next[:-1], v[1:], rtol=1e-5, atol=1e-7)


def test_recurrent_designer_meta_gradient(recurrent, x64):
    """dL/deta through the LSTM incentive function, the replica (Adam's v differentiated) and the
    agents' recurrent critic, float64, against central differences."""
    state, _, tau_hat = recurrent
    state, tau_hat = f64(state), f64(tau_hat)
    objective = _outer(state, tau_hat)
    assert_grad_matches_fd(objective, state.eta, jax.random.PRNGKey(3), h=1e-4, scale=0.1,
                           grad=jax.jit(jax.grad(objective))(state.eta), n_directions=3,
                           n_coordinates=3)
