"""HarvestPatch, the common-pool resource game of McKee et al. 2020 used by D3C (d3c.md §2.8, A16).

Agents walk a gridworld and eat apples (+1 each). Apples grow only in predefined *patches*, and an
eaten apple regrows with a probability that rises with the number of apples still standing near it,
so a patch harvested bare can never regrow: it is extinct. Agents can fire a tagging beam that
removes the agent it hits from the game for a while.

Sources. D3C (arXiv 2010.00575, App. F.4) says only that "apples spawn in predefined patches
throughout a map" and that agents "must abstain from over-farming patches to the point of
extinction". McKee et al. 2020 ("Social diversity
and social preferences in mixed-motive reinforcement learning", AAMAS 2020, arXiv 2002.02325) could
not be retrieved beyond its abstract, so every number below comes from the public descendants of the
same DeepMind Harvest family, or is ours:

Found (rules read as specifications; no code copied):
- [MP] Melting Pot, Commons Harvest (github.com/google-deepmind/meltingpot,
  `meltingpot/configs/substrates/commons_harvest__open.py` and the `DensityRegrow` component in
  `meltingpot/lua/levels/commons_harvest/components.lua`), which credits the mechanism to Janssen et
  al. 2010 and Perolat et al. 2017:
  - regrowth: an empty apple cell regrows each step with probability `regrowth_probs[min(c, L-1)]`,
    where `c` is the number of apples within Euclidean (L2) distance `regrowth_radius` of the cell,
    the cell itself excluded, and `L = len(regrowth_probs)`. Defaults: radius 2.0 and probabilities
    (0, 0.0025, 0.005, 0.025), so a cell with no apple nearby never regrows. ([SSD] has the same law
    with a 5x5 square window and (0, 0.005, 0.02, 0.05): `regrowth_radius=8 ** 0.5` gives exactly
    that window);
  - apple reward +1; every apple cell starts with an apple;
  - patch shape: a diamond of 13 cells (rows of 1, 3, 5, 3, 1), as on the Commons Harvest map;
  - actions, in Melting Pot's order: NOOP, FORWARD, BACKWARD, STEP_LEFT, STEP_RIGHT, TURN_LEFT,
    TURN_RIGHT, FIRE (here TAG). Moves are relative to the agent's orientation;
  - a zapped agent is removed and respawns at a spawn point after a delay (`framesTillRespawn`);
  - [MP] also differs from the choices below: episodes end stochastically after at least 1000
    steps, views are 11x11 and off-centre (9 cells ahead, 1 behind), zaps have a cooldown, and an
    apple may regrow under an agent (`canRegrowIfOccupied` defaults to true).
- [SSD] sequential_social_dilemma_games (github.com/eugenevinitsky/sequential_social_dilemma_games,
  `social_dilemmas/envs/harvest.py`, `agent.py`, `map_env.py`), the public Harvest of Hughes et al.
  2018:
  - egocentric 15x15 RGB view (`HARVEST_VIEW_SIZE = 7`);
  - beam: three parallel rays of length 5 in the facing direction, the centre one starting in front
    of the agent, the side ones level with it, each stopping before a wall;
  - moves into a contested cell go to a uniformly random agent, and two agents cannot swap cells;
    no regrowth under an agent;
  - spawning at a uniformly random unoccupied spawn point with a uniformly random orientation; the
    colour palette (black floor, grey walls, green apples, yellow beam, agent colours in index
    order). [SSD]'s view is not rotated.

Reconstructed (ours; each is a field of `EnvParams` or a constructor argument unless noted):
- the map (`MAP`): six 13-cell diamond patches in two rows of three on a 16x23 map (walls included),
  with nine spawn points in the corridors between them. Patches are at least 3 cells apart, so
  with radius 2 no regrowth neighbourhood reaches another patch and a bare patch is extinct;
- `num_agents = 5` (constructor, 1..9) and episodes of 1000 steps (`max_steps_in_episode`), as
  d3c.md §2.6 has for D3C's Cleanup (Hughes et al. 2018);
- tagging: `tag_timeout = 25` steps out of play (Perolat et al. 2017's time-out, as we recall it;
  not verified here; [MP]'s Commons Harvest Open uses 4); no reward for firing or being hit
  (`tag_cost = tag_penalty = 0`, as [MP]'s `rewardForZapping` / `penaltyForBeingZapped`; set them to
  1 and 50 for Hughes et al.'s punishment beam); beam length `beam_length = 5` from [SSD] ([MP] uses
  3); no cooldown. Each ray stops at the first agent in play it reaches (that agent is hit), like the
  beams of envs/cleanup.py;
- the view is rotated so that the agent faces up (as in [MP]; [SSD] does not rotate), centred, of
  side `2 * view_size + 1` (constructor, default 7: 15x15). Cells outside the map are black.
  Observations are float32 RGB / 255 in [0, 1];
- a tagged agent keeps its last position and orientation for its own view, is not drawn, does not
  act, eat, block or get hit; after `tag_timeout` steps it reappears at a uniformly random spawn
  point free of agents, with a random orientation;
- `initial_apple_prob = 1.0`: each apple cell starts with an apple with this probability;
- "extinct" (in `info`): the patch has no apple and no apple lies within `regrowth_radius` of any of
  its cells while `regrowth_probs[0] == 0`, i.e. it can never regrow. On the default map and radius
  this is "the patch is bare".

Step order: 1. turns; 2. moves (walls block; a contested target goes to the agent with the highest
uniformly random priority, the others stay; a move into the cell of an agent that does not leave it
is blocked, so two agents never swap; rotations of 4 or more agents around a loop all move);
3. eating (+`apple_reward` for an agent on an apple, which disappears); 4. beams of the agents in
play that chose TAG, all simultaneous, from the positions after the moves; agents hit leave play;
5. regrowth, with neighbour counts from the apples after eating, never on a cell holding an agent in
play; 6. timers of removed agents count down and those at zero respawn. Only truncation ends an
episode.

`info` every step: `apples_eaten` float32 [N], `fired` bool [N], `tagged` bool [N] (hit this step),
`in_play` bool [N] (after the step), `patch_apples` float32 [P] (apples per patch after regrowth),
`apple_count` float32, `extinct` bool [P], `num_extinct` float32.

Implementation: cells are flat indices `row * W + col` plus a sentinel `H * W` (outside the map).
Precomputed tables: moves `[cells, 5]`, beams `[4, cells, 3, L]`, rotated view windows
`[4 * cells, S, S]` and the squared distances between apple cells `[K, K]`, so a step is gathers,
one `[K] x [K, K]` product for the neighbour counts, and elementwise work; `regrowth_radius`,
`beam_length` and every other number stay runtime parameters that can be vmapped over. Loops over
agents (at most 9) are unrolled at trace time. Rendering gathers integer cell codes through the
window table and applies the palette last (spec/performance-notes.md, Cleanup).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.cleanup import _parse
from envs.coins import _values
from jaxmcg import spaces
from jaxmcg.environment import Environment

# ---- actions ([MP] ACTION_SET order) and orientations --------------------------------------------
NOOP, FORWARD, BACKWARD, STEP_LEFT, STEP_RIGHT, TURN_LEFT, TURN_RIGHT, TAG = range(8)
NUM_ACTIONS = 8
ACTION_NAMES = ("noop", "forward", "backward", "step_left", "step_right", "turn_left", "turn_right",
                "tag")
NORTH, EAST, SOUTH, WEST = range(4)  # orientation = facing direction; turning right adds 1
_DIRS = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], np.int32)  # (drow, dcol) of N, E, S, W
_STAY_DIR = 4

# ---- map (ours, see the module docstring): '@' wall, 'A' apple cell, 'P' spawn point, ' ' floor ----
MAP = (
    "@@@@@@@@@@@@@@@@@@@@@@@",
    "@                     @",
    "@   A      A      A   @",
    "@  AAA    AAA    AAA  @",
    "@ AAAAA  AAAAA  AAAAA @",
    "@  AAA    AAA    AAA  @",
    "@   A      A      A   @",
    "@P    P    P    P    P@",
    "@  P    P     P    P  @",
    "@   A      A      A   @",
    "@  AAA    AAA    AAA  @",
    "@ AAAAA  AAAAA  AAAAA @",
    "@  AAA    AAA    AAA  @",
    "@   A      A      A   @",
    "@                     @",
    "@@@@@@@@@@@@@@@@@@@@@@@",
)

# ---- rendering: integer cell codes, palette applied last ([SSD] colours) -------------------------
EMPTY, WALL, APPLE, BEAM, AGENT = 0, 1, 2, 3, 4  # agent k has code AGENT + k
COLOURS = np.array(
    [
        (0, 0, 0),  # floor, and outside the map
        (180, 180, 180),  # wall
        (0, 255, 0),  # apple
        (255, 255, 0),  # tagging beam
        (159, 67, 255),  # agent 0: purple
        (2, 81, 154),  # agent 1: blue
        (204, 0, 204),  # agent 2: magenta
        (216, 30, 54),  # agent 3: red
        (254, 151, 0),  # agent 4: orange
        (100, 255, 255),  # agent 5: cyan
        (99, 99, 255),  # agent 6: lavender
        (250, 204, 255),  # agent 7: pink
        (238, 223, 16),  # agent 8: yellow
    ],
    np.float32,
)
PALETTE = COLOURS / 255.0
MAX_AGENTS = len(COLOURS) - AGENT


@struct.dataclass
class EnvState:
    agent_pos: jax.Array  # [N, 2] int32 (row, col); a removed agent keeps its last cell
    orientation: jax.Array  # [N] int32, NORTH..WEST
    tag_timer: jax.Array  # [N] int32: steps left out of play; 0 = in play
    apples: jax.Array  # [H, W] bool (only on apple cells)
    beam: jax.Array  # [H, W] bool: cells hit by this step's beams (rendering only)
    time: jax.Array  # int32


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 1000
    apple_reward: float = 1.0
    regrowth_radius: float = 2.0  # [MP] APPLE_RESPAWN_RADIUS
    regrowth_probs: tuple = (0.0, 0.0025, 0.005, 0.025)  # [MP] REGROWTH_PROBABILITIES
    initial_apple_prob: float = 1.0
    beam_length: int = 5  # [SSD]
    tag_timeout: int = 25
    tag_cost: float = 0.0  # reward -tag_cost for firing
    tag_penalty: float = 0.0  # reward -tag_penalty for being hit


def _patches(apple_mask):
    """Patch id per apple cell: 4-connected components, numbered in row-major order of their
    first cell."""
    h, w = apple_mask.shape
    label = np.full((h, w), -1, np.int64)
    count = 0
    for r0, c0 in zip(*np.nonzero(apple_mask)):
        if label[r0, c0] >= 0:
            continue
        stack = [(r0, c0)]
        label[r0, c0] = count
        while stack:
            r, c = stack.pop()
            for dr, dc in _DIRS:
                rr, cc = r + dr, c + dc
                if 0 <= rr < h and 0 <= cc < w and apple_mask[rr, cc] and label[rr, cc] < 0:
                    label[rr, cc] = count
                    stack.append((rr, cc))
        count += 1
    return label, count


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class HarvestPatch(Environment):
    """HarvestPatch with `num_agents` agents (default 5, at most 9) on `MAP` (see the module
    docstring for the rules and where each comes from).

    Observation of each agent: float32 `(2v+1, 2v+1, 3)` RGB / 255, `v = view_size` (default 7),
    centred on the agent and rotated so that it faces up. Actions: Discrete(8) (`NOOP, FORWARD,
    BACKWARD, STEP_LEFT, STEP_RIGHT, TURN_LEFT, TURN_RIGHT, TAG`). Reward: `apple_reward` per apple,
    minus `tag_cost` per shot and `tag_penalty` when hit.
    """

    def __init__(self, num_agents: int = 5, view_size: int = 7):
        grid = _parse(MAP)
        self.height, self.width = h, w = grid.shape
        self._hw = hw = h * w
        spawns = [tuple(int(x) for x in p) for p in np.argwhere(grid == "P")]  # row-major
        limit = min(len(spawns), MAX_AGENTS)
        if not _is_int(num_agents) or not 1 <= num_agents <= limit:
            raise ValueError(f"num_agents={num_agents!r} is invalid for HarvestPatch: must be an "
                             f"integer in [1, {limit}]")
        if not _is_int(view_size) or view_size < 0:
            raise ValueError(f"view_size={view_size!r} is invalid: must be an integer >= 0")
        self.num_agents = int(num_agents)
        self.view_size = v = int(view_size)
        self.obs_shape = (2 * v + 1, 2 * v + 1, 3)
        self.spawn_points = tuple(spawns)
        self._spawn_flat = np.array([r * w + c for r, c in spawns], np.int32)

        flat = grid.reshape(-1)
        wall = np.concatenate([flat == "@", [True]])  # the sentinel behaves like a wall
        label, self.num_patches = _patches(grid == "A")
        cells = np.flatnonzero(flat == "A")
        order = np.lexsort((cells, label.reshape(-1)[cells]))  # patch-major, row-major within
        self._apple_idx = cells[order].astype(np.int32)  # [K]
        self.num_apple_cells = k = len(cells)
        self.patch_of = label.reshape(-1)[self._apple_idx].astype(np.int32)  # [K]
        self._patch_onehot = (self.patch_of[:, None] == np.arange(self.num_patches)).astype(np.float32)
        rc = np.stack([self._apple_idx // w, self._apple_idx % w], -1).astype(np.float32)
        self._d2 = ((rc[:, None, :] - rc[None, :, :]) ** 2).sum(-1)  # [K, K] squared distances
        self._not_self = ~np.eye(k, dtype=bool)
        self._base_codes = np.concatenate([np.where(flat == "@", WALL, EMPTY), [EMPTY]]).astype(np.int32)

        def cell(r, c):
            return r * w + c if (0 <= r < h and 0 <= c < w and not wall[r * w + c]) else hw

        # moves: next[cell, d] for d in N, E, S, W, stay; walls and the edge block (stay put)
        nxt = np.full((hw + 1, 5), hw, np.int32)
        for r in range(h):
            for c in range(w):
                for d in range(4):
                    t = cell(r + _DIRS[d, 0], c + _DIRS[d, 1])
                    nxt[r * w + c, d] = r * w + c if t == hw else t
                nxt[r * w + c, _STAY_DIR] = r * w + c
        self._next = nxt
        # absolute direction of each (orientation, action); _STAY_DIR for non-moves
        move_dir = np.full((4, NUM_ACTIONS), _STAY_DIR, np.int32)
        for o in range(4):
            move_dir[o, FORWARD] = o
            move_dir[o, BACKWARD] = (o + 2) % 4
            move_dir[o, STEP_LEFT] = (o + 3) % 4
            move_dir[o, STEP_RIGHT] = (o + 1) % 4
        self._move_dir = move_dir

        # beams: [4, cells, 3 rays (centre, left, right), L], sentinel hw from the first wall on.
        # L is the longest ray a map can hold, so `beam_length` can be a runtime parameter.
        self.max_beam_length = length = max(h, w)
        beam = np.full((4, hw + 1, 3, length), hw, np.int32)
        for o in range(4):
            fwd, right = _DIRS[o], _DIRS[(o + 1) % 4]
            for r in range(h):
                for c in range(w):
                    starts = [(r, c), (r - right[0] - fwd[0], c - right[1] - fwd[1]),
                              (r + right[0] - fwd[0], c + right[1] - fwd[1])]
                    for ray, (r0, c0) in enumerate(starts):
                        for j in range(length):
                            t = cell(r0 + (j + 1) * fwd[0], c0 + (j + 1) * fwd[1])
                            if t == hw:
                                break
                            beam[o, r * w + c, ray, j] = t
        self._beam = beam

        # rotated view windows: view cell (i, j) of an agent at p facing o is
        # p + (v - i) * forward + (j - v) * right
        s = 2 * v + 1
        a = v - np.arange(s)[:, None]  # cells ahead, per view row
        b = np.arange(s)[None, :] - v  # cells to the right, per view column
        window = np.empty((4, hw, s, s), np.int32)
        rows, cols = np.arange(h)[:, None, None, None], np.arange(w)[None, :, None, None]
        for o in range(4):
            fwd, right = _DIRS[o], _DIRS[(o + 1) % 4]
            rr = rows + a * fwd[0] + b * right[0]
            cc = cols + a * fwd[1] + b * right[1]
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            window[o] = np.where(inside, rr * w + cc, hw).reshape(hw, s, s)
        self._window = window.reshape(4 * hw, s, s)
        self._palette = PALETTE

    # ---- parameters and spaces -------------------------------------------------------------------
    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        for name in ("apple_reward", "tag_cost", "tag_penalty"):
            x = _values(params, name)
            if x is not None and not np.all(np.isfinite(x)):
                raise ValueError(f"{name}={getattr(params, name)!r} is invalid: must be a finite number")
        x = _values(params, "regrowth_radius")
        if x is not None and not np.all(np.isfinite(x) & (x >= 0)):
            raise ValueError(f"regrowth_radius={params.regrowth_radius!r} is invalid: must be a finite "
                             f"number >= 0")
        x = _values(params, "initial_apple_prob")
        if x is not None and not np.all((x >= 0) & (x <= 1)):
            raise ValueError(f"initial_apple_prob={params.initial_apple_prob!r} is invalid: must be in "
                             f"[0, 1]")
        probs = params.regrowth_probs
        try:
            p = [np.asarray(q, np.float64) for q in probs]
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            p = None
        except TypeError:
            p = []
        if p is not None and (len(p) == 0 or not all(np.all((q >= 0) & (q <= 1)) for q in p)):
            raise ValueError(f"regrowth_probs={probs!r} is invalid: must be a non-empty sequence of "
                             f"probabilities in [0, 1] (entry c is used for c neighbouring apples)")
        for name in ("beam_length", "tag_timeout"):
            x = _values(params, name)
            if x is not None and not np.all((x >= 0) & (x == np.floor(x))):
                raise ValueError(f"{name}={getattr(params, name)!r} is invalid: must be an integer >= 0")

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, self.obs_shape, jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)

    # ---- transitions -----------------------------------------------------------------------------
    def _flat(self, pos):
        return pos[..., 0] * self.width + pos[..., 1]

    def _rowcol(self, flat):
        return jnp.stack([flat // self.width, flat % self.width], axis=-1).astype(jnp.int32)

    def _apple_grid(self, apples_k):
        grid = jnp.zeros(self._hw, jnp.bool_).at[jnp.asarray(self._apple_idx)].set(apples_k)
        return grid.reshape(self.height, self.width)

    def reset_env(self, key, params):
        n, k = self.num_agents, self.num_apple_cells
        u = jax.random.uniform(key, (len(self.spawn_points) + n + k,))
        n_sp = len(self.spawn_points)
        chosen = jnp.argsort(u[:n_sp])[:n]  # n distinct spawn points, uniformly at random
        orientation = jnp.floor(u[n_sp:n_sp + n] * 4).astype(jnp.int32)
        apples = u[n_sp + n:] < jnp.asarray(params.initial_apple_prob, jnp.float32)
        state = EnvState(
            agent_pos=self._rowcol(jnp.asarray(self._spawn_flat)[chosen]),
            orientation=jnp.minimum(orientation, 3),
            tag_timer=jnp.zeros(n, jnp.int32),
            apples=self._apple_grid(apples),
            beam=jnp.zeros((self.height, self.width), jnp.bool_),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def _resolve_moves(self, u, pos, tgt, active):
        """New flat positions `[N]` from targets `tgt`: agents not in play neither move nor block;
        contested targets go to the highest priority `u`; blocked agents stay; no swaps."""
        n = self.num_agents
        if n == 1:
            return tgt
        wants = active & (tgt != pos)
        beaten = (tgt[:, None] == tgt[None, :]) & wants[None, :] & (u[None, :] > u[:, None])
        moving = wants & ~jnp.any(beaten, axis=1)
        # occ[i, j]: i's target is the cell of j, who is in play (j != i: a mover's target is not
        # its own cell)
        occ = (tgt[:, None] == pos[None, :]) & active[None, :] & ~jnp.eye(n, dtype=jnp.bool_)
        swap = occ & (tgt[None, :] == pos[:, None])
        # blocking propagates down chains of at most n - 1 agents: n Jacobi sweeps reach the
        # fixed point
        for _ in range(n):
            moving = moving & ~jnp.any(occ & (~moving[None, :] | swap), axis=1)
        return jnp.where(moving, tgt, pos)

    def step_env(self, key, state, actions, params):
        n, hw, k = self.num_agents, self._hw, self.num_apple_cells
        n_sp = len(self.spawn_points)
        u = jax.random.uniform(key, (n + k + n * n_sp + n,))
        u_move, u_grow = u[:n], u[n:n + k]
        u_spawn = u[n + k:n + k + n * n_sp].reshape(n, n_sp)
        u_orient = u[n + k + n * n_sp:]
        actions = jnp.asarray(actions, jnp.int32)
        active = state.tag_timer == 0
        pos = self._flat(state.agent_pos)

        # 1-2. turns, then moves relative to the orientation at the start of the step
        turn = (actions == TURN_RIGHT).astype(jnp.int32) - (actions == TURN_LEFT).astype(jnp.int32)
        orientation = jnp.where(active, (state.orientation + turn) % 4, state.orientation)
        direction = jnp.asarray(self._move_dir)[state.orientation, actions]
        tgt = jnp.where(active, jnp.asarray(self._next)[pos, direction], pos)
        pos = self._resolve_moves(u_move, pos, tgt, active)

        # 3. eating
        apples = jnp.concatenate([state.apples.reshape(-1), jnp.zeros(1, jnp.bool_)])
        eaten = active & apples[pos]
        apples = apples.at[jnp.where(eaten, pos, hw)].set(False)

        # 4. beams, simultaneous; each ray stops at (and hits) the first agent in play
        fired = active & (actions == TAG)
        occupied = jnp.zeros(hw + 1, jnp.bool_).at[jnp.where(active, pos, hw)].set(True).at[hw].set(False)
        idx = jnp.asarray(self._beam)[orientation, pos]  # [N, 3, L]
        length = jnp.asarray(params.beam_length, jnp.int32)
        in_range = (idx != hw) & (jnp.arange(self.max_beam_length) < length)
        on_agent = occupied[idx] & in_range
        before = jnp.cumsum(on_agent, axis=-1) - on_agent
        hit = in_range & (before == 0) & fired[:, None, None]
        beam = jnp.zeros(hw + 1, jnp.bool_).at[jnp.where(hit, idx, hw)].set(True).at[hw].set(False)
        tagged = active & beam[pos]
        timeout = jnp.asarray(params.tag_timeout, jnp.int32)
        removed = tagged & (timeout > 0)
        staying = active & ~removed

        # 5. regrowth from the neighbour counts after eating
        apple_idx = jnp.asarray(self._apple_idx)
        a = apples[apple_idx]
        radius = jnp.asarray(params.regrowth_radius, jnp.float32)
        near = ((jnp.asarray(self._d2) <= radius * radius) & self._not_self).astype(jnp.float32)
        probs = jnp.stack([jnp.asarray(p, jnp.float32) for p in params.regrowth_probs])
        counts = jnp.dot(a.astype(jnp.float32), near)  # [K] apples near each apple cell
        level = jnp.minimum(counts, probs.shape[0] - 1).astype(jnp.int32)
        free = ~jnp.zeros(hw + 1, jnp.bool_).at[jnp.where(staying, pos, hw)].set(True)[apple_idx]
        a = a | (free & (u_grow < probs[level]))

        # 6. timers; respawns at spawn points free of agents in play, one agent after another
        timer = jnp.where(removed, timeout, jnp.where(active, 0, state.tag_timer - 1))
        respawn = ~active & (timer == 0)
        spawn_flat = jnp.asarray(self._spawn_flat)
        taken = jnp.any((spawn_flat[:, None] == pos[None, :]) & staying[None, :], axis=1)  # [S]
        for i in range(n):
            choice = jnp.argmax(jnp.where(taken, -1.0, u_spawn[i]))
            pos = pos.at[i].set(jnp.where(respawn[i], spawn_flat[choice], pos[i]))
            taken = taken | (respawn[i] & (jnp.arange(n_sp) == choice))
        new_orientation = jnp.minimum(jnp.floor(u_orient * 4).astype(jnp.int32), 3)
        orientation = jnp.where(respawn, new_orientation, orientation)

        h, w = self.height, self.width
        next_state = EnvState(
            agent_pos=self._rowcol(pos),
            orientation=orientation,
            tag_timer=timer,
            apples=self._apple_grid(a),
            beam=beam[:hw].reshape(h, w),
            time=state.time + 1,
        )
        eaten_f = eaten.astype(jnp.float32)
        reward = (jnp.asarray(params.apple_reward, jnp.float32) * eaten_f
                  - jnp.asarray(params.tag_cost, jnp.float32) * fired
                  - jnp.asarray(params.tag_penalty, jnp.float32) * tagged)
        a_f = a.astype(jnp.float32)
        onehot = jnp.asarray(self._patch_onehot)
        patch_apples = jnp.dot(a_f, onehot)
        reach = jnp.dot(a_f + jnp.dot(a_f, near), onehot)  # apples in or near each patch
        extinct = (reach == 0) & (probs[0] <= 0)
        info = {
            "apples_eaten": eaten_f,
            "fired": fired,
            "tagged": tagged,
            "in_play": timer == 0,
            "patch_apples": patch_apples,
            "apple_count": jnp.sum(a_f),
            "extinct": extinct,
            "num_extinct": jnp.sum(extinct, dtype=jnp.float32),
        }
        terminated = jnp.zeros((), jnp.bool_)  # only truncation at max_steps_in_episode
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    # ---- rendering -------------------------------------------------------------------------------
    def _codes(self, state):
        """Integer cell codes `[H*W + 1]` (last = outside the map): map, apples, agents in play over
        their cells, beams over agents."""
        hw = self._hw
        in_play = state.tag_timer == 0
        codes = jnp.asarray(self._base_codes)
        codes = jnp.where(jnp.concatenate([state.apples.reshape(-1), jnp.zeros(1, jnp.bool_)]),
                          APPLE, codes)
        where = jnp.where(in_play, self._flat(state.agent_pos), hw)
        codes = codes.at[where].set(AGENT + jnp.arange(self.num_agents)).at[hw].set(EMPTY)
        return jnp.where(jnp.concatenate([state.beam.reshape(-1), jnp.zeros(1, jnp.bool_)]), BEAM, codes)

    def get_obs(self, state, params=None):
        """Egocentric rotated RGB views `[N, 2v+1, 2v+1, 3]`, float32 in [0, 1]."""
        rows = state.orientation * self._hw + self._flat(state.agent_pos)
        window = jnp.asarray(self._window)[rows]  # [N, S, S]
        return jnp.asarray(self._palette)[self._codes(state)[window]]

    def render(self, state, params=None):
        """The whole map as RGB `[H, W, 3]` (for inspection; not an agent's observation)."""
        codes = self._codes(state)[: self._hw].reshape(self.height, self.width)
        return jnp.asarray(self._palette)[codes]
