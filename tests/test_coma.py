"""COMA with goals (cm3-hsd.md §3, §2.5); the on-policy loop is tested in test_iac.py."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64
from test_iac import random_rows

from experiments import run
from jaxmcg import cm3_networks as N
from jaxmcg.algos import coma, iac
from jaxmcg.registry import make


def _f64_state(env, params, **kw):
    state = coma.init(jax.random.PRNGKey(0), env, params, coma.Config(buffer_size=1, **kw))
    shift = lambda tree: jax.tree_util.tree_map(lambda p: p + 0.02, f64(tree))  # noqa: E731
    return state.replace(actor_params=f64(state.actor_params), q_params=f64(state.q_params),
                         actor_target=shift(state.actor_params), q_target=shift(state.q_params))


def test_losses_match_finite_differences(x64):
    env, params = make("particle_merge-v0")
    state = _f64_state(env, params)
    rows = random_rows(env, params, 1, b=8)
    mask = jnp.asarray(np.arange(8) != 2, jnp.float64)
    next_actions = jnp.asarray(np.random.default_rng(2).integers(0, 5, (8, 2)), jnp.int32)
    # h = 1e-8: the small (σ = 0.01) critic weights put many ReLUs near their kink
    assert_grad_matches_fd(lambda p: coma.critic_loss(p, state, rows, mask, next_actions),
                           state.q_params, jax.random.PRNGKey(3), h=1e-8)
    advantage = jnp.asarray(np.random.default_rng(4).normal(size=(8, 2)))
    assert_grad_matches_fd(lambda p: coma.actor_loss(p, state, rows, mask, advantage, 0.2),
                           state.actor_params, jax.random.PRNGKey(5), h=1e-8)


def _naive_input(rows, b, n, actions, nxt=False):
    """The critic input of agent n at row b, built by hand: [s, onehot a^{-n}, g^n, g^{-n},
    onehot n, o_self^n] ([C-CM3 alg_baseline.py process_batch])."""
    p = "next_" if nxt else ""
    s = np.asarray(rows[p + "state"][b]).ravel()
    others = [j for j in range(actions.shape[1]) if j != n]
    a_others = np.concatenate([np.eye(5)[int(actions[b, j])] for j in others])
    goal = np.asarray(rows["goal"][b])
    label = np.eye(actions.shape[1])[n]
    o_self = np.asarray(rows[p + "obs"][b, n, 0:4])  # particle o_self = [v, p]
    return np.concatenate([s, a_others, goal[n], np.concatenate([goal[j] for j in others]),
                           label, o_self])


def test_counterfactual_baseline_and_critic_target_against_naive_loops(x64):
    """3 agents (particle_antipodal has 4): each agent's advantage Q(s, a)[a^n] - Σ_â π(â) Q(s,
    (a^{-n}, â)) and the critic's team-reward SARSA target, from per-(row, agent, action) loops."""
    env, params = make("particle_antipodal-v0")
    state = _f64_state(env, params)
    rows = random_rows(env, params, 7, b=3)
    actions = np.asarray(rows["action"])
    apply = jax.jit(lambda p, x: state.critic.apply({"params": p}, x))
    q = np.asarray(coma.q_values(state, state.q_params, rows, rows["action"]))
    logits = np.asarray(jax.jit(lambda p, o: state.actor.apply({"params": p}, o))(
        state.actor_params, rows["obs"]))
    eps = 0.2
    probs = np.asarray(N.floored_probs(jnp.asarray(logits), eps))
    adv = np.asarray(coma.counterfactual_advantage(jnp.asarray(q), jnp.asarray(probs),
                                                   rows["action"]))
    for b in range(3):
        for n in range(4):
            q_hand = np.asarray(apply(state.q_params, _naive_input(rows, b, n, actions)))
            np.testing.assert_allclose(q[b, n], q_hand, rtol=1e-10)
            baseline = sum(probs[b, n, i] * q_hand[i] for i in range(5))
            np.testing.assert_allclose(adv[b, n], q_hand[actions[b, n]] - baseline, rtol=1e-8)
    # critic loss: (Σ_n r^n + γ(1 - done) Q'(s', a')[a'^n] - Q(s, a)[a^n])^2, mean over (b, n)
    nxt = np.random.default_rng(8).integers(0, 5, (3, 4))
    mask = jnp.asarray([1.0, 0.0, 1.0])
    err = []
    for b in (0, 2):
        team = float(np.sum(np.asarray(rows["reward"][b])))
        for n in range(4):
            q_next = np.asarray(apply(state.q_target, _naive_input(rows, b, n, nxt, nxt=True)))
            y = team + 0.99 * (1 - float(rows["done"][b])) * q_next[nxt[b, n]]
            err.append((y - q[b, n, actions[b, n]]) ** 2)
    np.testing.assert_allclose(coma.critic_loss(state.q_params, state, rows, mask, jnp.asarray(nxt)),
                               np.mean(err), rtol=1e-10)


