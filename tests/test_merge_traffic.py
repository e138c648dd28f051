"""The lane merge's heavy traffic (Table A.1; cm3-hsd.md §4.3.1-4.3.2): the background stream from
hand-built scenes, its statistics, and egos driving straight through it."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling, check_env

import jaxmcg
from envs import merge_traffic as mt


def _traffic(x, lane, v, truck=None, v_des=30.0, slots=8, queue=(0, 0, 0, 0)):
    """Background vehicles in the first slots (cars unless `truck`), the rest free."""
    n = len(x)
    truck = np.zeros(n, bool) if truck is None else np.asarray(truck)
    kind = np.where(truck[:, None], mt.TRUCK, mt.CAR)
    pad = lambda a, fill=0.0: jnp.asarray(np.concatenate([a, np.full(slots - n, fill)]))  # noqa: E731
    return mt.Traffic(
        x=pad(np.asarray(x, np.float32)).astype(jnp.float32), lane=pad(np.asarray(lane), 0).astype(jnp.int32),
        v=pad(np.asarray(v, np.float32)).astype(jnp.float32),
        v_des=pad(np.full(n, v_des, np.float32)).astype(jnp.float32),
        length=pad(kind[:, 0]).astype(jnp.float32), width=pad(kind[:, 1]).astype(jnp.float32),
        accel=pad(kind[:, 2]).astype(jnp.float32), decel=pad(kind[:, 3]).astype(jnp.float32),
        active=pad(np.ones(n, bool), False).astype(bool), queue=jnp.asarray(queue, jnp.int32))


_NO_EGO = (jnp.zeros(0), jnp.zeros(0), jnp.zeros(0), jnp.zeros(0, bool), 5.0, 1.8)


@functools.partial(jax.jit, static_argnums=())
def _move(key, traffic, ego_x, ego_u, ego_v, ego_present):
    return mt.move(key, traffic, ego_x, ego_u, ego_v, ego_present, 5.0, 1.8, 0.2)


def test_krauss_step_by_hand():
    # follower 30 m/s, 20 m behind a 20 m/s car's front (gap 20 - 5 - 2.5 = 12.5 m):
    # v_safe = 20 + (12.5 - 20) / (50 / 9 + 1) = 18.856; the leader itself is free (min(v + a dt, 30))
    tr = _traffic([50.0, 30.0], [1, 1], [20.0, 30.0])
    out = _move(jax.random.PRNGKey(0), tr, *_NO_EGO[:4])
    v_safe = 20 + (12.5 - 20) / (50 / 9 + 1)
    dawdle = mt.DAWDLE * 2.6 * 0.2
    v = np.asarray(out.v)
    assert v_safe - dawdle - 1e-5 <= v[1] <= v_safe + 1e-5
    assert 20.52 - dawdle - 1e-5 <= v[0] <= 20.52 + 1e-5
    np.testing.assert_allclose(np.asarray(out.x)[:2], [50 + 0.2 * v[0], 30 + 0.2 * v[1]], rtol=1e-6)
    # another lane is no leader; a truck's width (2.55) reaches no neighbouring lane centre
    tr = _traffic([50.0, 30.0], [2, 1], [20.0, 30.0], truck=[True, False])
    assert float(_move(jax.random.PRNGKey(0), tr, *_NO_EGO[:4]).v[1]) >= 30.0 - 0.26 - 1e-5
    # an ego is a leader: a stopped ego 20 m ahead brakes the follower; without it, free
    tr = _traffic([30.0], [1], [30.0])
    ego = (jnp.array([50.0]), jnp.array([4.8]), jnp.array([0.0]))
    with_ego = _move(jax.random.PRNGKey(0), tr, *ego, jnp.array([True]))
    without = _move(jax.random.PRNGKey(0), tr, *ego, jnp.array([False]))
    assert float(with_ego.v[0]) < 15.0 < float(without.v[0])


def test_follower_stops_behind_a_stopped_car_without_touching_it():
    """Krauss is collision-free behind a braking leader: a stopped car ahead, many steps."""
    tr = _traffic([100.0, 40.0, 5.0], [0, 0, 0], [0.0, 30.0, 30.0], truck=[True, False, False],
                  v_des=30.0)
    tr = tr.replace(v_des=tr.v_des.at[0].set(0.0))  # the truck stays put
    step = jax.jit(lambda k, t: mt.move(k, t, *_NO_EGO[:4], 5.0, 1.8, 0.2))
    for i in range(200):
        tr = step(jax.random.PRNGKey(i), tr)
        x, length = np.asarray(tr.x), np.asarray(tr.length)
        assert x[1] <= x[0] - length[0] and x[2] <= x[1] - length[1], i
    v = np.asarray(tr.v)
    assert v[1] < 1e-3 and v[2] < 1e-3  # all queued behind the truck
    assert x[0] - length[0] - x[1] < 5.0 and x[1] - length[1] - x[2] < 5.0  # about minGap apart


def test_insertion_gap_removal_and_slots():
    none = jnp.zeros(0)
    ins = jax.jit(lambda k, t: mt.insert(k, t, none, none, jnp.zeros(0, bool), 5.0, 0.2))
    # lane 0: last rear at 31.5 < 29.1 + 2.5 blocks; lane 1: 31.7 lets the queue head in
    tr = _traffic([36.5, 36.7], [0, 1], [29.0, 29.0], queue=(1, 1, 0, 0))
    out = ins(jax.random.PRNGKey(0), tr)
    assert int(out.active.sum()) == 3
    new = int(np.argmax(np.asarray(out.active) & (np.asarray(out.x) == 0.0)))
    assert int(out.lane[new]) == 1 and float(out.v[new]) == np.float32(mt.DEPART_SPEED)
    assert list(np.asarray(out.queue))[:2] == [1, 0]
    # no free slot: nothing enters, the vehicle stays queued
    full = _traffic([100.0, 120.0], [0, 1], [29.0, 29.0], slots=2, queue=(0, 1, 0, 0))
    out = ins(jax.random.PRNGKey(0), full)
    assert int(out.active.sum()) == 2 and int(out.queue[1]) == 1
    # removal once the rear passes 200 m
    tr = _traffic([195.0, 200.0], [2, 3], [30.0, 30.0])  # rears at about 196 and 201 after it
    out = _move(jax.random.PRNGKey(0), tr, *_NO_EGO[:4])
    np.testing.assert_array_equal(np.asarray(out.active)[:2], [True, False])


def test_stream_statistics():
    """After the warm-up: lane occupancy and trucks as the route file implies, no overlaps."""
    warm = jax.jit(jax.vmap(lambda k: mt.warm_up(k, mt.SLOTS, 300, 0.2)))
    tr = warm(jax.random.split(jax.random.PRNGKey(0), 64))
    act, lane = np.asarray(tr.active), np.asarray(tr.lane)
    per_lane = [(act & (lane == ln)).sum(1).mean() for ln in range(4)]
    # lanes 2-3: 0.2 vehicles/s at about 30 m/s fill 200 m with about 1.3; lanes 0-1 saturate at
    # the insertion gap (a vehicle per 36-40 m, about 5 on the road) and build a queue
    assert 4.0 < per_lane[0] < 6.5 and 4.0 < per_lane[1] < 6.5
    assert 0.8 < per_lane[2] < 2.0 and 0.8 < per_lane[3] < 2.0
    queue = np.asarray(tr.queue)
    assert queue[:, :2].mean() > 5 and queue[:, 2:].mean() < 1
    truck = np.asarray(tr.length) > 10
    share = [(truck & act & (lane == ln)).sum() / (act & (lane == ln)).sum() for ln in range(4)]
    assert 0.1 < share[0] < 0.35 and 0.03 < share[1] < 0.2 and share[2] == share[3] == 0
    assert act.sum(1).max() < mt.SLOTS // 2  # the slots are ample
    x, length = np.asarray(tr.x), np.asarray(tr.length)
    for e in range(64):
        for ln in range(4):
            m = act[e] & (lane[e] == ln)
            order = np.argsort(x[e][m])
            xs, ls = x[e][m][order], length[e][m][order]
            assert (xs[1:] - ls[1:] >= xs[:-1]).all()  # nobody overlaps its leader


def _straight(env, params, n_steps, key):
    """Drive straight (NOOP) for `n_steps` steps of one stream (auto-resets continue it): the
    summed rewards, the episodes ended, whether any agent-episode ended in a collision branch,
    and the grid cells occupied by background vehicles over all steps."""
    def body(carry, k):
        s, total, ended, crashed, seen = carry
        obs, s, r, term, trunc, info = env.step(k, s, jnp.zeros(2, jnp.int32), params)
        fin = info["final_obs"][:, 7:].reshape(2, 13, 9, 2)[..., 0]
        egos_only = env._observe(s.x, s.u, s.v, s.goal, s.active)[:, 7:].reshape(2, 13, 9, 2)[..., 0]
        seen = seen + jnp.where(term | trunc, 0.0, jnp.sum(fin - egos_only))
        crashed = crashed | jnp.any((info["branch"] == 1) | (info["branch"] == 5))
        return (s, total + r, ended + (term | trunc), crashed, seen), None

    _, s = env.reset(key, params)
    carry = (s, jnp.zeros(2), 0, False, 0.0)
    (_, total, ended, crashed, seen), _ = jax.lax.scan(body, carry, jax.random.split(key, n_steps))
    return total, ended, crashed, seen


@pytest.mark.parametrize("preset, expect", [("C1", 10.0), ("C3", 15.0),
                                            pytest.param("C4", 10.0, marks=pytest.mark.slow)])
def test_drive_straight_through_heavy_traffic(preset, expect):
    """Table A.1's COMA entries are exactly 10.00 (C1) and 15.00 (C3), and COMA drives straight
    [T L525]: a straight driver meets no collision in the original's heavy traffic, because SUMO
    delays an ego's insertion until its lane has room and the background follows it safely. So
    must ours, over consecutive episodes of one stream (an episode's reward comes at its end)."""
    env, params = jaxmcg.make("lane_merge-v0", traffic="heavy", preset=preset, prob_random=0.0)
    run = jax.jit(jax.vmap(functools.partial(_straight, env, params, 160)))
    total, ended, crashed, seen = map(np.asarray, run(jax.random.split(jax.random.PRNGKey(3), 8)))
    assert (ended >= 4).all() and not crashed.any()
    np.testing.assert_allclose(total.sum(-1), expect * ended, rtol=1e-6)
    assert (seen > 0).all()  # the egos' grids did show background vehicles


def test_the_stream_continues_across_episodes():
    env, params = jaxmcg.make("lane_merge-v0", traffic="heavy", preset="C1", prob_random=0.0)
    _, s = env.reset(jax.random.PRNGKey(0), params)
    assert int(s.traffic.active.sum()) > 5
    step = jax.jit(env.step)
    for t in range(60):  # longer than an episode
        before = s.traffic
        _, s, _, term, trunc, _ = step(jax.random.PRNGKey(t), s, jnp.zeros(2, jnp.int32), params)
        if bool(term | trunc):
            break
    else:
        raise AssertionError("no episode ended in 60 steps")
    # every background vehicle well inside the road before the last step is still there, further
    # on (its random desired speed identifies it)
    old = np.asarray(before.active) & (np.asarray(before.x) < 100.0)
    assert old.sum() >= 3
    new_active = np.asarray(s.traffic.active)
    for i in np.nonzero(old)[0]:
        j = np.nonzero(new_active & (np.asarray(s.traffic.v_des) == np.asarray(before.v_des)[i]))[0]
        assert len(j) == 1 and float(s.traffic.x[j[0]]) > float(before.x[i])
        assert int(s.traffic.lane[j[0]]) == int(before.lane[i])
    # an environment without a world beyond the episode resets afresh (the base class default)
    plain, plain_params = jaxmcg.make("lane_merge-v0")
    obs_a, _ = plain.reset_from(jax.random.PRNGKey(1), None, plain_params)
    obs_b, _ = plain.reset(jax.random.PRNGKey(1), plain_params)
    np.testing.assert_allclose(obs_a, obs_b, atol=1e-6)


def test_background_in_observation_filter_and_collisions():
    env, params = jaxmcg.make("lane_merge-v0", traffic="heavy", prob_random=0.0)
    _, s = env.reset(jax.random.PRNGKey(0), params)
    lay = env.obs_layout
    step = jax.jit(env.step_env)
    key, noop = jax.random.PRNGKey(0), jnp.zeros(2, jnp.int32)

    def scene(traffic, x=(50.0, 50.0), u=(4.8, 8.0)):
        x, u = jnp.asarray(x), jnp.asarray(u)
        return s.replace(x=x, u=u, v=jnp.array([30.0, 30.0]), lat_rem=jnp.zeros(2),
                         active=jnp.ones(2, bool), counter=jnp.ones(2, jnp.int32),
                         traffic=traffic, time=jnp.zeros((), jnp.int32))

    # a 20 m/s truck with its front 10 m ahead of ego 0 (lane 1): 4 rows ahead, 7 rows long
    truck = _traffic([60.0], [1], [20.0], truck=[True], slots=mt.SLOTS)
    obs = env._observe(jnp.array([50.0, 50.0]), jnp.array([4.8, 8.0]), jnp.array([30.0, 30.0]),
                       s.goal, jnp.ones(2, bool), truck)
    grid = np.asarray(obs[0, slice(*lay["others"])]).reshape(13, 9, 2)
    assert set(np.argwhere(grid[:, 4, 0] == 1)[:, 0]) == set(range(4, 11))
    np.testing.assert_allclose(grid[10, 4, 1], -10.0 / 25, rtol=1e-5)
    # the TTC filter sees it: front at 70 m, gap 70 - 16.5 - 50 = 3.5 m, closing 10 m/s: NOOP ->
    # DEC for ego 0; ego 1 is a lane away
    _, _, _, _, info = step(key, scene(truck.replace(x=truck.x.at[0].set(70.0))), noop, params)
    assert list(np.asarray(info["executed_action"])) == [2, 0]
    # overlapping a background vehicle: -1 for the ego involved, the episode ends for both
    moving = truck.replace(x=truck.x.at[0].set(62.0), v=truck.v.at[0].set(30.0))
    _, _, r, term, info = step(key, scene(moving), noop, params)
    assert bool(term) and list(np.asarray(info["branch"])) == [1, 0]
    np.testing.assert_allclose(r, [-1.0, 0.0])
    # two background vehicles overlapping (a stopped one and its stopped follower) end the
    # episode with 0 for the egos
    two = _traffic([120.0, 118.0], [3, 3], [0.0, 0.0], v_des=0.0, slots=mt.SLOTS)
    _, _, r, term, info = step(key, scene(two), noop, params)
    assert bool(term) and bool(info["collision"]) and list(np.asarray(r)) == [0.0, 0.0]
    assert list(np.asarray(info["branch"])) == [0, 0]
    # the side-collision rule counts background cars: LEFT to 1.9 m from a car alongside in
    # lane 2 (grid column 2, no overlap) is -1; NOOP next to it is nothing
    car = _traffic([50.0], [2], [30.0], slots=mt.SLOTS)
    beside = scene(car, x=(50.0, 10.0), u=(5.7, 1.6))
    _, s1, r, term, info = step(key, beside, jnp.array([3, 0]), params)
    assert abs(float(s1.u[0]) - 6.1) < 1e-5
    assert bool(term) and list(np.asarray(info["branch"])) == [5, 0]
    np.testing.assert_allclose(r, [-1.0, 0.0])
    _, _, r, term, _ = step(key, beside, noop, params)
    assert not bool(term) and list(np.asarray(r)) == [0.0, 0.0]


def test_egos_wait_for_room_in_their_lane():
    """An ego whose lane is blocked at x = 0 enters as soon as the last vehicle's rear is 30 m
    ahead (`min_insert_gap` - 5), before the lane's queued background; an ego on a free lane enters
    at its departure step and drives on meanwhile; then one NOOP step."""
    tr = _traffic([12.0], [1], [20.0], slots=8)  # rear at 7 m, speeding up from 20 m/s
    x, out = jax.jit(lambda k, t: mt.insert_egos(k, t, jnp.array([1, 3]), jnp.array([1, 1]), 30.0,
                                                5.0, 1.8, 30.0, 0.2))(jax.random.PRNGKey(0), tr)
    x = np.asarray(x)
    assert x[0] == pytest.approx(6.0)  # entered on the last loop step, then the NOOP step
    steps = x[1] / 6.0  # ego 1: in at step 1, then 6 m per step
    assert steps == round(steps) and 5 <= steps <= 8  # 23 m to open at 20-25 m/s
    gap = float(out.x[0] - out.length[0]) - x[0]
    assert 24.0 <= gap < 36.2  # 30 m or more on entering, and not a step later than needed
    in_lane1 = np.asarray(out.active) & (np.asarray(out.lane) == 1)
    assert in_lane1.sum() == 1  # nobody from lane 1's queue went ahead of the ego


def test_bad_traffic_rejected():
    assert_rejected_before_compiling(lambda: jaxmcg.make("lane_merge-v0", traffic="dense"),
                                     ["'dense'", "off, heavy"])


def test_env_contract_in_heavy_traffic():
    # 16 environments: every step computes the auto-reset, whose insertion loop runs as long as
    # the slowest environment's egos wait (the contract test's 1,024 take minutes to compile and run)
    check_env("lane_merge-v0", n_envs=16, traffic="heavy", preset="C4", prob_random=0.0)
