"""IAC (cm3-hsd.md §3) and the on-policy loop it shares with COMA (§2.6)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64

from experiments import run
from jaxmcg.algos import iac
from jaxmcg.registry import make
from jaxmcg.rollout import episode_returns, episode_rollout


def random_rows(env, params, seed, b=16):
    """A float64 minibatch shaped as the buffer stores it, with random contents (numpy: eager jax
    ops compile one by one)."""
    rng = np.random.default_rng(seed)
    rows = {}
    for k, x in iac.transitions(env, params).items():
        if k == "action":
            rows[k] = jnp.asarray(rng.integers(0, 5, (b,) + x.shape), jnp.int32)
        elif k == "done":
            rows[k] = jnp.asarray(rng.random(b) < 0.3, jnp.float64)
        else:
            rows[k] = jnp.asarray(rng.normal(size=(b,) + x.shape), jnp.float64)
    return rows


def test_losses_match_finite_differences(x64):
    env, params = make("particle_merge-v0")  # 2 agents: the o_others branch is checked too
    state = iac.init(jax.random.PRNGKey(0), env, params, iac.Config(buffer_size=1))
    v_target = jax.tree_util.tree_map(lambda p: p + 0.05, f64(state.v_params))
    state = state.replace(actor_params=f64(state.actor_params), v_params=f64(state.v_params),
                          v_target=v_target)
    rows = random_rows(env, params, 1)
    mask = jnp.asarray(np.arange(16) != 3, jnp.float64)
    # h = 1e-8: the merge layer's small (σ = 0.01) weights put many ReLUs near their kink
    assert_grad_matches_fd(lambda p: iac.critic_loss(p, state, rows, mask)[0], state.v_params,
                           jax.random.PRNGKey(2), h=1e-8)
    delta = jnp.asarray(np.random.default_rng(3).normal(size=(16, 2)))
    assert_grad_matches_fd(lambda p: iac.actor_loss(p, state, rows, mask, delta, 0.3),
                           state.actor_params, jax.random.PRNGKey(4), h=1e-8)
    # the loss is the formula of §3 on hand-computed pieces
    apply = jax.jit(lambda m, p, x: m.apply({"params": p}, x), static_argnums=0)
    logits = np.asarray(apply(state.actor, state.actor_params, rows["obs"]))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = 0.7 * p / p.sum(-1, keepdims=True) + 0.3 / 5
    logp = np.log(np.take_along_axis(p, np.asarray(rows["action"])[..., None], -1)[..., 0] + 1e-15)
    w = np.asarray(mask)[:, None]
    expect = -np.sum(logp * np.asarray(delta) * w) / (2 * np.sum(w))
    np.testing.assert_allclose(iac.actor_loss(state.actor_params, state, rows, mask, delta, 0.3),
                               expect, rtol=1e-10)
    v_next = np.asarray(apply(state.critic, state.v_target, rows["next_obs"]))
    v = np.asarray(apply(state.critic, state.v_params, rows["obs"]))
    target = np.asarray(rows["reward"]) + 0.99 * (1 - np.asarray(rows["done"])[:, None]) * v_next
    expect = np.sum((target - v) ** 2 * w) / (2 * np.sum(w))
    np.testing.assert_allclose(iac.critic_loss(state.v_params, state, rows, mask)[0], expect,
                               rtol=1e-10)


def _rollout(env, params, state, key, n=10, evaluate=False):
    act = lambda o, k: iac.act(state, o, k, evaluate=evaluate)  # noqa: E731
    return episode_rollout(env, params, act, key, n, env.horizon(params))


@pytest.fixture(scope="module")
def stage1():
    """particle_stage1 (25-step episodes) and a fresh IAC state with a small loop."""
    env, params = make("particle_stage1-v0")
    config = iac.Config(epochs=3, batch_size=16, pretrain_episodes=15, buffer_size=1000,
                        eps_start=1.0, eps_end=0.1, eps_div=100.0)
    return env, params, iac.init(jax.random.PRNGKey(0), env, params, config, n_envs=10)


def test_onpolicy_accounting(stage1):
    """Warm-up batches accumulate untrained; the first train call after `pretrain_episodes` runs
    `epochs` Adam steps, decrements ε by (start - end) n_envs / eps_div and clears the buffer; done
    flags."""
    env, params, state = stage1
    update, rollout = jax.jit(iac.update), jax.jit(lambda s, k: _rollout(env, params, s, k))
    b1 = rollout(state, jax.random.PRNGKey(1))
    s1, m1 = update(state, b1)
    assert float(m1["trained"]) == 0 and int(s1.trains) == 0 and int(s1.episodes) == 10
    assert int(s1.buffer.size) == int(jnp.sum(b1.valid)) == 250  # truncated at 25 steps
    assert float(s1.epsilon) == 1.0 and float(m1["iac/v_loss"]) == 0.0
    # done = 1 at the time limit too (A-CM3-6); with truncation_bootstrap only at terminations
    rows, valid = iac.from_batch(b1)
    ends = np.sum(np.asarray(b1.terminated | b1.truncated) * np.asarray(b1.valid))
    assert np.sum(np.asarray(rows["done"]) * np.asarray(valid)) == ends == 10
    rows, _ = iac.from_batch(b1, truncation_bootstrap=True)
    assert np.sum(np.asarray(rows["done"]) * np.asarray(valid)) == np.sum(
        np.asarray(b1.terminated) * np.asarray(b1.valid)) < 10  # random walks rarely arrive
    for a, b in zip(jax.tree_util.tree_leaves(s1.actor_params),
                    jax.tree_util.tree_leaves(state.actor_params)):
        np.testing.assert_array_equal(a, b)
    s2, m2 = update(s1, rollout(s1, jax.random.PRNGKey(2)))
    assert float(m2["trained"]) == 1 and int(s2.trains) == 1 and int(s2.buffer.size) == 0
    assert int(s2.actor_opt[0].count) == 3 and int(s2.v_opt[0].count) == 3
    np.testing.assert_allclose(float(s2.epsilon), 1.0 - 0.9 * 10 / 100, rtol=1e-6)
    assert float(m2["epsilon"]) == 1.0 and float(m2["iac/v_loss"]) > 0
    # Polyak: after 3 steps the target moved by a little, not all the way
    k = s2.v_params["merge"]["W_self"]
    t, t0 = s2.v_target["merge"]["W_self"], state.v_target["merge"]["W_self"]
    assert 0 < float(jnp.max(jnp.abs(t - t0))) < float(jnp.max(jnp.abs(k - t0)))
    # ε floors at eps_end
    s3 = s2.replace(epsilon=jnp.asarray(0.12, jnp.float32))
    s3, _ = update(s3, rollout(s3, jax.random.PRNGKey(3)))
    assert abs(float(s3.epsilon) - 0.1) < 1e-7


def test_warmup_actions_are_uniform_and_evaluation_samples_with_eps_zero(stage1):
    env, params, state = stage1  # pretrain_episodes = 15
    bias = jnp.array([30.0, 0.0, 0.0, 0.0, 0.0])  # the policy all but always picks action 0
    actor_params = {**state.actor_params, "out": {**state.actor_params["out"], "bias": bias}}
    state = state.replace(actor_params=actor_params, epsilon=jnp.asarray(0.5, jnp.float32))
    obs = jnp.zeros((20, 1, env.obs_dim))
    acts = jax.jit(jax.vmap(lambda k: iac.act(state, obs, k)[0]))(
        jax.random.split(jax.random.PRNGKey(1), 200))  # [200 keys, 20 envs, 1]
    # envs 0-13 play episodes 1-14 < 15: uniform; env 14 on: the policy with ε = 0.5
    warm = np.bincount(np.asarray(acts[:, :14]).ravel(), minlength=5) / (200 * 14)
    np.testing.assert_allclose(warm, 0.2, atol=0.03)
    late = np.mean(np.asarray(acts[:, 14:]) == 0)
    assert abs(late - (0.5 + 0.5 / 5)) < 0.05
    greedy = jax.jit(jax.vmap(lambda k: iac.act(state, obs, k, evaluate=True)[0]))(
        jax.random.split(jax.random.PRNGKey(2), 50))
    assert np.all(np.asarray(greedy) == 0)  # ε = 0 and no warm-up at evaluation (A-CM3-17)
    assert np.all(np.asarray(iac.act_greedy(state, obs, None)[0]) == 0)  # the argmax


def test_bad_config_and_env_rejected():
    env, params = make("particle_stage1-v0")
    with pytest.raises(ValueError, match="eps_start"):
        iac.init(jax.random.PRNGKey(0), env, params, iac.Config(eps_start=0.01, eps_end=0.1))
    with pytest.raises(ValueError, match="buffer_size"):
        iac.init(jax.random.PRNGKey(0), env, params, iac.Config(buffer_size=100), n_envs=10)
    er, er_params = make("escape_room-v0")
    with pytest.raises(ValueError, match="no CM3 network"):
        iac.check_env(er, er_params, iac.Config())


def test_learns_stage1_navigation_through_the_cli(tmp_path):
    """Single-agent navigation (particle_stage1, 25 steps): 600 episodes of IAC with the thesis'
    learning rates (ε decaying over 1000 episodes) beat a uniformly random policy by a clear margin
    (measured: random -28.9 over 1000 episodes; IAC -13.3, -12.1, -13.5 at 600 episodes, seeds
    0-2, starting from about -28)."""
    env, params = make("particle_stage1-v0")
    uniform = lambda o, k: (jax.random.randint(k, o.shape[:2], 0, 5), {})  # noqa: E731
    rand = jax.jit(lambda k: episode_rollout(env, params, uniform, k, 500, 25))(jax.random.PRNGKey(9))
    random_return = float(jnp.mean(episode_returns(rand)))
    out = str(tmp_path / "r")
    argv = ["--algo", "iac", "--env", "particle_stage1", "--n_envs", "10", "--iterations", "60",
            "--log-every", "20", "--eval-envs", "200", "--algo-param", "eps_div=1000",
            "--out", out, "--quiet"]
    assert run.main(argv) == 0
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    final = lines[-1]["collective_return"]
    assert lines[-1]["iteration"] == 60
    assert final > random_return + 10.0, (final, random_return)
    assert lines[-1]["greedy/collective_return"] > random_return + 10.0  # A-CM3-17's greedy eval


@pytest.mark.slow  # one compile per environment; `make test-slow`
@pytest.mark.parametrize("algo", ["iac", "coma"])
@pytest.mark.parametrize("env_name", ["particle_antipodal", "checkers", "lane_merge"])
def test_cli_smoke_on_every_cm3_environment(tmp_path, algo, env_name):
    """6 iterations of 10 episodes: 4 untrained (40 episodes < 50), then train calls at episodes
    50 and 60."""
    out = str(tmp_path / "r")
    argv = ["--algo", algo, "--env", env_name, "--n_envs", "10", "--iterations", "6",
            "--log-every", "3", "--eval-envs", "4", "--out", out, "--quiet"]
    assert run.main(argv) == 0
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert [ln["iteration"] for ln in lines] == [3, 6]
    assert np.isfinite(lines[-1]["collective_return"])
    assert lines[0]["trained"] == 0 and lines[-1]["trained"] == pytest.approx(2 / 3)
