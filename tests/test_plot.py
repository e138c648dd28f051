"""experiments.plot: curves and the summary table from hand-written run directories."""
import json
import os

import numpy as np
import pytest

from experiments import plot


def _write_run(path, returns_by_seed, config=None, summary=None):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for seed, returns in enumerate(returns_by_seed):
            for i, r in enumerate(returns):
                f.write(json.dumps({"iteration": 10 * (i + 1), "seed": seed, "env_steps": 100 * (i + 1),
                                    "wall_time": 0.5 * (i + 1), "collective_return": r,
                                    "episode_return/mean": [r / 2, r / 2], "loss": -r}) + "\n")
    if config:
        json.dump({"run": config}, open(os.path.join(path, "config.json"), "w"))
    if summary:
        json.dump(summary, open(os.path.join(path, "summary.json"), "w"))


def test_curve_is_the_mean_and_standard_error_over_seeds(tmp_path):
    _write_run(tmp_path / "a", [[1.0, 2.0, 3.0], [3.0, 4.0, 7.0]])
    run = plot.load_run(str(tmp_path / "a"))
    xs, mean, se, n = plot.curve(run["lines"], "collective_return")
    np.testing.assert_allclose(xs, [10, 20, 30])
    np.testing.assert_allclose(mean, [2.0, 3.0, 5.0])
    np.testing.assert_allclose(se, [1.0, 1.0, 2.0])  # std(ddof=1)/sqrt(2) of pairs 2, 2, 4 apart
    assert n == 2
    xs, _, _, _ = plot.curve(run["lines"], "collective_return", x="env_steps")
    np.testing.assert_allclose(xs, [100, 200, 300])
    assert plot.scalar_metrics(run["lines"]) == ["collective_return", "loss"]  # vectors skipped


def test_cli_writes_png_and_table_for_runs_and_sweeps(tmp_path, capsys):
    _write_run(tmp_path / "lio", [[1.0, 5.0], [3.0, 7.0]],
               config={"algo": "lio", "env": "escape_room-v0"},
               summary={"wall_time_s": 2.0, "steps_per_second": 1234.0})
    for p, lr in enumerate((0.1, 0.2)):
        _write_run(tmp_path / "sweep" / f"point-{p:03d}", [[float(p)] * 2],
                   config={"algo": "pg", "env": "escape_room-v0", "point": {"lr": lr}})
    out = tmp_path / "plots"
    assert plot.main([str(tmp_path / "lio"), str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "summary.md").read_text()
    rows = table.strip().splitlines()
    assert len(rows) == 2 + 3
    assert "| lio escape_room-v0 | 2 | 20 | 400 | 6.000 ± 1.000 | 6.000 ± 1.000 | 2.0 | 1,234 |" in table
    assert "pg escape_room-v0 lr=0.2 | 1 |" in table and "running" in table
    printed = capsys.readouterr().out
    assert table in printed and (out / "deciles.md").read_text() in printed


@pytest.mark.parametrize("argv,needle", [
    (["{missing}"], "is not a directory"),
    (["{run}", "--metrics", "nope"], "unknown metric(s) ['nope']; valid: collective_return, loss"),
    (["{run}", "--deciles", "episode_return/mean"],
     "unknown metric(s) ['episode_return/mean']; valid: collective_return, loss"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, needle):
    _write_run(tmp_path / "run", [[1.0]])
    argv = [a.format(missing=tmp_path / "nope", run=tmp_path / "run") for a in argv]
    assert plot.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1


def test_deciles_are_the_median_and_range_over_seeds_at_every_tenth(tmp_path, capsys):
    _write_run(tmp_path / "a", [[float(i) for i in range(1, 21)], [2.0 * i for i in range(1, 21)],
                                [0.0] * 20], config={"algo": "lio", "env": "escape_room-v0"})
    run = plot.load_run(str(tmp_path / "a"))
    d = plot.deciles(run["lines"], "collective_return")
    assert len(d) == 10
    assert d[0] == (20, 2.0, 0.0, 4.0)  # 2nd of 20 logged iterations: seeds 2, 4, 0
    assert d[4] == (100, 10.0, 0.0, 20.0)
    assert d[9] == (200, 20.0, 0.0, 40.0)  # the last logged iteration
    short = plot.deciles(run["lines"][:3] + run["lines"][20:23] + run["lines"][40:43], "loss", points=10)
    assert [x[0] for x in short] == [10] * 3 + [20] * 3 + [30] * 4  # 3 logged: each repeats
    assert plot.main([str(tmp_path / "a"), "--deciles", "loss"]) == 0
    text = (tmp_path / "a" / "deciles.md").read_text()
    assert text.startswith("loss: median [min, max] over seeds (iteration) at every 10% of the run")
    assert "| lio escape_room-v0 | -2 [-4, 0] (20) |" in text
    assert text.rstrip().endswith("| -20 [-40, 0] (200) |")
