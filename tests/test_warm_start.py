"""Warm starts (`--init-agents-from`, jaxmcg.warm_start): GTB's curriculum Phase 2 begins with Phase
1's agents. Checked on Escape Room, which compiles in seconds: a trained PG run's weights land in a
new PG run and in a MetaGrad designer's agents (both its theta and the theta its replica starts
from), seed by seed; mismatches fail before compiling."""
import jax
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling

from experiments import run
from jaxmcg import runner, warm_start
from jaxmcg.checkpoint import Checkpointer

SMALL = ["--env", "escape_room", "--n_envs", "8", "--iterations", "4", "--log-every", "2",
         "--eval-envs", "4"]
PG = ["--algo", "pg", "--algo-param", "hidden=16,16"]


def _cfg(*argv):
    return run.resolve(run.build_parser().parse_args([*SMALL, *argv]))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-seed PG run trained for 4 iterations, and its final agents' weights `[2, ...]`."""
    out = str(tmp_path_factory.mktemp("phase1"))
    assert run.main([*SMALL, *PG, "--seeds", "2", "--out", out, "--quiet"]) == 0
    cfg = _cfg(*PG, "--seeds", "2")
    _, abstract = jax.eval_shape(runner.prepare(cfg).init)
    ckpt = Checkpointer(f"{out}/checkpoints")
    trained, _ = ckpt.restore(abstract)
    ckpt.close()
    return out, warm_start.agent_weights(trained.algo_state)["params"]


def _started(cfg):
    program = runner.prepare(cfg)
    _, state = program.init()
    return program.warm_start(state).algo_state, state.algo_state


def _assert_tree_equal(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                           a, b)


def test_agents_start_from_the_source_run(source):
    """PG -> PG seed by seed (2 seeds from 2; 1 seed from 2 takes seed 0); the optimiser starts
    afresh."""
    out, params = source
    state, fresh = _started(_cfg(*PG, "--seeds", "2", "--init-agents-from", out))
    _assert_tree_equal(state.params, params)
    one, _ = _started(_cfg(*PG, "--init-agents-from", out))
    _assert_tree_equal(one.params, jax.tree_util.tree_map(lambda x: x[:1], params))
    _assert_tree_equal(state.opt_state, fresh.opt_state)
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(fresh.params)[0]),
                           np.asarray(jax.tree_util.tree_leaves(params)[0]))


def test_designer_agents_start_from_the_source_run(source):
    """MetaGrad with PG agents of the same network: both learner states hold the source's theta;
    the designer's own networks are untouched."""
    out, params = source
    cfg = _cfg("--algo", "metagrad", "--seeds", "2", "--init-agents-from", out,
               "--algo-param", "learner.hidden=16,16")
    state, fresh = _started(cfg)
    _assert_tree_equal(state.learner_state.params, params)
    _assert_tree_equal(state.prev_learner_state.params, params)
    _assert_tree_equal(state.eta, fresh.eta)


def test_mismatches_fail_before_compiling(source, tmp_path):
    """Other network widths, a seed count that is neither 1 nor the source's, a directory that
    is not a run, and a curriculum preset without a source."""
    out, _ = source
    for argv, needle in (((*PG[:2], "--seeds", "2", "--init-agents-from", out), "differ"),
                         ((*PG, "--seeds", "3", "--init-agents-from", out), "2 seeds"),
                         ((*PG, "--init-agents-from", str(tmp_path)), "no config.json")):
        cfg = _cfg(*argv)
        assert_rejected_before_compiling(lambda cfg=cfg: runner.prepare(cfg), [needle])
    with pytest.raises(run.UsageError, match="--init-agents-from"):
        run.resolve(run.build_parser().parse_args(["--preset", "metagrad-gtb-curriculum"]))
