"""Shared checks of the GTB tax designers (tests/test_metagrad_gtb.py, tests/test_dual_rl_gtb.py)."""
import jax

import jaxmcg

# tiny networks and budget for command-line runs of the GTB designer presets (slow tests)
TINY_CLI = ["--iterations", "2", "--log-every", "1", "--eval-envs", "1", "--quiet",
            "--algo-param", "hidden=16", "--algo-param", "critic_hidden=16",
            "--algo-param", "network=mlp", "--algo-param", "learner.conv=false",
            "--algo-param", "learner.hidden=16"]


def preset_chunk_metrics(algo, preset_name: str) -> dict:
    """Build preset `preset_name` of `algo` (thesis networks, gtb.md §8.3), check that a chunk
    returns the runner state with the shapes, dtypes and weak types it was given (one compile per
    run) without compiling anything, and return the chunk's abstract metrics."""
    from experiments.presets import get_preset
    from jaxmcg.train import TrainConfig, make_train

    preset = get_preset(preset_name)
    env, params = jaxmcg.make(preset["env"], **preset["env_params"])
    train = make_train(algo, env, params, algo.Config(**preset["algo_params"]),
                       TrainConfig(n_envs=1, iterations=2, log_every=1, eval_envs=1))
    runner = jax.eval_shape(train.init, jax.random.PRNGKey(0))
    out, metrics = jax.eval_shape(train.chunk, runner)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(runner)
    for a, b in zip(jax.tree_util.tree_leaves(runner), jax.tree_util.tree_leaves(out)):
        assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type)
    return metrics
