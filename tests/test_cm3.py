"""CM3 (jaxmcg.algos.cm3): the algebra of Prop. 2, gradients, augmentation and restore, the train-step
order, the two loops' accounting, and Stage-1 learning through the command line."""
import functools
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg import cm3_networks as CN
from jaxmcg.algos import cm3
from jaxmcg.rollout import Trajectory


def _batch(state, b, seed=0):
    """`b` random transitions shaped like the buffer's rows of `state`, float32."""
    rng = np.random.default_rng(seed)
    t = {k: jnp.asarray(rng.normal(size=(b,) + v.shape[1:]), jnp.float32)
         for k, v in state.buffer.data.items()}
    n = t["reward"].shape[-1]
    t["action"] = jnp.asarray(rng.integers(0, 5, size=(b, n)), jnp.int32)
    t["done"] = jnp.asarray(rng.integers(0, 2, size=(b,)), jnp.float32)
    return t


@functools.lru_cache
def _direct_cached(env_id, n_envs, items):
    env, params = jaxmcg.make(env_id)
    config = cm3.Config(stage1_episodes=0, **dict(items))
    with jax.enable_x64(False):  # Checkers' observation needs int32 indices (reported)
        return env, params, cm3.init(jax.random.PRNGKey(0), env, params, config, n_envs=n_envs)


def _direct(env_id, n_envs=10, **config):
    """A Stage-2 state built from scratch (the Direct ablation: no Stage 1 to train)."""
    return _direct_cached(env_id, n_envs, tuple(sorted(config.items())))


# ---- §8 item 5: the CM3 algebra ---------------------------------------------------------------------


def test_advantage_tensor_matches_a_triple_loop():
    rng = np.random.default_rng(0)
    s, n, a = 6, 3, 5
    q = rng.normal(size=(s, n))
    q_cf = rng.normal(size=(s, n, n, a))
    probs = rng.dirichlet(np.ones(a), size=(s, n))
    got = np.asarray(cm3.advantage_tensor(jnp.asarray(q), jnp.asarray(q_cf), jnp.asarray(probs)))
    want = np.zeros((s, n, n))
    for i, m, k in itertools.product(range(s), range(n), range(n)):
        want[i, m, k] = q[i, k] - sum(probs[i, m, b] * q_cf[i, m, k, b] for b in range(a))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _matrix_game_gradient(theta, rewards, eps, baseline="credit"):
    """The gradient of -E[loss] that CM3's loss gives on a one-step 2-agent matrix game with exact
    Q tables, enumerating the joint actions with probability weights (Prop. 2)."""
    n, a = theta.shape
    probs = CN.floored_probs(theta, eps)  # [M, A], constant in the advantage
    joint = np.array(list(itertools.product(range(a), repeat=n)))  # [S, N]
    weight_rows = jnp.prod(probs[jnp.arange(n), joint], axis=1)  # P(a)
    q_global = rewards[:, joint[:, 0], joint[:, 1]].T  # [S, N]: Q_n(s, a) = R^n(a)
    # credit function Q_n(s, a^m = b) = E_{a^-m}[R^n], exactly
    q_c0 = jnp.einsum("nbc,c->nb", rewards, probs[1])  # m = 0
    q_c1 = jnp.einsum("ncb,c->nb", rewards, probs[0])  # m = 1
    q_cf = jnp.broadcast_to(jnp.stack([q_c0, q_c1]), (len(joint), n, n, a))  # [S, M, N, A]
    rows = jnp.broadcast_to(probs, (len(joint), n, a))
    if baseline == "credit":
        weight = jnp.sum(cm3.advantage_tensor(q_global, q_cf, rows), -1)
    elif baseline == "none":
        weight = jnp.broadcast_to(jnp.sum(q_global, -1)[:, None], (len(joint), n))
    elif baseline == "only":  # the baseline term alone: zero mean
        weight = -jnp.sum(jnp.einsum("sma,smna->smn", rows, q_cf), -1)
    else:  # an action-dependent "baseline" Q_n(s, a^m) at the taken a^m: biased
        taken = jnp.take_along_axis(q_cf, jnp.asarray(joint)[:, :, None, None], axis=-1)[..., 0]
        weight = jnp.sum(q_global[:, None, :] - taken, -1)

    def loss(th):
        logits = jnp.broadcast_to(th, (len(joint), n, a))
        return cm3.policy_loss(cm3.taken_log_prob(logits, jnp.asarray(joint), eps), weight,
                               weight_rows)

    return -jax.grad(loss)(theta)


