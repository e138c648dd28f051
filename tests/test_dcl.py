"""DCL (jaxmcg/algos/dcl.py, dcl.md §2): the straight-through sampler, the four surrogate losses
against a hand-written two-agent evaluation (values and gradients), Proposition 2.1, bad input, and
fast learning on the one-shot Prisoner's Dilemma with the malicious co-player check of §3.5."""
import itertools

import flax.linen
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from seeds import train_seeds

import jaxmcg
from jaxmcg import distributions as D
from jaxmcg.algos import dcl
from jaxmcg.train import TrainConfig, make_train

KEY = jax.random.PRNGKey(0)
EPS = 1e-8


# --- straight-through Gumbel-softmax and the commitment indicator (dcl.md §2.4) ----------------

def test_st_gumbel_forward_is_a_categorical_sample():
    probs = jnp.array([0.1, 0.6, 0.3])
    samples = jax.vmap(lambda k: D.straight_through_gumbel(k, probs, 5.0))(
        jax.random.split(KEY, 20000))
    np.testing.assert_array_equal(np.sort(np.unique(np.asarray(samples))), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(samples).sum(-1), 1.0)
    freq = np.asarray(samples).mean(0)
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / 20000))


def test_st_gumbel_backward_is_the_tempered_softmax_jacobian():
    probs = jnp.array([0.2, 0.5, 0.3])
    tau = 2.5
    g = jax.random.gumbel(KEY, probs.shape)
    soft = lambda p: jax.nn.softmax((jnp.log(p + EPS) + g) / tau)  # noqa: E731
    jac = jax.jacobian(lambda p: D.straight_through_gumbel(KEY, p, tau))(probs)
    np.testing.assert_allclose(jac, jax.jacobian(soft)(probs), rtol=1e-5)


@pytest.mark.parametrize("committed", [True, False])
def test_indicator_gradient_is_four_times_soft_on_commit_and_zero_on_reject(committed):
    logits, tau = jnp.array([0.3, 0.8]), 1.0
    sample = lambda z, k: D.straight_through_gumbel(k, jax.nn.softmax(z), tau)  # noqa: E731
    key = next(k for k in jax.random.split(KEY, 50) if float(sample(logits, k)[1]) == committed)
    g = jax.random.gumbel(key, (2,))
    sample1 = lambda z: sample(z, key)[1]  # noqa: E731
    assert float(sample1(logits)) == float(committed)
    grad = jax.grad(lambda z: sample1(z) ** 4)(logits)
    soft1 = lambda z: jax.nn.softmax((jnp.log(jax.nn.softmax(z) + EPS) + g) / tau)[1]  # noqa: E731
    expected = 4 * jax.grad(soft1)(logits) if committed else jnp.zeros(2)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


# --- the losses against a hand-written two-agent evaluation (dcl.md §2.5, the code's form) -----

def mlp(p, x):
    for k in range(3):
        x = x @ p[f"Dense_{k}"]["kernel"] + p[f"Dense_{k}"]["bias"]
        x = jax.nn.relu(x) if k < 2 else x
    return x


def softmax_net(p, x):
    return jax.nn.softmax(mlp(p, x), axis=-1)


def hard_st(g, probs, tau):
    soft = jax.nn.softmax((jnp.log(probs + EPS) + g) / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, -1), probs.shape[-1])
    return hard + soft - jax.lax.stop_gradient(soft)


def chosen_log(probs, onehot):  # the code indexes log(p + 1e-8) by the sample's argmax
    return jnp.log(probs + EPS)[jnp.arange(probs.shape[0]), jnp.argmax(onehot, -1)]


def entropy(probs):
    return -jnp.mean(probs * jnp.log(probs + EPS))


def net(params, name, j):
    return jax.tree_util.tree_map(lambda x: x[j], params[name])


def q(params, j, s, mine, theirs):
    return mlp(net(params, "critic", j), jnp.concatenate([s, mine, theirs], -1))[:, 0]


def ref_critic(params, i, d):
    o = 1 - i
    e = d["e"][:, None]
    x_self = e * d["m"][:, i] + (1 - e) * d["a"][:, i]
    x_other = e * d["m"][:, o] + (1 - e) * d["a"][:, o]
    return jnp.mean((q(params, i, d["s"][:, 0], x_self, x_other) - d["G"][:, i]) ** 2)


