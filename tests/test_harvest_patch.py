"""HarvestPatch (envs/harvest_patch.py; d3c.md §2.8): hand-built states with known outcomes, the
regrowth law per neighbourhood count checked statistically against counts computed here, extinction,
moves and collisions, beams and time-outs, rendering pixel for pixel against an independent renderer
(crop and np.rot90 of a full-map image), and parameter validation before compilation.

Agents a test does not need are "parked": out of play (`tag_timer` = PARK) for the whole test, so
they neither act, block, get hit nor show."""
from functools import lru_cache

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling

import jaxmcg
from envs.harvest_patch import (
    BACKWARD,
    EAST,
    FORWARD,
    MAP,
    NOOP,
    NORTH,
    SOUTH,
    STEP_LEFT,
    STEP_RIGHT,
    TAG,
    TURN_LEFT,
    TURN_RIGHT,
    WEST,
    EnvState,
    HarvestPatch,
)

KEY = jax.random.PRNGKey(0)
N_KEYS = 2000  # every batched call uses this many rows, so the step compiles once
N = 5
PARK = 10_000
PARK_CELLS = [(14, 1), (14, 2), (14, 3), (14, 4), (14, 5)]

# spec colour table ([SSD] palette, module docstring), written out independently of the module
RGB = {
    " ": (0, 0, 0),
    "@": (180, 180, 180),
    "A": (0, 255, 0),
    "beam": (255, 255, 0),
    "agents": [(159, 67, 255), (2, 81, 154), (204, 0, 204), (216, 30, 54), (254, 151, 0)],
}
STEP = {NORTH: (-1, 0), EAST: (0, 1), SOUTH: (1, 0), WEST: (0, -1)}  # facing -> (drow, dcol)


def right_of(o):
    return STEP[(o + 1) % 4]


def expected_move(o, a):
    f, r = STEP[o], right_of(o)
    return {FORWARD: f, BACKWARD: (-f[0], -f[1]), STEP_RIGHT: r,
            STEP_LEFT: (-r[0], -r[1])}.get(a, (0, 0))


# ---- helpers ------------------------------------------------------------------------------------
@lru_cache
def env():
    return HarvestPatch()


@lru_cache
def batched_step():
    return jax.jit(jax.vmap(env().step_env, in_axes=(0, 0, 0, None)))


def cells_of(chars):
    return [(r, c) for r, row in enumerate(MAP) for c, ch in enumerate(row) if ch in chars]


WALLS = np.array([[ch == "@" for ch in row] for row in MAP])
APPLE_CELLS = cells_of("A")
SPAWNS = cells_of("P")


def patch_cells(p):
    """The diamond of patch p (0..5: top row left to right, then bottom row)."""
    r0, c0 = 4 + 7 * (p // 3), 4 + 7 * (p % 3)
    return [(r0 + dr, c0 + dc) for dr in range(-2, 3) for dc in range(-2, 3) if abs(dr) + abs(dc) <= 2]


def grid(cells):
    g = np.zeros(WALLS.shape, bool)
    for r, c in cells:
        g[r, c] = True
    return g


def make_state(agents, apples=None, timers=None, beam=(), time=0):
    """`agents`: (row, col, orientation) of the first agents; the rest are parked. `apples=None`:
    every apple cell."""
    agents = list(agents)
    timers = [0] * len(agents) if timers is None else list(timers)
    for i in range(len(agents), N):
        agents.append((*PARK_CELLS[i], NORTH))
        timers.append(PARK)
    return EnvState(
        agent_pos=np.asarray([a[:2] for a in agents], np.int32),
        orientation=np.asarray([a[2] for a in agents], np.int32),
        tag_timer=np.asarray(timers, np.int32),
        apples=grid(APPLE_CELLS if apples is None else apples),
        beam=grid(beam),
        time=np.asarray(time, np.int32),
    )


def pad_actions(actions):
    return list(actions) + [NOOP] * (N - len(actions))


def params_with(**kw):
    return env().default_params.replace(**kw)


NO_GROWTH = (0.0, 0.0, 0.0, 0.0)  # regrowth_probs of the same length as the default (one compile)
CERTAIN = (0.0, 1.0, 1.0, 1.0)  # regrowth certain wherever an apple is near


@lru_cache
def batched_reset():
    return jax.jit(jax.vmap(env().reset_env, in_axes=(0, None)))


def step_batch(states, actions, params=None, seed=1, same_key=False):
    """One transition for each of up to N_KEYS (state, actions) pairs (padded by repeating the
    last); numpy out, cut back to the number of pairs."""
    m = len(states)
    states = states + [states[-1]] * (N_KEYS - m)
    actions = [pad_actions(a) for a in actions]
    actions = actions + [actions[-1]] * (N_KEYS - m)
    stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *states)
    keys = jax.random.split(jax.random.PRNGKey(seed), N_KEYS)
    if same_key:
        keys = jnp.broadcast_to(keys[0], keys.shape)
    params = env().default_params if params is None else params
    out = batched_step()(keys, stacked, jnp.asarray(actions, jnp.int32), params)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[:m], out)


