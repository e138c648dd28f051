"""D3C (d3c.md §8): mixing algebra, the closed-form gradient, exact D3C on the convex PD and the
Braess network against gradient descent, the analytic games, the ES step, bad input, the CLI."""
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seeds import train_seeds

import jaxmcg
from envs.braess import Braess, random_networks, route_matrix
from jaxmcg.algos import d3c


def _train(game, params, config, steps, seeds=10, seed=0):
    """Final states and per-step metrics of `seeds` vmapped exact-D3C runs."""

    def run(key):
        state = d3c.game_init(key, game, params, config)
        return jax.lax.scan(lambda s, _: d3c.game_update(s, game, params, config), state, None, steps)

    return jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(seed), seeds))


def test_mixing_conserves_total_loss_and_mixes_rewards_by_columns():
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.ones(5), size=5)
    f = rng.normal(size=5)
    np.testing.assert_allclose(np.sum(a.T @ f), np.sum(f), rtol=1e-6)  # budget balance
    r = rng.normal(size=(7, 5))
    mixed = np.asarray(d3c.mix_rewards(jnp.asarray(r), jnp.asarray(a)))
    expected = np.einsum("bj,ji->bi", r, a)  # agent i gets sum_j A_ji r_j
    np.testing.assert_allclose(mixed, expected, rtol=1e-5)


def _check_rate_and_gradient(game, params, seed):
    n = game.num_agents
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.uniform(k1, (n, game.strategy_dim), jnp.float64)
    mixing = jax.nn.softmax(jax.random.normal(k2, (n, n), jnp.float64), axis=-1)
    jac = game.loss_jacobian(x, params)
    auto = jax.jacobian(lambda a: d3c.loss_rate(a, jac))(mixing)
    own_rows = auto[jnp.arange(n), jnp.arange(n)]  # d(d/dt f^A_i) / dA_i.
    np.testing.assert_allclose(d3c.loss_rate_gradient(mixing, jac), own_rows, atol=1e-10)
    # d/dt f^A_i is the derivative of f^A_i(x - t F^A) at t = 0
    directions = d3c.update_directions(mixing, jac)
    fa = lambda t: mixing.T @ game.losses(x - t * directions, params)
    np.testing.assert_allclose(d3c.loss_rate(mixing, jac), jax.jacfwd(fa)(0.0), atol=1e-10)


@pytest.mark.parametrize("env_id, overrides", [("convex_pd", {"n_agents": 4}), ("braess", {}),
                                               ("election", {}), ("nash_paradox", {})])
def test_closed_form_mixing_gradient_matches_autodiff(x64, env_id, overrides):
    game, params = jaxmcg.make(env_id, **overrides)
    for seed in range(3):
        _check_rate_and_gradient(game, params, seed)


def test_convex_pd_gradient_descent_ends_at_nash_and_d3c_at_the_optimum():
    game, params = jaxmcg.make("convex_pd", n_agents=10, c=1.0)
    _, gd = _train(game, params, d3c.Config(mode="selfish"), 500)
    np.testing.assert_allclose(gd["ratio_to_optimum"][:, -1], 10 / 9, atol=1e-3)  # rho = n/(n-1)
    state, m = _train(game, params, d3c.Config(), 3000)
    ratio = np.asarray(m["ratio_to_optimum"][:, -1])
    assert ratio.max() <= 1.001, ratio
    np.testing.assert_allclose(state.x, 0.1, atol=5e-3)  # x_ij -> c/n
    off = np.asarray(state.mixing)[:, ~np.eye(10, dtype=bool)]
    assert abs(off.mean() - 0.1) < 0.01, off.mean()  # mixing rows near uniform c/n
    assert ratio.max() < np.asarray(m["ratio_to_optimum"][:, 0]).min()


def test_braess_enumeration_gives_the_papers_65_and_80_minutes():
    game, params = jaxmcg.make("braess")
    m, b = (np.asarray(v) for v in route_matrix(params, True))
    totals = {}
    for routes in itertools.product(range(3), repeat=4):
        n = np.bincount(routes, minlength=3)
        totals[routes] = float(np.sum(n * (m @ n + b)))
    assert min(totals.values()) == 260.0 == float(game.social_optimum(params))
    # all-shortcut is the unique pure Nash equilibrium: no driver gains by switching
    nash = [p for p in totals if all(
        (m @ np.bincount(p, minlength=3) + b)[p[i]] <=
        (m @ (np.bincount(p, minlength=3) - np.eye(3)[p[i]] + np.eye(3)[r]) + b)[r]
        for i in range(4) for r in range(3))]
    assert nash == [(2, 2, 2, 2)] and totals[nash[0]] == 320.0
    no_ab, no_ab_params = jaxmcg.make("braess", shortcut=False)
    assert float(no_ab.social_optimum(no_ab_params)) == 260.0


