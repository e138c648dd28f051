"""Cleanup (thesis §5.4, A10, A11): the plain numpy env (benchmarks/cleanup_numpy.py, written from the
spec alone) as an oracle for envs/cleanup.py.

(a) rendering of random valid states, exact; (b) one step with spawning switched off (moves, apple
consumption, beams, cleaned counts, observations): exact where the numpy env gives the same outcome
under every move priority order and fire order, and otherwise the JAX outcome distribution against
the uniform mixture over those orders (see `fire_orders`); (c) apple and waste spawn frequencies
against each other and against the §5.4 probabilities, within binomial tolerances.
"""
import functools
import itertools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmcg
from benchmarks.cleanup_numpy import FIRE, STAY, CleanupNumpy

CASES = [("7x7", 2), ("10x10", 2), ("10x10", 3)]
ZERO_SPAWN = dict(apple_respawn_prob=0.0, waste_spawn_prob=0.0)
BATCH = 1000  # every JAX call steps this many states, so each env compiles once
KEY = jax.random.PRNGKey(0)


def fire_orders(num_agents):
    """The beam orders the JAX env draws from: uniformly random (envs/cleanup.py). SSD fires in agent
    index order (the numpy default), i.e. `[tuple(range(num_agents))]`; the order decides which
    waste a second beam along the same column reaches, and who is credited."""
    return list(itertools.permutations(range(num_agents)))


@functools.lru_cache(maxsize=None)
def jax_env(map_name, num_agents):
    """(env, default params, jitted vmapped step_env, jitted vmapped get_obs, reset state)."""
    env, params = jaxmcg.make(f"cleanup-{map_name}-v0", num_agents=num_agents)
    step = jax.jit(jax.vmap(env.step_env, in_axes=(0, 0, 0, None)))
    obs = jax.jit(jax.vmap(env.get_obs, in_axes=(0, None)))
    return env, params, step, obs, env.reset(KEY, params)[1]


def make(map_name, num_agents, **overrides):
    env, params, step, obs, base = jax_env(map_name, num_agents)
    return env, params.replace(**overrides), CleanupNumpy(map_name, num_agents, seed=0, **overrides)


def random_states(oracle, rng, n, beams=False):
    """`n` random valid states as numpy dicts: distinct agents on free cells, a random subset of
    the potential-waste cells as waste, random apples on apple cells without an agent."""
    h, w = oracle.height, oracle.width
    free = [(r, c) for r in range(h) for c in range(w) if oracle.ascii_map[r][c] != "@"]
    states = []
    for _ in range(n):
        cells = rng.choice(len(free), oracle.num_agents, replace=False)
        pos = np.array([free[k] for k in cells], np.int32)
        waste = np.zeros((h, w), bool)
        apples = np.zeros((h, w), bool)
        p_waste, p_apple = rng.uniform(0, 1, 2)
        for r, c in oracle.potential_waste_points:
            waste[r, c] = rng.uniform() < p_waste
        for r, c in oracle.apple_points:
            apples[r, c] = rng.uniform() < p_apple and not any((pos == (r, c)).all(1))
        beam = np.zeros((h, w), bool)
        if beams:
            for r, c in free:
                beam[r, c] = rng.uniform() < 0.2
        states.append(dict(agent_pos=pos, waste=waste, apples=apples, beam=beam,
                           time=int(rng.integers(0, 40))))
    return states


def to_jax(oracle, states):
    """Stack numpy state dicts into one batched JAX EnvState (other fields from reset)."""
    base = jax_env(oracle.map_name, oracle.num_agents)[4]
    batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (len(states),) + x.shape), base)
    return batch.replace(
        agent_pos=jnp.asarray(np.stack([s["agent_pos"] for s in states]), jnp.int32),
        waste=jnp.asarray(np.stack([s["waste"] for s in states])),
        apples=jnp.asarray(np.stack([s["apples"] for s in states])),
        beam=jnp.asarray(np.stack([s["beam"] for s in states])),
        time=jnp.asarray([s["time"] for s in states], jnp.int32),
    )


