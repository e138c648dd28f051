"""The equilibrium-solver CLI (`python -m experiments.solve`, or `experiments.run --algo mge_f`)."""
import json

import numpy as np
import pytest

from experiments import run, solve


def test_run_cli_solves_pursuit3_and_prints_fig4_policies(tmp_path, capsys):
    out = tmp_path / "p3"
    rc = run.main(["--algo", "mge_f", "--env", "pursuit-3", "--env-param", "start=I2",
                   "--alpha", "0.6", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "0.327" in text and "0.346" in text  # Fig. 4, I2 prey row
    assert "theorem2" in text and "violated (60x)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] == [True, True, True] and summary["horizon"] == 3
    sol = np.load(out / "solution.npz")
    assert sol["pi"].shape[:2] == (3, 3)
    np.testing.assert_allclose(sol["pi"].sum(-1), 1.0, atol=1e-9)


@pytest.mark.parametrize("argv, message", [
    (["--solver", "mge_f", "--env", "pursuit-3", "--beta", "0"], "--beta=0.0 is invalid"),
    (["--solver", "mge_f", "--env", "pursuit-3", "--alpha", "1.5"], "--alpha=1.5 is invalid"),
    (["--solver", "nash", "--env", "pursuit-3"], "unknown solver 'nash'"),
    (["--solver", "mge_f", "--env", "ipd"], "needs a tabular Markov game"),
    (["--solver", "mge_fb", "--env", "pursuit-3"], "needs an occupancy-measure game"),
    (["--solver", "mge_f", "--env", "pursuit-3", "--state", "100000"], "--state=100000 is invalid"),
    (["--solver", "mge_f", "--env", "pursuit-3", "--env-param", "speed=2"], "unknown --env-param"),
])
def test_bad_input_is_reported_before_solving(argv, message, capsys):
    assert solve.main(argv) == 2
    assert message in capsys.readouterr().err


def test_solver_leaves_the_x64_setting_as_it_found_it(capsys):
    import jax

    before = jax.config.read("jax_enable_x64")
    assert solve.main(["--solver", "mge_f", "--env", "pursuit-3", "--env-param", "start=T1"]) == 0
    assert jax.config.read("jax_enable_x64") == before


def test_mge_fb_solves_the_driving_junction(tmp_path, capsys):
    out = tmp_path / "fb"
    assert solve.main(["--solver", "mge_fb", "--env", "driving_junction", "--out", str(out)]) == 0
    assert "Theorem 3" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] and summary["num_iters"] == 200 and summary["eta"] == 0.5


def test_baseline_learner_scores_grid_game_1(capsys):
    # Fig. 5 table, Q-learning row: (30, 30) on grid game I
    assert solve.main(["--solver", "q_learning", "--env", "hw_grid1", "--env-param",
                       "termination=first", "--episodes", "200"]) == 0
    out = capsys.readouterr().out
    assert "greedy plays: A 30.000, B 30.000" in out
