import os
import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers: env_checks, gradcheck
# tests measure fresh compiles (and must not depend on an earlier run's cache)
os.environ.setdefault("JAXMCG_COMPILATION_CACHE", "0")


@pytest.fixture
def x64():
    """Run a test in float64 (gradient checks), restoring the previous setting after."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# Checks moved to the slow suite to keep `make test` under 15 minutes on 2 cores. Each leaves a
# faster check of the same thing in the default suite: another parametrization, the algorithm's own
# gradient check and learning test, or one environment of the same family in test_env_smoke.
SLOW_IN_CI = (
    "test_ac.py::test_update_with_hand_built_critic[False]",
    "test_ac_d.py::test_defaults_are_table_b5_and_adapt_to_observations",
    "test_ac_images.py::test_gradients_match_finite_differences",
    "test_ac_images.py::test_learns_on_rich_cleanup",
    "test_cen.py::test_act_and_centralized_batch",
    "test_cleanup_oracle.py::test_step_matches_oracle[10x10-2]",
    "test_cleanup_oracle.py::test_step_matches_oracle[10x10-3]",
    "test_cm3_networks.py::test_iac_value_network[lane_merge]",
    "test_cm3_networks.py::test_stage1_names_are_a_subset_of_stage2[particle]",
    "test_coins.py::test_contract_custom[coin_game-v0-overrides1]",
    "test_coma.py::test_checkers_inputs_and_step",
    "test_dcl.py::test_proposal_score_function_estimator_matches_the_exact_gradient_of_eq_10",
    "test_env_smoke.py::test_env_contract[checkers_stage1-v0]",
    "test_env_smoke.py::test_env_contract[cleanup-10x10-v0]",
    "test_env_smoke.py::test_env_contract[harvest_patch-v0]",
    "test_env_smoke.py::test_env_contract[lane_merge_stage1-v0]",
    "test_env_smoke.py::test_env_contract[particle_intersection-v0]",
    "test_env_smoke.py::test_env_contract[particle_merge-v0]",
    "test_env_smoke.py::test_env_contract[pursuit-3-v0]",
    "test_gtb.py::test_properties",
    "test_gtb.py::test_u2_build",
    "test_ippo.py::test_grid_rpc_preset_runs_thirty_epochs_on_rpc",
    "test_lio.py::test_incentives_exclude_self_and_respect_rmax",
    "test_lio.py::test_linearized_equals_autodiff_decentralized",
    "test_lio.py::test_meta_gradient_matches_finite_differences[2-1-ac]",
    "test_lio.py::test_policy_step_is_the_inner_step[ac]",
    "test_lp.py::test_named_objectives_match_weights",
    "test_mediated.py::test_grid_rpc_preset_runs_thirty_updates_on_rpc",
    "test_mediated.py::test_update_steps_every_network_with_its_own_adam_and_lambda_once",
    "test_mmce_irl.py::test_theorem5_coupled_game_is_the_partial_gradient",
    "test_mmce_irl.py::test_theorem5_decoupled_game_total_gradient",
    "test_moca.py::test_multi_objective_phase_draws_contracts_uniformly_and_binds_them",
    "test_nash_q.py::test_masks_respected_and_vmap",
    "test_nash_q.py::test_nash_q_grid_games",
    "test_pg_c.py::test_act_gives_r_max_sigmoid_of_the_sample[False]",
    "test_pg_c.py::test_gradient_matches_finite_differences[True]",
    "test_pg_c.py::test_update_is_an_sgd_step_on_the_loss",
    "test_ppo_shared.py::test_shared_parameters_and_masks",
    "test_scale.py::test_sweep_points_equal_separate_runs",
    "test_tabular_learners.py::test_ce_q_grid_games_fast[libertarian-games1]",
    "test_ac_c.py::test_gradients_match_finite_differences[escape_room]",  # [cleanup-7x7] stays
    "test_ac_d.py::test_gradients_match_finite_differences[escape_room]",  # [cleanup-7x7] stays
    # 64 s of subprocesses (1, 4 forced devices, 2 processes); the mesh-layout tests stay
    "test_scale.py::test_devices_and_processes_give_the_single_device_result",
)


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("tests/", 1)[-1] in SLOW_IN_CI:
            item.add_marker(pytest.mark.slow)
