"""`python -m experiments.evaluate`: a run's checkpoint on another configuration of its env."""
import json
import os

import numpy as np
import pytest

from experiments import evaluate, run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval") / "pg")
    assert run.main(["--algo", "pg", "--env", "escape_room", "--n_envs", "8", "--iterations", "20",
                     "--log-every", "10", "--eval-envs", "8", "--seeds", "2", "--quiet",
                     "--out", out]) == 0
    return out


def _lines(run_dir):
    with open(os.path.join(run_dir, "evaluations.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_evaluates_every_seed_on_the_overridden_environment(run_dir, capsys):
    assert evaluate.main([run_dir, "--episodes", "64"]) == 0
    # the same policies and episodes with every reward doubled: returns exactly double
    assert evaluate.main([run_dir, "--episodes", "64", "--env-param", "door_reward=20",
                          "--env-param", "move_cost=2"]) == 0
    assert evaluate.main([run_dir, "--episodes", "64", "--env-param", "door_reward=0",
                          "--env-param", "move_cost=0"]) == 0
    base, double, zero = _lines(run_dir)[-3:]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == zero
    assert base["episodes"] == 64 and base["checkpoint_iteration"] == 20
    assert double["env_params"]["door_reward"] == 20.0 and double["env_params"]["move_cost"] == 2.0
    assert len(base["collective_return"]) == 2 and np.all(np.asarray(base["collective_return"]) != 0)
    np.testing.assert_allclose(double["collective_return"], 2 * np.asarray(base["collective_return"]),
                               rtol=1e-6)
    np.testing.assert_allclose(np.sum(base["episode_return/mean"], axis=1), base["collective_return"],
                               rtol=1e-5)
    assert zero["collective_return"] == [0.0, 0.0]


@pytest.mark.parametrize("argv,needle", [
    (["--env-param", "nope=1"], "unknown --env-param ['nope']"),
    (["--env-param", "num_agents=3"], "changes the observation space"),
    (["--episodes", "0"], "--episodes 0"),
    (["--greedy"], "pg has no act_greedy"),
])
def test_bad_input_is_rejected(run_dir, capsys, argv, needle):
    assert evaluate.main([run_dir] + argv) == 2
    assert needle in capsys.readouterr().err


def test_not_a_run_directory(tmp_path, capsys):
    assert evaluate.main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
