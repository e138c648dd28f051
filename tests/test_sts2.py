"""STS2 (cm3-hsd.md §6; validation §8.4): hand-built ticks, layouts, and the §6.11 reference
statistics of the original simulator (the full-size comparison is `slow`)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling

import jaxmcg
from envs.sts2 import (
    EVENTS,
    ROLE_EVENTS,
    STUNNED,
    EnvState,
    _intercept_terms,
    collide,
    global_state,
    move,
    on_chance,
    role_events,
    start_play,
    tick,
)

_move, _collide = jax.jit(move), jax.jit(collide)
ENV, PARAMS = jaxmcg.make("sts2-v0")
_step = jax.jit(ENV.step_env)  # one compilation for every hand-built step below


def _state(position, controller, action_time=None, velocity=None, time=0):
    position = jnp.asarray(position, jnp.float32)
    return EnvState(
        position=position,
        velocity=jnp.zeros((6, 2)) if velocity is None else jnp.asarray(velocity, jnp.float32),
        action=jnp.zeros((6,), jnp.int32),
        action_time=jnp.zeros((6,), jnp.int32) if action_time is None
        else jnp.asarray(action_time, jnp.int32),
        controller=jnp.int32(controller), score=jnp.zeros((2,), jnp.int32),
        time=jnp.int32(time))


# far apart, nobody touching: home at z > 0, away at z < 0
SPREAD = [[-6, 10], [0, 10], [6, 10], [-6, -10], [0, -10], [6, -10]]


def test_motion_model_and_boards():
    p, v = jnp.zeros((6, 2)), jnp.zeros((6, 2))
    up = jnp.zeros((6, 2)).at[0].set([0.0, 1.0])
    zs = []
    for _ in range(40):
        p, v = _move(p, v, up, jnp.zeros(6, jnp.int32))
        zs.append(float(v[0, 1]))
    np.testing.assert_allclose(zs[:3], [0.05, 0.095, 0.1355], rtol=1e-5)
    assert zs[-1] < 0.5 and zs[-1] > 0.49 and all(b > a for a, b in zip(zs, zs[1:]))
    np.testing.assert_array_equal(v[1:], 0.0)  # no input: glide at constant (zero) velocity
    # no friction: gliding keeps the velocity; a stunned player's input is ignored
    v0 = jnp.zeros((6, 2)).at[0].set([0.3, 0.0])
    p1, v1 = _move(jnp.zeros((6, 2)), v0, up, jnp.zeros(6, jnp.int32).at[0].set(3))
    np.testing.assert_allclose(v1[0], [0.3, 0.0])
    np.testing.assert_allclose(p1[0], [0.3, 0.0])
    # diagonal input is normalized; velocity orthogonal to the input is not damped
    diag = jnp.zeros((6, 2)).at[0].set([1.0, 1.0])
    _, v2 = _move(jnp.zeros((6, 2)), jnp.zeros((6, 2)), diag, jnp.zeros(6, jnp.int32))
    np.testing.assert_allclose(v2[0], [0.05 / np.sqrt(2)] * 2, rtol=1e-5)
    # boards: clamp to 8.25 / 17.25 and zero the clamped component only
    p = jnp.zeros((6, 2)).at[0].set([8.2, 17.0])
    p3, v3 = _move(p, jnp.zeros((6, 2)).at[0].set([0.3, 0.4]), jnp.zeros((6, 2)),
                   jnp.zeros(6, jnp.int32))
    np.testing.assert_allclose(p3[0], [8.25, 17.25])
    np.testing.assert_array_equal(v3[0], [0.0, 0.0])
    p4, v4 = _move(jnp.zeros((6, 2)).at[0].set([8.2, 0.0]), jnp.zeros((6, 2)).at[0].set([0.3, 0.4]),
                   jnp.zeros((6, 2)), jnp.zeros(6, jnp.int32))
    np.testing.assert_allclose(p4[0], [8.25, 0.4], rtol=1e-6)
    np.testing.assert_allclose(v4[0], [0.0, 0.4], rtol=1e-6)


def test_collision_push_out_and_check():
    pos = jnp.asarray(SPREAD, jnp.float32).at[1].set([0.0, 0.0]).at[4].set([1.0, 0.0])
    vel = jnp.zeros((6, 2)).at[1].set([0.2, 0.0]).at[4].set([-0.4, 0.1])
    # the away player 4 holds the puck; home 1 is free (action_time 0): it checks 4
    p, v, action, at, ctrl, ev = _collide(pos, vel, jnp.zeros(6, jnp.int32),
                                          jnp.zeros(6, jnp.int32), jnp.int32(4))
    np.testing.assert_allclose(p[1], [-0.2575, 0.0], rtol=1e-6)
    np.testing.assert_allclose(p[4], [1.2575, 0.0], rtol=1e-6)
    assert abs(float(jnp.linalg.norm(p[4] - p[1])) - 1.515) < 1e-6
    np.testing.assert_allclose(v[1], [-0.1, 0.05], rtol=1e-6)
    np.testing.assert_allclose(v[4], [-0.1, 0.05], rtol=1e-6)
    assert int(ctrl) == 1 and int(action[4]) == STUNNED
    assert int(at[4]) == 20 and int(at[1]) == 15
    assert int(ev[0, EVENTS.index("CHECK")]) == 1 and int(ev[0, EVENTS.index("GAIN_CONTROL")]) == 1
    # a busy (stunned) player cannot check; a teammate never checks
    _, _, _, at2, ctrl2, ev2 = _collide(pos, vel, jnp.zeros(6, jnp.int32),
                                        jnp.zeros(6, jnp.int32).at[1].set(3), jnp.int32(4))
    assert int(ctrl2) == 4 and int(ev2.sum()) == 0 and int(at2[4]) == 0
    _, _, _, _, ctrl3, _ = _collide(pos.at[4].set([-6.0, -10.0]).at[0].set([1.0, 0.0]), vel,
                                    jnp.zeros(6, jnp.int32), jnp.zeros(6, jnp.int32), jnp.int32(0))
    assert int(ctrl3) == 0
    # coincident players are both pushed along (1, 0), by pair (0, 1) and again by pair (1, 0)
    same = jnp.asarray(SPREAD, jnp.float32).at[0].set([2.0, 3.0]).at[1].set([2.0, 3.0])
    p5, *_ = _collide(same, jnp.zeros((6, 2)), jnp.zeros(6, jnp.int32), jnp.zeros(6, jnp.int32),
                      jnp.int32(5))
    np.testing.assert_allclose(p5[:2], [[2.0 + 2 * 0.7575, 3.0]] * 2, rtol=1e-6)


def test_interception_and_on_net_chance():
    src, tgt = jnp.array([0.0, 0.0]), jnp.array([0.0, -10.0])
    capable = jnp.ones(3, bool)
    # c = 0 (on the line at the source end) -> 0.5; c = 3.5 -> 1.0; c > 3.5 -> 0; behind -> skipped
    opp = jnp.array([[0.0, -1e-6], [3.5, -1e-6], [3.6, -1e-6]])
    eligible, c, prob, thru, _ = _intercept_terms(src, tgt, opp, capable)
    np.testing.assert_allclose(prob, [0.5, 1.0, 0.0], atol=1e-5)
    assert np.asarray(eligible).all()
    np.testing.assert_allclose(thru, 0.0, atol=1e-5)
    # the 0.05·s discount along the path; a player past the target is measured from the target
    opp = jnp.array([[1.0, -4.0], [0.0, -12.0], [0.0, 1.0]])
    eligible, c, prob, thru, _ = _intercept_terms(src, tgt, opp, capable)
    np.testing.assert_allclose(c[:2], [0.8, 1.5], rtol=1e-5)
    assert list(np.asarray(eligible)) == [True, True, False]
    np.testing.assert_allclose(thru, (1 - (0.5 + 0.4 / 3.5)) * (1 - (0.5 + 0.75 / 3.5)), rtol=1e-5)
    np.testing.assert_allclose(on_chance(jnp.array([0.0, -14.0]), jnp.array([0.0, -18.0])), 1.0)
    np.testing.assert_allclose(on_chance(jnp.array([8.0, -10.0]), jnp.array([0.0, -18.0])),
                               0.5 * 8 / np.hypot(8, 8), rtol=1e-6)
    assert abs(0.5 * 8 / np.hypot(8, 8) - 0.354) < 1e-3


def test_missed_shot_rebound_to_closest_player():
    params, step = PARAMS, _step
    pos = jnp.asarray(SPREAD, jnp.float32).at[0].set([8.25, -17.25]).at[1].set([0.0, -15.0])
    state = _state(pos, 0, action_time=[0, 0, 0, 30, 30, 30])  # away stunned: nobody intercepts
    outcomes = []
    for k in range(20):
        _, s, r, term, info = step(jax.random.PRNGKey(k), state, jnp.array([1, 0, 0]), params)
        if bool(term):
            assert int(s.score[0]) == 1 and float(r[0]) == pytest.approx(1.001)
            outcomes.append("goal")
        else:
            assert int(s.controller) == 1 and int(s.action_time[1]) == 15  # home 1: closest
            assert int(s.action_time[0]) == 10  # shooter response time
            assert int(info["events"][0, EVENTS.index("MISSED_SHOT")]) == 1
            outcomes.append("missed")
    assert outcomes.count("missed") >= 15  # on_chance = (0.75/‖(8.25, 0.75)‖)·1 ≈ 0.09


def test_pass_and_invalid_puck_actions():
    params, step = PARAMS, _step
    state = _state(SPREAD, 0, action_time=[0, 0, 0, 30, 30, 30])
    _, s, r, _, info = step(jax.random.PRNGKey(0), state, jnp.array([4, 0, 0]), params)  # to home 2
    assert int(s.controller) == 2 and int(info["events"][0, EVENTS.index("PASS_COMPLETE")]) == 1
    assert int(s.action_time[0]) == 10 and int(s.action_time[2]) == 15
    np.testing.assert_allclose(r, 0.001)
    # a pass to oneself and a shot without the puck are mapped to "do nothing"
    _, s, _, _, info = step(jax.random.PRNGKey(0), state, jnp.array([2, 1, 0]), params)
    assert int(s.controller) == 0 and int(info["events"].sum()) == 0
    assert list(np.asarray(s.action[:3])) == [0, 0, 0]
    # movement actions: 5 = +z (own net), 6 = -z, 7 = +x, 8 = -x
    _, s, _, _, _ = step(jax.random.PRNGKey(0), state, jnp.array([5, 6, 7]), params)
    np.testing.assert_allclose(s.velocity[:3], [[0, 0.05], [0, -0.05], [0.05, 0]], atol=1e-7)


def test_reward_terms():
    params, step = PARAMS, _step
    # possession change away -> home through a check by a free home player: +0.1 + 0.001
    pos = jnp.asarray(SPREAD, jnp.float32).at[0].set([0.0, 0.0]).at[3].set([1.0, 0.0])
    state = _state(pos, 3, action_time=[0, 0, 0, 5, 0, 0])
    _, s, r, term, _ = step(jax.random.PRNGKey(0), state, jnp.array([0, 0, 0]), params)
    assert int(s.controller) == 0 and not bool(term)
    np.testing.assert_allclose(r, [0.101] * 3, rtol=1e-6)
    # home -> away: -0.1 - 0.001
    state = _state(pos, 0, action_time=[0, 0, 0, 0, 0, 0])
    _, s, r, _, _ = step(jax.random.PRNGKey(0), state, jnp.array([0, 0, 0]), params)
    assert int(s.controller) == 3
    np.testing.assert_allclose(r, [-0.101] * 3, rtol=1e-6)
    # the 500th step: draw penalty; plain ticks: +-0.001
    state = _state(SPREAD, 4, action_time=[0, 0, 0, 30, 30, 30], time=499)
    _, _, r, _, _ = step(jax.random.PRNGKey(0), state, jnp.array([0, 0, 0]), params)
    np.testing.assert_allclose(r, [-0.501] * 3, rtol=1e-6)
    _, _, r, _, _ = step(jax.random.PRNGKey(0), state.replace(time=jnp.int32(10)),
                         jnp.array([0, 0, 0]), params)
    np.testing.assert_allclose(r, [-0.001] * 3, rtol=1e-6)
    _, _, r, _, _ = step(jax.random.PRNGKey(0), state, jnp.array([0, 0, 0]),
                         params.replace(draw_penalty=0.0))
    np.testing.assert_allclose(r, [-0.001] * 3, rtol=1e-6)


def test_state_and_observation_layout():
    env, params = ENV, PARAMS
    pos = np.array([[1, 2], [3, 4], [5, 6], [-1, -2], [-3, -4], [-5, -6]], np.float32)
    vel = np.arange(12, dtype=np.float32).reshape(6, 2) / 100
    state = _state(pos, 4, velocity=vel)
    s = np.asarray(global_state(state))
    n = pos / [9, 18]
    expect = np.concatenate([n[4], vel[4], [0, 0, 0], np.concatenate([n[:3], vel[:3]], 1).ravel(),
                             [0, 1, 0], np.concatenate([n[3:], vel[3:]], 1).ravel()])
    np.testing.assert_allclose(s, expect, rtol=1e-6)
    obs = np.asarray(env.get_obs(state, params))
    assert obs.shape == (3, 31)
    rel = lambda j, i: np.concatenate([(pos[j] - pos[i]) / [18, 36], vel[j] - vel[i]])  # noqa: E731
    i = 1
    expect = np.concatenate([rel(4, i), [0, 0], n[i], vel[i], rel(0, i), rel(2, i), [1],
                             rel(3, i), rel(4, i), rel(5, i)])
    np.testing.assert_allclose(obs[i], expect, rtol=1e-6, atol=1e-7)
    obs = np.asarray(env.get_obs(state.replace(controller=jnp.int32(1)), params))
    assert list(obs[1, [4, 5, 18]]) == [1, 1, 0] and list(obs[0, [4, 5, 18]]) == [0, 1, 0]


def test_role_events():
    def st(controller, action=(0,) * 6, score=(0, 0)):
        return _state(SPREAD, controller).replace(action=jnp.asarray(action, jnp.int32),
                                                  score=jnp.asarray(score, jnp.int32))

    ev = jax.jit(role_events)
    col = ROLE_EVENTS.index
    e = np.asarray(ev(st(3), st(0)))  # steal by home 0
    assert e[0, col("steal")] == 1 and e.sum() == 1
    e = np.asarray(ev(st(4, action=(0, 0, 0, 0, 1, 0)), st(1)))  # away shot, home 1 gets it
    assert e[1, col("defensive_rebound")] == 1 and e.sum() == 1
    # the away scan stops at the first SHOOT or pass: a pass by away 3 hides away 4's shot
    e = np.asarray(ev(st(4, action=(0, 0, 0, 2, 1, 0)), st(1)))
    assert e[1, col("blocked_pass")] == 1 and e.sum() == 1
    e = np.asarray(ev(st(2), st(2, score=(1, 0))))
    assert e[2, col("goal")] == 1 and e.sum() == 1
    e = np.asarray(ev(st(0, action=(3, 0, 0, 0, 0, 0)), st(1, action=(0, 0, 1, 0, 0, 0))))
    assert e[0, col("made_pass")] == 1 and e[1, col("received_pass")] == 1
    assert e[2, col("shot_attempt")] == 1 and e.sum() == 3
    e = np.asarray(ev(st(0, action=(1, 0, 0, 0, 0, 0)), st(2)))
    assert e[2, col("offensive_rebound")] == 1 and e.sum() == 1


def test_start_play():
    states, events = jax.jit(jax.vmap(start_play))(jax.random.split(jax.random.PRNGKey(0), 2000))
    z = np.asarray(states.position[:, :, 1])
    x = np.asarray(states.position[:, :, 0])
    assert (z[:, :3] > 0).all() and (z[:, :3] <= 18).all()
    assert (z[:, 3:] < 0).all() and (z[:, 3:] >= -18).all()
    assert set(np.unique(x)) == set(range(-9, 9))
    ctrl = np.asarray(states.controller)
    assert set(np.unique(ctrl)) == set(range(6)) and abs((ctrl < 3).mean() - 0.5) < 0.05
    assert (np.asarray(states.action_time)[np.arange(2000), ctrl] == 15).all()
    assert (np.asarray(events).sum((1, 2)) == 1).all()


def test_bad_parameters_rejected():
    assert_rejected_before_compiling(lambda: jaxmcg.make("sts2-v0", num_agents=4),
                                     ["num_agents=4", "valid: 1, 2, 3"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("sts2-v0", draw_penalty=-0.5),
                                     ["draw_penalty=-0.5"])


# ---- §6.11 reference statistics ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _statistics(team: str, n: int, seed: int = 0):
    """Episodes of `team` ("scripted", "random" or "idle" home) vs the scripted away team, with
    the HSD protocol: win / lose / draw rates, mean length, mean return, home possession share and
    event rates per 100 ticks [2, 9] (including the start's control grant)."""
    env, params = jaxmcg.make("sts2-v0")
    learner = (False,) * 3 if team == "scripted" else (True,) * 3

    def episode(key):
        k0, k1, key = jax.random.split(key, 3)
        state, ev0 = start_play(k0)
        state, _ = tick(state, jnp.zeros(3, jnp.int32), learner, k1)
        state = state.replace(score=jnp.zeros(2, jnp.int32))

        def body(carry, k):
            s, done, length, ev, ret, poss, out = carry
            k_act, k_step = jax.random.split(k)
            a = (jax.random.randint(k_act, (3,), 0, 9) if team == "random"
                 else jnp.zeros(3, jnp.int32))
            if team == "scripted":
                s2, e = tick(s, a, learner, k_step)
                s2 = s2.replace(time=s.time + 1)
                r = jnp.zeros(3)
                term = jnp.any(s2.score > 0)
            else:
                _, s2, r, term, info = env.step_env(k_step, s, a, params)
                e = info["events"]
            live = ~done
            return (s2, done | term | (s2.time >= 500), length + live, ev + live * e,
                    ret + live * r[0], poss + live * (s2.controller < 3),
                    jnp.where(live, s2.score[0] - s2.score[1], out)), None

        init = (state, False, 0, ev0, 0.0, 0, 0)
        (_, _, length, ev, ret, poss, out), _ = jax.lax.scan(body, init, jax.random.split(key, 500))
        return length, ev, ret, poss, out

    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    length, ev, ret, poss, out = jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(episode))(keys))
    return {"win": (out > 0).mean(), "lose": (out < 0).mean(), "draw": (out == 0).mean(),
            "length": length.mean(), "return": ret.mean(), "possession": poss.sum() / length.sum(),
            "events": ev.sum(0) / length.sum() * 100}


