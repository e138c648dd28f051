"""Gather-Trade-Build, the tax-design economy of thesis ch. 6 (spec: gtb.md; simulator [F] =
the authors' fork of salesforce/ai-economist with `tax_model="external"`).

Four mobile agents with fixed build skills gather wood and stone on the 15x15 `pure_and_mixed` map,
trade them in a continuous double auction and build houses for coin; every `tax_period` steps a
bracket income tax is collected and redistributed as a lump sum. One step (gtb.md §3.1):
1. t += 1;
2. Build (§3.3), ContinuousDoubleAuction (§3.4, `envs/gtb_market.py`), Gather: moves and
   collection in a fresh random agent order (§3.5), PeriodicBracketTax (§3.6);
3. regeneration of each source tile with probability `regen_prob` (§3.7);
4. observations and masks of the new state (§6, §4); rewards = change in utility (§5.1).
Invalid actions are safe no-ops that cost no labour (§3.1). Only truncation ends an episode.

Actions: `Discrete(50)` per agent (§3.2: NO-OP, Build, 44 trades, Left/Right/Up/Down). A designer
sets the tax by passing `{"agents": int[N], "tax_rates": float[7]}` instead of the plain `int[N]`
(gtb.md §11.1); the rates are read only at the first step of a period (`state.tax_pos == 1`) and
clipped to [0, `rate_cap`] (G13 `cap_mode="clip"`). With plain actions the period's rates are
`params.tax_rates` (US federal by default; zeros for the free market, §7.4).

Observations (§6.1, §6.2, §4): with `obs_format="flat"` (default, the jaxmcg array contract) each
agent gets one float32 vector of 1275 = the 11x11x9 egocentric tensor [row, col, ch] flattened (G11),
the 136-entry vector and the 50-entry action mask. `obs_format="compact"` (307 floats) carries the
tensor as one integer code per cell instead (§11.4: the float tensor is most of the memory traffic);
`split_obs` turns either into {"tensor" [.., 11, 11, 9], "vector", "action_mask"}, which
`obs_format="dict"` returns directly.

`info` (every step): `prod`, `eq`, `sw` (= eq prod / N), `planner_reward` (dual-RL's ΔSW, §5.3),
`houses_built` [N], `trades`, `collected` [N, 2] (stone, wood), `income_build` [N], `income_trade`
[N], `tax_paid` [N], `lump`, `period_start_next`, `tax` (the inputs of `reward_from_rates`, §11.6)
and, unless `designer_obs="none"`, `designer_obs` = {"tensor" [15, 15, 8], "vector" [118]} (G4).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import gtb_market as market
from envs.gtb_maps import FIXED_PAYMENTS, FIXED_STARTS, MAPS, STONE, WOOD, map_tables
from jaxmcg import spaces
from jaxmcg.environment import Environment

NOOP, BUILD = 0, 1
MOVE_LEFT, MOVE_RIGHT, MOVE_UP, MOVE_DOWN = 46, 47, 48, 49
NUM_ACTIONS = 50
_DELTAS = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]], np.int32)  # (drow, dcol) of 46..49
# cell codes (see GTB.__init__): channel c of §6.1 is (code >> _CODE_SHIFT[c]) & _CODE_MASK[c]
_CODE_SHIFT = np.array([0, 1, 2, 3, 4, 5, 6, 7, 10], np.int32)
_CODE_MASK = np.array([1, 1, 1, 1, 1, 1, 1, 7, 7], np.int32)

# [F] `redistribution.py`: US federal brackets (cutoffs / usd_scaling 1e3) and rates (§1, §7.3)
US_FEDERAL_CUTOFFS = (0.0, 9.7, 39.475, 84.2, 160.725, 204.1, 510.3)
US_FEDERAL_RATES = (0.10, 0.12, 0.22, 0.24, 0.32, 0.35, 0.37)
FREE_MARKET_RATES = (0.0,) * 7
TAX_MODELS = {"us_federal": US_FEDERAL_RATES, "free_market": FREE_MARKET_RATES,
              "external": FREE_MARKET_RATES}  # external: the designer passes rates in the action

MAX_ORDERS = 5  # [MG] `max_num_orders=5`: open orders per agent per resource (= slots K)
VIEW = 5  # [F] `mobile_agent_observation_range=5`: 11x11 window
NUM_CHANNELS = 9
VECTOR_SIZE = 136
DESIGNER_VECTOR_SIZE = 118  # 86 + 4 x 8 (G4 "foundation")


@struct.dataclass
class EnvState:
    time: jax.Array  # int32 t
    tax_pos: jax.Array  # int32 `tax_cycle_pos` (1 at reset; 1 at a period's first step)
    res: jax.Array  # [S] bool resource present on each source tile (§11.2: not a grid)
    house: jax.Array  # [H*W] int32 house owner, -1 none
    pos: jax.Array  # [N, 2] int32 (row, col)
    inv: jax.Array  # [N, 3] float32 inventory (coin, stone, wood)
    esc: jax.Array  # [N, 3] float32 escrow
    labor: jax.Array  # [N] float32 cumulative labour
    util: jax.Array  # [N] float32 utility after the previous step
    pay: jax.Array  # [N] float32 build payment
    skill_obs: jax.Array  # [N] float32 observed `build_skill` (noise under fixed skills, G10)
    book: market.OrderBook
    price_hist: jax.Array  # [R, N, 11] float32 decayed sales per seller and price
    rates: jax.Array  # [7] float32 rates in force (shown in observations; zeros at reset, G12)
    last_coin: jax.Array  # [N] total coin after the last redistribution
    last_income: jax.Array  # [N]
    last_mrate: jax.Array  # [N]


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 100  # [T L1106]
    tax_period: int = 10  # [MG] `period=10`
    order_duration: int = 50  # [F] `order_duration=50`
    regen_prob: float = 0.01  # [F] `resource_regen_prob`
    move_labor: float = 1.0  # [F] defaults (§1)
    collect_labor: float = 1.0
    build_labor: float = 10.0
    order_labor: float = 0.25
    isoelastic_eta: float = 0.23  # [F] `isoelastic_eta`
    energy_cost: float = 0.21  # [F] `energy_cost`, no warm-up
    starting_coin: float = 10.0  # [MG] `starting_agent_coin`
    payments: tuple = FIXED_PAYMENTS  # [N] by skill rank, assigned to agents by a random permutation
    start_locs: tuple = FIXED_STARTS  # [N, 2] by skill rank
    bracket_cutoffs: tuple = US_FEDERAL_CUTOFFS  # [7] increasing, first 0
    tax_rates: tuple = US_FEDERAL_RATES  # [7] used when no designer rates are passed
    rate_cap: float = 1.0  # dual-RL annealing cap (§7.2); applied rates = min(rate, cap)
    skill_obs_noise: bool = True  # G10: observed build_skill is a fresh Pareto(4) draw


def crra(coin, eta):
    """Isoelastic coin utility (c^(1-η) - 1)/(1-η) (gtb.md §5.1)."""
    return (jnp.power(jnp.maximum(coin, 0.0), 1.0 - eta) - 1.0) / (1.0 - eta)


def tax_due(income, rates, cutoffs):
    """T(z) = Σ_b τ_b min(size_b, max(0, z - m_b)), top bracket unbounded ([T Eq 6.7]); `income`
    [..., N] -> [..., N]."""
    cutoffs = jnp.asarray(cutoffs, jnp.float32)
    size = jnp.concatenate([cutoffs[1:] - cutoffs[:-1], jnp.full(1, jnp.inf, cutoffs.dtype)])
    taxed = jnp.minimum(size, jnp.maximum(0.0, income[..., None] - cutoffs))
    return jnp.sum(jnp.asarray(rates)[..., None, :] * taxed, axis=-1)


def marginal_rate(income, rates, cutoffs):
    """τ_b of the bracket m_b <= z < m_{b+1}; 0 for z < 0 (§3.6). `income` [..., N] -> [..., N]."""
    cutoffs = jnp.asarray(cutoffs, jnp.float32)
    upper = jnp.concatenate([cutoffs[1:], jnp.full(1, jnp.inf, cutoffs.dtype)])
    z = income[..., None]
    inside = (z >= cutoffs) & (z < upper)  # one-hot of the bracket (none for z < 0)
    return jnp.sum(jnp.where(inside, jnp.asarray(rates)[..., None, :], 0.0), axis=-1)


def random_permutation(key, n):
    """A uniformly random permutation of 0..n-1 `[n]` int32: the ranks of n iid uniforms, computed
    with an n x n comparison instead of a sort (sorts are slow inside vmap on CPU)."""
    u = jax.random.uniform(key, (n,))
    rank = jnp.sum(u[None, :] < u[:, None], axis=1)  # ties have probability ~0
    return jnp.argmax(rank[None, :] == jnp.arange(n)[:, None], axis=1).astype(jnp.int32)


def sort_small(x):
    """`x` [..., n] sorted ascending by an n x n rank comparison (for small n, no sort op)."""
    n = x.shape[-1]
    before = (x[..., None, :] < x[..., :, None]) | (
        (x[..., None, :] == x[..., :, None]) & (jnp.arange(n)[None, :] < jnp.arange(n)[:, None]))
    rank = jnp.sum(before, axis=-1)  # [..., n] position of each element
    return jnp.sum(jnp.where(rank[..., :, None] == jnp.arange(n), x[..., :, None], 0.0), axis=-2)


def equality(coin):
    """1 - Gini of `coin` [..., N] (§5.2, exact form for N < 30; 1 when all coin is 0)."""
    n = coin.shape[-1]
    diff = jnp.sum(jnp.abs(coin[..., :, None] - coin[..., None, :]), axis=(-2, -1))
    return 1.0 - diff / (2 * n * jnp.sum(coin, axis=-1) + 1e-10) * n / (n - 1)


def social_welfare(coin):
    """dual-RL planner welfare eq · prod / N ([F] `coin_eq_times_productivity`, §5.3)."""
    return equality(coin) * jnp.sum(coin, axis=-1) / coin.shape[-1]


def reward_from_rates(rates, tax, params, clamp=0.01):
    """Agents' rewards `[N]` of one step as a differentiable function of that step's `rates` [7]
    (gtb.md §11.6, G3 `reward_path="local"`): the tax, its cap at inventory coin, the lump sum and
    the utility are recomputed from `tax = info["tax"]` of that step. At `rates = tax["rates_env"]`
    it equals the env reward; the gradient of crra is taken at coin >= `clamp`. Only tax steps
    depend on the rates. vmap it over steps."""
    enact = tax["enact"].astype(jnp.float32)
    due = tax_due(tax["income"], rates, params.bracket_cutoffs)
    paid = jnp.minimum(tax["inv_coin_pre"], due) * enact
    lump = jnp.sum(paid, axis=-1, keepdims=True) / paid.shape[-1]
    coin = tax["inv_coin_pre"] - paid + lump * enact + tax["esc_coin"]
    # value at the true coin (so it equals the env reward), gradient at coin >= clamp: crra' is
    # infinite at 0 coin, which an agent that spent everything reaches ([MG] clamps the value too)
    safe = jnp.maximum(coin, clamp)
    eta = params.isoelastic_eta
    u = crra(safe, eta) + jax.lax.stop_gradient(crra(coin, eta) - crra(safe, eta))
    return u - params.energy_cost * tax["labor"] - tax["util_prev"]


def welfare_objective(info):
    """The thesis objective Σ_t prod_t · eq_t over the leading time axis of stacked `info`."""
    return jnp.sum(info["prod"] * info["eq"], axis=0)


class GTB(Environment):
    """Gather-Trade-Build (thesis ch. 6) with 4 agents of fixed skill; see the module docstring.

    Constructor choices (static): `map_name`; `tax_model` ("us_federal", "free_market" or
    "external"), which only sets the default `tax_rates`; `obs_format` ("flat", "compact", "dict");
    `designer_obs` ("foundation": [F]'s planner tensor 15x15x8 and vector 86 + 4x8, G4; or "none").
    """

    def __init__(self, map_name: str = "pure_and_mixed_15x15", tax_model: str = "us_federal",
                 obs_format: str = "flat", designer_obs: str = "foundation"):
        for name, value, valid in (("map_name", map_name, MAPS), ("tax_model", tax_model, TAX_MODELS),
                                   ("obs_format", obs_format, ("flat", "compact", "dict")),
                                   ("designer_obs", designer_obs, ("foundation", "none"))):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is invalid; valid: {', '.join(map(repr, valid))}")
        self.map_name, self.tax_model = map_name, tax_model
        self.obs_format, self.designer_obs = obs_format, designer_obs
        self.num_agents = len(FIXED_PAYMENTS)  # G1: the fixed four skills need N = 4
        t = map_tables(MAPS[map_name])
        self.height, self.width = h, w = t["shape"]
        self._hw = h * w
        self.num_sources = s = len(t["src_flat"])
        self._water = t["water"].reshape(-1)
        self._src_index = t["src_index"]  # [HW] -> 0..S-1, S = none
        self._src_res = np.concatenate([t["src_res"], [0]]).astype(np.int32)  # [S + 1]
        src_cell = np.zeros(h * w, bool)
        src_cell[t["src_flat"]] = True
        self._src_cell = src_cell
        is_stone = src_cell & (self._src_res[self._src_index] == STONE)
        is_wood = src_cell & (self._src_res[self._src_index] == WOOD)
        self._stone_idx = np.where(is_stone, self._src_index, s).astype(np.int32)  # [HW] -> S none
        self._wood_idx = np.where(is_wood, self._src_index, s).astype(np.int32)
        # Observations gather one integer code per cell (§11.4): bits 0-6 are the channels 0-6 of
        # §6.1, bits 7-9 the house owner id + 2, bits 10-12 the agent id + 2. The static bits
        # (water, source blocks, in-world) are fixed here; cell H*W stands for outside the map.
        static = (self._water * 8 + is_stone * 16 + is_wood * 32 + 64).astype(np.int32)
        self._static_code = np.concatenate([static, [0]]).astype(np.int32)
        cells = (2 * VIEW + 1) ** 2
        self.obs_size = cells * (1 if obs_format == "compact" else NUM_CHANNELS) + VECTOR_SIZE + NUM_ACTIONS

    # ---- parameters and spaces ---------------------------------------------------------------
    @property
    def default_params(self) -> EnvParams:
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return EnvParams(payments=f32(FIXED_PAYMENTS), start_locs=jnp.asarray(FIXED_STARTS, jnp.int32),
                         bracket_cutoffs=f32(US_FEDERAL_CUTOFFS), tax_rates=f32(TAX_MODELS[self.tax_model]))

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)

        def value(name):
            try:
                return np.asarray(getattr(params, name), np.float64)
            except jax.errors.TracerArrayConversionError:  # traced: checked by the caller's caller
                return None

        n, h, w = self.num_agents, self.height, self.width
        for name in ("regen_prob", "rate_cap", "tax_rates"):
            x = value(name)
            if x is not None and not np.all((x >= 0) & (x <= 1)):
                raise ValueError(f"{name}={getattr(params, name)} is invalid: must be in [0, 1]")
        for name in ("move_labor", "collect_labor", "build_labor", "order_labor", "energy_cost",
                     "starting_coin", "payments", "isoelastic_eta"):
            x = value(name)
            if x is not None and not np.all(x >= 0):
                raise ValueError(f"{name}={getattr(params, name)} is invalid: must be >= 0")
        eta = value("isoelastic_eta")
        if eta is not None and np.any(eta == 1):
            raise ValueError("isoelastic_eta=1 is invalid: the CRRA form needs eta != 1")
        rates, cut = value("tax_rates"), value("bracket_cutoffs")
        if rates is not None and rates.shape[-1:] != (7,):
            raise ValueError(f"tax_rates has shape {rates.shape}; valid: 7 brackets")
        if cut is not None and (cut.shape[-1:] != (7,) or np.any(cut[..., 0] != 0)
                                or np.any(np.diff(cut, axis=-1) <= 0)):
            raise ValueError(f"bracket_cutoffs={params.bracket_cutoffs} is invalid: need 7 strictly "
                             f"increasing cutoffs starting at 0")
        pay = value("payments")
        if pay is not None and pay.shape[-1:] != (n,):
            raise ValueError(f"payments has shape {pay.shape}; valid: ({n},)")
        starts = value("start_locs")
        if starts is not None:
            if starts.shape[-2:] != (n, 2):
                raise ValueError(f"start_locs has shape {starts.shape}; valid: ({n}, 2)")
            r, c = starts[..., 0].astype(int), starts[..., 1].astype(int)
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            if not inside.all() or self._water[(r * w + c)].any():
                raise ValueError(f"start_locs={params.start_locs} is invalid: every start must be "
                                 f"inside the {h}x{w} map and not on water")
            if len({(int(a), int(b)) for a, b in zip(r.reshape(-1), c.reshape(-1))}) != r.size:
                raise ValueError(f"start_locs={params.start_locs} is invalid: starts must differ")
        for name, low in (("tax_period", 1), ("order_duration", 0)):
            x = value(name)
            if x is not None and not np.all(x >= low):
                raise ValueError(f"{name}={getattr(params, name)} is invalid: must be >= {low}")

    def observation_space(self, params=None):
        if self.obs_format != "dict":
            return spaces.Box(-jnp.inf, jnp.inf, (self.obs_size,), jnp.float32)
        return spaces.Dict({
            "tensor": spaces.Box(0.0, self.num_agents + 1.0, (2 * VIEW + 1, 2 * VIEW + 1, NUM_CHANNELS),
                                 jnp.float32),
            "vector": spaces.Box(-jnp.inf, jnp.inf, (VECTOR_SIZE,), jnp.float32),
            "action_mask": spaces.Box(0.0, 1.0, (NUM_ACTIONS,), jnp.float32),
        })

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)

    @classmethod
    def split_obs(cls, obs):
        """Flat `[..., 1275]` or compact `[..., 307]` observations -> {"tensor" [..., 11, 11, 9],
        "vector" [..., 136], "action_mask" [..., 50]}; a dict passes through."""
        if isinstance(obs, dict):
            return obs
        side = 2 * VIEW + 1
        nt = obs.shape[-1] - VECTOR_SIZE - NUM_ACTIONS
        if nt == side * side:  # compact: decode the integer codes
            tensor = cls._decode(obs[..., :nt].astype(jnp.int32))
        elif nt == side * side * NUM_CHANNELS:
            tensor = obs[..., :nt]
        else:
            raise ValueError(f"observation size {obs.shape[-1]} is invalid; valid: "
                             f"{side * side * NUM_CHANNELS + VECTOR_SIZE + NUM_ACTIONS} (flat), "
                             f"{side * side + VECTOR_SIZE + NUM_ACTIONS} (compact)")
        return {"tensor": tensor.reshape(*obs.shape[:-1], side, side, NUM_CHANNELS),
                "vector": obs[..., nt:nt + VECTOR_SIZE], "action_mask": obs[..., nt + VECTOR_SIZE:]}

    # ---- transitions ---------------------------------------------------------------------------
    @partial(jax.jit, static_argnums=(0,))
    def step(self, key, state, actions, params=None):
        """The base class's `step` (same keys, auto-reset, truncation and `info["final_obs"]`, equal
        outputs) with one observation per step instead of two: the base class renders the reset
        observation of every environment on every step and selects it where the episode ended; here
        the state is selected first and observed once. `info["final_obs"]` is a second rendering,
        which XLA drops when the caller does not use it (§11.8: observations dominate the cost)."""
        params = self.default_params if params is None else params
        key_step, key_reset = jax.random.split(key)
        next_state, reward, terminated, info = self.advance(key_step, state, actions, params)
        truncated = jnp.logical_and(next_state.time >= params.max_steps_in_episode,
                                    jnp.logical_not(terminated))
        done = jnp.logical_or(terminated, truncated)
        info = dict(info)
        info["final_obs"] = self.get_obs(next_state, params)
        state_reset = self.reset_state(key_reset, params)
        next_state = jax.tree_util.tree_map(lambda r, s: jnp.where(done, r, s), state_reset, next_state)
        return (self.get_obs(next_state, params), next_state, reward.astype(jnp.float32), terminated,
                truncated, info)

    def reset_env(self, key, params):
        state = self.reset_state(key, params)
        return self.get_obs(state, params), state

    def reset_state(self, key, params):
        """The state `reset_env` returns, without its observation."""
        n = self.num_agents
        k_perm, k_skill = jax.random.split(key)
        rank = random_permutation(k_perm, n)  # §2.3: agents take the ranks in random order
        pay = jnp.asarray(params.payments, jnp.float32)[rank]
        noise = jnp.power(1.0 - jax.random.uniform(k_skill, (n,)), -0.25) - 1.0  # numpy pareto(4)
        coin = jnp.asarray(params.starting_coin, jnp.float32)
        inv = jnp.zeros((n, 3), jnp.float32).at[:, 0].set(coin)
        labor = jnp.zeros(n, jnp.float32)
        state = EnvState(
            time=jnp.zeros((), jnp.int32), tax_pos=jnp.ones((), jnp.int32),
            res=jnp.ones(self.num_sources, jnp.bool_), house=jnp.full(self._hw, -1, jnp.int32),
            pos=jnp.asarray(params.start_locs, jnp.int32)[rank], inv=inv,
            esc=jnp.zeros((n, 3), jnp.float32), labor=labor,
            util=crra(inv[:, 0], params.isoelastic_eta) - params.energy_cost * labor,
            pay=pay, skill_obs=jnp.where(params.skill_obs_noise, noise, pay / 10.0),
            book=market.empty_book(n, MAX_ORDERS),
            price_hist=jnp.zeros((market.NUM_RESOURCES, n, market.NUM_PRICES), jnp.float32),
            rates=jnp.zeros(7, jnp.float32), last_coin=inv[:, 0],
            last_income=jnp.zeros(n, jnp.float32), last_mrate=jnp.zeros(n, jnp.float32),
        )
        return state

    def step_env(self, key, state, actions, params):
        return self.transition(key, state, actions, params)

    def _flat(self, pos):
        return pos[..., 0] * self.width + pos[..., 1]

    def _can_build(self, house, flat, inv):
        """§3.3: one wood and one stone, and the tile has no landmark (house, water, source)."""
        return ((inv[:, 1] >= 1) & (inv[:, 2] >= 1) & ~jnp.asarray(self._src_cell)[flat]
                & ~jnp.asarray(self._water)[flat] & (house[flat] < 0))

    def _move_ok(self, pos, house, agent, target):
        """A move of `agent` to `target` [2] succeeds iff it is inside the world, not water, not
        another agent's house and not occupied now (§3.5)."""
        h, w = self.height, self.width
        inside = (target[0] >= 0) & (target[0] < h) & (target[1] >= 0) & (target[1] < w)
        cell = jnp.clip(target[0], 0, h - 1) * w + jnp.clip(target[1], 0, w - 1)
        owner = house[cell]
        free = ~jnp.any(jnp.all(pos == target, axis=-1) & (jnp.arange(pos.shape[0]) != agent))
        return inside & ~jnp.asarray(self._water)[cell] & ((owner < 0) | (owner == agent)) & free, cell

    def transition(self, key, state, actions, params, agent_order=None, regen_uniforms=None):
        """`step_env` with optional test-only overrides (§11.7.5): the Gather order `agent_order`
        [N] and the regeneration draws `regen_uniforms` [S], to replay draws recorded from [F]."""
        next_state, reward, terminated, info = self.advance(key, state, actions, params, agent_order,
                                                            regen_uniforms)
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    def advance(self, key, state, actions, params, agent_order=None, regen_uniforms=None):
        """`transition` without the observation: `(next_state, reward, terminated, info)`."""
        n, s = self.num_agents, self.num_sources
        k_order, k_regen = jax.random.split(key)
        if isinstance(actions, dict):
            acts, new_rates = actions["agents"], actions["tax_rates"]
        else:
            acts, new_rates = actions, params.tax_rates
        acts = jnp.asarray(acts, jnp.int32)
        f32 = jnp.float32
        inv, esc, labor, house, pos = state.inv, state.esc, state.labor, state.house, state.pos
        agents = jnp.arange(n)

        # Build (§3.3): at most one agent per tile, so the owner scatter has no conflicts
        flat = self._flat(pos)
        built = (acts == BUILD) & self._can_build(house, flat, inv)
        builtf = built.astype(f32)
        income_build = state.pay * builtf
        inv = inv.at[:, 0].add(income_build).at[:, 1:].add(-builtf[:, None])
        labor = labor + params.build_labor * builtf
        house = house.at[jnp.where(built, flat, self._hw)].set(agents, mode="drop")

        # ContinuousDoubleAuction (§3.4): decay, creation, matching, expiry
        price_hist = state.price_hist * 0.995
        book, inv, esc, labor, _ = market.create_orders(state.book, inv, esc, labor, acts,
                                                        params.order_labor)
        book, inv, esc, price_hist, trades, income_trade = market.match_and_settle(
            book, inv, esc, price_hist, params.order_duration)
        book, inv, esc = market.expire_orders(book, inv, esc, params.order_duration)

        # Gather (§3.5): agents in a fresh random order, each moves then collects on its tile
        order = random_permutation(k_order, n) if agent_order is None else agent_order
        res = jnp.concatenate([state.res, jnp.zeros(1, jnp.bool_)])  # sentinel: no source
        src_index, src_res = jnp.asarray(self._src_index), jnp.asarray(self._src_res)
        collected = jnp.zeros((n, 2), f32)
        for slot in range(n):
            a = order[slot]
            me = agents == a
            act = acts[a]
            d = jnp.clip(act - MOVE_LEFT, 0, 3)
            target = pos[a] + jnp.asarray(_DELTAS)[d]
            ok, _ = self._move_ok(pos, house, a, target)
            ok = ok & (act >= MOVE_LEFT) & (act <= MOVE_DOWN)
            pos = jnp.where(me[:, None] & ok, target, pos)
            sidx = src_index[self._flat(pos[a])]  # collect on the tile after the move, moved or not
            got = res[sidx]  # the sentinel is never set
            res = res & ~((jnp.arange(s + 1) == sidx) & got)
            gain = (me & got)[:, None] & jax.nn.one_hot(src_res[sidx], 2, dtype=jnp.bool_)[None, :]
            collected = collected + gain.astype(f32)
            labor = labor + params.move_labor * (me & ok) + params.collect_labor * (me & got)
        inv = inv.at[:, 1:].add(collected)

        # PeriodicBracketTax (§3.6): new rates at a period's first step, taxes on its last
        cutoffs = params.bracket_cutoffs
        start = state.tax_pos == 1
        rates = jnp.where(start, jnp.clip(jnp.minimum(jnp.asarray(new_rates, f32), params.rate_cap),
                                          0.0, 1.0), state.rates)
        enact = state.tax_pos >= params.tax_period
        inv_coin_pre = inv[:, 0]
        income = inv[:, 0] + esc[:, 0] - state.last_coin
        paid = jnp.where(enact, jnp.minimum(inv_coin_pre, tax_due(income, rates, cutoffs)), 0.0)
        lump = jnp.sum(paid) / n  # [T Eq 6.8]; escrow is never taxed (G17 cap at inventory coin)
        inv = inv.at[:, 0].set(inv_coin_pre - paid + lump * enact)
        coin = inv[:, 0] + esc[:, 0]
        last_coin = jnp.where(enact, coin, state.last_coin)
        last_income = jnp.where(enact, income, state.last_income)
        last_mrate = jnp.where(enact, marginal_rate(income, rates, cutoffs), state.last_mrate)
        tax_pos = jnp.where(enact, 0, state.tax_pos) + 1

        # regeneration (§3.7): one uniform per source tile (§11.8), capped at one unit
        u = jax.random.uniform(k_regen, (s,)) if regen_uniforms is None else regen_uniforms
        res = res[:s] | (u < params.regen_prob)

        util = crra(coin, params.isoelastic_eta) - params.energy_cost * labor
        next_state = EnvState(
            time=state.time + 1, tax_pos=tax_pos, res=res, house=house, pos=pos, inv=inv, esc=esc,
            labor=labor, util=util, pay=state.pay, skill_obs=state.skill_obs, book=book,
            price_hist=price_hist, rates=rates, last_coin=last_coin, last_income=last_income,
            last_mrate=last_mrate)
        reward = util - state.util
        eq, prod = equality(coin), jnp.sum(coin)
        sw = eq * prod / n
        info = {
            "prod": prod, "eq": eq, "sw": sw,
            "planner_reward": sw - social_welfare(state.inv[:, 0] + state.esc[:, 0]),
            "houses_built": builtf, "trades": jnp.sum(trades), "collected": collected,
            "income_build": income_build, "income_trade": income_trade, "tax_paid": paid,
            "lump": lump * enact, "period_start_next": tax_pos == 1,
            "tax": {"enact": enact, "inv_coin_pre": inv_coin_pre, "esc_coin": esc[:, 0],
                    "income": income, "labor": labor, "util_prev": state.util, "rates_env": rates},
        }
        if self.designer_obs != "none":
            info["designer_obs"] = self.designer_observation(next_state, params)
        return next_state, reward, jnp.zeros((), jnp.bool_), info

    # ---- observations and masks ---------------------------------------------------------------
    def _cell_codes(self, state):
        """Integer code of every cell `[H*W + 1]` (see `__init__`; the last cell is outside)."""
        res = jnp.concatenate([state.res, jnp.zeros(1, jnp.bool_)]).astype(jnp.int32)
        owner = jnp.where(state.house >= 0, state.house + 2, 0)
        ids = jnp.zeros(self._hw, jnp.int32).at[self._flat(state.pos)].set(
            jnp.arange(self.num_agents, dtype=jnp.int32) + 2)
        dyn = (res[jnp.asarray(self._stone_idx)] + 2 * res[jnp.asarray(self._wood_idx)]
               + 4 * (state.house >= 0) + 128 * owner + 1024 * ids)
        return jnp.asarray(self._static_code).at[:-1].add(dyn)

    @staticmethod
    def _decode(codes):
        """Codes `[...]` -> channels `[..., 9]` float32 (§6.1 order; ids stay j + 2), in one shift and
        mask (§11.4: the float tensor is most of the observation's cost)."""
        return ((codes[..., None] >> _CODE_SHIFT) & _CODE_MASK).astype(jnp.float32)

    def _tax_obs(self, state, params):
        """Fields shared by agents and the planner (§6.2 timing: rates refreshed at a period's first
        step, so agents act one step on stale rates)."""
        period = params.tax_period
        return jnp.concatenate([
            state.rates, (state.tax_pos == 1)[None].astype(jnp.float32),
            (state.tax_pos >= period)[None].astype(jnp.float32), sort_small(state.last_income) / 10.0])

    def action_mask(self, state, params, codes=None):
        """Valid actions `[N, 50]` bool of the state (§4). Build and moves are read from the agents'
        windows `codes` (`agent_codes(state)`, computed when not given): the centre cell and its
        four neighbours carry the in-world, water, source, house, owner and agent bits that
        `_can_build` and `_move_ok` test (tests/test_gtb.py checks the two agree)."""
        n = self.num_agents
        codes = self.agent_codes(state) if codes is None else codes
        inv = state.inv
        open_r = jnp.sum(state.book.active, axis=2).T < MAX_ORDERS  # [N, R]
        prices = jnp.arange(market.NUM_PRICES)
        buy = open_r[:, :, None] & (prices[None, None, :] <= inv[:, 0, None, None])
        sell = open_r[:, :, None] & (inv[:, 1:, None] >= 1) & jnp.ones(market.NUM_PRICES, bool)
        trade = jnp.stack([buy, sell], axis=2).reshape(n, market.NUM_TRADE_ACTIONS)
        side = 2 * VIEW + 1
        centre = VIEW * side + VIEW
        here = codes[:, centre]
        # no house (4), water (8) or source block (16, 32) on the agent's tile, one stone and wood
        build = ((here & 60) == 0) & (inv[:, 1] >= 1) & (inv[:, 2] >= 1)
        near = codes[:, centre + np.array([-1, 1, -side, side])]  # Left, Right, Up, Down
        owner, agent = (near >> 7) & 7, (near >> 10) & 7
        moves = ((near & 64) > 0) & ((near & 8) == 0) & (owner <= 1) & (agent == 0)
        return jnp.concatenate([jnp.ones((n, 1), bool), build[:, None], trade, moves], axis=1)

    def agent_codes(self, state):
        """Each agent's egocentric window of cell codes `[N, 121]` int32, its own id (house owner
        and agent) written as 1 (§6.1)."""
        n, h, w, side = self.num_agents, self.height, self.width, 2 * VIEW + 1
        # one dynamic_slice per agent of the padded code grid (padding = code 0 = outside): in
        # vmap on CPU ≈3x cheaper than gathering through a window table
        grid = jnp.pad(self._cell_codes(state)[:-1].reshape(h, w), VIEW)
        codes = jax.vmap(lambda p: jax.lax.dynamic_slice(grid, (p[0], p[1]), (side, side)))(
            state.pos).reshape(n, side * side)
        me = jnp.arange(n, dtype=jnp.int32)[:, None] + 2
        owner, agent = (codes >> 7) & 7, (codes >> 10) & 7
        owner, agent = jnp.where(owner == me, 1, owner), jnp.where(agent == me, 1, agent)
        return (codes & 127) | (owner << 7) | (agent << 10)

    def observation_parts(self, state, params, compact=False):
        """{"tensor" [N, 11, 11, 9] (or with `compact` the codes [N, 121]), "vector" [N, 136],
        "action_mask" [N, 50]} float32 (§6.1, §6.2, §4)."""
        n, side = self.num_agents, 2 * VIEW + 1
        codes = self.agent_codes(state)
        tensor = codes.astype(jnp.float32) if compact else self._decode(codes).reshape(
            n, side, side, NUM_CHANNELS)

        bids, asks = market.histograms(state.book)  # [R, N, P]
        full_b, full_a = bids.sum(1), asks.sum(1)
        mine = lambda x: x.transpose(1, 0, 2).reshape(n, -1)  # noqa: E731
        coin = state.inv[:, 0] + state.esc[:, 0]
        rates = state.rates
        bcast = lambda x: jnp.broadcast_to(x, (n, x.size))  # noqa: E731
        vector = jnp.concatenate([
            (state.pay / 10.0)[:, None], state.skill_obs[:, None],
            mine(full_a[:, None] - asks), mine(full_b[:, None] - bids),
            bcast(market.market_rate(state.price_hist)), mine(asks), mine(bids),
            bcast(0.01 * state.price_hist.sum(1).reshape(-1)), jnp.zeros((n, 1)),  # bonus_gather_prob
            bcast(self._tax_obs(state, params)),
            marginal_rate(coin - state.last_coin, rates, params.bracket_cutoffs)[:, None],
            bcast((state.tax_pos / params.tax_period)[None].astype(jnp.float32)),
            bcast((state.time / params.max_steps_in_episode)[None].astype(jnp.float32)),
            0.01 * state.inv, state.pos[:, ::-1] / jnp.array([self.width, self.height], jnp.float32),
        ], axis=1).astype(jnp.float32)
        return {"tensor": tensor, "vector": vector,
                "action_mask": self.action_mask(state, params, codes).astype(jnp.float32)}

    def get_obs(self, state, params):
        parts = self.observation_parts(state, params, compact=self.obs_format == "compact")
        if self.obs_format == "dict":
            return parts
        n = self.num_agents
        return jnp.concatenate([parts["tensor"].reshape(n, -1), parts["vector"], parts["action_mask"]],
                               axis=1)

    def designer_observation(self, state, params):
        """[F]'s planner observation (G4 "foundation", §6.3): {"tensor" [15, 15, 8] (channels 0-5
        of §6.1, house owner id + 2, agent id + 2), "vector" [118] (86 market/tax/time/own-inventory
        entries, then 8 per agent: current marginal rate, last income / 10, last marginal rate,
        inventory x 0.01, col / W, row / H)}. No skills, no utilities [T L1966]."""
        chans = self._decode(self._cell_codes(state)[:-1])  # [H*W, 9]; drop in-world (ch 6)
        tensor = jnp.delete(chans, 6, axis=-1, assume_unique_indices=True).reshape(
            self.height, self.width, NUM_CHANNELS - 1)
        bids, asks = market.histograms(state.book)
        coin = state.inv[:, 0] + state.esc[:, 0]
        per_agent = jnp.concatenate([
            marginal_rate(coin - state.last_coin, state.rates, params.bracket_cutoffs)[:, None],
            (state.last_income / 10.0)[:, None], state.last_mrate[:, None], 0.01 * state.inv,
            state.pos[:, ::-1] / jnp.array([self.width, self.height], jnp.float32)], axis=1)
        vector = jnp.concatenate([
            asks.sum(1).reshape(-1), bids.sum(1).reshape(-1), market.market_rate(state.price_hist),
            0.01 * state.price_hist.sum(1).reshape(-1), self._tax_obs(state, params),
            (state.tax_pos / params.tax_period)[None], (state.time / params.max_steps_in_episode)[None],
            jnp.zeros(3), per_agent.reshape(-1)]).astype(jnp.float32)
        return {"tensor": tensor, "vector": vector}
