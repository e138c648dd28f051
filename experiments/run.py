"""Train an algorithm on an environment from the command line.

    python -m experiments.run --algo lio --env escape_room --n_envs 4096
    python -m experiments.run --preset lio-er-3-2-batched --seeds 5
    python -m experiments.run --resume runs/lio-escape_room-20261120-120000
    python -m experiments.run --algo mge_f --env pursuit-3   # solvers: see experiments.solve
    python -m experiments.run --algo lio --env escape_room --sweep lr=1e-3,3e-3 --seeds 5
    python -m experiments.run --algo lio --env escape_room --devices all
    python -m experiments.run ... --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0

Writes config.json, metrics.jsonl, summary.json and orbax checkpoints to --out (see README).
Every input is checked before anything is compiled.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import time

import jaxmcg
import jaxmcg.registry
from experiments.presets import DEFAULT_TRAIN, PRESETS, family_defaults, family_train, get_preset


class UsageError(ValueError):
    pass


def _parse_value(key: str, raw: str, default):
    """Convert `raw` to the type of `default`, or raise UsageError naming the key."""
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple) or default is None:
            if default is None and raw.lower() == "none":
                return None
            cast = float if default and any(isinstance(v, float) for v in default) else int
            return tuple(cast(x) for x in raw.strip("()[] ").split(",") if x.strip())
        return raw
    except ValueError:
        kind = type(default).__name__ if default is not None else "tuple of ints"
        raise UsageError(f"{key}={raw!r} is not a valid {kind}") from None


def _split_pairs(pairs, flag):
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"{flag} {pair!r} must look like KEY=VALUE")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    epilog = (
        f"algorithms: {', '.join(jaxmcg.list_algos())}\n"
        "equilibrium solvers of tabular games (experiments.solve): mge_f, mmce_f, mge_i, mge_fb\n"
        f"environments: {', '.join(jaxmcg.list_envs())}\n"
        f"presets: {', '.join(sorted(PRESETS))}"
    )
    p = argparse.ArgumentParser(
        prog="python -m experiments.run", description=__doc__.split("\n")[0], epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--algo")
    p.add_argument("--env")
    p.add_argument("--preset")
    p.add_argument("--n_envs", "--n-envs", type=int, dest="n_envs")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds, vmapped (default 1)")
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    p.add_argument("--iterations", type=int)
    p.add_argument("--log-every", "--log_every", type=int, dest="log_every")
    p.add_argument("--eval-envs", "--eval_envs", type=int, dest="eval_envs")
    p.add_argument("--env-param", "--env_param", action="append", dest="env_param", default=[])
    p.add_argument("--algo-param", "--algo_param", action="append", dest="algo_param", default=[])
    p.add_argument("--out")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--init-agents-from", "--init_agents_from", metavar="DIR",
                   dest="init_agents_from",
                   help="start the agents from the trained weights (policy and critic) of the run "
                        "in DIR: GTB's curriculum Phase 2 from Phase 1 (jaxmcg.warm_start)")
    p.add_argument("--checkpoint-every", type=int, default=10, dest="checkpoint_every",
                   help="chunks (logged points) between checkpoints")
    p.add_argument("--target", type=float, default=None,
                   help="report the first iteration whose moving-average collective return >= this")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="train the grid of these float hyperparameters (algorithm Config fields, "
                        "or env.FIELD) in one compiled program, each point with --seeds seeds")
    p.add_argument("--devices", default=None, metavar="N|all",
                   help="local devices (all processes' devices with several processes) to split "
                        "the runs and environments over (default 1)")
    p.add_argument("--coordinator", help="multi-process: address:port of process 0 "
                                         "(or JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", "--num_processes", type=int, dest="num_processes",
                   help="multi-process: how many (or JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", "--process_id", type=int, dest="process_id",
                   help="multi-process: this one's index (or JAX_PROCESS_ID)")
    return p


def resolve(args) -> dict:
    """The fully resolved run configuration (plain JSON types), validated, nothing compiled."""
    preset = get_preset(args.preset) if args.preset else {}
    algo_name = args.algo or preset.get("algo")
    env_name = args.env or preset.get("env")
    if not algo_name or not env_name:
        raise UsageError("give --algo and --env, or --preset (see --help for the valid names)")
    algo = jaxmcg.get_algo(algo_name)
    env_id = jaxmcg.resolve_env_id(env_name)

    env_defaults = jaxmcg.registry.env_defaults(env_id)
    env_params = dict(preset.get("env_params", {})) if env_name == preset.get("env") else {}
    for k, v in _split_pairs(args.env_param, "--env-param").items():
        if k not in env_defaults:
            raise UsageError(f"unknown --env-param {k!r} for {env_id}; valid: {', '.join(env_defaults)}")
        env_params[k] = _parse_value(k, v, env_defaults[k])
    env, made_params = jaxmcg.make(env_id, **env_params)  # validates the values

    fields = {f.name: f.default for f in dataclasses.fields(algo.Config)}
    # A preset is a complete configuration: the family defaults (tuned for many parallel episodes)
    # must not fill its gaps (they once gave the one-episode MetaGrad presets a batch baseline,
    # which is zero with one episode and silenced the meta-gradient).
    if algo_name == preset.get("algo"):
        algo_params = dict(preset.get("algo_params", {}))
    else:
        algo_params = family_defaults(algo_name, env_id)
    pairs = _split_pairs(args.algo_param, "--algo-param")
    for k, v in pairs.items():
        if "." in k:
            continue
        if k not in fields:
            raise UsageError(f"unknown --algo-param {k!r} for {algo_name}; valid: {', '.join(fields)}")
        algo_params[k] = _parse_value(k, v, fields[k])
    _learner_params(algo_params, fields, {k: v for k, v in pairs.items() if "." in k})
    config = algo.Config(**algo_params)
    _validate(config, env)

    if hasattr(algo, "check_env"):  # algorithm-specific limits (DCL: discrete, flat, K | T)
        algo.check_env(env, made_params, config)

    train = {**DEFAULT_TRAIN, **family_train(algo_name, env_id), **preset.get("train", {})}
    for k in ("n_envs", "iterations", "log_every", "eval_envs"):
        if getattr(args, k) is not None:
            train[k] = getattr(args, k)
    if args.iterations is not None and args.log_every is None and train["iterations"] % train["log_every"]:
        train["log_every"] = _largest_divisor_at_most(train["iterations"], train["log_every"])
    from jaxmcg.train import TrainConfig

    TrainConfig(**train).validate()
    init_agents_from = args.init_agents_from
    if preset.get("warm_start") and not init_agents_from:
        raise UsageError(f"--preset {args.preset} starts from trained agents: give "
                         f"--init-agents-from DIR, DIR a run of {preset['warm_start']}")
    seeds = args.seeds if args.seeds is not None else 1
    if seeds <= 0:
        raise UsageError(f"--seeds={seeds} is invalid: must be a positive integer")
    from jaxmcg.sweep import apply as sweep_apply
    from jaxmcg.sweep import grid_points, parse_sweep

    sweep = parse_sweep(args.sweep, config, made_params)
    for point in grid_points(sweep):  # inside the program the swept values are tracers: check here
        try:
            point_config, point_params = sweep_apply(point, config, made_params)
            _validate(point_config, env)
            env.validate_params(point_params)
        except ValueError as err:
            raise UsageError(f"--sweep point {point}: {err}") from None
    return {
        "algo": algo_name, "env": env_id, "env_params": env_params,
        "algo_config": _jsonable(dataclasses.asdict(config)), "algo_params": _jsonable(algo_params),
        "train": train, "seeds": seeds, "seed": args.seed, "preset": args.preset,
        "sweep": sweep or None, "devices": args.devices or 1,
        "init_agents_from": init_agents_from and os.path.abspath(init_agents_from),
    }


def _validate(config, env) -> None:
    """The algorithm Config's own checks, with the environment's agent count where it takes one."""
    if hasattr(config, "validate"):
        if "num_agents" in inspect.signature(config.validate).parameters:
            config.validate(num_agents=env.num_agents)
        else:
            config.validate()


def _learner_params(algo_params: dict, fields: dict, dotted: dict) -> None:
    """`learner.NAME=VALUE` pairs for algorithms that wrap a learner (D3C's ES version): typed by
    the learner's Config and merged into `learner_params`."""
    if not dotted:
        return
    if "learner_params" not in fields:
        raise UsageError(f"--algo-param {next(iter(dotted))!r}: this algorithm has no learner")
    learner = jaxmcg.get_algo(algo_params.get("learner", fields["learner"]))
    learner_fields = {f.name: f.default for f in dataclasses.fields(learner.Config)}
    merged = dict(algo_params.get("learner_params", ()))
    for k, v in dotted.items():
        prefix, name = k.split(".", 1)
        if prefix != "learner" or name not in learner_fields:
            raise UsageError(f"unknown --algo-param {k!r}; valid: learner.NAME with NAME one of "
                             f"{', '.join(learner_fields)}")
        merged[name] = _parse_value(k, v, learner_fields[name])
    algo_params["learner_params"] = tuple(merged.items())


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    return x


def _solver_requested(argv) -> bool:
    """Whether `--algo` names one of experiments.solve's equilibrium solvers (mge_f, ...)."""
    from experiments.solve import SOLVERS

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--algo")
    known, _ = peek.parse_known_args(argv)
    return known.algo in SOLVERS


def _git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def main(argv=None, _stop_after_chunks: int | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _solver_requested(argv):  # exact solvers of tabular games: experiments.solve
        from experiments import solve

        return solve.main(argv)
    args = build_parser().parse_args(argv)
    from jaxmcg import parallel, runner

    runner.enable_compilation_cache()
    try:
        parallel.initialize(parallel.distributed_settings(args.coordinator, args.num_processes,
                                                          args.process_id))
        if args.resume:
            with open(os.path.join(args.resume, "config.json")) as f:
                cfg = json.load(f)["run"]
            if args.devices is not None:  # a resumed run may move to other devices
                cfg["devices"] = args.devices
            out = args.resume
        else:
            cfg = resolve(args)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = args.out or os.path.join("runs", f"{cfg['algo']}-{cfg['env']}-{stamp}")
        program = runner.prepare(cfg, warm_start=not args.resume)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return runner.run_loop(cfg, out, resume=bool(args.resume),
                               checkpoint_every=args.checkpoint_every, target=args.target,
                               quiet=args.quiet, stop_after_chunks=_stop_after_chunks,
                               git_commit=_git_commit(), program=program)
    except MemoryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
