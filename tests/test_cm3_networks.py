"""The staged CM3-family networks (cm3-hsd.md §2.4, §2.5)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.checkers import Checkers
from envs.lane_merge import LaneMerge
from envs.particle_nav import ParticleNav
from jaxmcg import cm3_networks as N

# kind -> (Stage-1 env, Stage-2 env)
PAIRS = {
    "particle": (ParticleNav("random"), ParticleNav("antipodal")),
    "checkers": (Checkers(1), Checkers(2)),
    "lane_merge": (LaneMerge(1), LaneMerge(2)),
}


def _names(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_names(v, f"{prefix}/{k}"))
        else:
            out[f"{prefix}/{k}"] = v.shape
    return out


def _init(env, stage, key, module=None):
    module = module or N.make_actor(env, stage)
    obs = jnp.zeros((3, env.num_agents, env.obs_dim))
    return module, jax.jit(module.init)(key, obs)["params"]  # eager init compiles op by op


@functools.lru_cache(maxsize=None)
def _actor(kind, stage):
    """(actor, params) on the Stage-`stage` env of `kind`, initialised once per test session."""
    return _init(PAIRS[kind][stage - 1], stage, jax.random.PRNGKey(stage - 1))


_apply = jax.jit(lambda module, params, x: module.apply({"params": params}, x), static_argnums=0)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_stage1_names_are_a_subset_of_stage2(kind):
    env1, env2 = PAIRS[kind]
    assert N.env_kind(env1) == N.env_kind(env2) == kind
    _, p1 = _actor(kind, 1)
    _, p2 = _actor(kind, 2)
    n1, n2 = _names(p1), _names(p2)
    assert set(n1) < set(n2)
    assert all(n1[k] == n2[k] for k in n1)
    new = set(n2) - set(n1)  # the branch and its cross matrix only (§2.4)
    assert "/merge/W_others" in new and all("others" in k for k in new)


def test_architecture_shapes():
    """Widths of §2.5: particle 64 | 128 -> 64; checkers conv 6 -> 32, 256 | 256 -> 256; lane merge
    32+32 | conv(4, 5x3) 468 -> 64 -> 64."""
    _, p = _actor("particle", 2)
    assert p["branch_self"]["kernel"].shape == (6, 64)
    assert p["branch_others"]["kernel"].shape == (12, 128)
    assert p["merge"]["W_self"].shape == (64, 64) and p["merge"]["W_others"].shape == (128, 64)
    assert p["merge"]["b"].shape == (64,) and p["out"]["kernel"].shape == (64, 5)
    _, p = _actor("checkers", 2)
    assert p["conv"]["kernel"].shape == (3, 3, 3, 6)
    assert p["conv_linear"]["kernel"].shape == (150, 32)
    assert p["branch_self"]["kernel"].shape == (32 + 4 + 5 + 2, 256)
    assert p["branch_others"]["kernel"].shape == (2, 256)
    assert p["merge"]["W_others"].shape == (256, 256)
    _, p = _actor("lane_merge", 2)
    assert p["branch_obs"]["kernel"].shape == (3, 32) and p["branch_goal"]["kernel"].shape == (4, 32)
    assert p["conv_others"]["kernel"].shape == (5, 3, 2, 4)
    assert p["branch_others"]["kernel"].shape == (13 * 9 * 4, 64)
    assert p["merge"]["W_self"].shape == (64, 64)


def test_initialisation():
    """Cross matrices truncated-normal σ = 0.01 (|w| <= 0.02), zero biases, Glorot dense kernels."""
    _, p = _actor("checkers", 2)
    w = np.asarray(p["merge"]["W_self"])
    assert np.max(np.abs(w)) <= 0.02 and 0.007 < w.std() < 0.01
    assert np.all(np.asarray(p["merge"]["b"]) == 0) and np.all(np.asarray(p["out"]["bias"]) == 0)
    k = np.asarray(p["branch_self"]["kernel"])
    limit = np.sqrt(6.0 / (43 + 256))
    assert np.max(np.abs(k)) <= limit and np.max(np.abs(k)) > 0.9 * limit


@pytest.mark.parametrize("kind", list(PAIRS))
def test_augment_keeps_stage1_outputs_when_others_are_zero(kind):
    env1, env2 = PAIRS[kind]
    a1, p1 = _actor(kind, 1)
    a2, fresh = _actor(kind, 2)
    p2 = N.augment(p1, fresh)
    obs2 = jax.random.uniform(jax.random.PRNGKey(2), (7, env2.obs_dim), minval=-1, maxval=1)
    a, b = N.piece(obs2, a2.layout, "others"), dict((n, (s, e)) for n, s, e in a2.layout)["others"]
    assert a.shape[-1] == b[1] - b[0]
    obs2 = obs2.at[:, b[0]:b[1]].set(0.0)
    obs1 = obs2[:, :env1.obs_dim]  # the Stage-1 env has the same prefix layout
    for name, (s, e) in env1.obs_layout.items():
        if name != "others":
            assert env2.obs_layout[name] == (s, e)
    out1, out2 = _apply(a1, p1, obs1), _apply(a2, p2, obs2)
    np.testing.assert_allclose(out2, out1, rtol=1e-6, atol=1e-6)
    # with non-zero others the new branch changes the output (it is wired in)
    obs3 = obs2.at[:, b[0]:b[1]].set(1.0)
    assert np.max(np.abs(_apply(a2, p2, obs3) - out1)) > 0
    # the fresh Stage-2 parameters differ: augmentation really copied
    assert np.max(np.abs(_apply(a2, fresh, obs2) - out1)) > 1e-4


def test_augment_rejects_mismatches():
    p1 = {"a": {"kernel": jnp.zeros((2, 3))}}
    with pytest.raises(ValueError, match="shape"):
        N.augment(p1, {"a": {"kernel": jnp.zeros((2, 4))}})
    with pytest.raises(ValueError, match="not in the Stage-2"):
        N.augment(p1, {"b": {"kernel": jnp.zeros((2, 3))}})
    out = N.augment(p1, {"a": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}, "c": jnp.ones(1)})
    assert np.all(out["a"]["kernel"] == 0) and np.all(out["a"]["bias"] == 1) and out["c"] == 1


def test_merge_without_bias_and_env_kind():
    m = N.Merge(4, use_bias=False)
    x = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 5))}
    p = m.init(jax.random.PRNGKey(0), x)["params"]
    assert set(p) == {"W_a", "W_b"}
    expect = jax.nn.relu(jnp.ones((2, 3)) @ p["W_a"] + jnp.ones((2, 5)) @ p["W_b"])
    np.testing.assert_allclose(m.apply({"params": p}, x), expect, rtol=1e-6)
    from jaxmcg.registry import make

    with pytest.raises(ValueError, match="no CM3 network"):
        N.env_kind(make("escape_room-v0")[0])
    with pytest.raises(ValueError, match="stage"):
        N.make_actor(ParticleNav("antipodal"), 3)


def test_parts_dense_is_dense_on_the_concatenation():
    """Same parameters and initial draws as `dense` on the broadcast concatenation, same outputs."""
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    parts = (jax.random.normal(k[0], (1, 4, 3)), jax.random.normal(k[1], (5, 1, 2)),
             jax.random.normal(k[2], (5, 4, 6)))
    joined = N.concat_parts(parts)
    assert joined.shape == (5, 4, 11)
    np.testing.assert_array_equal(joined[2, 3], np.r_[parts[0][0, 3], parts[1][2, 0], parts[2][2, 3]])
    split, whole = N.PartsDense(7, name="layer"), N.dense(7, "layer")
    p_split, p_whole = split.init(k[0], parts), whole.init(k[0], joined)
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_split, p_whole)
    p = jax.tree_util.tree_map(lambda w: w + 0.1, p_whole)  # a nonzero bias too
    np.testing.assert_allclose(split.apply(p, parts), whole.apply(p, joined), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split.apply(p, joined), whole.apply(p, joined), rtol=1e-6)


def test_floored_log_probs():
    logits = jnp.array([[0.0, 1.0, -50.0]])
    eps = 0.3
    p = (1 - eps) * jax.nn.softmax(logits) + eps / 3
    np.testing.assert_allclose(N.floored_log_probs(logits, eps), np.log(p + 1e-15), rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(N.floored_probs(logits, eps)), 1.0, rtol=1e-6)
    # at eps = 0 the 1e-15 keeps log finite for an underflowed probability
    assert np.isfinite(np.asarray(N.floored_log_probs(jnp.array([0.0, -200.0]), 0.0))).all()


@pytest.mark.parametrize("kind", list(PAIRS))
def test_iac_value_network(kind):
    """LocalV of §2.5: Stage-1 names ⊂ Stage-2 names, widths, critic merge without bias, output
    bias only for Checkers; zero o_others keep the augmented output."""
    env1, env2 = PAIRS[kind]
    v1, p1 = _init(env1, 1, jax.random.PRNGKey(0), N.LocalV(kind, N.layout(env1), 1))
    v2, fresh = _init(env2, 2, jax.random.PRNGKey(1), N.LocalV(kind, N.layout(env2), 2))
    n1, n2 = _names(p1), _names(fresh)
    assert set(n1) < set(n2) and all(n1[k] == n2[k] for k in n1)
    assert "b" not in fresh["merge"] and ("bias" in fresh["out"]) == (kind == "checkers")
    widths = {"particle": (64, 128, 64), "checkers": (256, 32, 256), "lane_merge": (64, 128, 64)}
    h, o, m = widths[kind]
    assert fresh["branch_self"]["kernel"].shape[1] == h
    assert fresh["branch_others"]["kernel"].shape[1] == o and fresh["merge"]["W_others"].shape == (o, m)
    obs = jax.random.uniform(jax.random.PRNGKey(2), (5, env2.obs_dim))
    _, a, b = next(t for t in v2.layout if t[0] == "others")
    obs = obs.at[:, a:b].set(0.0)
    np.testing.assert_allclose(_apply(v2, N.augment(p1, fresh), obs),
                               _apply(v1, p1, obs[:, :env1.obs_dim]), rtol=1e-6, atol=1e-7)


def test_others_of_and_coma_critic():
    x = jnp.arange(3 * 2).reshape(1, 3, 2)  # agents 0, 1, 2 with rows [0, 1], [2, 3], [4, 5]
    np.testing.assert_array_equal(N.others_of(x)[0], [[2, 3, 4, 5], [0, 1, 4, 5], [0, 1, 2, 3]])
    assert N.others_of(jnp.ones((4, 1, 5))).shape == (4, 1, 0)
    critic = N.ComaCritic(5, 128)
    p = jax.jit(critic.init)(jax.random.PRNGKey(0), jnp.zeros((2, 30)))["params"]
    assert [p[k]["kernel"].shape for k in ("h1", "h2", "out")] == [(30, 128), (128, 128), (128, 5)]
    w = np.asarray(p["h2"]["kernel"])  # the code's fc3 scope: truncated normal σ = 0.01
    assert np.max(np.abs(w)) <= 0.02 and 0.007 < w.std() < 0.01