def step_keys(state, actions, params=None, seed=1):
    """N_KEYS transitions of one state and joint action under different keys."""
    return step_batch([state] * N_KEYS, [actions] * N_KEYS, params, seed)


def step(state, actions, params=None, seed=1):
    return jax.tree_util.tree_map(lambda x: x[0], step_batch([state], [actions], params, seed))


def cellset(mask):
    return {(int(r), int(c)) for r, c in np.argwhere(mask)}


def assert_rate(hits, trials, p, sds=5.0):
    rate = hits / trials
    tol = sds * np.sqrt(max(p * (1 - p), 1 / trials) / trials)
    assert abs(rate - p) <= tol, f"rate {rate:.5f} vs expected {p:.5f} (tolerance {tol:.5f})"


# ---- map, reset, parameters -------------------------------------------------------------------------
def test_map_and_patches():
    e = env()
    assert (e.height, e.width) == (16, 23) and e.num_patches == 6 and e.num_apple_cells == 78
    assert len(SPAWNS) == 9 and e.spawn_points == tuple(SPAWNS)
    for p in range(6):
        assert grid(patch_cells(p)).sum() == 13 and all(MAP[r][c] == "A" for r, c in patch_cells(p))
        flat = {r * e.width + c for r, c in patch_cells(p)}
        assert {int(i) for i in e._apple_idx[e.patch_of == p]} == flat
    # patches are more than the default regrowth radius (2) apart, so a bare patch is extinct
    for p in range(6):
        for q in range(p + 1, 6):
            d2 = min((r1 - r2) ** 2 + (c1 - c2) ** 2 for r1, c1 in patch_cells(p)
                     for r2, c2 in patch_cells(q))
            assert d2 >= 9


def test_reset_defaults_and_registry():
    e, params = jaxmcg.make("harvest_patch-v0")
    assert e.num_agents == 5 and e.view_size == 7
    assert params.max_steps_in_episode == 1000 and params.regrowth_radius == 2.0
    assert tuple(params.regrowth_probs) == (0.0, 0.0025, 0.005, 0.025)
    assert (params.apple_reward, params.beam_length, params.tag_timeout) == (1.0, 5, 25)
    assert e.action_space().n == 8 and e.observation_space().shape == (15, 15, 3)
    keys = jax.random.split(KEY, N_KEYS)
    obs, st = jax.tree_util.tree_map(np.asarray, batched_reset()(keys, params))
    assert obs.shape == (N_KEYS, 5, 15, 15, 3) and obs.dtype == np.float32
    assert obs.min() >= 0 and obs.max() <= 1
    spawn_set = set(SPAWNS)
    for pos in st.agent_pos[:200]:
        cells = [tuple(map(int, p)) for p in pos]
        assert len(set(cells)) == 5 and set(cells) <= spawn_set
    assert (st.apples == grid(APPLE_CELLS)).all() and (st.tag_timer == 0).all() and not st.beam.any()
    assert (st.time == 0).all()
    # spawn points and orientations uniformly at random: each point holds an agent w.p. 5/9
    for r, c in SPAWNS:
        assert_rate(((st.agent_pos[:, :, 0] == r) & (st.agent_pos[:, :, 1] == c)).any(1).sum(),
                    N_KEYS, 5 / 9)
    for o in range(4):
        assert_rate((st.orientation == o).sum(), N_KEYS * 5, 0.25)
    # initial_apple_prob: each apple cell independently
    st0 = batched_reset()(keys, params.replace(initial_apple_prob=0.3))[1]
    assert_rate(int(st0.apples.sum()), N_KEYS * 78, 0.3)
    e3, _ = jaxmcg.make("harvest_patch-v0", num_agents=3, view_size=4)
    assert e3.num_agents == 3 and e3.observation_space().shape == (9, 9, 3)


