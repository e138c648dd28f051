"""Cleanup (thesis §5.4, Table B.2, A10, A11): hand-built states with known outcomes, statistical
checks of the spawn rules, move-resolution invariants, and rendering pixel for pixel against an
independent renderer written here from the spec's colour table."""
from functools import lru_cache

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmcg
from envs.cleanup import DOWN, FIRE, LEFT, MAPS, RIGHT, STAY, UP, Cleanup, EnvState

KEY = jax.random.PRNGKey(0)
N_KEYS = 2000  # statistical tests: keys per vmapped batch

# spec colour table (thesis §5.4), written out independently of envs/cleanup.py
RGB = {
    "empty": (0, 0, 0),
    "wall": (180, 180, 180),
    "apple": (0, 255, 0),
    "waste": (113, 75, 24),
    "river": (99, 156, 194),
    "beam": (100, 255, 255),
    "agents": [(159, 67, 255), (2, 81, 154), (204, 0, 204)],
}
DELTA = {LEFT: (0, -1), RIGHT: (0, 1), UP: (-1, 0), DOWN: (1, 0), STAY: (0, 0), FIRE: (0, 0)}


# ---- helpers (one jit per environment and call pattern, reused by all tests) --------------------
@lru_cache
def env_of(map_name="7x7", n=2):
    return Cleanup(map_name, n)


@lru_cache
def jit_step_batch(map_name="7x7", n=2):
    """Batched keys, states and actions (the one compile per environment that tests share)."""
    return jax.jit(jax.vmap(env_of(map_name, n).step_env, in_axes=(0, 0, 0, None)))


def grid(map_name, cells):
    rows = MAPS[map_name]
    g = np.zeros((len(rows), len(rows[0])), bool)
    for r, c in cells:
        g[r, c] = True
    return g


def cells_of(map_name, chars):
    return [(r, c) for r, row in enumerate(MAPS[map_name]) for c, ch in enumerate(row) if ch in chars]


def make_state(map_name, pos, waste=None, apples=(), time=0):
    """`waste=None`: the initial waste (the map's H cells)."""
    waste = cells_of(map_name, "H") if waste is None else waste
    return EnvState(
        agent_pos=jnp.asarray(pos, jnp.int32),
        waste=jnp.asarray(grid(map_name, waste)),
        apples=jnp.asarray(grid(map_name, apples)),
        beam=jnp.asarray(grid(map_name, [])),
        time=jnp.asarray(time, jnp.int32),
    )


def no_spawn(map_name):
    return env_of(map_name).default_params.replace(apple_respawn_prob=0.0, waste_spawn_prob=0.0)


def step_keys(map_name, state, actions, params=None, seed=1, keys=None):
    """`N_KEYS` transitions of one state and joint action under different keys (numpy out)."""
    n = int(state.agent_pos.shape[0])
    params = env_of(map_name, n).default_params if params is None else params
    keys = jax.random.split(jax.random.PRNGKey(seed), N_KEYS) if keys is None else keys
    states = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (N_KEYS, *x.shape)), state)
    actions = jnp.broadcast_to(jnp.asarray(actions, jnp.int32), (N_KEYS, n))
    out = jit_step_batch(map_name, n)(keys, states, actions, params)
    return jax.tree_util.tree_map(np.asarray, out)


def step(map_name, state, actions, params=None, key=KEY):
    """One transition (through the shared batched jit, every row with the same key)."""
    keys = jnp.broadcast_to(key, (N_KEYS, *key.shape))
    out = step_keys(map_name, state, actions, params, keys=keys)
    return jax.tree_util.tree_map(lambda x: x[0], out)


def cellset(mask):
    return {(int(r), int(c)) for r, c in np.argwhere(mask)}


def assert_rate(hits, trials, p, sds=5.0):
    """Binomial check: hits/trials within `sds` standard deviations of p."""
    rate = hits / trials
    tol = sds * np.sqrt(max(p * (1 - p), 1 / trials) / trials)
    assert abs(rate - p) <= tol, f"rate {rate:.4f} vs expected {p:.4f} (tolerance {tol:.4f})"


