"""Scale: sweeps in one program, runs split over devices and over processes give the single-device
numbers (issue 8's acceptance), and the layout/sweep helpers' contracts."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import run
from jaxmcg import parallel, sweep
from jaxmcg.algos import lio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--algo", "lio", "--env", "escape_room", "--n_envs", "8", "--eval-envs", "8",
        "--iterations", "20", "--log-every", "10", "--quiet"]


def _metrics(path):
    return [json.loads(x) for x in open(os.path.join(path, "metrics.jsonl"))]


def test_sweep_points_equal_separate_runs(tmp_path):
    """Each point of a 2-rate x 2-seed sweep (one program) reproduces a run with that rate alone."""
    pg = ["--algo", "pg"] + TINY[2:]  # any algorithm; PG compiles fastest
    out = str(tmp_path / "sweep")
    assert run.main(pg + ["--seeds", "2", "--sweep", "lr=1e-2,3e-1", "--out", out]) == 0
    alone = str(tmp_path / "alone")
    assert run.main(pg + ["--seeds", "2", "--algo-param", "lr=3e-1", "--out", alone]) == 0
    point = _metrics(os.path.join(out, "point-001"))
    ref = _metrics(alone)
    assert [(x["seed"], x["iteration"]) for x in point] == [(x["seed"], x["iteration"]) for x in ref]
    np.testing.assert_allclose([x["collective_return"] for x in point],
                               [x["collective_return"] for x in ref], rtol=0, atol=1e-5)
    other = _metrics(os.path.join(out, "point-000"))
    assert [x["collective_return"] for x in other] != [x["collective_return"] for x in point]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [p["point"] for p in summary["points"]] == [{"lr": 1e-2}, {"lr": 3e-1}]
    cfg = json.load(open(os.path.join(out, "point-001", "config.json")))["run"]
    assert cfg["algo_config"]["lr"] == 3e-1 and cfg["point"] == {"lr": 3e-1}


def test_grid_is_the_cartesian_product_point_major():
    points = sweep.grid_points({"lr": [1.0, 2.0], "env.p": [0.1, 0.2, 0.3]})
    assert len(points) == 6 and points[1] == {"lr": 1.0, "env.p": 0.2}
    arrays = sweep.point_arrays(points, n_seeds=2)
    np.testing.assert_allclose(arrays["lr"], [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    assert sweep.grid_points({}) == [{}] and sweep.point_arrays([{}], 3) == {}


def test_rebind_reaches_nested_configs_and_leaves_the_rest():
    inner = {"state": [lio.Config(lr=1.0)], "n": 3}
    out = sweep.rebind(inner, {"lr": 5.0})
    assert inner["state"][0].lr == 1.0  # not mutated
    assert sweep.rebind(inner, {}) is inner

    from flax import struct

    @struct.dataclass
    class S:
        x: jax.Array
        config: lio.Config = struct.field(pytree_node=False)
        inner: object = None

    s = S(jnp.zeros(2), lio.Config(lr=1.0), S(jnp.ones(1), lio.Config(lr=2.0)))
    t = sweep.rebind(s, {"lr": 7.0})
    assert t.config.lr == 7.0 and t.inner.config.lr == 7.0 and t.config.entropy_coef == s.config.entropy_coef
    assert out == inner  # plain containers without a config come back equal


def test_a_value_used_at_trace_time_cannot_be_swept():
    def init(hp, key):
        return jnp.zeros(3) * hp["lr"]

    def chunk(hp, runner):
        if hp["lr"] > 0:  # a Python branch on the swept value
            return runner, {}
        return runner, {}

    with pytest.raises(ValueError, match="cannot be swept in one program"):
        sweep.check_traceable(init, chunk, {"lr": np.ones(2, np.float32)}, (2,))


@pytest.mark.parametrize("n_devices,n_runs,n_envs,expect", [
    (4, 4, 8, (4, 1)), (4, 2, 8, (2, 2)), (4, 1, 8, (1, 4)), (4, 3, 8, (1, 4)), (1, 5, 3, (1, 1))])
def test_layout_puts_devices_on_runs_first(n_devices, n_runs, n_envs, expect):
    assert parallel.check_layout(n_devices, n_runs, n_envs, n_envs) == expect


def test_layout_rejects_batches_that_do_not_split():
    with pytest.raises(ValueError, match="n_envs=6 cannot be split over 4 devices"):
        parallel.check_layout(4, 1, 6, 8)
    with pytest.raises(ValueError, match="eval_envs=2 cannot be split over 4 devices"):
        parallel.check_layout(4, 1, 8, 2)


def test_distributed_settings_from_flags_or_environment(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.distributed_settings(None, None, None) is None
    assert parallel.distributed_settings("h:1", 2, 1)["process_id"] == 1
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:2")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "3")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    assert parallel.distributed_settings(None, None, None) == {
        "coordinator_address": "h:2", "num_processes": 3, "process_id": 2}
    with pytest.raises(ValueError, match="valid ids are 0..2"):
        parallel.distributed_settings(None, None, 5)


_SHARDED = textwrap.dedent("""
    import sys
    from experiments import run
    tiny = sys.argv[1].split()
    for devices, out in (("1", "one"), ("4", "four")):
        assert run.main(tiny + ["--devices", devices, "--out", sys.argv[2] + "/" + out]) == 0
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_devices_and_processes_give_the_single_device_result(tmp_path):
    """LIO on ER(2,1), 2 seeds: one device; 4 forced CPU devices (2 on seeds x 2 on environments);
    and 2 processes on 127.0.0.1 with 2 devices each (the same 2 x 2 mesh over hosts). Final
    collective returns agree within 1e-5."""
    args = " ".join(TINY + ["--seeds", "2"])
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAXMCG_COMPILATION_CACHE": "0"}
    single = subprocess.Popen([sys.executable, "-c", _SHARDED, args, str(tmp_path)], cwd=ROOT, env=env)
    env2 = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args.split(), "--devices", "all", "--out",
         str(tmp_path / "hosts"), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i)], cwd=ROOT, env=env2, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(2)]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert single.wait(timeout=600) == 0
    assert all(p.returncode == 0 for p in procs), outs
    final = {}
    for name in ("one", "four", "hosts"):
        lines = _metrics(str(tmp_path / name))
        final[name] = [x["collective_return"] for x in lines if x["iteration"] == 20]
        assert len(final[name]) == 2
    mesh = json.load(open(tmp_path / "four" / "config.json"))["mesh"]
    assert mesh == {"runs": 2, "envs": 2}
    hosts = json.load(open(tmp_path / "hosts" / "config.json"))
    assert hosts["processes"] == 2 and hosts["mesh"] == {"runs": 2, "envs": 2}
    np.testing.assert_allclose(final["four"], final["one"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(final["hosts"], final["one"], rtol=0, atol=1e-5)
