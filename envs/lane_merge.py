"""Double-lane merge, a pure-JAX stand-in for CM3's SUMO scenario (cm3-hsd.md §4.3.2
"sumo_merge_lite"; thesis A.7.2, [C-CM3 env/multicar_simple.py, egocar_simple.py, observation.py]).

N ego cars (5 m x 1.8 m) drive a straight 200 m road of 4 lanes of 3.2 m (lane 0 rightmost), each
from its start lane to the centre of its goal lane before x = 190 m. Step 0.2 s. Lateral
coordinate u (m from the right edge); sublane index σ = round_half_even(u/0.8) ∈ {0..16}, lane
centres σ = 2, 6, 10, 14, goal centre σ*_g = 4g + 2.

Actions: 0 NOOP, 1 ACC (+2.5 m/s²), 2 DEC (-2.5 m/s²), 3 LEFT / 4 RIGHT (request a 0.8 m shift,
executed at <= 2 m/s, i.e. 0.4 m per step in `rate` mode; at once in `instant` mode). Each step:
1. feasibility filter on pre-step quantities (§4.3.1): ACC infeasible if v >= 50, else DEC if
   v <= 10; LEFT infeasible in lane 3 at sublane offset >= 1, else RIGHT in lane 0 at offset <= -1;
   NOOP and ACC infeasible if another car ahead, slower, laterally within 1.8 m, has a time to
   collision <= 2 s. An infeasible action becomes the first feasible of NOOP, ACC, DEC, LEFT, RIGHT;
   the executed action is `info["executed_action"]` (the original stores it in the buffer).
2. v <- clip(v + 0.2·a, 0, 50), x <- x + 0.2·v (new speed); lateral motion, u clipped to [0.9, 11.9].
3. collisions: overlapping footprints [x - 5, x] x [u - 0.9, u + 0.9] (-1 to each car involved), and
   the code's rule-based side collision (executed LEFT with a car in row 6, columns 2-3 of the ego's
   grid, or RIGHT with columns 5-6): -1. Either ends the episode for every ego.
4. per active ego, first matching branch (§4.3.1 order): physical collision -1; x > 190 at the goal
   centre +10; step counter >= max_step -10; x > 190 elsewhere 10·(1 - |σ*_g - σ|/16); rule-based
   side collision -1; else 0; then -0.1 if v >= 35.7 (not after a physical collision). Terminal
   branches deactivate the ego (it leaves the road; its observation freezes). The episode ends on
   any collision or when no ego is active; the counter starts at 1 (SUMO's reset NOOP step), so the
   timeout fires on policy step `max_steps_in_episode` (40, code; 33 in the thesis, A-CM3-9) and the
   episode always terminates before the base class would truncate it.

Reset: with probability `prob_random` independent uniform start and goal lanes, otherwise the
constructor's preset: C1 lanes [1, 2] -> goals [3, 0] (training, A-CM3-10), C3 [1, 2] -> [2, 1],
C4 [0, 1] -> [3, 2]; C2 is "uniform" (prob_random = 1). Departure steps k_i = max(1, ⌈δ_i/0.2⌉),
δ_i ~ N(0, depart_sigma), and x_i = 6·(max_j k_j - k_i + 1), v = 30, at the start-lane centre.

Observation of ego i (flat, `obs_layout`): o_self = [v/29, (σ*_g - σ)/16, (190 - x)/200], the goal
one-hot (4), o_others = its 13x9x2 grid (rows 2.5 m, 6 back / 6 ahead; columns 0.8 m, column 0
leftmost; channel 0 occupancy, channel 1 (v_k - v)/25 on cars and -v/25 in empty cells; columns at
sublane <= 0 or >= 16 marked occupied, the ego drawn at rows 5-6 of column 4). `info["state"]`,
`info["next_state"]` [N, 3] = [(x - 100)/200, (u - 6.4)/12.8, v/29] before / after the step,
`info["goal"]` [N, 4], `info["branch"]` [N] the reward branch (`BRANCHES`), `info["collision"]`.

Kept from SUMO (§4.3.2): road geometry and sublane rounding; ego kinematics, bounds and lateral
speed limit; the feasibility filter with its TTC override; every reward and termination branch with
the rule-based side collision and the speed penalty; the observation and state layouts with the
code's quirks (empty cells at -v/25, sublane 0 marked off-road, ego in its own grid); the departure
offsets.
Lost or approximated: SUMO's insertion checks and delays (two egos in the same start lane are
separated by `min_insert_gap` by moving the earlier one ahead, as if SUMO had delayed the later
insertion while it drove on); SL2015's lateral dynamics (a new LEFT/RIGHT request replaces the
remaining shift); exactly which pairs SUMO reports as colliding; teleports; SUMO's random streams;
the road-end removal branch (an ego reaches x = 190 before the road end at <= 10 m per step).
The side-collision rule counts vehicles only, not the off-road marks of the grid (§4.3.1 "a
vehicle occupies").

Traffic: `traffic="off"` (default) is training's empty road (`merge_stage2.rou.xml`); `"heavy"` is
Table A.1's test stream (`envs.merge_traffic`: Krauss drivers in fixed lanes, trucks, the route
file's flows). Background vehicles appear in the grids (with their true lengths), the feasibility
filter and both collision rules; two of them colliding ends the episode with 0 for uninvolved egos.
The stream is warmed up for 200 steps at `reset` and carries over to the next episode through the
base class's auto-reset (`reset_from`), as in the original's continuous simulation. The egos enter
it as the original's reset does, stepping the world until every ego is on the road: an ego whose
lane is blocked at x = 0 waits until the last vehicle's rear is `min_insert_gap` - 5 = 30 m ahead
(our stand-in for SUMO's insertion check; the same rule separates two egos of one lane), going
before the lane's queued background. With that, driving straight scores exactly 10.00 (C1) and
15.00 (C3) in heavy traffic, Table A.1's COMA entries; §4.3.2's "egos enter regardless" would
collide on about a third of C1's episodes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs import merge_traffic
from jaxmcg import spaces
from jaxmcg.environment import Environment

NOOP, ACC, DEC, LEFT, RIGHT = 0, 1, 2, 3, 4
NUM_ACTIONS = 5
DT = 0.2
ROAD_LENGTH, GOAL_X, NUM_LANES, LANE_WIDTH, SUBLANE = 200.0, 190.0, 4, 3.2, 0.8
NUM_SUBLANES = 16
CAR_LENGTH, CAR_WIDTH = 5.0, 1.8
ACCEL, V_MAX, V_MIN_DEC, V_START = 2.5, 50.0, 10.0, 30.0
LAT_STEP = 0.4  # maxSpeedLat 2 m/s x dt
TTC_LIMIT = 2.0
SPEED_PENALTY_V, SPEED_PENALTY = 35.7, 0.1
GOAL_REWARD, TIMEOUT_REWARD, COLLISION_REWARD = 10.0, -10.0, -1.0
GRID_ROWS, GRID_COLS, ROW_M = 13, 9, 2.5
# lanes and goals per preset (§4.3.3 item 2); C2 is uniform (prob_random = 1)
PRESETS = {"C1": ([1, 2], [3, 0]), "C2": ([1, 2], [3, 0]), "C3": ([1, 2], [2, 1]),
           "C4": ([0, 1], [3, 2])}
BRANCHES = ("none", "collision", "goal_centre", "timeout", "off_centre", "side_collision")


@struct.dataclass
class EnvState:
    x: jax.Array  # [N] front bumper, m
    u: jax.Array  # [N] lateral centre from the right road edge, m
    v: jax.Array  # [N] speed, m/s
    lat_rem: jax.Array  # [N] remaining requested lateral shift, m
    goal: jax.Array  # [N] int32 goal lane
    active: jax.Array  # [N] bool, still on the road
    counter: jax.Array  # [N] int32 SUMO step counter of each ego
    obs: jax.Array  # [N, obs_dim] last observation (frozen once an ego terminates)
    time: jax.Array
    traffic: merge_traffic.Traffic = None  # background vehicles (no slots on the empty road)


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 40  # max_step: code 40, thesis 33 (A-CM3-9)
    prob_random: float = 0.2  # uniform lanes and goals (Stage 2: 0.2; Stage 1: 1.0)
    depart_sigma: float = 0.5  # s (Stage 1: 0.4)
    min_insert_gap: float = 35.0  # m, same start lane (approximate, §4.3.2 reset 5)


def sublane(u):
    """Absolute sublane index σ = round_half_even(u / 0.8) (int32)."""
    return jnp.round(u / SUBLANE).astype(jnp.int32)


def lane_of(u):
    return jnp.clip(jnp.floor(u / LANE_WIDTH), 0, NUM_LANES - 1).astype(jnp.int32)


def _car_sizes(x, length, width):
    """Per-vehicle lengths and widths: the egos' (5 m x 1.8 m) unless given."""
    length = jnp.broadcast_to(CAR_LENGTH if length is None else length, x.shape)
    return length, jnp.broadcast_to(CAR_WIDTH if width is None else width, x.shape)


