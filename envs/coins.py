"""Coins games: D3C's 5x5 Coins (`Coins`, d3c.md §2.5) and the 3x3 LOLA coin game (`CoinGame`).

Two agents on an n x n grid (`grid_size`, a shape, so a constructor argument). Coins have a type
(colour): type k belongs to agent k. Stepping onto any coin pays `coin_reward` (+1); when an agent
picks up the *other* agent's coin, the owner gets `-penalty` (-2). Agents never block each other and
may share a cell.

`Coins` (D3C, Eccles et al. 2019; d3c.md §2.5 and A15 give the reconstruction used here):
- 500-step episodes; random distinct start cells and no coins;
- each step: 1. moves (walls stop a move), 2. pickups, 3. spawns: every empty cell (no coin and no
  agent) gets a coin with probability `spawn_prob` = 0.005, of a type uniform over the two;
- actions Discrete(5) {UP, DOWN, LEFT, RIGHT, STAY}.

`CoinGame` (LOLA, Foerster et al. 2018; rules from the authors' `lola/envs/coin_game.py` and
`lola_dice/envs/coin_game.py`, see the class docstring): 3x3 toroidal grid, exactly one coin at a
time, 150-step episodes.

Simultaneous pickup of one coin (`tie_break`, a constructor argument): "both" (default; d3c.md §2.5
and LOLA-DiCE's code): each agent gets +1 and the owner's -2 applies if the other agent is one of
them, so the owner nets -1; "random": a fair coin flip gives the coin to one of the two.

Observation of agent i (non-egocentric, the same frame for both, d3c.md §2.5): float32
`[n, n, 4]` binary planes (self, other agent, coins of i's type, coins of the other type), so each
agent sees itself in plane 0 and its own coins in plane 2.

`info` every step, float32 `[2]`: `coins_picked` (coins agent i picked up), `own_coins_picked` (of
its own type), `other_coins_picked` (of the other agent's type); D3C's own-coin rate is
`own_coins_picked / coins_picked` summed over an episode.

Implementation: cells are flat indices `row * n + col`; positions become one-hot `[2, n*n]` masks by
comparison, so moves, pickups, spawns and rendering are elementwise (no gather or scatter;
spec/performance-notes.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

UP, DOWN, LEFT, RIGHT, STAY = 0, 1, 2, 3, 4
ACTION_NAMES = ("up", "down", "left", "right", "stay")
TIE_BREAKS = ("both", "random")
_MAX_U32_F32 = 4294967040.0  # the largest float32 below 2^32


def _check_grid_size(grid_size, minimum: int) -> int:
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < minimum:
        raise ValueError(f"grid_size={grid_size!r} is invalid: must be an integer >= {minimum}")
    return int(grid_size)


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid; valid: {', '.join(map(repr, choices))}")
    return value


def _below(word, m):
    """A uniform int32 in [0, m) from a random uint32 `word` (traced `m` allowed). The modulo's bias
    is below m / 2^32, far under any statistical test; one word is half of `jax.random.randint`'s
    work, and the auto-reset runs `reset_env` at every step (spec/performance-notes.md)."""
    return (word % jnp.asarray(m, jnp.uint32)).astype(jnp.int32)


def _values(params, name):
    """`params.name` as a float64 numpy array, or None when traced (nothing to check then)."""
    try:
        return np.asarray(getattr(params, name), np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_finite(params, *names):
    for name in names:
        x = _values(params, name)
        if x is not None and not np.all(np.isfinite(x)):
            raise ValueError(f"{name}={getattr(params, name)!r} is invalid: must be a finite number")


class _TwoAgentGrid(Environment):
    """Shared moves, pickup accounting and rendering of the two coins games."""

    num_agents = 2

    def __init__(self, grid_size: int, tie_break: str, wrap: bool, num_actions: int, minimum: int):
        self.grid_size = _check_grid_size(grid_size, minimum)
        self.tie_break = _check_choice("tie_break", tie_break, TIE_BREAKS)
        if not isinstance(wrap, (bool, np.bool_)):
            raise ValueError(f"wrap={wrap!r} is invalid; valid: True, False")
        self.wrap = bool(wrap)
        self.num_actions = num_actions
        self.num_cells = self.grid_size**2

    def _move(self, pos, actions):
        """Flat cells `[2]` after the moves; off-grid moves stop at the wall (or wrap around)."""
        n = self.grid_size
        a = jnp.asarray(actions, jnp.int32)
        dr = (a == DOWN).astype(jnp.int32) - (a == UP).astype(jnp.int32)
        dc = (a == RIGHT).astype(jnp.int32) - (a == LEFT).astype(jnp.int32)
        r, c = pos // n + dr, pos % n + dc
        if self.wrap:
            r, c = r % n, c % n
        else:
            r, c = jnp.clip(r, 0, n - 1), jnp.clip(c, 0, n - 1)
        return (r * n + c).astype(jnp.int32)

    def _onehot(self, pos):
        return pos[:, None] == jnp.arange(self.num_cells, dtype=jnp.int32)  # [2, cells] bool

    def _resolve_ties(self, word, picked, pos):
        """`picked[i, k]`: agent i picked up a coin of type k. Under "random", when both agents
        stand on one picked coin, a fair coin flip (the low bit of the random uint32 `word`) keeps
        it for one of them."""
        if self.tie_break == "both":
            return picked
        tie = (pos[0] == pos[1]) & jnp.any(picked[0])
        winner = (word & 1).astype(jnp.int32)
        keep = jnp.logical_not(tie) | (jnp.arange(2) == winner)
        return picked & keep[:, None]

    @staticmethod
    def _rewards_and_info(picked, params):
        """Rewards `[2]` and the pickup counts from `picked[i, k]` (agent i, coin type k)."""
        p = picked.astype(jnp.float32)
        own = jnp.diagonal(p)  # [p00, p11]
        other = jnp.diagonal(p[:, ::-1])  # [p01, p10]
        lost = jnp.diagonal(p[::-1])  # [p10, p01]: the other agent took agent i's coin
        total = own + other
        reward = (jnp.asarray(params.coin_reward, jnp.float32) * total
                  - jnp.asarray(params.penalty, jnp.float32) * lost)
        info = {"coins_picked": total, "own_coins_picked": own, "other_coins_picked": other}
        return reward, info

    def _render(self, at, coins, shared=False):
        """`[2, n, n, 4]` float32 planes (self, other, own-type coins, other-type coins) from the
        agents' one-hot cells `at [2, cells]` and the coin masks `coins [2, cells]`."""
        at = at.astype(jnp.float32)
        coins = coins.astype(jnp.float32)
        planes = jnp.concatenate(
            [jnp.stack([at, at[::-1]], 1), jnp.stack([coins, coins[::-1]], 1)], axis=1
        )  # [2, 4, cells]: agent i gets (at[i], at[1-i], coins[i], coins[1-i])
        if shared:
            planes = jnp.broadcast_to(planes[:1], planes.shape)
        n = self.grid_size
        return jnp.swapaxes(planes, 1, 2).reshape(2, n, n, 4)

    def _random_distinct_cells(self, words):
        """Two distinct uniformly random cells from two random uint32 `words`."""
        first = _below(words[0], self.num_cells)
        offset = _below(words[1], self.num_cells - 1)
        return jnp.stack([first, (first + 1 + offset) % self.num_cells])

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (self.grid_size, self.grid_size, 4), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(self.num_actions)