@pytest.mark.parametrize(
    "make_it, needles",
    [
        (lambda: HarvestPatch(num_agents=0), ["num_agents=0", "[1, 9]"]),
        (lambda: HarvestPatch(num_agents=10), ["num_agents=10", "[1, 9]"]),
        (lambda: HarvestPatch(num_agents=2.0), ["num_agents=2.0", "integer"]),
        (lambda: HarvestPatch(view_size=-1), ["view_size=-1", ">= 0"]),
        (lambda: jaxmcg.make("harvest_patch-v0", num_agents=True), ["num_agents=True"]),
        (lambda: jaxmcg.make("harvest_patch-v0", regrowth_probs=(0.0, 1.5)),
         ["regrowth_probs=(0.0, 1.5)", "[0, 1]"]),
        (lambda: jaxmcg.make("harvest_patch-v0", regrowth_probs=()), ["regrowth_probs=()", "non-empty"]),
        (lambda: jaxmcg.make("harvest_patch-v0", regrowth_probs=(-0.1,)), ["regrowth_probs=(-0.1,)"]),
        (lambda: jaxmcg.make("harvest_patch-v0", regrowth_radius=-1.0), ["regrowth_radius=-1.0", ">= 0"]),
        (lambda: jaxmcg.make("harvest_patch-v0", regrowth_radius=float("nan")), ["regrowth_radius=nan"]),
        (lambda: jaxmcg.make("harvest_patch-v0", initial_apple_prob=1.2),
         ["initial_apple_prob=1.2", "[0, 1]"]),
        (lambda: jaxmcg.make("harvest_patch-v0", beam_length=-1), ["beam_length=-1", "integer >= 0"]),
        (lambda: jaxmcg.make("harvest_patch-v0", tag_timeout=2.5), ["tag_timeout=2.5", "integer >= 0"]),
        (lambda: jaxmcg.make("harvest_patch-v0", tag_cost=float("inf")), ["tag_cost=inf", "finite"]),
        (lambda: jaxmcg.make("harvest_patch-v0", apple_reward=float("nan")), ["apple_reward=nan"]),
        (lambda: jaxmcg.make("harvest_patch-v0", max_steps_in_episode=0), ["max_steps_in_episode=0"]),
        (lambda: jaxmcg.make("harvest_patch-v0", regrowth_prob=0.1), ["regrowth_prob", "regrowth_probs"]),
    ],
)
def test_bad_input_fails_before_compilation(make_it, needles):
    assert_rejected_before_compiling(make_it, needles)


# ---- movement ---------------------------------------------------------------------------------------
OPEN = (8, 10)  # floor cell with floor all around


def test_moves_and_turns_relative_to_orientation():
    cases = [(o, a) for o in range(4) for a in range(8)]
    out = step_batch([make_state([(*OPEN, o)]) for o, _ in cases], [[a] for _, a in cases],
                     params=params_with(regrowth_probs=NO_GROWTH))
    for i, (o, a) in enumerate(cases):
        d = expected_move(o, a)
        np.testing.assert_array_equal(out[1].agent_pos[i, 0], (OPEN[0] + d[0], OPEN[1] + d[1]),
                                      err_msg=f"orientation {o}, action {a}")
        turned = {TURN_LEFT: (o - 1) % 4, TURN_RIGHT: (o + 1) % 4}.get(a, o)
        assert out[1].orientation[i, 0] == turned, (o, a)
        np.testing.assert_array_equal(out[2][i], 0.0)
        assert out[4]["fired"][i, 0] == (a == TAG)
    # parked agents never move or turn, whatever their action
    st = make_state([(*OPEN, NORTH)])
    nxt = step(st, [FORWARD, FORWARD, TURN_LEFT, STEP_LEFT, TAG])[1]
    np.testing.assert_array_equal(nxt.agent_pos[1:], PARK_CELLS[1:])
    np.testing.assert_array_equal(nxt.orientation[1:], NORTH)
    np.testing.assert_array_equal(nxt.tag_timer, [0] + [PARK - 1] * 4)


def test_walls_block():
    # top-left corner (1, 1): north and west are walls
    cases = [((1, 1, NORTH), FORWARD, (1, 1)), ((1, 1, NORTH), STEP_LEFT, (1, 1)),
             ((1, 1, EAST), STEP_LEFT, (1, 1)), ((1, 1, EAST), BACKWARD, (1, 1)),
             ((1, 1, SOUTH), BACKWARD, (1, 1)), ((1, 1, WEST), STEP_RIGHT, (1, 1)),
             ((1, 1, NORTH), STEP_RIGHT, (1, 2)), ((1, 1, NORTH), BACKWARD, (2, 1)),
             ((14, 21, SOUTH), FORWARD, (14, 21)), ((14, 21, EAST), FORWARD, (14, 21)),
             ((14, 21, WEST), BACKWARD, (14, 21)), ((14, 21, WEST), FORWARD, (14, 20))]
    out = step_batch([make_state([s]) for s, _, _ in cases], [[a] for _, a, _ in cases])
    for i, (_, _, expect) in enumerate(cases):
        np.testing.assert_array_equal(out[1].agent_pos[i, 0], expect, err_msg=str(cases[i]))


