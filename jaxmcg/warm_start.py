"""Warm starts: a run whose agents begin with another run's trained weights.

The thesis's GTB curriculum (gtb.md §8.1) trains the agents alone in a free market for 50k episodes
(Phase 1), then starts every Phase-2 run (MetaGrad, dual-RL, US federal) from those agents' policy
and critic. `python -m experiments.run --preset metagrad-gtb-curriculum --init-agents-from RUN_DIR`
does this: the agents' weights (`params`, `critic_params`, `target_params` of their learner state)
come from RUN_DIR's latest checkpoint; their optimiser moments, counters and exploration schedule
start afresh, since Phase 2 has its own learning rates (Table C.4).

The agents' learner state is the run's algorithm state itself (a plain learner, Phase 1) or a
designer's `learner_state` (and MetaGrad's `prev_learner_state`, the theta its pipelined replica
starts from). Run r of the new program (sweep point p, seed s) takes the source's seed s, or its
only seed when it has one (so the source needs one seed or at least as many as the new run).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

WEIGHTS = ("params", "critic_params", "target_params")  # what carries over: the networks
DESIGNER_FIELDS = ("learner_state", "prev_learner_state")


def _learner_paths(algo_state) -> tuple[str, ...]:
    fields = tuple(f for f in DESIGNER_FIELDS if hasattr(algo_state, f))
    return fields or ("",)


def _learner(algo_state, path: str):
    return algo_state if path == "" else getattr(algo_state, path)


def agent_weights(algo_state) -> dict:
    """The agents' weights `{name: tree}` of an algorithm state (see the module docstring)."""
    learner = _learner(algo_state, _learner_paths(algo_state)[0])
    return {k: getattr(learner, k) for k in WEIGHTS if getattr(learner, k, None) is not None}


def with_agent_weights(algo_state, weights: dict):
    """`algo_state` with every agents' learner state holding `weights`."""
    for path in _learner_paths(algo_state):
        learner = _learner(algo_state, path).replace(**weights)
        algo_state = learner if path == "" else algo_state.replace(**{path: learner})
    return algo_state


def _shapes(tree) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(k): (tuple(v.shape), str(v.dtype)) for k, v in flat}


def check_compatible(source: dict, target: dict, source_runs: int, target_seeds: int,
                     where: str) -> None:
    """ValueError unless the source's weights (abstract, leading runs axis) fit the target's: the
    same names and shapes after the runs axis, and 1 or at least `target_seeds` source runs."""
    if 1 < source_runs < target_seeds:
        raise ValueError(f"--init-agents-from {where}: it has {source_runs} seeds and this run "
                         f"{target_seeds}; valid: a source with 1 seed or with >= {target_seeds}")
    missing = sorted(set(target) - set(source))
    if missing:
        raise ValueError(f"--init-agents-from {where}: its agents have no {', '.join(missing)} "
                         f"(theirs: {', '.join(sorted(source)) or 'none'})")
    for name in target:
        have = {k: (s[1:], d) for k, (s, d) in _shapes(source[name]).items()}
        want = {k: (s[1:], d) for k, (s, d) in _shapes(target[name]).items()}
        if have != want:
            diff = sorted(set(have.items()) ^ set(want.items()))[:2]
            raise ValueError(f"--init-agents-from {where}: the agents' {name} differ (network "
                             f"settings such as hidden, conv or critic_lstm must match); first "
                             f"differences (path, shape, dtype): {diff}")


def source_checkpoint(directory: str):
    """`(cfg, Checkpointer)` of a finished or interrupted run directory, or ValueError."""
    from jaxmcg.checkpoint import Checkpointer

    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"--init-agents-from {directory!r}: no config.json there (valid: a run "
                         "directory written by experiments.run)")
    with open(path) as f:
        cfg = json.load(f)["run"]
    if cfg.get("sweep"):
        raise ValueError(f"--init-agents-from {directory!r} is a sweep, whose runs mix "
                         "hyperparameters; valid: a run trained without --sweep")
    ckpt = Checkpointer(os.path.join(directory, "checkpoints"))
    if ckpt.latest_step() is None:
        ckpt.close()
        raise ValueError(f"--init-agents-from {directory!r}: no checkpoint there yet")
    return cfg, ckpt


def prepare_loader(directory: str, target_abstract, target_seeds: int, runs_sharding):
    """Check `directory` against the target runner state's abstract shapes (no compilation) and
    return `load(runner) -> runner` that writes the source's agents' weights into `runner`."""
    from jaxmcg import runner as runner_lib

    cfg, ckpt = source_checkpoint(directory)
    try:
        source_program = runner_lib.prepare(cfg, warm_start=False)  # its own source is not needed
        _, source_abstract = jax.eval_shape(source_program.init)
        source_runs = cfg["seeds"]
        check_compatible(agent_weights(source_abstract.algo_state),
                         agent_weights(target_abstract.algo_state), source_runs, target_seeds,
                         directory)
    except Exception:  # a rejected source leaves no checkpoint manager open
        ckpt.close()
        raise

    def load(runner):
        try:
            restored, _ = ckpt.restore(source_abstract)
        finally:
            ckpt.close()
        weights = agent_weights(restored.algo_state)
        n_runs = jax.tree_util.tree_leaves(runner)[0].shape[0]
        seed_of_run = jnp.arange(n_runs) % target_seeds % source_runs  # runs are point-major
        weights = jax.tree_util.tree_map(lambda w: jnp.asarray(w)[seed_of_run], weights)
        graft = lambda r, w: r.replace(algo_state=with_agent_weights(r.algo_state, w))  # noqa: E731
        return jax.jit(graft, out_shardings=runs_sharding)(runner, weights)

    return load
