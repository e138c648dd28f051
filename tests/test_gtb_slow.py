"""GTB statistical parity with the [F] reference of gtb.md §9.2 (make test-slow): 2000 episodes per
row, scripted policies, every column within 3 combined standard errors (§9.2 [R])."""
import jax
import jax.numpy as jnp
import pytest

import jaxmcg
from envs import gtb_scripted as scripted

pytestmark = pytest.mark.slow

EPISODES = 2000


@pytest.mark.parametrize("policy", ["uniform", "move_build"])
def test_scripted_parity(policy):
    env, params = jaxmcg.make("gtb-15x15-v0", designer_obs="none")
    run = scripted.make_episode_stats(env, params, scripted.POLICIES[policy], EPISODES)
    failures = {}
    for i, tax in enumerate(("free", "us_federal", "flat_0.5")):
        stats = run(jax.random.PRNGKey(100 + i), jnp.asarray(scripted.TAX_SETTINGS[tax]))
        table = scripted.compare(stats, scripted.REFERENCE[(policy, tax)])
        for column, (mean, se, ref, ref_se, ok) in table.items():
            print(f"{policy:10s} {tax:10s} {column:12s} {mean:9.4g} ± {se:.3g}   ref {ref:9.4g} ± {ref_se}")
            if not ok:
                failures[(tax, column)] = (mean, se, ref, ref_se)
    assert not failures, failures
