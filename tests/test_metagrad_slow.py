"""Long MetaGrad tests (make test-slow): the GAE/PPO and Cleanup meta-gradients, thesis Fig 6.1 on
ER(5,2) and ER(10,5) with 8 seeds and dual-RL on the same budget, the ER(2,1) payments."""
import numpy as np
import pytest
from seeds import train_preset
from test_metagrad import _check_meta_gradient, _frozen

from experiments.presets import get_preset
from jaxmcg.algos import metagrad

pytestmark = pytest.mark.slow

_SMALL_AC = (("hidden", (8,)), ("critic_hidden", (8,)), ("lr", 1e-2), ("eps_start", 0.2))


@pytest.mark.parametrize("kind", ["er-pg-gae-ppo", "cleanup-ac-shared"])
def test_meta_gradient_matches_finite_differences(x64, kind):
    """dL/deta against central differences (float64, relative error < 1e-4): PG agents with the
    GAE/PPO outer loss (ER), and actor-critic agents with shared parameters on Cleanup, whose TD
    error stops gradients (the straight-through actor loss must give the true derivative)."""
    if kind == "cleanup-ac-shared":
        config = metagrad.Config(learner="ac", learner_params=_SMALL_AC, share_parameters=True,
                                 hidden=(8, 8), critic_hidden=(8,), advantage="gae", ppo_clip=0.2)
        frozen = _frozen(config, "cleanup-7x7", n_envs=2, max_steps_in_episode=12)
    else:
        config = metagrad.Config(learner_params=(("hidden", (16, 16)), ("lr", 0.5),
                                                 ("entropy_coef", 0.01)),
                                 advantage="gae", ppo_clip=0.2, hidden=(16, 8), critic_hidden=(8,))
        frozen = _frozen(config, num_agents=3, min_lever_pullers=2)
    _check_meta_gradient(config, *frozen)


def _designer_returns(name, seeds=8):
    dr = np.asarray(train_preset(name, seeds)["designer_return"])
    return dr[:, -3:].mean(axis=1)  # the last three evaluations (150 iterations)


@pytest.mark.parametrize("tag,target", [("er-5-2", 25.0), ("er-10-5", 38.0)])
def test_metagrad_reaches_the_optimum_and_dual_rl_does_not(tag, target):
    """Thesis §6.4: MetaGrad's designer reward (incentives subtracted) approaches the optimum
    (about 26 and 40) and dual-RL (d) and (c) stay far below on the same budget."""
    mg = _designer_returns(f"metagrad-{tag}-batched")
    assert np.median(mg) >= target, mg
    for variant in ("d", "c"):
        dual = _designer_returns(f"dual_rl_{variant}-{tag}-batched", seeds=4)
        assert np.median(dual) < target - 10, (variant, dual)


def test_metagrad_er_2_1_pays_the_lever_not_the_door():
    """Thesis Fig 6.1d: on ER(2,1) the ID pays the lever-puller and not the winner. Here the
    agents' policies saturate before psi brings the lever payment down to 1 + eps, after which it
    drops below that and the saturated lever-puller keeps pulling (designer reward up to 9): the
    test asks for cooperation, a lever payment below the maximum 2 and about 0 for the door."""
    m = train_preset("metagrad-er-2-1-batched", 2, iterations=600, eval_envs=512)
    dr = np.asarray(m["designer_return"])[:, -3:].mean(axis=1)
    assert np.median(dr) >= 7.0, dr
    rec = np.asarray(m["metagrad/received_by_type"])[:, -1]  # [seed, agent, type]
    freq = np.asarray(m["action_frequency"])[:, -1]  # [seed, agent, action]
    for s in range(2):
        if dr[s] >= 7.0:
            coop = int(np.argmax(freq[s, :, 0]))  # the lever-puller
            assert rec[s, coop, 0] <= 1.6, rec[s]
            assert rec[s, 1 - coop, 2] < 0.3, rec[s]  # the winner at the door


def test_metagrad_paper_preset_reaches_the_optimum_on_er_5_2():
    """The one-episode preset (Table C.1, the code's 100k episodes; here 20k) through the CLI's
    resolution: with the thesis' settings and no batch baseline the designer's reward reaches about
    28 on every seed (the authors' learner, transcribed to TF1, reached 27.9: incentives fall to 0
    once the agents coordinate). The CLI once gave this preset the batched family's batch baseline,
    a zero advantage with one episode, and every seed ended at -5."""
    from experiments import run
    from jaxmcg.runner import build

    resolved = run.resolve(run.build_parser().parse_args(["--preset", "metagrad-er-5-2"]))
    assert build(resolved)[3] == metagrad.Config(**get_preset("metagrad-er-5-2")["algo_params"])
    dr = np.asarray(train_preset("metagrad-er-5-2", 8, iterations=20_000)["designer_return"])
    final = dr[:, -20:].mean(axis=1)  # the last 2k episodes
    assert np.median(final) >= 25.0, final
