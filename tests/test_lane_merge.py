"""The pure-JAX SUMO merge (cm3-hsd.md §4.3.2; checks §4.3.3 items 1-3) from hand-built scenes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling

import jaxmcg
from envs.lane_merge import EnvState, feasible_actions, filter_actions, sublane


def _scene(env, x, u, v, goal, counter=None, lat_rem=None):
    """A state with the given cars, all active."""
    x, u, v = (jnp.asarray(a, jnp.float32) for a in (x, u, v))
    n = x.shape[0]
    goal = jnp.asarray(goal, jnp.int32)
    active = jnp.ones((n,), bool)
    counter = jnp.ones((n,), jnp.int32) if counter is None else jnp.asarray(counter, jnp.int32)
    lat_rem = jnp.zeros((n,), jnp.float32) if lat_rem is None else jnp.asarray(lat_rem, jnp.float32)
    return EnvState(x=x, u=u, v=v, lat_rem=lat_rem, goal=goal, active=active, counter=counter,
                    obs=_observe(env, x, u, v, goal, active), time=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnums=0)
def _observe(env, *args):
    return env._observe(*args)


def _episode_returns(env, params, policy, keys):
    """Summed rewards [E, N], episode lengths [E] and done flags [E] of `policy(state) -> actions`."""
    return _runner(env, policy)(keys, params)


def _runner(env, policy):
    def one(key, params):
        _, s = env.reset(key, params)

        def body(carry, _):
            s, done, total, length = carry
            _, s2, r, term, _ = env.step_env(key, s, policy(s), params)
            total = total + jnp.where(done, 0.0, r)
            length = length + (~done)
            return (s2, done | term, total, length), None

        zeros = jnp.zeros((env.num_agents,))
        (_, done, total, length), _ = jax.lax.scan(body, (s, False, zeros, 0), None, length=45)
        return total, length, done
    return jax.jit(jax.vmap(one, in_axes=(0, None)))


_NOOP = lambda s: jnp.zeros(2, jnp.int32)  # noqa: E731  drive straight


@pytest.mark.parametrize("preset, expect", [("C3", 15.0), ("C4", 10.0)])
def test_drive_straight_scores(preset, expect):
    env, params = jaxmcg.make("lane_merge-v0", preset=preset, prob_random=0.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 64)  # random departures (σ = 0.5 s)
    total, length, done = _episode_returns(env, params, _NOOP, keys)
    assert np.asarray(done).all() and np.asarray(length).max() < 40
    np.testing.assert_array_equal(np.asarray(total).sum(1), expect)  # exact: 15.00 / 10.00


def test_drive_straight_c1_and_uniform_c2():
    env, params = jaxmcg.make("lane_merge-v0")
    run = _runner(env, _NOOP)
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    total, length, done = run(keys, params.replace(prob_random=0.0))  # C1, random departures
    assert np.asarray(done).all() and np.asarray(length).max() < 40
    np.testing.assert_array_equal(np.asarray(total).sum(1), 10.0)  # exact 10.00
    total, _, done = run(keys, params.replace(prob_random=1.0))  # C2: uniform lanes and goals
    assert np.asarray(done).all()
    assert abs(float(np.asarray(total).sum(1).mean()) - 13.75) < 0.2  # SE ≈ 0.05
    assert jaxmcg.make("lane_merge-v0", preset="C2")[1].prob_random == 1.0


def test_kinematics_and_speed_penalty():
    env, params = jaxmcg.make("lane_merge_stage1-v0")
    assert (params.prob_random, params.depart_sigma) == (1.0, 0.4)  # Stage 1 (§4.3.2)
    s = _scene(env, [6.0], [4.8], [30.0], [1])
    step = jax.jit(env.step_env)
    for t in range(1, 13):
        _, s, r, _, _ = step(jax.random.PRNGKey(0), s, jnp.array([1]), params)
        if t == 10:
            np.testing.assert_allclose(s.v, [35.0], rtol=1e-6)
        assert float(r[0]) == np.float32(-0.1 if t >= 12 else 0.0), (t, s.v, r)  # 36 >= 35.7 > 35.5
    # x uses the new speed: 6 + 0.2 * (30.5 + 31 + ... + 36)
    np.testing.assert_allclose(s.x, [6 + 0.2 * sum(30 + 0.5 * k for k in range(1, 13))], rtol=1e-5)
    # lateral: a LEFT request moves 0.4 m in each of two steps (maxSpeedLat 2 m/s)
    s = _scene(env, [6.0], [4.8], [30.0], [1])
    _, s, _, _, _ = step(jax.random.PRNGKey(0), s, jnp.array([3]), params)
    np.testing.assert_allclose([s.u[0], s.lat_rem[0]], [5.2, 0.4], rtol=1e-5)
    _, s, _, _, _ = step(jax.random.PRNGKey(0), s, jnp.array([0]), params)
    np.testing.assert_allclose([s.u[0], s.lat_rem[0]], [5.6, 0.0], atol=1e-5)
    assert int(sublane(s.u)[0]) == 7


def test_feasibility_filter():
    one = jnp.ones((1,), bool)
    f = lambda a, x, u, v, present=one: np.asarray(jax.jit(filter_actions)(  # noqa: E731
        jnp.asarray(a), jnp.asarray(x, jnp.float32), jnp.asarray(u, jnp.float32),
        jnp.asarray(v, jnp.float32), present))
    assert f([1], [0.0], [4.8], [50.0])[0] == 0  # ACC at 50 -> NOOP
    assert f([2], [0.0], [4.8], [50.0])[0] == 2  # DEC allowed at 50 ("else" branch)
    assert f([2], [0.0], [4.8], [10.0])[0] == 0  # DEC at 10 -> NOOP
    assert f([3], [0.0], [11.2], [30.0])[0] == 3  # lane 3 centre: LEFT still allowed
    assert f([3], [0.0], [11.2 + 0.8], [30.0])[0] == 0  # lane 3, offset 1: LEFT -> NOOP
    assert f([4], [0.0], [1.6 - 0.8], [30.0])[0] == 0  # lane 0, offset -1: RIGHT -> NOOP
    assert f([4], [0.0], [1.6], [30.0])[0] == 4
    two = jnp.ones((2,), bool)
    # a slower car 10 m ahead (gap 5 m, closing 5 m/s: TTC 1 s), same lane: NOOP, ACC -> DEC
    np.testing.assert_array_equal(f([0, 0], [0.0, 10.0], [4.8, 4.8], [30.0, 25.0], two), [2, 0])
    np.testing.assert_array_equal(f([1, 0], [0.0, 10.0], [4.8, 4.8], [30.0, 25.0], two), [2, 0])
    # at v <= 10 DEC is out too: the first feasible is LEFT
    np.testing.assert_array_equal(f([0, 0], [0.0, 7.0], [4.8, 4.8], [10.0, 5.0], two), [3, 0])
    # TTC 2 s exactly still overrides; 2.2 s does not; 1.9 m apart laterally does not
    np.testing.assert_array_equal(f([0, 0], [0.0, 15.0], [4.8, 4.8], [30.0, 25.0], two), [2, 0])
    np.testing.assert_array_equal(f([0, 0], [0.0, 16.0], [4.8, 4.8], [30.0, 25.0], two), [0, 0])
    np.testing.assert_array_equal(f([0, 0], [0.0, 10.0], [4.8, 6.7], [30.0, 25.0], two), [0, 0])
    # an absent car is no obstacle
    absent = jnp.array([True, False])
    np.testing.assert_array_equal(f([0, 0], [0.0, 10.0], [4.8, 4.8], [30.0, 25.0], absent), [0, 0])
    ok = np.asarray(jax.jit(feasible_actions)(jnp.zeros(1), jnp.full(1, 4.8), jnp.full(1, 30.0), one))
    assert ok.all()


def test_reward_branches():
    env, params = jaxmcg.make("lane_merge-v0")
    step = jax.jit(env.step_env)
    key = jax.random.PRNGKey(0)
    # goal centre (+10) and off-centre 10·(1 - 8/16) = 5; the second ego far behind keeps going
    s = _scene(env, [189.0, 50.0], [11.2, 8.0], [30.0, 30.0], [3, 0])
    _, s1, r, term, info = step(key, s, jnp.array([0, 0]), params)
    np.testing.assert_allclose(r, [10.0, 0.0])
    assert list(np.asarray(info["branch"])) == [2, 0] and not bool(term)
    assert list(np.asarray(s1.active)) == [False, True]
    frozen = np.asarray(s1.obs[0])
    _, s2, r, _, _ = step(key, s1, jnp.array([0, 0]), params)
    np.testing.assert_array_equal(s2.obs[0], frozen)  # terminated egos freeze
    np.testing.assert_array_equal(r[0], 0.0)
    s = _scene(env, [189.0, 189.0], [4.8, 8.0], [30.0, 30.0], [3, 0])
    _, _, r, term, info = step(key, s, jnp.array([0, 0]), params)
    np.testing.assert_allclose(r, [5.0, 5.0])
    assert bool(term) and list(np.asarray(info["branch"])) == [4, 4]
    # timeout on the max_step-th step (-10), unless the goal is reached on it; speed penalty on top
    s = _scene(env, [100.0, 189.0], [4.8, 11.2], [36.0, 30.0], [1, 3], counter=[40, 40])
    _, _, r, term, info = step(key, s, jnp.array([0, 0]), params)
    np.testing.assert_allclose(r, [-10.1, 10.0], rtol=1e-6)
    assert list(np.asarray(info["branch"])) == [3, 2] and bool(term)
    # physical collision: overlapping footprints, -1 each (no speed penalty), episode over
    s = _scene(env, [50.0, 47.0], [4.8, 5.6], [36.0, 30.0], [1, 1])
    _, _, r, term, info = step(key, s, jnp.array([0, 0]), params)
    np.testing.assert_allclose(r, [-1.0, -1.0])
    assert bool(term) and bool(info["collision"]) and list(np.asarray(info["branch"])) == [1, 1]
    # rule-based side collision: LEFT with a car alongside 2 sublanes to the left (no overlap)
    s = _scene(env, [50.0, 50.0], [4.8, 7.1], [30.0, 30.0], [3, 0])
    _, s1, r, term, info = step(key, s, jnp.array([3, 0]), params)
    assert abs(float(s1.u[1] - s1.u[0])) > 1.8  # 1.9 m: no overlap, grid column 2
    np.testing.assert_allclose(r, [-1.0, 0.0])
    assert bool(term) and list(np.asarray(info["branch"])) == [5, 0]
    # the same move to the right side (RIGHT with the car on the left) is no collision
    _, _, r, term, _ = step(key, s, jnp.array([4, 0]), params)
    assert not bool(term) and list(np.asarray(r)) == [0.0, 0.0]


def test_grid_indices():
    env, params = jaxmcg.make("lane_merge-v0")
    lay = env.obs_layout
    s = _scene(env, [50.0, 52.5], [4.8, 4.8], [30.0, 35.0], [1, 1])
    grid = np.asarray(s.obs[0, slice(*lay["others"])]).reshape(13, 9, 2)
    occupied = {tuple(rc) for rc in np.argwhere(grid[:, 1:8, 0] == 1) + [0, 1]}
    assert occupied == {(5, 4), (6, 4), (7, 4)}  # ego rows 5-6, the car ahead rows 6-7 (overlap)
    np.testing.assert_allclose(grid[7, 4, 1], 5.0 / 25, rtol=1e-5)
    np.testing.assert_allclose(grid[0, 4, 1], -30.0 / 25, rtol=1e-6)  # empty: -v/25
    # sublane 6: columns 0..8 are sublanes 10..2, all on the road
    assert grid[:, :, 0].sum() == 3
    s = _scene(env, [50.0, 50.0], [4.8, 8.0], [30.0, 30.0], [1, 1])  # one lane left, alongside
    grid = np.asarray(s.obs[0, slice(*lay["others"])]).reshape(13, 9, 2)
    assert set(np.argwhere(grid[:, 0, 0] == 1)[:, 0]) == {5, 6}
    # lane 0 centre (sublane 2): columns 6, 7, 8 are sublanes 0, -1, -2: marked off-road
    s = _scene(env, [50.0], [1.6], [30.0], [0])
    grid = np.asarray(s.obs[0, slice(*lay["others"])]).reshape(13, 9, 2)
    np.testing.assert_array_equal(grid[:, 6:, 0], 1.0)
    assert grid[:, :6, 0].sum() == 2
    o_self = np.asarray(s.obs[0, :7])
    np.testing.assert_allclose(o_self, [30 / 29, 0.0, 140 / 200, 1, 0, 0, 0], rtol=1e-6)


def test_scripted_cooperative_merge_scores_20():
    """§4.3.3 item 3 on C1 with equal departures: agent 0 ACCs and agent 1 DECs for 5 steps, then
    they alternate LEFT / RIGHT with ACC / NOOP until at their goal centres, then ACC (below 35.7)."""
    def plan(s):
        sig = sublane(s.u)
        phase1 = s.time < 5
        odd = (s.time - 5) % 2 == 1
        speed_up = jnp.where(s.v < 35.4, 1, 0)
        a0 = jnp.where(sig[0] != 14, jnp.where(odd, speed_up[0], 3), speed_up[0])
        a1 = jnp.where(sig[1] != 2, jnp.where(odd, speed_up[1], 4), speed_up[1])
        return jnp.where(phase1, jnp.array([1, 2]), jnp.stack([a0, a1]))

    env, params = jaxmcg.make("lane_merge-v0", prob_random=0.0, depart_sigma=0.0)
    run = _runner(env, plan)
    for max_step in (40, 33):  # A-CM3-9: the plan fits the thesis' 33 steps as well
        total, length, done = run(jax.random.PRNGKey(0)[None],
                                  params.replace(max_steps_in_episode=max_step))
        np.testing.assert_allclose(np.asarray(total)[0], [10.0, 10.0])
        assert bool(done[0]) and int(length[0]) == 31 <= max_step
    # with only 4 steps of separation the cars touch while crossing: collision
    early = lambda s: jnp.where(s.time < 4, jnp.array([1, 2]), jnp.array([3, 4]))  # noqa: E731
    total, _, _ = _episode_returns(env, params, early, jax.random.PRNGKey(0)[None])
    assert np.asarray(total)[0].sum() < 0


def test_reset_lanes_and_same_lane_gap():
    env, params = jaxmcg.make("lane_merge-v0")
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(2), 2000)
    states = reset(keys, params.replace(prob_random=1.0))[1]
    lane = np.floor(np.asarray(states.u) / 3.2).astype(int)
    same = lane[:, 0] == lane[:, 1]
    assert 0.2 < same.mean() < 0.3
    dx = np.abs(np.asarray(states.x)[:, 0] - np.asarray(states.x)[:, 1])
    assert (dx[same] >= 35.0 - 1e-4).all()
    assert (np.asarray(states.x) >= 6.0).all() and (np.asarray(states.v) == 30.0).all()
    assert set(np.unique(np.asarray(states.goal))) == {0, 1, 2, 3}
    states = reset(keys, params)[1]  # the C1 preset with probability 0.8 (A-CM3-10)
    c1 = (np.asarray(states.goal) == [3, 0]).all(1) & np.isclose(states.u, [4.8, 8.0]).all(1)
    assert 0.77 < c1.mean() < 0.85  # 0.8 + 0.2/256


def test_bad_parameters_rejected():
    assert_rejected_before_compiling(lambda: jaxmcg.make("lane_merge-v0", preset="C5"),
                                     ["'C5'", "C1"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("lane_merge-v0", lateral_mode="smooth"),
                                     ["'smooth'", "rate"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("lane_merge-v0", prob_random=-0.1),
                                     ["prob_random=-0.1"])
    assert_rejected_before_compiling(
        lambda: jaxmcg.make("lane_merge-v0", preset="C2", prob_random=0.2), ["C2", "valid: 1.0"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("lane_merge-v0", depart_sigma=-1.0),
                                     ["depart_sigma=-1.0"])


def test_outcome_rates_of_a_batch():
    from envs.lane_merge import LaneMerge

    branch = np.zeros((3, 2, 2), np.int32)  # [time, env, agent]
    branch[1, 0] = [2, 1]  # env 0: agent 0 at its goal centre, agent 1 collides
    branch[0, 1, 0] = 1  # env 1: agent 0 collides at once, cutting agent 1's episode short
    branch[2, 1] = [4, 4]  # padding after env 1's end: not counted
    valid = np.array([[1, 1], [1, 0], [0, 0]], np.float32)
    rates = {k: float(v) for k, v in LaneMerge.outcome_rates({"branch": jnp.asarray(branch)},
                                                             jnp.asarray(valid)).items()}
    assert rates == {"collision": 0.5, "goal_centre": 0.25, "timeout": 0.0, "off_centre": 0.0,
                     "side_collision": 0.0, "ended_by_others": 0.25}
