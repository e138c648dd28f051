"""Hyperparameter grids trained inside one compiled program.

A sweep point is a dict of float hyperparameters: algorithm `Config` fields by name (`lr`), and
environment `EnvParams` fields as `env.NAME`. The training functions are rebuilt inside the trace
with each point's values as traced scalars (`dataclasses.replace(config, lr=tracer)`), so one
program `vmap`s over the grid and its seeds together. Learning rates need no
`optax.inject_hyperparams`: the algorithms build their optimisers from the config inside the trace,
where the rate is then an array like any other. A field used as a Python value at trace time
(a network width, a loop count, an `if` on it) cannot be swept; `check_traceable` says so before
anything is compiled.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

ENV_PREFIX = "env."


def parse_sweep(pairs: list[str], config, env_params) -> dict[str, list[float]]:
    """`["lr=1e-3,3e-3", "env.p=0.1,0.2"]` -> `{"lr": [...], "env.p": [...]}`, validated: each key
    is a float field of the algorithm's Config (or `env.` + a float field of EnvParams), each value
    list has at least one number and no key repeats."""
    out: dict[str, list[float]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ValueError(f"--sweep {pair!r} must look like KEY=V1,V2,...")
        if key in out:
            raise ValueError(f"--sweep {key!r} is given twice; put all its values in one flag")
        target, name = (env_params, key[len(ENV_PREFIX):]) if key.startswith(ENV_PREFIX) else (config, key)
        floats = sorted(f.name for f in dataclasses.fields(target)
                        if isinstance(getattr(target, f.name), float))
        shown = floats if target is config else [ENV_PREFIX + f for f in floats]
        if name not in floats:
            raise ValueError(f"--sweep {key!r} is not a float hyperparameter that can be swept; "
                             f"valid: {', '.join(shown)}")
        try:
            out[key] = [float(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--sweep {pair!r}: values must be numbers separated by commas") from None
    return out


def concrete(*values) -> bool:
    """True when no leaf of `values` is a tracer. A `Config.validate` called inside a traced program
    sees swept values as tracers; it checks only the concrete ones (`experiments.run` has checked
    every point's values before tracing)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(values))


def grid_points(sweep: dict[str, list[float]]) -> list[dict[str, float]]:
    """The Cartesian product, last key fastest; `[{}]` (one point, nothing swept) when empty."""
    keys = list(sweep)
    return [dict(zip(keys, values)) for values in itertools.product(*(sweep[k] for k in keys))]


def point_arrays(points: list[dict[str, float]], n_seeds: int) -> dict[str, np.ndarray]:
    """Per-run values `[points * seeds]` (point-major), float32: run `p * n_seeds + s` is point p
    with seed s."""
    if not points or not points[0]:
        return {}
    return {k: np.repeat(np.asarray([p[k] for p in points], np.float32), n_seeds) for k in points[0]}


def apply(hp: dict, config, env_params):
    """`(config, env_params)` with the point's (possibly traced) values substituted."""
    algo_hp, env_hp = algo_values(hp), env_values(hp)
    if algo_hp:
        config = dataclasses.replace(config, **algo_hp)
    if env_hp:
        env_params = env_params.replace(**env_hp)
    return config, env_params


def algo_values(hp: dict) -> dict:
    """The algorithm-Config part of a point (without the `env.` keys)."""
    return {k: v for k, v in hp.items() if not k.startswith(ENV_PREFIX)}


def env_values(hp: dict) -> dict:
    """The EnvParams part of a point, keyed by field name (the `env.` prefix removed)."""
    return {k[len(ENV_PREFIX):]: v for k, v in hp.items() if k.startswith(ENV_PREFIX)}


def rebind(tree, values: dict):
    """`tree` with `values` written into every algorithm `config` it carries.

    Algorithm states keep their Config as static pytree metadata. The swept values must enter each
    traced program as that program's own tracers, and leave it as plain floats (a tracer in the
    metadata would leak into the next program), so the runner rebinds them on the way in and out.
    """
    if not values:
        return tree
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes = {}
        for f in dataclasses.fields(tree):
            value = getattr(tree, f.name)
            if f.name == "config" and all(hasattr(value, k) for k in values):
                changes[f.name] = dataclasses.replace(value, **values)
            elif isinstance(value, (tuple, list, dict)) or dataclasses.is_dataclass(value):
                new = rebind(value, values)
                if new is not value:
                    changes[f.name] = new
        return dataclasses.replace(tree, **changes) if changes else tree
    if isinstance(tree, (tuple, list)):
        items = [rebind(v, values) for v in tree]
        if all(a is b for a, b in zip(items, tree)):
            return tree
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    if isinstance(tree, dict):
        items = {k: rebind(v, values) for k, v in tree.items()}
        return tree if all(items[k] is tree[k] for k in tree) else items
    return tree


def check_traceable(init_fn, chunk_fn, hp: dict[str, np.ndarray], key_shape) -> None:
    """Trace (not compile) `init_fn(hp, key)` and `chunk_fn(hp, runner)` with the swept values as
    tracers; a field used as a Python value raises ValueError naming the swept keys."""
    if not hp:
        return
    one = {k: jnp.asarray(v[0]) for k, v in hp.items()}
    try:
        runner = jax.eval_shape(init_fn, one, jax.ShapeDtypeStruct(key_shape, jnp.uint32))
        jax.eval_shape(chunk_fn, one, runner)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerIntegerConversionError, TypeError) as err:
        raise ValueError(f"--sweep {', '.join(hp)}: this algorithm uses the value at trace time "
                         f"(as a shape, a loop count or a Python branch), so it cannot be swept "
                         f"in one program; run separate jobs instead ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})") from None
