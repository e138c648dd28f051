"""Trust-Your-Brother (envs/trust_your_brother.py; d3c.md §2.4, A15): start positions and the draw
of the attacked prey, the predator's rule (toward the nearest prey, stays when adjacent, coin flips
~50/50 over keys), prey move resolution, the reward cases and the scripted returns of d3c.md §2.4
(cooperation -0.4 per prey, selfish bystander -4 / 0), the three step orders, and bad input."""
from functools import lru_cache

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling, check_env

import jaxmcg
from envs.trust_your_brother import CCW, CW, STAY, EnvParams, EnvState, TrustYourBrother

KEY = jax.random.PRNGKey(0)
N_KEYS = 2000
PARAMS = EnvParams()


@lru_cache
def env_of(step_order="prey_first"):
    return TrustYourBrother(6, step_order)


@lru_cache
def batched_step(env):
    return jax.jit(jax.vmap(env.step_env, in_axes=(0, None, None, None)))


def state_at(predator, prey, attacked=0, t=0):
    return EnvState(predator=jnp.asarray(predator, jnp.int32), prey=jnp.asarray(prey, jnp.int32),
                    attacked=jnp.asarray(attacked, jnp.int32), time=jnp.asarray(t, jnp.int32))


def step_keys(state, actions, step_order="prey_first", params=PARAMS, seed=1):
    """`N_KEYS` transitions of one state and joint action under different keys (numpy out)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), N_KEYS)
    out = batched_step(env_of(step_order))(keys, state, jnp.asarray(actions, jnp.int32), params)
    return jax.tree_util.tree_map(np.asarray, out)


def step_one(state, actions, step_order="prey_first", params=PARAMS):
    return jax.tree_util.tree_map(lambda x: x[0], step_keys(state, actions, step_order, params))


def assert_rate(hits, trials, p, sds=5.0):
    rate = hits / trials
    tol = sds * np.sqrt(p * (1 - p) / trials)
    assert abs(rate - p) <= tol, f"rate {rate:.4f} vs expected {p:.4f} (tolerance {tol:.4f})"


# ---- registry, reset, observation ---------------------------------------------------------------------
def test_defaults_and_registry():
    env, params = jaxmcg.make("trust_your_brother")
    assert isinstance(env, TrustYourBrother) and env.ring_size == 6 and env.step_order == "prey_first"
    assert (params.max_steps_in_episode, params.move_cost, params.adjacent_penalty,
            params.attacked_prey) == (5, 0.1, 1.0, -1)
    assert env.num_agents == 2 and env.action_space(params).n == 3
    assert env.observation_space(params).shape == (2,)


@pytest.mark.parametrize("attacked, prey, obs", [(0, [2, 3], [-2, 0]), (1, [3, 2], [0, -2])])
def test_reset_fixed_attacked_prey(attacked, prey, obs):
    """Predator at 0, attacked prey at 2 (one empty cell between), other prey at 3 (d3c.md §2.4)."""
    env = env_of()
    o, state = jax.jit(env.reset_env)(KEY, PARAMS.replace(attacked_prey=attacked))
    assert int(state.predator) == 0 and int(state.attacked) == attacked
    np.testing.assert_array_equal(state.prey, prey)
    # each prey: counter-clockwise minus clockwise distance to the predator; shared by both prey
    np.testing.assert_array_equal(o, [obs, obs])


def test_reset_draws_the_attacked_prey_with_probability_half():
    env = env_of()
    _, state = jax.jit(jax.vmap(env.reset_env, in_axes=(0, None)))(jax.random.split(KEY, N_KEYS), PARAMS)
    attacked = np.asarray(state.attacked)
    assert set(np.unique(attacked)) == {0, 1}
    assert_rate(attacked.sum(), N_KEYS, 0.5)
    prey = np.asarray(state.prey)
    np.testing.assert_array_equal(prey[np.arange(N_KEYS), attacked], 2)
    np.testing.assert_array_equal(prey[np.arange(N_KEYS), 1 - attacked], 3)


def test_attacked_prey_is_vmappable():
    """The paper's balanced batches: 5 episodes with each prey attacked (d3c.md §2.4)."""
    env = env_of()
    axes = EnvParams(max_steps_in_episode=None, move_cost=None, adjacent_penalty=None, attacked_prey=0)
    reset = jax.jit(jax.vmap(env.reset_env, in_axes=(None, axes)))
    _, state = reset(KEY, PARAMS.replace(attacked_prey=jnp.array([0] * 5 + [1] * 5)))
    np.testing.assert_array_equal(state.attacked, [0] * 5 + [1] * 5)


