"""Evaluate a run's latest checkpoint on another configuration of its environment.

    python -m experiments.evaluate runs/cm3-lane_merge --episodes 100 --env-param traffic=heavy \\
        --env-param preset=C1 --env-param prob_random=0

This is the generalisation protocol of thesis Table A.1 (cm3-hsd.md §4.3.3 item 4): policies
trained on the empty road, tested for 100 episodes per configuration C1-C4 in heavy traffic,
sampling from pi as the run's own evaluations do (`act(..., evaluate=True)`; `--greedy` takes the
argmax through `act_greedy` where the algorithm has one). `--env-param` overrides the run's
environment keys (constructor arguments or `EnvParams` fields); the observation and action spaces
must stay the same. Prints and appends one JSON line to `RUN_DIR/evaluations.jsonl`: per seed, the
mean collective (summed) return over the episodes, its standard error, the per-agent means and,
where the environment reports them (`outcome_rates`), the shares of agent-episodes ending in each
outcome. Every input is checked before anything is compiled.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import jaxmcg
import jaxmcg.registry
from experiments.run import UsageError, _parse_value, _split_pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory of experiments.run (config.json, checkpoints/)")
    p.add_argument("--episodes", type=int, default=100, help="episodes per seed (Table A.1: 100)")
    p.add_argument("--env-param", "--env_param", action="append", dest="env_param", default=[])
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the evaluation episodes")
    p.add_argument("--greedy", action="store_true", help="argmax actions (`act_greedy`)")
    return p


def resolve(args) -> tuple[dict, dict]:
    """`(run config, evaluation env_params)`; UsageError or ValueError on any bad input."""
    path = os.path.join(args.run_dir, "config.json")
    if not os.path.exists(path):
        raise UsageError(f"{args.run_dir!r} is not a run directory: no config.json")
    with open(path) as f:
        cfg = json.load(f)["run"]
    if cfg.get("sweep"):
        raise UsageError(f"{args.run_dir!r} is a sweep; evaluate one of its point-* directories")
    if args.episodes <= 0:
        raise UsageError(f"--episodes {args.episodes} must be a positive integer")
    defaults = jaxmcg.registry.env_defaults(cfg["env"])
    overrides = _split_pairs(args.env_param, "--env-param")
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise UsageError(f"unknown --env-param {unknown} for {cfg['env']!r}; valid: "
                         f"{', '.join(sorted(defaults))}")
    env_params = {**cfg["env_params"],
                  **{k: _parse_value(k, v, defaults[k]) for k, v in overrides.items()}}
    trained, trained_params = jaxmcg.make(cfg["env"], **cfg["env_params"])
    env, params = jaxmcg.make(cfg["env"], **env_params)
    for what in ("observation_space", "action_space"):
        a, b = getattr(trained, what)(trained_params), getattr(env, what)(params)
        if (getattr(a, "shape", None), getattr(a, "n", None)) != (getattr(b, "shape", None),
                                                                  getattr(b, "n", None)):
            raise UsageError(f"--env-param {overrides} changes the {what.replace('_', ' ')} the "
                             "policies were trained on")
    return cfg, env_params


def evaluate(cfg: dict, run_dir: str, env_params: dict, episodes: int, seed: int = 0,
             greedy: bool = False) -> dict:
    """Roll out every seed's policy from the run's latest checkpoint for `episodes` episodes on
    `cfg["env"]` built with `env_params`; the figures of the module docstring."""
    import jax

    from jaxmcg.checkpoint import Checkpointer
    from jaxmcg.rollout import episode_returns, episode_rollout
    from jaxmcg.runner import build, prepare

    algo, _, _, config, _ = build(cfg)
    if greedy and not hasattr(algo, "act_greedy"):
        raise UsageError(f"--greedy: {cfg['algo']} has no act_greedy")
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"))
    if ckpt.latest_step() is None:
        raise UsageError(f"{run_dir!r} has no checkpoint to evaluate")
    _, abstract = jax.eval_shape(prepare(cfg, warm_start=False).init)
    runner, meta = ckpt.restore(abstract)
    env, params = jaxmcg.make(cfg["env"], **env_params)
    if hasattr(algo, "wrap_env"):
        env = algo.wrap_env(env, config)
    outcomes = getattr(env, "outcome_rates", None)

    def one_seed(algo_state, key):
        if greedy:
            act = lambda obs, k: algo.act_greedy(algo_state, obs, k)  # noqa: E731
        else:
            act = lambda obs, k: algo.act(algo_state, obs, k, evaluate=True)  # noqa: E731
        batch = episode_rollout(env, params, act, key, episodes, env.horizon(params))
        returns = episode_returns(batch)  # [E, N]
        out = {"returns": returns}
        if outcomes is not None:
            out.update(outcomes(batch.info, batch.valid))
        return out

    n_seeds = cfg["seeds"]
    keys = jax.random.split(jax.random.PRNGKey(seed), n_seeds)
    t0 = time.perf_counter()
    res = jax.device_get(jax.jit(jax.vmap(one_seed))(runner.algo_state, keys))
    wall = time.perf_counter() - t0
    returns = np.asarray(res.pop("returns"))  # [seeds, E, N]
    total = returns.sum(-1)
    return {
        "run_dir": run_dir, "checkpoint_iteration": meta["chunks_done"] * cfg["train"]["log_every"],
        "env": cfg["env"], "env_params": env_params, "episodes": episodes, "seed": seed,
        "greedy": greedy, "wall_time": round(wall, 3),
        "collective_return": total.mean(1).tolist(),
        "episode_return/mean": returns.mean(1).tolist(),
        "collective_return_stderr": (total.std(1, ddof=1) / np.sqrt(episodes)).tolist()
        if episodes > 1 else [0.0] * n_seeds,
        **{f"outcome/{k}": np.asarray(v).tolist() for k, v in res.items()},
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from jaxmcg import runner

    runner.enable_compilation_cache()
    try:
        cfg, env_params = resolve(args)
        result = evaluate(cfg, args.run_dir, env_params, args.episodes, args.seed, args.greedy)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    with open(os.path.join(args.run_dir, "evaluations.jsonl"), "a") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
