"""LIO: meta-gradient against finite differences, exact IPD, learning on Escape Room and the IPD."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64
from seeds import final_moving_average, train_seeds

import jaxmcg
from jaxmcg import exact_lio
from jaxmcg.algos import lio
from jaxmcg.rollout import episode_rollout
from jaxmcg.train import TrainConfig, make_train


def _frozen_batches(config, n=2, m=1, n_envs=6, seed=0, env_id="escape_room", **env_kw):
    """A state and two trajectories (tau, tau-hat) in float64, with incentive outputs away from
    saturation so that finite differences are well conditioned. Cached per worker: building them
    compiles two rollouts, and the results are immutable."""
    return _frozen_batches_cached(config, n, m, n_envs, seed, env_id, tuple(sorted(env_kw.items())),
                                  jax.config.read("jax_enable_x64"))


@functools.lru_cache(maxsize=16)
def _frozen_batches_cached(config, n, m, n_envs, seed, env_id, env_items, _x64):
    env_kw = dict(env_items)
    if env_id == "escape_room":
        env_kw = {"num_agents": n, "min_lever_pullers": m, **env_kw}
    env, params = jaxmcg.make(env_id, **env_kw)
    env = lio.wrap_env(env, config)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    state = lio.init(k1, env, params, config, n_envs=n_envs)
    to64 = f64 if jax.config.read("jax_enable_x64") else (lambda t: t)
    state = to64(state)
    act = lambda s: (lambda o, k: lio.act(s, o, k))
    rollout = jax.jit(lambda s, k: episode_rollout(env, params, act(s), k, n_envs, 5))
    tau = to64(rollout(state, k2))
    state, _ = jax.jit(lio.policy_step)(state, tau)
    tau_hat = to64(rollout(state, k3))
    return state, tau, tau_hat




# ER(3, 2) in the slow suite, to keep `make test` under 15 minutes on 2 cores
@pytest.mark.parametrize("n,m,learner", [(2, 1, "pg"), pytest.param(3, 2, "pg", marks=pytest.mark.slow),
                                         (2, 1, "ac"), pytest.param(3, 2, "ac", marks=pytest.mark.slow)])
def test_meta_gradient_matches_finite_differences(x64, n, m, learner):
    """d L^i / d eta^i through the inner SGD step, both implementations, vs central differences
    of the outer objective on a frozen batch (float64, relative error < 1e-4). learner="ac": the
    TD-error inner step and outer advantage of LIO's actor-critic form (Eq B.9, A7)."""
    state, tau, tau_hat = _frozen_batches(lio.Config(learner=learner), n=n, m=m)
    theta, eps = state.prev_params, state.prev_eps
    lin = jax.jit(lambda s: lio.meta_grad_linearized(s, theta, s.eta, tau, tau_hat, eps, range(n)))(state)
    auto = jax.jit(lambda s: lio.meta_grad_autodiff(s, theta, s.eta, tau, tau_hat, eps, range(n)))(state)
    for i in range(n):
        def objective(eta_i, i=i):
            eta = jax.tree_util.tree_map(lambda e, ei: e.at[i].set(ei), state.eta, eta_i)
            theta_hat = lio.inner_step(theta, eta, state, tau, eps)
            return lio.outer_loss(theta_hat, state, tau_hat, i)

        eta_i = jax.tree_util.tree_map(lambda e, i=i: e[i], state.eta)
        for grad in (lin[i], auto[i]):
            # h = 1e-4 crosses a ReLU kink of the incentive net in the (3, 2, ac) case
            assert_grad_matches_fd(objective, eta_i, jax.random.PRNGKey(i), h=1e-6, scale=0.01,
                                   grad=grad, n_directions=3, n_coordinates=4)
    for a, b in zip(jax.tree_util.tree_leaves(lin), jax.tree_util.tree_leaves(auto)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.slow  # about 55 s; the validation test below stays in the default suite
def test_all_givers_gradients_reach_every_giver(x64):
    """incentive_update="all_givers" (the released ER code's reward op): giver i's gradient covers
    every giver's eta. On ER(3,2) both implementations agree, match central differences of L^i in
    all of eta, give the own-eta gradient on slice i, and are non-zero on the other givers' slices
    (their gifts move theta-hat^j for j != i too)."""
    config = lio.Config(incentive_update="all_givers")
    state, tau, tau_hat = _frozen_batches(config, n=3, m=2, n_envs=4)
    theta, eps = state.prev_params, state.prev_eps
    grads = {mg: jax.jit(lambda s, mg=mg: lio.incentive_grads(
        s.replace(config=lio.Config(incentive_update="all_givers", meta_grad=mg)),
        theta, tau, tau_hat, eps))(state) for mg in ("linearized", "autodiff")}
    for a, b in zip(jax.tree_util.tree_leaves(grads["linearized"]),
                    jax.tree_util.tree_leaves(grads["autodiff"])):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    own = jax.jit(lambda s: lio.meta_grad_linearized(s, theta, s.eta, tau, tau_hat, eps, range(3)))(state)
    full = grads["linearized"]
    for i in range(3):
        full_i = jax.tree_util.tree_map(lambda g, i=i: g[i], full)
        for a, b in zip(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda g, i=i: g[i], full_i)),
                        jax.tree_util.tree_leaves(own[i])):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)
        cross = [np.abs(np.asarray(g[k])).max() for g in jax.tree_util.tree_leaves(full_i)
                 for k in range(3) if k != i]
        assert max(cross) > 1e-8, (i, cross)
        objective = lambda eta, i=i: lio.outer_loss(  # noqa: E731
            lio.inner_step(theta, eta, state, tau, eps), state, tau_hat, i)
        assert_grad_matches_fd(objective, state.eta, jax.random.PRNGKey(i), h=1e-6, scale=0.01,
                               grad=full_i, n_directions=2, n_coordinates=2)


