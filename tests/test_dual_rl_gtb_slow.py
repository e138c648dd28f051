"""Long dual-RL-on-GTB checks (make test-slow): the command line with the preset."""
import json

import numpy as np
import pytest
from tax_design_checks import TINY_CLI as TINY

from experiments import run

pytestmark = pytest.mark.slow



def test_cli_preset_runs(tmp_path):
    """`python -m experiments.run --preset dual_rl-gtb` with tiny networks and budget: two logged
    points with the planner's return, its cap (0.1 + 0.9 e / 8000 after e = 1, 2 iterations) and
    the G5 and §9.3 statistics; the same family from `--algo dual_rl --env gtb-15x15`."""
    for argv in (["--preset", "dual_rl-gtb"], ["--algo", "dual_rl", "--env", "gtb-15x15"]):
        out = tmp_path / argv[1]
        assert run.main(argv + TINY + ["--out", str(out)]) == 0
        lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
        assert [x["iteration"] for x in lines] == [1, 2]
        np.testing.assert_allclose([x["dual_rl/cap"] for x in lines],
                                   [0.1, 0.1 + 0.9 / 8000], rtol=1e-6)
        last = lines[-1]
        assert len(last["tax/rates"]) == 7 and max(last["tax/rates"]) <= 0.1 + 0.9 * 2 / 8000 + 1e-6
        assert np.isfinite(last["designer_return"]) and last["gtb/welfare_objective"] > 0
