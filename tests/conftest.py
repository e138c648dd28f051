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
    "test_cen.py::test_learns_on_rich_cleanup",  # test_cen_solves_er_2_1 stays
    "test_cleanup_oracle.py::test_step_matches_oracle[10x10-2]",
    "test_cleanup_oracle.py::test_step_matches_oracle[10x10-3]",
    "test_cm3_networks.py::test_iac_value_network[lane_merge]",
    "test_cm3_networks.py::test_stage1_names_are_a_subset_of_stage2[particle]",
    "test_coins.py::test_contract_custom[coin_game-v0-overrides1]",
    "test_coma.py::test_checkers_inputs_and_step",
    "test_dcl.py::test_proposal_score_function_estimator_matches_the_exact_gradient_of_eq_10",
    "test_dual_rl_gtb.py::test_planner_learns_to_redistribute",  # dual-RL learns on ER in test_dual_rl
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


# Most tests spend their time in XLA's compiler, not in the program it builds, so they compile with
# `jax_disable_most_optimizations` (LLVM at -O0): 30-45% less time on this repo's FD checks and
# hand-built-state tests. Learning tests run long programs that the flag slows 2-3x: they keep XLA's
# optimizations (and the numerics their thresholds were measured with). Measured on 2 cores, one
# test per core: the learning tests of LIO and dual-RL/GTB took 2.1x and 2.7x longer without them,
# test_lio's Adam and FD checks 0.5-0.8x; the whole default suite 52-55 CPU-minutes instead of 69.
XLA_OPTIMIZED = (
    "test_ac.py::test_learns_mutual_cooperation_in_stag_hunt",
    "test_ac_c.py::test_givers_stop_paying_when_giving_costs",
    "test_ac_d.py::test_givers_stop_paying_when_giving_costs",
    "test_amd.py::test_amd_improves_collective_return_on_er_2_1",
    "test_cen.py::test_cen_solves_er_2_1",
    "test_d3c.py::test_es_d3c_lowers_the_price_of_anarchy_of_pg_learners_on_the_ipd",
    "test_d3c.py::test_braess_d3c_beats_gradient_descent_over_10_seeds",
    # either may be the first on its pytest worker to use, and so train, the module's fixture
    "test_dcl.py::test_dcl_learns_mutual_cooperation_on_the_pd",
    "test_dcl.py::test_trained_dcl_agent_rejects_a_malicious_always_defect_co_player",
    "test_dual_rl.py::test_dual_rl_designer_learns_to_cut_useless_payments",
    "test_env_smoke.py::test_env_contract[rabbit_hole-v0]",
    "test_env_smoke.py::test_env_contract[rpc-v0]",
    "test_ia.py::test_learns_on_rich_cleanup",
    "test_ippo.py::test_converges_to_mutual_defection_in_pd",
    "test_iql.py::test_learns_the_optimum_of_a_monotone_matrix_game",
    "test_lio.py::test_exact_lio_matches_closed_form_and_cooperates",
    "test_lio.py::test_lio_solves_er_2_1",
    "test_mediated.py::test_unconstrained_mediator_beats_ippo_on_pd",
    "test_metagrad.py::test_metagrad_solves_er_2_1",
    "test_moca.py::test_pd_learning_finds_the_defection_penalty_contract",
    "test_pg.py::test_pg_fails_on_er_2_1",
    "test_pg_c.py::test_givers_stop_paying_and_escape_room_stays_unsolved",
    "test_pg_d.py::test_givers_stop_paying_and_escape_room_stays_unsolved",
    "test_ppo_shared.py::test_learns_above_the_random_policy",
    "test_qmix.py::test_learns_the_optimum_of_a_monotone_matrix_game",
    "test_tabular_learners.py",  # a module name: all its tests
    # solvers and decoders that iterate for long in one program (float64 while_loops): 2-10x slower
    # without the optimizations in the full-suite measurement
    "test_driving_junction.py::test_env_replays_solver_rollout",
    "test_hsd.py::test_skills_become_decodable_end_to_end",
    "test_mge_paper.py",
    "test_nash_q.py",
    "test_solve.py",
)


def _short_id(item) -> str:
    return item.nodeid.split("tests/", 1)[-1]


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        test = _short_id(item)
        if test in SLOW_IN_CI:
            item.add_marker(pytest.mark.slow)
        if test in XLA_OPTIMIZED or test.split("::")[0] in XLA_OPTIMIZED:
            item.add_marker(pytest.mark.xla_optimized)


@pytest.hookimpl(tryfirst=True)  # before fixtures, module-scoped ones included, are set up
def pytest_runtest_setup(item):
    # slow tests are long runs, so they keep the optimizations too
    optimized = any(item.iter_markers("xla_optimized")) or any(item.iter_markers("slow"))
    if jax.config.read("jax_disable_most_optimizations") == optimized:
        # the flag is not part of jit's cache key: a library function that an earlier test compiled
        # at the other setting would be reused
        jax.clear_caches()
        jax.config.update("jax_disable_most_optimizations", not optimized)
