"""Smoke test of the environment contract for every registered id (new envs are picked up)."""
import pytest
from env_checks import check_env

import jaxmcg

# Compiling one step of these takes 20-30 s of a core (GTB's auction and views, STS2's tick): their
# contract check runs with `make test-slow`; their own test files check observations and shapes.
_HEAVY = {"gtb-15x15-v0", "sts2-v0"}


@pytest.mark.parametrize("env_id", [pytest.param(e, marks=pytest.mark.slow) if e in _HEAVY else e
                                    for e in jaxmcg.list_envs()])
def test_env_contract(env_id):
    check_env(env_id)


@pytest.mark.parametrize(
    "env_id, overrides",
    [
        ("escape_room-v0", {"num_agents": 5, "min_lever_pullers": 3}),
        ("escape_room-v0", {"num_agents": 10, "min_lever_pullers": 5}),
        ("matrix_game-v0", {"payoff": [[[1, 1], [0, 2], [2, 0]]] * 3}),
    ],
)
def test_env_contract_custom(env_id, overrides):
    check_env(env_id, **overrides)
