"""Long LIO learning runs (make test-slow): ER(3,2), ER(5,3), LIO-dec and the pipelined variant."""
import numpy as np
import pytest
from seeds import final_moving_average, train_preset

from experiments.presets import get_preset

pytestmark = pytest.mark.slow


def _run_preset(name, seeds=5, **algo_extra):
    return final_moving_average(train_preset(name, seeds, algo_extra)["collective_return"])


def test_lio_er_3_2():
    """Thesis Fig 5.5c: LIO approaches the optimum 8 on ER(3,2) (spec A25: median >= 7.5)."""
    final = _run_preset("lio-er-3-2-batched")
    assert np.median(final) >= 7.5, final


def test_lio_er_5_3():
    """Thesis Fig B.4c: LIO converges to the optimum 17 on ER(5,3) (issue: median >= 16). The
    batched preset needs a decay on eta from iteration 9k and a cost rate 3/10 of the incentive
    rate (the thesis: 1/10); neither is in the thesis. Stop 30: passed; the CLI's five seeds of
    --seed 10 ended with 4 of 5 at 17, those of --seed 20 with 5 of 5."""
    final = _run_preset("lio-er-5-3-batched")
    assert np.median(final) >= 16.0, final


def test_lio_paper_preset_er_5_3_with_the_codes_incentive_update():
    """One episode per update at Table B.4's N = 3 values (`lio-er-5-3`, 20k of its 50k
    iterations). With the released code's reward op (incentive_update="all_givers") 2 of 5 seeds
    reach 16-17, as its TF1 transcription solved 3 of 4 runs; with Eq 5.10's own-eta step every
    seed ends at -2 to -5 (stop 19). The issue's median >= 16 is not reached this way either."""
    assert get_preset("lio-er-5-3")["algo_params"]["incentive_update"] == "all_givers"
    final = final_moving_average(train_preset("lio-er-5-3", 5, iterations=20_000)["collective_return"])
    assert np.sum(final >= 15.0) >= 2, final


def test_lio_dec_er_2_1():
    """Thesis L987: LIO-dec (opponent models) also solves ER(2,1), more slowly."""
    final = _run_preset("lio-er-2-1-batched", decentralized=True)
    assert np.median(final) >= 8.0, final


def test_lio_pipelined_er_2_1():
    """The one-rollout pipelined iteration (as MetaGrad's) also solves ER(2,1)."""
    final = _run_preset("lio-er-2-1-batched", pipeline=True)
    assert np.median(final) >= 8.5, final