def test_collisions():
    pair = [(7, 8, EAST), (7, 9, EAST)]
    # into an agent that stays, turns or tags: blocked; into one that leaves: both move (chain)
    for a1, expect in [(NOOP, [(7, 8), (7, 9)]), (TURN_LEFT, [(7, 8), (7, 9)]),
                       (FORWARD, [(7, 9), (7, 10)]), (STEP_LEFT, [(7, 9), (6, 9)])]:
        nxt = step(make_state(pair), [FORWARD, a1])[1]
        np.testing.assert_array_equal(nxt.agent_pos[:2], expect, err_msg=str(a1))
    # into an agent blocked by a wall: blocked
    nxt = step(make_state([(7, 20, EAST), (7, 21, EAST)]), [FORWARD, FORWARD])[1]
    np.testing.assert_array_equal(nxt.agent_pos[:2], [(7, 20), (7, 21)])
    # a chain of three ending at an agent that stays: nobody moves; ending free: all move
    three = [(7, 8, EAST), (7, 9, EAST), (7, 10, NORTH)]
    nxt = step(make_state(three), [FORWARD, FORWARD, NOOP])[1]
    np.testing.assert_array_equal(nxt.agent_pos[:3], [(7, 8), (7, 9), (7, 10)])
    nxt = step(make_state(three), [FORWARD, FORWARD, STEP_RIGHT])[1]
    np.testing.assert_array_equal(nxt.agent_pos[:3], [(7, 9), (7, 10), (7, 11)])
    # swaps never happen (facing each other, both forward), for every key
    nxt = step_keys(make_state([(7, 8, EAST), (7, 9, WEST)]), [FORWARD, FORWARD])[1]
    assert (nxt.agent_pos[:, :2] == [(7, 8), (7, 9)]).all()
    # a removed agent neither blocks nor is drawn: agent 0 walks into its last cell
    st = make_state([(7, 8, EAST), (7, 9, EAST)], timers=[0, 7])
    nxt = step(st, [FORWARD, FORWARD])[1]
    np.testing.assert_array_equal(nxt.agent_pos[:2], [(7, 9), (7, 9)])
    assert nxt.tag_timer[1] == 6


def test_conflicts_are_fair():
    # two agents want (7, 9): exactly one gets it, each about half the time
    nxt = step_keys(make_state([(7, 8, EAST), (7, 10, WEST)]), [FORWARD, FORWARD])[1]
    won0 = (nxt.agent_pos[:, 0] == (7, 9)).all(-1)
    won1 = (nxt.agent_pos[:, 1] == (7, 9)).all(-1)
    assert (won0 ^ won1).all()
    assert (nxt.agent_pos[~won0, 0] == (7, 8)).all() and (nxt.agent_pos[~won1, 1] == (7, 10)).all()
    assert_rate(won0.sum(), N_KEYS, 0.5, sds=4)
    # four agents want (8, 10): each wins a quarter of the time
    four = [(7, 10, SOUTH), (9, 10, NORTH), (8, 9, EAST), (8, 11, WEST)]
    nxt = step_keys(make_state(four), [FORWARD] * 4)[1]
    won = (nxt.agent_pos[:, :4] == (8, 10)).all(-1)
    assert (won.sum(1) == 1).all()
    for k in range(4):
        assert_rate(won[:, k].sum(), N_KEYS, 0.25, sds=4)