# ---- maps, reset, parameters ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "map_name, spawns, density, n_potential, n_apple, view",
    [
        ("7x7", [(5, 2), (1, 4)], 1.0, 2, 5, 4),
        ("10x10", [(8, 3), (5, 4), (1, 6)], 0.5, 16, 12, 7),
    ],
)
def test_reset(map_name, spawns, density, n_potential, n_apple, view):
    env = env_of(map_name, len(spawns))
    obs, state = env.reset(KEY, env.default_params)
    np.testing.assert_array_equal(state.agent_pos, spawns)
    np.testing.assert_array_equal(state.waste, grid(map_name, cells_of(map_name, "H")))
    assert not state.apples.any() and not state.beam.any() and int(state.time) == 0
    assert env.num_potential_waste == n_potential == len(cells_of(map_name, "HR"))
    assert len(cells_of(map_name, "B")) == n_apple
    assert float(state.waste.sum()) / n_potential == density
    assert obs.shape == (len(spawns), 2 * view + 1, 2 * view + 1, 3) and obs.dtype == jnp.float32
    assert env.observation_space().shape == obs.shape[1:]
    assert env.action_space().n == 6
    # the default 2 agents take the first two of these spawn points (A10)
    np.testing.assert_array_equal(env_of(map_name).reset(KEY, env.default_params)[1].agent_pos,
                                  spawns[:2])


@pytest.mark.parametrize("map_name", ["7x7", "10x10"])
def test_no_spawns_at_start_density(map_name):
    """Episodes start with density >= threshold_depletion: no apples, no waste growth."""
    env = env_of(map_name)
    state = make_state(map_name, env.spawn_points)  # the reset state (test_reset)
    _, nxt, reward, terminated, info = step_keys(map_name, state, [STAY, STAY])
    assert not nxt.apples.any() and (info["apple_count"] == 0).all()
    assert (nxt.waste == np.asarray(state.waste)).all()
    density = {"7x7": 1.0, "10x10": 0.5}[map_name]
    assert (info["waste_density"] == density).all()
    assert (reward == 0).all() and not terminated.any()


def test_table_b2_defaults_and_registry():
    _, p7 = jaxmcg.make("cleanup-7x7-v0")
    env10, p10 = jaxmcg.make("cleanup-10x10-v0")
    assert (p7.apple_respawn_prob, p7.threshold_depletion, p7.threshold_restoration,
            p7.waste_spawn_prob, p7.max_steps_in_episode) == (0.5, 0.6, 0.0, 0.5, 50)
    assert (p10.apple_respawn_prob, p10.threshold_depletion, p10.threshold_restoration,
            p10.waste_spawn_prob, p10.max_steps_in_episode) == (0.3, 0.4, 0.0, 0.5, 50)
    assert env10.view_size == 7 and env10.num_agents == 2
    env3, _ = jaxmcg.make("cleanup-10x10-v0", num_agents=3, apple_respawn_prob=0.1)
    assert env3.num_agents == 3


@pytest.mark.parametrize(
    "make_it, needles",
    [
        (lambda: Cleanup("8x8"), ["'8x8'", "'7x7'", "'10x10'"]),
        (lambda: Cleanup("7x7", num_agents=3), ["num_agents=3", "[1, 2]"]),
        (lambda: Cleanup("7x7", num_agents=0), ["num_agents=0"]),
        (lambda: Cleanup("10x10", num_agents=4), ["num_agents=4", "[1, 2, 3]"]),
        (lambda: Cleanup("7x7", view_size=-1), ["view_size=-1"]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", num_agents=3), ["num_agents=3"]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", apple_respawn_prob=1.5),
         ["apple_respawn_prob=1.5", "[0, 1]"]),
        (lambda: jaxmcg.make("cleanup-10x10-v0", waste_spawn_prob=-0.1),
         ["waste_spawn_prob=-0.1", "[0, 1]"]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", threshold_restoration=0.7),
         ["threshold_restoration=0.7", "threshold_restoration < threshold_depletion"]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", threshold_restoration=0.6),
         ["threshold_restoration=0.6"]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", threshold_depletion=1.2),
         ["threshold_depletion=1.2", "<= 1"]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", threshold_restoration=-0.1),
         ["threshold_restoration=-0.1", "0 <="]),
        (lambda: jaxmcg.make("cleanup-7x7-v0", max_steps_in_episode=0), ["max_steps_in_episode=0"]),
    ],
)
def test_bad_input_fails_before_compilation(make_it, needles):
    assert_rejected_before_compiling(make_it, needles)


# ---- movement ---------------------------------------------------------------------------------------
def test_moves_and_walls():
    # 7x7: agent 0 in the top-left corner (1, 1) cannot go left or up; agent 1 moves freely
    state = make_state("7x7", [(1, 1), (3, 3)])
    for a0, expect0 in [(LEFT, (1, 1)), (UP, (1, 1)), (RIGHT, (1, 2)), (DOWN, (2, 1))]:
        for a1, expect1 in [(LEFT, (3, 2)), (RIGHT, (3, 4)), (UP, (2, 3)), (DOWN, (4, 3)),
                            (STAY, (3, 3)), (FIRE, (3, 3))]:
            nxt = step("7x7", state, [a0, a1])[1]
            np.testing.assert_array_equal(nxt.agent_pos, [expect0, expect1], err_msg=(a0, a1))
    # the right and bottom walls
    nxt = step("7x7", make_state("7x7", [(5, 5), (5, 1)]), [RIGHT, DOWN])[1]
    np.testing.assert_array_equal(nxt.agent_pos, [(5, 5), (5, 1)])