def ref_action(params, i, d, beta, mask):
    o = 1 - i
    probs = softmax_net(net(params, "action", i), d["s"][:, 0])
    q_a = q(params, i, d["s"][:, 0], d["a"][:, i], d["a"][:, o])
    weight = d["e"] if mask == "agreement" else 1 - d["e"]
    return jnp.mean(-q_a * chosen_log(probs, d["a"][:, i]) * weight) - beta * entropy(probs)


def ref_commit(params, i, d, beta, tau, g):
    o = 1 - i
    probs = softmax_net(net(params, "commit", i),
                        jnp.concatenate([d["s"][:, 0], d["m"][:, i], d["m"][:, o]], -1))
    sampled = hard_st(g, probs, tau)
    logit = chosen_log(probs, sampled)
    self_is = sampled[:, 1] ** 4
    mutual = jax.lax.stop_gradient(self_is * d["c"][:, o])
    q_sa = q(params, i, d["s"][:, 0], d["a"][:, i], d["a"][:, o])
    q_sm = q(params, i, d["s"][:, 0], d["m"][:, i], d["m"][:, o])
    loss = mutual * (-q_sm * logit + (q_sa - q_sm) * self_is) + (1 - mutual) * (-q_sa * logit)
    return jnp.mean(loss) - beta * entropy(probs)


def ref_proposal(params, i, d, beta, tau, g_m, g_c, g_a, lam):
    o, s = 1 - i, d["s"][:, 0]
    sp_probs = softmax_net(net(params, "proposal", i), s)
    sp = hard_st(g_m[:, i], sp_probs, tau)
    cp = hard_st(g_m[:, o], softmax_net(net(params, "proposal", o), s), tau)
    sc_probs = softmax_net(net(params, "commit", i), jnp.concatenate([s, sp, cp], -1))
    sc = hard_st(g_c[:, i], sc_probs, tau)
    cc_probs = softmax_net(net(params, "commit", o), jnp.concatenate([s, cp, sp], -1))
    cc = hard_st(g_c[:, o], cc_probs, tau)
    self_is, co_is = sc[:, 1] ** 4, cc[:, 1] ** 4
    mutual = jax.lax.stop_gradient(self_is * co_is)
    sa = jax.lax.stop_gradient(hard_st(g_a[:, i], softmax_net(net(params, "action", i), s), tau))
    ca = jax.lax.stop_gradient(hard_st(g_a[:, o], softmax_net(net(params, "action", o), s), tau))
    sg = jax.lax.stop_gradient
    q_sa, q_sm = sg(q(params, i, s, sa, ca)), sg(q(params, i, s, sp, cp))
    q_sa_cp, q_sm_cp = sg(q(params, o, s, ca, sa)), sg(q(params, o, s, cp, sp))
    logits = chosen_log(sp_probs, sp) + chosen_log(sc_probs, sc) + chosen_log(cc_probs, cc)
    loss = (mutual * (-q_sm * logits) + (q_sa - q_sm) * (self_is + co_is)
            + (1 - mutual) * (-q_sa * logits))
    for x in (q_sa - q_sm, q_sa_cp - q_sm_cp):
        loss = loss + lam * jnp.abs(x) * jnp.maximum(x, 0.0) * chosen_log(sp_probs, sp)
    return jnp.mean(loss) - beta * entropy(sp_probs)


@pytest.fixture(scope="module")
def tiny():
    """A DCL state on the Grid game (2 actions, 8-dim state) and a random batch of 12 decisions."""
    env, params = jaxmcg.make("grid_game")
    state = dcl.init(KEY, env, params, dcl.Config(hidden=5))
    ks = jax.random.split(jax.random.PRNGKey(7), 6)
    b, n, m = 12, 2, 2
    oh = lambda k: jax.nn.one_hot(jax.random.randint(k, (b, n), 0, m), m)  # noqa: E731
    c = jax.random.bernoulli(ks[2], 0.7, (b, n)).astype(jnp.float32)
    data = {"s": jnp.repeat(jax.random.uniform(ks[0], (b, 1, 8)), n, axis=1),
            "m": oh(ks[1]), "a": oh(ks[3]), "c": c, "e": jnp.prod(c, -1),
            "G": jax.random.normal(ks[4], (b, n)) * 3, "w": jnp.ones(b)}
    return state, data


def _own(state, i):
    return {k: jax.tree_util.tree_map(lambda x: x[i], v) for k, v in state.params.items()}