def test_checkers_inputs_and_step():
    """Checkers: the critic reads s_T and o_self,T through its convs; a train step runs, moves the
    targets by τ and leaves a finite loss."""
    env, params = make("checkers-v0")
    state = coma.init(jax.random.PRNGKey(0), env, params, coma.Config(buffer_size=8))
    assert state.q_params["conv_s"]["kernel"].shape == (3, 5, 2, 4)
    assert state.q_params["conv_o"]["kernel"].shape == (3, 3, 3, 6)
    assert state.q_params["h1"]["kernel"].shape[1] == 256  # A-CM3-13
    fan_in = 9 * 3 * 4 + 25 * 6 + 2 * 4 + 5 + 2 + 2 + 2 + 4  # conv_s, conv_o, s_V, a^-n, g, g^-n, n, o_V
    assert state.q_params["h1"]["kernel"].shape[0] == fan_in
    rows = jax.tree_util.tree_map(lambda x: jnp.zeros((8,) + x.shape, x.dtype),
                                  iac.transitions(env, params))
    rows["reward"] = jnp.ones((8, 2))
    new, m = jax.jit(coma.train_step)(state, rows, jnp.ones(8), jnp.asarray(0.5), jax.random.PRNGKey(1))
    assert np.isfinite(float(m["coma/q_loss"])) and float(m["coma/q_loss"]) > 0
    d_main = new.q_params["out"]["bias"] - state.q_params["out"]["bias"]
    np.testing.assert_allclose(new.q_target["out"]["bias"] - state.q_target["out"]["bias"],
                               0.01 * d_main, rtol=1e-5, atol=1e-9)


def test_bad_config_rejected():
    env, params = make("particle_merge-v0")
    with pytest.raises(ValueError, match="units"):
        coma.init(jax.random.PRNGKey(0), env, params, coma.Config(units=-1))
    with pytest.raises(ValueError, match="batch_size"):
        coma.init(jax.random.PRNGKey(0), env, params, coma.Config(batch_size=0))


def test_learns_merge_through_the_cli(tmp_path):
    """particle_merge (2 agents, 50 steps): 1200 episodes with the Tables A.4-A.5 COMA learning
    rates (lr π 1e-4, lr Q 1e-3) and ε decaying over 1000 episodes beat a uniformly random team
    (-186 over 1000 episodes) by a clear margin (measured at 1200 episodes, seeds 0-2: -78, -75,
    -71; the untrained policy scores about -350)."""
    out = str(tmp_path / "r")
    argv = ["--algo", "coma", "--env", "particle_merge", "--n_envs", "10", "--iterations", "120",
            "--log-every", "40", "--eval-envs", "200", "--algo-param", "eps_div=1000",
            "--algo-param", "lr_actor=1e-4", "--algo-param", "lr_q=1e-3", "--out", out, "--quiet"]
    assert run.main(argv) == 0
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert lines[-1]["iteration"] == 120
    assert lines[-1]["collective_return"] > -136.0, lines