def feasible_actions(x, u, v, present, length=None):
    """[V, 5] bool: which actions each vehicle may take, from pre-step quantities (§4.3.1 filter);
    `length` [V] of the vehicles (default: all cars)."""
    length, _ = _car_sizes(x, length, None)
    lane = lane_of(u)
    offset = jnp.round((u - (LANE_WIDTH * lane + LANE_WIDTH / 2)) / SUBLANE)
    acc_bad = v >= V_MAX
    dec_bad = ~acc_bad & (v <= V_MIN_DEC)
    left_bad = (lane == NUM_LANES - 1) & (offset >= 1)
    right_bad = ~left_bad & (lane == 0) & (offset <= -1)
    n = x.shape[0]
    ahead = (x[None, :] > x[:, None]) & (v[None, :] < v[:, None]) & present[None, :]
    ahead &= ~jnp.eye(n, dtype=bool)
    gap = x[None, :] - x[:, None] - length[None, :]
    closing = jnp.where(ahead, v[:, None] - v[None, :], 1.0)
    ttc = gap / closing
    # the code's 1.8 m lateral window, whatever the other vehicle's width
    danger = jnp.any(ahead & (ttc <= TTC_LIMIT) & (jnp.abs(u[None, :] - u[:, None]) < CAR_WIDTH), 1)
    bad = jnp.stack([danger, danger | acc_bad, dec_bad, left_bad, right_bad], axis=1)
    return ~bad