def test_prop2_exact_enumeration_gives_the_policy_gradient(x64):
    rng = np.random.default_rng(1)
    theta = jnp.asarray(rng.normal(size=(2, 3)))
    rewards = jnp.asarray(rng.normal(size=(2, 3, 3)) * 2.0)
    eps = 0.1

    def objective(th):
        p = CN.floored_probs(th, eps)
        return jnp.einsum("a,b,nab->", p[0], p[1], rewards)

    h = 1e-6
    steps = h * jnp.eye(theta.size).reshape((theta.size,) + theta.shape)
    fd = jax.vmap(lambda e: (objective(theta + e) - objective(theta - e)) / (2 * h))(steps)
    fd = np.asarray(fd).reshape(theta.shape)
    gradient = jax.jit(_matrix_game_gradient, static_argnums=3)
    np.testing.assert_allclose(gradient(theta, rewards, eps, "credit"), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gradient(theta, rewards, eps, "none"), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gradient(theta, rewards, eps, "only"), 0.0, atol=1e-9)
    biased = gradient(theta, rewards, eps, "taken")
    assert np.max(np.abs(np.asarray(biased) - fd)) > 1e-2


# ---- inputs of the critics (§2.5, A-CM3-20) -----------------------------------------------------


def test_critic_inputs_by_hand():
    env, params = jaxmcg.make("particle_antipodal")  # N = 4
    lay = CN.layout(env)
    s = jnp.arange(16.0).reshape(4, 4)
    g = 100 + jnp.arange(8.0).reshape(4, 2)
    obs = jnp.zeros((4, env.obs_dim))
    a = jnp.array([0, 1, 2, 3])
    x = jax.jit(lambda *args: cm3.global_inputs("particle", lay, *args, 5))(s, g, obs, None, a)
    x = {k: CN.concat_parts(v) for k, v in x.items()}
    np.testing.assert_array_equal(x["vec"][2], np.r_[s[2], g[2], np.eye(5)[2]])
    np.testing.assert_array_equal(x["branch"][2], np.r_[s[0], s[1], s[3], np.eye(5)[0],
                                                        np.eye(5)[1], np.eye(5)[3]])
    c = jax.jit(lambda *args: cm3.credit_inputs("particle", lay, *args, 5, other_goals=True))(
        s, g, obs, None, a)
    c = {k: CN.concat_parts(v) for k, v in c.items()}  # [M, N, .]: what the critic reads
    m, k = 1, 3  # acting agent m, goal owner n = k
    np.testing.assert_array_equal(c["vec"][m, k], np.r_[s[k], g[k], np.eye(5)[a[m]]])
    np.testing.assert_array_equal(c["branch"][m, k], np.r_[s[m], s[0], s[1], s[2], g[0], g[1], g[2]])


def test_checkers_credit_uses_the_acting_agents_view():
    env, params = jaxmcg.make("checkers")
    lay = CN.layout(env)
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    obs = obs.at[1, :75].set(jnp.arange(75.0))  # make the two views differ
    s = jnp.asarray([[2.0, 10, 0, 0], [4, 10, 0, 0]])
    g = jnp.eye(2)
    c = jax.jit(lambda *args: cm3.credit_inputs("checkers", lay, *args, 5))(
        s, g, obs, jnp.zeros(54), jnp.array([3, 4]))
    vec = CN.concat_parts(c["vec"])
    self_v = np.asarray(obs)[:, 75:79]  # o_self,V
    assert c["view_T"].shape == (2, 1, 5, 5, 3)  # one view per acting agent m, for every owner n
    for m, k in itertools.product(range(2), range(2)):
        np.testing.assert_array_equal(c["view_T"][m, 0].reshape(-1), obs[m, :75])  # agent m's
        np.testing.assert_array_equal(vec[m, k], np.r_[s[k], g[k], np.eye(5)[[3, 4][m]],
                                                            self_v[m]])


# ---- gradients (float64) ----------------------------------------------------------------------------


