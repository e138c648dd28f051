"""Milliseconds per LIO iteration on Escape Room, linearized vs autodiff meta-gradient.

    python -m benchmarks.lio_iteration [--n-envs 256 4096] [--iterations 20] [--env-param K=V]

Both variants are timed in the same process on the same device, so their ratio is meaningful on a
shared machine; compile time is reported separately.
"""
from __future__ import annotations

import argparse
import time

import jax

import jaxmcg
from jaxmcg.algos import lio
from jaxmcg.train import TrainConfig, make_train


def time_iterations(env, params, config, n_envs: int, iterations: int):
    tc = TrainConfig(n_envs=n_envs, iterations=iterations, log_every=iterations, eval_envs=64)
    train = make_train(lio, env, params, config, tc)
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    t = time.perf_counter()
    chunk = jax.jit(train.chunk).lower(runner).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(chunk(runner))  # warm-up
    t = time.perf_counter()
    jax.block_until_ready(chunk(runner))
    return (time.perf_counter() - t) / iterations * 1e3, compile_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-envs", type=int, nargs="+", default=[256, 4096])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--env-param", action="append", default=[])
    args = p.parse_args(argv)
    overrides = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.env_param)}
    env, params = jaxmcg.make("escape_room", **overrides)
    print(f"device: {jax.devices()[0]}  ER({env.num_agents}, {params.min_lever_pullers})")
    print(f"{'n_envs':>7} {'pipeline':>8} {'linearized ms':>14} {'autodiff ms':>12} {'ratio':>6}")
    for n_envs in args.n_envs:
        for pipeline in (False, True):
            ms = {}
            for mg in ("linearized", "autodiff"):
                cfg = lio.Config(meta_grad=mg, pipeline=pipeline)
                ms[mg], _ = time_iterations(env, params, cfg, n_envs, args.iterations)
            print(f"{n_envs:>7} {str(pipeline):>8} {ms['linearized']:>14.1f} {ms['autodiff']:>12.1f} "
                  f"{ms['autodiff'] / ms['linearized']:>6.2f}")


if __name__ == "__main__":
    main()
