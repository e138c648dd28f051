"""Learning curves and a summary table from run directories.

    python -m experiments.plot RUN_DIR [RUN_DIR ...] [--out DIR] [--metrics collective_return ...]
        [--x iteration|env_steps|wall_time] [--deciles collective_return]

A run directory holds `metrics.jsonl` (experiments.run); a sweep's directory stands for its points.
Writes `curves.png` (one panel per scalar metric, each run's mean over seeds with a band of one
standard error, runs overlaid), `summary.md` (one row per run) and `deciles.md` (the `--deciles`
metric's curve as numbers: its median [min, max] over seeds at every 10% of each run's logged
iterations) to `--out` (default: the first run directory), and prints both tables.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys

import numpy as np


def load_run(path: str) -> dict:
    """`{"label", "path", "config", "lines", "summary"}` of one run directory."""
    if not os.path.exists(os.path.join(path, "metrics.jsonl")):
        raise ValueError(f"{path} has no metrics.jsonl: not a run directory of experiments.run")
    with open(os.path.join(path, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f if x.strip()]
    if not lines:
        raise ValueError(f"{path}/metrics.jsonl is empty: the run logged nothing yet")
    cfg = {}
    if os.path.exists(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f).get("run", {})
    summary = None
    if os.path.exists(os.path.join(path, "summary.json")):
        with open(os.path.join(path, "summary.json")) as f:
            summary = json.load(f)
    label = cfg.get("preset") or f"{cfg.get('algo', '?')} {cfg.get('env', os.path.basename(path))}"
    if cfg.get("point"):
        label += " " + ", ".join(f"{k}={v:g}" for k, v in cfg["point"].items())
    return {"label": label, "path": path, "config": cfg, "lines": lines, "summary": summary}


def expand(paths: list[str]) -> list[str]:
    """Run directories, with each sweep directory replaced by its points."""
    out = []
    for path in paths:
        points = sorted(glob.glob(os.path.join(path, "point-*")))
        if points and not os.path.exists(os.path.join(path, "metrics.jsonl")):
            out.extend(points)
        elif not os.path.isdir(path):
            raise ValueError(f"{path} is not a directory")
        else:
            out.append(path)
    return out


def scalar_metrics(lines: list[dict]) -> list[str]:
    """Names of the numeric scalar metrics, in first-seen order (bookkeeping keys excluded)."""
    skip = {"iteration", "seed", "env_steps", "wall_time"}
    names = []
    for line in lines:
        for k, v in line.items():
            if k not in skip and k not in names and isinstance(v, (int, float)) and not isinstance(v, bool):
                names.append(k)
    return names


def _logged_by_every_seed(lines: list[dict], metric: str) -> tuple[dict[int, list[dict]], int]:
    """The lines that log `metric`, by iteration, keeping the iterations every seed has logged; and
    the number of seeds."""
    by_iter: dict[int, list[dict]] = {}
    for line in lines:
        if metric in line:
            by_iter.setdefault(line["iteration"], []).append(line)
    n = max((len(v) for v in by_iter.values()), default=0)
    return {i: v for i, v in by_iter.items() if len(v) == n}, n


def curve(lines: list[dict], metric: str, x: str = "iteration"):
    """`(xs, mean, stderr, n_seeds)` of `metric` over seeds at each logged point (points where some
    seed lacks the metric are dropped). `x` is averaged over seeds too (env_steps, wall_time)."""
    by_iter, n = _logged_by_every_seed(lines, metric)
    its = sorted(by_iter)
    xs = np.array([np.mean([ln[x] for ln in by_iter[i]]) for i in its], dtype=float)
    values = np.array([[ln[metric] for ln in by_iter[i]] for i in its], dtype=float).reshape(len(its), n)
    mean = values.mean(axis=1) if len(its) else np.zeros(0)
    stderr = values.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return xs, mean, stderr, n


def summary_rows(runs: list[dict]) -> list[dict]:
    """One row per run: seeds, iterations, env steps, final and last-10% collective return (mean
    and standard error over seeds), wall time and steps per second (from summary.json if done)."""
    rows = []
    for r in runs:
        xs, mean, se, n = curve(r["lines"], "collective_return")
        k = max(1, len(mean) // 10)
        per_seed = {}
        for line in r["lines"]:
            per_seed.setdefault(line["seed"], []).append(line["collective_return"])
        last = [np.mean(v[-k:]) for v in per_seed.values()]
        s = r["summary"] or {}
        rows.append({
            "run": r["label"], "seeds": n, "iteration": int(xs[-1]) if len(xs) else 0,
            "env_steps": int(sum(max(ln["env_steps"] for ln in r["lines"] if ln["seed"] == seed)
                                 for seed in per_seed)),
            "final": float(mean[-1]), "final_se": float(se[-1]),
            "last10": float(np.mean(last)),
            "last10_se": float(np.std(last, ddof=1) / np.sqrt(len(last))) if len(last) > 1 else 0.0,
            "wall_time_s": s.get("wall_time_s"), "steps_per_second": s.get("steps_per_second"),
            "done": bool(s),
        })
    return rows


def deciles(lines: list[dict], metric: str, points: int = 10) -> list[tuple[int, float, float, float]]:
    """The curve as numbers: for k = 1..points, `(iteration, median, min, max)` over seeds of
    `metric` at the logged iteration k/points of the way through the run (the last one for k =
    points; iterations some seed has not logged are dropped, as in `curve`)."""
    by_iter, _ = _logged_by_every_seed(lines, metric)
    its = sorted(by_iter)
    out = []
    for k in range(1, points + 1) if its else ():
        it = its[max(0, math.ceil(len(its) * k / points) - 1)]
        v = np.array([ln[metric] for ln in by_iter[it]], dtype=float) + 0.0  # -0.0 prints as "-0"
        out.append((it, float(np.median(v)), float(v.min()), float(v.max())))
    return out


def deciles_markdown(runs: list[dict], metric: str) -> str:
    head = (f"{metric}: median [min, max] over seeds (iteration) at every 10% of the run\n\n"
            "| run | " + " | ".join(f"{10 * k}%" for k in range(1, 11)) + " |\n"
            "|---|" + "---|" * 10 + "\n")
    body = ""
    for r in runs:
        cells = [f"{m:.4g} [{lo:.4g}, {hi:.4g}] ({it})" for it, m, lo, hi in deciles(r["lines"], metric)]
        body += f"| {r['label']} | " + " | ".join(cells) + " |\n"
    return head + body


def markdown(rows: list[dict]) -> str:
    head = ("| run | seeds | iterations | env steps | collective return, final | last 10% "
            "| wall time (s) | steps/s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
    body = ""
    for r in rows:
        wall = f"{r['wall_time_s']:.1f}" if r["wall_time_s"] is not None else "running"
        sps = f"{r['steps_per_second']:,.0f}" if r["steps_per_second"] is not None else ""
        body += (f"| {r['run']} | {r['seeds']} | {r['iteration']} | {r['env_steps']:,} | "
                 f"{r['final']:.3f} ± {r['final_se']:.3f} | {r['last10']:.3f} ± {r['last10_se']:.3f} "
                 f"| {wall} | {sps} |\n")
    return head + body


def plot(runs: list[dict], metrics: list[str], x: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for i, r in enumerate(runs):
            xs, mean, se, _ = curve(r["lines"], metric, x)
            if not len(xs):
                continue
            color = f"C{i % 10}"
            ax.plot(xs, mean, color=color, label=r["label"])
            ax.fill_between(xs, mean - se, mean + se, color=color, alpha=0.25, linewidth=0)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.plot", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="where to write curves.png, summary.md and deciles.md (default: first "
                                 "RUN_DIR)")
    p.add_argument("--metrics", nargs="+", help="scalar metrics to plot (default: all)")
    p.add_argument("--x", default="iteration", choices=("iteration", "env_steps", "wall_time"))
    p.add_argument("--deciles", default="collective_return", metavar="METRIC",
                   help="the scalar metric written as numbers to deciles.md (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        runs = [load_run(d) for d in expand(args.runs)]
        labels = [r["label"] for r in runs]
        for r in runs:  # same algorithm and environment: tell them apart by directory
            if labels.count(r["label"]) > 1:
                r["label"] += f" ({os.path.basename(os.path.normpath(r['path']))})"
        available = []
        for r in runs:
            available += [m for m in scalar_metrics(r["lines"]) if m not in available]
        metrics = args.metrics or available
        unknown = [m for m in [*metrics, args.deciles] if m not in available]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(available)}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.runs[0]
    os.makedirs(out, exist_ok=True)
    plot(runs, metrics, args.x, os.path.join(out, "curves.png"))
    table = markdown(summary_rows(runs))
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table)
    curve_table = deciles_markdown(runs, args.deciles)
    with open(os.path.join(out, "deciles.md"), "w") as f:
        f.write(curve_table)
    print(table, end="")
    print("\n" + curve_table, end="")
    print(f"wrote {os.path.join(out, 'curves.png')}, summary.md and deciles.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