def test_balanced_batch_reset_alternates_the_attacked_prey():
    """`attacked_prey=-2`: the paper's balanced batches from one batch reset, 5 episodes each way in
    10 (L1098), whatever the keys; the other settings reset as `reset_env` does."""
    env = env_of()
    keys = jax.random.split(KEY, 10)
    obs, state = jax.jit(env.reset_batch)(keys, PARAMS.replace(attacked_prey=-2))
    np.testing.assert_array_equal(state.attacked, [0, 1] * 5)
    np.testing.assert_array_equal(state.prey, [[2, 3], [3, 2]] * 5)
    np.testing.assert_array_equal(obs, [[[-2, 0]] * 2, [[0, -2]] * 2] * 5)
    for attacked in (-1, 0, 1):
        params = PARAMS.replace(attacked_prey=attacked)
        got = jax.jit(env.reset_batch)(keys, params)
        want = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


def test_balanced_batches_reach_the_rollout():
    from jaxmcg.rollout import episode_rollout
    env = env_of()
    stay = lambda obs, key: (jnp.zeros(obs.shape[:2], jnp.int32), {})
    traj = jax.jit(lambda k: episode_rollout(env, PARAMS.replace(attacked_prey=-2), stay, k, 10, 5))(KEY)
    np.testing.assert_array_equal(traj.info["attacked"][0], [0, 1] * 5)
    # both stay: the attacked prey sits next to the predator from step 2, -4 in all; 0 for the other
    returns = np.asarray(traj.reward.sum(0))
    np.testing.assert_allclose(returns, [[-4, 0], [0, -4]] * 5)


@pytest.mark.parametrize("predator, prey, expected", [
    (0, [2, 3], [-2, 0]), (0, [1, 5], [-4, 4]), (3, [4, 0], [-4, 0]), (5, [3, 4], [2, 4]),
])
def test_observation(predator, prey, expected):
    obs = np.asarray(jax.jit(env_of().get_obs)(state_at(predator, prey)))
    np.testing.assert_array_equal(obs, [expected, expected])


# ---- the predator ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("predator, prey, expected", [
    (0, [2, 3], 1),  # nearest prey at 2 (distance 2): one step clockwise
    (0, [3, 4], 5),  # nearest prey at 4 (distance 2 counter-clockwise)
    (0, [1, 3], 0),  # adjacent to a prey: stays
    (0, [3, 5], 0),
    (2, [5, 0], 1),  # nearest prey at 0 (distance 2 counter-clockwise)
    (4, [2, 1], 3),  # both counter-clockwise, nearest at 2
])
def test_predator_moves_toward_nearest_unless_adjacent(predator, prey, expected):
    _, nxt, *_ = step_keys(state_at(predator, prey), [STAY, STAY])
    assert (nxt.predator == expected).all(), np.unique(nxt.predator)


def test_predator_coin_flip_when_equidistant():
    _, nxt, *_ = step_keys(state_at(0, [2, 4]), [STAY, STAY])
    assert set(np.unique(nxt.predator)) == {1, 5}
    assert_rate((nxt.predator == 1).sum(), N_KEYS, 0.5)
    _, nxt, *_ = step_keys(state_at(3, [1, 5]), [STAY, STAY], seed=2)
    assert set(np.unique(nxt.predator)) == {2, 4}
    assert_rate((nxt.predator == 2).sum(), N_KEYS, 0.5)


# ---- prey moves -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("predator, prey, actions, expected, moved", [
    (0, [2, 3], [CW, CW], [3, 4], [True, True]),  # the bystander makes room
    (0, [2, 3], [CW, STAY], [2, 3], [False, False]),  # blocked by a prey that stays
    (0, [2, 3], [CCW, STAY], [1, 3], [True, False]),  # into the cell next to the predator
    (0, [1, 3], [CCW, STAY], [1, 3], [False, False]),  # blocked by the predator
    (0, [5, 3], [CW, CCW], [5, 2], [False, True]),  # 5 -> 0 is the predator's cell
    (0, [2, 3], [CW, CCW], [2, 3], [False, False]),  # a swap fails for both
    (0, [2, 4], [CW, CCW], [2, 4], [False, False]),  # both into cell 3: both fail
    (0, [3, 2], [CCW, CCW], [2, 1], [True, True]),  # chain counter-clockwise
    (0, [3, 2], [STAY, CCW], [3, 1], [False, True]),
])
def test_prey_moves(predator, prey, actions, expected, moved):
    _, nxt, reward, _, info = step_one(state_at(predator, prey), actions)
    np.testing.assert_array_equal(nxt.prey, expected)
    np.testing.assert_array_equal(info["moved"], moved)
    attempted = np.asarray(actions) != STAY
    np.testing.assert_array_equal(info["attempted"], attempted)
    # failed moves still pay the move cost ("attempting to move")
    adjacent = np.isin(np.asarray(expected), [(predator + 1) % 6, (predator - 1) % 6])
    np.testing.assert_array_equal(info["adjacent"], adjacent)
    np.testing.assert_allclose(reward, -0.1 * attempted - 1.0 * adjacent, atol=1e-7)


