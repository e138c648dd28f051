"""A vmapped sweep against separate runs: one compiled program for the whole grid.

    python -m benchmarks.sweep [--lrs 1e-3 3e-3 1e-2 3e-2] [--seeds 5] [--n-envs 256]
        [--iterations 400] [--json PATH]

Trains LIO on ER(2,1) once as `--sweep lr=...` (all rates and seeds in one program) and once per
rate as a separate run with the same seeds, in this process, and reports compile counts, compile
and run times and the ratio separate/sweep. Each sweep point must reproduce its separate run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import jax.monitoring
import numpy as np

from experiments import run
from jaxmcg import runner

_compiles: list[float] = []


def _listen(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles.append(duration)


def _timed_run(argv) -> dict:
    """Resolve, prepare, compile and train; `{wall_s, compiles, final}` (final: [points, seeds])."""
    start = len(_compiles)
    t = time.perf_counter()
    cfg = run.resolve(run.build_parser().parse_args(argv))
    with tempfile.TemporaryDirectory() as out:
        assert runner.run_loop(cfg, out, quiet=True) == 0
        summary = json.load(open(f"{out}/summary.json"))
    wall = time.perf_counter() - t
    points = summary.get("points") or [summary]
    final = [p["collective_return"]["per_seed"] for p in points]
    return {"wall_s": wall, "compiles": len(_compiles) - start,
            "compile_s": sum(_compiles[start:]), "final": final}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n-envs", type=int, default=256)
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--json")
    args = p.parse_args(argv)
    jax.monitoring.register_event_duration_secs_listener(_listen)
    base = ["--algo", "lio", "--env", "escape_room", "--env-param", "num_agents=2",
            "--env-param", "min_lever_pullers=1", "--n_envs", str(args.n_envs), "--eval-envs", "256",
            "--iterations", str(args.iterations), "--log-every", str(args.iterations // 4),
            "--seeds", str(args.seeds), "--quiet"]
    sweep = _timed_run(base + ["--sweep", "lr=" + ",".join(f"{lr:g}" for lr in args.lrs)])
    separate = [_timed_run(base + ["--algo-param", f"lr={lr:g}"]) for lr in args.lrs]
    sep_wall = sum(r["wall_s"] for r in separate)
    sep_compile = sum(r["compile_s"] for r in separate)
    gap = max(float(np.max(np.abs(np.subtract(sweep["final"][i], r["final"][0]))))
              for i, r in enumerate(separate))
    result = {
        "grid": {"lr": args.lrs, "seeds": args.seeds, "n_envs": args.n_envs,
                 "iterations": args.iterations},
        "sweep": {k: sweep[k] for k in ("wall_s", "compiles", "compile_s")},
        "separate": {"wall_s": sep_wall, "compiles": sum(r["compiles"] for r in separate),
                     "compile_s": sep_compile},
        "ratio_wall": sep_wall / sweep["wall_s"],
        "ratio_run": (sep_wall - sep_compile) / max(sweep["wall_s"] - sweep["compile_s"], 1e-9),
        "max_gap_final_return": gap,
        "final_by_lr": {f"{lr:g}": float(np.median(sweep["final"][i])) for i, lr in enumerate(args.lrs)},
    }
    print(f"sweep of {len(args.lrs)} rates x {args.seeds} seeds: {sweep['wall_s']:.1f} s "
          f"({sweep['compiles']} XLA compiles, {sweep['compile_s']:.1f} s); separate runs: "
          f"{sep_wall:.1f} s ({result['separate']['compiles']} compiles, {sep_compile:.1f} s); "
          f"ratio {result['ratio_wall']:.2f}x wall, {result['ratio_run']:.2f}x excluding compiles; "
          f"largest gap between a point and its separate run {gap:.2g}")
    print("median final collective return by lr:", result["final_by_lr"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
