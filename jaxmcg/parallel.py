"""Devices, meshes and processes: how a training run is spread over accelerators and hosts.

A run trains `R = points x seeds` independent learners (see `jaxmcg.sweep`), each on a batch of
`n_envs` environments. The mesh has two axes: `runs` splits the learners and `envs` splits each
learner's environment batch. Learners are split first (no communication at all); the devices left
over split the environments, and XLA's SPMD partitioner inserts the all-reduces that batch means
and gradients then need. The programs are the single-device programs plus sharding annotations, so
results agree with one device up to the order of floating-point sums.
"""
from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RUNS, ENVS = "runs", "envs"


def parse_devices(spec: str | int | None) -> int | None:
    """`"all"` -> None (every device); a positive integer string or int -> that count."""
    if spec is None or spec == "all":
        return None
    try:
        n = int(spec)
    except (TypeError, ValueError):
        raise ValueError(f"--devices={spec!r} is invalid: give a positive integer or 'all'") from None
    if n <= 0:
        raise ValueError(f"--devices={spec!r} is invalid: give a positive integer or 'all'")
    return n


def check_layout(n_devices: int, n_runs: int, n_envs: int, eval_envs: int) -> tuple[int, int]:
    """`(runs, envs)` mesh shape for `n_devices`: as many devices on learners as divide `n_runs`,
    the rest on environments, which must then divide both batch sizes. Raises ValueError naming
    the sizes that do not divide (checked before anything is compiled)."""
    runs = math.gcd(n_runs, n_devices)
    envs = n_devices // runs
    for name, value in (("n_envs", n_envs), ("eval_envs", eval_envs)):
        if value % envs:
            raise ValueError(
                f"{name}={value} cannot be split over {envs} devices ({n_devices} devices, "
                f"{runs} of them taken by the {n_runs} runs); use a multiple of {envs} or "
                f"fewer --devices"
            )
    return runs, envs


def make_mesh(n_devices: int | None, n_runs: int, n_envs: int, eval_envs: int) -> Mesh:
    """The `(runs, envs)` mesh over the first `n_devices` global devices (None: all of them)."""
    available = jax.devices()
    n = len(available) if n_devices is None else n_devices
    if n > len(available):
        raise ValueError(f"--devices={n} but only {len(available)} device(s) are visible: "
                         f"{', '.join(str(d) for d in available)}")
    runs, envs = check_layout(n, n_runs, n_envs, eval_envs)
    return Mesh(np.asarray(available[:n]).reshape(runs, envs), (RUNS, ENVS))


def runs_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis (the runs) split over the mesh's `runs` axis."""
    return NamedSharding(mesh, PartitionSpec(RUNS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def env_batch_constraint(mesh: Mesh | None):
    """`constrain(tree)`: pins every leaf's leading (environment) axis to the mesh's `envs` axis,
    or None when that axis has one device. Used inside `vmap(..., spmd_axis_name=RUNS)`, so the
    runs axis keeps its own split."""
    if mesh is None or mesh.shape[ENVS] == 1:
        return None
    sharding = NamedSharding(mesh, PartitionSpec(ENVS))

    def constrain(tree):
        return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    return constrain


def distributed_settings(coordinator: str | None, num_processes: int | None,
                         process_id: int | None) -> dict | None:
    """Arguments of `jax.distributed.initialize` from the flags, else from the environment
    (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); None for one process."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator is None and num_processes in (None, 1):
        return None
    if coordinator is None or num_processes is None or process_id is None:
        raise ValueError(
            f"multi-process runs need all of --coordinator (got {coordinator!r}), --num-processes "
            f"(got {num_processes!r}) and --process-id (got {process_id!r}), or the variables "
            "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id={process_id} is invalid for --num-processes={num_processes}: "
                         f"valid ids are 0..{num_processes - 1}")
    return {"coordinator_address": coordinator, "num_processes": num_processes,
            "process_id": process_id}


def initialize(settings: dict | None) -> None:
    """Join the cluster described by `settings` (no-op for one process or if already joined)."""
    if settings is not None and not jax.distributed.is_initialized():
        jax.distributed.initialize(**settings)


def is_main_process() -> bool:
    """Only process 0 writes run files (metrics, summaries); every process checkpoints its shards."""
    return jax.process_index() == 0