# ---- D3C Coins ----------------------------------------------------------------------------------
@struct.dataclass
class EnvState:
    agent_pos: jax.Array  # [2] int32 flat cells
    coins: jax.Array  # [2, n*n] bool: coins[k] = coins of agent k's type (at most one per cell)
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 500  # d3c.md §2.5
    spawn_prob: float = 0.005  # per empty cell and step (d3c.md §2.5 recommendation)
    coin_reward: float = 1.0
    penalty: float = 2.0  # the owner gets -penalty when the other agent takes its coin


class Coins(_TwoAgentGrid):
    """D3C's Coins (d3c.md §2.5): see the module docstring. `wrap=True` makes the grid a torus."""

    def __init__(self, grid_size: int = 5, tie_break: str = "both", wrap: bool = False):
        super().__init__(grid_size, tie_break, wrap, num_actions=5, minimum=2)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        p = _values(params, "spawn_prob")
        if p is not None and not np.all((p >= 0) & (p <= 1)):
            raise ValueError(f"spawn_prob={params.spawn_prob!r} is invalid: must be in [0, 1]")
        _check_finite(params, "coin_reward", "penalty")

    def reset_env(self, key, params):
        # d3c.md §2.5: random start cells and no coins. Distinct cells, as in LOLA's coin game.
        state = EnvState(
            agent_pos=self._random_distinct_cells(jax.random.bits(key, (2,), jnp.uint32)),
            coins=jnp.zeros((2, self.num_cells), jnp.bool_),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        # one random uint32 per cell (spawns), plus one for the "random" tie-break
        words = jax.random.bits(key, (self.num_cells + (self.tie_break == "random"),), jnp.uint32)
        pos = self._move(state.agent_pos, actions)
        at = self._onehot(pos)
        picked = jnp.any(at[:, None, :] & state.coins[None, :, :], axis=-1)  # [agent, type]
        picked = self._resolve_ties(words[-1], picked, pos)
        reward, info = self._rewards_and_info(picked, params)
        occupied = at[0] | at[1]
        coins = state.coins & jnp.logical_not(occupied)  # every coin under an agent is taken
        # Spawns (d3c.md §2.5 recommendation): "empty" means no coin and no agent, so that coins are
        # only ever collected by stepping onto them. One uniform uint32 per cell decides both whether
        # a coin spawns (u < p 2^32) and its type (u < p 2^31: each type with probability p/2);
        # integer thresholds avoid converting 25 words to floats.
        p = jnp.asarray(params.spawn_prob, jnp.float32)
        threshold = jnp.minimum(p * 2.0**32, _MAX_U32_F32).astype(jnp.uint32)
        u = words[: self.num_cells]
        spawn = jnp.logical_not(coins[0] | coins[1] | occupied) & ((u < threshold) | (p >= 1.0))
        first_type = u < (threshold >> 1)
        coins = jnp.stack([coins[0] | (spawn & first_type),
                           coins[1] | (spawn & jnp.logical_not(first_type))])
        next_state = EnvState(agent_pos=pos, coins=coins, time=state.time + 1)
        obs = self._render(at, coins)
        return obs, next_state, reward, jnp.zeros((), jnp.bool_), info

    def get_obs(self, state, params=None):
        return self._render(self._onehot(state.agent_pos), state.coins)


# ---- LOLA coin game ---------------------------------------------------------------------------------
@struct.dataclass
class CoinGameState:
    agent_pos: jax.Array  # [2] int32 flat cells
    coin_pos: jax.Array  # int32 flat cell of the one coin
    coin_type: jax.Array  # int32: 0 = agent 0's colour ("red"), 1 = agent 1's ("blue")
    time: jax.Array


@struct.dataclass
class CoinGameParams:
    max_steps_in_episode: int = 150  # LOLA's coin game experiments (trace_length 150)
    coin_reward: float = 1.0
    penalty: float = 2.0


COIN_COLOURS = ("random", "alternate")


class CoinGame(_TwoAgentGrid):
    """The LOLA coin game (Foerster et al. 2018, from Lerer & Peysakhovich 2017).

    Rules, as the LOLA authors' code (`lola/envs/coin_game.py`) has them unless noted:
    - 3x3 grid whose edges wrap around (`wrap=True`); moves {UP, DOWN, LEFT, RIGHT}; the code has no
      "stay" action, `stay_action=True` adds one (as JaxMARL's version has);
    - reset: the agents on two distinct random cells, one coin of a random colour on a random cell
      that neither agent occupies;
    - exactly one coin at a time: once picked up, a new coin appears at once on a random cell that
      neither agent occupies (after their moves);
    - the new coin's colour: `coin_colour="random"` (default) draws it uniformly, as the LOLA paper's
      text says ("a new coin with random colour"); the code instead alternates the colour at every
      respawn (`coin_colour="alternate"`);
    - both agents on the coin: the original LOLA code pays only agent 0 (agent 0 has priority), the
      LOLA-DiCE code pays both; `tie_break="both"` (default) follows LOLA-DiCE and D3C's Coins,
      "random" flips a fair coin;
    - observations: the LOLA code gives both agents the same four planes (red agent, blue agent, red
      coin, blue coin), which is agent 0's view here; by default agent 1 gets the same frame with
      the roles swapped (self, other, own coin, other coin), as in `Coins`; `shared_obs=True` gives
      both agents agent 0's planes, exactly as the code does.
    """

    def __init__(self, grid_size: int = 3, tie_break: str = "both", wrap: bool = True,
                 coin_colour: str = "random", stay_action: bool = False, shared_obs: bool = False):
        # grid_size >= 2: a cell must stay free of both agents for the coin
        super().__init__(grid_size, tie_break, wrap, num_actions=5 if stay_action else 4, minimum=2)
        self.coin_colour = _check_choice("coin_colour", coin_colour, COIN_COLOURS)
        self.stay_action = bool(stay_action)
        self.shared_obs = bool(shared_obs)

    @property
    def default_params(self) -> CoinGameParams:
        return CoinGameParams()

    def validate_params(self, params: CoinGameParams) -> None:
        super().validate_params(params)
        _check_finite(params, "coin_reward", "penalty")

    def _free_cell(self, word, pos):
        """A uniformly random cell occupied by neither agent (from a random uint32 `word`): a rank
        among the free cells, skipping over the (one or two) occupied ones."""
        a, b = jnp.minimum(pos[0], pos[1]), jnp.maximum(pos[0], pos[1])
        n_free = self.num_cells - 1 - (a != b).astype(jnp.int32)
        r = _below(word, n_free)
        cell = r + (r >= a).astype(jnp.int32)
        cell = cell + ((cell >= b) & (a != b)).astype(jnp.int32)
        return cell.astype(jnp.int32)

    def reset_env(self, key, params):
        words = jax.random.bits(key, (4,), jnp.uint32)
        pos = self._random_distinct_cells(words[:2])
        state = CoinGameState(
            agent_pos=pos,
            coin_pos=self._free_cell(words[2], pos),
            coin_type=(words[3] & 1).astype(jnp.int32),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        # word 0: the new coin's cell; word 1: its colour (bit 0) and the tie-break (bit 1)
        words = jax.random.bits(key, (2,), jnp.uint32)
        pos = self._move(state.agent_pos, actions)
        on_coin = pos == state.coin_pos  # [2]
        of_type = jnp.arange(2) == state.coin_type  # [2]
        picked = self._resolve_ties(words[1] >> 1, on_coin[:, None] & of_type[None, :], pos)
        reward, info = self._rewards_and_info(picked, params)
        taken = jnp.any(on_coin)
        if self.coin_colour == "random":
            new_type = (words[1] & 1).astype(jnp.int32)
        else:
            new_type = 1 - state.coin_type
        next_state = CoinGameState(
            agent_pos=pos,
            coin_pos=jnp.where(taken, self._free_cell(words[0], pos), state.coin_pos),
            coin_type=jnp.where(taken, new_type, state.coin_type),
            time=state.time + 1,
        )
        return self.get_obs(next_state, params), next_state, reward, jnp.zeros((), jnp.bool_), info

    def get_obs(self, state, params=None):
        at = self._onehot(state.agent_pos)
        coin_at = jnp.arange(self.num_cells, dtype=jnp.int32) == state.coin_pos
        coins = coin_at[None, :] & (jnp.arange(2) == state.coin_type)[:, None]
        return self._render(at, coins, shared=self.shared_obs)
