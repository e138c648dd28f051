"""Environment throughput: the JAX env under jit + vmap + lax.scan vs a plain numpy env.

    python -m benchmarks.throughput --env escape_room|cleanup-7x7|cleanup-10x10|coins
        [--n-envs 1 64 1024 4096 16384] [--steps N] [--env-param KEY=VALUE ...] [--json PATH]

For each `n_envs`, one jitted `lax.scan` runs `--steps` steps of the vmapped `env.step` with
uniformly random actions and auto-reset, carrying the observations as a rollout would (so XLA cannot
drop them). The environments are split evenly over `--devices` devices with `pmap` (default: all;
on a CPU this module makes one XLA device per core, since one vmapped computation runs on one core).
Compile time is measured apart; run time is the best of `--repeats` calls, each ended by
`block_until_ready`. The numpy baseline (Escape Room, Cleanup and Coins) is one environment stepped in a
Python loop, observations included, with its random actions drawn before the clock starts, in the same
process; Cleanup's baseline gets the JAX env's parameters (so `--env-param` overrides apply to both).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import time
from pathlib import Path

# One XLA CPU device per core, so that the batch of environments can be split over the cores (XLA
# runs one vmapped computation on one core). Must be set before jax is imported; GPUs ignore it.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count() or 1}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmcg  # noqa: E402

DEFAULT_N_ENVS = (1, 64, 1024, 4096, 16384)


def parse_env_params(items: list[str]) -> dict:
    """`KEY=VALUE` strings to a dict; values are Python literals where they parse, else strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env-param expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def make_rollout(env, params, n_envs: int, n_steps: int):
    """A jit-able `run(key) -> (obs, reward_sum)` over `n_steps` steps of `n_envs` envs."""
    n_actions = env.action_space(params).n
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def run(key):
        key, key_reset = jax.random.split(key)
        obs, state = reset(jax.random.split(key_reset, n_envs), params)

        def body(carry, _):
            obs, state, reward_sum, key = carry
            key, key_act, key_step = jax.random.split(key, 3)
            actions = jax.random.randint(key_act, (n_envs, env.num_agents), 0, n_actions)
            obs, state, reward, _, _, _ = step(
                jax.random.split(key_step, n_envs), state, actions, params
            )
            return (obs, state, reward_sum + reward.sum(), key), None

        carry = (obs, state, jnp.zeros((), jnp.float32), key)
        (obs, _, reward_sum, _), _ = jax.lax.scan(body, carry, None, length=n_steps)
        return obs, reward_sum

    return run


def bench_jax(env, params, n_envs: int, n_steps: int, repeats: int, seed: int = 0,
              devices: int = 1, rollout=make_rollout) -> dict:
    """`devices` > 1 splits the environments evenly over that many devices with `pmap` (falls back
    to fewer devices when `n_envs` does not divide). `rollout(env, params, n_envs, n_steps)` builds
    the timed `run(key)` (default: uniformly random actions)."""
    while n_envs % devices:
        devices -= 1
    key = jax.random.PRNGKey(seed)
    run = rollout(env, params, n_envs // devices, n_steps)
    t0 = time.perf_counter()
    if devices == 1:
        compiled = jax.jit(run).lower(key).compile()
        call = lambda k: compiled(k)
    else:
        pmapped = jax.pmap(run, devices=jax.devices()[:devices])
        call = lambda k: pmapped(jax.random.split(k, devices))
        jax.block_until_ready(call(key))  # compiles
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call(jax.random.fold_in(key, i)))
        best = min(best, time.perf_counter() - t0)
    return {
        "n_envs": n_envs,
        "devices": devices,
        "steps": n_steps,
        "compile_s": compile_s,
        "run_s": best,
        "steps_per_s": n_envs * n_steps / best,
    }


def _time_steps(env, actions) -> dict:
    """Steps/s of a numpy env stepped through pre-drawn `actions`, resetting at episode ends."""
    env.reset()
    t0 = time.perf_counter()
    for a in actions:
        done = env.step(a)[2]
        if done:
            env.reset()
    run_s = time.perf_counter() - t0
    return {"steps": len(actions), "run_s": run_s, "steps_per_s": len(actions) / run_s}


def _random_actions(n_steps, num_agents, num_actions, seed):
    return np.random.default_rng(seed).integers(0, num_actions, (n_steps, num_agents)).tolist()


def bench_numpy_escape_room(num_agents: int, min_lever: int, max_steps: int, n_steps: int,
                            seed: int = 0) -> dict:
    from benchmarks.escape_room_numpy import EscapeRoomNumpy

    env = EscapeRoomNumpy(num_agents, min_lever, max_steps)
    return _time_steps(env, _random_actions(n_steps, num_agents, 3, seed))


