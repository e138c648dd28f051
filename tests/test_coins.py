"""Coins (envs/coins.py; d3c.md §2.5) and the LOLA coin game: hand-built states with known outcomes
(moves at walls and around the torus, own / other pickups, simultaneous pickups under both rules),
spawn and respawn statistics with fixed keys, observations, an oracle check against the plain numpy
Coins of benchmarks/coins_numpy.py, and parameter validation before compilation."""
from functools import lru_cache

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling, check_env

import jaxmcg
from benchmarks.coins_numpy import CoinsNumpy
from envs.coins import (
    DOWN,
    LEFT,
    RIGHT,
    STAY,
    UP,
    CoinGame,
    CoinGameParams,
    CoinGameState,
    Coins,
    EnvParams,
    EnvState,
)

KEY = jax.random.PRNGKey(0)
N_KEYS = 2000  # every batched call uses this many rows, so each environment compiles once


# ---- helpers: one jitted, vmapped step per environment -------------------------------------------
@lru_cache
def coins_env(grid_size=5, tie_break="both", wrap=False):
    return Coins(grid_size, tie_break, wrap)


@lru_cache
def lola_env(tie_break="both", coin_colour="random", stay_action=False, shared_obs=False):
    return CoinGame(3, tie_break, True, coin_colour, stay_action, shared_obs)


@lru_cache
def batched_step(env):
    return jax.jit(jax.vmap(env.step_env, in_axes=(0, 0, 0, None)))


