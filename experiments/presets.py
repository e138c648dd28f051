"""Paper configurations by name.

A preset fixes the algorithm, environment, their parameters and the training budget. Presets without
a suffix replay the paper's setting of one episode per update with the tables' hyperparameters;
`-batched` presets use many parallel episodes per update, with learning rates recalibrated for
batch-mean losses (spec/thesis.md A8; a quick calibration found policy lr ~1e-3 for LIO at 256+ envs).
Command-line flags override any field.
"""
from __future__ import annotations

# Table B.4 (thesis L1761-1769), LIO and PG columns; [CODE] 50k iterations, eval every 100 with 10
# episodes (spec §2.11).
_ER_PAPER_TRAIN = {"n_envs": 1, "iterations": 50_000, "log_every": 100, "eval_envs": 10}
# The paper presets keep the authors' un-mixed outer log-probability (spec A3).
_LIO_ER_N2 = {"lr": 1e-4, "lr_incentive": 1e-3, "entropy_coef": 0.01, "eps_start": 0.5,
              "eps_end": 0.1, "eps_div": 1000.0, "outer_logprob_mixed": False}
_LIO_ER_N3 = {**_LIO_ER_N2, "eps_end": 0.3}
_PG_ER = {"lr": 1e-4, "entropy_coef": 0.01, "eps_start": 0.5, "eps_end": 0.05, "eps_div": 100.0}
_PG_C_ER = {"lr": 1e-3, "entropy_coef": 0.1, "eps_start": 1.0, "eps_end": 0.1, "eps_div": 1000.0}


def _er(n, m):
    return {"num_agents": n, "min_lever_pullers": m}


PRESETS: dict[str, dict] = {
    # --- one episode per update, as the thesis ---
    "lio-er-2-1": dict(algo="lio", env="escape_room", env_params=_er(2, 1), algo_params=_LIO_ER_N2,
                       train=_ER_PAPER_TRAIN),
    "lio-er-3-2": dict(algo="lio", env="escape_room", env_params=_er(3, 2), algo_params=_LIO_ER_N3,
                       train=_ER_PAPER_TRAIN),
    # Table B.4 has no N=5 column; the N=3 values are used.
    "lio-er-5-3": dict(algo="lio", env="escape_room", env_params=_er(5, 3), algo_params=_LIO_ER_N3,
                       train=_ER_PAPER_TRAIN),
    "lio_dec-er-2-1": dict(algo="lio", env="escape_room", env_params=_er(2, 1),
                           algo_params={**_LIO_ER_N2, "decentralized": True}, train=_ER_PAPER_TRAIN),
    "pg-er-2-1": dict(algo="pg", env="escape_room", env_params=_er(2, 1), algo_params=_PG_ER,
                      train=_ER_PAPER_TRAIN),
    "pg-er-3-2": dict(algo="pg", env="escape_room", env_params=_er(3, 2), algo_params=_PG_ER,
                      train=_ER_PAPER_TRAIN),
    "pg_d-er-2-1": dict(algo="pg_d", env="escape_room", env_params=_er(2, 1), algo_params=_PG_ER,
                        train=_ER_PAPER_TRAIN),
    "pg_c-er-2-1": dict(algo="pg_c", env="escape_room", env_params=_er(2, 1), algo_params=_PG_C_ER,
                        train=_ER_PAPER_TRAIN),
    # Table B.3 (IPD): entropy 0.1, lr 1e-3, eps 1.0 -> 0.01 over 5000, R_max 3, no cost,
    # (16, 8) networks (§2.10); 60k episodes of 5 steps (thesis L1725).
    "lio-ipd": dict(
        algo="lio", env="ipd",
        algo_params={"hidden": (16, 8), "incentive_hidden": (16, 8), "r_max": 3.0, "lr": 1e-3,
                     "lr_incentive": 1e-3, "cost_coef": 0.0, "entropy_coef": 0.1, "eps_start": 1.0,
                     "eps_end": 0.01, "eps_div": 5000.0, "outer_logprob_mixed": False},
        train={"n_envs": 1, "iterations": 60_000, "log_every": 100, "eval_envs": 10},
    ),
    # --- many parallel episodes per update ---
    "lio-er-2-1-batched": dict(algo="lio", env="escape_room", env_params=_er(2, 1),
                               train={"n_envs": 256, "iterations": 3000, "log_every": 50,
                                      "eval_envs": 1024}),
    # With 16x fewer updates than the thesis' 50k, the incentive and cost Adam rates are scaled
    # like the policy rate (x20) so incentives still outpace the policies; a 5-seed sweep found
    # this necessary for N = 3 (4 of 5 seeds reach 8, versus none at the ER(2,1) defaults).
    "lio-er-3-2-batched": dict(algo="lio", env="escape_room", env_params=_er(3, 2),
                               algo_params={"eps_end": 0.3, "lr_incentive": 2e-2, "lr_cost": 2e-3},
                               train={"n_envs": 256, "iterations": 4000, "log_every": 50,
                                      "eval_envs": 1024}),
    # Not yet calibrated (notes): slower policies relative to incentives were the most promising
    # setting tried (1 of 3 seeds at 7.5 and rising after 4000 iterations); the budget is a guess.
    "lio-er-5-3-batched": dict(algo="lio", env="escape_room", env_params=_er(5, 3),
                               algo_params={"lr": 3e-4, "lr_incentive": 1e-2, "lr_cost": 1e-3,
                                            "eps_end": 0.3, "eps_div": 2000.0},
                               train={"n_envs": 256, "iterations": 12000, "log_every": 50,
                                      "eval_envs": 1024}),
    "pg-er-2-1-batched": dict(algo="pg", env="escape_room", env_params=_er(2, 1),
                              algo_params={"lr": 1e-2},
                              train={"n_envs": 256, "iterations": 2000, "log_every": 50,
                                     "eval_envs": 1024}),
    "lio_pg-ipd-batched": dict(  # LIO-asym: agent 0 is LIO, agent 1 a PG learner (-> DC)
        algo="lio", env="ipd",
        algo_params={"hidden": (16, 8), "incentive_hidden": (16, 8), "r_max": 3.0, "lr": 1e-2,
                     "lr_incentive": 1e-3, "cost_coef": 0.0, "entropy_coef": 0.1, "eps_start": 1.0,
                     "eps_end": 0.01, "eps_div": 500.0, "givers": (0,)},
        train={"n_envs": 256, "iterations": 1500, "log_every": 50, "eval_envs": 1024},
    ),
    "lio-ipd-batched": dict(
        algo="lio", env="ipd",
        algo_params={"hidden": (16, 8), "incentive_hidden": (16, 8), "r_max": 3.0, "lr": 1e-2,
                     "lr_incentive": 1e-3, "cost_coef": 0.0, "entropy_coef": 0.1, "eps_start": 1.0,
                     "eps_end": 0.01, "eps_div": 500.0},
        train={"n_envs": 256, "iterations": 1500, "log_every": 50, "eval_envs": 1024},
    ),
}

# Defaults when no preset is given: tuned for many parallel episodes.
DEFAULT_TRAIN = {"n_envs": 4096, "iterations": 2000, "log_every": 50, "eval_envs": 1024}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
