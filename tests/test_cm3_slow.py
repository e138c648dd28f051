"""CM3's long checks (`pytest -m slow`): Checkers gradients and augmentation, Stage-1 learning at the
paper's budget, Stage 2 against Direct, and the Checkers result of §7.1 at a reduced budget."""
import jax
import numpy as np
import pytest
from seeds import train_seeds
from test_cm3 import _direct, _trajectory, assert_augmentation_keeps_stage1, assert_cm3_losses_match_fd

import jaxmcg
from jaxmcg.algos import cm3
from jaxmcg.train import TrainConfig, make_train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("env_id,value", [("checkers", False), ("checkers", True),
                                           ("particle_merge", True), ("lane_merge", False)])
def test_losses_match_finite_differences(x64, env_id, value):
    assert_cm3_losses_match_fd(env_id, value)


@pytest.mark.parametrize("env_id", ["checkers", "lane_merge"])
def test_augmentation_keeps_the_stage1_function(env_id):
    assert_augmentation_keeps_stage1(env_id)


def test_on_policy_train_calls_buffer_and_epsilon():
    env, params, state = _direct("particle_merge", n_envs=2, warmup_episodes=4, epochs=3, batch_size=8,
                                 eps_start=0.5, eps_end=0.05, eps_div=20.0)
    assert state.on_policy
    update = jax.jit(cm3.update)
    state, m = update(state, _trajectory(env, params, [5, 6], 8))  # episodes 1-2: warm-up
    assert int(state.train_steps) == 0 and int(state.buffer.size) == 11
    # episodes 3-4: the first train call also sees the warm-up episodes (never cleared), then clears
    state, m = update(state, _trajectory(env, params, [8, 2], 8, seed=1))
    assert int(state.train_steps) == 3 and int(state.train_calls) == 1
    assert int(state.buffer.size) == 0
    np.testing.assert_allclose(cm3.epsilon(state), 0.5 - 0.45 * 2 / 20, rtol=1e-6)


def _train(env_id, config, n_envs, episodes, seeds, eval_envs=100, log_every=None, seed=0):
    env, params = jaxmcg.make(env_id)
    iterations = episodes // n_envs
    train = make_train(cm3, env, params, config,
                       TrainConfig(n_envs=n_envs, iterations=iterations,
                                   log_every=log_every or max(1, 100 // n_envs),
                                   eval_envs=eval_envs))
    return train_seeds(train, seeds, seed)


def test_particle_stage1_at_the_paper_budget():
    """Table A.3 S1: 1000 episodes of particle_stage1, 10 per train call, 24 epochs of 256.
    Measured (100 evaluation episodes, sampled at eps = 0), 2 seeds: -30.7 / -25.4 after 100
    episodes, -7.5 / -6.3 after 1000; a uniform policy scores about -29."""
    _, m = _train("particle_stage1", cm3.Config().stage1(), 10, 1000, 2)
    curve = m["collective_return"]  # [seed, chunk]
    assert np.all(curve[:, -1] > -10.0), curve
    assert np.all(curve[:, -1] > curve[:, 0] + 10.0), curve


def test_particle_merge_cm3_beats_direct():
    """Stage 2 starts from the Stage-1 greedy policy (restore + augmentation), so over the first
    1000 Stage-2 episodes of particle_merge CM3's evaluation curve lies well above Direct's (thesis
    Fig 3.5f-j: CM3 >> Direct in area under the curve). Measured (Table A.3 columns, 2 seeds, 100
    evaluation episodes every 100): Stage 1 -7.0 / -5.4; mean Stage-2 curve CM3 -43.7 / -43.8,
    Direct -164.9 / -302.7."""
    cm3_config = cm3.Config(**cm3.PAPER["particle"]["cm3"])
    direct = cm3.Config(**cm3.PAPER["particle"]["direct"])
    _, m_cm3 = _train("particle_merge", cm3_config, 10, 1000, 2)
    _, m_direct = _train("particle_merge", direct, 10, 1000, 2)
    auc_cm3 = np.mean(m_cm3["collective_return"], axis=1)
    auc_direct = np.mean(m_direct["collective_return"], axis=1)
    assert np.all(auc_cm3 > auc_direct + 50.0), (auc_cm3, auc_direct)
    assert np.all(auc_cm3 > -60.0), auc_cm3


def test_checkers_reduced_budget():
    """§7.1 Checkers (Table A.5 columns, faithful accounting: one episode per iteration, one
    minibatch every 10 steps), Stage 2 cut from 5e4 to 5000 episodes; the thesis reaches the optimum
    24 within 5e4. Measured with these keys (evaluations of 10 episodes every 100 episodes): Stage 1
    ends at 7.5 / 7.2 (of a single agent's ~10; the authors' save threshold is 9); Stage 2 every
    500 episodes 10.0 11.9 12.0 10.5 11.9 12.0 12.0 12.0 12.1 13.5 and 7.3 8.7 9.8 10.4 10.4 11.9
    8.3 11.9 13.5 13.5, last-5 means 13.5 / 13.5. (Another key: 12.1 after 500, 17.9 after 2000,
    19.5 after 5000.)"""
    _, m = _train("checkers", cm3.Config(**cm3.PAPER["checkers"]["cm3"]), 1, 5000, 2, eval_envs=10,
                  log_every=100, seed=1)
    curve = m["collective_return"]
    assert np.all(m["cm3/stage1_return"][:, 0] > 6.0), m["cm3/stage1_return"]
    assert np.all(np.mean(curve[:, -5:], axis=1) > 12.0), curve[:, -5:]
