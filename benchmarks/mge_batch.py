"""Solve time per game of MGE-F on a batch of random games: jitted, vmapped JAX vs a numpy loop.

    python -m benchmarks.mge_batch [--games 1000] [--states 5] [--agents 2] [--actions 3]
                                   [--horizon 5] [--eps 1e-6] [--numpy-games 100]

Both solve the same float64 games (`benchmarks.mge_numpy.random_game`) with the same settings
(beta = 1, alpha = 0.5, Jacobi, expectation value), and the JAX results are checked against numpy
on the games numpy solves. numpy runs on the first `--numpy-games` games (its time per game does
not depend on the batch); JAX solves the whole batch in one `vmap` call, its `while_loop` running
until the slowest game has converged (mge.md §5.8). Compile time is reported separately.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import mge_numpy as ref
from jaxmcg import mge


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", type=int, default=1000)
    p.add_argument("--states", type=int, default=5)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--actions", type=int, default=3)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--numpy-games", type=int, default=100)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    games = [ref.random_game(rng, args.states, args.agents, args.actions, 2, 1.0)
             for _ in range(args.games)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *games)
    kw = dict(beta=1.0, alpha=0.5, eps=args.eps)

    solve = jax.jit(jax.vmap(lambda g: mge.mge_finite(g, args.horizon, **kw)))
    t = time.perf_counter()
    compiled = solve.lower(stacked).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(stacked))  # warm-up
    t = time.perf_counter()
    sol = jax.block_until_ready(compiled(stacked))
    jax_s = (time.perf_counter() - t) / args.games

    n_np = min(args.numpy_games, args.games)
    t = time.perf_counter()
    outs = [ref.mge_finite(g, args.horizon, **kw) for g in games[:n_np]]
    np_s = (time.perf_counter() - t) / n_np
    err = max(np.abs(np.asarray(sol.pi[k]) - o["pi"]).max() for k, o in enumerate(outs))

    print(f"device: {jax.devices()[0]}  games: {args.games} x (S={args.states}, M={args.agents}, "
          f"A={args.actions}, T={args.horizon}), eps={args.eps:g}")
    print(f"inner iterations per stage: mean {float(sol.iterations.mean()):.1f}, "
          f"max {int(sol.iterations.max())}; converged {bool(sol.converged.all())}")
    print(f"jax compile {compile_s:.2f} s; max |pi_jax - pi_numpy| = {err:.2e} ({n_np} games)")
    print(f"{'numpy ms/game':>14} {'jax ms/game':>12} {'ratio':>8}")
    print(f"{np_s * 1e3:>14.3f} {jax_s * 1e3:>12.4f} {np_s / jax_s:>8.1f}")


if __name__ == "__main__":
    main()
