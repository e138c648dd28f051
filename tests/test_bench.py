"""`make bench` (benchmarks.suite) on a tiny grid: files, fields, and the markdown table."""
import json

from benchmarks import suite


def test_suite_writes_json_and_table(tmp_path):
    out = tmp_path / "results"
    argv = ["--envs", "escape_room-v0", "braess-v0", "--algos", "pg", "--n-envs", "1", "4",
            "--train-envs", "4", "--train-iterations", "1", "--repeats", "1", "--seconds", "0.01",
            "--out", str(out)]
    assert suite.main(argv) == 0
    result = json.load(open(out / "cpu.json"))
    assert result["device"]["platform"] == "cpu" and result["jax"]
    er, braess = result["envs"]
    assert [r["n_envs"] for r in er["results"]] == [1, 4]
    assert er["bytes_per_env"] == {"state": 12, "obs": 48} and braess["kind"] == "game"
    for r in er["results"] + braess["results"]:
        assert r["steps_per_s"] > 0 and r["compile_s"] > 0 and r["steps"] >= 4
    (pg,) = result["algos"]
    assert "error" not in pg and pg["steps_per_s"] > 0 and pg["env_steps"] > 0
    table = (out / "cpu.md").read_text()
    assert "| escape_room-v0 |" in table and "| 12 + 48 |" in table and "| pg | escape_room-v0 | 4 |" in table

    # a GPU result merged in adds its column and the ratio
    gpu = dict(result, device={"platform": "gpu", "kind": "H200", "count": 1})
    gpu["envs"] = [dict(er, results=[dict(r, steps_per_s=10 * r["steps_per_s"]) for r in er["results"]])]
    line = next(x for x in suite.markdown(result, gpu).splitlines() if x.startswith("| escape_room"))
    assert line.endswith("| 10.0x |")


def test_unknown_names_are_rejected(capsys):
    assert suite.main(["--envs", "nope-v0"]) == 2
    assert "nope-v0" in capsys.readouterr().err
