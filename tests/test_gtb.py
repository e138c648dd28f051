"""Gather-Trade-Build (envs/gtb.py): the unit vectors U1-U13 of gtb.md §9.1 on hand-built states,
the property tests of §11.7, matching against a numpy transcription of [F]'s list algorithm, the
differentiable reward path of §11.6 and a small-sample version of the §9.2 parity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from gradcheck import assert_grad_matches_fd

import jaxmcg
from envs import gtb
from envs import gtb_market as market
from envs import gtb_scripted as scripted

ENV, PARAMS = jaxmcg.make("gtb-15x15-v0")
N = ENV.num_agents
NOOP, BUILD = gtb.NOOP, gtb.BUILD
LEFT, RIGHT, UP, DOWN = gtb.MOVE_LEFT, gtb.MOVE_RIGHT, gtb.MOVE_UP, gtb.MOVE_DOWN
ORDER = jnp.arange(N)
NO_REGEN = jnp.ones(ENV.num_sources)  # uniforms of 1 never regenerate


def buy(r, p):
    return 2 + 22 * r + p


def sell(r, p):
    return 13 + 22 * r + p


STONE, WOOD = 0, 1


@jax.jit
def _step(state, agents, rates, order, regen_uniforms, params):
    return ENV.transition(jax.random.PRNGKey(0), state, {"agents": agents, "tax_rates": rates},
                          params, agent_order=order, regen_uniforms=regen_uniforms)


def step(state, agents, rates=gtb.US_FEDERAL_RATES, order=ORDER, regen=NO_REGEN, params=PARAMS):
    """One jitted transition with the Gather order `order` and no regeneration by default; returns
    (obs parts, state, reward, info)."""
    obs, state, reward, _, info = _step(state, jnp.asarray(agents, jnp.int32),
                                        jnp.asarray(rates, jnp.float32), jnp.asarray(order, jnp.int32),
                                        regen, params)
    return ENV.split_obs(obs), state, np.asarray(reward), info


def start_state(pos=((0, 14), (14, 0), (6, 6), (14, 14)), pay=gtb.FIXED_PAYMENTS, coin=10.0):
    """Reset state with agents at `pos` (empty tiles by default, so nobody collects) and build
    payments `pay`, in agent order."""
    _, state = ENV.reset(jax.random.PRNGKey(1), PARAMS)
    inv = jnp.zeros((N, 3), jnp.float32).at[:, 0].set(coin)
    return state.replace(pos=jnp.asarray(pos, jnp.int32), pay=jnp.asarray(pay, jnp.float32), inv=inv,
                         util=gtb.crra(inv[:, 0], PARAMS.isoelastic_eta))


# ---- U1-U13 (gtb.md §9.1) ----------------------------------------------------------------------
def test_u1_crra():
    c = jnp.array([0.0, 1.0, 10.0, 20.0, 32.249614, 100.0])
    np.testing.assert_allclose(gtb.crra(c, 0.23),
                               [-1.298701, 0.0, 6.348619, 11.742043, 17.540963, 43.732059], atol=2e-5)


def _build_at_reset():
    state = start_state()
    state = state.replace(inv=state.inv.at[3, 1:].set(1.0))  # top skill (22.249614) at (14, 14)
    return step(state, [NOOP, NOOP, NOOP, BUILD])


def test_u2_build():
    obs, state, reward, info = _build_at_reset()
    np.testing.assert_allclose(state.inv[3], [32.249614, 0, 0], atol=1e-5)
    assert float(state.labor[3]) == 10.0 and int(state.house[14 * 15 + 14]) == 3
    np.testing.assert_allclose(reward, [0, 0, 0, 9.092344], atol=1e-5)
    assert abs(float(info["planner_reward"])) < 1e-5
    # the house blocks a second build there, and its owner may stand on it
    assert obs["action_mask"][3, BUILD] == 0
    assert float(info["designer_obs"]["tensor"][14, 14, 6]) == 3 + 2  # owner id j + 2 (§6.3)


def test_u4_tax_day():
    _, state, _, info = _build_at_reset()
    objective = [float(info["prod"] * info["eq"])]
    for t in range(2, 11):
        _, state, reward, info = step(state, [NOOP] * N)
        objective.append(float(info["prod"] * info["eq"]))
        assert bool(info["tax"]["enact"]) == (t == 10)
    np.testing.assert_allclose(info["tax_paid"], [0, 0, 0, 2.475954], atol=1e-5)
    np.testing.assert_allclose(float(info["lump"]), 0.618988, atol=1e-5)
    np.testing.assert_allclose(state.inv[:, 0], [10.618988] * 3 + [30.392649], atol=1e-5)
    np.testing.assert_allclose(reward, [0.361957] * 3 + [-0.840967], atol=1e-5)
    np.testing.assert_allclose(float(info["planner_reward"]), 0.618988, atol=1e-5)
    np.testing.assert_allclose(objective[-2:], [40.0, 42.475954], atol=1e-4)
    assert int(state.tax_pos) == 1 and bool(info["period_start_next"])


def test_u3_us_federal_tax():
    z = jnp.array([-5.0, 0.0, 5, 9.7, 20, 22.249614, 39.475, 50, 84.2, 100, 200, 600])
    want = [0, 0, 0.5, 0.97, 2.206, 2.475954, 4.543, 6.8585, 14.3825, 18.1745, 45.3165, 186.9875]
    np.testing.assert_allclose(gtb.tax_due(z, jnp.asarray(gtb.US_FEDERAL_RATES),
                                           gtb.US_FEDERAL_CUTOFFS), want, rtol=1e-5, atol=1e-5)
    mr = gtb.marginal_rate(jnp.array([-1.0, 0.0, 9.7, 100.0, 1e4]), jnp.asarray(gtb.US_FEDERAL_RATES),
                           gtb.US_FEDERAL_CUTOFFS)
    np.testing.assert_allclose(mr, [0, 0.10, 0.12, 0.24, 0.37], atol=1e-7)


def test_u5_same_step_trade():
    state = start_state()
    state = state.replace(inv=state.inv.at[1, 2].set(1.0))  # B holds one wood
    _, state, reward, info = step(state, [buy(WOOD, 5), sell(WOOD, 3), NOOP, NOOP])
    np.testing.assert_allclose(state.inv[:2], [[7, 0, 1], [13, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(state.esc[:2], 0, atol=1e-6)
    np.testing.assert_allclose(state.labor, [0.25, 0.25, 0, 0])
    np.testing.assert_allclose(reward, [-1.889036, 1.659529, 0, 0], atol=1e-5)
    np.testing.assert_allclose(float(info["eq"]), 0.85, atol=1e-6)
    np.testing.assert_allclose(float(info["planner_reward"]), -1.5, atol=1e-5)
    assert int(info["trades"]) == 1 and float(state.price_hist[WOOD, 1, 3]) == 1.0
    np.testing.assert_allclose(info["income_trade"], [-3, 3, 0, 0])


def test_u6_earlier_bid_sets_price():
    state = start_state()
    state = state.replace(inv=state.inv.at[3, 1].set(1.0))
    _, state, _, _ = step(state, [NOOP, NOOP, buy(STONE, 6), NOOP])
    np.testing.assert_allclose(state.esc[2, 0], 6.0)
    _, state, _, info = step(state, [NOOP, NOOP, NOOP, sell(STONE, 4)])
    np.testing.assert_allclose(state.inv[2:, :2], [[4, 1], [16, 0]], atol=1e-6)
    assert int(info["trades"]) == 1 and not bool(state.book.active.any())


def test_u7_self_trades_skipped():
    state = start_state()
    state = state.replace(inv=state.inv.at[0, 2].set(1.0).at[2, 2].set(1.0))
    _, state, _, info = step(state, [sell(WOOD, 1), NOOP, NOOP, NOOP])
    _, state, _, info = step(state, [buy(WOOD, 5), NOOP, NOOP, NOOP])
    assert int(info["trades"]) == 0 and int(state.book.active.sum()) == 2
    _, state, _, info = step(state, [NOOP, NOOP, sell(WOOD, 4), NOOP])
    assert int(info["trades"]) == 1
    np.testing.assert_allclose(state.inv[2], [15, 0, 0])  # at the earlier bid's price 5
    np.testing.assert_allclose(state.inv[0], [5, 0, 1])
    np.testing.assert_allclose(state.esc[0], [0, 0, 1])  # its own ask at 1 is still open


def test_u8_order_expiry():
    state = start_state().replace(time=jnp.int32(10), tax_pos=jnp.int32(1))
    state = state.replace(inv=state.inv.at[0, 1].set(1.0))
    _, state, _, _ = step(state, [sell(STONE, 7), NOOP, NOOP, NOOP])  # step 11
    for t in range(12, 62):
        assert float(state.esc[0, 1]) == 1.0, t
        _, state, _, _ = step(state, [NOOP] * N, rates=[0.0] * 7)
    assert int(state.time) == 61
    assert float(state.esc[0, 1]) == 0.0 and float(state.inv[0, 1]) == 1.0
    assert not bool(state.book.active.any())


def test_u9_gini():
    coin = jnp.array([[7, 13, 10, 10], [5, 10, 20, 40], [0, 0, 0, 40], [3, 3, 3, 3], [0, 0, 0, 0]],
                     jnp.float32)
    np.testing.assert_allclose(1 - gtb.equality(coin), [0.15, 0.511111, 1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(gtb.social_welfare(jnp.array([30.0, 10, 10, 10])), 10.0, rtol=1e-6)


def test_u10_move_conflict():
    # agents 0 and 1 both want (3, 10) from (3, 9) and (3, 11): the earlier in the order wins
    state = start_state(pos=((3, 9), (3, 11), (6, 6), (14, 14)))
    for order, winner in (([0, 1, 2, 3], 0), ([1, 0, 3, 2], 1)):
        _, after, _, _ = step(state, [RIGHT, LEFT, NOOP, NOOP], order=jnp.asarray(order))
        loser = 1 - winner
        assert tuple(np.asarray(after.pos[winner])) == (3, 10)
        assert tuple(np.asarray(after.pos[loser])) == tuple(np.asarray(state.pos[loser]))
        assert float(after.labor[winner]) == 1.0 and float(after.labor[loser]) == 0.0
    # over uniformly random orders each wins about half of the time; exactly one moves
    wins = 0
    for k in jax.random.split(jax.random.PRNGKey(3), 200):
        _, after, _, _ = step(state, [RIGHT, LEFT, NOOP, NOOP], order=jax.random.permutation(k, N))
        won = np.asarray(after.pos[:2, 1]) == 10
        assert won.sum() == 1 and float(after.labor[:2].sum()) == 1.0
        wins += int(won[0])
    assert 70 < wins < 130, wins


def test_u11_water_blocks():
    state = start_state(pos=((6, 0), (14, 0), (6, 6), (14, 14)))
    obs, after, _, _ = step(state, [DOWN, NOOP, NOOP, NOOP])
    assert obs["action_mask"][0, LEFT:].tolist() == [0, 1, 1, 0]
    assert tuple(np.asarray(after.pos[0])) == (6, 0) and float(after.labor[0]) == 0.0


def test_u12_reset_observation():
    obs, state = ENV.reset(jax.random.PRNGKey(5), PARAMS)
    parts = ENV.split_obs(obs)
    top = int(jnp.argmax(state.pay))
    assert tuple(np.asarray(state.pos[top])) == (14, 14)
    vec = np.asarray(parts["vector"][top])
    assert set(np.flatnonzero(vec)) == {0, 1, 122, 129, 131, 134, 135}
    np.testing.assert_allclose(vec[[0, 122, 129, 131, 134, 135]],
                               [2.224961, 1, 0.1, 0.1, 14 / 15, 14 / 15], atol=1e-6)
    assert np.flatnonzero(parts["action_mask"][top]).tolist() == (
        [0] + list(range(2, 13)) + list(range(24, 35)) + [LEFT, UP])  # §4 example
    # egocentric tensor: centre is self (channel 8 = 1), the out-of-world half is zero
    t = np.asarray(parts["tensor"][top])
    assert t[5, 5, 8] == 1 and t[5, 5, 6] == 1 and t[6:, :, :].sum() == 0 and t[:, 6:, :].sum() == 0
    assert t[5, 4, 3] == 0 and t[4, 5, 3] == 0  # (14, 13) and (13, 14) are empty land
    assert t[0, 3, 0] == 1 and t[0, 3, 4] == 1 and t[1, 3, 0] == 1  # stone on (9, 12), (10, 13)
    # another agent's id is j + 2
    other = int(jnp.argmin(state.pay))  # at (0, 14)
    t0 = np.asarray(parts["tensor"][other])
    assert t0[5, 5, 8] == 1 and t0[:5].sum() == 0 and t0[:, 6:].sum() == 0


def test_u13_reset_metrics():
    _, state = ENV.reset(jax.random.PRNGKey(0), PARAMS)
    coin = state.inv[:, 0] + state.esc[:, 0]
    assert float(coin.sum()) == 40.0 and float(gtb.equality(coin)) == 1.0
    assert float(gtb.social_welfare(coin)) == 10.0
    res = np.asarray(ENV._src_res[:-1])
    assert int(state.res[res == STONE].sum()) == 12 and int(state.res[res == WOOD].sum()) == 23
    assert sorted(map(tuple, np.asarray(state.pos).tolist())) == sorted(gtb.FIXED_STARTS)
    np.testing.assert_allclose(np.sort(state.pay), gtb.FIXED_PAYMENTS)


# ---- properties (gtb.md §11.7.2), matching (§11.7.3), reward path (§11.6) ------------------------
ROLLOUT_ENVS = 160
ENV_LEAN, _ = jaxmcg.make("gtb-15x15-v0", designer_obs="none")


@jax.jit
def _play(key, rates, eps_any, use_move_build):
    """One 100-step episode in each of ROLLOUT_ENVS envs: actions from the scripted `uniform` (or
    `move_build`) policy, replaced with probability `eps_any` by a uniform draw over all 50
    actions (invalid ones included); `rates` [E, 7]. Also runs the matcher on the pre-step book plus
    this step's orders, for the reference check."""
    n_envs = ROLLOUT_ENVS
    obs, state = jax.vmap(ENV_LEAN.reset_env, in_axes=(0, None))(jax.random.split(key, n_envs), PARAMS)
    step_env = jax.vmap(ENV_LEAN.step_env, in_axes=(0, 0, 0, None))
    policy = jax.vmap(jax.vmap(lambda m, k: jnp.where(
        use_move_build, scripted.move_build(m, k), scripted.uniform(m, k))))

    def body(carry, k):
        obs, state = carry
        k1, k2, k3, k4 = jax.random.split(k, 4)
        mask = ENV_LEAN.split_obs(obs)["action_mask"] > 0.5
        valid = policy(mask, jax.random.split(k1, n_envs * N).reshape(n_envs, N, -1))
        anything = jax.random.randint(k2, valid.shape, 0, gtb.NUM_ACTIONS)
        acts = jnp.where(jax.random.uniform(k3, valid.shape) < eps_any, anything, valid)
        book, inv, esc, _, _ = jax.vmap(market.create_orders, in_axes=(0, 0, 0, 0, 0, None))(
            state.book, state.inv, state.esc, state.labor, acts, 0.25)
        matched = jax.vmap(market.match_and_settle, in_axes=(0, 0, 0, 0, None))(
            book, inv, esc, state.price_hist, 50)
        nobs, nstate, reward, _, info = step_env(jax.random.split(k4, n_envs), state,
                                                 {"agents": acts, "tax_rates": rates}, PARAMS)
        out = {"before": state, "after": nstate, "acts": acts, "mask": mask, "reward": reward,
               "info": info, "book": book, "inv": inv, "matched": matched}
        return (nobs, nstate), out

    _, traj = jax.lax.scan(body, (obs, state), jax.random.split(key, 100))
    return traj


