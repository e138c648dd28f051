"""Host-side driver around `make_train`: logging, progress, checkpoints, resume, summary.

Files in the run directory (see README): `config.json`, `metrics.jsonl` (one line per logged
iteration and seed), `summary.json`, `checkpoints/` (orbax; `--resume` continues from the latest).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmcg
from jaxmcg.checkpoint import Checkpointer
from jaxmcg.memory import check_fits
from jaxmcg.parallel import RUNS, is_main_process, make_mesh, parse_devices, replicated, runs_sharding
from jaxmcg.sweep import algo_values, check_traceable, env_values, grid_points, point_arrays, rebind
from jaxmcg.sweep import apply as sweep_apply
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


def enable_compilation_cache() -> str | None:
    """Turn on XLA's persistent compilation cache for the command-line tools (a repeated run or
    benchmark skips compiling). Directory: `$JAXMCG_CACHE_DIR`, default `~/.cache/jaxmcg/xla`;
    `JAXMCG_COMPILATION_CACHE=0` turns it off; a directory set through jax's own
    `JAX_COMPILATION_CACHE_DIR` is kept. Returns the directory in use, or None."""
    if os.environ.get("JAXMCG_COMPILATION_CACHE", "1") == "0":
        return None
    if not jax.config.jax_compilation_cache_dir:
        default = os.path.join(os.path.expanduser("~"), ".cache", "jaxmcg", "xla")
        jax.config.update("jax_compilation_cache_dir", os.environ.get("JAXMCG_CACHE_DIR", default))
    return jax.config.jax_compilation_cache_dir


def build(cfg: dict):
    """`(algo, env, env_params, config, train_config)` from a resolved run configuration."""
    algo = jaxmcg.get_algo(cfg["algo"])
    env, env_params = jaxmcg.make(cfg["env"], **cfg["env_params"])
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["algo_config"].items()}
    return algo, env, env_params, algo.Config(**fields), TrainConfig(**cfg["train"])


def _to_host(metrics: dict) -> dict:
    return {k: np.asarray(v) for k, v in metrics.items()}


def _line(metrics: dict, run: int, seed: int, env_steps: float, wall: float) -> dict:
    """The `metrics.jsonl` line of run `run` (row of the metrics), logged as seed `seed`."""
    line = {"iteration": int(metrics["iteration"][run]), "seed": seed, "env_steps": int(env_steps),
            "wall_time": round(wall, 3)}
    for k, v in metrics.items():
        if k not in ("iteration", "env_steps"):
            x = v[run]
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


@dataclasses.dataclass
class Program:
    """Everything a run needs, checked and traced but not compiled: `prepare(cfg)` raises
    ValueError on any bad input (devices, sweep keys) before XLA sees a program."""

    cfg: dict
    train_config: TrainConfig
    points: list  # sweep points (dicts of swept values); [{}] without a sweep
    mesh: Any
    init: Callable  # () -> (hp, runner), jitted, sharded over runs
    hyper: Callable  # () -> hp alone (what a resumed run needs besides the checkpoint)
    chunk: Callable  # (hp, runner) -> (runner, metrics), jitted, metrics replicated
    n_chunks: int
    warm_start: Callable | None = None  # runner -> runner with the agents of `init_agents_from`

    @property
    def n_seeds(self) -> int:
        return self.cfg["seeds"]


def prepare(cfg: dict, warm_start: bool = True) -> Program:
    """Check and trace `cfg`'s program. With `cfg["init_agents_from"]` (and `warm_start`, which a
    resumed run turns off) the source run is checked against this one here, before compiling."""
    algo, env, env_params, config, train_config = build(cfg)
    points = grid_points(cfg.get("sweep") or {})
    n_seeds, n_runs = cfg["seeds"], len(points) * cfg["seeds"]
    mesh = make_mesh(parse_devices(cfg.get("devices", 1)), n_runs, train_config.n_envs,
                     train_config.eval_envs)
    hp = point_arrays(points, n_seeds)

    def train_for(point_hp):
        point_config, point_params = sweep_apply(point_hp, config, env_params)
        return make_train(algo, env, point_params, point_config, train_config, mesh=mesh)

    base = {k: getattr(config, k) for k in algo_values(hp)}  # plain floats between programs

    def init_one(point_hp, key):
        return rebind(train_for(point_hp).init(key), base)

    def chunk_one(point_hp, runner):
        runner, metrics = train_for(point_hp).chunk(rebind(runner, algo_values(point_hp)))
        return rebind(runner, base), metrics

    check_traceable(init_one, chunk_one, hp, jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)
    runs, everywhere = runs_sharding(mesh), replicated(mesh)
    seed = cfg["seed"]

    def hp_all():
        return {k: jnp.asarray(v) for k, v in hp.items()}

    def init_all():
        keys = jnp.tile(jax.random.split(jax.random.PRNGKey(seed), n_seeds), (len(points), 1))
        hp_runs = hp_all()
        return hp_runs, jax.vmap(init_one, spmd_axis_name=RUNS)(hp_runs, keys)

    init = jax.jit(init_all, out_shardings=runs)
    chunk = jax.jit(jax.vmap(chunk_one, spmd_axis_name=RUNS), in_shardings=(runs, runs),
                    out_shardings=(runs, everywhere))
    program = Program(cfg, train_config, points, mesh, init, jax.jit(hp_all, out_shardings=runs),
                      chunk, train_config.iterations // train_config.log_every)
    if warm_start and cfg.get("init_agents_from"):
        program.warm_start = _warm_start_loader(program)
    return program


def _warm_start_loader(program: Program) -> Callable:
    from jaxmcg.warm_start import prepare_loader

    _, abstract = jax.eval_shape(program.init)
    return prepare_loader(program.cfg["init_agents_from"], abstract, program.n_seeds,
                          runs_sharding(program.mesh))


def _point_dirs(out: str, program: Program) -> list[str]:
    if not program.cfg.get("sweep"):
        return [out]
    return [os.path.join(out, f"point-{p:03d}") for p in range(len(program.points))]


def run_loop(cfg: dict, out: str, resume: bool = False, checkpoint_every: int = 10,
             target: float | None = None, quiet: bool = False, stop_after_chunks: int | None = None,
             git_commit: str | None = None, program: Program | None = None) -> int:
    """Train `cfg` (from `experiments.run.resolve`) and write the run files under `out`. A sweep
    writes one directory per point (`point-000`, ...) with the usual files, and a `summary.json`
    listing the points. With several processes every process runs this; process 0 writes."""
    program = program or prepare(cfg, warm_start=not resume)
    n_seeds, n_points = program.n_seeds, len(program.points)
    main = is_main_process()
    dirs = _point_dirs(out, program)
    if main:
        for d in dirs:
            os.makedirs(d, exist_ok=True)
    if main and not resume:
        meta = {"versions": _versions(), "devices": [str(d) for d in jax.devices()],
                "mesh": dict(program.mesh.shape), "processes": jax.process_count(),
                "git_commit": git_commit, "command": sys.argv}
        atomic_write_json(os.path.join(out, "config.json"), {"run": cfg, **meta})
        if cfg.get("sweep"):
            for d, point in zip(dirs, program.points):
                point_cfg = {**cfg, "sweep": None, "point": point}
                point_cfg["algo_config"] = {**cfg["algo_config"], **algo_values(point)}
                point_cfg["env_params"] = {**cfg["env_params"], **env_values(point)}
                atomic_write_json(os.path.join(d, "config.json"), {"run": point_cfg, **meta})
    ckpt = Checkpointer(os.path.join(out, "checkpoints"))
    n_runs = n_points * n_seeds
    meta = {"chunks_done": 0, "env_steps": [0.0] * n_runs, "wall_time": 0.0}
    if resume and ckpt.latest_step() is not None:
        # restore into the state's shapes without running init: an init that trains (CM3's
        # Stage 1) would otherwise be redone on every resume
        _, abstract = jax.eval_shape(program.init)
        hp = program.hyper()
        runner, meta = ckpt.restore(abstract)
    else:
        hp, runner = program.init()
        if cfg.get("init_agents_from"):  # not when resuming: the checkpoint holds them already
            runner = (program.warm_start or _warm_start_loader(program))(runner)
    t0 = time.perf_counter()
    compiled = program.chunk.lower(hp, runner).compile()
    compile_time = time.perf_counter() - t0
    check_fits(compiled, program.mesh, program.train_config.n_envs)
    done_iters = meta["chunks_done"] * program.train_config.log_every
    lines = [[] for _ in dirs]
    files = []
    for p, d in enumerate(dirs if main else []):
        path = os.path.join(d, "metrics.jsonl")
        if os.path.exists(path):  # drop what was logged after the checkpoint
            with open(path) as f:
                lines[p] = [ln for ln in map(json.loads, f) if ln["iteration"] <= done_iters]
        with open(path, "w") as f:
            f.writelines(json.dumps(ln) + "\n" for ln in lines[p])
        files.append(open(path, "a"))

    env_steps = list(meta["env_steps"])
    wall = meta["wall_time"]
    tty = sys.stderr.isatty()  # a progress line rewritten in place, else one line per 10%
    n_chunks = program.n_chunks
    try:
        for c in range(meta["chunks_done"], n_chunks):
            t = time.perf_counter()
            runner, metrics = compiled(hp, runner)
            metrics = _to_host(metrics)
            wall += time.perf_counter() - t
            for r in range(n_runs):
                env_steps[r] += float(metrics["env_steps"][r])
            for p, f in enumerate(files):
                for s in range(n_seeds):
                    r = p * n_seeds + s
                    line = _line(metrics, r, s, env_steps[r], wall)
                    lines[p].append(line)
                    f.write(json.dumps(line) + "\n")
                f.flush()
            if main and not quiet and (tty or (c + 1) % max(1, n_chunks // 10) == 0):
                cr = metrics["collective_return"]
                lead = "\r" if tty else ""
                print(f"{lead}[{c + 1}/{n_chunks}] iteration "
                      f"{int(metrics['iteration'][0])}  collective_return median {np.median(cr):.2f}  "
                      f"{sum(env_steps) / max(wall, 1e-9):,.0f} steps/s", end="" if tty else "\n",
                      file=sys.stderr, flush=True)
            last = c + 1 == n_chunks
            if (c + 1) % checkpoint_every == 0 or last or stop_after_chunks == c + 1:
                ckpt.save(c + 1, runner, {"chunks_done": c + 1, "env_steps": env_steps,
                                          "wall_time": wall})
            if stop_after_chunks == c + 1:
                return 0
    finally:
        ckpt.close()
        for f in files:
            f.close()
    if not main:
        return 0
    if not quiet and tty:
        print(file=sys.stderr)
    timing = {"wall_time_s": wall, "compile_time_s": compile_time,
              "steps_per_second": sum(env_steps) / max(wall, 1e-9)}
    summaries = []
    for p, d in enumerate(dirs):
        summary = summarize(lines[p], n_seeds, target)
        point_steps = sum(env_steps[p * n_seeds:(p + 1) * n_seeds])
        summary.update({"algo": cfg["algo"], "env": cfg["env"], "seeds": n_seeds,
                        "iterations": program.train_config.iterations, "env_steps": point_steps,
                        **timing})
        if cfg.get("sweep"):
            summary["point"] = program.points[p]
        atomic_write_json(os.path.join(d, "summary.json"), summary)
        summaries.append(summary)
    if cfg.get("sweep"):
        atomic_write_json(os.path.join(out, "summary.json"), {
            "sweep": cfg["sweep"], "points": [
                {"dir": os.path.basename(d), "point": s["point"],
                 "collective_return": s["collective_return"]} for d, s in zip(dirs, summaries)],
            **timing})
    if not quiet:
        for d, s in zip(dirs, summaries):
            label = f" {s['point']}" if cfg.get("sweep") else ""
            print(f"{d}{label}: collective_return (last 10%) median "
                  f"{s['collective_return']['median']:.3f} over {n_seeds} seed(s)")
        print(f"{wall:.1f} s + {compile_time:.1f} s compile, {timing['steps_per_second']:,.0f} steps/s")
    return 0