def jax_step(oracle, params, states, actions, seed=0):
    """One step_env of each state (numpy dicts) under its own key, in batches of BATCH; numpy
    outputs."""
    assert len(states) % BATCH == 0
    step = jax_env(oracle.map_name, oracle.num_agents)[2]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(states))
    actions = np.asarray(actions, np.int32)
    outs = [
        step(keys[i:i + BATCH], to_jax(oracle, states[i:i + BATCH]),
             jnp.asarray(actions[i:i + BATCH]), params)
        for i in range(0, len(states), BATCH)
    ]
    return jax.tree_util.tree_map(lambda *x: np.concatenate(x), *outs) if len(outs) > 1 else (
        jax.tree_util.tree_map(np.asarray, outs[0]))


def outcome(agent_pos, waste, apples, beam, reward, cleaned):
    return tuple(np.asarray(x, t).tobytes() for x, t in [
        (agent_pos, np.int32), (waste, bool), (apples, bool), (beam, bool), (reward, np.float32),
        (cleaned, np.float32)])


def oracle_outcomes(oracle, state, actions):
    """Outcome probabilities over uniform move priorities and the JAX env's fire orders, and the
    full numpy result of each outcome. Priorities only matter when two movers want one cell, fire
    orders only when two agents fire; otherwise one of each is tried."""
    n = oracle.num_agents
    oracle.set_state(**state)
    targets = [tuple(oracle.valid_target(i, a)) for i, a in enumerate(actions)]
    movers = [t for i, t in enumerate(targets) if t != tuple(state["agent_pos"][i])]
    contested = len(set(movers)) < len(movers)
    priorities = list(itertools.permutations(range(n))) if contested else [tuple(range(n))]
    orders = fire_orders(n) if sum(a == FIRE for a in actions) > 1 else [tuple(range(n))]
    combos = list(itertools.product(priorities, orders))
    probs, results = Counter(), {}
    for priority, order in combos:
        oracle.set_state(**state)
        obs, reward, _, info = oracle.step(actions, priority=list(priority), fire_order=order)
        st = oracle.get_state()
        key = outcome(st["agent_pos"], st["waste"], st["apples"], st["beam"], reward,
                      info["cleaned"])
        probs[key] += 1 / len(combos)
        results[key] = (obs, reward, info, st)
    return probs, results


# ---- (a) rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("map_name, num_agents", CASES)
def test_render_matches_oracle(map_name, num_agents):
    env, params, oracle = make(map_name, num_agents)
    obs0, _ = env.reset(KEY, params)
    np.testing.assert_array_equal(np.asarray(obs0), oracle.reset())
    size = 2 * oracle.view_size + 1
    assert obs0.shape == (num_agents, size, size, 3) and obs0.dtype == jnp.float32

    rng = np.random.default_rng(100 * num_agents + len(map_name))
    states = random_states(oracle, rng, 200, beams=True)
    get_obs = jax_env(map_name, num_agents)[3]
    obs = np.asarray(get_obs(to_jax(oracle, states), params))
    for k, state in enumerate(states):
        oracle.set_state(**state)
        np.testing.assert_array_equal(obs[k], oracle.get_obs(), err_msg=f"state {k}: {state}")


# ---- (b) moves, consumption and beams (spawning off) ---------------------------------------------


def random_actions(rng, n, num_agents):
    """Actions with FIRE and the moves frequent, STAY rarer."""
    return rng.choice(6, size=(n, num_agents), p=[0.15, 0.15, 0.15, 0.15, 0.1, 0.3])


