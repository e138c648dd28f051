"""QMIX (jaxmcg.algos.qmix) and the schedule/replay/accounting it shares with IQL and HSD
(jaxmcg.value_agents), cm3-hsd.md §2.6-§2.7, §3, §5.5."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64
from jax.flatten_util import ravel_pytree
from seeds import train_seeds

import jaxmcg
from envs.matrix_games import MatrixGame
from jaxmcg import replay
from jaxmcg import value_agents as V
from jaxmcg.algos import qmix
from jaxmcg.rollout import Trajectory
from jaxmcg.train import TrainConfig, make_train

KEY = jax.random.PRNGKey(0)
GAMMA = 0.99


def monotone_game(rounds: int = 2) -> MatrixGame:
    """A cooperative game whose team payoff r(a1, a2) = u1 u2 + u1 + u2, u = (0, 1, 2), is monotone
    in per-agent utilities, so QMIX can represent it exactly: optimum (2, 2) pays 8 to each agent
    every round; uniform play pays 3 on average."""
    u = np.arange(3.0)
    r = np.outer(u, u) + u[:, None] + u[None, :]
    return MatrixGame(payoff=np.stack([r, r], -1), max_steps_in_episode=rounds)


# ---- configuration and environment checks ------------------------------------------------------


@pytest.mark.parametrize("env_id,overrides,needles", [
    ("particle_antipodal", {"network": "cnn"},
     ["network='cnn'", "valid: auto, mlp, checkers, lane_merge"]),
    ("particle_antipodal", {"mixer_input": "global"},
     ["mixer_input='global'", "valid: auto, state, state_goal, state_env_goal, obs"]),
    ("particle_antipodal", {"team_reward": "mean"}, ["team_reward='mean'", "valid: auto, sum, first"]),
    ("particle_antipodal", {"batch_size": 512, "buffer_size": 256}, ["batch_size=512", "<= buffer_size"]),
    ("particle_antipodal", {"tau": 1.5}, ["tau=1.5", "[0, 1]"]),
    ("particle_antipodal", {"hidden": (64, 0)}, ["hidden=(64, 0)"]),
    ("particle_antipodal", {"eps_end": 0.9}, ["eps_end=0.9", "<= eps_start"]),
    ("particle_antipodal", {"buffer_size": 40, "batch_size": 8}, ["buffer_size=40", ">= 50"]),
    ("particle_antipodal", {"network": "checkers"}, ["network='checkers'", "valid for it: mlp"]),
    ("particle_antipodal", {"mixer_input": "state_env_goal"}, ["info['state_env']", "valid for it: obs"]),
    ("matrix_game", {}, ["info['state']", "mixer_input='obs'"]),
    ("checkers", {"network": "lane_merge"}, ["network='lane_merge'", "valid for it: mlp"]),
])
def test_bad_input_is_rejected_before_compiling(env_id, overrides, needles):
    env, params = jaxmcg.make(env_id)
    config = qmix.Config(**overrides)
    assert_rejected_before_compiling(lambda: qmix.init(KEY, env, params, config), needles)


@pytest.mark.parametrize("env_id,expected", [
    ("sts2", ("mlp", "first", "state")),  # STS2's reward is the team reward, broadcast (§6.7)
    ("particle_antipodal", ("mlp", "sum", "state_goal")),  # CM3: sum of rewards, [s, all goals]
    ("checkers", ("checkers", "sum", "state_env_goal")),
    ("lane_merge", ("lane_merge", "sum", "state_goal")),
])
def test_check_env_resolves_the_per_env_choices(env_id, expected):
    env, params = jaxmcg.make(env_id)
    setup = qmix.check_env(env, params, qmix.Config(hidden=(64, 64)))
    assert (setup.network, setup.team_reward, setup.mixer_input) == expected


# ---- loss: finite differences and targets by hand ------------------------------------------------


def _random_batch(seed, obs_shape, n_actions, cond, rows):
    """A minibatch of random transitions (numpy draws: nothing to compile)."""
    rng = np.random.default_rng(seed)
    n = obs_shape[0]
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {"obs": normal(rows, *obs_shape), "next_obs": normal(rows, *obs_shape),
            "action": rng.integers(0, n_actions, (rows, n)).astype(np.int32),
            "reward": 3.0 * normal(rows), "done": (np.arange(rows) % 3 == 2).astype(np.float32),
            "cond": {k: normal(rows, *np.shape(c)) for k, c in cond.items()},
            "next_cond": {k: normal(rows, *np.shape(c)) for k, c in cond.items()}}


def _perturbed(params, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x) + scale * rng.normal(size=x.shape).astype(np.asarray(x).dtype), params)


@pytest.mark.parametrize("env_id,n_agents,obs_dim,cond", [
    ("checkers", 2, 88, {"c": jnp.zeros(2 * 4 + 2 * 2), "grid": jnp.zeros(54)}),  # [s_V, goals], s_T
    pytest.param("lane_merge", 2, 241, {"c": jnp.zeros(2 * 3 + 2 * 4)},  # [s, goals]
                 marks=pytest.mark.slow),  # the same merge-layer pattern with a conv branch
])
def test_loss_gradient_matches_finite_differences(x64, env_id, n_agents, obs_dim, cond):
    """The loss w.r.t. agent and mixer parameters (the conv branch nets and Checkers' conv mixer).
    The networks are built from the env's observation layout only (the envs are float32 code)."""
    env, _ = jaxmcg.make(env_id)
    agent = V.make_network(V.resolve_network(env, qmix.Config(hidden=(16, 16))), env, (16, 16), 5)
    mixer = qmix.Mixer(n_agents, 8, qmix.STATE_ENV_SHAPE if "grid" in cond else None)

    @jax.jit  # one program: eager construction would compile op by op
    def build(key):
        k_agent, k_mixer = jax.random.split(key)
        return f64({"agent": agent.init(k_agent, jnp.zeros((n_agents, obs_dim)))["params"],
                    "mixer": mixer.init(k_mixer, jnp.zeros(n_agents), f64(cond))["params"]})

    theta = build(jax.random.PRNGKey(1))
    target = _perturbed(theta, 2)
    batch = f64(jax.tree_util.tree_map(jnp.asarray, _random_batch(3, (n_agents, obs_dim), 5, cond, 6)))
    mask = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    f = lambda p: qmix.loss(p, target, batch, mask, agent, mixer, GAMMA)[0]  # noqa: E731
    grads = jax.jit(jax.grad(f))(theta)
    for part in ("agent", "mixer"):
        assert float(jnp.linalg.norm(ravel_pytree(grads[part])[0])) > 0, part
    assert_grad_matches_fd(f, theta, jax.random.PRNGKey(3), h=1e-6, rtol=1e-4, grad=grads)


def _mlp_by_hand(p, x):
    """QNet forward pass in numpy from its parameter arrays."""
    layers = sorted(p, key=lambda name: int(name.split("_")[1]))
    for i, name in enumerate(layers):
        x = x @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"])
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def _mixer_by_hand(p, q, c):
    """§2.7: W1 = |c Hw1| [N, H], b1 = c Hb1, h = elu(q W1 + b1), w2 = |c Hw2|,
    b2 = relu(c Hb2a) Hb2b, Q_tot = h . w2 + b2."""
    p = {k: np.asarray(v["kernel"]) for k, v in p["QMixer_0"].items()}
    n, rows = q.shape[-1], q.shape[0]
    w1 = np.abs(c @ p["hyper_w1"]).reshape(rows, n, -1)
    pre = np.einsum("bn,bnh->bh", q, w1) + c @ p["hyper_b1"]
    hidden = np.where(pre > 0, pre, np.expm1(pre))
    b2 = np.maximum(c @ p["hyper_b2a"], 0.0) @ p["hyper_b2b"]
    return np.sum(hidden * np.abs(c @ p["hyper_w2"]), -1) + b2[:, 0]


def test_targets_use_target_argmax_and_done_cuts_the_bootstrap():
    n, obs_dim, n_actions, c_dim, rows = 2, 3, 4, 5, 8
    agent, mixer = V.QNet((6,), n_actions), qmix.Mixer(n, 4)

    @jax.jit
    def build(key):
        k_agent, k_mixer = jax.random.split(key)
        return {"agent": agent.init(k_agent, jnp.zeros((n, obs_dim)))["params"],
                "mixer": mixer.init(k_mixer, jnp.zeros(n), {"c": jnp.zeros(c_dim)})["params"]}

    params = build(jax.random.PRNGKey(7))
    target = _perturbed(params, 8, scale=1.0)
    batch = _random_batch(9, (n, obs_dim), n_actions, {"c": np.zeros(c_dim)}, rows)
    mask = (jnp.arange(rows) < rows - 2).astype(jnp.float32)
    y, (loss, q_mean) = jax.jit(lambda p, t, b, m: (qmix.targets(t, b, agent, mixer, GAMMA),
                                                    qmix.loss(p, t, b, m, agent, mixer, GAMMA)))(
        params, target, batch, mask)
    y = np.asarray(y)

    next_obs, c_next = np.asarray(batch["next_obs"]), np.asarray(batch["next_cond"]["c"])
    q_target = _mlp_by_hand(target["agent"], next_obs)  # [B, N, A]
    q_main = _mlp_by_hand(params["agent"], next_obs)
    best = np.take_along_axis(q_target, q_target.argmax(-1)[..., None], -1)[..., 0]
    not_done = 1.0 - np.asarray(batch["done"])
    r = np.asarray(batch["reward"])
    expected = r + GAMMA * not_done * _mixer_by_hand(target["mixer"], best, c_next)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    done = np.asarray(batch["done"]) == 1
    assert done.any() and np.array_equal(y[done], r[done])  # terminal rows: y = r exactly
    # the online argmax (Eq 4.6) would give other targets here: the test tells them apart
    assert (q_main.argmax(-1) != q_target.argmax(-1)).any()
    online = np.take_along_axis(q_target, q_main.argmax(-1)[..., None], -1)[..., 0]
    wrong = r + GAMMA * not_done * _mixer_by_hand(target["mixer"], online, c_next)
    assert not np.allclose(wrong, expected, atol=1e-3)

    # the loss is the masked mean of (y - Q_tot(s, a))^2 with the main nets
    q_taken = np.take_along_axis(_mlp_by_hand(params["agent"], np.asarray(batch["obs"])),
                                 np.asarray(batch["action"])[..., None], -1)[..., 0]
    q_tot = _mixer_by_hand(params["mixer"], q_taken, np.asarray(batch["cond"]["c"]))
    np.testing.assert_allclose(loss, np.mean((expected - q_tot)[:-2] ** 2), rtol=1e-4)
    np.testing.assert_allclose(q_mean, np.mean(q_tot[:-2]), rtol=1e-4, atol=1e-6)


# ---- schedule and accounting ---------------------------------------------------------------------


def authors_epsilons(n_episodes, start, end, div, pretrain):
    """eps of episodes 1..n and their warm-up flags, as [C-HSD train_offpolicy.py] runs them."""
    eps, out = start, []
    for idx in range(1, n_episodes + 1):
        out.append((eps, idx < pretrain))
        if idx >= pretrain and eps > end:
            eps -= (start - end) / div
    return out


def test_epsilon_is_per_episode_after_the_warm_up():
    config = qmix.Config(eps_start=0.5, eps_end=0.05, eps_div=20.0, pretrain_episodes=10)
    eps, warm = V.exploration(jnp.asarray(0), 60, config)
    ref = authors_epsilons(60, 0.5, 0.05, 20.0, 10)
    np.testing.assert_allclose(eps, [max(e, 0.05) for e, _ in ref], atol=1e-6)
    np.testing.assert_array_equal(warm, [w for _, w in ref])
    assert float(eps[9]) == 0.5 and float(eps[10]) == pytest.approx(0.5 - 0.0225)  # episodes 10, 11
    # the same numbers when the episodes come one per update
    eps_7, warm_7 = V.exploration(jnp.asarray(7), 3, config)
    np.testing.assert_allclose(eps_7, eps[7:10])
    np.testing.assert_array_equal(warm_7, warm[7:10])


ACCOUNTING = qmix.Config(mixer_input="obs", pretrain_episodes=4, buffer_size=64, batch_size=8,
                         hidden=(8,), mixer_embed=4)


@pytest.fixture(scope="module")
def game_state():
    """A QMIX state on the monotone game (one init for the tests below)."""
    return qmix.init(KEY, monotone_game(), monotone_game().default_params, ACCOUNTING)


def test_actions_uniform_in_warm_up_then_eps_greedy_then_greedy(game_state):
    # each of the 4000 parallel envs is an episode with its own index: keep them all in the warm-up,
    # then all at eps ~ 0.5
    state = game_state.replace(config=dataclasses.replace(ACCOUNTING, pretrain_episodes=5000,
                                                          eps_div=1e9))
    obs = jnp.broadcast_to(jax.nn.one_hot(9, 10), (4000, 2, 10))  # the game's first observation
    greedy = np.asarray(jnp.argmax(qmix.utilities(state, obs[:1]), -1))[0]
    act = jax.jit(qmix.act, static_argnames="evaluate")

    def freq(s, evaluate=False):
        a = np.asarray(act(s, obs, jax.random.PRNGKey(3), evaluate=evaluate)[0])
        return np.stack([np.bincount(a[:, i], minlength=3) / len(a) for i in range(2)])

    np.testing.assert_allclose(freq(state), 1 / 3, atol=0.03)  # episodes 1-4000 < 5000: uniform
    late = freq(state.replace(episodes=jnp.asarray(4999)))  # episodes 5000-8999: eps = 0.5
    np.testing.assert_allclose(late[[0, 1], greedy], 0.5 + 0.5 / 3, atol=0.03)
    best = freq(state, evaluate=True)
    np.testing.assert_array_equal(best[[0, 1], greedy], 1.0)


def authors_train_steps(lengths, pretrain, steps_per_train):
    """(train steps, step counter) after each batch of episode lengths, as the authors' loop."""
    step = trained = idx = 0
    out = []
    for batch in lengths:
        for length in batch:
            idx += 1
            for _ in range(length):
                step += 1
                if idx >= pretrain and step % steps_per_train == 0:
                    trained += 1
        out.append((trained, step))
    return out


def _synthetic_batch(seed, lengths, horizon, obs_dim=10):
    """Episodes of the given lengths on the 3-action game's shapes (numpy draws)."""
    rng = np.random.default_rng(seed)
    e = len(lengths)
    t = np.arange(horizon)[:, None]
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return jax.tree_util.tree_map(jnp.asarray, Trajectory(
        obs=normal(horizon, e, 2, obs_dim), action=rng.integers(0, 3, (horizon, e, 2)).astype(np.int32),
        reward=normal(horizon, e, 2), next_obs=normal(horizon, e, 2, obs_dim),
        valid=(t < np.asarray(lengths)[None]).astype(np.float32),
        terminated=t == np.asarray(lengths)[None] - 1, truncated=np.zeros((horizon, e), bool),
        extras={}, info={}))


def test_train_steps_follow_the_authors_accounting(game_state):
    """One step every 10 env steps counted across episodes, none in episodes idx < pretrain; the
    remainder carries over; parameters do not move before the first step."""
    lengths = [(7, 12), (3, 5), (9, 1), (12, 12), (4, 6), (11, 2)]
    state = game_state
    initial = state.params
    update = jax.jit(qmix.update)
    expected = authors_train_steps(lengths, pretrain=4, steps_per_train=10)
    pushed = 0
    for i, (pair, (trained, step)) in enumerate(zip(lengths, expected)):
        before = int(state.train_steps)
        state, metrics = update(state, _synthetic_batch(i, pair, 12))
        pushed += sum(pair)
        assert int(state.train_steps) == trained, (i, int(state.train_steps), trained)
        assert int(state.remainder) == step % 10
        assert int(metrics["qmix/train_steps"]) == trained - before
        assert int(state.episodes) == 2 * (i + 1)
        assert int(state.buffer.size) == min(pushed, 64)
        moved = any(not np.array_equal(a, b) for a, b in zip(
            jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(initial)))
        assert moved == (trained > 0), i
    assert expected[-1][0] == 6  # the sequence exercises warm-up, carried remainders and training


def test_push_keeps_episodes_in_order_and_fifo():
    """Valid rows only, episode after episode; batches larger than the buffer go one episode at a time."""
    buffer = replay.init({"x": jnp.zeros(())}, 5)
    x = jnp.arange(12.0).reshape(4, 3)  # [T=4, E=3]: x = 3 t + e
    valid = jnp.array([[1, 1, 1], [1, 0, 1], [1, 0, 0], [0, 0, 0]], jnp.float32)
    out = V.push(buffer, {"x": x}, valid)  # 6 rows > 5 slots: episodes 0 (3 rows), 1 (1), 2 (2)
    # rows in order 0, 3, 6 | 1 | 2, 5; the sixth overwrites the first
    np.testing.assert_array_equal(out.data["x"], [5.0, 3.0, 6.0, 1.0, 2.0])
    assert int(out.size) == 5 and int(out.ptr) == 1


def test_eval_metrics_count_wins_losses_and_draws():
    """On STS2 (info["outcome"]): a goal on the last valid step counts, padding after it does not."""
    outcome = np.zeros((4, 4), np.float32)
    outcome[2, 0], outcome[1, 1], outcome[3, 3] = 1.0, -1.0, 1.0  # env 3's goal is padding
    valid = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]], np.float32)
    batch = Trajectory(obs=None, action=None, reward=None, next_obs=None, valid=valid,
                       terminated=None, truncated=None, extras={}, info={"outcome": outcome})
    rates = {k: float(v) for k, v in qmix.eval_metrics(None, batch).items()}
    assert rates == {"qmix/win_rate": 0.25, "qmix/lose_rate": 0.25, "qmix/draw_rate": 0.5}
    assert qmix.eval_metrics(None, batch.replace(info={})) == {}


