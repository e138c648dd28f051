"""Registries of environments and algorithms.

Entries map names to `"module:attribute"` strings imported on demand, so the core never imports
`envs` or `jaxmcg.algos` at module level and users can register their own entries the same way.
Environment ids are versioned (`escape_room-v0`); an unversioned name resolves to its latest version.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

_ENVS: dict[str, tuple[str, dict[str, Any]]] = {}
_ALGOS: dict[str, str] = {}
_VERSIONED = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_env(env_id: str, entry_point: str, **kwargs: Any) -> None:
    """Register `env_id` (must end in `-vN`) as `entry_point(**kwargs)`."""
    if not _VERSIONED.match(env_id):
        raise ValueError(f"environment id {env_id!r} must be versioned, e.g. '{env_id}-v0'")
    _ENVS[env_id] = (entry_point, kwargs)


def register_algo(name: str, module: str) -> None:
    """Register an algorithm module (with `Config`, `init`, `act`, `update`) under `name`."""
    _ALGOS[name] = module


def list_envs() -> list[str]:
    """All registered (versioned) environment ids."""
    _ensure_builtin()
    return sorted(_ENVS)


def list_algos() -> list[str]:
    _ensure_builtin()
    return sorted(_ALGOS)


def resolve_env_id(env_id: str) -> str:
    """Map an unversioned name to its latest version, and a family name with a single member
    (`gtb` for `gtb-15x15`) to that member's; raise ValueError listing valid ids."""
    _ensure_builtin()
    if env_id in _ENVS:
        return env_id
    names = {m["name"] for k in _ENVS if (m := _VERSIONED.match(k))}
    if env_id not in names:
        family = sorted({n for n in names if n.startswith(env_id + "-")})
        if len(family) > 1:
            raise ValueError(f"environment {env_id!r} is ambiguous; valid: {', '.join(family)}")
        if not family:
            raise ValueError(f"unknown environment {env_id!r}; valid: {', '.join(list_envs())}")
        env_id = family[0]
    versions = [
        (int(m["version"]), k) for k in _ENVS if (m := _VERSIONED.match(k)) and m["name"] == env_id
    ]
    return max(versions)[1]


def make(env_id: str, **overrides: Any):
    """Build `(env, params)` for `env_id`.

    Keyword overrides go to the environment's constructor when they name one of its arguments
    (static choices such as the number of agents) and otherwise replace fields of its `EnvParams`.
    Unknown keys and impossible values raise ValueError before anything is compiled.
    """
    entry_point, kwargs = _ENVS[resolve_env_id(env_id)]
    cls = _load(entry_point)
    ctor_args = set(inspect.signature(cls).parameters)
    ctor = {**kwargs, **{k: v for k, v in overrides.items() if k in ctor_args}}
    env = cls(**ctor)
    params = env.default_params
    param_fields = {f.name for f in dataclasses.fields(params)}
    rest = {k: v for k, v in overrides.items() if k not in ctor_args}
    unknown = sorted(set(rest) - param_fields)
    if unknown:
        valid = sorted(ctor_args | param_fields)
        raise ValueError(f"unknown parameter(s) {unknown} for {env_id!r}; valid: {', '.join(valid)}")
    params = params.replace(**rest)
    env.validate_params(params)
    return env, params


def env_defaults(env_id: str) -> dict[str, Any]:
    """Every key `make(env_id, ...)` accepts, with its default: constructor arguments (with the
    registered values) and `EnvParams` fields."""
    entry_point, kwargs = _ENVS[resolve_env_id(env_id)]
    cls = _load(entry_point)
    out = {k: p.default for k, p in inspect.signature(cls).parameters.items()
           if p.default is not inspect.Parameter.empty}
    out.update(kwargs)
    params = cls(**kwargs).default_params
    out.update({f.name: getattr(params, f.name) for f in dataclasses.fields(params)})
    return out


def get_algo(name: str):
    """Import and return the algorithm module registered as `name`."""
    _ensure_builtin()
    if name not in _ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(list_algos())}")
    return importlib.import_module(_ALGOS[name])


_BUILTIN_LOADED = False


def _ensure_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        for name in ("pg", "ac", "pg_d", "pg_c", "lio"):
            _ALGOS.setdefault(name, f"jaxmcg.algos.{name}")
        for name in ("ac_d", "ac_c"):  # thesis Cleanup give-reward AC baselines (§2.9)
            _ALGOS.setdefault(name, f"jaxmcg.algos.{name}")
        for name in ("ia", "cen"):  # thesis Cleanup inequity-aversion and centralized baselines (§2.9)
            _ALGOS.setdefault(name, f"jaxmcg.algos.{name}")
        for name in ("dcl", "ippo", "mediated", "moca"):  # commitment games (dcl.md §2, §4.1-§4.3)
            _ALGOS.setdefault(name, f"jaxmcg.algos.{name}")
        _ALGOS.setdefault("d3c", "jaxmcg.algos.d3c")  # d3c.md §1
        for name in ("metagrad", "dual_rl", "amd"):  # thesis ch. 6 incentive designers (§3)
            _ALGOS.setdefault(name, f"jaxmcg.algos.{name}")
        _ALGOS.setdefault("ppo_shared", "jaxmcg.algos.ppo_shared")  # GTB agents (gtb.md §8.2)
        for name in ("cm3", "iac", "coma", "qmix", "iql", "hsd"):  # thesis ch. 3-4 (cm3-hsd.md)
            _ALGOS.setdefault(name, f"jaxmcg.algos.{name}")
        try:  # the envs package registers itself; optional so jaxmcg works without it
            importlib.import_module("envs")
        except ModuleNotFoundError as err:
            if err.name != "envs":
                raise