def assert_cm3_losses_match_fd(env_id, value=False):
    """The Q_g, Q_c and actor losses (and with `value` the QV ablation's V loss) of a float64
    Stage-2 state against central differences, as one function of all the parameter groups (each
    loss depends on its own group only)."""
    env, params, state = _direct(env_id, advantage="qv" if value else "credit")
    state = state.replace(nets=f64(state.nets), targets=f64(state.targets))
    t = f64(_batch(state, 6))
    mask = jnp.array([1.0, 1, 1, 0, 1, 1])
    next_a = jnp.asarray(np.random.default_rng(3).integers(0, 5, (6, env.num_agents)))
    targets = jax.tree_util.tree_map(lambda x: x * 1.1, state.targets)  # targets != mains
    weight = jnp.asarray(np.random.default_rng(4).normal(size=(6, env.num_agents)))

    def total(p):
        loss = (cm3.global_loss(p["q_global"], state, targets, t, mask, next_a)[0]
                + cm3.actor_loss(p["actor"], state, t, mask, weight, 0.2))
        if value:
            return loss + cm3.value_loss(p["v"], state, targets, t, mask)[0]
        return loss + cm3.credit_loss(p["q_credit"], state, targets, t, mask, next_a)

    # h small: a random direction through all the nets must not cross a ReLU kink
    assert_grad_matches_fd(total, state.nets, jax.random.PRNGKey(1), h=1e-8, n_coordinates=12)


def test_losses_match_finite_differences(x64):
    assert_cm3_losses_match_fd("particle_merge")


# ---- function augmentation and the restore rules (§2.4) ----------------------------------------------


def assert_augmentation_keeps_stage1(env_id):
    """Actor, Q_g and Q_c of Stage 2, restored from (perturbed) Stage-1 nets, compute the Stage-1
    functions when their branch input is zero, and differ when it is not."""
    env2, params2 = jaxmcg.make(env_id)
    env1, params1 = cm3.stage1_env(env2, params2)
    kind = CN.env_kind(env2)
    a1, a2 = CN.make_actor(env1, 1), CN.make_actor(env2, 2)
    q1, q2 = cm3.Critic(kind, 1), cm3.Critic(kind, 2)

    @jax.jit
    def outputs(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        obs1 = jax.random.normal(k1, (7, env1.obs_dim))
        obs2 = jnp.concatenate([obs1, jnp.zeros((7, env2.obs_dim - env1.obs_dim))], -1)
        if kind == "lane_merge":  # the grid is the o_others branch's input in both stages
            obs1 = obs2 = obs1.at[:, 7:].set(0.0)
        perturb = lambda tree, k: jax.tree_util.tree_map(
            lambda v: v + 0.1 * jax.random.normal(k, v.shape), tree)
        p1 = perturb(a1.init(k2, obs1), k3)
        p2 = CN.augment(p1, a2.init(k4, obs2))
        x = {"vec": jax.random.normal(k1, (7, 9 + 2 * (kind == "checkers"))),
             "branch": jnp.zeros((7, 11)), "state_T": jax.random.normal(k2, (7, 3, 9, 2)),
             "view_T": jax.random.normal(k3, (7, 5, 5, 3))}
        w1 = perturb(q1.init(k2, x), k4)
        w2 = CN.augment(w1, q2.init(k3, x))
        return (a1.apply(p1, obs1), a2.apply(p2, obs2), a2.apply(p2, obs2.at[:, -1].set(5.0)),
                q1.apply(w1, x), q2.apply(w2, x), q2.apply(w2, {**x, "branch": x["branch"] + 1}))

    pi1, pi2, pi2_other, v1, v2, v2_other = outputs(jax.random.PRNGKey(0))
    np.testing.assert_allclose(pi2, pi1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v2, v1, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pi2_other, pi1) and not np.allclose(v2_other, v1)


@pytest.mark.parametrize("env_id", ["particle_antipodal"])
def test_augmentation_keeps_the_stage1_function_when_the_branch_input_is_zero(env_id):
    assert_augmentation_keeps_stage1(env_id)


def test_init_restores_stage1_into_stage2(tmp_path):
    env, params = jaxmcg.make("particle_merge")
    env1, params1 = cm3.stage1_env(env, params)
    assert env1.num_agents == 1 and params1.max_steps_in_episode == 25  # Table A.3 S1
    s1 = cm3.init(jax.random.PRNGKey(5), env1, params1, cm3.Config())
    assert s1.stage == 1 and s1.random_warmup and set(s1.nets) == {"actor", "q_global"}
    s1 = s1.replace(nets=jax.tree_util.tree_map(lambda x: x + 0.3, s1.nets))  # "trained"
    path = str(tmp_path / "stage1.msgpack")
    cm3.save_stage1(path, s1)
    state = cm3.init(jax.random.PRNGKey(6), env, params, cm3.Config(stage1_path=path))
    assert not state.random_warmup and state.on_policy  # particle Stage 2: on-policy

    def leaves(tree):
        return dict(jax.tree_util.tree_flatten_with_path(tree)[0])

    for name, source in (("actor", "actor"), ("q_global", "q_global"), ("q_credit", "q_global")):
        old, new = leaves(s1.nets[source]), leaves(state.nets[name])
        assert set(old) < set(new)  # Stage 2 adds parameters
        for path, value in old.items():
            np.testing.assert_array_equal(new[path], value)  # Q_c's Stage-1 part is Q^1's
        fresh = [p for p in new if p not in old]
        assert fresh and all(float(jnp.max(jnp.abs(new[p]))) < 1.0 for p in fresh)
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.targets, state.nets)
    assert int(state.buffer.size) == 0 and int(state.episodes) == 0
    with pytest.raises(ValueError, match="is not a file"):
        cm3.check_env(env, params, cm3.Config(stage1_path=str(tmp_path / "nope")))


