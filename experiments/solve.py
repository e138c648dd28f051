"""Solve a tabular Markov game for its equilibrium of exploring agents (mge.md §1) and print the
policies, values, residuals and uniqueness conditions.

    python -m experiments.solve --solver mge_f --env pursuit-3 --env-param start=I2 --alpha 0.6
    python -m experiments.solve --solver mmce_f --env hw_grid2 --horizon 20
    python -m experiments.solve --solver mge_i --env hw_grid1 --gamma 0.9 --alpha 0.2
    python -m experiments.solve --solver mge_fb --env driving_junction
    python -m experiments.run --algo mge_f --env pursuit-3     # the same, through the run CLI

Solvers: `mge_f` (MGE-F, Alg. 2 with the damped update), `mmce_f` (the same with the log-sum-exp
value, Theorem 4), `mge_i` (MGE-I, Alg. 1), `mge_fb` (the occupancy-measure game, Alg. 3; for
environments with `occupancy_game`). The baselines `q_learning`, `uce_q`, `lce_q` (mge.md §3)
and `nash_q` learn by playing and print the same scores. Finite-horizon solutions and the
baselines are scored by the average return over `--episodes` plays (sampled and greedy), the
paper's Fig. 5 table.
Policies are printed at `--state` (joint state indices) or, by default, at the initial states
when there are at most 8 of them. `--out DIR` also writes `solution.npz` and `summary.json`.
Every input is checked before anything is compiled.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import jaxmcg
import jaxmcg.registry
from experiments.run import UsageError, _parse_value, _split_pairs

SOLVERS = ("mge_f", "mmce_f", "mge_i", "mge_fb")
LEARNERS = ("q_learning", "uce_q", "lce_q", "nash_q")  # Fig. 5 baselines (mge.md §3); Nash-Q ours


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.solve", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--solver", "--algo", dest="solver", required=True, help=", ".join(SOLVERS))
    p.add_argument("--env", required=True)
    p.add_argument("--env-param", "--env_param", action="append", dest="env_param", default=[])
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature (paper: 1)")
    p.add_argument("--alpha", type=float, default=None,
                   help="damping of eq. 14 (default 0.5 for mge_f/mmce_f, 0.2 for mge_i)")
    p.add_argument("--eps", type=float, default=None, help="stopping tolerance (1e-6 in float64, "
                   "1e-5 in float32, mge.md §6 #12)")
    p.add_argument("--max-iter", "--max_iter", type=int, default=10_000, dest="max_iter")
    p.add_argument("--horizon", type=int, default=None, help="decisions T (default: the env's)")
    p.add_argument("--gamma", type=float, default=0.9, help="discount of mge_i and the baselines")
    p.add_argument("--order", default="jacobi", choices=("jacobi", "gs"))
    p.add_argument("--eta", type=float, default=None, help="mge_fb damping (default: the env's)")
    p.add_argument("--iters", type=int, default=None, help="mge_fb outer iterations K")
    p.add_argument("--state", type=int, action="append", default=[], help="joint state to print")
    p.add_argument("--episodes", type=int, default=1000, help="plays scored (paper: 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float32", action="store_true", help="solve in float32 (default float64)")
    p.add_argument("--out")
    return p


def _make(args):
    env_id = jaxmcg.resolve_env_id(args.env)
    defaults = jaxmcg.registry.env_defaults(env_id)
    overrides = {}
    for k, v in _split_pairs(args.env_param, "--env-param").items():
        if k not in defaults:
            raise UsageError(f"unknown --env-param {k!r} for {env_id}; valid: {', '.join(defaults)}")
        overrides[k] = _parse_value(k, v, defaults[k])
    env, params = jaxmcg.make(env_id, **overrides)
    return env_id, env, params


def _check(args):
    if args.solver not in SOLVERS + LEARNERS:
        raise UsageError(f"unknown solver {args.solver!r}; valid: {', '.join(SOLVERS + LEARNERS)}")
    if args.episodes < 1:
        raise UsageError(f"--episodes={args.episodes} is invalid: must be >= 1")
    if not args.beta > 0:
        raise UsageError(f"--beta={args.beta} is invalid: must be > 0")
    if args.alpha is not None and not 0 < args.alpha <= 1:
        raise UsageError(f"--alpha={args.alpha} is invalid: must be in (0, 1]")
    if args.eps is not None and not args.eps > 0:
        raise UsageError(f"--eps={args.eps} is invalid: must be > 0")
    if args.horizon is not None and args.horizon < 1:
        raise UsageError(f"--horizon={args.horizon} is invalid: must be >= 1")


def solve_tabular(args, env_id, env, params) -> dict:
    import jax

    from jaxmcg import mge, tabular

    game = _precision(args, params.game)
    eps = args.eps or (1e-5 if args.float32 else 1e-6)
    horizon = args.horizon or env.horizon(params)
    t0 = time.perf_counter()
    if args.solver == "mge_i":
        alpha = 0.2 if args.alpha is None else args.alpha
        sol = mge.mge_infinite(game, args.gamma, args.beta, alpha, eps, args.max_iter,
                               order=args.order)
        checks = {"theorem1": mge.theorem1(game, args.gamma, args.beta)}
    else:
        alpha = 0.5 if args.alpha is None else args.alpha
        value = "lse" if args.solver == "mmce_f" else "expect"
        sol = mge.mge_finite(game, horizon, args.beta, alpha, eps, args.max_iter, value, args.order)
        cert = mge.certificate(game, sol, args.beta)
        checks = {"theorem2": mge.theorem2(game, horizon, args.beta),
                  "certificate": {"value": np.asarray(cert["value"]).tolist(),
                                  "holds": np.asarray(cert["holds"]).tolist()}}
    sol = jax.tree_util.tree_map(np.asarray, sol)
    wall = time.perf_counter() - t0

    names = env.action_names or tuple(f"a{k}" for k in range(game.num_actions))
    agents = env.agent_names or tuple(f"agent {i}" for i in range(game.num_agents))
    init = np.nonzero(np.asarray(game.init_dist))[0]
    states = args.state or (init.tolist() if len(init) <= 8 else [])
    infinite = args.solver == "mge_i"
    print(f"{args.solver} on {env_id}: beta={args.beta} alpha={alpha} eps={eps:g} order={args.order}"
          + (f" gamma={args.gamma}" if infinite else f" T={horizon}")
          + f" ({'float32' if args.float32 else 'float64'}, {wall:.2f} s with compile)")
    iters, res, conv = (np.atleast_1d(x) for x in (sol.iterations, sol.residual, sol.converged))
    print("stage  iterations  residual   converged" + ("" if infinite else "  certificate L"))
    for t in range(len(iters)):
        cert_t = "" if infinite else f"  {checks['certificate']['value'][t]:.3g}"
        print(f"{t:5d}  {int(iters[t]):10d}  {float(res[t]):.2e}  {'yes' if conv[t] else 'NO':>9}"
              + cert_t)
    for name, c in checks.items():
        if "bound" in c:
            print(f"{name}: max |R| = {c['value']:.4g} vs bound {c['bound']:.4g} -> "
                  f"{'holds' if c['holds'] else 'violated'}"
                  + ("" if c["holds"] else f" ({c['value'] / max(c['bound'], 1e-300):.0f}x)"))
    if not infinite:
        ok = all(checks["certificate"]["holds"])
        print(f"certificate (max_x L^tau_x < 1 at every stage): {'holds' if ok else 'violated'}; "
              "without it the equilibrium found may not be unique (mge.md §1.5)")
    for s in states:
        print(f"\n{env.describe_state(s)} (joint state {s})" + ("" if infinite else ", tau = 0"))
        for i in range(game.num_agents):
            pi = sol.pi[i, s] if infinite else sol.pi[0, i, s]
            v = sol.value[i, s] if infinite else sol.value[0, i, s]
            mask = np.asarray(game.action_mask[i, s])
            shown = "  ".join(f"{n} {p:.3f}" for n, p, ok in zip(names, pi, mask) if ok)
            print(f"  {agents[i]:>10}: {shown}   value {v:.4f}")
    scores = None if infinite else _scores(args, game, tabular.joint_policy(sol.pi), horizon, agents)
    return {"solver": args.solver, "env": env_id, "beta": args.beta, "alpha": alpha, "eps": eps,
            "horizon": None if infinite else horizon, "gamma": args.gamma if infinite else None,
            "iterations": iters.tolist(), "residual": res.tolist(), "converged": conv.tolist(),
            "checks": checks, "scores": scores, "wall_time_s": wall}, sol


def _precision(args, game):
    """The game's tables in float64 unless `--float32` (main enables x64 to match)."""
    import jax

    if args.float32:
        return game
    return jax.tree_util.tree_map(
        lambda x: x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x, game)