def bench_numpy_cleanup(map_name: str, num_agents: int, params, view_size: int, n_steps: int,
                        seed: int = 0) -> dict:
    from benchmarks.cleanup_numpy import CleanupNumpy

    env = CleanupNumpy(
        map_name, num_agents, seed=seed,
        apple_respawn_prob=float(params.apple_respawn_prob),
        threshold_depletion=float(params.threshold_depletion),
        threshold_restoration=float(params.threshold_restoration),
        waste_spawn_prob=float(params.waste_spawn_prob),
        view_size=view_size, max_steps=int(params.max_steps_in_episode),
    )
    return _time_steps(env, _random_actions(n_steps, num_agents, 6, seed))


def bench_numpy_coins(params, grid_size: int, n_steps: int, seed: int = 0) -> dict:
    from benchmarks.coins_numpy import CoinsNumpy

    env = CoinsNumpy(grid_size=grid_size, spawn_prob=float(params.spawn_prob),
                     coin_reward=float(params.coin_reward), penalty=float(params.penalty),
                     max_steps=int(params.max_steps_in_episode), seed=seed)
    return _time_steps(env, _random_actions(n_steps, 2, 5, seed))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="escape_room", help="id, see jaxmcg.list_envs()")
    parser.add_argument("--n-envs", type=int, nargs="+", default=list(DEFAULT_N_ENVS))
    parser.add_argument("--steps", type=int, default=1000, help="scan length per JAX call")
    parser.add_argument("--repeats", type=int, default=3, help="timed JAX calls (best is kept)")
    parser.add_argument("--numpy-steps", type=int, default=50_000, help="numpy baseline steps")
    parser.add_argument("--env-param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--devices", default="all",
                        help="devices to split the environments over: a number or 'all' (on a CPU, "
                             "one per core); 1 = one vmapped computation on one device")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "numpy_steps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    n_dev = jax.device_count() if args.devices == "all" else None
    if n_dev is None:
        try:
            n_dev = int(args.devices)
        except ValueError:
            parser.error(f"--devices must be a number or 'all', got {args.devices!r}")
        if not 1 <= n_dev <= jax.device_count():
            parser.error(f"--devices={n_dev} is invalid; valid: 1..{jax.device_count()} or 'all'")
    if any(n <= 0 for n in args.n_envs):
        parser.error(f"--n-envs values must be > 0, got {args.n_envs}")
    try:
        overrides = parse_env_params(args.env_param)
        env_id = jaxmcg.resolve_env_id(args.env)
        env, params = jaxmcg.make(env_id, **overrides)
    except ValueError as err:
        parser.error(str(err))

    numpy_res = None
    if env_id.startswith("escape_room-"):
        numpy_res = bench_numpy_escape_room(
            env.num_agents, int(params.min_lever_pullers), int(params.max_steps_in_episode),
            args.numpy_steps,
        )
    elif env_id.startswith("cleanup-"):
        map_name = env_id[len("cleanup-"):].rsplit("-v", 1)[0]
        obs_size = int(env.observation_space(params).shape[0])
        numpy_res = bench_numpy_cleanup(
            map_name, env.num_agents, params, (obs_size - 1) // 2, args.numpy_steps,
        )
    elif env_id.startswith("coins-"):
        numpy_res = bench_numpy_coins(params, env.grid_size, args.numpy_steps)

    device = jax.devices()[0]
    print(f"{env_id} {overrides or ''}".rstrip() + f" on {device.platform} ({device.device_kind}), "
          f"jax {jax.__version__}")
    if numpy_res:
        print(f"numpy (1 env, Python loop): {numpy_res['steps_per_s']:,.0f} steps/s")
    header = (f"{'n_envs':>8} {'devices':>8} {'compile_s':>10} {'run_s':>8} {'jax steps/s':>14} "
              f"{'x numpy':>9}")
    print(header)
    rows = []
    for n_envs in args.n_envs:
        res = bench_jax(env, params, n_envs, args.steps, args.repeats, devices=n_dev)
        if numpy_res:
            res["speedup_vs_numpy"] = res["steps_per_s"] / numpy_res["steps_per_s"]
        ratio = f"{res['speedup_vs_numpy']:9.1f}" if numpy_res else f"{'n/a':>9}"
        print(f"{n_envs:>8} {res['devices']:>8} {res['compile_s']:>10.2f} {res['run_s']:>8.3f} "
              f"{res['steps_per_s']:>14,.0f} {ratio}")
        rows.append(res)

    result = {
        "env": env_id,
        "env_params": {k: repr(v) for k, v in overrides.items()},
        "device": {"platform": device.platform, "kind": device.device_kind,
                   "count": jax.device_count()},
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "git_commit": git_commit(),
        "numpy": numpy_res,
        "jax": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