# ---- the train step (§2.3) -------------------------------------------------------------------------


def test_train_step_order():
    """Q_g in the advantage is the main net *before* its step, the baseline the credit net *after*
    its step, probabilities from the actor before its step; targets move by Polyak tau; the Q_g
    target uses a' from the target actor."""
    env, params, state = _direct("particle_merge", lr_critic=1e-2)
    t = _batch(state, 8)
    mask = jnp.ones(8)
    eps, key = 0.3, jax.random.PRNGKey(7)
    old_targets = jax.tree_util.tree_map(lambda x: x * 0.9, state.nets)

    @jax.jit
    def run(nets, old_targets, opt, t):
        (new, targets, _), metrics, adv = cm3.train_step(state, (nets, old_targets, opt), t, mask,
                                                         eps, key)
        q_in = cm3._inputs(cm3._static(state), cm3.global_inputs, t, t["action"])
        q_pre = state.modules["q_global"].apply(nets["q_global"], q_in)
        q_post = state.modules["q_global"].apply(new["q_global"], q_in)
        probs = CN.floored_probs(state.modules["actor"].apply(nets["actor"], t["obs"]), eps)
        base_post, base_pre = (cm3.counterfactual_q(state, x, t) for x in (new, nets))
        candidates = [cm3.advantage_tensor(q, b, probs) for q, b in
                      ((q_pre, base_post), (q_post, base_post), (q_pre, base_pre))]
        next_a = cm3.next_actions(state, old_targets, t, eps, key)
        loss = cm3.global_loss(nets["q_global"], state, old_targets, t, mask, next_a)[0]
        return adv, candidates, targets, new, metrics["cm3/loss_q_global"], loss

    adv, (want, *wrong), targets, nets, loss, want_loss = run(state.nets, old_targets, state.opt, t)
    np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-5)
    for w in wrong:
        assert float(jnp.max(jnp.abs(w - adv))) > 1e-3
    jax.tree_util.tree_map(lambda new, old, main: np.testing.assert_allclose(
        new, 0.01 * main + 0.99 * old, rtol=1e-5, atol=1e-7), targets, old_targets, nets)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)


# ---- the loops (§2.6) -------------------------------------------------------------------------------


def _trajectory(env, params, lengths, horizon, seed=0):
    """A batch of len(lengths) episodes of the given lengths (random contents), `[T, E, ...]`."""
    e, n = len(lengths), env.num_agents
    rng = np.random.default_rng(seed)
    ex = cm3._transition_example(env, params, CN.env_kind(env))
    rnd = lambda shape: jnp.asarray(rng.normal(size=(horizon, e) + shape), jnp.float32)
    valid = (np.arange(horizon)[:, None] < np.asarray(lengths)[None]).astype(np.float32)
    last = np.arange(horizon)[:, None] == np.asarray(lengths)[None] - 1
    return Trajectory(
        obs=rnd(ex["obs"].shape), action=jnp.asarray(rng.integers(0, 5, (horizon, e, n)), jnp.int32),
        reward=rnd((n,)), next_obs=rnd(ex["obs"].shape), valid=jnp.asarray(valid),
        terminated=jnp.asarray(last), truncated=jnp.zeros((horizon, e), bool), extras={},
        info={"state": rnd(ex["state"].shape), "next_state": rnd(ex["state"].shape),
              "goal": rnd(ex["goal"].shape)})