def _scores(args, game, joint_policy, horizon, agents) -> dict:
    """Average per-agent return over `--episodes` plays, sampled and greedy (ties at random)."""
    import jax

    from jaxmcg.tabular_learners import evaluate

    out = {}
    for mode in ("sampled", "greedy"):
        key = jax.random.PRNGKey(args.seed)
        out[mode] = np.asarray(evaluate(key, game, joint_policy, horizon, args.episodes,
                                        greedy=mode == "greedy")).tolist()
        shown = ", ".join(f"{a} {v:.3f}" for a, v in zip(agents, out[mode]))
        print(f"average score over {args.episodes} {mode} plays: {shown}")
    return out


def learn_baseline(args, env_id, env, params) -> dict:
    import jax

    from jaxmcg import tabular_learners as tl

    game = params.game
    horizon = args.horizon or env.horizon(params)
    key = jax.random.PRNGKey(args.seed)
    t0 = time.perf_counter()
    if args.solver == "q_learning":
        result = tl.independent_q_learning(key, game, tl.QLearningConfig(gamma=args.gamma))
    elif args.solver == "nash_q":
        from jaxmcg import nash_q

        result = nash_q.nash_q(key, game, nash_q.NashQConfig(gamma=args.gamma))
    else:
        objective = "utilitarian" if args.solver == "uce_q" else "libertarian"
        result = tl.ce_q(key, game, tl.CEQConfig(objective=objective, gamma=args.gamma))
    result = jax.tree_util.tree_map(np.asarray, result)
    wall = time.perf_counter() - t0
    agents = env.agent_names or tuple(f"agent {i}" for i in range(game.num_agents))
    print(f"{args.solver} on {env_id}: gamma={args.gamma}, seed {args.seed} ({wall:.2f} s with compile)")
    scores = _scores(args, game, result.joint_policy, horizon, agents)
    return {"solver": args.solver, "env": env_id, "gamma": args.gamma, "seed": args.seed,
            "horizon": horizon, "scores": scores, "wall_time_s": wall}, result