def step_keys(env, state, actions, params, seed=1):
    """`N_KEYS` transitions of one state (or a batch of `N_KEYS` states) and joint action(s) under
    different keys (numpy out)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), N_KEYS)
    states = jax.tree_util.tree_map(
        lambda x, ref: jnp.broadcast_to(x, (N_KEYS, *jnp.shape(ref))), state, unbatched(env))
    acts = jnp.broadcast_to(jnp.asarray(actions, jnp.int32), (N_KEYS, 2))
    return jax.tree_util.tree_map(np.asarray, batched_step(env)(keys, states, acts, params))


def step_one(env, state, actions, params, seed=1):
    return jax.tree_util.tree_map(lambda x: x[0], step_keys(env, state, actions, params, seed))


@lru_cache
def unbatched(env):
    """A state of `env` whose leaves have the unbatched shapes."""
    return jax.eval_shape(env.reset_env, KEY, env.default_params)[1]


def coins_state(agents, grid=None, n=5, t=0):
    """`agents`: two (row, col); `grid`: rows of `.` (no coin), `0` / `1` (agent 0's / 1's coin)."""
    grid = ["." * n] * n if grid is None else grid
    g = np.array([list(r) for r in grid]).reshape(-1)
    return EnvState(
        agent_pos=jnp.asarray([r * n + c for r, c in agents], jnp.int32),
        coins=jnp.asarray(np.stack([g == "0", g == "1"])),
        time=jnp.asarray(t, jnp.int32),
    )


def lola_state(agents, coin, coin_type):
    return CoinGameState(
        agent_pos=jnp.asarray([r * 3 + c for r, c in agents], jnp.int32),
        coin_pos=jnp.asarray(coin[0] * 3 + coin[1], jnp.int32),
        coin_type=jnp.asarray(coin_type, jnp.int32),
        time=jnp.zeros((), jnp.int32),
    )


def cells(pos, n=5):
    return [divmod(int(p), n) for p in np.asarray(pos)]


def assert_rate(hits, trials, p, sds=5.0):
    rate = hits / trials
    tol = sds * np.sqrt(p * (1 - p) / trials)
    assert abs(rate - p) <= tol, f"rate {rate:.5f} vs expected {p:.5f} (tolerance {tol:.5f})"


NO_SPAWN = EnvParams(spawn_prob=0.0)


# ---- registry, defaults, reset -----------------------------------------------------------------------
def test_defaults_and_registry():
    env, params = jaxmcg.make("coins")
    assert isinstance(env, Coins) and env.grid_size == 5 and env.num_agents == 2
    assert (params.max_steps_in_episode, params.spawn_prob, params.coin_reward, params.penalty) == (
        500, 0.005, 1.0, 2.0)
    assert env.tie_break == "both" and not env.wrap
    assert env.observation_space(params).shape == (5, 5, 4) and env.action_space(params).n == 5
    lola, lp = jaxmcg.make("coin_game")
    assert isinstance(lola, CoinGame) and lola.grid_size == 3 and lola.wrap
    assert (lp.max_steps_in_episode, lp.coin_reward, lp.penalty) == (150, 1.0, 2.0)
    assert lola.observation_space(lp).shape == (3, 3, 4) and lola.action_space(lp).n == 4
    assert jaxmcg.make("coin_game", stay_action=True)[0].action_space().n == 5
    assert jaxmcg.make("coins", grid_size=7)[0].observation_space().shape == (7, 7, 4)


def test_reset_distinct_random_cells_and_no_coins():
    env = coins_env()
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    obs, state = reset(jax.random.split(KEY, N_KEYS), EnvParams())
    pos = np.asarray(state.agent_pos)
    assert (pos[:, 0] != pos[:, 1]).all() and not np.asarray(state.coins).any()
    assert (np.asarray(state.time) == 0).all()
    counts = np.bincount(pos.reshape(-1), minlength=25)  # uniform over the 25 cells
    expected = 2 * N_KEYS / 25
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)
    obs = np.asarray(obs)
    assert obs.shape == (N_KEYS, 2, 5, 5, 4) and obs.dtype == np.float32
    assert (obs[..., 0].sum((-1, -2)) == 1).all() and (obs[..., 2:] == 0).all()


def test_observation_planes_per_agent():
    env = coins_env()
    state = coins_state([(0, 1), (4, 2)], ["0....", ".....", "..1..", ".....", "1...0"])
    obs = np.asarray(jax.jit(env.get_obs)(state))
    own0, own1 = np.zeros((5, 5)), np.zeros((5, 5))
    own0[0, 0] = own0[4, 4] = 1
    own1[2, 2] = own1[4, 0] = 1
    me0, me1 = np.zeros((5, 5)), np.zeros((5, 5))
    me0[0, 1], me1[4, 2] = 1, 1
    # agent i: (self, other, coins of its type, coins of the other type), same (absolute) frame
    for i, (me, other, own, theirs) in enumerate([(me0, me1, own0, own1), (me1, me0, own1, own0)]):
        np.testing.assert_array_equal(obs[i], np.stack([me, other, own, theirs], -1), err_msg=i)
    lola = lola_env(shared_obs=True)
    shared = np.asarray(jax.jit(lola.get_obs)(lola_state([(0, 0), (1, 1)], (2, 2), 1)))
    np.testing.assert_array_equal(shared[0], shared[1])  # LOLA's code: agent 0's planes for both
    assert shared[0, 0, 0, 0] == 1 and shared[0, 1, 1, 1] == 1 and shared[0, 2, 2, 3] == 1


# ---- moves -------------------------------------------------------------------------------------------
# (start, action, end) on the 5x5 grid with walls
WALL_MOVES = [
    ((0, 0), UP, (0, 0)), ((0, 0), LEFT, (0, 0)), ((0, 0), DOWN, (1, 0)), ((0, 0), RIGHT, (0, 1)),
    ((4, 4), DOWN, (4, 4)), ((4, 4), RIGHT, (4, 4)), ((4, 4), UP, (3, 4)), ((4, 4), LEFT, (4, 3)),
    ((0, 4), UP, (0, 4)), ((0, 4), RIGHT, (0, 4)), ((4, 0), DOWN, (4, 0)), ((4, 0), LEFT, (4, 0)),
    ((2, 2), UP, (1, 2)), ((2, 2), DOWN, (3, 2)), ((2, 2), LEFT, (2, 1)), ((2, 2), RIGHT, (2, 3)),
    ((2, 2), STAY, (2, 2)), ((0, 2), STAY, (0, 2)),
]


@pytest.mark.parametrize("agent", [0, 1])
def test_moves_and_walls(agent):
    env = coins_env()
    for start, action, end in WALL_MOVES:
        agents = [start, (2, 2)] if agent == 0 else [(2, 2), start]
        actions = [action, STAY] if agent == 0 else [STAY, action]
        _, nxt, reward, _, _ = step_one(env, coins_state(agents), actions, NO_SPAWN)
        assert cells(nxt.agent_pos)[agent] == end, (start, action)
        assert (reward == 0).all()


def test_agents_may_share_and_cross_cells():
    env = coins_env()
    _, nxt, *_ = step_one(env, coins_state([(2, 1), (2, 3)]), [RIGHT, LEFT], NO_SPAWN)
    assert cells(nxt.agent_pos) == [(2, 2), (2, 2)]
    _, nxt, *_ = step_one(env, coins_state([(2, 1), (2, 2)]), [RIGHT, LEFT], NO_SPAWN)
    assert cells(nxt.agent_pos) == [(2, 2), (2, 1)]  # swap


def test_torus_moves():
    env = coins_env(wrap=True)
    for start, action, end in [((0, 0), UP, (4, 0)), ((0, 0), LEFT, (0, 4)), ((4, 4), DOWN, (0, 4)),
                               ((4, 4), RIGHT, (4, 0)), ((2, 2), UP, (1, 2))]:
        _, nxt, *_ = step_one(env, coins_state([start, (2, 2)]), [action, STAY], NO_SPAWN)
        assert cells(nxt.agent_pos)[0] == end
    lola = lola_env()
    for start, action, end in [((0, 0), UP, (2, 0)), ((0, 0), LEFT, (0, 2)), ((2, 2), DOWN, (0, 2)),
                               ((2, 2), RIGHT, (2, 0)), ((1, 1), DOWN, (2, 1))]:
        _, nxt, *_ = step_one(lola, lola_state([start, (1, 1)], (0, 1), 0), [action, UP],
                              CoinGameParams())
        assert cells(nxt.agent_pos, 3)[0] == end


# ---- pickups -----------------------------------------------------------------------------------------
GRID = [".....", ".0.1.", ".....", ".1.0.", "....."]


@pytest.mark.parametrize(
    "agents, actions, reward, picked, own, gone",
    [
        # agent 0 takes its own coin at (1,1): +1, no penalty
        ([(1, 0), (4, 4)], [RIGHT, STAY], [1, 0], [1, 0], [1, 0], [(1, 1)]),
        # agent 0 takes agent 1's coin at (1,3): +1 to agent 0, -2 to agent 1
        ([(0, 3), (4, 4)], [DOWN, STAY], [1, -2], [1, 0], [0, 0], [(1, 3)]),
        # agent 1 takes agent 0's coin at (3,3): -2 to agent 0
        ([(4, 4), (3, 4)], [STAY, LEFT], [-2, 1], [0, 1], [0, 0], [(3, 3)]),
        # both take the other's coin at once: +1 - 2 each
        ([(1, 2), (1, 2)], [RIGHT, LEFT], [-1, -1], [1, 1], [0, 0], [(1, 1), (1, 3)]),
        # both take their own coins at once
        ([(1, 2), (3, 2)], [LEFT, LEFT], [1, 1], [1, 1], [1, 1], [(1, 1), (3, 1)]),
        # nobody on a coin
        ([(0, 0), (4, 4)], [RIGHT, UP], [0, 0], [0, 0], [0, 0], []),
    ],
)
def test_pickups(agents, actions, reward, picked, own, gone):
    env = coins_env()
    state = coins_state(agents, GRID)
    _, nxt, r, terminated, info = step_one(env, state, actions, NO_SPAWN)
    np.testing.assert_array_equal(r, reward)
    np.testing.assert_array_equal(info["coins_picked"], picked)
    np.testing.assert_array_equal(info["own_coins_picked"], own)
    np.testing.assert_array_equal(info["other_coins_picked"], np.subtract(picked, own))
    before = np.asarray(state.coins).reshape(2, 5, 5)
    after = nxt.coins.reshape(2, 5, 5)
    expected = before.copy()
    for r_, c_ in gone:
        expected[:, r_, c_] = False
    np.testing.assert_array_equal(after, expected)
    assert r.dtype == np.float32 and not terminated


def test_payoffs_are_parameters_and_vmappable():
    env = coins_env()
    state = coins_state([(0, 3), (4, 4)], GRID)  # agent 0 will take agent 1's coin
    params = NO_SPAWN.replace(coin_reward=jnp.array([1.0, 2.0, 0.5]), penalty=jnp.array([2.0, 3.0, 0.0]))
    axes = EnvParams(max_steps_in_episode=None, spawn_prob=None, coin_reward=0, penalty=0)
    step = jax.vmap(lambda p: env.step_env(KEY, state, jnp.array([DOWN, STAY]), p)[2], in_axes=(axes,))
    np.testing.assert_allclose(jax.jit(step)(params), [[1, -2], [2, -3], [0.5, 0]])


def test_simultaneous_pickup_both_rule():
    """d3c.md §2.5 default: both get +1 and the owner's -2 applies."""
    env = coins_env()
    for coin, expect in [("0", [-1, 1]), ("1", [1, -1])]:
        grid = [".....", ".." + coin + "..", ".....", ".....", "....."]
        state = coins_state([(1, 1), (1, 3)], grid)
        _, nxt, r, _, info = step_keys(env, state, [RIGHT, LEFT], NO_SPAWN)
        assert (r == expect).all(), (coin, r[0])
        assert (info["coins_picked"] == 1).all() and not nxt.coins.any()
        own = [1, 0] if coin == "0" else [0, 1]
        assert (info["own_coins_picked"] == own).all()


