"""Plain numpy Cleanup, one environment, written the way the authors' SSD code is.

A numpy char grid of the map (as SSD's `world_map`), agents as a list of positions, Python loops
over agents, beam cells and view cells, and `np.random` for every draw (thesis §5.4, A10, A11;
orientation always UP, so moves are absolute and every beam points up). It is the speed baseline of
`benchmarks/throughput.py` and the oracle of `tests/test_cleanup_oracle.py`, so it is written from
the spec alone, independently of `envs/cleanup.py`.

Grid characters: `@` wall, ` ` empty (spawn points and apple cells without an apple included),
`H` waste, `R` river (a potential-waste cell without waste), `A` apple. Apple cells (`B` in the map)
and potential-waste cells (`H` and `R` in the map) are kept as position lists, as SSD does.

One step (`step`):
1. moves, conflicts over a target cell resolved by a priority order (uniformly random unless one is
   given): the first agent of the order that wants a contested cell keeps its move, the others stay;
   a move into a cell whose agent does not move out, and a swap, are blocked;
2. consumption: +1 for an agent on an apple, which disappears;
3. cleaning beams, agent by agent in index order as SSD does (each agent's conversions are applied
   after its three beams, so a later beam passes a cell an earlier one cleaned; the order can be
   injected): centre (r-1..r-5, c), sides (r..r-4, c-1) and (r..r-4, c+1); a beam stops before a
   wall or the edge, at an agent (inclusive: waste under that agent is converted), and at the
   first waste cell, which becomes river;
4. spawning from the density after cleaning: apples on free apple cells independently; at most one
   waste cell (shuffled non-waste potential cells, first Bernoulli success);
5. egocentric observations (2v+1)x(2v+1)x3 / 256, black outside the map, agents over cells, this
   step's beams over agents.

It is lean Python written from the spec, not a port of SSD's code paths, and it runs faster than
the authors' environment (spec/performance-notes.md: theirs about 2.9k / 1.9k steps/s per core on
7x7 / 10x10), so speedups measured against it understate those against the original.
"""
from __future__ import annotations

import numpy as np

LEFT, RIGHT, UP, DOWN, STAY, FIRE = range(6)
MOVES = {LEFT: (0, -1), RIGHT: (0, 1), UP: (-1, 0), DOWN: (1, 0)}
BEAM_LENGTH = 5

MAPS = {
    "7x7": [
        "@@@@@@@",
        "@H  PB@",
        "@H   B@",
        "@    B@",
        "@    B@",
        "@ P  B@",
        "@@@@@@@",
    ],
    "10x10": [
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
    ],
}

# Table B.2
PARAMS = {
    "7x7": dict(apple_respawn_prob=0.5, threshold_depletion=0.6, threshold_restoration=0.0,
                waste_spawn_prob=0.5, view_size=4, max_steps=50),
    "10x10": dict(apple_respawn_prob=0.3, threshold_depletion=0.4, threshold_restoration=0.0,
                  waste_spawn_prob=0.5, view_size=7, max_steps=50),
}

COLOURS = {
    " ": (0, 0, 0),
    "@": (180, 180, 180),
    "A": (0, 255, 0),
    "H": (113, 75, 24),
    "R": (99, 156, 194),
    "C": (100, 255, 255),  # cleaning beam
    "1": (159, 67, 255),
    "2": (2, 81, 154),
    "3": (204, 0, 204),
}