def test_braess_d3c_beats_gradient_descent_over_10_seeds():
    game, params = jaxmcg.make("braess")
    _, gd = _train(game, params, d3c.Config(mode="selfish", lr_x=0.01), 3000)
    _, mix = _train(game, params, d3c.Config(lr_x=0.01), 3000)
    assert np.asarray(gd["ratio_to_optimum"][:, -1]).min() >= 1.22  # -> 80/65
    assert float(np.mean(mix["ratio_to_optimum"][:, -1])) <= 1.05


def test_random_networks_have_a_unique_shortcut_equilibrium_and_d3c_helps():
    nets = random_networks(40, seed=3)
    for k in range(10):
        p = jax.tree_util.tree_map(lambda v, k=k: v[k], nets)
        m, b = (np.asarray(v) for v in route_matrix(p, True))
        for routes in itertools.product(range(3), repeat=4):
            n = np.bincount(routes, minlength=3)
            t = m @ n + b
            stable = all(t[routes[i]] <= (m @ (n - np.eye(3)[routes[i]] + np.eye(3)[r]) + b)[r]
                         for i in range(4) for r in range(3) if r != routes[i])
            assert stable == (routes == (2, 2, 2, 2)), (k, routes)
    game = Braess()
    keys = jax.random.split(jax.random.PRNGKey(0), 40)

    def final_ratio(config):
        def run(key, p):
            s = d3c.game_init(key, game, p, config)
            s, m = jax.lax.scan(lambda s, _: d3c.game_update(s, game, p, config), s, None, 3000)
            return m["ratio_to_optimum"][-1]

        return float(jnp.mean(jax.jit(jax.vmap(run))(keys, nets)))

    gd, mixed = final_ratio(d3c.Config(mode="selfish", lr_x=0.01)), final_ratio(d3c.Config(lr_x=0.01))
    assert gd - mixed >= 0.1, (gd, mixed)


def test_election_jacobian_spectra_match_appendix_f5(x64):
    game, params = jaxmcg.make("election")
    a = np.array([[0.45795, 0.45708, 0.04248, 0.04248], [0.45709, 0.45794, 0.04248, 0.04248],
                  [0.03778, 0.03778, 0.46023, 0.46421], [0.03778, 0.03778, 0.46421, 0.46022]])
    x = jnp.zeros((4, 1))

    def eig(mixing):
        field = lambda v: d3c.update_directions(mixing, game.loss_jacobian(v.reshape(4, 1), params))
        return np.sort_complex(np.linalg.eigvals(np.asarray(jax.jacobian(
            lambda v: field(v).ravel())(x.ravel()))))

    np.testing.assert_allclose(np.sort(np.abs(eig(jnp.asarray(a)).imag)), [0.21, 0.21, 0.21, 0.21],
                               atol=5e-3)
    np.testing.assert_allclose(eig(jnp.asarray(a)).real, 1.839, atol=2e-3)
    teams = jnp.asarray(np.kron(np.eye(2), np.full((2, 2), 0.5)))
    np.testing.assert_allclose(eig(teams).real, 2.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(eig(teams).imag), 0.25, atol=1e-9)
    np.testing.assert_allclose(eig(jnp.full((4, 4), 0.25)).imag, 0.0, atol=1e-9)  # welfare


def test_nash_paradox_price_of_anarchy_and_gradient_play():
    game, params = jaxmcg.make("nash_paradox", kappa=0.2)
    nash = game.losses(jnp.zeros((2, 1)), params)
    assert float(jnp.sum(nash) / game.social_optimum(params)) == pytest.approx(5 / 1.8, rel=1e-5)
    opt = jnp.full((2, 1), np.sqrt(0.8))
    assert float(jnp.sum(game.losses(opt, params))) == pytest.approx(2 * 1.8, rel=1e-5)
    state, _ = _train(game, params, d3c.Config(mode="selfish"), 2000, seeds=5)
    np.testing.assert_allclose(state.x, 0.0, atol=1e-3)  # gradient play ends at Nash


def _es(n=3, **kw):
    cfg = d3c.Config(**{"lr_mixing": 1.0, "perturbation": 1.0, "epsilon": 0.0, "kl_weight": 0.0,
                        "trial_min": 2, "trial_max": 4, **kw})
    return cfg, d3c.es_init(jax.random.PRNGKey(0), n, cfg)


