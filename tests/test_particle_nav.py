"""Multi-goal cooperative navigation (cm3-hsd.md §4.1, validation §8.1) from hand-built states."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling

import jaxmcg
from envs.particle_nav import SCENARIOS, EnvState, physics_step


def _state(position, landmark, velocity=None):
    position = jnp.asarray(position, jnp.float32)
    velocity = jnp.zeros_like(position) if velocity is None else jnp.asarray(velocity, jnp.float32)
    return EnvState(position=position, velocity=velocity,
                    landmark=jnp.asarray(landmark, jnp.float32), time=jnp.zeros((), jnp.int32))


def test_constant_action_speed_tends_to_two():
    p, v = jnp.zeros((1, 2)), jnp.zeros((1, 2))
    step = jax.jit(physics_step)
    p1, v1, f = step(p, v, jnp.array([2]))
    np.testing.assert_allclose(f, [[5.0, 0.0]])
    np.testing.assert_allclose(v1, [[0.5, 0.0]])  # 0.1 * 5
    np.testing.assert_allclose(p1, [[0.05, 0.0]])  # semi-implicit Euler uses the new speed
    for _ in range(100):
        p_prev = p1
        p1, v1, _ = step(p1, v1, jnp.array([2]))
    np.testing.assert_allclose(v1, [[2.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(p1 - p_prev, [[0.2, 0.0]], atol=1e-6)
    _, v_up, _ = step(p, v, jnp.array([4]))  # code mapping: 4 = +y
    np.testing.assert_allclose(v_up, [[0.0, 0.5]])


def test_contact_force_and_collision_penalty():
    env, params = jaxmcg.make("particle_merge-v0")
    goals = [[0.0, 5.0], [0.0, -5.0]]
    state = _state([[0.0, 0.0], [0.29, 0.0]], goals)
    _, _, force = physics_step(state.position, state.velocity, jnp.array([0, 0]))
    expect = 100 * 1e-3 * np.logaddexp(0, 10.0)  # 100·κ·softplus(10) ≈ 1.0
    np.testing.assert_allclose(force, [[-expect, 0], [expect, 0]], rtol=1e-4)
    assert abs(expect - 1.0) < 1e-4
    # pushed apart to 0.31 by the step: no collision after it
    _, s1, r, _, info = env.step_env(jax.random.PRNGKey(0), state, jnp.array([0, 0]), params)
    assert np.linalg.norm(s1.position[1] - s1.position[0]) > 0.3
    np.testing.assert_array_equal(info["collisions"], [0, 0])
    to_goal = np.linalg.norm(np.asarray(s1.position) - np.asarray(goals), axis=1)
    np.testing.assert_allclose(r, -to_goal, rtol=1e-6)
    # driving into each other (net force 5 - 1): still overlapping after the step, both get -1
    _, s2, r, _, info = env.step_env(jax.random.PRNGKey(0), state, jnp.array([2, 1]), params)
    np.testing.assert_allclose(s2.velocity[0, 0], 0.1 * (5 - expect), rtol=1e-4)
    np.testing.assert_array_equal(info["collisions"], [1, 1])
    to_goal = np.linalg.norm(np.asarray(s2.position) - np.asarray(goals), axis=1)
    np.testing.assert_allclose(r, -to_goal - 1.0, rtol=1e-6)
    # coincident agents: no NaN (the original divides by zero)
    _, _, f0 = physics_step(jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.array([0, 0]))
    assert np.isfinite(np.asarray(f0)).all()


def test_reached_and_done_need_all_agents():
    env, params = jaxmcg.make("particle_merge-v0")
    goals = [[0.5, 0.5], [-0.5, -0.5]]
    both = _state([[0.5, 0.54], [-0.5, -0.46]], goals)  # 0.04 away, at rest: stay within 0.05
    _, _, r, term, info = env.step_env(jax.random.PRNGKey(0), both, jnp.array([0, 0]), params)
    assert bool(term) and np.asarray(info["reached"]).all()
    one = _state([[0.5, 0.54], [-0.5, -0.44]], goals)  # agent 1 is 0.06 away
    _, _, _, term, info = env.step_env(jax.random.PRNGKey(0), one, jnp.array([0, 0]), params)
    assert not bool(term) and list(np.asarray(info["reached"])) == [True, False]


@pytest.mark.parametrize("name", ["antipodal", "intersection", "merge"])
def test_scenario_starts(name):
    env, params = jaxmcg.make(f"particle_{name}-v0", prob_random=0.0, initial_std=0.0)
    starts, goals, std = SCENARIOS[name]
    assert env.default_params.initial_std == std and env.default_params.prob_random == 0.2
    _, s = env.reset(jax.random.PRNGKey(0), params)
    np.testing.assert_allclose(s.position, starts)
    np.testing.assert_allclose(s.landmark, goals)
    assert env.num_agents == (2 if name == "merge" else 4)
    if name == "merge":  # the two straight paths cross (A-CM3-1)
        (a0, a1), (b0, b1) = np.asarray(starts), np.asarray(goals)  # agent k: a_k -> b_k
        t = np.linalg.solve(np.stack([b0 - a0, -(b1 - a1)], 1), a1 - a0)
        assert (0 < t).all() and (t < 1).all()
    # with the spec's noise and random starts: noise only on agents, random episodes in [-1, 1]^2
    env, params = jaxmcg.make(f"particle_{name}-v0", prob_random=0.5, initial_std=0.05)
    states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(1), 400),
                                                    params)[1]
    fixed = np.all(np.isclose(np.asarray(states.landmark), np.asarray(goals)), axis=(1, 2))
    assert 0.4 < fixed.mean() < 0.6
    dev = np.asarray(states.position)[fixed] - np.asarray(starts)
    assert 0.03 < dev.std() < 0.07
    assert np.abs(np.asarray(states.landmark)[~fixed]).max() <= 1.0


def test_observation_velocity_first():
    env, params = jaxmcg.make("particle_merge-v0")
    s = _state([[0.1, 0.2], [0.3, -0.4]], [[1.0, 1.5], [-1.0, -1.5]],
               velocity=[[0.5, -0.5], [1.0, 2.0]])
    obs = env.get_obs(s, params)
    np.testing.assert_allclose(obs[0], [0.5, -0.5, 0.1, 0.2, 1.0, 1.5, 0.5, 2.5, 0.2, -0.6],
                               rtol=1e-6)
    np.testing.assert_allclose(obs[1], [1.0, 2.0, 0.3, -0.4, -1.0, -1.5, -0.5, -2.5, -0.2, 0.6],
                               rtol=1e-6)
    _, _, _, _, info = env.step_env(jax.random.PRNGKey(0), s, jnp.array([0, 0]), params)
    np.testing.assert_allclose(info["state"], [[0.5, -0.5, 0.1, 0.2], [1.0, 2.0, 0.3, -0.4]])
    np.testing.assert_allclose(info["goal"], s.landmark)


def test_stage1_single_agent():
    env, params = jaxmcg.make("particle_stage1-v0")
    assert env.num_agents == 1 and params.max_steps_in_episode == 25
    obs, s = env.reset(jax.random.PRNGKey(3), params)
    assert obs.shape == (1, 6) and (np.abs(np.asarray(s.landmark)) <= 1).all()


def test_bad_parameters_rejected():
    assert_rejected_before_compiling(lambda: jaxmcg.make("particle_merge-v0", prob_random=1.5),
                                     ["prob_random=1.5"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("particle_merge-v0", num_agents=3),
                                     ["num_agents=3", "valid: 2"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("particle_stage1-v0", prob_random=0.2),
                                     ["prob_random=0.2", "valid: 1.0"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("particle_merge-v0", initial_std=-1.0),
                                     ["initial_std=-1.0"])
    from envs.particle_nav import ParticleNav
    assert_rejected_before_compiling(lambda: ParticleNav("spiral"), ["'spiral'", "antipodal"])
