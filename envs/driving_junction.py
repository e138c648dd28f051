"""The MGE paper's driving scene (mge.md §2.6, L325, Fig. 6): cars and a pedestrian at a junction,
solved with MGE-FB (`jaxmcg.mge_fb`) because the joint game is infeasible (mge.md §5.8).

Fig. 6 is lost; the map is the §2.6 proposal [ours], an ASCII layout (`layout`, one string per row):
`.` road (cars), `s` sidewalk (pedestrians), `z` zebra crossing (both), `#` neither. Car k
(k = 1..9) starts on digit `k` and wants to reach letter `a`, `b`, ... (car 1 -> `a`); a pedestrian
starts on `P` (`Q`, `R`) and wants to reach `p` (`q`, `r`). Markers stand on road for cars and on
sidewalk for pedestrians. Agents are the cars in digit order, then the pedestrians.

Default (`LAYOUT`, 11 x 11): two 2-lane roads cross (rows 5-6, columns 4-5); the zebra (row 4)
spans the north arm just north of the junction. Car 1 comes from the west and turns left, car 2
comes from the south and goes straight, car 3 comes from the east and turns right, all into the
north arm beyond the zebra, so every car's shortest route crosses it; the pedestrian crosses the
north arm along the zebra. Every car can reach the zebra while the pedestrian is on it (t = 3, 4).

Actions: 0 stay, 1 up, 2 down, 3 left, 4 right. A move is valid when it stays on the map and on a
cell the agent may use; at its goal an agent may only stay (the goal is absorbing). An invalid
action, if played anyway, leaves the agent in place. Moves are simultaneous and deterministic;
agents may share or cross cells.

Rewards (mge.md §2.6): R_i(x, a) = -1 per step off the goal, 0 at it; R_{i,F}(x) = -(shortest
distance from x to the goal over the agent's cells). Interaction (Psi of footnote 6, per pair):
agent i loses mu_ij for every other agent j in its interaction zone, with mu_ij = `mu_car_car` (10)
between cars, `mu_car_ped` (20) for a car near a pedestrian and `mu_ped_car` (0) for a pedestrian
near a car; pedestrians ignore each other. A zone is a single cell, except that the whole zebra is
one zone (`zebra_zone`). Both reconstructions are ours: with symmetric weights the pedestrian
yields to the cars, and with single-cell zones a car crosses on the zebra cell beside the
pedestrian, while the paper reports that the cars stop before the crossing while the pedestrian
walks (L325). As in the solver's model (eq. 9: Psi is charged at decision time tau on O^tau),
`step` charges the interaction on the cells *before* the move, and adds R_F of the cells after the
move at the last step (T = 25). The episode terminates when every agent stands on its goal.

Observation, per agent, egocentric: (row, col) of its own cell, then those of the other agents in
agent order, each scaled to [0, 1] by the map size, then t / T: `2 M + 1` floats. (The MGE-FB
policies need only the own cell and time; coordinates keep vmapped rollouts small.)
`info["cells"]`: int32 `[M]` cells after the move (row-major index); `info["at_goal"]`: bool `[M]`.

`env.occupancy_game(params)` gives the `OccupancyGame` for `jaxmcg.mge_fb.mge_fb`; solve it with
`SOLVER` (K = 200, eta = 0.5 on the occupancies: damping is needed, mge.md §8.6). On the default
layout this converges (residual ~1e-5 in float32); greedy execution then shows the §2.6 behaviour
(tests/test_driving_junction.py). This is fragile: for most nearby start cells the iterates keep
wandering (residual 1-5 at K = 200) and greedy execution breaks some of the §2.6 checks in over a
third of them, so check `solution.residual` after changing the layout.
"""
from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment
from jaxmcg.mge_fb import OccupancyGame, make_occupancy_game, validate_occupancy_game

STAY, UP, DOWN, LEFT, RIGHT = range(5)
ACTIONS = ("stay", "up", "down", "left", "right")
_DELTAS = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])
# mge.md §2.6 proposal (with T = 25); occupancy damping, because Q damping does not converge here
SOLVER = {"beta": 1.0, "num_iters": 200, "eta": 0.5, "damping": "occupancy"}

LAYOUT = (
    "###sabs####",
    "###s.cs####",
    "###s..s####",
    "###s..s####",
    "sPsszzsspss",
    ".......3...",
    "..1........",
    "ssss.2sssss",
    "###s..s####",
    "###s..s####",
    "###s..s####",
)