def _run_es(cfg, state, returns_fn, steps):
    def body(s, k):
        s, m = d3c.es_step(k, s, returns_fn(s), cfg)
        return s, (m, s)

    return jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(1), steps))


def test_es_constant_returns_never_move_the_mixing_rows_with_zero_epsilon():
    # a clip wider than log(0.01 / (n - 1)): with [-5, 5] the first update clips the rows (A6)
    cfg, state = _es(logit_clip=(-10.0, 10.0))
    final, (m, _) = jax.jit(lambda s: _run_es(cfg, s, lambda s: jnp.ones(3), 40))(state)
    # the first trial compares with G_b = 0 and 1 > 0, so it never fires; later trials see no change
    np.testing.assert_allclose(final.log_mixing, state.log_mixing, atol=1e-6)
    assert int(m["trial_done"].sum()) > 10


def test_es_falling_return_moves_each_row_against_its_perturbation():
    cfg, state = _es(epsilon=0.0)
    state = state.replace(trial_length=jnp.ones(3, jnp.int32))  # every trial ends now
    new, m = d3c.es_step(jax.random.PRNGKey(2), state, jnp.full(3, -2.0), cfg)
    rho = np.asarray(m["rho_estimate"])
    np.testing.assert_allclose(rho, 2.0)  # ReLU((0 - (-2)) / 1 + 0)
    expected = jax.nn.log_softmax(jnp.clip(state.log_mixing - 2.0 * state.direction, -5, 5), -1)
    np.testing.assert_allclose(new.log_mixing, expected, atol=1e-5)
    assert np.asarray(new.baseline_return).tolist() == [-2.0] * 3


def test_es_trials_are_asynchronous_clipped_and_vmappable():
    cfg, _ = _es(n=4, trial_min=3, trial_max=9, lr_mixing=50.0, epsilon=1.0)
    states = jax.vmap(lambda k: d3c.es_init(k, 4, cfg))(jax.random.split(jax.random.PRNGKey(5), 8))
    run = jax.jit(jax.vmap(lambda s: _run_es(cfg, s, lambda s: -s.t * jnp.ones(4), 60)))
    final, (m, _) = run(states)
    done = np.asarray(m["trial_done"])  # [seeds, steps, agents]
    assert not all((done[:, :, 0] == done[:, :, i]).all() for i in range(1, 4))
    logits = np.asarray(final.log_mixing)
    spread = logits.max(-1) - logits.min(-1)
    assert (spread <= 10.0 + 1e-4).all() and spread.max() > 9.0  # clipped to [-5, 5]
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", d3c.ES_RETURNS)
def test_es_return_with_frozen_learners(kind):
    # Learners that never change: every episode returns raw = (-4, -4), the selfish TYB prey's
    # scale (the IPD's is -10). "mixed" scores a trial by raw @ A~, which is lower when A~_ii rose
    # only because a_i's own -4 weighs more, so lose-shift walks every A_ii down to the clip
    # (d3c.md A11), as fast as A_ii fell in stop 24's TYB runs (0.99 -> 0.01 in 20k iterations).
    # The other two measure nothing that a perturbation changes, and after the first trial
    # (G_b = 0 > -4 may fire it once) never move.
    raw = jnp.array([-4.0, -4.0])
    cfg, state = _es(n=2, trial_min=10, trial_max=20)  # Table 1's TYB row
    g = jax.jit(lambda s: d3c.es_return(kind, raw, s.trial_mixing, jnp.exp(s.log_mixing)))
    weights = {"mixed": state.trial_mixing, "raw": jnp.eye(2),
               "mixed_unperturbed": jnp.exp(state.log_mixing)}[kind]
    np.testing.assert_allclose(g(state), raw @ weights, rtol=1e-6)
    final, (m, states) = jax.jit(lambda s: _run_es(cfg, s, g, 20_000))(state)
    self_weight = np.exp(np.diagonal(np.asarray(final.log_mixing)))
    assert int(m["trial_done"].sum()) > 2000
    if kind == "mixed":
        assert self_weight.max() < 0.02, self_weight
    else:
        after_first = np.asarray(states.log_mixing)[100:]
        np.testing.assert_array_equal(after_first, np.broadcast_to(after_first[0], after_first.shape))
        assert self_weight.min() > 0.5, self_weight