def test_off_policy_step_accounting_and_epsilon():
    env, params, state = _direct("particle_merge", n_envs=2, loop="off_policy", warmup_episodes=3,
                                 batch_size=4, eps_start=1.0, eps_end=0.1, eps_div=10.0)
    assert not state.on_policy and state.random_warmup
    update = jax.jit(cm3.update)
    # episodes 1-2 (warm-up): 7 + 16 steps, no training; 3 steps carried
    state, m = update(state, _trajectory(env, params, [7, 16], 16))
    assert int(state.train_steps) == 0 and int(state.step_remainder) == 3
    assert int(state.buffer.size) == 23 and int(state.episodes) == 2
    # episodes 3-4: steps [3, 12) and [12, 24) cross 10 and 20: two train steps
    state, m = update(state, _trajectory(env, params, [9, 12], 16, seed=1))
    assert int(state.train_steps) == 2 and int(state.step_remainder) == 4
    assert float(m["cm3/train_steps"]) == 2.0 and float(m["cm3/loss_q_global"]) > 0
    # eps of episode k: 1.0 - 0.09 (k - 3) from the warm-up on; episode 4 trained at 0.91
    np.testing.assert_allclose(m["cm3/epsilon"], 0.91, rtol=1e-6)
    np.testing.assert_allclose(cm3.epsilon(state), 1.0 - 0.09 * 2, rtol=1e-6)


def test_push_keeps_the_last_rows_when_they_overflow():
    from jaxmcg import replay

    buf = replay.init({"x": jnp.zeros(())}, 4)
    valid = jnp.array([True, False, True, True, False, True, True, True])
    buf = jax.jit(cm3.push)(buf, {"x": jnp.arange(8.0)}, valid)
    assert int(buf.size) == 4
    assert sorted(np.asarray(buf.data["x"]).tolist()) == [3.0, 5.0, 6.0, 7.0]


def test_bad_config_is_rejected():
    env, params = jaxmcg.make("particle_merge")
    for config, needle in ((cm3.Config(advantage="v"), "valid: credit, qv"),
                           (cm3.Config(loop="x"), "valid: auto, on_policy, off_policy"),
                           (cm3.Config(stage1_episodes=15), "multiple of stage1_n_envs"),
                           (cm3.Config(eps_end=0.9), "eps_end <= eps_start")):
        with pytest.raises(ValueError, match=needle):
            cm3.check_env(env, params, config)
    esc, esc_params = jaxmcg.make("escape_room")
    with pytest.raises(ValueError, match="has no CM3 network"):
        cm3.check_env(esc, esc_params, cm3.Config())


# ---- Stage 1 learns, through the command line -------------------------------------------------------


def test_cli_two_stages_and_stage1_learning(tmp_path):
    """`--algo cm3 --env particle_merge` trains Stage 1 (300 episodes on particle_stage1) and then
    Stage 2 in one command. Threshold: Stage 1's evaluation return (100 episodes, sampled at eps = 0)
    must beat the uniform policy's, about -29 (measured: -30.7 and -25.4 at the first evaluation of
    two seeds), by 9, i.e. > -20 (measured after 300 episodes with the paper's schedule: -17.6,
    -16.3; after 1000: -7.5, -6.3)."""
    from experiments import run

    out = tmp_path / "run"
    argv = ["--algo", "cm3", "--env", "particle_merge", "--n_envs", "2", "--iterations", "2",
            "--log-every", "1", "--eval-envs", "4", "--quiet", "--out", str(out),
            "--algo-param", "stage1_episodes=300", "--algo-param", "stage1_eps_div=300",
            "--algo-param", "stage1_eval_envs=100", "--algo-param", "warmup_episodes=2",
            "--algo-param", "batch_size=16"]
    assert run.main(argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    stage1 = lines[0]["cm3/stage1_return"]
    assert stage1 > -20.0, stage1
    assert lines[-1]["cm3/train_steps"] > 0 and np.isfinite(lines[-1]["cm3/loss_q_credit"])
    assert np.isfinite(lines[-1]["greedy/collective_return"])  # logged beside the sampled one
    assert (out / "summary.json").exists()