def test_move_invariants_random_crowded():
    """Random configurations of 5 agents in a 3x3 block of the corridor rows, random orientations,
    actions and keys: no overlap, no swap, every agent at its cell or its target, blocked only by
    a cell that is occupied at the end."""
    rng = np.random.default_rng(0)
    states, actions, olds = [], [], []
    for _ in range(N_KEYS):
        r0, c0 = rng.integers(6, 8), rng.integers(1, 20)
        block = [(int(r0 + i // 3), int(c0 + i % 3)) for i in rng.choice(9, N, replace=False)]
        orient = rng.integers(0, 4, N)
        states.append(make_state([(r, c, int(o)) for (r, c), o in zip(block, orient)]))
        actions.append(rng.integers(0, 5, N).tolist())
        olds.append((block, orient))
    new = step_batch(states, actions, seed=7)[1].agent_pos
    for b in range(N_KEYS):
        old, orient = olds[b]
        now = [tuple(map(int, p)) for p in new[b]]
        assert len(set(now)) == N, (old, actions[b], now)
        for i in range(N):
            d = expected_move(int(orient[i]), actions[b][i])
            target = (old[i][0] + d[0], old[i][1] + d[1])
            if target == old[i] or WALLS[target]:
                assert now[i] == old[i]
                continue
            assert now[i] in (old[i], target)
            if now[i] == old[i]:
                assert target in now, (old, actions[b], now)
            for j in range(N):
                if j != i and now[i] == old[j]:
                    assert now[j] != old[i], f"swap {old} {actions[b]} {now}"


# ---- eating ---------------------------------------------------------------------------------------------
def test_eating():
    # agent 0 steps onto the tip (6, 4) of patch 0, agent 1 onto (9, 11) of patch 4; agent 2 waits
    # next to an apple
    st = make_state([(7, 4, NORTH), (8, 11, NORTH), (7, 18, WEST)])
    _, nxt, reward, terminated, info = step(st, [FORWARD, BACKWARD, NOOP],
                                            params_with(regrowth_probs=NO_GROWTH))
    np.testing.assert_array_equal(reward, [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(info["apples_eaten"], [1, 1, 0, 0, 0])
    assert reward.dtype == np.float32 and not terminated
    assert cellset(nxt.apples) == set(APPLE_CELLS) - {(6, 4), (9, 11)}
    np.testing.assert_array_equal(info["patch_apples"], [12, 13, 13, 13, 12, 13])
    assert info["apple_count"] == 76 and info["num_extinct"] == 0
    # apple_reward scales it; a parked agent on an apple cell eats nothing
    st = make_state([(7, 4, NORTH), (5, 4, NORTH)], timers=[0, 3])
    _, nxt, reward, _, info = step(st, [FORWARD, NOOP],
                                   params_with(apple_reward=2.5, regrowth_probs=NO_GROWTH))
    np.testing.assert_array_equal(reward, [2.5, 0, 0, 0, 0])
    assert nxt.apples[5, 4]


# ---- regrowth and extinction ------------------------------------------------------------------------
def near_matrix(radius):
    """near[i, j]: apple cells i != j within L2 distance `radius` (numpy, from MAP)."""
    rc = np.array(APPLE_CELLS, float)
    d2 = ((rc[:, None] - rc[None]) ** 2).sum(-1)
    return (d2 <= radius ** 2) & ~np.eye(len(APPLE_CELLS), dtype=bool)


@pytest.mark.parametrize(
    "radius, probs",
    [(2.0, (0.0, 0.0025, 0.005, 0.025)),  # the defaults ([MP])
     (1.5, (0.05, 0.2, 0.5, 0.8)),  # 8-neighbourhood; p(0) > 0
     (1.0, (0.0, 0.3, 0.6, 0.9))],  # 4-neighbourhood
)
def test_regrowth_rate_per_neighbour_count(radius, probs):
    """Random apple configurations (each cell full w.p. 0.4), all agents parked: each empty apple
    cell regrows w.p. probs[min(c, 3)], c counted here from the configuration."""
    rng = np.random.default_rng(int(radius * 10))
    configs = rng.random((N_KEYS, len(APPLE_CELLS))) < 0.4
    rows, cols = np.array(APPLE_CELLS).T
    grids = np.zeros((N_KEYS, *WALLS.shape), bool)
    grids[:, rows, cols] = configs
    base = make_state([])
    states = [base.replace(apples=g) for g in grids]
    nxt = step_batch(states, [[NOOP] * N] * N_KEYS, params_with(regrowth_radius=radius,
                                                                regrowth_probs=probs), seed=3)[1]
    assert (nxt.apples[grids]).all()  # apples stay
    assert not nxt.apples[:, ~grid(APPLE_CELLS)].any()  # and grow only on apple cells
    after = nxt.apples[:, rows, cols]
    level = np.minimum(configs.astype(int) @ near_matrix(radius).astype(int), 3)
    for lv in range(4):
        trials = ~configs & (level == lv)
        assert trials.sum() > 1000, (lv, trials.sum())
        hits = int(after[trials].sum())
        if probs[lv] == 0:
            assert hits == 0, (lv, hits)
        else:
            assert_rate(hits, int(trials.sum()), probs[lv])


def test_no_regrowth_under_an_agent():
    # patch 0 bare but its centre; agent 0 stands on the bare cell (3, 4); p = 1 elsewhere
    bare = set(patch_cells(0)) - {(4, 4)}
    st = make_state([(3, 4, NORTH)], apples=set(APPLE_CELLS) - bare)
    nxt = step_keys(st, [NOOP], params_with(regrowth_probs=CERTAIN))[1]
    assert not nxt.apples[:, 3, 4].any()
    near = [(r, c) for r, c in bare if (r - 4) ** 2 + (c - 4) ** 2 <= 4 and (r, c) != (3, 4)]
    assert all(nxt.apples[:, r, c].all() for r, c in near)


def test_extinction():
    """A bare patch never regrows, even with regrowth certain wherever an apple is near."""
    st = make_state([], apples=set(APPLE_CELLS) - set(patch_cells(0)))
    params = params_with(regrowth_probs=CERTAIN)
    for t in range(5):
        _, st_b, _, _, info = step_keys(st, [NOOP], params, seed=10 + t)
        assert not st_b.apples[:, grid(patch_cells(0))].any()
        st = jax.tree_util.tree_map(lambda x: jnp.asarray(x[0]), st_b)
    np.testing.assert_array_equal(info["extinct"], np.tile([True] + [False] * 5, (N_KEYS, 1)))
    np.testing.assert_array_equal(info["num_extinct"], 1.0)
    np.testing.assert_array_equal(info["patch_apples"], np.tile([0] + [13] * 5, (N_KEYS, 1)))
    # a bare patch with apples within reach (radius 3 crosses the 3-cell gap) is not extinct,
    # nor is one with regrowth_probs[0] > 0
    for params in (params_with(regrowth_probs=CERTAIN, regrowth_radius=3.0),
                   params_with(regrowth_probs=(0.5, 1.0, 1.0, 1.0))):
        _, nxt, _, _, info = step_keys(make_state([], apples=set(APPLE_CELLS) - set(patch_cells(0))),
                                       [NOOP], params)
        assert not info["extinct"].any() and nxt.apples[:, grid(patch_cells(0))].any()
    # extinct after the step that eats the last apple of a patch
    alone = set(APPLE_CELLS) - set(patch_cells(0)) | {(6, 4)}
    _, _, reward, _, info = step(make_state([(7, 4, NORTH)], apples=alone), [FORWARD])
    assert reward[0] == 1 and info["extinct"][0] and info["num_extinct"] == 1


# ---- beams ----------------------------------------------------------------------------------------------
def beam_cells(pos, o, length=5, blockers=()):
    """The three rays of an agent at `pos` facing `o` (module docstring, [SSD]), written out here:
    centre from the cell ahead, sides from the cells level with the agent; each stops before a
    wall and at (including) the first blocker."""
    f, r = STEP[o], right_of(o)
    starts = [(pos[0] + f[0], pos[1] + f[1]), (pos[0] - r[0], pos[1] - r[1]), (pos[0] + r[0], pos[1] + r[1])]
    out = set()
    for r0, c0 in starts:
        for k in range(length):
            cell = (r0 + k * f[0], c0 + k * f[1])
            if WALLS[cell]:
                break
            out.add(cell)
            if cell in blockers:
                break
    return out


@pytest.mark.parametrize("o", [NORTH, EAST, SOUTH, WEST])
def test_beam_geometry(o):
    cases = [((8, 10), 5), ((7, 3), 5), ((1, 1), 5), ((14, 21), 5), ((8, 10), 2), ((8, 10), 0)]
    for pos, length in cases:
        params = params_with(beam_length=length, regrowth_probs=NO_GROWTH)
        _, nxt, reward, _, info = step(make_state([(*pos, o)]), [TAG], params)
        assert cellset(nxt.beam) == beam_cells(pos, o, length), (pos, o, length)
        np.testing.assert_array_equal(nxt.agent_pos[0], pos)  # firing does not move
        assert info["fired"][0] and not info["tagged"].any()
        assert (nxt.apples == grid(APPLE_CELLS)).all()  # beams do not touch apples
        np.testing.assert_array_equal(reward, 0.0)


def test_beam_hits_first_agent_only():
    # agent 0 at (7, 5) facing east; agent 1 in the centre ray at (7, 8) shields agent 2 at (7, 9);
    # agent 3 is in the left (north) ray at (6, 7); agent 4, removed, sits in the right ray
    st = make_state([(7, 5, EAST), (7, 8, NORTH), (7, 9, NORTH), (6, 7, SOUTH), (8, 6, NORTH)],
                    timers=[0, 0, 0, 0, 9])
    params = params_with(tag_cost=1.0, tag_penalty=50.0, regrowth_probs=NO_GROWTH)
    _, nxt, reward, _, info = step(st, [TAG, NOOP, NOOP, NOOP, NOOP], params)
    expected = beam_cells((7, 5), EAST, blockers={(7, 8), (6, 7)})
    assert cellset(nxt.beam) == expected and (8, 6) in expected and (7, 9) not in expected
    np.testing.assert_array_equal(info["tagged"], [False, True, False, True, False])
    np.testing.assert_array_equal(info["in_play"], [True, False, True, False, False])
    np.testing.assert_array_equal(nxt.tag_timer, [0, 25, 0, 25, 8])
    np.testing.assert_array_equal(reward, [-1, -50, 0, -50, 0])
    np.testing.assert_array_equal(nxt.agent_pos[[1, 3]], [(7, 8), (6, 7)])  # kept for their views
    # both fire at each other at once: both hit
    _, nxt, reward, _, info = step(make_state([(7, 5, EAST), (7, 7, WEST)]), [TAG, TAG])
    np.testing.assert_array_equal(info["tagged"][:2], [True, True])
    # a move takes an agent into the beam: it is hit where it arrives
    _, nxt, _, _, info = step(make_state([(7, 5, EAST), (8, 7, NORTH)]), [TAG, FORWARD])
    assert info["tagged"][1] and nxt.agent_pos[1].tolist() == [7, 7]
    # tag_timeout = 0: hit, but stays in play
    _, nxt, _, _, info = step(make_state([(7, 5, EAST), (7, 7, WEST)]), [TAG, NOOP],
                              params_with(tag_timeout=0))
    assert info["tagged"][1] and info["in_play"][1] and nxt.tag_timer[1] == 0


def test_time_out_and_respawn():
    """Tagged with tag_timeout = 3: out for exactly 3 steps (actions ignored, not drawn, cannot eat
    or be hit), then back at a spawn point free of agents in play."""
    params = params_with(tag_timeout=3, regrowth_probs=NO_GROWTH)
    st = make_state([(7, 5, EAST), (7, 6, WEST)])
    st = jax.tree_util.tree_map(jnp.asarray, step(st, [TAG, NOOP], params)[1])
    assert int(st.tag_timer[1]) == 3
    for t, timer in enumerate([2, 1]):
        _, st_n, _, _, info = step(st, [TAG, FORWARD], params, seed=20 + t)
        assert st_n.tag_timer[1] == timer and not info["in_play"][1] and not info["tagged"][1]
        np.testing.assert_array_equal(st_n.agent_pos[1], (7, 6))  # did not move
        st = jax.tree_util.tree_map(jnp.asarray, st_n)
    # the third step: back in play, at a spawn point (agent 0, at (7, 5), holds none)
    _, nxt, _, _, info = step_keys(st, [NOOP, FORWARD], params)
    assert info["in_play"][:, 1].all() and (nxt.tag_timer[:, 1] == 0).all()
    landed = [tuple(map(int, p)) for p in nxt.agent_pos[:, 1]]
    assert set(landed) <= set(SPAWNS)
    # uniform over the 9 spawn points (agent 0 is not on one), every orientation
    for cell in SPAWNS:
        assert_rate(sum(x == cell for x in landed), N_KEYS, 1 / 9)
    for o in range(4):
        assert_rate((nxt.orientation[:, 1] == o).sum(), N_KEYS, 0.25)


def test_respawns_avoid_agents_and_each_other():
    # agents 0-2 stay on three spawn points; agents 3 and 4 respawn at once: each lands on one of
    # the other six points, uniformly, and never on the same one
    held = SPAWNS[:3]
    st = make_state([(*held[0], NORTH), (*held[1], NORTH), (*held[2], NORTH), (1, 1, NORTH),
                     (1, 2, NORTH)], timers=[0, 0, 0, 1, 1])
    _, nxt, _, _, info = step_keys(st, [NOOP] * 5)
    assert info["in_play"].all()
    a, b = nxt.agent_pos[:, 3], nxt.agent_pos[:, 4]
    assert not (a == b).all(-1).any()
    free = set(SPAWNS[3:])
    for p in (a, b):
        cells = [tuple(map(int, x)) for x in p]
        assert set(cells) <= free
        for cell in free:
            assert_rate(sum(x == cell for x in cells), N_KEYS, 1 / 6)


# ---- rendering --------------------------------------------------------------------------------------------
def reference_map(state):
    """Full-map image: floor, walls, apples, agents in play, beams over agents (0..255)."""
    img = np.array([[RGB[ch if ch in " @" else " "] for ch in row] for row in MAP], np.float64)
    img[np.asarray(state.apples)] = RGB["A"]
    for i, ((r, c), timer) in enumerate(zip(np.asarray(state.agent_pos), np.asarray(state.tag_timer))):
        if timer == 0:
            img[r, c] = RGB["agents"][i]
    img[np.asarray(state.beam)] = RGB["beam"]
    return img


def reference_views(state, v=7):
    """Independent renderer: the full-map image padded with black, cropped around each agent and
    turned with np.rot90 so that the agent faces up."""
    padded = np.pad(reference_map(state), ((v, v), (v, v), (0, 0)))
    views = []
    for (r, c), o in zip(np.asarray(state.agent_pos), np.asarray(state.orientation)):
        crop = padded[r:r + 2 * v + 1, c:c + 2 * v + 1]
        views.append(np.rot90(crop, k={NORTH: 0, EAST: 1, SOUTH: 2, WEST: 3}[int(o)]))
    return np.stack(views) / 255.0


def test_render_pixel_for_pixel():
    e = env()
    # a known state: every orientation, an agent near the edge (black outside the map), a removed
    # agent (not drawn), some apples eaten, a beam
    st = make_state([(7, 5, EAST), (2, 2, NORTH), (13, 20, SOUTH), (8, 12, WEST), (6, 7, NORTH)],
                    apples=set(APPLE_CELLS) - {(4, 4), (3, 5), (11, 11)},
                    timers=[0, 0, 0, 0, 4], beam={(7, 6), (7, 7), (6, 5)})
    obs = np.asarray(jax.jit(e.get_obs)(st))
    np.testing.assert_allclose(obs, reference_views(st), rtol=0, atol=1e-6)
    # agent 0 faces east: the cell ahead (7, 6) is straight up in its view, (6, 5) (its left) is
    # to the left of centre
    np.testing.assert_allclose(obs[0, 6, 7] * 255, RGB["beam"], atol=1e-4)
    np.testing.assert_allclose(obs[0, 7, 7] * 255, RGB["agents"][0], atol=1e-4)
    np.testing.assert_allclose(obs[0, 7, 6] * 255, RGB["beam"], atol=1e-4)
    # after a random step the observation is the rendering of the new state
    obs2, nxt = step(st, [FORWARD, TURN_RIGHT, TAG, STEP_LEFT, NOOP])[:2]
    nxt = jax.tree_util.tree_map(jnp.asarray, nxt)
    np.testing.assert_allclose(obs2, reference_views(nxt), rtol=0, atol=1e-6)
    # a smaller view_size crops the same picture
    e4 = HarvestPatch(view_size=3)
    np.testing.assert_allclose(np.asarray(jax.jit(e4.get_obs)(st)), reference_views(st, v=3), atol=1e-6)
    # the full-map render
    full = np.asarray(jax.jit(e.render)(st))
    assert full.shape == (16, 23, 3)
    np.testing.assert_allclose(full * 255, reference_map(st), atol=1e-3)


# ---- info, parameters as data -------------------------------------------------------------------------
def test_info_matches_state_on_random_play():
    rng = np.random.default_rng(5)
    configs = rng.random((N_KEYS, len(APPLE_CELLS))) < 0.5
    base = make_state([(*SPAWNS[i], i % 4) for i in range(5)])
    states = [base.replace(apples=grid([cell for cell, on in zip(APPLE_CELLS, row) if on]))
              for row in configs]
    actions = rng.integers(0, 8, (N_KEYS, N)).tolist()
    params = params_with(regrowth_probs=(0.0, 0.3, 0.3, 0.3))
    _, nxt, reward, _, info = step_batch(states, actions, params, seed=9)
    for p in range(6):
        np.testing.assert_array_equal(info["patch_apples"][:, p], nxt.apples[:, grid(patch_cells(p))].sum(1))
    np.testing.assert_array_equal(info["apple_count"], nxt.apples.sum((1, 2)))
    np.testing.assert_array_equal(info["extinct"], info["patch_apples"] == 0)
    np.testing.assert_array_equal(info["num_extinct"], info["extinct"].sum(1))
    np.testing.assert_array_equal(reward, info["apples_eaten"])
    assert info["patch_apples"].dtype == np.float32 and info["extinct"].dtype == bool


def test_params_can_be_vmapped():
    """Two parameter sets in one vmapped call: regrowth certain vs impossible, beams of length 1
    vs 5."""
    e = env()
    st = make_state([(7, 5, EAST)], apples=set(APPLE_CELLS) - {(4, 4)})
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([jnp.asarray(x)] * 2), e.default_params)
    batch = batch.replace(regrowth_probs=(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]),
                                          jnp.array([1.0, 0.0]), jnp.array([1.0, 0.0])),
                          beam_length=jnp.array([5, 1]))
    states = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), st)
    acts = jnp.asarray([pad_actions([TAG])] * 2, jnp.int32)
    out = jax.jit(jax.vmap(e.step_env))(jax.random.split(KEY, 2), states, acts, batch)
    nxt = out[1]
    assert bool(nxt.apples[0, 4, 4]) and not bool(nxt.apples[1, 4, 4])
    assert cellset(np.asarray(nxt.beam[0])) == beam_cells((7, 5), EAST, 5)
    assert cellset(np.asarray(nxt.beam[1])) == beam_cells((7, 5), EAST, 1)