CAR_STARTS, CAR_GOALS = "123456789", "abcdefghi"
PED_STARTS, PED_GOALS = "PQR", "pqr"
ROAD, SIDEWALK, ZEBRA = ".", "s", "z"
_CELLS = set(ROAD + SIDEWALK + ZEBRA + "#" + CAR_STARTS + CAR_GOALS + PED_STARTS + PED_GOALS)


@struct.dataclass
class EnvState:
    cells: jax.Array  # int32 [M]: row-major cell of every agent
    time: jax.Array


@struct.dataclass
class EnvParams:
    game: OccupancyGame
    goals: jax.Array  # int32 [M]
    max_steps_in_episode: int = 25  # T (mge.md §2.6)


def parse_layout(layout):
    """`(grid [H, W] of '.', 's', 'z', '#', starts [M], goals [M], is_car [M])` of an ASCII
    layout; ValueError naming what is wrong."""
    rows = layout.strip("\n").split("\n") if isinstance(layout, str) else list(layout)
    if not rows or any(len(r) != len(rows[0]) for r in rows) or not rows[0]:
        raise ValueError(f"layout rows must be non-empty and of equal length; got lengths "
                         f"{[len(r) for r in rows]}")
    bad = sorted(set("".join(rows)) - _CELLS)
    if bad:
        raise ValueError(f"layout has unknown characters {bad}; valid: {''.join(sorted(_CELLS))}")
    chars = np.array([list(r) for r in rows])
    width = chars.shape[1]
    starts, goals, is_car = [], [], []
    for start_chars, goal_chars, car in ((CAR_STARTS, CAR_GOALS, True),
                                         (PED_STARTS, PED_GOALS, False)):
        for s, g in zip(start_chars, goal_chars, strict=True):
            at_s, at_g = np.argwhere(chars == s), np.argwhere(chars == g)
            if len(at_s) == 0 and len(at_g) == 0:
                continue
            if len(at_s) != 1 or len(at_g) != 1:
                raise ValueError(f"agent {s!r} needs exactly one start {s!r} and one goal {g!r}; "
                                 f"found {len(at_s)} and {len(at_g)}")
            starts.append(at_s[0][0] * width + at_s[0][1])
            goals.append(at_g[0][0] * width + at_g[0][1])
            is_car.append(car)
    if not starts:
        raise ValueError("layout has no agents: put car starts 1-9 or pedestrian starts P, Q, R")
    grid = chars.copy()
    grid[np.isin(chars, list(CAR_STARTS + CAR_GOALS))] = ROAD
    grid[np.isin(chars, list(PED_STARTS + PED_GOALS))] = SIDEWALK
    return grid, np.array(starts), np.array(goals), np.array(is_car)


def _distances(allowed: np.ndarray, width: int, goal: int) -> np.ndarray:
    """Shortest number of moves from every cell to `goal` over `allowed` cells (BFS); -1 where
    the goal cannot be reached."""
    dist = np.full(allowed.size, -1)
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        x = queue.popleft()
        r, c = divmod(x, width)
        for dr, dc in _DELTAS[1:]:
            nr, nc = r + dr, c + dc
            y = nr * width + nc
            if 0 <= nr < allowed.size // width and 0 <= nc < width and allowed[y] and dist[y] < 0:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


def build_game(layout, mu_car_ped: float = 20.0, mu_car_car: float = 10.0,
               mu_ped_car: float = 0.0, zebra_zone: bool = True, dtype=np.float32):
    """`(OccupancyGame, goals [M], grid [H, W])` of the junction drawn in `layout` (module doc)."""
    grid, starts, goals, is_car = parse_layout(layout)
    h, w = grid.shape
    n, m = h * w, len(starts)
    for name, val in (("mu_car_ped", mu_car_ped), ("mu_car_car", mu_car_car),
                      ("mu_ped_car", mu_ped_car)):
        if not (np.isfinite(val) and val >= 0):
            raise ValueError(f"{name}={val!r} is invalid: it must be finite and >= 0")
    r, c = np.divmod(np.arange(n), w)
    nr, nc = r[:, None] + _DELTAS[:, 0], c[:, None] + _DELTAS[:, 1]
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    target = np.where(inside, nr * w + nc, np.arange(n)[:, None])  # [N, A]
    flat = grid.ravel()
    P = np.zeros((m, n, 5, n))
    mask = np.zeros((m, n, 5), bool)
    reward = np.zeros((m, n, 5))
    final = np.zeros((m, n))
    for i in range(m):
        allowed = np.isin(flat, [ROAD, ZEBRA] if is_car[i] else [SIDEWALK, ZEBRA])
        mask[i] = inside & allowed[target] & allowed[:, None]
        mask[i, :, STAY] = True
        mask[i, goals[i], 1:] = False  # the goal is absorbing: stay only (mge.md §2.6)
        dest = np.where(mask[i], target, np.arange(n)[:, None])
        P[i, np.arange(n)[:, None], np.arange(5)[None], dest] = 1.0
        dist = _distances(allowed, w, goals[i])
        if dist[starts[i]] < 0:
            raise ValueError(f"agent {i} cannot reach its goal (cell {goals[i]}) from its start "
                             f"(cell {starts[i]}) on its own cells")
        # cells the agent can never stand on get a finite penalty worse than any other
        final[i] = -np.where(dist >= 0, dist, dist.max() + 1)
        reward[i] = np.where(np.arange(n) == goals[i], 0.0, -1.0)[:, None]
    mu = np.where(is_car[:, None] & is_car[None, :], mu_car_car,
                  np.where(is_car[:, None] & ~is_car[None, :], mu_car_ped,
                           np.where(~is_car[:, None] & is_car[None, :], mu_ped_car, 0.0)))
    np.fill_diagonal(mu, 0.0)
    zone = np.arange(n)
    zebra = np.flatnonzero(flat == ZEBRA)
    if zebra_zone and zebra.size:
        zone[zebra] = zebra[0]
    game = make_occupancy_game(P, reward, starts, final, mu, mask, zone, dtype=dtype)
    return game, goals, grid