# §6.11: (win, lose, draw, mean length); scripted = the pooled 3000-episode estimate
REFERENCE = {"scripted": (0.482, 0.490, 0.028, 150.2), "random": (0.0385, 0.959, 0.0025, 134.1),
             "idle": (0.0, 0.989, 0.011, 127.9)}
EVENT_RATES = {"SHOT": (0.775, 0.758), "GOAL": (0.345, 0.334), "MISSED_SHOT": (0.424, 0.419),
               "SHOT_BLOCK": (0.006, 0.006), "PASS": (0.788, 0.763),
               "PASS_COMPLETE": (0.752, 0.727), "PASS_INTERCEPT": (0.036, 0.036),
               "CHECK": (1.395, 1.379), "GAIN_CONTROL": (2.950, 2.923)}


@pytest.mark.slow  # suite budget: the 2000-episode reference statistics cover it
def test_scripted_teams_small_sample():
    """400 episodes of scripted vs scripted: outcome rates within 3 s.e. (±0.075) of §6.11's, the
    mean length within 15%, and the home/away symmetry of shots and goals."""
    st = _statistics("scripted", 400)
    win, lose, _, length = REFERENCE["scripted"]
    assert abs(st["win"] - win) < 0.075 and abs(st["lose"] - lose) < 0.075, st
    assert abs(st["length"] / length - 1) < 0.15, st
    goal = EVENTS.index("GOAL")
    assert abs(st["events"][0, goal] / 0.345 - 1) < 0.25, st["events"]


@pytest.mark.slow
@pytest.mark.parametrize("team", ["scripted", "random", "idle"])
def test_reference_statistics(team):
    """§6.11 port acceptance over 2000 episodes: win / lose / draw within ±3 points, mean length
    within ±8%, and (scripted) each event rate within ±10% relative or ±0.02 absolute."""
    st = _statistics(team, 2000)
    print(team, {k: v for k, v in st.items() if k != "events"}, st["events"].round(3))
    win, lose, draw, length = REFERENCE[team]
    assert abs(st["win"] - win) <= 0.03, st
    assert abs(st["lose"] - lose) <= 0.03, st
    assert abs(st["draw"] - draw) <= 0.03, st
    assert abs(st["length"] / length - 1) <= 0.08, st
    if team == "scripted":
        for k, name in enumerate(EVENTS):
            for side in range(2):
                ref, got = EVENT_RATES[name][side], st["events"][side, k]
                assert abs(got - ref) <= max(0.1 * ref, 0.02), (name, side, got, ref)
    else:  # mean return (§6.7): -1.021 random, -1.079 idle
        assert abs(st["return"] - {"random": -1.021, "idle": -1.079}[team]) < 0.1, st