def test_simultaneous_pickup_random_rule():
    env = coins_env(tie_break="random")
    grid = [".....", "..0..", ".....", ".....", "....."]
    state = coins_state([(1, 1), (1, 3)], grid)
    _, nxt, r, _, info = step_keys(env, state, [RIGHT, LEFT], NO_SPAWN)
    owner_won = (r == [1, 0]).all(1)
    other_won = (r == [-2, 1]).all(1)
    assert (owner_won | other_won).all()  # exactly one of the two gets the coin
    assert (info["coins_picked"].sum(1) == 1).all() and not nxt.coins.any()
    assert_rate(owner_won.sum(), N_KEYS, 0.5)
    # without a tie the random rule changes nothing
    _, _, r, _, _ = step_keys(env, coins_state([(1, 1), (4, 4)], grid), [RIGHT, STAY], NO_SPAWN)
    assert (r == [1, 0]).all()


# ---- spawns ------------------------------------------------------------------------------------------
def test_spawn_only_on_empty_cells():
    """p = 1: exactly the cells with no coin and no agent (after the moves) get one."""
    env = coins_env()
    grid = ["0.1..", ".....", "..0..", ".....", "....1"]
    state = coins_state([(1, 0), (3, 3)], grid)
    _, nxt, r, _, _ = step_keys(env, state, [UP, DOWN], EnvParams(spawn_prob=1.0))
    # agent 0 takes its coin at (0,0); agent 1 moves to (4,3)
    coins = nxt.coins.reshape(-1, 2, 5, 5)
    assert (r == [1, 0]).all()
    assert (coins.sum(1) == 1).sum((1, 2)).min() == 23  # every cell but the two agents'
    assert not coins[:, :, 0, 0].any() and not coins[:, :, 4, 3].any()
    old = np.asarray(state.coins).reshape(2, 5, 5)
    for k, (rr, cc) in [(1, (0, 2)), (0, (2, 2)), (1, (4, 4))]:  # old coins kept, types unchanged
        assert coins[:, k, rr, cc].all() and not coins[:, 1 - k, rr, cc].any()
    new = coins & ~old[None]
    assert_rate(new[:, 0].sum(), new.sum(), 0.5)  # types uniform over the two agents