@pytest.mark.slow  # about 36 s (compiles N = 3 rollouts and steps); validation is below
def test_all_givers_update_adds_one_adam_step_per_giver():
    """The state keeps one Adam per giver over all of eta, and an incentive step moves eta by the
    sum of their steps plus the cost's (separate optimiser), as the code's per-giver ops do."""
    config = lio.Config(incentive_update="all_givers")
    state, tau, tau_hat = _frozen_batches(config, n=3, m=2, n_envs=4)
    counts = np.asarray(jax.tree_util.tree_leaves(state.eta_opt_state)[0])
    assert counts.shape == (3,)
    new, _ = jax.jit(lio.incentive_step)(state.replace(has_prev=jnp.ones((), bool)), tau_hat)
    meta = jax.jit(lambda s: lio.incentive_grads(s, s.prev_params, s.prev_batch, tau_hat,
                                                 s.prev_eps))(state)
    # Adam's first step is -lr g / (|g| + 1e-8): summed over the givers' Adams, plus the cost's
    first = lambda g, lr: -lr * g / (jnp.abs(g) + 1e-8)  # noqa: E731
    expect = jax.tree_util.tree_map(lambda g: jnp.sum(first(g, config.lr_incentive), 0), meta)
    cost_grads = jax.grad(lio.incentive_cost)(state.eta, state, state.prev_batch)
    expect = jax.tree_util.tree_map(lambda e, c: e + first(c, config.lr_cost), expect, cost_grads)
    moved = jax.tree_util.tree_map(lambda a, b: a - b, new.eta, state.eta)
    for a, b in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(expect)):
        np.testing.assert_allclose(a, b, atol=5e-7)  # float32 eta of order 1
    # only givers train: with givers=(0,) the others' objectives move nothing
    solo = state.replace(config=lio.Config(incentive_update="all_givers", givers=(0,)))
    meta = jax.jit(lambda s: lio.incentive_grads(s, s.prev_params, s.prev_batch, tau_hat,
                                                 s.prev_eps))(solo)
    for g in jax.tree_util.tree_leaves(meta):
        assert not np.any(np.asarray(g[1:])) and np.any(np.asarray(g[0]))


