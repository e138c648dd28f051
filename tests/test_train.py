"""The training loop's contract for every registered algorithm (new algorithms are picked up)."""
import jax
import pytest

import jaxmcg
from jaxmcg.train import TrainConfig, make_train


@pytest.mark.parametrize("algo_name", jaxmcg.list_algos())
@pytest.mark.parametrize("env_id", ["escape_room-v0", "cleanup-7x7-v0"])
def test_chunk_keeps_state_avals(algo_name, env_id):
    """A chunk returns a runner state with the shapes, dtypes and weak types it was given, so a host
    loop calling the jitted chunk compiles it once (a weak-typed scalar once cost a second compile
    of LIO on Cleanup, ~20 s)."""
    algo = jaxmcg.get_algo(algo_name)
    env, params = jaxmcg.make(env_id)
    try:
        train = make_train(algo, env, params, algo.Config(),
                           TrainConfig(n_envs=2, iterations=2, log_every=1, eval_envs=2))
        runner = jax.eval_shape(train.init, jax.random.PRNGKey(0))
    except ValueError as err:  # a pair that cannot work must say why, naming the observations
        assert "observations" in str(err)
        return
    out, _ = jax.eval_shape(train.chunk, runner)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(runner)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(runner),
                            jax.tree_util.tree_leaves(out)):
        assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type), \
            jax.tree_util.keystr(path)


def test_greedy_evaluation_is_extra_and_leaves_training_unchanged():
    """An algorithm with `act_greedy` gets `greedy/collective_return` from a second evaluation
    (A-CM3-17), without touching the training stream: every other metric and the final state are
    what the same module without the hook gives. The greedy policy here always pulls the lever
    (action 0 of Escape Room), whose return is known: -1 per agent for the move to the lever, then 0
    for staying there, and no one ever reaches the door."""
    import types

    import jax.numpy as jnp
    import numpy as np

    from jaxmcg.algos import pg

    env, params = jaxmcg.make("escape_room-v0")
    lever = lambda state, obs, key: (jnp.zeros(obs.shape[:2], jnp.int32), {})  # noqa: E731
    hooked = types.SimpleNamespace(**{k: getattr(pg, k) for k in dir(pg) if not k.startswith("__")},
                                   act_greedy=lever)
    tc = TrainConfig(n_envs=4, iterations=4, log_every=2, eval_envs=4)
    runs = [jax.jit(make_train(a, env, params, pg.Config(), tc))(jax.random.PRNGKey(0))
            for a in (pg, hooked)]
    (r0, m0), (r1, m1) = runs
    greedy = m1.pop("greedy/collective_return")
    m1.pop("greedy/episode_return/mean")
    assert set(m0) == set(m1)
    for a, b in zip(jax.tree_util.tree_leaves((r0, m0)), jax.tree_util.tree_leaves((r1, m1))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(greedy), -1.0 * env.num_agents)