@pytest.mark.parametrize("map_name, num_agents", CASES)
def test_step_matches_oracle(map_name, num_agents):
    """Exact agreement wherever the numpy outcome does not depend on the move priority or the fire
    order; elsewhere the JAX outcome must be one the numpy env can produce."""
    env, params, oracle = make(map_name, num_agents, **ZERO_SPAWN)
    rng = np.random.default_rng(7 + num_agents + len(map_name))
    n = BATCH
    states = random_states(oracle, rng, n)
    actions = random_actions(rng, n, num_agents)
    obs, js, reward, terminated, info = jax_step(oracle, params, states, actions)

    n_exact = n_cleaned = n_apples = n_blocked = 0
    for k in range(n):
        msg = f"case {k}: state {states[k]}, actions {actions[k]}"
        probs, results = oracle_outcomes(oracle, states[k], actions[k].tolist())
        got = outcome(js.agent_pos[k], js.waste[k], js.apples[k], js.beam[k], reward[k],
                      info["cleaned"][k])
        assert got in probs, msg + f": JAX outcome impossible: {js.agent_pos[k]}, {reward[k]}"
        if len(probs) > 1:
            continue
        n_exact += 1
        o_obs, o_reward, o_info, o_state = results[got]
        np.testing.assert_array_equal(obs[k], o_obs, err_msg=msg)
        assert int(js.time[k]) == states[k]["time"] + 1
        np.testing.assert_array_equal(info["apples"][k], o_info["apples"], err_msg=msg)
        np.testing.assert_array_equal(info["fired"][k], o_info["fired"], err_msg=msg)
        assert int(info["apple_count"][k]) == o_info["apple_count"], msg
        np.testing.assert_allclose(info["waste_density"][k], o_info["waste_density"], atol=1e-6,
                                   err_msg=msg)
        assert not bool(terminated[k])
        n_cleaned += int(o_info["cleaned"].sum() > 0)
        n_apples += int(o_reward.sum() > 0)
        n_blocked += int(np.any((o_info["moved_positions"] == states[k]["agent_pos"]).all(1)
                                & (actions[k] < STAY)))
    # the random cases exercise what they should
    assert n_exact > n // 2 and n_cleaned > 20 and n_apples > 20 and n_blocked > 20, (
        n_exact, n_cleaned, n_apples, n_blocked)


def order_dependent_cases(oracle, rng, want):
    """Random (state, actions) pairs whose outcome depends on the move priority or fire order."""
    cases = []
    while len(cases) < want:
        state = random_states(oracle, rng, 1)[0]
        actions = random_actions(rng, 1, oracle.num_agents)[0].tolist()
        probs, _ = oracle_outcomes(oracle, state, actions)
        if len(probs) > 1:
            cases.append((state, actions, probs))
    return cases


@pytest.mark.parametrize("map_name, num_agents", CASES)
def test_order_dependent_outcomes_match_oracle_distribution(map_name, num_agents):
    env, params, oracle = make(map_name, num_agents, **ZERO_SPAWN)
    rng = np.random.default_rng(11 + num_agents + len(map_name))
    n_keys = BATCH
    for case, (state, actions, probs) in enumerate(order_dependent_cases(oracle, rng, 4)):
        _, js, reward, _, info = jax_step(oracle, params, [state] * n_keys,
                                          [actions] * n_keys, seed=case)
        seen = Counter(
            outcome(js.agent_pos[k], js.waste[k], js.apples[k], js.beam[k], reward[k],
                    info["cleaned"][k])
            for k in range(n_keys)
        )
        assert set(seen) <= set(probs), (state, actions)
        for key, p in probs.items():
            tol = 5 * np.sqrt(n_keys * p * (1 - p)) + 1
            assert abs(seen[key] - n_keys * p) <= tol, (state, actions, list(seen.values()),
                                                        list(probs.values()))


# ---- (c) spawning --------------------------------------------------------------------------------


def spawn_state(oracle, n_clean, agent_cells, apple_cells=()):
    """Waste on all potential cells but the first `n_clean` (row-major), agents at `agent_cells`."""
    h, w = oracle.height, oracle.width
    waste = np.zeros((h, w), bool)
    for r, c in oracle.potential_waste_points[n_clean:]:
        waste[r, c] = True
    apples = np.zeros((h, w), bool)
    for r, c in apple_cells:
        apples[r, c] = True
    return dict(agent_pos=np.array(agent_cells, np.int32), waste=waste, apples=apples,
                beam=np.zeros((h, w), bool), time=0)