@pytest.mark.parametrize("actions, reward", [
    ([STAY, STAY], [-1, 0]),  # adjacent: -1
    ([CW, STAY], [-1.1, 0]),  # attempted, blocked, still adjacent
    ([CCW, STAY], [-1.1, 0]),  # blocked by the predator
    ([CW, CW], [-0.1, -0.1]),  # both step away
    ([STAY, CW], [-1, -0.1]),
])
def test_rewards_against_the_predators_current_cell(actions, reward):
    """Predator at 1, attacked prey at 2 (adjacent), other prey at 3."""
    _, _, r, _, _ = step_one(state_at(1, [2, 3]), actions)
    np.testing.assert_allclose(r, reward, atol=1e-6)


def test_costs_are_parameters():
    params = PARAMS.replace(move_cost=0.5, adjacent_penalty=3.0)
    _, _, r, _, _ = step_one(state_at(1, [2, 3]), [CW, STAY], params=params)
    np.testing.assert_allclose(r, [-3.5, 0.0])


# ---- scripted episodes (d3c.md §2.4's figures) -------------------------------------------------------------
def away_from_predator(state):
    """Both prey step in the direction that takes the prey nearest the predator away from it (the
    bystander makes room)."""
    cw_from_predator = (np.asarray(state.prey) - int(state.predator)) % 6
    dist = np.minimum(cw_from_predator, 6 - cw_from_predator)
    direction = CW if cw_from_predator[np.argmin(dist)] < 3 else CCW
    return [direction, direction]


def cooperate(t, state):
    """Both stay at the first step (the predator then comes next to the attacked prey), then both
    step away from it every step."""
    return [STAY, STAY] if t == 0 else away_from_predator(state)


def bystander_stays(t, state):
    return [STAY, STAY]


def attacked_tries(t, state):
    """The attacked prey tries to step away from the second step on; the bystander stays."""
    actions = [STAY, STAY]
    if t > 0:
        attacked = int(state.attacked)
        actions[attacked] = away_from_predator(state)[attacked]
    return actions


def both_move_at_once(t, state):
    return away_from_predator(state)


def play(policy, attacked, step_order="prey_first"):
    """Undiscounted returns `[2]` of one 5-step episode with `policy(t, state) -> actions`."""
    env, params = env_of(step_order), PARAMS.replace(attacked_prey=attacked)
    _, state = env.reset(KEY, params)
    total = np.zeros(2)
    for t in range(5):
        actions = jnp.asarray(policy(t, state), jnp.int32)
        _, state, reward, _, truncated, info = env.step(jax.random.PRNGKey(t), state, actions, params)
        assert int(info["attacked"]) == attacked and bool(truncated) == (t == 4)
        total += np.asarray(reward)
    return total


@pytest.mark.parametrize("attacked", [0, 1])
@pytest.mark.parametrize("policy, attacked_return, other_return", [
    (cooperate, -0.4, -0.4),  # d3c.md §2.4: cooperation about -0.4 per prey
    (bystander_stays, -4.0, 0.0),  # selfish bystander: the attacked prey about -4, the bystander 0
    (attacked_tries, -4.4, 0.0),  # the attacked prey keeps trying to move past the bystander
    (both_move_at_once, -0.5, -0.5),  # cooperating from the first step costs one more move
])
def test_scripted_returns(attacked, policy, attacked_return, other_return):
    total = play(policy, attacked)
    other = 1 - attacked
    np.testing.assert_allclose([total[attacked], total[other]], [attacked_return, other_return],
                               atol=1e-5)