def play(seed, rates, eps_any=0.0, move_build=False):
    rates = jnp.broadcast_to(jnp.asarray(rates, jnp.float32), (ROLLOUT_ENVS, 7))
    return jax.tree_util.tree_map(np.asarray, _play(jax.random.PRNGKey(seed), rates, eps_any, move_build))


@pytest.fixture(scope="module")
def rollout():
    """Episodes with 20% uniformly random (often invalid) actions, free market for half of the
    environments and flat 0.5 for the rest (numpy, [T, E, ...])."""
    rates = np.where(np.arange(ROLLOUT_ENVS)[:, None] < ROLLOUT_ENVS // 2, 0.0, 0.5) * np.ones(7)
    return play(11, rates, eps_any=0.2)


def test_properties(rollout):
    b, a, info = rollout["before"], rollout["after"], rollout["info"]
    coin = lambda s: s.inv[..., 0] + s.esc[..., 0]  # noqa: E731
    # coin changes only by building; taxes are redistributed in full
    np.testing.assert_allclose(coin(a).sum(-1) - coin(b).sum(-1), info["income_build"].sum(-1),
                               atol=2e-3)
    np.testing.assert_allclose(info["tax_paid"].sum(-1), N * info["lump"], atol=2e-3)
    assert info["tax_paid"].sum() > 0 and info["houses_built"].sum() > 0 and info["trades"].sum() > 0
    # resources held change only by collection and building; the map only by collection and regrowth
    held = lambda s: s.inv[..., 1:].sum(-2) + s.esc[..., 1:].sum(-2)  # noqa: E731
    np.testing.assert_array_equal(held(a) - held(b), info["collected"].sum(-2)
                                  - info["houses_built"].sum(-1)[..., None])
    res = ENV._src_res[:-1]
    on_map = lambda s: np.stack([s.res[..., res == r].sum(-1) for r in (STONE, WOOD)], -1)  # noqa: E731
    regrown = on_map(a) - on_map(b) + info["collected"].sum(-2)
    assert (regrown >= 0).all() and (info["collected"].sum(-2) <= on_map(b)).all()
    assert regrown.sum() > 0
    # escrow equals the open orders: coin = sum of bid prices, units = number of asks
    book = a.book
    bid_coin = np.where(book.active & book.is_bid, book.price, 0).sum((-3, -1))
    np.testing.assert_allclose(a.esc[..., 0], bid_coin, atol=1e-3)
    np.testing.assert_array_equal(a.esc[..., 1:], np.swapaxes((book.active & ~book.is_bid).sum(-1), -1, -2))
    assert (a.inv >= -1e-4).all() and (a.esc >= -1e-4).all()
    assert (book.life[book.active] <= PARAMS.order_duration).all()
    # no two agents share a cell; nobody stands on water or on another agent's house
    flat = a.pos[..., 0] * 15 + a.pos[..., 1]
    assert all(len(set(row)) == N for row in flat.reshape(-1, N).tolist())
    assert not ENV._water[flat].any()
    owner = np.take_along_axis(a.house, flat, axis=-1)
    assert ((owner < 0) | (owner == np.arange(N))).all()
    # labour never decreases; it rises by exactly the labour of what happened
    assert (a.labor >= b.labor).all()
    # a valid build is always carried out; an invalid action costs nothing
    chose_build = rollout["acts"] == BUILD
    np.testing.assert_array_equal(info["houses_built"] > 0, chose_build & rollout["mask"][..., BUILD])
    invalid = ~np.take_along_axis(rollout["mask"], rollout["acts"][..., None], -1)[..., 0]
    # (a move masked because the target was occupied may still succeed if the occupant moves away
    # earlier in the Gather order, as in [F]; so moves are left out here)
    invalid &= rollout["acts"] < LEFT
    assert invalid.sum() > 1000
    no_collect = info["collected"].sum(-1) == 0
    np.testing.assert_array_equal((a.labor - b.labor)[invalid & no_collect], 0.0)


def _reference_match(orders):
    """[F]'s matching loop transcribed (gtb.md §3.4.3): `orders` are dicts (owner, bid?, price,
    life) in creation order; returns the list of (buyer, seller, price) trades."""
    bids = sorted([o for o in orders if o["bid"]], key=lambda o: (-o["price"], -o["life"]))
    asks = sorted([o for o in orders if not o["bid"]], key=lambda o: (o["price"], -o["life"]))
    impossible, trades = set(), []
    while True:
        cand = [o for o in bids if o["owner"] not in impossible]
        if not cand:
            return trades
        bid = cand[0]
        others = [o for o in asks if o["owner"] != bid["owner"]]
        if not others or bid["price"] < others[0]["price"]:
            impossible.add(bid["owner"])
            continue
        ask = others[0]
        price = ask["price"] if bid["life"] <= ask["life"] else bid["price"]
        trades.append((bid["owner"], ask["owner"], price))
        bids.remove(bid)
        asks.remove(ask)


def test_matching_equals_reference(rollout):
    """On books reached by play (which respect the §11.5 invariant), after this step's orders are
    created, the fixed-trip matcher makes exactly [F]'s trades: same number per resource, same
    coin flows per agent, same units bought."""
    book, inv = rollout["book"], rollout["inv"]
    _, inv_after, _, _, trades, income = rollout["matched"]
    traded = 0
    for t, e in np.ndindex(trades.shape[:2]):
        if (t * 7 + e) % 3:
            continue  # a third of the books keeps the test fast
        coin, units = np.zeros(N), np.zeros((N, 2))
        for r in range(2):
            on = np.argwhere(book.active[t, e, r])
            orders = [{"owner": int(i), "bid": bool(book.is_bid[t, e, r, i, k]),
                       "price": int(book.price[t, e, r, i, k]), "life": int(book.life[t, e, r, i, k])}
                      for i, k in on]
            # [F]'s list order: creation order, i.e. older first, then agent index
            orders.sort(key=lambda o: (-o["life"], o["owner"]))
            want = _reference_match(orders)
            assert len(want) == trades[t, e, r], (t, e, r, want)
            for buyer, seller, price in want:
                coin[buyer] -= price
                coin[seller] += price
                units[buyer, r] += 1
            traded += len(want)
        np.testing.assert_allclose(income[t, e], coin, err_msg=str((t, e)))
        np.testing.assert_allclose(inv_after[t, e, :, 1:] - inv[t, e, :, 1:], units, err_msg=str((t, e)))
    assert traded > 100, traded


def test_reward_from_rates_equals_env_reward(rollout):
    info = rollout["info"]
    f = jax.vmap(jax.vmap(gtb.reward_from_rates, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    got = np.asarray(f(info["tax"]["rates_env"], info["tax"], PARAMS))
    np.testing.assert_allclose(got, rollout["reward"], atol=1e-4)
    assert info["tax"]["enact"].sum() == 10 * info["tax"]["enact"].shape[1]


def test_reward_from_rates_gradient(rollout, x64):
    """d Σ_t reward / d rates of one episode, by jax.grad against central differences (float64);
    a rates point away from bracket kinks: only the inventory cap is piecewise."""
    tax = jax.tree_util.tree_map(lambda x: jnp.asarray(x[:, 30]), rollout["info"]["tax"])
    tax = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, tax)
    params = PARAMS.replace(bracket_cutoffs=jnp.asarray(gtb.US_FEDERAL_CUTOFFS, jnp.float64),
                            isoelastic_eta=0.23, energy_cost=0.21)

    def welfare(rates):
        r = jax.vmap(gtb.reward_from_rates, in_axes=(None, 0, None))(rates, tax, params)
        return jnp.sum(r * jnp.arange(1.0, N + 1))  # weights so that the lump sum does not cancel

    rates = jnp.asarray([0.3, 0.25, 0.4, 0.2, 0.35, 0.3, 0.45], jnp.float64)
    g = jax.grad(welfare)(rates)
    assert np.abs(np.asarray(g)).max() > 1e-3
    assert_grad_matches_fd(welfare, rates, jax.random.PRNGKey(0), h=1e-6, rtol=1e-5,
                           n_coordinates=7)


# ---- interface ---------------------------------------------------------------------------------
def test_bad_params_rejected_before_compiling():
    assert_rejected_before_compiling(
        lambda: jaxmcg.make("gtb-15x15-v0", tax_rates=[0.1, 0.2, 1.5, 0, 0, 0, 0]), ["tax_rates", "[0, 1]"])
    assert_rejected_before_compiling(
        lambda: jaxmcg.make("gtb-15x15-v0", tax_rates=[0.1, -0.2, 0.5, 0, 0, 0, 0]), ["tax_rates"])
    assert_rejected_before_compiling(
        lambda: jaxmcg.make("gtb-15x15-v0", bracket_cutoffs=[0, 9.7, 84.2, 39.475, 160.7, 204.1, 510.3]),
        ["bracket_cutoffs", "increasing"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("gtb-15x15-v0", rate_cap=2.0), ["rate_cap"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("gtb-15x15-v0", tax_model="saez"),
                                     ["tax_model", "us_federal"])
    assert_rejected_before_compiling(lambda: jaxmcg.make("gtb-15x15-v0", start_locs=[[7, 0]] * 4),
                                     ["start_locs"])


def test_designer_rates_only_at_period_start():
    state = start_state()
    _, state, _, _ = step(state, [NOOP] * N, rates=[0.7] * 7)
    np.testing.assert_allclose(state.rates, 0.7)
    _, state, _, _ = step(state, [NOOP] * N, rates=[0.2] * 7)  # ignored mid-period
    np.testing.assert_allclose(state.rates, 0.7)
    _, capped, _, _ = step(start_state(), [NOOP] * N, rates=[0.9, 0.1] + [0.9] * 5,
                           params=PARAMS.replace(rate_cap=0.4))
    np.testing.assert_allclose(capped.rates, [0.4, 0.1] + [0.4] * 5)


def test_observation_and_designer_shapes():
    obs, state = ENV.reset(jax.random.PRNGKey(0), PARAMS)
    assert obs.shape == (N, ENV.obs_size) == (N, 11 * 11 * 9 + 136 + 50)
    _, _, _, info = step(state, [NOOP] * N)
    d = info["designer_obs"]
    assert d["tensor"].shape == (15, 15, 8) and d["vector"].shape == (gtb.DESIGNER_VECTOR_SIZE,)
    assert float(d["tensor"][..., 7].sum()) == sum(range(2, N + 2))  # agent ids j + 2
    assert float(d["tensor"][..., 3].sum()) == 21  # water tiles
    np.testing.assert_allclose(d["vector"][68:75], gtb.US_FEDERAL_RATES, rtol=1e-6)  # curr_rates
    np.testing.assert_allclose(d["vector"][82], 0.01)  # time
    env_d, _ = jaxmcg.make("gtb-15x15-v0", obs_format="dict")
    parts = jax.eval_shape(env_d.reset, jax.random.PRNGKey(0), PARAMS)[0]
    assert {k: v.shape for k, v in parts.items()} == {
        "tensor": (N, 11, 11, 9), "vector": (N, 136), "action_mask": (N, 50)}


def test_compact_obs_decodes_to_flat(rollout):
    """The compact format (one code per cell) decodes to exactly the flat tensor, on mid-episode
    states with houses, orders and agents in view."""
    env_c, _ = jaxmcg.make("gtb-15x15-v0", obs_format="compact", designer_obs="none")
    states = jax.tree_util.tree_map(lambda x: jnp.asarray(x[60, :16]), rollout["after"])
    both = jax.jit(jax.vmap(lambda st: (ENV.get_obs(st, PARAMS), env_c.get_obs(st, PARAMS))))
    flat, compact = both(states)
    assert compact.shape == (16, N, 121 + 136 + 50)
    a, b = ENV.split_obs(flat), env_c.split_obs(compact)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    assert float(a["tensor"][..., 2].sum()) > 0 and float(a["tensor"][..., 7].max()) >= 1


def test_small_sort_and_permutation():
    x = jnp.array([[3.0, -1.0, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(jax.jit(gtb.sort_small)(x), np.sort(np.asarray(x), axis=-1))
    perms = np.asarray(jax.jit(jax.vmap(lambda k: gtb.random_permutation(k, N)))(
        jax.random.split(jax.random.PRNGKey(0), 4000)))
    assert (np.sort(perms, axis=1) == np.arange(N)).all()
    first = np.bincount(perms[:, 0], minlength=N) / len(perms)
    assert np.abs(first - 1 / N).max() < 0.03, first


@pytest.mark.slow  # suite budget: the 2000-episode parity in test_gtb_slow.py covers it
def test_scripted_parity_small():
    """gtb.md §9.2 with 160 episodes per row (the full 2000-episode check is in test_gtb_slow.py):
    every column within 3 combined standard errors of the [F] reference."""
    for policy, tax, seed in (("uniform", "us_federal", 1), ("move_build", "flat_0.5", 2)):
        traj = play(seed, scripted.TAX_SETTINGS[tax], move_build=policy == "move_build")
        final = jax.tree_util.tree_map(lambda x: x[-1], traj["after"])
        stats = scripted.episode_summary(traj["reward"], traj["info"], final)
        bad = {k: v for k, v in scripted.compare(stats, scripted.REFERENCE[(policy, tax)]).items()
               if not v[-1]}
        assert not bad, (policy, tax, bad)


def test_mask_from_codes_equals_direct(rollout):
    """`action_mask` reads Build and the moves off the agents' windows; on mid-episode states (houses,
    crowding, water) it equals the direct `_can_build` / `_move_ok` tests."""
    states = jax.tree_util.tree_map(lambda x: jnp.asarray(x[::7].reshape(-1, *x.shape[2:])),
                                    rollout["after"])

    def direct(st):
        flat = ENV._flat(st.pos)
        moves = jax.vmap(lambda i: jax.vmap(lambda d: ENV._move_ok(st.pos, st.house, i, st.pos[i] + d)[0])(
            jnp.asarray(gtb._DELTAS)))(jnp.arange(N))
        return ENV._can_build(st.house, flat, st.inv), moves

    mask = np.asarray(jax.jit(jax.vmap(lambda st: ENV.action_mask(st, PARAMS)))(states))
    build, moves = map(np.asarray, jax.jit(jax.vmap(direct))(states))
    np.testing.assert_array_equal(mask[..., BUILD], build)
    np.testing.assert_array_equal(mask[..., LEFT:], moves)
    assert build.any() and (~moves).any() and moves.any()  # both outcomes occur in the sample


def test_step_equals_base_class_step(rollout):
    """GTB's one-observation `step` returns what the base class's `step` returns (same keys,
    auto-reset, truncation, final_obs), including on the steps where the episode ends."""
    from jaxmcg.environment import Environment

    t = np.array([5, 99])  # mid-episode, and the last step (truncation and auto-reset)
    states = jax.tree_util.tree_map(lambda x: jnp.asarray(x[t, :8].reshape(-1, *x.shape[2:])),
                                    rollout["before"])
    acts = jnp.asarray(rollout["acts"][t, :8].reshape(-1, N))
    keys = jax.random.split(jax.random.PRNGKey(3), acts.shape[0])
    ours = jax.vmap(ENV.step, in_axes=(0, 0, 0, None))(keys, states, acts, PARAMS)
    base = jax.vmap(lambda k, s, a: Environment.step(ENV, k, s, a, PARAMS))(keys, states, acts)
    assert bool(ours[4].any()) and not bool(ours[4].all())
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                           ours, base)