def solve_fb(args, env_id, env, params) -> dict:
    import jax

    from jaxmcg import mge_fb

    og = env.occupancy_game(params)
    defaults = getattr(env, "solver_defaults", {})
    kw = {"beta": args.beta}
    for name, value in (("eta", args.eta), ("num_iters", args.iters), ("damping", None)):
        if value is not None:
            kw[name] = value
        elif name in defaults:
            kw[name] = defaults[name]
    horizon = args.horizon or env.horizon(params)
    t0 = time.perf_counter()
    sol = jax.tree_util.tree_map(np.asarray, mge_fb.mge_fb(og, horizon, **kw))
    wall = time.perf_counter() - t0
    res = np.asarray(sol.residual)
    print(f"mge_fb on {env_id}: T={horizon} {kw} ({wall:.2f} s with compile)")
    print(f"residual: first sweep {res[0]:.3g}, last {res[int(sol.iterations) - 1]:.3g}")
    names = env.action_names if getattr(env, "action_names", ()) else None
    for i in range(og.x0.shape[0]):
        pi = sol.pi[i, 0, int(og.x0[i])]
        labels = names or tuple(f"a{k}" for k in range(len(pi)))
        print(f"  agent {i} at cell {int(og.x0[i])}, tau = 0: "
              + "  ".join(f"{n} {p:.3f}" for n, p in zip(labels, pi)))
    print(f"converged: {'yes' if bool(sol.converged) else 'NO'} after {int(sol.iterations)} sweeps; "
          f"Theorem 3: {mge_fb.theorem3_condition(og, horizon, args.beta)}")
    return {"solver": "mge_fb", "env": env_id, "horizon": horizon, **kw,
            "residual_last": float(res[int(sol.iterations) - 1]), "converged": bool(sol.converged),
            "wall_time_s": wall}, sol


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        env_id, env, params = _make(args)
        if args.solver == "mge_fb" and not hasattr(env, "occupancy_game"):
            raise UsageError(f"mge_fb needs an occupancy-measure game; {env_id} has none "
                             "(valid: driving_junction)")
        if args.solver != "mge_fb" and not hasattr(params, "game"):  # solvers and baselines
            raise UsageError(f"{args.solver} needs a tabular Markov game; {env_id} is not one "
                             "(valid: pursuit-2, pursuit-3, rabbit_hole, hw_grid1, hw_grid2)")
        for s in args.state:
            if args.solver != "mge_fb" and not 0 <= s < params.game.num_states:
                raise UsageError(f"--state={s} is invalid: joint states are 0..{params.game.num_states - 1}")
    except (UsageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import jax

    previous = jax.config.read("jax_enable_x64")
    # float64 solves; the learning baselines run in float32 as their tests do. Restored afterwards:
    # main() may run in-process
    jax.config.update("jax_enable_x64", not args.float32 and args.solver not in LEARNERS)
    try:
        solve = {"mge_fb": solve_fb, **{k: learn_baseline for k in LEARNERS}}.get(args.solver,
                                                                             solve_tabular)
        summary, sol = solve(args, env_id, env, params)
    finally:
        jax.config.update("jax_enable_x64", previous)
    if args.out:
        from jaxmcg.runner import atomic_write_json

        os.makedirs(args.out, exist_ok=True)
        np.savez(os.path.join(args.out, "solution.npz"),
                 **{k: np.asarray(v) for k, v in vars(sol).items()})
        atomic_write_json(os.path.join(args.out, "summary.json"), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