# ---- learning --------------------------------------------------------------------------------------


def _train_matrix_game(algo, config, seeds=3, iterations=120):
    """Final states and logged metrics (leaves [seeds, ...]) of `algo` on the monotone game."""
    env = monotone_game()
    train = make_train(algo, env, env.default_params, config,
                       TrainConfig(n_envs=16, iterations=iterations, log_every=iterations // 2,
                                   eval_envs=32))
    runner, metrics = train_seeds(train, seeds)
    return runner.algo_state, metrics


def greedy_q_tot(state, obs):
    """Q_tot of the greedy joint action at observation `obs[N, D]` (mixer on all observations)."""
    q = jnp.max(qmix.utilities(state, obs), axis=-1)
    return state.mixer.apply({"params": state.params["mixer"]}, q, {"c": obs.reshape(-1)})


def test_learns_the_optimum_of_a_monotone_matrix_game():
    """Greedy evaluation reaches the optimum 2 agents x 2 rounds x 8 = 32 (uniform play: 12) in every
    seed, and Q_tot of the greedy joint action is near its value: 16 (team reward = sum) in the
    last round, 16 (1 + gamma) at the start (the bootstrap)."""
    config = qmix.Config(mixer_input="obs", hidden=(32, 32), mixer_embed=16, lr=3e-3,
                         eps_start=1.0, eps_end=0.05, eps_div=400.0, buffer_size=2000,
                         batch_size=64, steps_per_train=2, pretrain_episodes=16)
    state, metrics = _train_matrix_game(qmix, config)
    final = metrics["collective_return"][:, -1]
    train_steps = metrics["qmix/train_steps_total"][:, -1]
    start = jax.nn.one_hot(jnp.full((2,), 9), 10)  # memory1: "start" entry
    last = jax.nn.one_hot(jnp.full((2,), 8), 10)  # previous joint action (2, 2)
    values = np.asarray(jax.vmap(lambda s: jnp.stack([greedy_q_tot(s, start),
                                                      greedy_q_tot(s, last)]))(state))
    print(f"QMIX monotone game: greedy collective return per seed {final} (optimum 32, uniform 12),"
          f" train steps {train_steps}, greedy Q_tot (start, last round) {values.tolist()} "
          f"(true {16 * (1 + GAMMA):.2f}, 16)")
    np.testing.assert_allclose(final, 32.0)
    assert np.all(train_steps > 1000)
    np.testing.assert_allclose(values, np.broadcast_to([16 * (1 + GAMMA), 16.0], values.shape),
                               rtol=0.03)


