"""The command line: outputs, bad input rejected before any compilation, resume = uninterrupted."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.monitoring
import numpy as np
import pytest

from experiments import run
from jaxmcg.checkpoint import Checkpointer

SMALL = ["--algo", "lio", "--env", "escape_room", "--n_envs", "8", "--iterations", "40",
         "--log-every", "10", "--eval-envs", "16", "--seeds", "2", "--quiet"]


@pytest.fixture
def no_compile():
    # gymnax builds a few arrays when imported; import first so that only our compiles count
    import envs  # noqa: F401
    import jaxmcg.algos.lio  # noqa: F401
    import jaxmcg.algos.pg  # noqa: F401

    compiled = []
    listener = lambda event, duration, **kw: compiled.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)
    yield compiled
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("argv,needle", [
    (["--algo", "nope", "--env", "escape_room"], "valid: ac, ac_c, ac_d, "),
    (["--algo", "dcl", "--env", "rpc", "--algo-param", "mega_step=3"],
     "mega_step=3 does not divide the horizon max_steps_in_episode=16; valid mega_step values"),
    (["--algo", "dcl", "--env", "cleanup-7x7"], "DCL's MLPs need flat observations"),
    (["--algo", "dcl", "--env", "public_goods", "--env-param", "n_agents=1"], "n_agents=1"),
    (["--algo", "dcl", "--env", "pd", "--algo-param", "action_pg_mask=x"],
     "action_pg_mask='x' is invalid; valid: agreement, no_agreement, all"),
    (["--algo", "lio", "--env", "cleanup-7x7", "--env-param", "num_agents=3"], "2 spawn points"),
    (["--algo", "lio", "--env", "cleanup-7x7", "--env-param", "apple_respawn_prob=1.5"],
     "apple_respawn_prob=1.5 is invalid: must be in [0, 1]"),
    (["--algo", "lio", "--env", "cleanup-10x10", "--env-param", "threshold_restoration=0.5"],
     "need 0 <= threshold_restoration < threshold_depletion"),
    (["--algo", "lio", "--env", "nope"], "valid: "),
    (["--algo", "lio", "--env", "cleanup"], "'cleanup' is ambiguous; valid: cleanup-10x10, cleanup-7x7"),
    (["--algo", "lio", "--env", "escape_room", "--env-param", "min_lever_pullers=2"], "ER(2, 2)"),
    (["--algo", "lio", "--env", "escape_room", "--n_envs", "0"], "n_envs=0"),
    (["--algo", "lio", "--env", "escape_room", "--algo-param", "nope=1"], "unknown --algo-param 'nope'"),
    (["--algo", "lio", "--env", "escape_room", "--algo-param", "lr=fast"], "lr='fast' is not a valid float"),
    (["--algo", "lio", "--env", "escape_room", "--env-param", "num_agents=x"], "num_agents='x'"),
    (["--preset", "nope"], "unknown preset 'nope'; valid: "),
    (["--algo", "lio", "--env", "escape_room", "--algo-param", "meta_grad=nope"], "meta_grad='nope'"),
    (["--algo", "lio", "--env", "escape_room", "--seeds", "0"], "--seeds=0"),
    (["--algo", "lio", "--env", "escape_room", "--sweep", "hidden=8,16"],
     "--sweep 'hidden' is not a float hyperparameter that can be swept; valid: "),
    (["--algo", "lio", "--env", "escape_room", "--sweep", "lr=fast"], "values must be numbers"),
    (["--algo", "lio", "--env", "escape_room", "--sweep", "lr"], "must look like KEY=V1,V2"),
    (["--algo", "lio", "--env", "escape_room", "--sweep", "env.nope=1"], "valid: "),
    (["--algo", "lio", "--env", "escape_room", "--sweep", "incentive_weight_decay_start=5,-1"],
     "--sweep point {'incentive_weight_decay_start': -1.0}: incentive_weight_decay_start=-1.0 is"),
    (["--algo", "lio", "--env", "cleanup-7x7", "--sweep", "env.apple_respawn_prob=0.5,1.5"],
     "apple_respawn_prob=1.5 is invalid: must be in [0, 1]"),
    (["--algo", "lio", "--env", "escape_room", "--devices", "0"], "--devices='0' is invalid"),
    (["--algo", "lio", "--env", "escape_room", "--devices", f"{len(jax.devices()) + 1}"],
     "device(s) are visible"),
    (["--algo", "lio", "--env", "escape_room", "--num-processes", "2"], "--coordinator"),
])
def test_bad_input_fails_before_compilation(argv, needle, capsys, no_compile, tmp_path):
    assert run.main(argv + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert not [e for e in no_compile if "backend_compile" in e]
    assert not (tmp_path / "r").exists()


def test_a_validated_float_can_be_swept():
    """Config.validate runs inside the traced program too, where a swept value is a tracer: it
    checks only concrete values, and the CLI has checked every point before (above)."""
    from jaxmcg import runner

    args = run.build_parser().parse_args(
        ["--algo", "lio", "--env", "escape_room", "--algo-param", "incentive_weight_decay=0.3",
         "--sweep", "incentive_weight_decay_start=0,5"])
    program = runner.prepare(run.resolve(args))  # traces init and a chunk with the tracers
    assert [p["incentive_weight_decay_start"] for p in program.points] == [0.0, 5.0]


def test_bad_input_exit_code_from_a_shell():
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--algo", "lio", "--env",
                          "escape_room", "--env-param", "min_lever_pullers=2"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "ER(2, 2) is invalid" in out.stderr


def test_help_lists_algorithms_environments_presets():
    text = run.build_parser().format_help()
    for name in ("lio", "pg", "escape_room-v0", "ipd-v0", "lio-er-2-1", "pg-er-2-1"):
        assert name in text


def _params(out_dir):
    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"))
    step = ckpt.latest_step()
    import orbax.checkpoint as ocp

    state = ckpt.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))["state"]
    ckpt.close()
    return step, state


def test_outputs_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    assert run.main(SMALL + ["--out", full, "--target", "-100"]) == 0
    # an interruption after 2 of 4 chunks, with a checkpoint each chunk, then --resume
    assert run.main(SMALL + ["--out", part, "--checkpoint-every", "1"], _stop_after_chunks=2) == 0
    assert not os.path.exists(os.path.join(part, "summary.json"))
    # the resumed run restores into init's shapes without running init (CM3's init trains Stage 1)
    from jaxmcg import runner

    real_prepare, concrete_inits = runner.prepare, []

    def prepare(cfg, **kwargs):
        program = real_prepare(cfg, **kwargs)

        def init():
            out = program.init()
            concrete_inits.append(not isinstance(jax.tree_util.tree_leaves(out)[0], jax.core.Tracer))
            return out
        return dataclasses.replace(program, init=init)

    monkeypatch.setattr(runner, "prepare", prepare)
    assert run.main(["--resume", part, "--quiet"]) == 0
    assert concrete_inits == [False]

    cfg = json.load(open(os.path.join(full, "config.json")))
    from jaxmcg.algos import lio

    assert cfg["run"]["algo_config"]["lr"] == lio.Config().lr and cfg["run"]["train"]["n_envs"] == 8
    assert "jax" in cfg["versions"] and cfg["devices"]
    lines = [json.loads(x) for x in open(os.path.join(full, "metrics.jsonl"))]
    assert len(lines) == 4 * 2 and {"iteration", "seed", "env_steps", "episode_return/mean",
                                    "collective_return"} <= set(lines[0])
    assert [ln["iteration"] for ln in lines if ln["seed"] == 0] == [10, 20, 30, 40]
    summary = json.load(open(os.path.join(full, "summary.json")))
    for key in ("collective_return", "wall_time_s", "steps_per_second", "target"):
        assert key in summary
    assert len(summary["collective_return"]["per_seed"]) == 2

    resumed = [json.loads(x) for x in open(os.path.join(part, "metrics.jsonl"))]
    assert [ln["iteration"] for ln in resumed] == [ln["iteration"] for ln in lines]
    for a, b in zip(lines, resumed):
        assert a["collective_return"] == b["collective_return"] and a["env_steps"] == b["env_steps"]
    (s1, p1), (s2, p2) = _params(full), _params(part)
    assert s1 == s2 == 4
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cleanup_family_defaults():
    """`--algo lio --env cleanup-7x7` gets the thesis' Cleanup LIO (AC inner step, conv nets), and a
    preset or flag still overrides it."""
    resolved = run.resolve(run.build_parser().parse_args(["--algo", "lio", "--env", "cleanup-7x7"]))
    cfg = resolved["algo_config"]
    assert (cfg["learner"], cfg["network"], cfg["hidden"]) == ("ac", "conv", [64, 64])
    assert cfg["separate_cost_optimizer"] is False and cfg["cost_coef"] == 1e-4
    resolved = run.resolve(run.build_parser().parse_args(
        ["--preset", "lio-cleanup-10x10", "--algo-param", "lr=0.5"]))
    assert resolved["algo_config"]["lr"] == 0.5 and resolved["algo_config"]["eps_div"] == 1000.0
    assert run.resolve(run.build_parser().parse_args(
        ["--algo", "lio", "--env", "escape_room"]))["algo_config"]["learner"] == "pg"


def test_commitment_game_family_defaults():
    """`--algo dcl --env grid_game|rpc|public_goods` get Tables 6-7 / D12 and their batch sizes."""
    parse = lambda argv: run.resolve(run.build_parser().parse_args(argv))  # noqa: E731
    grid = parse(["--algo", "dcl", "--env", "grid_game"])
    assert (grid["algo_config"]["hidden"], grid["algo_config"]["num_updates"]) == (32, 30)
    assert (grid["train"]["n_envs"], grid["train"]["iterations"]) == (32, 10_000)  # 512 decisions
    rpc = parse(["--algo", "dcl", "--env", "rpc", "--algo-param", "ic_weight=1"])
    assert rpc["algo_config"]["mega_step"] == 2 and rpc["algo_config"]["ic_weight"] == 1.0
    assert rpc["train"]["n_envs"] == 64  # 64 episodes x 8 decisions
    pgg = parse(["--algo", "dcl", "--env", "public_goods", "--env-param", "n_agents=10"])
    assert pgg["env_params"] == {"n_agents": 10} and pgg["algo_config"]["ic_weight"] == 1.0
    assert parse(["--algo", "dcl", "--env", "pd"])["train"]["n_envs"] == 128


@pytest.mark.slow  # long; `make test-slow`
def test_dcl_runs_on_another_discrete_game_through_the_commitment_wrapper(tmp_path):
    out = tmp_path / "r"
    assert run.main(["--algo", "dcl", "--env", "stag_hunt", "--n_envs", "8", "--iterations", "4",
                     "--log-every", "2", "--eval-envs", "8", "--quiet", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [x["iteration"] for x in lines] == [2, 4]
    assert 0.0 <= lines[-1]["dcl/agreement"] <= 1.0
    assert np.shape(lines[-1]["dcl/commit_probs"]) == (2, 4)


def test_every_preset_resolves_to_a_valid_configuration():
    """Each preset names a registered algorithm and environment and its parameters validate (the
    algorithm's Config, check_env, the training budget), without compiling anything."""
    import jaxmcg
    from experiments.presets import PRESETS

    for name, preset in PRESETS.items():
        warm = ["--init-agents-from", "phase-1"] if preset.get("warm_start") else []
        resolved = run.resolve(run.build_parser().parse_args(["--preset", name, *warm]))
        assert resolved["train"]["iterations"] % resolved["train"]["log_every"] == 0, name
        # a preset is the whole configuration: its algo_params over the Config defaults, nothing
        # from the family defaults (which gave the one-episode MetaGrad presets a zero baseline)
        own = jaxmcg.get_algo(preset["algo"]).Config(**preset.get("algo_params", {}))
        assert resolved["algo_config"] == run._jsonable(dataclasses.asdict(own)), name


def test_unversioned_and_family_names_resolve():
    """`--env gtb` (the issue's spelling) is the only member of its family, `gtb-15x15`."""
    from jaxmcg.registry import resolve_env_id

    assert resolve_env_id("gtb") == "gtb-15x15-v0"
    assert resolve_env_id("escape_room") == "escape_room-v0"
    assert resolve_env_id("cleanup-7x7") == resolve_env_id("cleanup-7x7-v0") == "cleanup-7x7-v0"