SPAWN_CASES = [
    # map, cleaned potential cells, agent cells (the first on an apple cell), apples present
    ("7x7", 2, [(3, 5), (1, 1)], [(5, 5)]),  # d = 0: p_apple 0.5, waste 1 - 0.5^2
    ("7x7", 1, [(2, 5), (1, 1)], []),  # d = 0.5: p_apple = (1 - 0.5/0.6) * 0.5
    ("7x7", 0, [(2, 5), (4, 2)], []),  # d = 1: nothing spawns
    ("10x10", 10, [(4, 7), (2, 2)], [(1, 8), (8, 7)]),  # d = 6/16: p_apple 0.01875
    ("10x10", 16, [(6, 8), (5, 1)], [(2, 7)]),  # d = 0: p_apple 0.3
    ("10x10", 9, [(4, 8), (3, 3)], []),  # d = 7/16 >= 0.4: nothing spawns
]


@pytest.mark.parametrize("map_name, n_clean, agents, apples", SPAWN_CASES)
def test_spawn_frequencies(map_name, n_clean, agents, apples):
    env, params, oracle = make(map_name, 2)
    state = spawn_state(oracle, n_clean, agents, apples)
    oracle.set_state(**state)
    p_apple, p_waste = oracle.compute_probabilities()
    n = 3 * BATCH
    _, js, _, _, _ = jax_step(oracle, params, [state] * n, np.full((n, 2), STAY), seed=n_clean)
    j_apples, j_waste = js.apples, js.waste
    o_apples, o_waste = np.zeros_like(j_apples), np.zeros_like(j_waste)
    for k in range(n):
        oracle.set_state(**state)
        oracle.step([STAY, STAY])
        st = oracle.get_state()
        o_apples[k], o_waste[k] = st["apples"], st["waste"]

    # §5.4 expectations per cell
    exp_apple = state["apples"].astype(float)
    occupied = {tuple(a) for a in agents}
    for r, c in oracle.apple_points:
        if not state["apples"][r, c] and (r, c) not in occupied:
            exp_apple[r, c] = p_apple
    exp_waste = state["waste"].astype(float)
    free = [(r, c) for r, c in oracle.potential_waste_points if not state["waste"][r, c]]
    p_spawn = 1 - (1 - p_waste) ** len(free)
    for r, c in free:  # each free cell is equally likely to be the one that spawns
        exp_waste[r, c] = p_spawn / len(free)

    for name, j_new, o_new, exp in [("apple", j_apples, o_apples, exp_apple),
                                    ("waste", j_waste, o_waste, exp_waste)]:
        j_freq, o_freq = j_new.mean(0), o_new.mean(0)
        sd = np.sqrt(exp * (1 - exp) / n)
        for label, freq in [("jax", j_freq), ("numpy", o_freq)]:
            bad = np.abs(freq - exp) > 4.5 * sd + 1e-9
            assert not bad.any(), f"{name} {label}: {freq[bad]} vs {exp[bad]} at {np.argwhere(bad)}"
        bad = np.abs(j_freq - o_freq) > 4.5 * np.sqrt(2) * sd + 1e-9
        assert not bad.any(), f"{name} jax vs numpy: {j_freq[bad]} vs {o_freq[bad]}"

    # at most one waste cell per step, P(spawn) = 1 - (1 - p_waste)^k
    for new_waste in [(j_waste & ~state["waste"]).sum((1, 2)), (o_waste & ~state["waste"]).sum((1, 2))]:
        assert new_waste.max() <= 1
        assert abs(new_waste.mean() - p_spawn) <= 4.5 * np.sqrt(p_spawn * (1 - p_spawn) / n) + 1e-9
