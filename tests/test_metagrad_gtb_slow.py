"""Long MetaGrad-on-GTB checks (make test-slow): the command line with the presets, the curriculum's
Phase 1 -> Phase 2 included."""
import json

import numpy as np
import pytest
from tax_design_checks import TINY_CLI as TINY

from experiments import run

pytestmark = pytest.mark.slow


def test_cli_preset_runs(tmp_path):
    """`python -m experiments.run --preset metagrad-gtb` with tiny networks and budget: two logged
    points with the designer's return, the G5 welfare figures and the §9.3 tax statistics; the
    same family from `--algo metagrad --env gtb-15x15` without a preset."""
    for argv in (["--preset", "metagrad-gtb"], ["--algo", "metagrad", "--env", "gtb-15x15"]):
        out = tmp_path / argv[1]
        assert run.main(argv + TINY + ["--out", str(out)]) == 0
        lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
        assert [x["iteration"] for x in lines] == [1, 2]
        last = lines[-1]
        assert len(last["tax/rates"]) == 7 and len(last["tax/paid_by_skill"]) == 4
        assert np.isfinite(last["designer_return"]) and last["gtb/welfare_objective"] > 0
        assert np.shape(last["action_frequency"]) == (4, 50)
        assert "metagrad/outer_loss" in last and "ppo_shared/entropy" in last
        summary = json.load(open(out / "summary.json"))
        assert "designer_return" in summary


def test_cli_curriculum_runs(tmp_path):
    """Phase 1 (`ppo-gtb-free_market`) then each Phase-2 preset with `--init-agents-from` it, tiny
    networks (the agents' the same in both phases): the runs finish, and MetaGrad's logs its rates."""
    phase1 = tmp_path / "phase1"
    agents = ["--quiet", "--algo-param", "conv=false", "--algo-param", "hidden=16"]
    assert run.main(["--preset", "ppo-gtb-free_market", "--seeds", "2", *TINY[:6], *agents,
                     "--out", str(phase1)]) == 0
    for preset in ("metagrad-gtb-curriculum", "dual_rl-gtb-curriculum"):
        out = tmp_path / preset
        assert run.main(["--preset", preset, "--seeds", "2", *TINY, "--init-agents-from",
                         str(phase1), "--out", str(out)]) == 0
        lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
        assert [x["iteration"] for x in lines] == [1, 1, 2, 2]
        assert all(np.isfinite(x["gtb/welfare_objective"]) for x in lines)
    out = tmp_path / "us_federal"
    assert run.main(["--preset", "ppo-gtb-us_federal-curriculum", *TINY[:6], *agents,
                     "--init-agents-from", str(phase1), "--out", str(out)]) == 0