class CleanupNumpy:
    """Cleanup on `map_name` ("7x7" or "10x10") with `num_agents` agents.

    `reset() -> obs`, `step(actions, priority=None) -> (obs, rewards, done, info)` with `obs` float32
    `[N, S, S, 3]`, `rewards` float32 `[N]` and `info` holding `apples`, `cleaned`, `fired` (per
    agent), `waste_density` (after spawning), `apple_count`, `moved_positions` and `priority`.
    Keyword overrides replace Table B.2 parameters (`apple_respawn_prob`, `threshold_depletion`,
    `threshold_restoration`, `waste_spawn_prob`, `view_size`, `max_steps`).
    `set_state(...)` / `get_state()` give full control for tests.
    """

    def __init__(self, map_name="7x7", num_agents=2, seed=None, **overrides):
        if map_name not in MAPS:
            raise ValueError(f"unknown map {map_name!r}; valid: {sorted(MAPS)}")
        params = dict(PARAMS[map_name])
        unknown = set(overrides) - set(params)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}")
        params.update({k: v for k, v in overrides.items() if v is not None})
        self.map_name = map_name
        self.ascii_map = MAPS[map_name]
        self.height = len(self.ascii_map)
        self.width = len(self.ascii_map[0])
        self.apple_respawn_prob = params["apple_respawn_prob"]
        self.threshold_depletion = params["threshold_depletion"]
        self.threshold_restoration = params["threshold_restoration"]
        self.waste_spawn_prob = params["waste_spawn_prob"]
        self.view_size = params["view_size"]
        self.max_steps = params["max_steps"]
        self.obs_size = 2 * self.view_size + 1

        self.spawn_points = []
        self.apple_points = []
        self.waste_start_points = []
        self.river_points = []
        for row in range(self.height):
            for col in range(self.width):
                char = self.ascii_map[row][col]
                if char == "P":
                    self.spawn_points.append((row, col))
                elif char == "B":
                    self.apple_points.append((row, col))
                elif char == "H":
                    self.waste_start_points.append((row, col))
                elif char == "R":
                    self.river_points.append((row, col))
        self.potential_waste_points = sorted(self.waste_start_points + self.river_points)
        self.potential_waste_area = len(self.potential_waste_points)
        if not 1 <= num_agents <= min(len(self.spawn_points), 3):
            raise ValueError(f"{map_name} takes 1..{min(len(self.spawn_points), 3)} agents")
        self.num_agents = num_agents
        self.rng = np.random.RandomState(seed)

        self.world_map = None
        self.agent_pos = None
        self.beam_pos = []
        self.steps = 0
        self.current_apple_spawn_prob = 0.0
        self.current_waste_spawn_prob = 0.0

    # ----------------------------------------------------------------------------------- state
    def base_grid(self):
        """The map with walls only, every other cell empty: a numpy char array, as in SSD."""
        return np.array([["@" if ch == "@" else " " for ch in line] for line in self.ascii_map])

    def reset(self):
        self.world_map = self.base_grid()
        for row, col in self.waste_start_points:
            self.world_map[row, col] = "H"
        for row, col in self.river_points:
            self.world_map[row, col] = "R"
        # shuffle_spawn=False: each agent in index order takes the last free spawn point
        free = list(self.spawn_points)
        self.agent_pos = []
        for _ in range(self.num_agents):
            self.agent_pos.append(list(free.pop()))
        self.beam_pos = []
        self.steps = 0
        self.compute_probabilities()
        return self.get_obs()

    def set_state(self, agent_pos, waste, apples, beam=None, time=0):
        """Install a full state: `agent_pos` [N, 2] (row, col), `waste` and `apples` bool [H, W]
        masks (only potential-waste / apple cells may be set), optional `beam` bool [H, W] drawn in
        the next observation, and the step counter `time`."""
        waste = np.asarray(waste, bool)
        apples = np.asarray(apples, bool)
        self.world_map = self.base_grid()
        for row, col in self.potential_waste_points:
            self.world_map[row, col] = "H" if waste[row, col] else "R"
        for row, col in self.apple_points:
            if apples[row, col]:
                self.world_map[row, col] = "A"
        potential = set(self.potential_waste_points)
        for row, col in zip(*np.nonzero(waste)):
            assert (row, col) in potential, f"waste at non-river cell {(row, col)}"
        apple_cells = set(self.apple_points)
        for row, col in zip(*np.nonzero(apples)):
            assert (row, col) in apple_cells, f"apple at non-apple cell {(row, col)}"
        self.agent_pos = [[int(r), int(c)] for r, c in np.asarray(agent_pos).reshape(-1, 2)]
        assert len(self.agent_pos) == self.num_agents
        self.beam_pos = [] if beam is None else [(int(r), int(c)) for r, c in zip(*np.nonzero(beam))]
        self.steps = int(time)
        self.compute_probabilities()

    def get_state(self):
        waste = np.zeros((self.height, self.width), bool)
        apples = np.zeros((self.height, self.width), bool)
        beam = np.zeros((self.height, self.width), bool)
        for row in range(self.height):
            for col in range(self.width):
                waste[row, col] = self.world_map[row, col] == "H"
                apples[row, col] = self.world_map[row, col] == "A"
        for row, col in self.beam_pos:
            beam[row, col] = True
        return dict(agent_pos=np.array(self.agent_pos, np.int32).reshape(-1, 2), waste=waste,
                    apples=apples, beam=beam, time=self.steps)

    def waste_density(self):
        n_waste = 0
        for row, col in self.potential_waste_points:
            if self.world_map[row, col] == "H":
                n_waste += 1
        return n_waste / self.potential_waste_area

    def compute_probabilities(self):
        density = self.waste_density()
        thr_d, thr_r = self.threshold_depletion, self.threshold_restoration
        if density >= thr_d:
            self.current_apple_spawn_prob = 0.0
            self.current_waste_spawn_prob = 0.0
        else:
            self.current_waste_spawn_prob = self.waste_spawn_prob
            if density <= thr_r:
                self.current_apple_spawn_prob = self.apple_respawn_prob
            else:
                frac = 1.0 - (density - thr_r) / (thr_d - thr_r)
                self.current_apple_spawn_prob = frac * self.apple_respawn_prob
        return self.current_apple_spawn_prob, self.current_waste_spawn_prob

    # ------------------------------------------------------------------------------------ step
    def step(self, actions, priority=None, fire_order=None):
        """Advance one step. `priority`: agent indices, highest move priority first (drawn
        uniformly at random when None). `fire_order`: the order in which agents fire (agent index
        order when None, as SSD iterates over its agents)."""
        actions = [int(a) for a in actions]
        assert len(actions) == self.num_agents
        if priority is None:
            priority = list(self.rng.permutation(self.num_agents))
        self.beam_pos = []

        self.update_moves(actions, priority)
        moved = [list(p) for p in self.agent_pos]

        rewards = np.zeros(self.num_agents, dtype=np.float32)
        for i in range(self.num_agents):
            row, col = self.agent_pos[i]
            if self.world_map[row, col] == "A":
                self.world_map[row, col] = " "
                rewards[i] += 1.0

        cleaned = np.zeros(self.num_agents, dtype=np.int32)
        fired = np.zeros(self.num_agents, dtype=bool)
        if fire_order is None:
            fire_order = range(self.num_agents)
        for i in fire_order:
            if actions[i] == FIRE:
                fired[i] = True
                updates = self.fire_beam(i)
                for row, col in updates:
                    self.world_map[row, col] = "R"
                cleaned[i] = len(updates)

        self.compute_probabilities()
        self.spawn_apples_and_waste()

        self.steps += 1
        done = self.steps >= self.max_steps
        apple_count = sum(1 for r, c in self.apple_points if self.world_map[r, c] == "A")
        info = dict(apples=rewards.copy(), cleaned=cleaned, fired=fired,
                    waste_density=self.waste_density(), apple_count=apple_count,
                    moved_positions=np.array(moved, np.int32), priority=list(priority))
        return self.get_obs(), rewards, done, info

    def valid_target(self, i, action):
        row, col = self.agent_pos[i]
        if action not in MOVES:
            return [row, col]
        d_row, d_col = MOVES[action]
        new_row, new_col = row + d_row, col + d_col
        if not (0 <= new_row < self.height and 0 <= new_col < self.width):
            return [row, col]
        if self.world_map[new_row, new_col] == "@":
            return [row, col]
        return [new_row, new_col]

    def update_moves(self, actions, priority):
        targets = [self.valid_target(i, actions[i]) for i in range(self.num_agents)]
        pending = [i for i in range(self.num_agents) if targets[i] != self.agent_pos[i]]

        # several agents want one cell: the first of them in the priority order keeps its move
        for i in list(pending):
            contenders = [j for j in pending if targets[j] == targets[i]]
            if len(contenders) > 1:
                winner = None
                for j in priority:
                    if j in contenders:
                        winner = j
                        break
                for j in contenders:
                    if j != winner:
                        pending.remove(j)

        # the remaining moves go through unless they run into an agent that stays, or swap
        while pending:
            progressed = False
            for i in list(pending):
                if i not in pending:
                    continue
                occupant = None
                for j in range(self.num_agents):
                    if j != i and self.agent_pos[j] == targets[i]:
                        occupant = j
                if occupant is None:
                    self.agent_pos[i] = list(targets[i])
                    pending.remove(i)
                    progressed = True
                elif occupant not in pending:
                    pending.remove(i)  # blocked by an agent that does not move out
                    progressed = True
                elif targets[occupant] == self.agent_pos[i]:
                    pending.remove(i)  # swap
                    pending.remove(occupant)
                    progressed = True
            if not progressed:
                break  # a cycle of moves (needs >= 4 agents on a grid): nobody moves

    def fire_beam(self, i):
        """Cells of agent i's three beams go to `beam_pos`; returns the waste cells it cleans."""
        row, col = self.agent_pos[i]
        starts = [(row - 1, col), (row, col - 1), (row, col + 1)]
        updates = []
        for start_row, start_col in starts:
            cell_row, cell_col = start_row, start_col
            for _ in range(BEAM_LENGTH):
                if not (0 <= cell_row < self.height and 0 <= cell_col < self.width):
                    break
                if self.world_map[cell_row, cell_col] == "@":
                    break
                self.beam_pos.append((cell_row, cell_col))
                if self.world_map[cell_row, cell_col] == "H":
                    updates.append((cell_row, cell_col))
                    break
                if [cell_row, cell_col] in self.agent_pos:
                    break
                cell_row -= 1
        return updates

    def spawn_apples_and_waste(self):
        for row, col in self.apple_points:
            if [row, col] in self.agent_pos or self.world_map[row, col] == "A":
                continue
            if self.rng.rand() < self.current_apple_spawn_prob:
                self.world_map[row, col] = "A"
        if self.current_waste_spawn_prob != 0:
            order = self.rng.permutation(self.potential_waste_area)
            for k in order:
                row, col = self.potential_waste_points[k]
                if self.world_map[row, col] != "H":
                    if self.rng.rand() < self.current_waste_spawn_prob:
                        self.world_map[row, col] = "H"
                        break

    # ----------------------------------------------------------------------------- observation
    def map_with_agents(self):
        grid = np.copy(self.world_map)
        for i, (row, col) in enumerate(self.agent_pos):
            grid[row, col] = str(i + 1)
        for row, col in self.beam_pos:
            grid[row, col] = "C"
        return grid

    def render(self, agent, grid=None):
        """Agent `agent`'s egocentric view, float32 [S, S, 3] in [0, 1)."""
        if grid is None:
            grid = self.map_with_agents()
        v = self.view_size
        row0, col0 = self.agent_pos[agent]
        rgb = np.zeros((self.obs_size, self.obs_size, 3), dtype=np.float32)
        for i in range(self.obs_size):
            row = row0 - v + i
            if not 0 <= row < self.height:
                continue
            for j in range(self.obs_size):
                col = col0 - v + j
                if 0 <= col < self.width:
                    rgb[i, j, :] = COLOURS[grid[row, col]]
        return rgb / 256.0

    def get_obs(self):
        grid = self.map_with_agents()
        return np.stack([self.render(i, grid) for i in range(self.num_agents)])