def test_blocked_moves_chains_and_no_swaps():
    # into an agent that stays (or fires): blocked
    for a1 in (STAY, FIRE):
        nxt = step("7x7", make_state("7x7", [(3, 2), (3, 3)]), [RIGHT, a1])[1]
        np.testing.assert_array_equal(nxt.agent_pos, [(3, 2), (3, 3)])
    # into an agent that is blocked by a wall: blocked
    nxt = step("7x7", make_state("7x7", [(3, 4), (3, 5)]), [RIGHT, RIGHT])[1]
    np.testing.assert_array_equal(nxt.agent_pos, [(3, 4), (3, 5)])
    # into a cell its occupant leaves: both move (a chain)
    nxt = step("7x7", make_state("7x7", [(3, 2), (3, 3)]), [RIGHT, RIGHT])[1]
    np.testing.assert_array_equal(nxt.agent_pos, [(3, 3), (3, 4)])
    nxt = step("7x7", make_state("7x7", [(3, 2), (3, 3)]), [RIGHT, UP])[1]
    np.testing.assert_array_equal(nxt.agent_pos, [(3, 3), (2, 3)])
    # swaps are impossible, for every key
    for pos, acts in [([(3, 2), (3, 3)], [RIGHT, LEFT]), ([(2, 3), (3, 3)], [DOWN, UP])]:
        nxt = step_keys("7x7", make_state("7x7", pos), acts)[1]
        assert (nxt.agent_pos == np.asarray(pos)).all()
    # three-agent chain ending at a blocked agent: nobody moves; ending free: everybody moves
    nxt = step("10x10", make_state("10x10", [(4, 3), (4, 4), (4, 5)]), [RIGHT, RIGHT, STAY])[1]
    np.testing.assert_array_equal(nxt.agent_pos, [(4, 3), (4, 4), (4, 5)])
    nxt = step("10x10", make_state("10x10", [(4, 3), (4, 4), (4, 5)]), [RIGHT, RIGHT, RIGHT])[1]
    np.testing.assert_array_equal(nxt.agent_pos, [(4, 4), (4, 5), (4, 6)])


def test_conflicts_are_fair():
    # two agents want (3, 3): exactly one gets it, each about half the time
    nxt = step_keys("7x7", make_state("7x7", [(3, 2), (3, 4)]), [RIGHT, LEFT])[1]
    won0 = (nxt.agent_pos[:, 0] == (3, 3)).all(-1)
    won1 = (nxt.agent_pos[:, 1] == (3, 3)).all(-1)
    assert (won0 ^ won1).all()
    assert (nxt.agent_pos[~won0, 0] == (3, 2)).all() and (nxt.agent_pos[~won1, 1] == (3, 4)).all()
    assert_rate(won0.sum(), N_KEYS, 0.5, sds=4)
    # three agents want (4, 4) on 10x10: each wins about a third of the time
    state = make_state("10x10", [(4, 3), (3, 4), (4, 5)])
    nxt = step_keys("10x10", state, [RIGHT, DOWN, LEFT])[1]
    won = (nxt.agent_pos == (4, 4)).all(-1)  # [keys, 3]
    assert (won.sum(1) == 1).all()
    for k in range(3):
        assert_rate(won[:, k].sum(), N_KEYS, 1 / 3, sds=4)


def check_move_invariants(map_name, old, actions, new):
    """Invariants of one move resolution (numpy, per environment)."""
    walls = grid(map_name, cells_of(map_name, "@"))
    old, new = [tuple(map(int, p)) for p in old], [tuple(map(int, p)) for p in new]
    assert len(set(new)) == len(new), f"overlap: {old} {actions} -> {new}"
    for i, (p, a, q) in enumerate(zip(old, actions, new)):
        d = DELTA[int(a)]
        target = (p[0] + d[0], p[1] + d[1])
        assert not walls[q], f"agent {i} in a wall"
        if target == p or walls[target]:
            assert q == p, f"agent {i} moved without a move action or through a wall"
            continue
        assert q in (p, target), f"agent {i} went from {p} to {q} with action {a}"
        if q == p:  # blocked: its target must be occupied at the end (by a winner or a stayer)
            assert target in new, f"agent {i} was blocked from a free cell: {old} {actions} -> {new}"
        for j in range(len(old)):
            if j != i and q == old[j]:
                assert new[j] != p, f"agents {i} and {j} swapped: {old} {actions} -> {new}"