# ---- command line ---------------------------------------------------------------------------------


def _cli(tmp_path, env_id, *extra):
    from experiments import run

    out = str(tmp_path / "run")
    argv = ["--algo", "qmix", "--env", env_id, "--n_envs", "2", "--iterations", "2",
            "--log-every", "1", "--eval-envs", "2", "--algo-param", "buffer_size=500",
            "--algo-param", "pretrain_episodes=2", "--algo-param", "batch_size=32", *extra,
            "--out", out, "--quiet"]
    assert run.main(argv) == 0
    return [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]


def _check_smoke(lines, horizon):
    assert [ln["iteration"] for ln in lines] == [1, 2]
    # episode 1 is warm-up (idx < 2): its steps only advance the counter; episodes 2-4 train
    assert 0 < lines[0]["qmix/buffer_size"] <= 2 * horizon
    assert 0 < lines[-1]["qmix/train_steps_total"] <= (4 * horizon) // 10
    assert lines[-1]["qmix/episodes"] == 4 and 0 < lines[-1]["qmix/epsilon"] <= 0.5


def test_cli_smoke_on_a_matrix_game(tmp_path):
    lines = _cli(tmp_path, "matrix_game", "--env-param", "max_steps_in_episode=20",
                 "--algo-param", "mixer_input=obs")
    _check_smoke(lines, 20)
    assert lines[-1]["qmix/train_steps_total"] == 6  # steps 30, 40, ..., 80: after episode 1


def test_cli_rejects_an_env_without_a_state(tmp_path, capsys):
    from experiments import run

    assert run.main(["--algo", "qmix", "--env", "matrix_game", "--out", str(tmp_path / "r")]) == 2
    assert "use mixer_input='obs'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_smoke_on_particle(tmp_path):
    _check_smoke(_cli(tmp_path, "particle_antipodal", "--algo-param", "hidden=64,64"), 50)


@pytest.mark.slow  # STS2's step takes a minute to compile on a busy 2-core machine
def test_cli_smoke_on_sts2(tmp_path):
    lines = _cli(tmp_path, "sts2", "--env-param", "max_steps_in_episode=30")
    _check_smoke(lines, 30)
    rates = [lines[-1][f"qmix/{k}_rate"] for k in ("win", "lose", "draw")]
    assert sum(rates) == pytest.approx(1.0)