def _ref_params(state, i, name, p):
    """The stacked parameters with agent i's `name` network replaced by `p`."""
    return {**state.params, name: jax.tree_util.tree_map(lambda s, x: s.at[i].set(x),
                                                          state.params[name], p)}


def assert_value_and_grad_match(ours, ref, p):
    v1, g1 = jax.value_and_grad(ours)(p)
    v2, g2 = jax.value_and_grad(ref)(p)
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree_util.tree_leaves(g1))


@pytest.mark.parametrize("i", [0, 1])
def test_critic_loss_matches_reference(tiny, i):
    state, d = tiny
    own = _own(state, i)
    assert_value_and_grad_match(
        lambda p: dcl.critic_loss(state, p, i, d),
        lambda p: ref_critic(_ref_params(state, i, "critic", p), i, d), own["critic"])


@pytest.mark.parametrize("i, mask", [(0, "agreement"), (1, "agreement"), (1, "no_agreement")])
def test_action_loss_matches_reference(tiny, i, mask):
    state, d = tiny
    state = state.replace(config=dcl.Config(hidden=5, action_pg_mask=mask))
    own = _own(state, i)
    assert_value_and_grad_match(
        lambda p: dcl.action_loss(state, p, i, own, d, 0.3),
        lambda p: ref_action(_ref_params(state, i, "action", p), i, d, 0.3, mask), own["action"])


@pytest.mark.parametrize("i", [0, 1])
def test_commitment_loss_matches_reference(tiny, i):
    state, d = tiny
    own = _own(state, i)
    key, tau = jax.random.PRNGKey(11), 1.7
    g = jax.random.gumbel(key, (12, 2))
    assert_value_and_grad_match(
        lambda p: dcl.commit_loss(state, p, i, own, d, 0.2, tau, key),
        lambda p: ref_commit(_ref_params(state, i, "commit", p), i, d, 0.2, tau, g), own["commit"])


@pytest.mark.parametrize("i, lam", [(0, 0.0), (1, 0.0), (0, 1.0), (1, 1.0)])
def test_proposal_loss_matches_reference(tiny, i, lam):
    state, d = tiny
    state = state.replace(config=dcl.Config(hidden=5, ic_weight=lam))
    own = _own(state, i)
    key, tau = jax.random.PRNGKey(5), 3.0
    k_m, k_c, k_a = jax.random.split(key, 3)
    g_m, g_c, g_a = (jax.random.gumbel(k, (12, 2, n)) for k, n in ((k_m, 2), (k_c, 2), (k_a, 2)))
    assert_value_and_grad_match(
        lambda p: dcl.proposal_loss(state, p, i, own, state.params, d, 0.1, tau, key)[0],
        lambda p: ref_proposal(_ref_params(state, i, "proposal", p), i, d, 0.1, tau, g_m, g_c,
                               g_a, lam),
        own["proposal"])


def test_score_function_ablation_is_the_derivative_at_fixed_samples(tiny):
    """With `pathwise_terms=False` no gradient passes through a sample, so the proposal gradient is
    the finite difference of the loss at fixed samples (small steps never flip an argmax here)."""
    state, d = tiny
    state = state.replace(config=dcl.Config(hidden=5, pathwise_terms=False, ic_weight=1.0))
    own = _own(state, 0)
    key = jax.random.PRNGKey(2)
    f = lambda p: dcl.proposal_loss(state, p, 0, own, state.params, d, 0.1, 2.0, key)[0]  # noqa
    flat, unravel = jax.flatten_util.ravel_pytree(own["proposal"])
    grad = jax.flatten_util.ravel_pytree(jax.grad(f)(own["proposal"]))[0]
    h = 1e-3
    for k in np.random.default_rng(0).choice(flat.size, 8, replace=False):
        e = jnp.zeros_like(flat).at[k].set(h)
        fd = (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * h)
        np.testing.assert_allclose(grad[k], fd, rtol=2e-2, atol=2e-4)


# --- Proposition 2.1 by enumeration (dcl.md §1.4, test 3 of §7.5) ------------------------------

def mcg_value(payoff, phi, psi, pi):
    """V^i of Eq. 10 for deterministic 2-agent profiles: phi[i], pi[i] actions, psi[i][(own, other)]."""
    m = (phi[0], phi[1])
    agree = psi[0][(m[0], m[1])] and psi[1][(m[1], m[0])]
    x = m if agree else (pi[0], pi[1])
    return payoff[x[0], x[1]]