@pytest.mark.parametrize("p", [0.005, 0.05])
def test_spawn_rate(p):
    env = coins_env()
    grid = ["00000", "11111", ".....", ".....", "....."]  # 15 empty cells, 2 of them occupied
    state = coins_state([(2, 0), (4, 4)], grid)
    _, nxt, *_ = step_keys(env, state, [STAY, STAY], EnvParams(spawn_prob=p), seed=7)
    new = nxt.coins.reshape(-1, 2, 5, 5)[:, :, 2:].any(1)  # [keys, 3, 5]
    assert not new[:, 0, 0].any() and not new[:, 2, 4].any()
    assert_rate(new.sum(), N_KEYS * 13, p)
    assert (nxt.coins.reshape(-1, 2, 5, 5)[:, :, :2].sum(1) == 1).all()  # full rows untouched


def test_spawn_zero_and_full_grid():
    env = coins_env()
    state = coins_state([(0, 0), (0, 1)], ["." * 5] * 5)
    _, nxt, *_ = step_keys(env, state, [STAY, STAY], EnvParams(spawn_prob=0.0))
    assert not nxt.coins.any()
    full = coins_state([(0, 0), (0, 1)], [".." + "0" * 3] + ["1" * 5] * 4)
    _, nxt, *_ = step_keys(env, full, [STAY, STAY], EnvParams(spawn_prob=1.0))
    np.testing.assert_array_equal(nxt.coins, np.broadcast_to(np.asarray(full.coins), nxt.coins.shape))