def test_bad_input_is_rejected_before_compiling():
    with pytest.raises(ValueError, match="row 1 sums to"):
        d3c.check_mixing_matrix(np.array([[0.5, 0.5], [0.7, 0.7]]))
    with pytest.raises(ValueError, match="negative"):
        d3c.check_mixing_matrix(np.array([[1.5, -0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="epsilon=-0.1"):
        d3c.Config(epsilon=-0.1).validate()
    with pytest.raises(ValueError, match="trial_min"):
        d3c.Config(trial_min=5, trial_max=2).validate()
    with pytest.raises(ValueError, match="es_return='mean' is invalid; valid: mixed, raw, mixed_unp"):
        d3c.Config(es_return="mean").validate()
    with pytest.raises(ValueError, match="n_agents"):
        jaxmcg.make("convex_pd", n_agents=1)
    with pytest.raises(ValueError, match="kappa"):
        jaxmcg.make("nash_paradox", kappa=0.0)
    with pytest.raises(ValueError, match="edge costs"):
        jaxmcg.make("braess", F=-1.0)


def test_cli_runs_exact_d3c_on_braess(tmp_path, capsys):
    from experiments import run

    out = tmp_path / "braess"
    assert run.main(["--algo", "d3c", "--env", "braess", "--seeds", "3", "--iterations", "3000",
                     "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ratio_to_optimum"]["mean"] <= 1.05
    argv = ["--algo", "d3c", "--env", "coins", "--algo-param"]
    assert run.main(argv + ["learner=sarsa"]) == 2
    assert "learner='sarsa' is not a jaxmcg algorithm" in capsys.readouterr().err
    assert run.main(argv + ["learner.nope=1"]) == 2
    assert "unknown --algo-param 'learner.nope'" in capsys.readouterr().err
    assert run.main(argv + ["epsilon=-1"]) == 2
    assert "epsilon=-1.0 is invalid" in capsys.readouterr().err


def _es_train(mode, iterations, seeds=4, **kw):
    from jaxmcg.train import TrainConfig, make_train

    env, params = jaxmcg.make("ipd")
    config = d3c.Config(learner="pg", learner_params=(("lr", 0.05),), mode=mode, **kw)
    d3c.check_env(env, params, config)
    train = make_train(d3c, env, params, config,
                       TrainConfig(n_envs=64, iterations=iterations, log_every=iterations // 4,
                                   eval_envs=256))
    return train_seeds(train, seeds)


@pytest.mark.slow  # long; `make test-slow`
def test_es_wrapper_trains_the_learner_on_mixed_rewards():
    # cooperation (A = 1/n fixed) makes the IPD a common-payoff game: PG agents learn to cooperate
    # (-2 per round, -10 per 5-round episode); selfish agents (A = I) learn to defect (-20)
    _, coop = _es_train("cooperation", 400)
    _, selfish = _es_train("selfish", 400)
    assert np.asarray(coop["collective_return"][:, -1]).min() >= -10.5
    assert np.asarray(selfish["collective_return"][:, -1]).max() <= -19.5
    np.testing.assert_allclose(coop["d3c/self_weight"][:, -1], 0.5)


def test_es_d3c_lowers_the_price_of_anarchy_of_pg_learners_on_the_ipd():
    # Table 1's TYB row with epsilon 0.5 (the row's epsilon 0 needs ~10k iterations: slow suite).
    # PG learners alone reach mutual defection, rho = 20/10 = 2, within ~200 iterations.
    runner, m = _es_train("d3c", 1600, lr_mixing=1.0, perturbation=1.0, epsilon=0.5,
                          trial_min=10, trial_max=20)
    rho = -m["collective_return"] / 10.0  # [seeds, logged points]
    assert rho[:, 0].mean() > 1.5, rho
    assert rho[:, -1].mean() <= 1.3, rho
    assert (m["d3c/trials_done"].sum(axis=1) > 0).all()
    assert np.isfinite(np.asarray(runner.algo_state.es.log_mixing)).all()


def test_es_learner_must_be_a_single_update_jaxmcg_algorithm():
    env, params = jaxmcg.make("ipd")
    with pytest.raises(ValueError, match="learner='sarsa' is not a jaxmcg algorithm"):
        d3c.check_env(env, params, d3c.Config(learner="sarsa"))
    with pytest.raises(ValueError, match="several phases"):
        d3c.check_env(env, params, d3c.Config(learner="lio"))
    with pytest.raises(ValueError, match=r"unknown learner parameter\(s\) \['nope'\]"):
        d3c.check_env(env, params, d3c.Config(learner="pg", learner_params=(("nope", 1),)))
    with pytest.raises(ValueError, match="mode='team'"):
        d3c.Config(mode="team").validate()
