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
