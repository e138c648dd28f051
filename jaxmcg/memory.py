"""Memory per environment, and a clear error instead of an out-of-memory crash.

`env_bytes` sizes one environment's state and observations from their shapes (nothing runs).
`check_fits` reads XLA's own account of a compiled program (arguments, outputs and temporaries per
device) and compares it with what the device can hold, before the program first runs.
"""
from __future__ import annotations

import os

import jax
import numpy as np


def _nbytes(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize
                   for x in jax.tree_util.tree_leaves(tree)))


def env_bytes(env, params) -> dict[str, int]:
    """Bytes of one environment's `state` and of its observations `obs` (all agents), from
    `jax.eval_shape` of `reset`. A rollout of T steps keeps about T x (obs + state) per env."""
    obs, state = jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)
    return {"state": _nbytes(state), "obs": _nbytes(obs)}


def device_capacity(device) -> int | None:
    """Bytes one device may use: the allocator's limit on an accelerator; on a CPU, the host's
    available memory shared by its devices. None where neither is known."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
        return available // max(1, len(jax.local_devices(backend="cpu")))
    return None


def program_bytes(compiled) -> int | None:
    """Peak bytes per device of a compiled program by XLA's estimate (arguments + outputs +
    temporaries, less what is aliased), or None if the backend gives no estimate."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, jax.errors.JaxRuntimeError):
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def check_fits(compiled, mesh, n_envs: int) -> None:
    """Raise MemoryError naming the largest `n_envs` that fits (scaling the estimate linearly in
    the environment batch, an upper bound on the need) if `compiled` cannot fit on this process's first device
    of `mesh`."""
    need = program_bytes(compiled)
    device = mesh.local_devices[0]  # another process's devices cannot be queried
    capacity = device_capacity(device)
    if need is None or capacity is None or need <= capacity:
        return
    split = mesh.shape["envs"]
    largest = int(n_envs * capacity / need) // split * split
    raise MemoryError(
        f"n_envs={n_envs} needs about {need / 2**30:.2f} GiB per device but "
        f"{device} has {capacity / 2**30:.2f} GiB; largest n_envs that fits: about "
        f"{largest} (or use more --devices, fewer --seeds or a shorter sweep)")
