"""Host-side driver around `make_train`: logging, progress, checkpoints, resume, summary.

Files in the run directory (see README): `config.json`, `metrics.jsonl` (one line per logged
iteration and seed), `summary.json`, `checkpoints/` (orbax; `--resume` continues from the latest).
"""
from __future__ import annotations

import json
import os
import sys
import time
from importlib import metadata

import jax
import numpy as np

import jaxmcg
from jaxmcg.checkpoint import Checkpointer
from jaxmcg.train import TrainConfig, make_train

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "distrax", "gymnax", "orbax-checkpoint", "numpy")


def atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _versions() -> dict:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build(cfg: dict):
    """`(algo, env, env_params, config, train_config)` from a resolved run configuration."""
    algo = jaxmcg.get_algo(cfg["algo"])
    env, env_params = jaxmcg.make(cfg["env"], **cfg["env_params"])
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["algo_config"].items()}
    return algo, env, env_params, algo.Config(**fields), TrainConfig(**cfg["train"])


def _to_host(metrics: dict) -> dict:
    return {k: np.asarray(v) for k, v in metrics.items()}


def _line(metrics: dict, seed: int, env_steps: float, wall: float) -> dict:
    line = {"iteration": int(metrics["iteration"][seed]), "seed": seed, "env_steps": int(env_steps),
            "wall_time": round(wall, 3)}
    for k, v in metrics.items():
        if k not in ("iteration", "env_steps"):
            x = v[seed]
            line[k] = x.tolist() if x.ndim else float(x)
    return line


def _stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    stderr = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "median": float(np.median(v)), "stderr": stderr,
            "per_seed": v.tolist()}


def summarize(lines: list[dict], n_seeds: int, target: float | None, window: int = 5) -> dict:
    """Final figures per seed and aggregated; collective return averaged over the last 10%."""
    per_seed = [[ln for ln in lines if ln["seed"] == s] for s in range(n_seeds)]
    out: dict = {}
    last = {s: max(1, len(rows) // 10) for s, rows in enumerate(per_seed)}
    out["collective_return"] = _stats(
        [np.mean([r["collective_return"] for r in rows[-last[s]:]]) for s, rows in enumerate(per_seed)]
    )
    out["final_collective_return"] = _stats([rows[-1]["collective_return"] for rows in per_seed])
    for key in [k for k in per_seed[0][-1] if k.endswith("total_return")
                or k in ("designer_return", "ratio_to_optimum")]:
        out[key] = _stats([np.sum(rows[-1][key]) for rows in per_seed])
    out["episode_return/mean"] = np.mean(
        [rows[-1]["episode_return/mean"] for rows in per_seed], axis=0).tolist()
    if target is not None:
        hits = []
        for rows in per_seed:
            cr = np.array([r["collective_return"] for r in rows])
            ma = np.convolve(cr, np.ones(window) / window, mode="valid") if len(cr) >= window else cr
            idx = np.nonzero(ma >= target)[0]
            row = rows[idx[0] + (window - 1 if len(cr) >= window else 0)] if len(idx) else None
            hits.append(None if row is None else {"iteration": row["iteration"],
                                                  "wall_time": row["wall_time"]})
        out["target"] = {"value": target, "moving_average_window": window, "first_reached": hits}
    return out


def run_loop(cfg: dict, out: str, resume: bool = False, checkpoint_every: int = 10,
             target: float | None = None, quiet: bool = False, stop_after_chunks: int | None = None,
             git_commit: str | None = None) -> int:
    algo, env, env_params, config, train_config = build(cfg)
    os.makedirs(out, exist_ok=True)
    metrics_path = os.path.join(out, "metrics.jsonl")
    if not resume:
        atomic_write_json(os.path.join(out, "config.json"), {
            "run": cfg, "versions": _versions(), "devices": [str(d) for d in jax.devices()],
            "git_commit": git_commit, "command": sys.argv,
        })
    train = make_train(algo, env, env_params, config, train_config)
    keys = jax.random.split(jax.random.PRNGKey(cfg["seed"]), cfg["seeds"])
    runner = jax.jit(jax.vmap(train.init))(keys)
    t0 = time.perf_counter()
    chunk = jax.jit(jax.vmap(train.chunk)).lower(runner).compile()
    compile_time = time.perf_counter() - t0

    ckpt = Checkpointer(os.path.join(out, "checkpoints"))
    meta = {"chunks_done": 0, "env_steps": [0.0] * cfg["seeds"], "wall_time": 0.0}
    if resume and ckpt.latest_step() is not None:
        runner, meta = ckpt.restore(runner)
    done_iters = meta["chunks_done"] * train_config.log_every
    lines = []
    if os.path.exists(metrics_path):  # drop what was logged after the checkpoint
        with open(metrics_path) as f:
            lines = [ln for ln in map(json.loads, f) if ln["iteration"] <= done_iters]
    with open(metrics_path, "w") as f:
        f.writelines(json.dumps(ln) + "\n" for ln in lines)

    env_steps = list(meta["env_steps"])
    wall = meta["wall_time"]
    tty = sys.stderr.isatty()  # a progress line rewritten in place, else one line per 10%
    with open(metrics_path, "a") as f:
        for c in range(meta["chunks_done"], train.n_chunks):
            t = time.perf_counter()
            runner, metrics = chunk(runner)
            metrics = _to_host(metrics)
            wall += time.perf_counter() - t
            for s in range(cfg["seeds"]):
                env_steps[s] += float(metrics["env_steps"][s])
                line = _line(metrics, s, env_steps[s], wall)
                lines.append(line)
                f.write(json.dumps(line) + "\n")
            f.flush()
            if not quiet and (tty or (c + 1) % max(1, train.n_chunks // 10) == 0):
                cr = metrics["collective_return"]
                lead = "\r" if tty else ""
                print(f"{lead}[{c + 1}/{train.n_chunks}] iteration "
                      f"{int(metrics['iteration'][0])}  collective_return median {np.median(cr):.2f}  "
                      f"{sum(env_steps) / max(wall, 1e-9):,.0f} steps/s", end="" if tty else "\n",
                      file=sys.stderr, flush=True)
            last = c + 1 == train.n_chunks
            if (c + 1) % checkpoint_every == 0 or last or stop_after_chunks == c + 1:
                ckpt.save(c + 1, runner, {"chunks_done": c + 1, "env_steps": env_steps,
                                          "wall_time": wall})
            if stop_after_chunks == c + 1:
                ckpt.close()
                return 0
    if not quiet and tty:
        print(file=sys.stderr)
    ckpt.close()
    summary = summarize(lines, cfg["seeds"], target)
    summary.update({"algo": cfg["algo"], "env": cfg["env"], "seeds": cfg["seeds"],
                    "iterations": train_config.iterations, "env_steps": sum(env_steps),
                    "wall_time_s": wall, "compile_time_s": compile_time,
                    "steps_per_second": sum(env_steps) / max(wall, 1e-9)})
    atomic_write_json(os.path.join(out, "summary.json"), summary)
    if not quiet:
        print(f"{out}: collective_return (last 10%) median {summary['collective_return']['median']:.3f}"
              f" over {cfg['seeds']} seed(s), {wall:.1f} s + {compile_time:.1f} s compile")
    return 0
