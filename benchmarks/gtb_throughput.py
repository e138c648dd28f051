"""Gather-Trade-Build throughput (gtb.md §11.8): vmapped `env.step` (auto-reset, observations and
masks) driven by a masked uniform random policy, inside one jitted `lax.scan`.

    python -m benchmarks.gtb_throughput [--n-envs 1024 4096 16384] [--steps 200] [--repeats 3]
        [--devices all|N] [--designer-obs none|foundation] [--obs-format flat|compact] [--json PATH]

The reference is the authors' simulator [F]: one environment in one process with random masked
actions and observations, ≈1.4k env-steps/s on the shared 2-core CPU of the spec (gtb.md §9.5, [M]);
the acceptance target is ≥ 100x that at 4096 environments (§11.8). [F] is not run here (it is not a
dependency); `--reference-steps-per-s` changes the figure compared against. On a shared machine the
load changes the figures, so `--load-reference cleanup-7x7-v0` (default; "none" to skip) also measures
a jaxmcg environment in the same run with `benchmarks.throughput`'s rollout: its ratio to the same
environment's unloaded figure (`--load-reference-steps-per-s`, Cleanup 7x7 ≈ 2.2M/s at 4096 envs on
the spec's CPU) estimates the load factor, and GTB's figure divided by it is reported as `unloaded`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count() or 1}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxmcg  # noqa: E402
from benchmarks.throughput import bench_jax  # noqa: E402

F_STEPS_PER_S = 1400.0  # gtb.md §9.5 [M]
CLEANUP_UNLOADED_STEPS_PER_S = 2.2e6  # Cleanup 7x7, 4096 envs, one device, unloaded (same CPU)


def make_rollout(env, params, n_envs: int, n_steps: int):
    """`run(key) -> reward_sum`: `n_steps` steps of `n_envs` envs with masked uniform actions; the
    observations are carried (so XLA keeps them) and feed the next step's mask."""
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def run(key):
        key, key_reset = jax.random.split(key)
        obs, state = reset(jax.random.split(key_reset, n_envs), params)

        def body(carry, _):
            obs, state, total, key = carry
            key, key_act, key_step = jax.random.split(key, 3)
            mask = env.split_obs(obs)["action_mask"] > 0.5
            # uniform over the valid actions: the k-th valid one, k ~ U{0..n_valid-1} (one
            # uniform per agent instead of 50 Gumbel draws)
            u = jax.random.uniform(key_act, mask.shape[:-1])
            k = jnp.floor(u * mask.sum(-1)).astype(jnp.int32)
            actions = jnp.argmax(jnp.cumsum(mask, axis=-1) > k[..., None], axis=-1)
            obs, state, reward, _, _, info = step(jax.random.split(key_step, n_envs), state, actions,
                                                  params)
            total = total + reward.sum() + jnp.sum(obs[..., :8]) * 0.0
            return (obs, state, total, key), None

        carry = (obs, state, jnp.zeros((), jnp.float32), key)
        (_, _, total, _), _ = jax.lax.scan(body, carry, None, length=n_steps)
        return total

    return run


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-envs", type=int, nargs="+", default=[4096])
    parser.add_argument("--steps", type=int, default=200, help="scan length per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="1", help="a number or 'all' (one per CPU core)")
    parser.add_argument("--designer-obs", default="none", choices=["none", "foundation"])
    parser.add_argument("--obs-format", default="flat", choices=["flat", "compact"],
                        help="flat: the 11x11x9 float tensor; compact: one integer code per cell")
    parser.add_argument("--reference-steps-per-s", type=float, default=F_STEPS_PER_S)
    parser.add_argument("--load-reference", default="cleanup-7x7-v0",
                        help="a jaxmcg env id measured in the same run, or 'none'")
    parser.add_argument("--load-reference-steps-per-s", type=float,
                        default=CLEANUP_UNLOADED_STEPS_PER_S)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.repeats <= 0 or any(n <= 0 for n in args.n_envs):
        parser.error("--steps, --repeats and --n-envs must be > 0")
    devices = jax.device_count() if args.devices == "all" else int(args.devices)
    if not 1 <= devices <= jax.device_count():
        parser.error(f"--devices={devices} is invalid; valid: 1..{jax.device_count()} or 'all'")
    env, params = jaxmcg.make("gtb-15x15-v0", designer_obs=args.designer_obs,
                              obs_format=args.obs_format)
    results = []
    for n in args.n_envs:
        r = bench_jax(env, params, n, args.steps, args.repeats, devices=devices, rollout=make_rollout)
        r["speedup_vs_reference"] = r["steps_per_s"] / args.reference_steps_per_s
        r["designer_obs"], r["obs_format"] = args.designer_obs, args.obs_format
        line = (f"{args.obs_format} n_envs={n:6d} devices={r['devices']} compile {r['compile_s']:.1f}s  "
                f"{r['steps_per_s']:,.0f} env-steps/s  = {r['speedup_vs_reference']:.0f}x [F] "
                f"({args.reference_steps_per_s:,.0f}/s)")
        if args.load_reference != "none":
            ref_env, ref_params = jaxmcg.make(args.load_reference)
            ref = bench_jax(ref_env, ref_params, n, args.steps, args.repeats, devices=devices)
            load = args.load_reference_steps_per_s / ref["steps_per_s"]
            r.update(load_reference=args.load_reference, load_reference_steps_per_s=ref["steps_per_s"],
                     load_factor=load, unloaded_speedup_vs_reference=r["speedup_vs_reference"] * load)
            line += (f"; {args.load_reference} {ref['steps_per_s']:,.0f}/s in the same run: load "
                     f"x{load:.1f}, unloaded ≈ {r['unloaded_speedup_vs_reference']:.0f}x [F]")
        results.append(r)
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "backend": jax.default_backend(),
                                         "machine": platform.processor() or platform.machine(),
                                         "cpus": os.cpu_count()}, indent=2))
    return results


if __name__ == "__main__":
    main()