def filter_actions(actions, x, u, v, present, length=None):
    """Executed actions [N] of the N egos, the first N of the vehicles: each infeasible action
    replaced by the first feasible one in the order NOOP, ACC, DEC, LEFT, RIGHT."""
    ok = feasible_actions(x, u, v, present, length)[:actions.shape[0]]
    chosen_ok = jnp.take_along_axis(ok, actions[:, None], axis=1)[:, 0]
    return jnp.where(chosen_ok, actions, jnp.argmax(ok, axis=1)).astype(jnp.int32)


def _grid_rows(x, n_egos, length):
    """[egos, V] the grid row just ahead of each vehicle's front and its row count round(L/2.5)."""
    r_hi = jnp.round((x[None, :] - x[:n_egos, None]) / ROW_M).astype(jnp.int32) + 7
    return r_hi, jnp.round(length / ROW_M).astype(jnp.int32)[None, :]


def occupancy_grids(x, u, v, present, length=None, n_egos=None):
    """[n_egos, 13, 9, 2] observation grids of the first `n_egos` vehicles (default all) over the
    vehicles in `present` (§4.3.1), each covering round(L/2.5) rows."""
    n = x.shape[0] if n_egos is None else n_egos
    length, _ = _car_sizes(x, length, None)
    rows, cols = jnp.arange(GRID_ROWS), jnp.arange(GRID_COLS)
    r_hi, n_rows = _grid_rows(x, n, length)  # [ego, k]
    col = jnp.round((u[:n, None] - u[None, :]) / SUBLANE).astype(jnp.int32) + 4
    cover = ((rows[None, None, :, None] >= (r_hi - n_rows)[..., None, None])
             & (rows[None, None, :, None] < r_hi[..., None, None])
             & (cols[None, None, None, :] == col[..., None, None])
             & present[None, :, None, None])  # [ego, k, 13, 9]
    occupied = jnp.any(cover, axis=1)
    last = jnp.argmax(cover * (jnp.arange(x.shape[0]) + 1)[None, :, None, None], axis=1)  # the last writer
    rel = (v[None, :] - v[:n, None]) / 25.0  # [ego, k]
    rel_last = jnp.take_along_axis(rel, last.reshape(n, -1), axis=1).reshape(last.shape)
    speed = jnp.where(occupied, rel_last, -v[:n, None, None] / 25.0)
    lsub = sublane(u[:n])[:, None] + 4 - cols[None, :]  # [ego, 9]
    off_road = (lsub <= 0) | (lsub >= NUM_SUBLANES)
    occupied = occupied | off_road[:, None, :]
    return jnp.stack([occupied.astype(jnp.float32), speed], axis=-1)


