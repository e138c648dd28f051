"""Seconds per DCL iteration at the paper's batch sizes, with many seeds in one vmapped run.

    python -m benchmarks.dcl_iteration [--presets dcl-pd dcl-grid] [--seeds 1 10] [--iterations 50]

Prints milliseconds per iteration for the whole vmapped batch of seeds and per seed, next to the
authors' PyTorch code as dcl.md reports it (PD 0.085 s, Grid 0.29 s per iteration on a CPU like
this one; their code runs one seed per process). That reference is a published figure, not a
measurement made here, so the ratio is indicative.
"""
from __future__ import annotations

import argparse
import time

import jax

import jaxmcg
from experiments.presets import PRESETS
from jaxmcg.algos import dcl
from jaxmcg.train import TrainConfig, make_train

AUTHORS_S_PER_ITERATION = {"pd": 0.085, "grid_game": 0.29}  # dcl.md, issue 5 ("Speed")


def time_iterations(preset: str, seeds: int, iterations: int):
    p = PRESETS[preset]
    env, params = jaxmcg.make(p["env"], **p.get("env_params", {}))
    n_envs = p["train"]["n_envs"]
    tc = TrainConfig(n_envs=n_envs, iterations=iterations, log_every=iterations, eval_envs=n_envs)
    train = make_train(dcl, env, params, dcl.Config(**p["algo_params"]), tc)
    runner = jax.jit(jax.vmap(train.init))(jax.random.split(jax.random.PRNGKey(0), seeds))
    t = time.perf_counter()
    chunk = jax.jit(jax.vmap(train.chunk)).lower(runner).compile()
    compile_s = time.perf_counter() - t
    runner, _ = chunk(runner)  # warm-up
    jax.block_until_ready(runner)
    t = time.perf_counter()
    jax.block_until_ready(chunk(runner))
    return (time.perf_counter() - t) / iterations, compile_s, p["env"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["dcl-pd", "dcl-grid"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--iterations", type=int, default=50)
    args = ap.parse_args(argv)
    print(f"device: {jax.devices()[0]}")
    print(f"{'preset':>10} {'seeds':>5} {'ms/it':>8} {'ms/it/seed':>10} {'authors ms/it':>13} "
          f"{'speed-up/seed':>13} {'compile s':>9}")
    for preset in args.presets:
        for seeds in args.seeds:
            s, compile_s, env = time_iterations(preset, seeds, args.iterations)
            ref = AUTHORS_S_PER_ITERATION.get(env.split("-")[0])
            ratio = f"{ref / (s / seeds):13.1f}" if ref else f"{'-':>13}"
            ref_ms = f"{ref * 1e3:13.0f}" if ref else f"{'-':>13}"
            print(f"{preset:>10} {seeds:>5} {s * 1e3:8.1f} {s / seeds * 1e3:10.2f} {ref_ms} {ratio} "
                  f"{compile_s:9.1f}")


if __name__ == "__main__":
    main()