def test_episode_spawn_statistics_and_truncation():
    """A 500-step episode of an idle pair: about 23 * 0.005 = 0.115 coins per step while the grid
    fills; the episode is truncated at 500 and resets to an empty grid."""
    env, params = jaxmcg.make("coins")

    def run(key):
        _, state = env.reset(key, params)

        def body(state, k):
            _, nxt, r, term, trunc, info = env.step(k, state, jnp.array([STAY, STAY]), params)
            return nxt, (state.coins.sum(), trunc, r)

        return jax.lax.scan(body, state, jax.random.split(key, 500))

    final, (count, trunc, r) = jax.jit(jax.vmap(run))(jax.random.split(KEY, 64))
    count, trunc = np.asarray(count), np.asarray(trunc)
    assert trunc[:, -1].all() and not trunc[:, :-1].any()
    assert not np.asarray(final.coins).any() and (np.asarray(final.time) == 0).all()
    assert (np.asarray(r) == 0).all()
    # coins after 50 steps: 23 cells, each still empty with probability (1-p)^t
    expected = 23 * (1 - (1 - 0.005) ** 50)
    assert abs(count[:, 50].mean() - expected) < 5 * np.sqrt(expected / 64)


# ---- oracle: the plain numpy Coins ---------------------------------------------------------------------
def test_matches_numpy_oracle_without_spawns():
    rng = np.random.default_rng(0)
    n_cases = N_KEYS
    agents = rng.integers(0, 5, (n_cases, 2, 2))
    grids = rng.choice(np.array([".", ".", "0", "1"]), (n_cases, 5, 5))
    actions = rng.integers(0, 5, (n_cases, 2))
    flat = grids.reshape(n_cases, 25)
    states = EnvState(agent_pos=jnp.asarray(agents[..., 0] * 5 + agents[..., 1], jnp.int32),
                      coins=jnp.asarray(np.stack([flat == "0", flat == "1"], 1)),
                      time=jnp.zeros(n_cases, jnp.int32))
    obs, nxt, reward, _, info = step_keys(coins_env(), states, actions, NO_SPAWN)
    oracle = CoinsNumpy(spawn_prob=0.0)
    for i in range(n_cases):
        oracle.set_state([tuple(a) for a in agents[i]], ["".join(row) for row in grids[i]])
        o, r, _, inf = oracle.step(actions[i])
        np.testing.assert_array_equal(reward[i], r, err_msg=i)
        np.testing.assert_array_equal(obs[i], o, err_msg=i)
        for k in ("coins_picked", "own_coins_picked", "other_coins_picked"):
            np.testing.assert_array_equal(info[k][i], inf[k], err_msg=(i, k))
        assert cells(nxt.agent_pos[i]) == oracle.agents