def side_collision(x, u, executed, present, length=None):
    """[N] bool for the N egos (the first N vehicles): the code's rule-based side collision, from
    post-step positions: executed LEFT with another vehicle in grid row 6, columns 2-3, or RIGHT
    with columns 5-6."""
    n = executed.shape[0]
    length, _ = _car_sizes(x, length, None)
    r_hi, n_rows = _grid_rows(x, n, length)
    in_row6 = (r_hi - n_rows <= 6) & (6 < r_hi)
    col = jnp.round((u[:n, None] - u[None, :]) / SUBLANE).astype(jnp.int32) + 4
    other = present[None, :] & ~jnp.eye(n, x.shape[0], dtype=bool)
    left = jnp.any(other & in_row6 & ((col == 2) | (col == 3)), 1)
    right = jnp.any(other & in_row6 & ((col == 5) | (col == 6)), 1)
    return ((executed == LEFT) & left) | ((executed == RIGHT) & right)


def overlap_pairs(x, u, present, length=None, width=None):
    """[V, V] bool: the two present vehicles' footprints [x - L, x] x [u - W/2, u + W/2] intersect
    with positive area."""
    length, width = _car_sizes(x, length, width)
    long = (x[:, None] - length[:, None] < x[None, :]) & (x[None, :] - length[None, :] < x[:, None])
    lat = jnp.abs(u[:, None] - u[None, :]) < (width[:, None] + width[None, :]) / 2
    return long & lat & present[:, None] & present[None, :] & ~jnp.eye(x.shape[0], dtype=bool)


def overlaps(x, u, present, length=None, width=None):
    """[V] bool: the vehicle's footprint overlaps another present vehicle's."""
    return jnp.any(overlap_pairs(x, u, present, length, width), axis=1)


def branch_rates(branch, valid):
    """[5] share of agent-episodes ending in each reward branch 1..5 of `BRANCHES` (collision,
    goal_centre, timeout, off_centre, side_collision), from a batch's `info["branch"]` [T, E, N]
    and `valid` [T, E]: each ends an agent's episode once, 0 ("none") is every other step."""
    ended = jax.nn.one_hot(branch, len(BRANCHES))[..., 1:] * valid[..., None, None]
    return jnp.sum(ended, axis=(0, 1, 2)) / (branch.shape[1] * branch.shape[2])


def vehicles(x, u, v, active, traffic: merge_traffic.Traffic):
    """Every vehicle on the road, egos first: (x, u, v, length, width, present), each [N + M]."""
    n = x.shape[0]
    cat = lambda ego, bg: jnp.concatenate([ego, bg])  # noqa: E731
    return (cat(x, traffic.x), cat(u, traffic.u), cat(v, traffic.v),
            cat(jnp.full((n,), CAR_LENGTH), traffic.length),
            cat(jnp.full((n,), CAR_WIDTH), traffic.width), cat(active, traffic.active))


