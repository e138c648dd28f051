"""Bytes per environment, and a clear error with the largest n_envs that fits instead of an OOM."""
import types

import jax
import pytest

import jaxmcg
from experiments import run
from jaxmcg import memory, parallel


@pytest.mark.parametrize("n,state,obs", [(2, 2 * 4 + 4, 2 * 6 * 4), (5, 5 * 4 + 4, 5 * 15 * 4)])
def test_escape_room_bytes_by_hand(n, state, obs):
    """ER(N): positions int32[N] + time int32; observations float32[N, 3N] (one-hot of all agents)."""
    env, params = jaxmcg.make("escape_room-v0", num_agents=n, min_lever_pullers=1)
    assert memory.env_bytes(env, params) == {"state": state, "obs": obs}


def test_every_environment_has_a_size():
    from jaxmcg.differentiable import is_differentiable_game

    for env_id in jaxmcg.list_envs():
        env, params = jaxmcg.make(env_id)
        if not is_differentiable_game(env):
            b = memory.env_bytes(env, params)
            assert b["state"] > 0 and b["obs"] > 0, env_id


def _fake_compiled(temp_bytes):
    stats = types.SimpleNamespace(argument_size_in_bytes=100, output_size_in_bytes=100,
                                  temp_size_in_bytes=temp_bytes, alias_size_in_bytes=100)
    return types.SimpleNamespace(memory_analysis=lambda: stats)


def test_check_fits_names_the_largest_batch(monkeypatch):
    mesh = parallel.make_mesh(1, 1, 1024, 1024)
    monkeypatch.setattr(memory, "device_capacity", lambda device: 1000)
    memory.check_fits(_fake_compiled(900), mesh, 1024)  # 100 + 100 + 900 - 100 fits exactly
    with pytest.raises(MemoryError, match="n_envs=1024 needs .* largest n_envs that fits: about 256"):
        memory.check_fits(_fake_compiled(3900), mesh, 1024)


def test_capacity_of_this_host_is_known():
    assert memory.device_capacity(jax.devices()[0]) > 2**20


def test_cli_stops_with_the_memory_error_before_running(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(memory, "device_capacity", lambda device: 1)
    argv = ["--algo", "pg", "--env", "escape_room", "--n_envs", "8", "--eval-envs", "8",
            "--iterations", "10", "--log-every", "10", "--quiet", "--out", str(tmp_path / "r")]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert "error: n_envs=8 needs" in err and "largest n_envs that fits: about 0" in err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