@pytest.mark.parametrize("map_name, n", [("7x7", 2), ("10x10", 3)])
def test_move_invariants_random_crowded(map_name, n):
    """Random crowded configurations (agents in a 3x3 block), random actions and keys."""
    rng = np.random.default_rng(0)
    env = env_of(map_name, n)
    h, w = env.height, env.width
    batch = N_KEYS
    pos = np.empty((batch, n, 2), np.int32)
    for b in range(batch):
        r0, c0 = rng.integers(1, h - 3), rng.integers(1, w - 3)  # interiors are wall-free
        block = [(r0 + i // 3, c0 + i % 3) for i in rng.choice(9, n, replace=False)]
        pos[b] = block
    actions = rng.integers(0, 6, (batch, n)).astype(np.int32)
    states = jax.vmap(lambda p: make_state(map_name, [(0, 0)] * n).replace(agent_pos=p))(
        jnp.asarray(pos))
    keys = jax.random.split(jax.random.PRNGKey(7), batch)
    nxt = jit_step_batch(map_name, n)(keys, states, jnp.asarray(actions), env.default_params)[1]
    new = np.asarray(nxt.agent_pos)
    for b in range(batch):
        check_move_invariants(map_name, pos[b], actions[b], new[b])


@settings(max_examples=60, deadline=None)
@given(
    cells=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=3, max_size=3,
                   unique=True),
    actions=st.lists(st.integers(0, 5), min_size=3, max_size=3),
    seed=st.integers(0, 2**31 - 1),
)
def test_move_invariants_hypothesis(cells, actions, seed):
    state = make_state("10x10", cells)
    nxt = step("10x10", state, actions, key=jax.random.PRNGKey(seed))[1]
    check_move_invariants("10x10", cells, actions, nxt.agent_pos)


# ---- consumption ----------------------------------------------------------------------------------
def test_consumption():
    # agent 0 steps onto an apple, agent 1 steps onto another: +1 each; density 1, so no respawn
    state = make_state("7x7", [(4, 4), (1, 5)], apples=[(4, 5), (2, 5), (5, 5)])
    _, nxt, reward, terminated, info = step("7x7", state, [RIGHT, DOWN])
    np.testing.assert_array_equal(reward, [1.0, 1.0])
    np.testing.assert_array_equal(info["apples"], [1.0, 1.0])
    assert reward.dtype == np.float32 and not terminated
    assert cellset(nxt.apples) == {(5, 5)} and info["apple_count"] == 1.0
    # moving next to an apple, or staying, earns nothing
    _, nxt, reward, _, info = step("7x7", state, [DOWN, STAY])
    np.testing.assert_array_equal(reward, [0.0, 0.0])
    assert cellset(nxt.apples) == {(4, 5), (2, 5), (5, 5)}


# ---- cleaning beams ---------------------------------------------------------------------------------
def column(c, rows):
    return {(r, c) for r in rows}


BEAM_CASES = [
    # (map, positions, actions, waste, expected beam cells, expected cleaned, expected waste after)
    pytest.param(  # full beam on 7x7: centre stops before the top wall (4 cells), sides 5 cells
        "7x7", [(5, 2), (1, 5)], [FIRE, STAY], [],
        column(2, range(1, 5)) | column(1, range(1, 6)) | column(3, range(1, 6)), [0, 0], set(),
        id="7x7-walls"),
    pytest.param(  # near the top wall: centre 1 cell, sides 2 cells
        "7x7", [(2, 2), (5, 1)], [FIRE, STAY], [],
        {(1, 2), (2, 1), (1, 1), (2, 3), (1, 3)}, [0, 0], set(), id="7x7-top-wall"),
    pytest.param(  # length 5: centre r-1..r-5, sides r..r-4, nothing beyond
        "10x10", [(8, 3), (1, 8)], [FIRE, STAY], [],
        column(3, range(3, 8)) | column(2, range(4, 9)) | column(4, range(4, 9)), [0, 0], set(),
        id="10x10-length"),
    pytest.param(  # an agent in the centre beam stops it, inclusively, and is not affected
        "10x10", [(8, 3), (5, 3)], [FIRE, STAY], [],
        column(3, range(5, 8)) | column(2, range(4, 9)) | column(4, range(4, 9)), [0, 0],
        set(), id="10x10-agent-centre"),
    pytest.param(  # an agent in a side beam stops that side beam, inclusively
        "10x10", [(8, 3), (6, 4)], [FIRE, STAY], [],
        column(3, range(3, 8)) | column(2, range(4, 9)) | column(4, range(6, 9)), [0, 0], set(),
        id="10x10-agent-side"),
    pytest.param(  # initial waste: centre and left beams each clean their first H and stop there
        "10x10", [(8, 2), (1, 6)], [FIRE, STAY], None,
        {(7, 2), (8, 1), (7, 1)} | column(3, range(4, 9)), [2, 0],
        set(cells_of("10x10", "H")) - {(7, 1), (7, 2)}, id="10x10-initial-waste"),
    pytest.param(  # all 16 cells waste, agent standing on waste: at most one cell per beam,
        # the side beam cleans the cell level with the agent, its own cell is untouched
        "10x10", [(6, 2), (1, 6)], [FIRE, STAY], cells_of("10x10", "HR"),
        {(5, 2), (6, 1)} | column(3, range(2, 7)), [2, 0],
        set(cells_of("10x10", "HR")) - {(5, 2), (6, 1)}, id="10x10-one-per-beam"),
    pytest.param(  # side beam starts level with the agent
        "10x10", [(2, 3), (8, 8)], [FIRE, STAY], [(2, 2), (1, 2)],
        {(1, 3), (2, 2), (2, 4), (1, 4)}, [1, 0], {(1, 2)}, id="10x10-side-level"),
    pytest.param(  # waste behind an agent: the beam stops at the agent and cleans nothing
        "10x10", [(8, 1), (6, 1)], [FIRE, STAY], [(5, 1), (7, 2)],
        {(7, 1), (6, 1), (8, 2), (7, 2)}, [1, 0], {(5, 1)}, id="10x10-agent-shields"),
    pytest.param(  # both fire; each is credited its own cells; each beam stops at the other agent
        "10x10", [(8, 1), (8, 2)], [FIRE, FIRE], None,
        {(7, 1), (8, 2), (7, 2), (8, 1)} | column(3, range(4, 9)), [1, 1],
        set(cells_of("10x10", "H")) - {(7, 1), (7, 2)}, id="10x10-both-fire"),
    pytest.param(  # beams of a moving agent do not exist; FIRE of the other still works
        "7x7", [(5, 2), (3, 1)], [UP, FIRE], None,
        {(2, 1), (3, 2), (2, 2), (1, 2)}, [0, 1], {(1, 1)}, id="7x7-cleaner-and-mover"),
]


@pytest.mark.parametrize("map_name, pos, actions, waste, beam, cleaned, waste_after", BEAM_CASES)
def test_beams(map_name, pos, actions, waste, beam, cleaned, waste_after):
    state = make_state(map_name, pos, waste=waste)
    _, nxt, reward, _, info = step(map_name, state, actions, params=no_spawn(map_name))
    expected_pos = [(p[0] + DELTA[a][0], p[1] + DELTA[a][1]) for p, a in zip(pos, actions)]
    np.testing.assert_array_equal(nxt.agent_pos, expected_pos)  # beams do not move agents
    assert cellset(nxt.beam) == beam
    np.testing.assert_array_equal(info["cleaned"], cleaned)
    assert info["cleaned"].dtype == np.float32
    np.testing.assert_array_equal(info["fired"], np.asarray(actions) == FIRE)
    assert cellset(nxt.waste) == waste_after
    n_pot = len(cells_of(map_name, "HR"))
    assert info["waste_density"] == np.float32(len(waste_after) / n_pot)
    np.testing.assert_array_equal(reward, [0.0, 0.0])


def test_beams_fire_in_sequence():
    """Two side beams reach (7, 2) from either side. They fire one after the other, so the second
    passes the cell the first cleaned and cleans (5, 2): three cells in all, whatever the order."""
    state = make_state("10x10", [(8, 3), (8, 1)])
    nxt, info = (lambda o: (o[1], o[4]))(
        step_keys("10x10", state, [FIRE, FIRE], params=no_spawn("10x10")))
    remaining = grid("10x10", set(cells_of("10x10", "H")) - {(7, 1), (7, 2), (5, 2)})
    assert (nxt.waste == remaining).all()
    np.testing.assert_array_equal(info["cleaned"], np.tile([1.0, 2.0], (N_KEYS, 1)))
    assert nxt.beam[:, 5, 2].all() and not nxt.beam[:, 4, 2].any()
    # with (7, 2) the only waste both reach, whoever fires first (uniformly random) gets it
    state = make_state("10x10", [(8, 3), (8, 1)], waste=[(7, 2), (1, 1)])
    _, nxt, _, _, info = step_keys("10x10", state, [FIRE, FIRE], params=no_spawn("10x10"))
    assert (info["cleaned"].sum(1) == 1).all() and not nxt.waste[:, 7, 2].any()
    assert nxt.beam[:, 4, 2].all()  # the second beam passes the cleaned cell to its full length
    assert_rate(info["cleaned"][:, 0].sum(), N_KEYS, 0.5, sds=4)
    assert nxt.beam[:, 5, 2].all() and nxt.beam[:, 6, 2].all()


# ---- spawning ---------------------------------------------------------------------------------------
def apple_rate_case(map_name, pos, waste, params=None):
    pos = [tuple(map(int, p)) for p in np.asarray(pos)]
    state = make_state(map_name, pos, waste=waste)
    _, nxt, _, _, info = step_keys(map_name, state, [STAY] * len(pos), params=params)
    free = [c for c in cells_of(map_name, "B") if c not in pos]
    hits = sum(nxt.apples[:, r, c].sum() for r, c in free)
    # apples only ever on apple cells
    assert nxt.apples.sum() == hits
    assert (info["apple_count"] == nxt.apples.sum((1, 2))).all()
    return hits, len(free) * N_KEYS, nxt, info


@pytest.mark.parametrize(
    "map_name, n_waste, p_apple",
    [
        ("7x7", 0, 0.5),
        ("7x7", 1, (1 - 0.5 / 0.6) * 0.5),  # ~0.083 (spec)
        ("7x7", 2, 0.0),
        ("10x10", 0, 0.3),
        ("10x10", 6, 0.01875),  # spec value at d = 6/16
        ("10x10", 7, 0.0),  # d = 7/16 >= 0.4
        ("10x10", 8, 0.0),
    ],
)
def test_apple_spawn_rate(map_name, n_waste, p_apple):
    env = env_of(map_name)
    waste = cells_of(map_name, "HR")[:n_waste]
    hits, trials, _, _ = apple_rate_case(map_name, env.spawn_points, waste)
    if p_apple == 0:
        assert hits == 0
    else:
        assert_rate(hits, trials, p_apple)


def test_apple_spawn_linear_with_restoration_threshold():
    params = env_of("10x10").default_params.replace(threshold_restoration=0.25)
    pos = [(8, 3), (5, 4)]
    pot = cells_of("10x10", "HR")
    for n_waste, p in [(4, 0.3), (5, (1 - (5 / 16 - 0.25) / 0.15) * 0.3), (3, 0.3)]:
        hits, trials, _, _ = apple_rate_case("10x10", pos, pot[:n_waste], params=params)
        assert_rate(hits, trials, p)


def test_no_apple_under_agent_or_on_apple():
    # agent 1 stands on an apple cell; an apple already at (1, 8) stays one apple
    pos = [(8, 3), (3, 8)]
    state = make_state("10x10", pos, waste=[], apples=[(1, 8)])
    _, nxt, _, _, _ = step_keys("10x10", state, [STAY, STAY])
    assert not nxt.apples[:, 3, 8].any()
    assert nxt.apples[:, 1, 8].all()
    assert nxt.apples[:, 2, 7].mean() > 0.2  # the others do grow (p = 0.3)


@pytest.mark.parametrize(
    "map_name, n_waste, p_waste",
    [("10x10", 0, 0.05), ("10x10", 5, 0.05), ("10x10", 0, 0.5), ("7x7", 0, 0.5), ("7x7", 1, 0.5),
     ("10x10", 6, 0.2)],
)
def test_waste_spawn(map_name, n_waste, p_waste):
    """At most one waste cell per step, with probability 1 - (1 - p)^k, uniform over the k
    non-waste potential-waste cells; existing waste stays (A11)."""
    env = env_of(map_name)
    params = env.default_params.replace(waste_spawn_prob=p_waste)
    pot = cells_of(map_name, "HR")
    waste = pot[:n_waste]
    state = make_state(map_name, env.spawn_points, waste=waste)
    _, nxt, _, _, info = step_keys(map_name, state, [STAY, STAY], params=params)
    old = grid(map_name, waste)
    assert nxt.waste[:, old].all()
    new = nxt.waste & ~old
    per_env = new.sum((1, 2))
    assert per_env.max() <= 1
    assert not new[:, ~grid(map_name, pot)].any()
    k = len(pot) - n_waste
    assert_rate(per_env.sum(), N_KEYS, 1 - (1 - p_waste) ** k)
    np.testing.assert_allclose(info["waste_density"], (n_waste + per_env) / len(pot))
    # which cell: uniform over the k candidates (chi-square, df = k - 1, p-value ~1e-4)
    counts = np.array([new[:, r, c].sum() for r, c in pot[n_waste:]])
    if k > 1:
        expected = counts.sum() / k
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < k - 1 + 6 * np.sqrt(2 * (k - 1)) + 10, counts


def test_spawn_probabilities_use_density_after_cleaning():
    """7x7 at density 1 (no spawns), but agent 0 cleans (2, 1) this step: density 0.5, so apples
    grow at ~0.083 and (2, 1) turns back to waste with probability 0.5, in the same step."""
    state = make_state("7x7", [(3, 1), (5, 3)])
    _, nxt, _, _, info = step_keys("7x7", state, [FIRE, STAY])
    np.testing.assert_array_equal(info["cleaned"], np.tile([1.0, 0.0], (N_KEYS, 1)))
    assert nxt.waste[:, 1, 1].all()
    assert_rate(nxt.waste[:, 2, 1].sum(), N_KEYS, 0.5)
    assert_rate(nxt.apples.sum(), 5 * N_KEYS, (1 - 0.5 / 0.6) * 0.5)
    assert set(np.unique(info["waste_density"])) == {0.5, 1.0}


def test_params_are_traced_and_vmappable():
    """EnvParams can be vmapped: at density 0 apple_respawn_prob 0 grows nothing, 1 fills every
    free apple cell."""
    env = env_of("7x7")
    state = make_state("7x7", [(5, 2), (1, 4)], waste=[])
    params = env.default_params.replace(
        apple_respawn_prob=jnp.array([0.0, 1.0, 0.5]), waste_spawn_prob=jnp.array([0.0, 1.0, 0.0]))
    axes = jax.tree_util.tree_map(lambda _: None, env.default_params).replace(
        apple_respawn_prob=0, waste_spawn_prob=0)
    f = jax.jit(jax.vmap(env.step_env, in_axes=(None, None, None, axes)))
    _, nxt, _, _, info = f(KEY, state, jnp.array([STAY, STAY]), params)
    np.testing.assert_array_equal(info["apple_count"], [0.0, 5.0, info["apple_count"][2]])
    np.testing.assert_array_equal(info["waste_density"], [0.0, 0.5, 0.0])


# ---- rendering --------------------------------------------------------------------------------------
def expected_view(map_name, pos, waste, apples, beam, centre, v):
    """Independent renderer from the spec: map colours, waste, apples, agents, beams on top;
    a (2v+1)^2 window around `centre`, black outside the map, RGB / 256."""
    rows = MAPS[map_name]
    h, w = len(rows), len(rows[0])
    img = np.zeros((h, w, 3), np.float32)
    for r in range(h):
        for c in range(w):
            ch = rows[r][c]
            img[r, c] = RGB["wall"] if ch == "@" else RGB["river"] if ch in "HR" else RGB["empty"]
            if (r, c) in waste:
                img[r, c] = RGB["waste"]
            if (r, c) in apples:
                img[r, c] = RGB["apple"]
    for k, (r, c) in enumerate(pos):
        img[r, c] = RGB["agents"][k]
    for r, c in beam:
        img[r, c] = RGB["beam"]
    out = np.zeros((2 * v + 1, 2 * v + 1, 3), np.float32)
    for i in range(2 * v + 1):
        for j in range(2 * v + 1):
            r, c = centre[0] - v + i, centre[1] - v + j
            if 0 <= r < h and 0 <= c < w:
                out[i, j] = img[r, c]
    return out / 256


def test_render_known_state_pixel_for_pixel():
    """7x7: agent 0 at (5, 2) fires, agent 1 at (3, 2) stands in the centre beam (drawn cyan over
    the agent); the left beam cleans the waste at (1, 1); apples at (1, 5) and (3, 5)."""
    state = make_state("7x7", [(5, 2), (3, 2)], waste=[(1, 1)], apples=[(1, 5), (3, 5)])
    obs, nxt, _, _, info = step("7x7", state, [FIRE, STAY], params=no_spawn("7x7"))
    beam = column(2, [4, 3]) | column(1, range(1, 6)) | column(3, range(1, 6))
    assert cellset(nxt.beam) == beam and info["cleaned"][0] == 1
    pos, apples = [(5, 2), (3, 2)], {(1, 5), (3, 5)}
    for k in range(2):
        np.testing.assert_array_equal(obs[k], expected_view("7x7", pos, set(), apples, beam,
                                                            pos[k], 4), err_msg=f"agent {k}")
    o = obs[0] * 256  # agent 0's view: window rows 1..9, cols -2..6; centre (4, 4) = (5, 2)
    np.testing.assert_array_equal(o[4, 4], RGB["agents"][0])  # itself, not in a beam
    np.testing.assert_array_equal(o[2, 4], RGB["beam"])  # agent 1 at (3, 2), under the beam
    np.testing.assert_array_equal(o[0, 3], RGB["beam"])  # (1, 1): cleaned waste, beam drawn
    np.testing.assert_array_equal(o[2, 7], RGB["apple"])  # (3, 5)
    np.testing.assert_array_equal(o[4, 8], RGB["wall"])  # (5, 6)
    np.testing.assert_array_equal(o[5, 5], RGB["wall"])  # (6, 3)
    assert (o[6:] == 0).all() and (o[:, :2] == 0).all()  # rows 7..9 and cols -2..-1: outside
    np.testing.assert_array_equal(o[1, 3], RGB["beam"])  # river (2, 1) under the left beam
    np.testing.assert_array_equal(obs[1][4, 4] * 256, RGB["beam"])  # agent 1 sees itself cyan


def test_render_reset_and_colours():
    """10x10 from reset with 3 agents, and a state with waste, river and apples, no beams."""
    env = env_of("10x10", 3)
    obs, state = env.reset(KEY, env.default_params)
    pos = [(8, 3), (5, 4), (1, 6)]
    waste = set(cells_of("10x10", "H"))
    for k in range(3):
        np.testing.assert_array_equal(obs[k], expected_view("10x10", pos, waste, set(), set(),
                                                            pos[k], 7))
    np.testing.assert_array_equal(obs[1][7, 7] * 256, RGB["agents"][1])
    np.testing.assert_array_equal(obs[2][7, 7] * 256, RGB["agents"][2])
    state = make_state("10x10", [(2, 1), (4, 8)], waste=[(3, 2)], apples=[(2, 8), (6, 7)])
    obs = np.asarray(jax.jit(env_of("10x10").get_obs)(state))
    for k, centre in enumerate([(2, 1), (4, 8)]):
        np.testing.assert_array_equal(
            obs[k], expected_view("10x10", [(2, 1), (4, 8)], {(3, 2)}, {(2, 8), (6, 7)}, set(),
                                  centre, 7))
    np.testing.assert_array_equal(obs[0][7, 8] * 256, RGB["river"])  # (2, 2)
    np.testing.assert_array_equal(obs[0][8, 8] * 256, RGB["waste"])  # (3, 2)


@pytest.mark.parametrize("map_name, centre, v", [("7x7", (3, 3), 4), ("10x10", (4, 4), 5)])
def test_global_obs_covers_map(map_name, centre, v):
    env = env_of(map_name)
    state = make_state(map_name, env.spawn_points, apples=cells_of(map_name, "B")[:2])
    g = np.asarray(jax.jit(env.global_obs)(state))
    pos = [tuple(map(int, p)) for p in state.agent_pos]
    expected = expected_view(map_name, pos, set(cells_of(map_name, "H")),
                             set(cells_of(map_name, "B")[:2]), set(), centre, v)
    np.testing.assert_array_equal(g, expected)
    assert g.shape == env.global_observation_space().shape == (2 * v + 1,) * 2 + (3,)
    # every map cell is in the window (the walls around the map are all visible)
    h = len(MAPS[map_name])
    assert centre[0] - v <= 0 and centre[0] + v >= h - 1
    assert (g[v - centre[0]: v - centre[0] + h, v - centre[1]: v - centre[1] + h] * 256
            == RGB["wall"]).all(-1).sum() == len(cells_of(map_name, "@"))


# ---- episode, info, incentive features ---------------------------------------------------------------
def test_episode_truncates_at_50_and_info_is_stable():
    env, params = jaxmcg.make("cleanup-7x7-v0")

    def run(key):
        _, state = env.reset(key, params)

        def body(state, key):
            a = jax.random.randint(key, (2,), 0, 6)
            _, state, r, term, trunc, info = env.step(key, state, a, params)
            return state, (r, term, trunc, state.time, info)

        return jax.lax.scan(body, state, jax.random.split(key, 60))[1]

    r, term, trunc, time, info = jax.tree_util.tree_map(np.asarray, jax.jit(run)(KEY))
    assert not term.any()
    np.testing.assert_array_equal(np.flatnonzero(trunc), [49])
    assert time[49] == 0 and time[50] == 1 and time[48] == 49
    assert r.shape == (60, 2) and r.dtype == np.float32
    shapes = {k: (v.shape, v.dtype) for k, v in info.items()}
    assert shapes["apples"] == ((60, 2), np.float32) and shapes["cleaned"] == ((60, 2), np.float32)
    assert shapes["fired"] == ((60, 2), np.bool_)
    assert shapes["waste_density"] == ((60,), np.float32)
    assert shapes["apple_count"] == ((60,), np.float32)
    np.testing.assert_array_equal(info["apples"], r)


def test_incentive_action_features():
    env = env_of("7x7")
    feats = np.asarray(env.incentive_action_features(jnp.array([[FIRE, STAY], [UP, FIRE]])))
    assert feats.shape == (2, 2, 2) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats, [[[0, 1], [1, 0]], [[1, 0], [0, 1]]])