class DrivingJunction(Environment):
    """Cars and pedestrians on an ASCII junction (module doc). The layout and interaction weights
    fix the `OccupancyGame` stored in the parameters (the layout sets the shapes)."""

    def __init__(self, layout=LAYOUT, mu_car_ped: float = 20.0, mu_car_car: float = 10.0,
                 mu_ped_car: float = 0.0, zebra_zone: bool = True):
        game, goals, grid = build_game(layout, mu_car_ped, mu_car_car, mu_ped_car, zebra_zone)
        self.grid = grid
        self.shape = grid.shape
        self.num_agents = game.num_agents
        self._game, self._goals = game, jnp.asarray(goals, jnp.int32)

    solver_defaults = SOLVER  # what experiments.solve passes to mge_fb
    action_names = ACTIONS

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(game=self._game, goals=self._goals)

    def occupancy_game(self, params: EnvParams | None = None) -> OccupancyGame:
        """The occupancy-measure game of `params` for `jaxmcg.mge_fb.mge_fb`."""
        return (self.default_params if params is None else params).game

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        validate_occupancy_game(params.game)
        goals = np.asarray(params.goals)
        if goals.shape != (self.num_agents,) or goals.min() < 0 or goals.max() >= params.game.num_cells:
            raise ValueError(f"goals={goals.tolist()} must be {self.num_agents} cells in "
                             f"0..{params.game.num_cells - 1}")

    def reset_env(self, key, params):
        state = EnvState(cells=params.game.x0, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        game, cells = params.game, state.cells
        agents = jnp.arange(self.num_agents)
        actions = jnp.asarray(actions, jnp.int32)
        actions = jnp.where(game.mask[agents, cells, actions], actions, STAY)
        nxt = jax.random.categorical(key, jnp.log(game.P[agents, cells, actions]), axis=-1)
        nxt = nxt.astype(jnp.int32)
        time = state.time + 1
        mu = game.mu * (1.0 - jnp.eye(self.num_agents, dtype=game.mu.dtype))
        zones = game.zone[cells]
        together = (zones[:, None] == zones[None, :]).astype(mu.dtype)
        reward = game.reward[agents, cells, actions] - jnp.sum(mu * together, axis=1)
        last = time >= params.max_steps_in_episode
        reward = reward + jnp.where(last, game.final_reward[agents, nxt], 0.0)
        at_goal = nxt == params.goals
        new = EnvState(cells=nxt, time=time)
        info = {"cells": nxt, "at_goal": at_goal}
        return self.get_obs(new, params), new, reward, jnp.all(at_goal), info

    def get_obs(self, state, params=None):
        params = self.default_params if params is None else params
        h, w = self.shape
        rc = jnp.stack(jnp.divmod(state.cells, w), -1).astype(jnp.float32)
        rc = rc / jnp.array([max(h - 1, 1), max(w - 1, 1)], jnp.float32)  # [M, 2]
        m = self.num_agents
        # row i: agent i first, then the others in agent order
        order = np.array([[i] + [j for j in range(m) if j != i] for i in range(m)])
        frac = state.time.astype(jnp.float32) / params.max_steps_in_episode
        frac = jnp.broadcast_to(jnp.minimum(frac, 1.0), (m, 1))
        return jnp.concatenate([rc[order].reshape(m, 2 * m), frac], axis=1)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (2 * self.num_agents + 1,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(5)