class LaneMerge(Environment):
    """The SUMO double-lane merge; `preset` in `PRESETS`, `lateral_mode` "rate" (default) or
    "instant", `traffic` "off" (the empty road of training) or "heavy" (Table A.1's tests: the
    background stream of `envs.merge_traffic`, which carries over from one episode to the next)."""

    def __init__(self, num_agents: int = 2, preset: str = "C1", lateral_mode: str = "rate",
                 traffic: str = "off"):
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is invalid; valid: {', '.join(PRESETS)}")
        if lateral_mode not in ("rate", "instant"):
            raise ValueError(f"lateral_mode={lateral_mode!r} is invalid; valid: rate, instant")
        if traffic not in ("off", "heavy"):
            raise ValueError(f"traffic={traffic!r} is invalid; valid: off, heavy")
        n = int(num_agents)
        if n < 1:
            raise ValueError(f"num_agents={num_agents} must be >= 1")
        self.num_agents, self.preset, self.lateral_mode = n, preset, lateral_mode
        self.traffic = traffic
        self.slots = merge_traffic.SLOTS if traffic == "heavy" else 0
        self.obs_layout = {"self": (0, 3), "goal": (3, 7), "others": (7, 7 + GRID_ROWS * GRID_COLS * 2)}
        self.obs_dim = 7 + GRID_ROWS * GRID_COLS * 2

    @property
    def default_params(self) -> EnvParams:
        if self.num_agents == 1:  # Stage 1 [C-CM3 config_sumo_stage1.json] (§4.3.2 table)
            return EnvParams(prob_random=1.0, depart_sigma=0.4)
        if self.preset == "C2" or self.num_agents != 2:
            return EnvParams(prob_random=1.0)
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        p = float(params.prob_random)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"prob_random={params.prob_random} must be a probability in [0, 1]")
        if p != 1.0 and (self.preset == "C2" or self.num_agents != 2):
            raise ValueError(f"prob_random={params.prob_random} is invalid for preset "
                             f"{self.preset} with {self.num_agents} agent(s) (the presets C1, C3, "
                             "C4 are for 2 agents; C2 is uniform); valid: 1.0")
        if float(params.depart_sigma) < 0 or float(params.min_insert_gap) < 0:
            raise ValueError(f"depart_sigma={params.depart_sigma} and min_insert_gap="
                             f"{params.min_insert_gap} must be >= 0")

    def reset_env(self, key, params):
        k_egos, k_traffic = jax.random.split(key)
        traffic = merge_traffic.empty(0)
        if self.slots:  # the stream before the first episode (§4.3.2 reset 6)
            traffic = merge_traffic.warm_up(k_traffic, self.slots, merge_traffic.WARMUP_STEPS, DT)
        return self._insert_egos(k_egos, params, traffic)

    def reset_from(self, key, final_state, params):
        """The next episode's egos enter the stream the last one left (continuous across
        episodes, as in the original); on the empty road this is `reset_env`."""
        if not self.slots:
            return self.reset_env(key, params)
        return self._insert_egos(jax.random.split(key)[0], params, final_state.traffic)

    def _insert_egos(self, key, params, traffic):
        n = self.num_agents
        k_coin, k_lanes, k_depart, k_wait = jax.random.split(key, 4)
        uniform = jax.random.randint(k_lanes, (2, n), 0, NUM_LANES)
        lanes, goals = PRESETS[self.preset]
        use_random = jax.random.uniform(k_coin) < params.prob_random
        if n == 2:
            lane = jnp.where(use_random, uniform[0], jnp.asarray(lanes))
            goal = jnp.where(use_random, uniform[1], jnp.asarray(goals))
        else:
            lane, goal = uniform[0], uniform[1]
        delta = params.depart_sigma * jax.random.normal(k_depart, (n,))
        depart = jnp.maximum(1, jnp.ceil(delta / DT)).astype(jnp.int32)
        if self.slots:  # SUMO's delayed insertion into the stream, with the same-lane gap rule
            x, traffic = merge_traffic.insert_egos(
                k_wait, traffic, lane, depart, V_START, CAR_LENGTH, CAR_WIDTH,
                params.min_insert_gap - CAR_LENGTH, DT)
        else:
            x = V_START * DT * (jnp.max(depart) - depart + 1).astype(jnp.float32)
            # same start lane: the earlier ego drives on while SUMO delays the later one (§4.3.2
            # reset 5); ties go to the lower index. Later departures are settled first.
            order = jnp.argsort(-(depart * n + jnp.arange(n)))  # latest first, ties: higher index
            for r in range(1, n):
                i = order[r]
                later = order[:r]
                same = lane[later] == lane[i]
                floor = jnp.max(jnp.where(same, x[later] + params.min_insert_gap, -jnp.inf))
                x = x.at[i].set(jnp.maximum(x[i], floor))
        u = LANE_WIDTH * lane.astype(jnp.float32) + LANE_WIDTH / 2
        v = jnp.full((n,), V_START, jnp.float32)
        active = jnp.ones((n,), bool)
        obs = self._observe(x, u, v, goal, active, traffic)
        state = EnvState(x=x, u=u, v=v, lat_rem=jnp.zeros((n,), jnp.float32),
                         goal=goal.astype(jnp.int32), active=active,
                         counter=jnp.ones((n,), jnp.int32), obs=obs, time=jnp.zeros((), jnp.int32),
                         traffic=traffic)
        return obs, state

    def _observe(self, x, u, v, goal, present, traffic=None):
        traffic = merge_traffic.empty(0) if traffic is None else traffic
        sigma = sublane(u)
        o_self = jnp.stack([v / 29.0, (4 * goal + 2 - sigma) / 16.0, (GOAL_X - x) / ROAD_LENGTH], 1)
        all_x, all_u, all_v, length, _, all_present = vehicles(x, u, v, present, traffic)
        grid = occupancy_grids(all_x, all_u, all_v, all_present, length, x.shape[0])
        grid = grid.reshape(x.shape[0], -1)
        return jnp.concatenate([o_self, jax.nn.one_hot(goal, NUM_LANES), grid], 1).astype(jnp.float32)

    def step_env(self, key, state, actions, params):
        n = self.num_agents
        actions = jnp.asarray(actions, jnp.int32)
        active = state.active
        traffic = merge_traffic.empty(0) if state.traffic is None else state.traffic
        pre = vehicles(state.x, state.u, state.v, active, traffic)
        executed = filter_actions(actions, pre[0], pre[1], pre[2], pre[5], pre[3])
        dv = jnp.asarray([0.0, ACCEL, -ACCEL, 0.0, 0.0])[executed] * DT
        v = jnp.where(active, jnp.clip(state.v + dv, 0.0, V_MAX), state.v)
        x = jnp.where(active, state.x + DT * v, state.x)
        shift = jnp.asarray([0.0, 0.0, 0.0, SUBLANE, -SUBLANE])[executed]
        request = (executed == LEFT) | (executed == RIGHT)
        if self.lateral_mode == "rate":  # a new request replaces the remaining shift
            lat_rem = jnp.where(request, shift, state.lat_rem)
            move = jnp.clip(lat_rem, -LAT_STEP, LAT_STEP)
            lat_rem = jnp.where(active, lat_rem - move, state.lat_rem)
        else:
            move, lat_rem = shift, state.lat_rem
        u = jnp.where(active, jnp.clip(state.u + move, CAR_WIDTH / 2, NUM_LANES * LANE_WIDTH
                                       - CAR_WIDTH / 2), state.u)
        if self.slots:  # the background plans from the pre-step positions, as the egos do
            traffic = merge_traffic.step(key, traffic, state.x, state.u, state.v, active,
                                         CAR_LENGTH, CAR_WIDTH, DT)
        all_x, all_u, _, length, width, present = vehicles(x, u, v, active, traffic)
        pairs = overlap_pairs(all_x, all_u, present, length, width)
        crash = jnp.any(pairs[:n], axis=1) & active
        # two background vehicles colliding also ends the episode, with 0 for uninvolved egos
        background_crash = jnp.any(pairs[n:, n:])
        side = side_collision(all_x, all_u, executed, present, length) & active
        sigma = sublane(u)
        past = x > GOAL_X
        centre = past & (sigma == 4 * state.goal + 2)
        timeout = state.counter >= params.max_steps_in_episode
        off_centre = 10.0 * (1.0 - jnp.abs(4 * state.goal + 2 - sigma) / NUM_SUBLANES)
        branch = jnp.select([crash, centre, timeout, past, side], [1, 2, 3, 4, 5], 0)
        value = jnp.asarray([0.0, COLLISION_REWARD, GOAL_REWARD, TIMEOUT_REWARD, 0.0,
                             COLLISION_REWARD])[branch]
        value = jnp.where(branch == 4, off_centre, value)
        value = value - SPEED_PENALTY * ((v >= SPEED_PENALTY_V) & (branch != 1))
        reward = jnp.where(active, value, 0.0)
        branch = jnp.where(active, branch, 0)
        collision = jnp.any((branch == 1) | (branch == 5)) | background_crash
        still = active & (branch == 0) & ~collision
        counter = state.counter + (active & (branch != 1))
        obs = jnp.where(active[:, None], self._observe(x, u, v, state.goal, active, traffic), state.obs)
        next_state = state.replace(x=x, u=u, v=v, lat_rem=lat_rem, active=still, counter=counter,
                                   obs=obs, time=state.time + 1,
                                   traffic=traffic if self.slots else state.traffic)
        terminated = collision | ~jnp.any(still)
        info = {"state": self.state_vector(state), "next_state": self.state_vector(next_state),
                "goal": jax.nn.one_hot(state.goal, NUM_LANES), "executed_action": executed,
                "branch": branch, "collision": collision}
        return obs, next_state, reward, terminated, info

    @staticmethod
    def outcome_rates(info, valid) -> dict:
        """`{branch name: share of agent-episodes ending in it}` of a batch (`branch_rates`), and
        `ended_by_others`: the share cut short by another vehicle's collision."""
        rates = branch_rates(info["branch"], valid)
        out = {name: rates[i] for i, name in enumerate(BRANCHES[1:])}
        return {**out, "ended_by_others": 1.0 - jnp.sum(rates)}

    @staticmethod
    def state_vector(state) -> jax.Array:
        """Global state per ego [N, 3]: [(x - 100)/200, (u - 6.4)/12.8, v/29] (§4.3.1)."""
        return jnp.stack([(state.x - 100.0) / 200.0, (state.u - 6.4) / 12.8, state.v / 29.0], 1)

    def get_obs(self, state, params=None):
        return state.obs

    def observation_space(self, params=None):
        return spaces.Box(-2.0, 2.0, (self.obs_dim,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)