def test_cost_step_is_adam_with_its_epsilon():
    """With the meta-gradient step switched off (lr_incentive 0), one incentive step moves eta by
    Adam's first step on the cost alone, -lr_cost g / (|g| + cost_adam_eps): a normalised step of
    lr_cost at the default epsilon, and a step that shrinks with g where |g| is below a large one."""
    state, _, tau_hat = _frozen_batches(lio.Config())
    state = state.replace(has_prev=jnp.ones((), bool))
    cost_grads = jax.tree_util.tree_leaves(
        jax.grad(lio.incentive_cost)(state.eta, state, state.prev_batch))
    for eps in (1e-8, 1e-2):
        config = lio.Config(lr_incentive=0.0, lr_cost=1e-3, cost_adam_eps=eps)
        new, _ = jax.jit(lio.incentive_step)(state.replace(config=config), tau_hat)
        moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(jnp.subtract, new.eta, state.eta))
        for d, g in zip(moved, cost_grads):
            g = np.asarray(g, np.float64)
            np.testing.assert_allclose(d, -1e-3 * g / (np.abs(g) + eps), atol=5e-7)  # f32 eta
        tiny = np.concatenate([np.abs(np.asarray(d))[np.abs(np.asarray(g)) < 1e-4]
                               for d, g in zip(moved, cost_grads)])
        assert tiny.size  # coordinates with tiny cost gradients exist (e.g. inactive ReLUs)
        if eps > 1e-3:  # |step| <= lr |g| / eps: at least 100x under lr_cost
            assert tiny.max() < 1e-5
        else:  # normalised: any non-zero gradient above ~eps moves by about lr_cost
            assert np.abs(np.concatenate([np.ravel(d) for d in moved])).max() > 0.9e-3


def test_meta_gradient_step_is_adam_with_its_epsilon():
    """With the cost switched off, one incentive step moves eta by Adam's first step on the
    meta-gradient, -lr g / (|g| + incentive_adam_eps), plus -lr * incentive_weight_decay * eta once
    the iteration reaches incentive_weight_decay_start. The meta-gradient is small (it carries the
    recipients' lr), so the default epsilon normalises it to steps of lr, and one above its scale
    turns the step into lr g / eps, far below lr."""
    state, _, tau_hat = _frozen_batches(lio.Config())
    state = state.replace(has_prev=jnp.ones((), bool))
    meta = jax.tree_util.tree_leaves(lio.incentive_grads(
        state, state.prev_params, state.prev_batch, tau_hat, state.prev_eps))
    assert max(float(jnp.abs(g).max()) for g in meta) < 0.05  # small next to the eps of 1 below
    eta = jax.tree_util.tree_leaves(state.eta)
    step = jax.jit(lio.incentive_step)
    for eps, decay, start, iteration in ((1e-8, 0.0, 0.0, 0), (1.0, 0.0, 0.0, 0), (1.0, 0.5, 0.0, 0),
                                         (1.0, 0.5, 7.0, 6), (1.0, 0.5, 7.0, 7)):
        config = lio.Config(lr_incentive=1e-3, cost_coef=0.0, incentive_adam_eps=eps,
                            incentive_weight_decay=decay, incentive_weight_decay_start=start)
        new, _ = step(state.replace(config=config, iteration=jnp.asarray(iteration, jnp.int32)),
                      tau_hat)
        decay = decay if iteration >= start else 0.0
        moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(jnp.subtract, new.eta, state.eta))
        for d, g, w in zip(moved, meta, eta):
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
            # AdamW's decoupled decay adds -lr * decay * eta to Adam's step
            np.testing.assert_allclose(d, -1e-3 * (g / (np.abs(g) + eps) + decay * w),
                                       atol=5e-7, rtol=1e-3)
        largest = max(float(np.abs(d).max()) for d in moved)
        assert largest > 0.9e-3 if eps < 1e-6 else largest < (1e-4 if not decay else 1e-3)


def test_logit_penalty_is_the_squared_logit_of_the_payments():
    """logit_penalty = sum_t (env mean) of logit(given / R_max)^2 over givers and recipients, and one
    incentive step with only the penalty (no meta-gradient, no cost) shrinks it."""
    state, _, tau_hat = _frozen_batches(lio.Config(), n=3, m=2)
    state = state.replace(has_prev=jnp.ones((), bool))
    batch = state.prev_batch
    sig = np.asarray(lio.given_by(state, state.eta, batch.obs, batch.action.action), np.float64)
    sig = sig / state.config.r_max
    off = ~np.eye(3, dtype=bool)
    sig = np.where(off, sig, 0.5)  # the diagonal's 0 is no payment, and no logit
    z2 = np.where(off, np.log(sig / (1 - sig)) ** 2, 0.0).sum(axis=(-1, -2))
    expected = (z2 * np.asarray(batch.valid)).sum(0).mean()
    np.testing.assert_allclose(lio.logit_penalty(state.eta, state, batch), expected, rtol=1e-4)
    step = jax.jit(lio.incentive_step)
    for l2 in (0.0, 1e-2):
        config = lio.Config(lr_incentive=0.0, cost_coef=0.0, lr_cost=1e-3, logit_l2=l2)
        new, _ = step(state.replace(config=config), tau_hat)
        before, after = (float(lio.logit_penalty(s.eta, state, batch)) for s in (state, new))
        if l2:
            assert after < before - 1e-3
        else:  # nothing else moves eta: the l1 cost enters with cost_coef 0
            assert after == before