def test_cooperation_beats_defection_in_expectation():
    """Each prey is attacked half the time: cooperating gives -0.4, the selfish outcome
    (-4 + 0) / 2 = -2 (d3c.md §2.4)."""
    coop = np.mean([play(cooperate, a) for a in (0, 1)], axis=0)
    selfish = np.mean([play(bystander_stays, a) for a in (0, 1)], axis=0)
    np.testing.assert_allclose(coop, [-0.4, -0.4], atol=1e-5)
    np.testing.assert_allclose(selfish, [-2.0, -2.0], atol=1e-5)


# ---- step orders -------------------------------------------------------------------------------------------
def test_predator_first_order():
    # predator 0 -> 1 toward the prey at 2 first; the prey at 2 is then adjacent and stays: -1
    _, nxt, r, _, info = step_one(state_at(0, [2, 3]), [STAY, STAY], "predator_first")
    assert int(nxt.predator) == 1
    np.testing.assert_allclose(r, [-1, 0])
    # the prey can escape only if both step away
    _, nxt, r, _, _ = step_one(state_at(0, [2, 3]), [CW, CW], "predator_first")
    np.testing.assert_array_equal(nxt.prey, [3, 4])
    np.testing.assert_allclose(r, [-0.1, -0.1], atol=1e-7)


def test_simultaneous_order():
    # predator heads from 0 to 1 while the prey at 2 stays: adjacent after the step, -1
    _, nxt, r, _, _ = step_one(state_at(0, [2, 3]), [STAY, STAY], "simultaneous")
    assert int(nxt.predator) == 1
    np.testing.assert_allclose(r, [-1, 0])
    # a prey entering the cell the predator heads for stops the predator (it stays at 0)
    _, nxt, r, _, info = step_one(state_at(0, [2, 3]), [CCW, STAY], "simultaneous")
    assert int(nxt.predator) == 0
    np.testing.assert_array_equal(nxt.prey, [1, 3])
    np.testing.assert_allclose(r, [-1.1, 0], atol=1e-6)
    # a move into the predator's cell fails
    _, nxt, _, _, info = step_one(state_at(0, [5, 3]), [CW, STAY], "simultaneous")
    np.testing.assert_array_equal(nxt.prey, [5, 3])
    # prey-first would have scored the same stay against cell 0: no penalty
    _, _, r, _, _ = step_one(state_at(0, [2, 3]), [STAY, STAY])
    np.testing.assert_allclose(r, [0, 0])


@pytest.mark.parametrize("step_order", ["predator_first", "simultaneous"])
def test_other_orders_change_the_payoffs(step_order):
    """Under the other orders the predator closes in at the first step, so the attacked prey must
    escape at once (both prey moving from the first step: -0.5 each) or sits next to it for all 5
    steps (-5): not d3c.md §2.4's -0.4 / -4 (which is why the order is a flag)."""
    coop = play(both_move_at_once, 0, step_order)
    selfish = play(bystander_stays, 0, step_order)
    np.testing.assert_allclose(coop, [-0.5, -0.5], atol=1e-5)
    np.testing.assert_allclose(selfish, [-5.0, 0.0], atol=1e-5)


# ---- contract and bad input -------------------------------------------------------------------------
def test_contract_custom():
    check_env("trust_your_brother-v0", n_envs=64, step_order="simultaneous", ring_size=8,
              attacked_prey=1, max_steps_in_episode=3)


@pytest.mark.parametrize("make_it, needles", [
    (lambda: jaxmcg.make("trust_your_brother", ring_size=4), ["ring_size=4", ">= 5"]),
    (lambda: jaxmcg.make("trust_your_brother", ring_size=6.5), ["ring_size=6.5"]),
    (lambda: jaxmcg.make("trust_your_brother", step_order="predator"),
     ["step_order='predator'", "'prey_first'", "'simultaneous'"]),
    (lambda: jaxmcg.make("trust_your_brother", attacked_prey=2), ["attacked_prey=2", "-1", "-2", "0, 1"]),
    (lambda: jaxmcg.make("trust_your_brother", move_cost=float("nan")), ["move_cost=nan", "finite"]),
    (lambda: jaxmcg.make("trust_your_brother", adjacent_penalty=float("inf")),
     ["adjacent_penalty=inf"]),
    (lambda: jaxmcg.make("trust_your_brother", max_steps_in_episode=0), ["max_steps_in_episode=0"]),
    (lambda: jaxmcg.make("trust_your_brother", predator_start=1), ["predator_start", "attacked_prey"]),
])
def test_bad_input_fails_before_compilation(make_it, needles):
    assert_rejected_before_compiling(make_it, needles)