def test_proposition_2_1_mutual_cooperation_is_a_nash_equilibrium_of_the_pd_mcg():
    env, params = jaxmcg.make("pd")
    payoff = np.asarray(params.payoff)
    C, Dd = 0, 1
    witness = {(C, C): 1, (Dd, C): 1, (C, Dd): 0, (Dd, Dd): 0}  # Eq. 29
    profile = ([C, C], [dict(witness), dict(witness)], [Dd, Dd])
    np.testing.assert_array_equal(mcg_value(payoff, *profile), [-1, -1])
    tables = [dict(zip(witness, bits)) for bits in itertools.product((0, 1), repeat=4)]
    for i in range(2):  # every deterministic unilateral deviation of agent i
        for phi_i, pi_i, psi_i in itertools.product((C, Dd), (C, Dd), tables):
            phi, psi, pi = list(profile[0]), list(profile[1]), list(profile[2])
            phi[i], psi[i], pi[i] = phi_i, psi_i, pi_i
            assert mcg_value(payoff, phi, psi, pi)[i] <= -1


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, match", [
    ("action_pg_mask", "never", "action_pg_mask='never'.*agreement, no_agreement, all"),
    ("ic_form", "dual", "ic_form='dual'.*sq_hinge_score"),
    ("num_updates", 0, "num_updates=0"),
    ("lr", 0.0, "lr=0.0"),
    ("ic_weight", -1.0, "ic_weight=-1.0"),
    ("gamma", 1.5, "gamma=1.5"),
])
def test_bad_config_is_rejected(field, value, match):
    env, params = jaxmcg.make("pd")
    with pytest.raises(ValueError, match=match):
        dcl.init(KEY, env, params, dcl.Config(**{field: value}))


def test_mega_step_that_does_not_divide_the_horizon_is_rejected():
    env, params = jaxmcg.make("rpc")
    with pytest.raises(ValueError, match="mega_step=3 does not divide"):
        dcl.init(KEY, env, params, dcl.Config(mega_step=3))


# --- learning on the one-shot PD (dcl.md §5.2, §5.7, §5.8) -------------------------------------

PD_SEEDS = 8


def train_pd(iterations, **config):
    env, params = jaxmcg.make("pd")
    train = make_train(dcl, env, params, dcl.Config(**config),
                       TrainConfig(n_envs=128, iterations=iterations, log_every=50, eval_envs=128))
    return train_seeds(train, PD_SEEDS)


@pytest.fixture(scope="module")
def pd_run():
    return train_pd(2500)


def test_dcl_learns_mutual_cooperation_on_the_pd(pd_run):
    _, m = pd_run
    sw = m["train/collective_return"]  # [seeds, chunks], 50-iteration means
    assert sw[:, :4].mean() < -2.8  # untrained play: about -3 (§5.7)
    # R: -2.10 at 3,000 (§5.7); about one seed in ten stays at mutual defection (closing note)
    assert np.median(sw[:, -1]) >= -2.2 and (sw[:, -1] >= -2.25).sum() >= 5, sw[:, -1]
    assert np.median(m["train/dcl/agreement"][:, -1]) > 0.85
    action_c = m["dcl/action_probs"][:, -1, :, 0]
    assert np.median(action_c) < 0.05  # the fallback defects (Fig. 3a, code mask D1)


def test_trained_dcl_agent_rejects_a_malicious_always_defect_co_player(pd_run):
    """§3.5: agent 0 against a co-player who always proposes D, commits and plays D: it must reject
    (own C, other D) and fall back to D, getting -2 rather than -3 (exact expectation over its
    policies at the converged parameters)."""
    runner, m = pd_run
    phi_c = m["dcl/proposal_probs"][:, -1, 0, 0]
    psi = m["dcl/commit_probs"][:, -1, 0]  # agent 0's commit probs for (m0, m1) = CC, CD, DC, DD
    pi_c = m["dcl/action_probs"][:, -1, 0, 0]
    fallback = pi_c * -3 + (1 - pi_c) * -2
    value = phi_c * (psi[:, 1] * -3 + (1 - psi[:, 1]) * fallback) + (1 - phi_c) * (
        psi[:, 3] * -2 + (1 - psi[:, 3]) * fallback)
    # 2,500 iterations: most seeds have converged
    assert np.median(value) >= -2.05 and value.min() > -2.5, (value, psi[:, 1])


