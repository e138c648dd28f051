"""`make bench`: throughput of every registered environment and algorithm on the current device.

    python -m benchmarks.suite [--n-envs 1 256 4096 16384] [--train-envs 1024]
        [--envs ID ...] [--algos NAME ...] [--out benchmarks/results]

Environments: one jitted `lax.scan` of the vmapped `step` with random actions from the action
space and auto-reset, observations carried (so XLA keeps them), at each `n_envs`; a differentiable
game instead evaluates its losses at random joint strategies. Algorithms: one chunk of training
(`make_train`, rollouts and updates) on the algorithm's main environment. Compile time (lowering
and XLA, or a load from the persistent cache) is reported apart from run time, which is the best of
`--repeats` calls (one call for training chunks); the sizes of one environment compile in
parallel, one thread per core. Writes `<platform>.json` and `<platform>.md` under `--out` with the
device, the jax version and the commit; `--merge` adds another platform's column for GPU/CPU
ratios.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmcg
from jaxmcg import spaces
from jaxmcg.differentiable import is_differentiable_game
from jaxmcg.memory import env_bytes
from jaxmcg.runner import enable_compilation_cache
from jaxmcg.train import TrainConfig, make_train

DEFAULT_N_ENVS = (1, 256, 4096, 16384)
# Each algorithm's main environment (the one its paper is known for); algorithms not listed run on
# Escape Room, and a pair that cannot run is reported with its error.
MAIN_ENV = {
    "lio": ("escape_room-v0", {}), "pg": ("escape_room-v0", {}), "pg_d": ("escape_room-v0", {}),
    "pg_c": ("escape_room-v0", {}),
    "metagrad": ("escape_room-v0", {"num_agents": 5, "min_lever_pullers": 2}),
    "dual_rl": ("escape_room-v0", {"num_agents": 5, "min_lever_pullers": 2}),
    "amd": ("escape_room-v0", {"num_agents": 5, "min_lever_pullers": 2}),
    "ac": ("cleanup-7x7-v0", {}), "ac_c": ("cleanup-7x7-v0", {}), "ac_d": ("cleanup-7x7-v0", {}),
    "ia": ("cleanup-7x7-v0", {}), "cen": ("cleanup-7x7-v0", {}),
    "dcl": ("grid_game-v0", {}), "ippo": ("grid_game-v0", {}), "mediated": ("ipd-v0", {}),
    "moca": ("ipd-v0", {}), "d3c": ("coins-v0", {}),
    # ppo_shared's main environment is GTB (1000-step episodes, a GPU-sized job); on Escape Room
    # it runs with its MLP (conv=False)
    "ppo_shared": ("escape_room-v0", {}),
}
ALGO_PARAMS = {"ppo_shared": {"conv": False}}


def env_program(env, params, n_envs: int):
    """`run(key, n_steps) -> (obs, reward_sum)`: `n_steps` (traced, so one compile serves every
    length) random steps of `n_envs` environments."""
    act_space = env.action_space(params)
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    sample = jax.vmap(act_space.sample)
    n_actions = getattr(act_space, "n", None) if isinstance(act_space, spaces.Discrete) else None

    def run(key, n_steps):
        key, key_reset = jax.random.split(key)
        obs, state = reset(jax.random.split(key_reset, n_envs), params)

        def body(_, carry):
            obs, state, total, key = carry
            key, key_act, key_step = jax.random.split(key, 3)
            if n_actions is not None:  # one draw for the batch: per-key sampling costs more than ER
                actions = jax.random.randint(key_act, (n_envs, env.num_agents), 0, n_actions)
            else:
                actions = sample(jax.random.split(key_act, n_envs * env.num_agents))
                actions = actions.reshape(n_envs, env.num_agents, *actions.shape[1:])
            obs, state, reward, _, _, _ = step(jax.random.split(key_step, n_envs), state, actions, params)
            return obs, state, total + reward.sum(), key

        obs, _, total, _ = jax.lax.fori_loop(0, n_steps, body, (obs, state, jnp.zeros(()), key))
        return obs, total

    return run


def game_program(game, params, n_envs: int):
    """`run(key, n_steps) -> total`: losses at `n_envs` random joint strategies, `n_steps` times."""
    def run(key, n_steps):
        def body(i, total):
            k = jax.random.fold_in(key, i)
            x = jax.vmap(game.init_strategies, in_axes=(0, None))(jax.random.split(k, n_envs), params)
            # a game whose start is deterministic would otherwise be hoisted out of the loop
            x = x + 1e-3 * jax.random.uniform(k, x.shape)
            return total + jax.vmap(game.losses, in_axes=(0, None))(x, params).sum()

        return jax.lax.fori_loop(0, n_steps, body, jnp.zeros(()))

    return run


def compile_all(fns_args: list[tuple]) -> list[tuple]:
    """`[(compiled, compile_s)]` for `[(fn, args)]`, compiled on one thread per core (XLA releases
    the GIL while compiling); each compile is timed on its own thread."""
    def one(fn_args):
        fn, args = fn_args
        t = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        return compiled, time.perf_counter() - t

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, fns_args))


def timed(compiled, args, repeats: int, target_s: float | None = None):
    """`(best run_s, n_steps, output)` of `compiled(*args)`. With `target_s`, the last argument is a
    step count: a 4-step call gauges the speed and the timed calls run about `target_s` seconds
    (4 to 10,000 steps)."""
    n = None
    if target_s is not None:
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args[:-1], 4))
        per_step = (time.perf_counter() - t) / 4
        n = int(np.clip(target_s / max(per_step, 1e-9), 4, 10_000))
        args = (*args[:-1], n)
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t)
    return best, n, out


def bench_env(env_id: str, n_envs_list, repeats: int, target_s: float) -> dict:
    env, params = jaxmcg.make(env_id)
    game = is_differentiable_game(env)
    row = {"env": env_id, "kind": "game" if game else "env", "results": []}
    if not game:
        row["bytes_per_env"] = env_bytes(env, params)
    args = (jax.random.PRNGKey(0), 4)
    programs = compile_all([((game_program if game else env_program)(env, params, n), args)
                            for n in n_envs_list])
    for n, (compiled, compile_s) in zip(n_envs_list, programs):
        run_s, steps, _ = timed(compiled, args, repeats, target_s)
        row["results"].append({"n_envs": n, "steps": steps, "compile_s": round(compile_s, 3),
                               "run_s": round(run_s, 5), "steps_per_s": n * steps / run_s})
        print(f"  {env_id:28s} n_envs {n:6d}: {n * steps / run_s:14,.0f} steps/s "
              f"(compile {compile_s:.1f} s)", flush=True)
    return row


def bench_algo(name: str, n_envs: int, iterations: int, repeats: int) -> dict:
    env_id, overrides = MAIN_ENV.get(name, ("escape_room-v0", {}))
    row = {"algo": name, "env": env_id, "env_params": overrides, "n_envs": n_envs}
    try:
        algo = jaxmcg.get_algo(name)
        env, params = jaxmcg.make(env_id, **overrides)
        config = algo.Config(**ALGO_PARAMS.get(name, {}))
        if hasattr(algo, "check_env"):
            algo.check_env(env, params, config)
        train = make_train(algo, env, params, config,
                           TrainConfig(n_envs=n_envs, iterations=iterations, log_every=iterations,
                                       eval_envs=min(n_envs, 1024)))
        runner = jax.jit(train.init)(jax.random.PRNGKey(0))
        ((compiled, compile_s),) = compile_all([(train.chunk, (runner,))])
        run_s, _, (_, metrics) = timed(compiled, (runner,), repeats)
        env_steps = float(metrics["env_steps"])
        row.update({"iterations": iterations, "compile_s": round(compile_s, 3), "run_s": round(run_s, 4),
                    "env_steps": env_steps, "steps_per_s": env_steps / run_s,
                    "iterations_per_s": iterations / run_s})
        print(f"  {name:10s} on {env_id:22s}: {env_steps / run_s:12,.0f} steps/s, "
              f"{iterations / run_s:8.1f} it/s (compile {compile_s:.1f} s)", flush=True)
    except Exception as err:  # a benchmark table reports what does not run rather than stopping
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        print(f"  {name:10s}: {row['error']}", flush=True)
    return row


def _commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def markdown(result: dict, other: dict | None = None) -> str:
    """The tables: env steps/s per n_envs (plus `other`'s largest-n_envs column and the ratio),
    bytes per environment, and algorithm training throughput."""
    dev = result["device"]
    ns = max(([r["n_envs"] for r in row["results"]] for row in result["envs"]), key=len, default=[])
    head = (f"Device: {dev['kind']} ({dev['platform']}, {dev['count']} device(s), jax {result['jax']}, "
            f"commit {result['commit']}, {result['date']}). Steps per second (agent-steps count once per "
            "environment step); compile time in seconds at the largest n_envs.\n\n")
    cols = [f"{n:,}" for n in ns]
    extra = other is not None and other.get("envs")
    oname = other["device"]["platform"] if extra else ""
    t = ("| environment | " + " | ".join(cols) + " | compile (s) | state + obs bytes/env |"
         + (f" {oname} at {ns[-1]:,} | {oname}/{dev['platform']} |" if extra else "") + "\n")
    t += "|---|" + "---:|" * (len(cols) + 2 + (2 if extra else 0)) + "\n"
    other_rows = {r["env"]: r for r in other["envs"]} if extra else {}
    for r in result["envs"]:
        if "error" in r:
            t += f"| {r['env']} | {r['error']} |" + " |" * (len(cols) + 1 + (2 if extra else 0)) + "\n"
            continue
        sps = [f"{x['steps_per_s']:,.0f}" for x in r["results"]]
        b = r.get("bytes_per_env")
        size = f"{b['state']:,} + {b['obs']:,}" if b else "(game)"
        line = f"| {r['env']} | " + " | ".join(sps) + f" | {r['results'][-1]['compile_s']:.1f} | {size} |"
        if extra:
            o = other_rows.get(r["env"])
            if o and o["results"]:
                v = o["results"][-1]["steps_per_s"]
                line += f" {v:,.0f} | {v / r['results'][-1]['steps_per_s']:.1f}x |"
            else:
                line += " | |"
        t += line + "\n"
    t += ("\n| algorithm | environment | n_envs | env steps/s | iterations/s | compile (s) |\n"
          "|---|---|---:|---:|---:|---:|\n")
    for r in result["algos"]:
        env = r["env"] + (" " + ",".join(f"{k}={v}" for k, v in r["env_params"].items())
                          if r["env_params"] else "")
        if "error" in r:
            t += f"| {r['algo']} | {env} | {r['n_envs']} | {r['error']} | | |\n"
        else:
            t += (f"| {r['algo']} | {env} | {r['n_envs']} | {r['steps_per_s']:,.0f} | "
                  f"{r['iterations_per_s']:.1f} | {r['compile_s']:.1f} |\n")
    return head + t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n")[0])
    p.add_argument("--n-envs", type=int, nargs="+", default=list(DEFAULT_N_ENVS))
    p.add_argument("--train-envs", type=int, default=None,
                   help="environments per training rollout (default 256 on a CPU, 4096 otherwise)")
    p.add_argument("--train-iterations", type=int, default=2)
    p.add_argument("--envs", nargs="+", help="environment ids (default: every registered one)")
    p.add_argument("--algos", nargs="+", help="algorithms (default: every registered one)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seconds", type=float, default=0.3,
                   help="run time of each timed environment call (the step count adapts)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--merge", help="a result JSON of another platform to compare with (GPU/CPU ratio)")
    args = p.parse_args(argv)
    envs = args.envs or jaxmcg.list_envs()
    algos = args.algos or jaxmcg.list_algos()
    bad = ([e for e in envs if e not in jaxmcg.list_envs()]
           + [a for a in algos if a not in jaxmcg.list_algos()])
    if bad or any(n <= 0 for n in args.n_envs):
        print(f"error: unknown or invalid {bad or args.n_envs}; environments: "
              f"{', '.join(jaxmcg.list_envs())}; algorithms: {', '.join(jaxmcg.list_algos())}",
              file=sys.stderr)
        return 2
    cache = enable_compilation_cache()
    dev = jax.devices()[0]
    train_envs = args.train_envs or (256 if dev.platform == "cpu" else 4096)
    result = {
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count()},
        "jax": jax.__version__, "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()}, "compilation_cache": cache,
        "envs": [], "algos": [],
    }
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, dev.platform)
    other = json.load(open(args.merge)) if args.merge else None

    def write():  # after every row, so an interrupted suite keeps what it measured
        result["total_s"] = round(time.perf_counter() - t0, 1)
        for path, text in ((base + ".json", json.dumps(result, indent=1)),
                           (base + ".md", markdown(result, other))):
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)

    print(f"environments on {dev.device_kind} ({dev.platform}):", flush=True)
    for env_id in envs:
        try:
            result["envs"].append(bench_env(env_id, args.n_envs, args.repeats, args.seconds))
        except Exception as err:  # reported in the table rather than stopping the suite
            result["envs"].append({"env": env_id, "error": f"{type(err).__name__}: "
                                   f"{str(err).splitlines()[0][:160]}", "results": []})
            print(f"  {env_id}: {result['envs'][-1]['error']}", flush=True)
        write()
    print(f"algorithms ({train_envs} environments per rollout):", flush=True)
    for name in algos:
        result["algos"].append(bench_algo(name, train_envs, args.train_iterations, 1))
        write()
    print(f"wrote {base}.json and {base}.md in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
