"""D3C's long learning runs (make test-slow)."""
import numpy as np
import pytest
from seeds import train_preset

pytestmark = pytest.mark.slow


def test_es_d3c_table1_tyb_row_brings_ipd_pg_learners_to_cooperation():
    """The `d3c-ipd` preset (epsilon 0), 10 seeds x 12k iterations: measured rho 2.0 until ~3k
    iterations, 1.35 at 6.5k, 1.0 for every seed from 10.5k."""
    m = train_preset("d3c-ipd", 10, iterations=12_000, log_every=1000)
    rho = -m["collective_return"] / 10.0
    assert rho[:, 0].mean() > 1.9
    assert rho[:, -1].mean() <= 1.05, rho[:, -1]


def _tyb(preset_name, iterations, seeds=20):
    m = train_preset(preset_name, seeds, iterations=iterations, log_every=iterations // 4)
    return m["collective_return"], m["d3c/self_weight"]


def test_tyb_d3c_beats_selfish_pg_with_the_papers_learner():
    """Fig. 7 (partly): with App. G's learner, selfish PG stays at the selfish outcome (-4) while
    D3C's median over 20 seeds reaches -2.5 (one of the two attacked prey escapes) by ~65k batches.
    Measured through the CLI, 20 seeds: D3C at 105k of a 200k run median -2.50, mean -2.49, 15
    seeds >= -3; PG (200k) -4.0 on every seed. Relative attention goes to the clip (A_ii 0.007),
    below Fig. 7's."""
    pg_return, _ = _tyb("pg-tyb", 20_000)
    assert np.median(pg_return[:, -1]) <= -3.9, pg_return[:, -1]
    d3c_return, self_weight = _tyb("d3c-tyb", 100_000)
    assert np.median(d3c_return[:, -1]) >= -3.0, d3c_return[:, -1]
    assert np.median(self_weight[:, -1]) <= 0.1, self_weight[:, -1]