# --- decentralized DCL and update order (dcl.md §2.8, D10, D11) --------------------------------

def _pd_batch(env, params, state, key, n_envs=16):
    from jaxmcg.rollout import episode_rollout
    game = dcl.wrap_env(env, state.config)
    act = lambda obs, k: dcl.act(state, obs, k)  # noqa: E731
    return episode_rollout(game, params, act, key, n_envs, game.horizon(params))


@pytest.mark.slow  # long; `make test-slow`
def test_decentralized_agents_play_their_own_networks_and_update_their_own_models():
    env, params = jaxmcg.make("pd")
    state = dcl.init(KEY, env, params, dcl.Config(decentralized=True))
    leaf = jax.tree_util.tree_leaves(state.params["proposal"])[0]
    assert leaf.shape[:2] == (2, 2)  # [model of agent i, network of agent j]
    played = dcl.policies(state)
    for i in range(2):  # agent i plays its own networks in its own model
        np.testing.assert_array_equal(jax.tree_util.tree_leaves(played["proposal"])[0][i], leaf[i, i])
    assert not np.allclose(leaf[0, 1], leaf[1, 1])  # estimates start independent of the truth
    batch = _pd_batch(env, params, state, jax.random.PRNGKey(1))
    new, metrics = jax.jit(dcl.update)(state, batch)
    # model i is trained by the centralized update, on the shared batch, with model i's own key
    central = state.replace(config=dcl.Config(decentralized=False))
    data = dcl.batch_data(central, batch)
    keys = jax.random.split(jax.random.split(state.key)[1], 2)
    for i in range(2):
        model = jax.tree_util.tree_map(lambda x, i=i: x[i], state.params)
        opt = jax.tree_util.tree_map(lambda x, i=i: x[i], state.opt_state)
        expected, *_ = jax.jit(dcl.world_update)(central, model, opt, state.temperature[i], data,
                                        state.entropy_coef, keys[i])
        got = jax.tree_util.tree_map(lambda x, i=i: x[i], new.params)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(metrics["dcl/critic_loss"])))


@pytest.mark.slow  # long; `make test-slow`
def test_sequential_updates_let_the_second_agent_see_the_first_agents_new_networks():
    env, params = jaxmcg.make("pd")
    # large steps, so that agent 0's update visibly changes agent 1's Adam step
    seq = dcl.init(KEY, env, params, dcl.Config(sequential_agent_updates=True, lr=0.3,
                                                 lr_critic=0.3))
    batch = _pd_batch(env, params, seq, jax.random.PRNGKey(4))
    data = dcl.batch_data(seq, batch)
    key = jax.random.PRNGKey(9)
    world, opt, tau = seq.params, seq.opt_state, seq.temperature
    got = jax.jit(dcl.world_update)(seq, world, opt, tau, data, 1.0, key)[0]
    agent_round = jax.jit(dcl.agent_round, static_argnums=1)
    at = lambda tree, i: jax.tree_util.tree_map(lambda x: x[i], tree)  # noqa: E731
    k0, k1 = (jax.random.split(k, 1)[0] for k in jax.random.split(key, 2))  # agent-major keys
    own0 = agent_round(seq, 0, at(world, 0), at(opt, 0), tau[0], world, data, 1.0, k0)[0]
    world_after_0 = jax.tree_util.tree_map(lambda w, o: w.at[0].set(o), world, own0)
    for against, same in ((world_after_0, True), (world, False)):
        own1 = agent_round(seq, 1, at(world, 1), at(opt, 1), tau[1], against, data, 1.0,
                               k1)[0]
        match = all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(
            jax.tree_util.tree_leaves(at(got, 1)["proposal"]),
            jax.tree_util.tree_leaves(own1["proposal"])))
        assert match == same


# --- the score-function ablation is unbiased (dcl.md §2.12, test 6 of §7.5) ---------------------

class PayoffCritic(flax.linen.Module):
    """Q^j(s, x) = the PD payoff of j's own action (first one-hot) against the other's."""

    payoff: tuple
    obs_ndim = 1

    @flax.linen.compact
    def __call__(self, x, extra=None):
        p = jnp.asarray(self.payoff)  # [own, other]
        own, other = x[..., 2:4], x[..., 4:6]
        return jnp.einsum("...a,ab,...b->...", own, p, other)[..., None]


