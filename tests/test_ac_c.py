"""AC-c: actor-critic with continuous give-reward actions (jaxmcg.algos.ac_c)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import assert_grad_matches_fd, f64
from seeds import train_seeds
from test_ac_d import _jitter, _linear_critics

import jaxmcg
from jaxmcg import critic as C
from jaxmcg.algos import ac, ac_c, pg_c
from jaxmcg.networks import MLP, ConvNet, agent_slice
from jaxmcg.rollout import Trajectory, episode_rollout
from jaxmcg.train import TrainConfig, make_train
from jaxmcg.wrappers import GiveAction

GAMMA = 0.99


def assert_trees_close(actual, expected, **tol):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol), actual, expected)


# ---- defaults adapt to the observations -------------------------------------------------------


@pytest.mark.slow  # long; `make test-slow`
def test_defaults_are_table_b5_and_adapt_to_observations():
    c = ac_c.Config()
    # Table B.5 7x7 AC-c, thesis L1784-1787
    assert (c.lr, c.lr_critic, c.tau, c.entropy_coef) == (1e-4, 1e-3, 0.01, 0.1)
    assert (c.eps_start, c.eps_end, c.eps_div, c.r_max, c.gamma) == (0.5, 0.05, 100.0, 2.0, 0.99)
    assert jaxmcg.get_algo("ac_c") is ac_c

    env, params = jaxmcg.make("escape_room")
    state = ac_c.init(jax.random.PRNGKey(0), env, params, c)
    assert (state.config.network, state.config.hidden, state.config.give_hidden) == (
        "mlp", (64, 32), (64, 16))
    assert isinstance(state.give_net, MLP) and state.give_net.out == 1
    assert not state.give_net.use_output_bias
    assert ac_c.wrap_env(env, c).observation_space(params).shape == (7,)

    env, params = jaxmcg.make("cleanup-7x7")
    state = ac_c.init(jax.random.PRNGKey(0), env, params, c)
    assert (state.config.network, state.config.hidden, state.config.give_hidden) == (
        "conv", (64, 64), (64, 64))
    assert isinstance(state.policy, ConvNet) and state.policy.out == 6
    assert isinstance(state.give_net, ConvNet) and state.give_net.out == 1
    assert ac_c.wrap_env(env, c).observation_space(params).shape == (9, 9, 3)

    with pytest.raises(ValueError, match="network='conv' does not fit observations of shape"):
        ac_c.init(jax.random.PRNGKey(0), *jaxmcg.make("escape_room"), ac_c.Config(network="conv"))
    with pytest.raises(ValueError, match="r_max=0"):
        ac_c.Config(r_max=0.0).validate()
    with pytest.raises(ValueError, match="cost_coef=-1"):
        ac_c.Config(cost_coef=-1.0).validate()


@pytest.mark.slow  # long; `make test-slow`
def test_cleanup_update_with_conv_network_and_action_input():
    """One jitted update on Cleanup 7x7 with conv torsos, f_eta also seeing the other's move (joined
    after its first dense layer): amounts in [0, R_max], everything moves and stays finite."""
    env, params = jaxmcg.make("cleanup-7x7")
    config = ac_c.Config(hidden=(16, 16), give_hidden=(16, 8), lr=1e-2, condition_on_actions=True)
    state = ac_c.init(jax.random.PRNGKey(0), env, params, config)
    # f_eta's second dense layer takes 16 hidden units + the other's one-hot move (6)
    assert state.params["give"]["Dense_1"]["kernel"].shape == (2, 16 + 6, 8)
    wrapped = ac_c.wrap_env(env, config)
    batch = episode_rollout(wrapped, params, lambda o, k: ac_c.act(state, o, k),
                            jax.random.PRNGKey(1), 4, 10)
    given = np.asarray(batch.action.given)
    assert given.shape == (10, 4, 2, 2) and np.all((given >= 0) & (given <= 2.0))
    np.testing.assert_array_equal(np.diagonal(given, axis1=-2, axis2=-1), 0.0)
    new, m = jax.jit(ac_c.update)(state, batch)
    for k, v in m.items():
        assert np.all(np.isfinite(v)), k
    for part in ("move", "give"):
        moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                       new.params[part], state.params[part])
        assert max(jax.tree_util.tree_leaves(moved)) > 0, part


# ---- reward accounting on a hand-built batch --------------------------------------------------


def _hand_batch(obs_dim):
    """Two 2-agent episodes (E=2) of <= 3 steps; amounts a = 2 sigmoid(u); env 1's last step is
    padding."""
    rng = np.random.default_rng(0)
    t, e, n = 3, 2, 2
    u = jnp.asarray(rng.normal(size=(t, e, n, 1)) * 2, jnp.float32)
    moves = jnp.asarray(rng.integers(0, 3, size=(t, e, n)), jnp.int32)
    return Trajectory(
        obs=jnp.asarray(rng.normal(size=(t, e, n, obs_dim)), jnp.float32),
        action=GiveAction(moves, pg_c.others_to_matrix(2.0 * jax.nn.sigmoid(u))),
        reward=jnp.array([[[0.0, -1.0], [-1.0, 0.0]], [[10.0, -1.0], [0.0, 0.0]],
                          [[1.0, 2.0], [7.0, 7.0]]]),
        next_obs=jnp.asarray(rng.normal(size=(t, e, n, obs_dim)), jnp.float32),
        valid=jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]),
        terminated=jnp.zeros((t, e), bool), truncated=jnp.zeros((t, e), bool),
        extras={"u": u}, info={},
    )


def test_critic_and_actor_use_received_minus_given_by_hand():
    env, env_params = jaxmcg.make("escape_room")
    config = ac_c.Config(critic_hidden=(), lr=0.1, entropy_coef=0.05)
    state = ac_c.init(jax.random.PRNGKey(0), env, env_params, config)
    state, main, target, v = _linear_critics(state)
    batch = _hand_batch(7)

    u = np.asarray(batch.extras["u"])[..., 0].astype(np.float64)  # [T, E, N]
    a = 2.0 / (1.0 + np.exp(-u))  # what each agent gave the other
    total = np.asarray(batch.reward) + a[..., ::-1] - a
    np.testing.assert_allclose(ac_c.total_rewards(batch, 1.0), total, rtol=1e-6, atol=1e-6)

    new, m = jax.jit(ac_c.update)(state, batch)

    valid = np.asarray(batch.valid)[..., None]
    n_valid = valid.sum()
    sq = np.square(total + GAMMA * v(target, batch.next_obs) - v(main, batch.obs)) * valid
    np.testing.assert_allclose(m["ac_c/critic_loss"], sq.sum() / n_valid, rtol=1e-5)
    delta = total + GAMMA * v(main, batch.next_obs) - v(main, batch.obs)
    np.testing.assert_allclose(m["ac_c/td_error"], (delta * valid).sum((0, 1)) / n_valid,
                               rtol=1e-5, atol=1e-6)

    # actor loss by hand: -mean_e sum_t [log pi~(a_d|o) + log pi(a_r|o)] delta - c_ent sum_t H(pi~)
    eps = 0.5
    apply = lambda module, p, i: np.asarray(module.apply({"params": agent_slice(p, i)},
                                                         batch.obs[:, :, i]), np.float64)
    logits = np.stack([apply(state.policy, state.params["move"], i) for i in range(2)], 2)
    mean = np.stack([apply(state.give_net, state.params["give"], i)[..., 0] for i in range(2)], 2)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (1 - eps) * e / e.sum(-1, keepdims=True) + eps / 3
    logp_move = np.log(np.take_along_axis(probs, np.asarray(batch.action.action)[..., None], -1))[..., 0]
    ent = -np.sum(probs * np.log(probs), -1)
    s = 1.0 / (1.0 + np.exp(-u))
    logp_give = -0.5 * (u - mean) ** 2 - 0.5 * np.log(2 * np.pi) - np.log(2.0 * s * (1 - s))
    expected = -np.sum(np.mean(np.sum(((logp_move + logp_give) * delta + 0.05 * ent) * valid, 0), 0))
    np.testing.assert_allclose(m["ac_c/policy_loss"], expected, rtol=1e-5)
    grads = jax.grad(ac_c.actor_loss)(state.params, state, batch, jnp.asarray(delta, jnp.float32), eps)
    assert_trees_close(new.params, jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, state.params, grads),
                       rtol=1e-5, atol=1e-6)

    ev = ac_c.eval_metrics(state, batch)
    np.testing.assert_allclose(ev["ac_c/total_return"], np.mean(np.sum(total * valid, 0), 0), rtol=1e-5)
    np.testing.assert_allclose(ev["ac_c/given_per_episode"], np.mean(np.sum(a * valid, 0), 0),
                               rtol=1e-5)


# ---- gradient checks against finite differences (float64) -------------------------------------


@pytest.mark.parametrize("env_id", ["escape_room",
                                    pytest.param("cleanup-7x7", marks=pytest.mark.slow)])
def test_gradients_match_finite_differences(x64, env_id):
    """Actor loss (move categorical + change-of-variables gift density, delta on the totals) and
    critic loss (TD on the totals, distinct target), on a rollout: MLP on ER, conv on Cleanup."""
    env, env_params = jaxmcg.make(env_id)
    config = ac_c.Config(hidden=(8, 8), give_hidden=(8, 4))
    state = ac_c.init(jax.random.PRNGKey(0), env, env_params, config)
    wrapped = ac_c.wrap_env(env, config)
    batch = episode_rollout(wrapped, env_params, lambda o, k: ac_c.act(state, o, k),
                            jax.random.PRNGKey(1), 3, 5)
    state = state.replace(
        params=f64(_jitter(state.params, 5)), critic_params=f64(_jitter(state.critic_params, 6)),
        target_params=f64(jax.tree_util.tree_map(lambda p: 0.7 * p + 0.01, state.critic_params)))
    batch = f64(batch)
    total = batch.replace(reward=ac_c.total_rewards(batch, 1.0))
    v = C.values(state.critic, state.critic_params, batch.obs)
    v_next = C.values(state.critic, state.critic_params, batch.next_obs)
    delta = C.td_error(total.reward, v, v_next, GAMMA)
    eps = jnp.asarray(0.2, jnp.float64)
    grad = jax.grad(lambda p: ac_c.actor_loss(p, state, total, delta, eps))(state.params)
    assert float(jnp.max(jnp.abs(grad["give"]["Dense_0"]["kernel"]))) > 0  # f_eta gets a gradient
    assert_grad_matches_fd(lambda p: ac_c.actor_loss(p, state, total, delta, eps),
                           state.params, jax.random.PRNGKey(3))
    assert_grad_matches_fd(lambda p: ac.critic_objective(p, state, total)[0], state.critic_params,
                           jax.random.PRNGKey(4))


# ---- learning ---------------------------------------------------------------------------------


def test_givers_stop_paying_when_giving_costs():
    """As PG-c (test_pg_c): a gift costs the giver its amount and changes nothing for it in this
    episode, so the giver's actor pushes f_eta(o) down; ER(2,1) stays unsolved (thesis §6.3). At lr
    1e-2 with 64 episodes per update, after 150 updates every seed must give < 0.5 per agent and
    episode (about 4 at init: 2 sigmoid(N(0, 1)) averages 1 per step) and have a negative collective
    return.

    The check can fail: with giving made free (cost_coef=0) the same learners give more, not less
    (measured: >= 6.8 per agent after 50 updates), so the first check tests that the giver pays;
    with the cost they give <= 0.15 here."""
    env, env_params = jaxmcg.make("escape_room")
    tc = TrainConfig(n_envs=64, iterations=150, log_every=50, eval_envs=256)
    train = make_train(ac_c, env, env_params, ac_c.Config(lr=1e-2), tc)
    _, m = train_seeds(train, 3)
    given = m["ac_c/given_per_episode"][:, -1]  # [seeds, N], evaluation
    assert np.all(given < 0.5), given
    assert np.all(m["collective_return"][:, -1] < 0.0), m["collective_return"][:, -1]
    assert np.all(np.isfinite(m["ac_c/critic_loss"]))