def test_logit_bound_steps_overshooting_logits_back():
    """logit_overshoot = sum_t (env mean) of relu(|logit(given / R_max)| - logit_bound)^2, zero
    inside the bound; with eta scaled until the logits pass it, one incentive step (cost off)
    shrinks the overshoot under either incentive_update, and without the bound it does not."""
    state, _, tau_hat = _frozen_batches(lio.Config(), n=3, m=2)
    state = state.replace(has_prev=jnp.ones((), bool))
    batch = state.prev_batch
    big = state.replace(eta=jax.tree_util.tree_map(lambda w: 3.0 * w, state.eta))
    z = np.asarray(lio._logits(big, big.eta, batch.obs, batch.action.action), np.float64)
    bound = float(np.quantile(np.abs(z[..., ~np.eye(3, dtype=bool)]), 0.5))  # half of them outside
    over = np.maximum(np.abs(z) - bound, 0.0) ** 2
    expected = (over.sum(axis=(-1, -2)) * np.asarray(batch.valid)).sum(0).mean()
    assert expected > 0
    config = lio.Config(lr_incentive=1e-2, cost_coef=0.0, logit_bound=bound)
    np.testing.assert_allclose(lio.logit_overshoot(big.eta, big.replace(config=config), batch),
                               expected, rtol=1e-4)
    inside = lio.Config(logit_bound=float(np.abs(z).max()) + 1.0)
    assert float(lio.logit_overshoot(big.eta, big.replace(config=inside), batch)) == 0.0
    step = jax.jit(lio.incentive_step)
    for update, b in (("own", bound), ("all_givers", bound), ("own", 0.0)):
        config = lio.Config(lr_incentive=1e-2, cost_coef=0.0, logit_bound=b, incentive_update=update)
        s = big.replace(config=config, eta_opt_state=lio._init_eta_opt(
            lio._adam_pair(config)[0], config, big.eta, 3))
        new, _ = step(s, tau_hat)
        measure = big.replace(config=lio.Config(logit_bound=bound))
        before, after = (float(lio.logit_overshoot(e, measure, batch)) for e in (big.eta, new.eta))
        if b:
            assert after < 0.9 * before
        else:  # the meta-gradient alone moves every weight by ~lr in no particular direction
            assert after > 0.9 * before


def test_saturated_counts_payments_that_no_longer_move():
    state, tau, _ = _frozen_batches(lio.Config(), n=3, m=2)
    fresh = np.asarray(lio.given_metrics(state, tau)["lio/saturated"])
    np.testing.assert_array_equal(fresh, np.zeros(3))  # init logits are O(1)
    big = state.replace(eta=jax.tree_util.tree_map(lambda w: 1e4 * w, state.eta))
    np.testing.assert_array_equal(lio.given_metrics(big, tau)["lio/saturated"], np.ones(3))
    one_giver = big.replace(config=lio.Config(givers=(0,)))  # non-givers pay nothing: never saturated
    np.testing.assert_array_equal(lio.given_metrics(one_giver, tau)["lio/saturated"], [1.0, 0.0, 0.0])


def test_incentive_update_is_validated():
    with pytest.raises(ValueError, match="incentive_update"):
        lio.Config(incentive_update="all_givers", decentralized=True).validate()
    with pytest.raises(ValueError, match="valid: 'own', 'all_givers'"):
        lio.Config(incentive_update="mine").validate()
    with pytest.raises(ValueError, match="cost_adam_eps=0.0 is invalid; valid: a number > 0"):
        lio.Config(cost_adam_eps=0.0).validate()
    with pytest.raises(ValueError, match="incentive_adam_eps=-1.0 is invalid; valid: a number > 0"):
        lio.Config(incentive_adam_eps=-1.0).validate()
    with pytest.raises(ValueError, match="logit_l2=-0.1 is invalid; valid: a number >= 0"):
        lio.Config(logit_l2=-0.1).validate()
    with pytest.raises(ValueError, match="incentive_weight_decay=-1.0 is invalid; valid: a number >= 0"):
        lio.Config(incentive_weight_decay=-1.0).validate()
    with pytest.raises(ValueError, match="incentive_weight_decay_start=-1.0 is invalid"):
        lio.Config(incentive_weight_decay_start=-1.0).validate()
    with pytest.raises(ValueError, match="logit_bound=-6.0 is invalid; valid: a number >= 0"):
        lio.Config(logit_bound=-6.0).validate()
    with pytest.raises(ValueError, match="cost_adam_eps=0.0001 needs the separate cost optimiser"):
        lio.Config(cost_adam_eps=1e-4, separate_cost_optimizer=False).validate()


