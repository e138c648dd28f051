"""Independent Q-learning (jaxmcg.algos.iql), HSD's IQL baseline (cm3-hsd.md §5.3, §5.5). The
schedule, replay and accounting it shares with QMIX are tested in test_qmix.py."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd, f64
from seeds import train_seeds
from test_qmix import GAMMA, _mlp_by_hand, _perturbed, _synthetic_batch, authors_train_steps, monotone_game

import jaxmcg
from jaxmcg import value_agents as V
from jaxmcg.algos import iql
from jaxmcg.train import TrainConfig, make_train

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("overrides,needles", [
    ({"network": "cnn"}, ["network='cnn'", "valid: auto, mlp, checkers, lane_merge"]),
    ({"team_reward": "mean"}, ["team_reward='mean'", "valid: auto, sum, first"]),
    ({"eps_div": 0.0}, ["eps_div=0.0", "> 0"]),
    ({"steps_per_train": 0}, ["steps_per_train=0", "positive integer"]),
    ({"batch_size": 300, "buffer_size": 200}, ["batch_size=300", "<= buffer_size"]),
    ({"buffer_size": 2, "batch_size": 2}, ["buffer_size=2", ">= 5"]),  # the IPD's 5 rounds
])
def test_bad_input_is_rejected_before_compiling(overrides, needles):
    env, params = jaxmcg.make("matrix_game")
    config = iql.Config(**overrides)
    assert_rejected_before_compiling(lambda: iql.init(KEY, env, params, config), needles)


def _batch(seed, n=2, obs_dim=3, n_actions=4, rows=6):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {"obs": normal(rows, n, obs_dim), "next_obs": normal(rows, n, obs_dim),
            "action": rng.integers(0, n_actions, (rows, n)).astype(np.int32),
            "reward": normal(rows, n), "done": (np.arange(rows) % 3 == 2).astype(np.float32)}


def test_loss_gradient_matches_finite_differences_with_a_skill_conditioned_net(x64):
    """`loss` takes any q_fn: here HSD's low level, Q(o, z) with a one-hot skill z per agent."""
    net = V.QNet((16, 16), 4)
    z = jax.nn.one_hot(jnp.array([[0, 2]] * 6), 3, dtype=jnp.float64)  # [B, N, K]
    q_fn = lambda p, o: net.apply({"params": p}, jnp.concatenate([o, z], -1))  # noqa: E731
    theta = f64(jax.jit(lambda k: net.init(k, jnp.zeros((2, 6)))["params"])(KEY))
    target = _perturbed(theta, 1)
    batch = f64(jax.tree_util.tree_map(jnp.asarray, _batch(2)))
    mask = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    assert_grad_matches_fd(lambda p: iql.loss(p, target, batch, mask, q_fn, GAMMA)[0], theta,
                           jax.random.PRNGKey(3))