def test_numpy_oracle_spawn_rate_agrees():
    oracle = CoinsNumpy(spawn_prob=0.05, seed=3)
    oracle.set_state([(0, 0), (0, 1)], ["." * 5] * 5)
    spawned = 0
    for _ in range(200):
        oracle.step([STAY, STAY])
        spawned += (oracle.grid != ".").sum()
        oracle.grid[:] = "."
    assert_rate(spawned, 200 * 23, 0.05)


# ---- LOLA coin game --------------------------------------------------------------------------------------
def test_lola_pickups_and_respawn():
    env = lola_env()
    params = CoinGameParams()
    # agent 1 takes agent 0's (red) coin at (1,1): r = [-2, +1]; agent 0 moves away
    state = lola_state([(0, 0), (1, 2)], (1, 1), 0)
    _, nxt, r, _, info = step_keys(env, state, [RIGHT, LEFT], params, seed=3)
    assert (r == [-2, 1]).all() and (info["other_coins_picked"] == [0, 1]).all()
    pos = nxt.agent_pos
    assert (pos == [1, 4]).all()
    coin = nxt.coin_pos
    assert ((coin != 1) & (coin != 4)).all()  # never under an agent
    counts = np.bincount(coin, minlength=9)  # uniform over the 7 free cells
    assert counts[1] == counts[4] == 0
    expected = N_KEYS / 7
    assert np.abs(counts[[0, 2, 3, 5, 6, 7, 8]] - expected).max() < 5 * np.sqrt(expected)
    assert_rate((nxt.coin_type == 0).sum(), N_KEYS, 0.5)  # random colour (the paper's text)
    # shared cell: 8 free cells
    _, nxt, r, _, _ = step_keys(env, lola_state([(1, 0), (1, 2)], (1, 1), 1), [RIGHT, LEFT], params)
    assert (r == [1, -1]).all()  # both take blue's coin: red +1, blue +1 - 2 ("both" rule)
    counts = np.bincount(nxt.coin_pos, minlength=9)
    assert counts[4] == 0 and np.abs(np.delete(counts, 4) - N_KEYS / 8).max() < 5 * np.sqrt(N_KEYS / 8)


def test_lola_no_pickup_keeps_coin_and_alternate_colour():
    state = lola_state([(0, 0), (2, 2)], (1, 1), 1)
    _, nxt, r, _, _ = step_keys(lola_env(), state, [RIGHT, LEFT], CoinGameParams())
    assert (r == 0).all() and (nxt.coin_pos == 4).all() and (nxt.coin_type == 1).all()
    # the LOLA code's rule: colours alternate at each respawn
    _, nxt, r, _, _ = step_keys(lola_env(coin_colour="alternate"), lola_state([(0, 0), (2, 2)], (0, 1), 1),
                                [RIGHT, LEFT], CoinGameParams())
    assert (r == [1, -2]).all() and (nxt.coin_type == 0).all()