def test_proposal_score_function_estimator_matches_the_exact_gradient_of_eq_10():
    env, params = jaxmcg.make("pd")
    state = dcl.init(KEY, env, params, dcl.Config(pathwise_terms=False))
    payoff = np.asarray(params.payoff)[:, :, 0]  # symmetric game: own row, other's column
    critic = PayoffCritic(tuple(map(tuple, payoff.tolist())))
    state = state.replace(nets={**state.nets, "critic": critic},
                          params={**state.params, "critic": {}})
    world = state.params
    own = {k: jax.tree_util.tree_map(lambda x: x[0], v) for k, v in world.items()}
    s = jnp.array([1.0, 0.0])
    b = 4096
    data = {"s": jnp.broadcast_to(s, (b, 2, 2)), "w": jnp.ones(b)}

    def value(p):  # V^0 of Eq. 10 by enumeration, as a function of agent 0's proposal network
        w = {**world, "proposal": jax.tree_util.tree_map(lambda x, y: x.at[0].set(y),
                                                         world["proposal"], p)}
        probs = lambda name, x: dcl._probs(state, w, name, x)  # noqa: E731
        phi = probs("proposal", jnp.stack([s, s]))  # [agent, M]
        pi = probs("action", jnp.stack([s, s]))
        fallback = pi[0] @ payoff @ pi[1]  # E_a Q^0(s, a)
        v = 0.0
        for m0, m1 in itertools.product(range(2), repeat=2):
            onehot = jax.nn.one_hot(jnp.array([m0, m1]), 2)
            commit = probs("commit", dcl.joint_input(state.order, jnp.stack([s, s]), onehot))[:, 1]
            agree = commit[0] * commit[1]
            v += phi[0, m0] * phi[1, m1] * (agree * payoff[m0, m1] + (1 - agree) * fallback)
        return v

    exact = jax.flatten_util.ravel_pytree(jax.grad(value)(own["proposal"]))[0]
    def estimator(k):  # minus the proposal loss's gradient: an estimate of grad V^0
        g = jax.grad(lambda p: -dcl.proposal_loss(state, p, 0, own, world, data, 0.0, 1.0, k)[0])
        return jax.flatten_util.ravel_pytree(g(own["proposal"]))[0]

    estimate = jax.jit(jax.vmap(estimator))(jax.random.split(KEY, 24))
    mean, se = estimate.mean(0), estimate.std(0) / np.sqrt(estimate.shape[0])
    big = np.abs(exact) > 1e-3
    assert big.sum() >= 5
    np.testing.assert_array_less(np.abs(mean - exact)[big], 4 * se[big] + 1e-4)


# --- the decentralized code's baselines (dcl.md §2.8, D11) --------------------------------------

def test_code_baseline_subtracts_the_expected_fallback_value_and_cancels_score_terms(tiny):
    state, d = tiny
    code = state.replace(config=dcl.Config(hidden=5, baseline="code"))
    s = d["s"]
    v = dcl.expected_fallback_value(code, state.params, 1, s)
    probs = dcl._probs(state, state.params, "action", s)  # [B, N, 2]
    by_hand = sum(probs[:, 0, a0] * probs[:, 1, a1] * q(state.params, 1, s[:, 0], *(
        jax.nn.one_hot(jnp.full(12, x), 2) for x in (a1, a0))) for a0 in range(2) for a1 in range(2))
    np.testing.assert_allclose(v, by_hand, rtol=1e-5)
    own = _own(state, 1)
    plain = dcl.action_loss(state, own["action"], 1, own, d, 0.0)
    shifted = dcl.action_loss(code, own["action"], 1, own, d, 0.0, state.params)
    logp = D.selected_log_prob(jax.nn.softmax(mlp(own["action"], s[:, 1])), d["a"][:, 1])
    np.testing.assert_allclose(shifted - plain, jnp.mean(d["e"] * v * logp), rtol=1e-4, atol=1e-6)
    # commitment: without pathwise terms only the entropy bonus is left
    no_paths = code.replace(config=dcl.Config(hidden=5, baseline="code", pathwise_terms=False))
    loss = dcl.commit_loss(no_paths, own["commit"], 1, own, d, 0.3, 1.0, KEY)
    inp = jnp.concatenate([s[:, 1], d["m"][:, 1], d["m"][:, 0]], -1)
    np.testing.assert_allclose(loss, -0.3 * entropy(softmax_net(own["commit"], inp)), rtol=1e-5)