@pytest.mark.parametrize("per_agent_done", [False, True])
def test_targets_take_the_target_max_and_done_cuts_the_bootstrap(per_agent_done):
    net = V.QNet((6,), 4)
    params = jax.jit(lambda k: net.init(k, jnp.zeros((2, 3)))["params"])(KEY)
    target = _perturbed(params, 5, scale=1.0)
    batch = _batch(6)
    if per_agent_done:  # HSD may mark agents separately: done [B, N]
        batch["done"] = np.stack([batch["done"], 1.0 - batch["done"]], -1)
    mask = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], np.float32)
    q_fn = lambda p, o: net.apply({"params": p}, o)  # noqa: E731
    loss, q_mean = jax.jit(lambda b, m: iql.loss(params, target, b, m, q_fn, GAMMA))(batch, mask)

    done = batch["done"] if per_agent_done else batch["done"][:, None]
    y = batch["reward"] + GAMMA * (1 - done) * _mlp_by_hand(target, batch["next_obs"]).max(-1)
    y_main = batch["reward"] + GAMMA * (1 - done) * _mlp_by_hand(params, batch["next_obs"]).max(-1)
    assert not np.allclose(y, y_main, atol=1e-3)  # a target built on the main net would differ
    q = np.take_along_axis(_mlp_by_hand(params, batch["obs"]), batch["action"][..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, np.mean((y - q)[:5] ** 2), rtol=1e-4)
    np.testing.assert_allclose(q_mean, np.mean(q[:5]), rtol=1e-4, atol=1e-6)


def test_team_reward_per_agent_and_the_accounting():
    """Every agent stores the team reward (here the sum, CM3's choice; STS2 broadcasts its own);
    train steps follow the authors' one step every 10 env steps after the warm-up."""
    env = monotone_game()
    config = iql.Config(pretrain_episodes=3, buffer_size=64, batch_size=8, hidden=(8,))
    state = iql.init(KEY, env, env.default_params, config)
    assert state.setup.team_reward == "sum"
    lengths = [(7, 12), (3, 5), (9, 1), (12, 12)]
    update = jax.jit(iql.update)
    for i, (pair, (trained, step)) in enumerate(zip(lengths, authors_train_steps(lengths, 3, 10))):
        batch = _synthetic_batch(i, pair, 12)
        state, metrics = update(state, batch)
        assert int(state.train_steps) == trained and int(state.remainder) == step % 10
    assert trained > 0
    stored = np.asarray(state.buffer.data["reward"][:7])  # the first episode, in order
    np.testing.assert_allclose(stored, np.repeat(np.asarray(_synthetic_batch(0, lengths[0], 12)
                                                            .reward[:7, 0].sum(-1))[:, None], 2, 1),
                               rtol=1e-6)


def test_learns_the_optimum_of_a_monotone_matrix_game():
    """Greedy evaluation reaches the optimum 32 (uniform play: 12) in every seed, and the greedy
    Q(start) of each agent (trained on the team reward 16 per round) is near 16 (1 + gamma)."""
    env = monotone_game()
    config = iql.Config(hidden=(32, 32), lr=3e-3, eps_start=1.0, eps_end=0.05, eps_div=400.0,
                        buffer_size=2000, batch_size=64, steps_per_train=2, pretrain_episodes=16)
    train = make_train(iql, env, env.default_params, config,
                       TrainConfig(n_envs=16, iterations=120, log_every=60, eval_envs=32))
    runner, metrics = train_seeds(train, 3)
    final = metrics["collective_return"][:, -1]
    start = jax.nn.one_hot(jnp.full((2,), 9), 10)
    q_start = np.asarray(jax.vmap(lambda s: iql.q_values(s, start).max(-1))(runner.algo_state))
    print(f"IQL monotone game: greedy collective return per seed {final} (optimum 32, uniform 12),"
          f" greedy Q(start) per seed and agent {q_start.tolist()} (true {16 * (1 + GAMMA):.2f})")
    np.testing.assert_allclose(final, 32.0)
    np.testing.assert_allclose(q_start, 16 * (1 + GAMMA), rtol=0.03)


def _cli(tmp_path, env_id, *extra):
    from experiments import run

    out = str(tmp_path / "run")
    argv = ["--algo", "iql", "--env", env_id, "--n_envs", "2", "--iterations", "2",
            "--log-every", "1", "--eval-envs", "2", "--algo-param", "buffer_size=500",
            "--algo-param", "pretrain_episodes=2", "--algo-param", "batch_size=32", *extra,
            "--out", out, "--quiet"]
    assert run.main(argv) == 0
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert [ln["iteration"] for ln in lines] == [1, 2]
    assert lines[-1]["iql/episodes"] == 4 and lines[-1]["iql/train_steps_total"] > 0
    return lines


def test_cli_smoke_on_a_matrix_game(tmp_path):
    lines = _cli(tmp_path, "matrix_game", "--env-param", "max_steps_in_episode=20")
    # episodes 2-4 of 20 steps: 6 train steps, all after the warm-up episode
    assert lines[-1]["iql/train_steps_total"] == 6


@pytest.mark.slow  # STS2's step takes a minute to compile on a busy 2-core machine
def test_cli_smoke_on_sts2(tmp_path):
    _cli(tmp_path, "sts2", "--env-param", "max_steps_in_episode=30")