def test_linearized_equals_autodiff_decentralized(x64):
    """LIO-dec: each giver differentiates through its own estimates of the others' policies."""
    config = lio.Config(decentralized=True)
    state, tau, tau_hat = _frozen_batches(config)
    grads = {}
    for mg in ("linearized", "autodiff"):
        s = state.replace(config=lio.Config(decentralized=True, meta_grad=mg))
        grads[mg] = jax.jit(lambda s: lio.incentive_grads(s, s.prev_params, tau, tau_hat, s.prev_eps))(s)
    for a, b in zip(jax.tree_util.tree_leaves(grads["linearized"]),
                    jax.tree_util.tree_leaves(grads["autodiff"])):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("learner", ["pg", "ac"])
def test_policy_step_is_the_inner_step(learner):
    """The step applied to theta is numerically the in-graph replica the meta-gradient uses."""
    state, tau, _ = _frozen_batches(lio.Config(learner=learner))
    replica = jax.jit(lio.inner_step)(state.prev_params, state.eta, state, tau, state.prev_eps)
    for a, b in zip(jax.tree_util.tree_leaves(replica), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_incentives_exclude_self_and_respect_rmax():
    state, tau, _ = _frozen_batches(lio.Config(r_max=2.0), n=3, m=2)
    given = tau.action.given
    assert given.shape[-2:] == (3, 3)
    assert float(jnp.max(jnp.abs(jnp.diagonal(given, axis1=-2, axis2=-1)))) == 0.0
    assert float(jnp.min(given)) >= 0.0 and float(jnp.max(given)) <= 2.0


def test_cumulative_given_is_observed():
    """Agent i's observation ends with what it gave each other agent so far in the episode."""
    state, tau, _ = _frozen_batches(lio.Config(), n=3, m=2)
    given = np.asarray(tau.action.given) * np.asarray(tau.valid)[..., None, None]
    cum = np.cumsum(given, axis=0)  # through step t
    obs = np.asarray(tau.obs)
    np.testing.assert_allclose(obs[0, ..., -2:], 0.0)
    for t in range(1, 5):
        alive = np.asarray(tau.valid[t]) > 0
        for i in range(3):
            others = [j for j in range(3) if j != i]
            np.testing.assert_allclose(obs[t, alive, i, -2:], cum[t - 1][alive][:, i, others], rtol=1e-5)


def test_exact_lio_matches_closed_form_and_cooperates():
    """Thesis Prop. 3: exact gradients equal Eq B.4-B.8, eta_C - eta_D - 1 turns positive and both
    agents end up cooperating (theta -> 1)."""
    rng = np.random.default_rng(0)
    step = jax.jit(exact_lio.exact_lio_step, static_argnums=(2, 3, 4))
    for _ in range(5):
        theta = jnp.asarray(rng.uniform(0.1, 0.9, 2), jnp.float32)
        eta = jnp.asarray(rng.uniform(0, 3, (2, 2)), jnp.float32)
        a = exact_lio.exact_lio_step(theta, eta, 0.01, 0.1, 0.9)
        b = exact_lio.closed_form_step(theta, eta, 0.01, 0.1, 0.9)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        for _ in range(300):
            theta, eta = step(theta, eta, 0.01, 0.1, 0.9)
        assert np.all(np.asarray(eta[:, 0] - eta[:, 1] - 1.0) > 0)
        np.testing.assert_allclose(theta, 1.0)


def _train(env_id, config, n_envs, iterations, seeds, log_every=50, **env_kw):
    env, params = jaxmcg.make(env_id, **env_kw)
    tc = TrainConfig(n_envs=n_envs, iterations=iterations, log_every=log_every, eval_envs=1024)
    train = make_train(lio, env, params, config, tc)
    return train_seeds(train, seeds)[1]


def test_lio_solves_er_2_1():
    """Thesis Fig 5.5a: LIO approaches the optimum 9 on ER(2,1) with 256 envs and 5 seeds (the
    issue: median >= 8.5 in under 2 minutes on 2 cores). Measured (stop 30, the CLI with these
    keys, one core): moving averages 8.67, 8.83, 8.55, 8.74, 8.94 at 1,600 iterations, the median
    at 8.5 from iteration 1,350; 43.6 s + 9.2 s compile."""
    seeds = 5
    m = _train("escape_room", lio.Config(), 256, 1600, seeds)
    final = final_moving_average(m["collective_return"])
    assert np.median(final) >= 8.5, final
    # the cooperator (the agent that pulls the lever) is paid for "lever" more than for the rest
    freq = m["action_frequency"][:, -1]  # [seed, agent, action]
    rec = m["lio/received_by_action"][:, -1]
    for s in range(seeds):
        if final[s] >= 8.5:
            coop = int(np.argmax(freq[s, :, 0]))
            assert rec[s, coop, 0] > max(rec[s, coop, 1], rec[s, coop, 2]), rec[s]


@pytest.mark.slow
def test_lio_actor_critic_form_solves_er_2_1():
    """LIO's Cleanup form (TD-error inner step, thesis Eq B.9) learns where it is cheap to check:
    ER(2,1) with 256 envs (measured: 3 of 3 seeds at 8.6-9.0 by iteration 800)."""
    m = _train("escape_room", lio.Config(learner="ac"), 256, 1200, 2)
    final = final_moving_average(m["collective_return"])
    assert np.median(final) >= 8.5, final


def _preset_config(name, **extra):
    from experiments.presets import get_preset

    return lio.Config(**{**get_preset(name).get("algo_params", {}), **extra})


@pytest.mark.slow  # LIO's fast learning test is test_lio_solves_er_2_1
def test_lio_ipd_mutual_cooperation_and_lio_pg_defects():
    """Thesis Fig 5.4: LIO pairs reach CC (both P(C) > 0.9); LIO with a PG partner reaches DC
    (the LIO agent defects, the PG agent is paid to cooperate; collective -3 per step)."""
    m = _train("ipd", _preset_config("lio-ipd-batched"), 256, 1000, 3)
    p_c = m["action_frequency"][:, -1, :, 0]  # [seed, agent]; action 0 = C
    assert np.all(p_c > 0.9), p_c
    m = _train("ipd", _preset_config("lio_pg-ipd-batched"), 256, 1500, 3)
    p_c = m["action_frequency"][:, -1, :, 0]
    assert np.all(p_c[:, 0] < 0.1) and np.all(p_c[:, 1] > 0.9), p_c


@pytest.mark.slow  # long; the AC form's meta-gradient is checked fast on ER ([2-1-ac])
def test_cleanup_actor_critic_form(x64):
    """LIO on Cleanup: conv policies and incentive functions conditioned on who fired the cleaning
    beam (thesis §2.10); the two meta-gradients agree and the AC critic takes its step first."""
    config = lio.Config(learner="ac", hidden=(8,), incentive_hidden=(8, 8), critic_hidden=(8,))
    state, tau, tau_hat = _frozen_batches(config, n_envs=2, env_id="cleanup-7x7")
    assert state.policy.obs_ndim == 3 and state.incentive.obs_ndim == 3
    # the incentive input is the others' (not-fired, fired) one-hot: 2 features per other agent
    kernel = state.eta["Dense_1"]["kernel"]
    assert kernel.shape[1] == 8 + 2 * (2 - 1)
    assert not np.allclose(np.asarray(state.critic_params["Dense_0"]["kernel"]),
                           np.asarray(state.target_params["Dense_0"]["kernel"]))
    grads = {}
    for mg in ("linearized", "autodiff"):
        s = state.replace(config=lio.Config(learner="ac", hidden=(8,), incentive_hidden=(8, 8),
                                            critic_hidden=(8,), meta_grad=mg))
        grads[mg] = jax.jit(lambda s: lio.incentive_grads(s, s.prev_params, tau, tau_hat, s.prev_eps))(s)
    for a, b in zip(jax.tree_util.tree_leaves(grads["linearized"]),
                    jax.tree_util.tree_leaves(grads["autodiff"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads["linearized"]))
