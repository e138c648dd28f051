"""Cleanup, the sequential social dilemma of LIO and MetaGrad (thesis §5.4, Table B.2, A10, A11).

Agents collect apples (+1 each) in the apple field on the right. Apples only grow while the river on
the left is clean enough: the apple spawn rate falls linearly to zero as the waste density reaches
`threshold_depletion`, and while the density is below it waste keeps reappearing. An agent cleans by
firing a beam (fixed orientation UP, length 5, width 3), which it can only do standing at the river.
Each episode starts with the waste density at or above the depletion threshold and no apples, so
nobody eats unless somebody cleans.

Step order (thesis §5.4, [CODE `map_env.step`]):
1. moves (walls block; conflicts over a target cell go to a uniformly random priority, losers stay;
   a move into the cell of an agent that does not move out is blocked; no swaps),
2. consumption (+1 for an agent standing on an apple, which disappears),
3. cleaning beams of the agents that chose FIRE,
4. spawning, with the probabilities computed from the waste density *after* this step's cleaning,
5. observations and rewards (apples only; no cleaning cost). Only truncation ends an episode.

Implementation: grids are flattened to `H*W` cells plus one sentinel cell (index `H*W`) that stands
for "outside the map" (black, never waste, never occupied). Beams use a precomputed
`[cells, 3, 5]` table of the cells each beam can reach before a wall; rendering gathers integer cell
codes through a precomputed `[cells, 2v+1, 2v+1]` window table and applies the colour palette last
(spec/performance-notes.md, Cleanup). Loops over agents are unrolled at trace time (N <= 3).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

# ---- actions (thesis §5.4 table; orientation is always UP, so moves are absolute) ----------------
LEFT, RIGHT, UP, DOWN, STAY, FIRE = 0, 1, 2, 3, 4, 5
NUM_ACTIONS = 6
_DELTAS = np.array([[0, -1], [0, 1], [-1, 0], [1, 0], [0, 0], [0, 0]], np.int32)  # (drow, dcol)

# ---- maps ([CODE `env/maps.py`], thesis §5.4). '@' wall, 'H' waste at start (potential waste),
# 'R' river (potential waste), 'P' agent spawn, 'B' apple spawn, ' ' empty ----------------------
MAPS = {
    "7x7": (  # "cleanup_small_sym"
        "@@@@@@@",
        "@H  PB@",
        "@H   B@",
        "@    B@",
        "@    B@",
        "@ P  B@",
        "@@@@@@@",
    ),
    "10x10": (  # "cleanup_10x10_sym"
        "@@@@@@@@@@",
        "@HH   P B@",
        "@RR    BB@",
        "@HH     B@",
        "@RR    BB@",
        "@HH P   B@",
        "@RR    BB@",
        "@HH     B@",
        "@RRP   BB@",
        "@@@@@@@@@@",
    ),
}

# Table B.2 [T L1731-1739] per map: (appleRespawnProbability, thresholdDepletion,
# thresholdRestoration, wasteSpawnProbability), and view_size.
_TABLE_B2 = {"7x7": (0.5, 0.6, 0.0, 0.5), "10x10": (0.3, 0.4, 0.0, 0.5)}
_VIEW_SIZE = {"7x7": 4, "10x10": 7}
# Global (MetaGrad ID) view: the same renderer centred at a fixed cell. 7x7: planner_ref_point
# (3, 3) with view 4, as the authors' code (9x9, covers rows/cols -1..7). 10x10 is not in the spec:
# we centre at (4, 4) with view 5, an 11x11 window over rows/cols -1..9, the smallest square
# window of this renderer that covers every cell of the 10x10 map.
_GLOBAL_VIEW = {"7x7": ((3, 3), 4), "10x10": ((4, 4), 5)}

BEAM_LENGTH = 5  # ACTIONS['FIRE'] = 5 [T L1729]

# ---- rendering: integer cell codes, palette applied last ---------------------------------------
EMPTY, WALL, APPLE, WASTE, RIVER, BEAM, AGENT = 0, 1, 2, 3, 4, 5, 6  # agent k has code AGENT + k
COLOURS = np.array(
    [
        (0, 0, 0),  # empty (and outside the map)
        (180, 180, 180),  # wall
        (0, 255, 0),  # apple
        (113, 75, 24),  # waste 'H'
        (99, 156, 194),  # river 'R' / stream 'S'
        (100, 255, 255),  # cleaning beam
        (159, 67, 255),  # agent 1 (index 0)
        (2, 81, 154),  # agent 2 (index 1)
        (204, 0, 204),  # agent 3 (index 2)
    ],
    np.float32,
)
PALETTE = COLOURS / 256.0  # RGB divided by 256 [CODE]


@struct.dataclass
class EnvState:
    agent_pos: jax.Array  # [N, 2] int32 (row, col)
    waste: jax.Array  # [H, W] bool: waste present (only on potential-waste cells)
    apples: jax.Array  # [H, W] bool: apple present (only on apple-spawn cells)
    beam: jax.Array  # [H, W] bool: cells hit by this step's cleaning beams (rendering only)
    time: jax.Array  # int32


@struct.dataclass
class EnvParams:
    # defaults are the 7x7 row of Table B.2; `Cleanup.default_params` gives the map's own row
    apple_respawn_prob: float = 0.5
    threshold_depletion: float = 0.6
    threshold_restoration: float = 0.0
    waste_spawn_prob: float = 0.5
    max_steps_in_episode: int = 50


def _parse(rows):
    if len({len(r) for r in rows}) != 1:
        raise ValueError("map rows must all have the same length")
    return np.array([list(r) for r in rows])


class Cleanup(Environment):
    """Cleanup on the "7x7" or "10x10" map (thesis §5.4) with `num_agents` agents (default 2, A10).

    Observation of each agent: egocentric `(2v+1, 2v+1, 3)` float32 RGB / 256 (`v = view_size`,
    4 on 7x7 and 7 on 10x10, so the whole map is always visible), cells outside the map black,
    agents drawn over their cell and this step's beam cells over agents. `global_obs` renders the
    whole map for a central designer. Actions: Discrete(6) (`LEFT, RIGHT, UP, DOWN, STAY, FIRE`).
    Reward: +1 per apple collected.

    `info` (every step): `apples` float32 [N] apples collected, `cleaned` float32 [N] waste cells
    cleaned, `fired` bool [N], `waste_density` float32 (after this step's spawns), `apple_count`
    float32 (apples on the map after spawning).
    """

    def __init__(self, map_name: str = "7x7", num_agents: int = 2, view_size: int | None = None):
        if map_name not in MAPS:
            raise ValueError(f"map_name={map_name!r} is invalid; valid: {', '.join(map(repr, MAPS))}")
        grid = _parse(MAPS[map_name])
        self.map_name = map_name
        self.height, self.width = h, w = grid.shape
        spawns = [tuple(int(x) for x in p) for p in np.argwhere(grid == "P")]  # row-major
        if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)) or not (
            1 <= num_agents <= len(spawns)
        ):
            raise ValueError(
                f"num_agents={num_agents!r} is invalid for Cleanup map {map_name!r}: it has "
                f"{len(spawns)} spawn points, so num_agents must be one of "
                f"{list(range(1, len(spawns) + 1))}"
            )
        self.num_agents = n = int(num_agents)
        view_size = _VIEW_SIZE[map_name] if view_size is None else view_size
        if isinstance(view_size, bool) or not isinstance(view_size, (int, np.integer)) or view_size < 0:
            raise ValueError(f"view_size={view_size!r} is invalid: must be an integer >= 0")
        self.view_size = v = int(view_size)
        self.obs_shape = (2 * v + 1, 2 * v + 1, 3)

        hw = h * w
        self._hw = hw
        flat = grid.reshape(-1)
        wall = flat == "@"
        potential = (flat == "H") | (flat == "R")
        self._wall = np.concatenate([wall, [True]])  # the sentinel behaves like a wall
        self._potential_idx = np.flatnonzero(potential).astype(np.int32)
        self._apple_idx = np.flatnonzero(flat == "B").astype(np.int32)
        self.num_potential_waste = int(potential.sum())
        # deterministic spawns (shuffle_spawn=False): agent i, in index order, takes the last free
        # spawn point in row-major order [CODE]
        self.spawn_points = tuple(reversed(spawns))[:n]
        self._spawn_pos = np.array(self.spawn_points, np.int32).reshape(n, 2)
        self._init_waste = (grid == "H")
        # base codes of the static map (river under the waste; sentinel = EMPTY, i.e. black)
        base = np.where(wall, WALL, np.where(potential, RIVER, EMPTY)).astype(np.int32)
        self._base_codes = base
        self._palette = PALETTE

        # beams from each cell: [hw, 3, 5] cell indices, sentinel hw after the first wall/edge.
        # centre (r-1..r-5, c); sides (r..r-4, c-1) and (r..r-4, c+1): the sides start level with
        # the agent [CODE `update_map_fire`, beam_width=3, orientation UP].
        beam = np.full((hw, 3, BEAM_LENGTH), hw, np.int32)
        for r in range(h):
            for c in range(w):
                for b, (r0, c0) in enumerate([(r - 1, c), (r, c - 1), (r, c + 1)]):
                    for k in range(BEAM_LENGTH):
                        rr = r0 - k
                        if not (0 <= rr < h and 0 <= c0 < w) or grid[rr, c0] == "@":
                            break  # stops before a wall or the map edge
                        beam[r * w + c, b, k] = rr * w + c0
        self._beam_idx = beam

        self._window = self._window_table(v)  # [hw, S, S]
        (gr, gc), gv = _GLOBAL_VIEW[map_name]
        self.global_view_size = gv
        self._global_window = self._window_table(gv)[gr * w + gc]  # [Sg, Sg]
        self.global_obs_shape = (2 * gv + 1, 2 * gv + 1, 3)

    def _window_table(self, v):
        h, w = self.height, self.width
        s = 2 * v + 1
        rows = np.arange(h)[:, None, None, None] - v + np.arange(s)[None, None, :, None]
        cols = np.arange(w)[None, :, None, None] - v + np.arange(s)[None, None, None, :]
        rows, cols = np.broadcast_arrays(rows, cols)  # [h, w, s, s]
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        table = np.where(inside, rows * w + cols, h * w).astype(np.int32)
        return table.reshape(h * w, s, s)

    # ---- parameters and spaces -----------------------------------------------------------------
    @property
    def default_params(self) -> EnvParams:
        apple, depletion, restoration, waste = _TABLE_B2[self.map_name]
        return EnvParams(
            apple_respawn_prob=apple,
            threshold_depletion=depletion,
            threshold_restoration=restoration,
            waste_spawn_prob=waste,
            max_steps_in_episode=50,
        )

    def validate_params(self, params: EnvParams) -> None:
        def values(name):
            try:
                return np.asarray(getattr(params, name), np.float64)
            except jax.errors.TracerArrayConversionError:  # traced: nothing to check here
                return None

        for name in ("apple_respawn_prob", "waste_spawn_prob"):
            x = values(name)
            if x is not None and not np.all((x >= 0) & (x <= 1)):
                raise ValueError(f"{name}={getattr(params, name)} is invalid: must be in [0, 1]")
        dep, res = values("threshold_depletion"), values("threshold_restoration")
        if dep is not None and res is not None and not np.all((0 <= res) & (res < dep) & (dep <= 1)):
            raise ValueError(
                f"threshold_restoration={params.threshold_restoration} and threshold_depletion="
                f"{params.threshold_depletion} are invalid: need 0 <= threshold_restoration < "
                f"threshold_depletion <= 1"
            )
        steps = values("max_steps_in_episode")
        if steps is not None and not np.all(steps >= 1):
            raise ValueError(f"max_steps_in_episode={params.max_steps_in_episode} must be >= 1")

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, self.obs_shape, jnp.float32)

    def global_observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, self.global_obs_shape, jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)

    def incentive_action_features(self, actions):
        """One-hot (not-fired, fired) of `actions == FIRE`: float32 `[..., N, 2]` (thesis §2.10:
        LIO's incentive functions condition on who fired the cleaning beam)."""
        fired = (jnp.asarray(actions) == FIRE).astype(jnp.int32)
        return jax.nn.one_hot(fired, 2, dtype=jnp.float32)

    # ---- transitions -------------------------------------------------------------------------------
    def reset_env(self, key, params):
        h, w = self.height, self.width
        state = EnvState(
            agent_pos=jnp.asarray(self._spawn_pos),
            waste=jnp.asarray(self._init_waste),
            apples=jnp.zeros((h, w), jnp.bool_),
            beam=jnp.zeros((h, w), jnp.bool_),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def _flat(self, pos):
        return pos[..., 0] * self.width + pos[..., 1]

    def _move(self, key, pos, actions):
        """Resolve simultaneous moves: returns new flat positions `[N]`, never two on one cell."""
        n = self.num_agents
        pos_flat = self._flat(pos)
        target = pos + jnp.asarray(_DELTAS)[actions]
        inside = jnp.all((target >= 0) & (target < jnp.array([self.height, self.width])), axis=-1)
        tgt = jnp.where(inside, self._flat(target), self._hw)
        tgt = jnp.where(jnp.asarray(self._wall)[tgt], pos_flat, tgt)  # walls (and edges) block
        if n == 1:
            return tgt
        wants = tgt != pos_flat
        # uniform random priority over agents (a random permutation of ranks); among the agents
        # that want the same cell only the highest-ranked may take it, the others stay. If the
        # winner is then blocked its target stays occupied, so the losers staying is consistent.
        rank = jax.random.permutation(key, n)
        beaten = (tgt[:, None] == tgt[None, :]) & wants[None, :] & (rank[None, :] > rank[:, None])
        moving = wants & ~jnp.any(beaten, axis=1)
        # occ[i, j]: i's target is j's current cell (j != i, as a mover's target is not its cell)
        occ = (tgt[:, None] == pos_flat[None, :]) & ~jnp.eye(n, dtype=jnp.bool_)
        swap = occ & (tgt[None, :] == pos_flat[:, None])  # i and j want each other's cells
        # blocked if the occupant of the target stays or is the swap partner; blocking propagates
        # down chains of at most n-1 agents, so n Jacobi sweeps reach the fixed point. (Rotations
        # of >= 3 agents would move; on a grid a cycle has even length, so they need >= 4 agents,
        # more than any map's spawn points.)
        for _ in range(n):
            blocked = jnp.any(occ & (~moving[None, :] | swap), axis=1)
            moving = moving & ~blocked
        return jnp.where(moving, tgt, pos_flat)

    def step_env(self, key, state, actions, params):
        n, hw = self.num_agents, self._hw
        key_move, key_fire, key_apple, key_waste = jax.random.split(key, 4)
        actions = jnp.asarray(actions, jnp.int32)

        # 1. movement
        pos_flat = self._move(key_move, state.agent_pos, actions)
        agent_pos = jnp.stack([pos_flat // self.width, pos_flat % self.width], axis=-1)
        agent_pos = agent_pos.astype(jnp.int32)
        occupied = jnp.zeros(hw + 1, jnp.bool_).at[pos_flat].set(True)

        # 2. consumption
        apples = state.apples.reshape(-1)
        eaten = apples[pos_flat]  # [N]; agents are on distinct cells
        apples = apples.at[pos_flat].set(False)

        # 3. cleaning beams. Agents fire one after another, each on the waste left by the previous
        # ones (SSD applies each agent's beam to the map in turn). The spec does not fix the order;
        # a uniformly random one keeps the agents symmetric. It matters only when beams overlap:
        # it decides who is credited, and a beam that finds its first waste cell already cleaned
        # travels on and may clean one further up.
        fired = actions == FIRE
        waste = jnp.concatenate([state.waste.reshape(-1), jnp.zeros(1, jnp.bool_)])
        beam = jnp.zeros(hw + 1, jnp.bool_)
        cleaned = jnp.zeros(n, jnp.float32)
        order = jax.random.permutation(key_fire, n) if n > 1 else jnp.zeros(1, jnp.int32)
        beam_idx = jnp.asarray(self._beam_idx)
        for slot in range(n):
            a = order[slot]
            idx = beam_idx[pos_flat[a]]  # [3, 5], sentinel hw past a wall or the edge
            on_waste = waste[idx]
            stop = on_waste | occupied[idx]  # stops AT the first waste or agent cell (inclusive)
            stops_before = jnp.cumsum(stop, axis=-1) - stop
            hit = (idx != hw) & (stops_before == 0) & fired[a]
            clean = hit & on_waste  # at most one waste cell per beam; it becomes river
            waste = waste.at[jnp.where(clean, idx, hw)].set(False)
            beam = beam.at[jnp.where(hit, idx, hw)].set(True)
            cleaned = cleaned.at[a].add(jnp.sum(clean, dtype=jnp.float32))
        waste = waste[:hw]
        beam = beam[:hw]

        # 4. spawning, with probabilities from the waste density after cleaning (compute_probabilities)
        pot = jnp.asarray(self._potential_idx)
        density = jnp.sum(waste, dtype=jnp.float32) / self.num_potential_waste
        dep = jnp.asarray(params.threshold_depletion, jnp.float32)
        res = jnp.asarray(params.threshold_restoration, jnp.float32)
        p_apple_max = jnp.asarray(params.apple_respawn_prob, jnp.float32)
        depleted = density >= dep
        slope = 1.0 - (density - res) / jnp.where(dep > res, dep - res, 1.0)
        p_apple = jnp.where(density <= res, p_apple_max, slope * p_apple_max)
        p_apple = jnp.where(depleted, 0.0, p_apple)
        p_waste = jnp.where(depleted, 0.0, jnp.asarray(params.waste_spawn_prob, jnp.float32))
        # apples: every apple cell without an agent or an apple, independently
        b = jnp.asarray(self._apple_idx)
        u_apple = jax.random.uniform(key_apple, b.shape)
        grow = ~apples[b] & ~occupied[b] & (u_apple < p_apple)
        apples = apples.at[b].set(apples[b] | grow)
        # waste (A11): the authors shuffle the potential-waste cells and, at each non-waste cell in
        # turn, spawn with probability p_waste and stop at the first success. Here the shuffle is
        # the order of iid uniforms `rank` (a uniformly random permutation), every cell gets its
        # Bernoulli draw, and the first success in that order is the argmax of `rank` over the
        # successes: the same distribution, P(spawn) = 1 - (1 - p_waste)^k, at most one cell.
        u_waste, rank = jax.random.uniform(key_waste, (2, pot.shape[0]))
        success = ~waste[pot] & (u_waste < p_waste)
        first = jnp.argmax(jnp.where(success, rank, -1.0))
        waste = waste.at[pot[first]].set(waste[pot[first]] | jnp.any(success))

        h, w = self.height, self.width
        next_state = EnvState(
            agent_pos=agent_pos,
            waste=waste.reshape(h, w),
            apples=apples.reshape(h, w),
            beam=beam.reshape(h, w),
            time=state.time + 1,
        )
        reward = eaten.astype(jnp.float32)  # +1 per apple; no cleaning cost
        info = {
            "apples": reward,
            "cleaned": cleaned,
            "fired": fired,
            "waste_density": jnp.sum(waste, dtype=jnp.float32) / self.num_potential_waste,
            "apple_count": jnp.sum(apples, dtype=jnp.float32),
        }
        terminated = jnp.zeros((), jnp.bool_)  # only truncation at max_steps_in_episode
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    # ---- rendering ---------------------------------------------------------------------------------
    def _codes(self, state):
        """Integer cell codes `[H*W + 1]` (last = outside the map): map, waste, apples, agents
        over their cells, beams over agents."""
        codes = jnp.asarray(self._base_codes)
        codes = jnp.where(state.waste.reshape(-1), WASTE, codes)
        codes = jnp.where(state.apples.reshape(-1), APPLE, codes)
        codes = codes.at[self._flat(state.agent_pos)].set(AGENT + jnp.arange(self.num_agents))
        codes = jnp.where(state.beam.reshape(-1), BEAM, codes)
        return jnp.concatenate([codes, jnp.full(1, EMPTY, codes.dtype)])

    def get_obs(self, state, params=None):
        """Egocentric RGB views `[N, 2v+1, 2v+1, 3]`, float32 in [0, 1)."""
        window = jnp.asarray(self._window)[self._flat(state.agent_pos)]  # [N, S, S]
        return jnp.asarray(self._palette)[self._codes(state)[window]]

    def global_obs(self, state, params=None):
        """Whole-map RGB view `[S, S, 3]` (the MetaGrad designer's view; see `_GLOBAL_VIEW`)."""
        return jnp.asarray(self._palette)[self._codes(state)[jnp.asarray(self._global_window)]]