def test_lola_random_tie_break_and_stay():
    env = lola_env(tie_break="random", stay_action=True)
    _, nxt, r, _, _ = step_keys(env, lola_state([(1, 0), (1, 2)], (1, 1), 0), [RIGHT, LEFT],
                                CoinGameParams())
    red_won = (r == [1, 0]).all(1)
    assert (red_won | (r == [-2, 1]).all(1)).all()
    assert_rate(red_won.sum(), N_KEYS, 0.5)
    _, nxt, r, _, _ = step_keys(env, lola_state([(0, 0), (2, 2)], (1, 1), 0), [STAY, STAY],
                                CoinGameParams())
    assert (nxt.agent_pos == [0, 8]).all() and (r == 0).all()


def test_lola_episode_has_one_coin_and_150_steps():
    env, params = jaxmcg.make("coin_game")

    def run(key):
        _, state = env.reset(key, params)

        def body(state, k):
            k_act, k_step = jax.random.split(k)
            a = jax.random.randint(k_act, (2,), 0, 4)
            obs, nxt, r, _, trunc, info = env.step(k_step, state, a, params)
            return nxt, (info["final_obs"], trunc, r, info["coins_picked"], info["other_coins_picked"])

        return jax.lax.scan(body, state, jax.random.split(key, 150))

    _, (obs, trunc, r, picked, stolen) = jax.jit(jax.vmap(run))(jax.random.split(KEY, 64))
    obs = np.asarray(obs)
    assert (obs[..., 2:].sum((-1, -2, -3)) == 1).all()  # exactly one coin in every frame
    assert np.asarray(trunc)[:, -1].all() and not np.asarray(trunc)[:, :-1].any()
    picked, stolen = np.asarray(picked), np.asarray(stolen)
    assert picked.sum() > 0 and stolen.sum() > 0
    assert (picked.sum(-1) <= 2).all()
    # every pickup pays +1 to its picker and every stolen coin -2 to its owner
    np.testing.assert_allclose(np.asarray(r), picked - 2 * stolen[..., ::-1])


# ---- contract and bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env_id, overrides",
    [
        ("coins-v0", {"tie_break": "random", "spawn_prob": 0.2, "grid_size": 3, "wrap": True,
                      "max_steps_in_episode": 7}),
        ("coin_game-v0", {"tie_break": "random", "coin_colour": "alternate", "stay_action": True,
                          "shared_obs": True, "grid_size": 4, "max_steps_in_episode": 5}),
    ],
)
def test_contract_custom(env_id, overrides):
    check_env(env_id, n_envs=64, **overrides)


@pytest.mark.parametrize(
    "make_it, needles",
    [
        (lambda: jaxmcg.make("coins", grid_size=1), ["grid_size=1", ">= 2"]),
        (lambda: jaxmcg.make("coins", grid_size=2.5), ["grid_size=2.5"]),
        (lambda: jaxmcg.make("coins", tie_break="first"), ["tie_break='first'", "'both'", "'random'"]),
        (lambda: jaxmcg.make("coins", wrap="yes"), ["wrap='yes'"]),
        (lambda: jaxmcg.make("coins", spawn_prob=1.5), ["spawn_prob=1.5", "[0, 1]"]),
        (lambda: jaxmcg.make("coins", spawn_prob=-0.1), ["spawn_prob=-0.1", "[0, 1]"]),
        (lambda: jaxmcg.make("coins", penalty=float("nan")), ["penalty=nan", "finite"]),
        (lambda: jaxmcg.make("coins", max_steps_in_episode=0), ["max_steps_in_episode=0"]),
        (lambda: jaxmcg.make("coins", spawn_probability=0.1), ["spawn_probability", "spawn_prob"]),
        (lambda: jaxmcg.make("coin_game", coin_colour="red"), ["coin_colour='red'", "'alternate'"]),
        (lambda: jaxmcg.make("coin_game", coin_reward=float("inf")), ["coin_reward=inf"]),
        (lambda: jaxmcg.make("coin_game", grid_size=0), ["grid_size=0"]),
    ],
)
def test_bad_input_fails_before_compilation(make_it, needles):
    assert_rejected_before_compiling(make_it, needles)
