"""STS2, the Simple Team Sports Simulator 3v3, as HSD's environment (cm3-hsd.md §6; thesis §4.3.1,
[C-STS2 sts2/game/*], [C-HSD env/env_wrapper.py]).

Six round players (radius 0.75) on an 18 x 36 field, home 0-2 then away 3-5; home attacks the net at
(0, -18), away the net at (0, +18). One env step is one tick (§6.2): (1) AI update in player order
(learning home agents map their action, §6.6; every other player is the scripted SimplePlayer of
§6.5); (2) locomotion v <- v + 0.05·ι·(‖ι‖ - ι·v/0.5), |v| <= 0.5, p <- p + v (no friction);
(3) board clamp to |x| <= 8.25, |z| <= 17.25; (4) the 30 ordered player pairs in order, in place:
players closer than 1.5 are pushed 1.515 apart with averaged velocities, and a player touching the
puck carrier of the other team while not stunned checks it (carrier stunned 20 ticks, checker gains
control with response time 15); (5) the controller's SHOOT or PASS (with interception, §6.2).

Episode (HSD wrapper, §6.4): random start (§6.3), one tick with the home team idle, then up to 500
steps; it terminates when a goal is scored and is truncated at 500 (a draw). Team reward (§6.7,
broadcast to every learning agent): +-1 for a goal, +-0.1 for a possession change, +-0.001 per tick
of (no) home possession, and -0.5 at the 500th step (draw penalty, code only, A-HSD-4).

Learning agents are the first `num_agents` home players; the rest of the home team is scripted
(ad-hoc teammates, A-HSD-8). Actions (9): 0 nothing, 1 shoot, 2-4 pass to home player 0-2,
5 toward the own net (+z), 6 toward the opponent net (-z), 7 +x, 8 -x; a puck action by a player
without the puck, or a pass to oneself, becomes 0 (§6.6).

Observation of home agent i (31, §6.8): [ρ(p_puck - p_i), v_puck - v_i], i controls, home controls,
[n(p_i), v_i], the teammates' [ρ(Δp), Δv], away controls, the away players' [ρ(Δp), Δv]; with
n(x, z) = (x/9, z/18), ρ = (Δx/18, Δz/36), raw velocities (A-HSD-15). `info["state"]` /
`info["next_state"]` hold the 34-entry global state before / after the step; `info["outcome"]`
(+1 win, -1 lose, 0), `info["events"]` [2, 9] counts of `EVENTS` by the team of the event's source, and
`info["role_events"]` [N, 8] the §6.9 events (`ROLE_EVENTS`) credited to each learning agent.

Deviation: the initial possession team is Bernoulli(0.5), not the cumulative score parity (the
framework's auto-reset does not see the previous state; §6.4 allows it, A-HSD-7). Random draws use
JAX streams, so only distributions match the original (§6.10, §6.11).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

NONE, SHOOT, PASS_1, PASS_2, PASS_3, STUNNED = 0, 1, 2, 3, 4, 5
NUM_ACTIONS = 9
_INPUTS = np.array([[0, 0]] * 5 + [[0, 1], [0, -1], [1, 0], [-1, 0]], np.float32)  # (x, z), §6.6
RADIUS, MAX_SPEED, MAX_ACCEL = 0.75, 0.5, 0.05
BOARD_X, BOARD_Z = 9.0 - RADIUS, 18.0 - RADIUS
PUSH = 0.7575  # half of the push-out distance 1.515
MIN_CHANCE, MAX_CHANCE, MAX_DIST, INTERCEPT_SPEED = 0.5, 1.0, 3.5, 0.05
CHECK_STUN, SHOOTER_TIME, PASSER_TIME, RECEIVER_TIME = 20, 10, 10, 15
SHOT_SCALE = 4.0
SHOOT_DIST = 0.3 * float(np.hypot(18.0, 36.0))  # 12.0748
SHOT_THRESHOLD, PASS_THRESHOLD, CHASERS = 0.3, 0.8, 2
NETS = np.array([[0.0, -18.0], [0.0, 18.0]], np.float32)  # attacking net of home, away
TEAM = np.array([0, 0, 0, 1, 1, 1])
PAIRS = np.array([(i, j) for i in range(6) for j in range(6) if i != j], np.int32)
EVENTS = ("SHOT", "GOAL", "MISSED_SHOT", "SHOT_BLOCK", "PASS", "PASS_COMPLETE", "PASS_INTERCEPT",
          "CHECK", "GAIN_CONTROL")
(EV_SHOT, EV_GOAL, EV_MISSED, EV_BLOCK, EV_PASS, EV_COMPLETE, EV_INTERCEPT, EV_CHECK,
 EV_GAIN) = range(9)


@struct.dataclass
class EnvState:
    position: jax.Array  # [6, 2] (x, z)
    velocity: jax.Array  # [6, 2]
    action: jax.Array  # [6] int32 discrete action of the last tick
    action_time: jax.Array  # [6] int32 stun / response ticks left
    controller: jax.Array  # int32 player 0-5 holding the puck
    score: jax.Array  # [2] int32 home, away goals this episode
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 500
    goal_reward: float = 1.0
    possession_change_reward: float = 0.1
    possession_reward: float = 0.001  # 1/(2·500), code (A-HSD-3)
    draw_penalty: float = 0.5  # code only (A-HSD-4); 0 disables it


def _intercept_terms(src, tgt, position, capable):
    """Per opponent slot k (3): (eligible, c, prob) of intercept(); and `through` (§6.2)."""
    dist = jnp.linalg.norm(tgt - src) + 1e-10
    d_hat = (tgt - src) / dist
    s = (position - src) @ d_hat
    beyond = s > dist
    x_point = jnp.where(beyond[:, None], tgt, src + s[:, None] * d_hat)
    s = jnp.where(beyond, dist, s)
    c = jnp.maximum(0.0, jnp.linalg.norm(position - x_point, axis=1) - INTERCEPT_SPEED * s)
    prob = jnp.where(c > MAX_DIST, 0.0, MIN_CHANCE + (MAX_CHANCE - MIN_CHANCE) * c / MAX_DIST)
    eligible = capable & (s > 0)
    through = jnp.prod(jnp.where(eligible, 1.0 - prob, 1.0))
    return eligible, c, prob, through, dist


def through(src, tgt, position, capable):
    """Deterministic probability that nothing intercepts src -> tgt (the scripted players' test)."""
    return _intercept_terms(src, tgt, position, capable)[3]


def intercept(src, tgt, position, capable, uniforms):
    """intercept(): index 0-2 of the intercepting opponent slot or -1, drawing `uniforms` [3]."""
    eligible, c, prob, _, dist = _intercept_terms(src, tgt, position, capable)
    best, shortest = jnp.int32(-1), dist + 1.0
    for k in range(3):
        win = eligible[k] & (c[k] < shortest) & (uniforms[k] < prob[k])
        best = jnp.where(win, k, best)
        shortest = jnp.where(win, c[k], shortest)
    return best


def on_chance(position, net):
    """Probability that a shot from `position` is on net: (|Δz|/‖Δ‖)·min(1, 4/|Δz|)."""
    delta = net - position
    dz = jnp.abs(delta[1])
    safe = jnp.where(dz > 0, dz, 1.0)
    return jnp.where(dz > 0, dz / jnp.linalg.norm(delta) * jnp.minimum(1.0, SHOT_SCALE / safe), 0.0)


def _rectify(inp):
    norm = jnp.linalg.norm(inp)
    inp = jnp.where(norm > 0.01, inp / jnp.where(norm > 0, norm, 1.0), inp)
    return jnp.round(inp)


def scripted_think(g, position, stunned, action_time, controller):
    """SimplePlayer.custom_think for player `g` (may be traced): (action, input) before
    rectification (§6.5). `stunned` [6] and `action_time` [6] are what player g sees during the
    sequential AI update: players before it hold this tick's values, later ones last tick's."""
    team = g // 3
    net = jnp.asarray(NETS)[team]
    p = position[g]
    mates = 3 * team + jnp.arange(3)
    opp = 3 * (1 - team) + jnp.arange(3)
    capable = action_time[opp] == 0  # our opponents, when we hold the puck
    to_net = jnp.linalg.norm(net - p)
    shoot = (to_net < SHOOT_DIST) & (
        on_chance(p, net) * through(p, net, position[opp], capable) > SHOT_THRESHOLD)
    act, best = jnp.int32(NONE), to_net
    for m in range(3):  # pass scan in team order
        j = mates[m]
        ok = ((j != g) & ~stunned[j] & (jnp.linalg.norm(net - position[j]) < best)
              & (through(p, position[j], position[opp], capable) > PASS_THRESHOLD))
        act = jnp.where(ok, PASS_1 + m, act)
        best = jnp.where(ok, jnp.linalg.norm(net - position[j]), best)
    act = jnp.where(shoot, SHOOT, act)
    centre = jnp.mean(position[mates], axis=0)
    e_hat = (p - centre) / (jnp.linalg.norm(p - centre) + 1e-10)
    support = (net + p) / 2 + 9.0 * e_hat - p
    carrier = position[controller]
    dist = jnp.linalg.norm(position[mates] - carrier, axis=1)
    k = g - 3 * team
    rank = jnp.sum((dist < dist[k]) | ((dist == dist[k]) & (jnp.arange(3) < k)))
    own_net = jnp.asarray(NETS)[1 - team]
    defend = jnp.where(rank < CHASERS, carrier - p, (carrier + own_net) / 2 - p)
    inp = jnp.where(controller == g, net - p, jnp.where(controller // 3 == team, support, defend))
    act = jnp.where(controller == g, act, NONE)
    return act, inp


def move(position, velocity, inp, action_time):
    """Locomotion (ACCELERATION_MODEL, no friction) and the board clamp (§6.2 steps 2-3), for the
    rectified inputs `inp` [6, 2]: (position, velocity)."""
    norm = jnp.linalg.norm(inp, axis=1, keepdims=True)
    inp = jnp.where(norm > 1, inp / jnp.where(norm > 0, norm, 1.0), inp)
    inp = jnp.where((action_time > 0)[:, None], 0.0, inp)
    norm = jnp.linalg.norm(inp, axis=1, keepdims=True)
    velocity = velocity + MAX_ACCEL * inp * (norm - jnp.sum(inp * velocity, 1, keepdims=True)
                                             / MAX_SPEED)
    speed = jnp.linalg.norm(velocity, axis=1, keepdims=True)
    velocity = jnp.where(speed > MAX_SPEED, MAX_SPEED * velocity / jnp.where(speed > 0, speed, 1),
                         velocity)
    position = position + velocity
    bound = jnp.array([BOARD_X, BOARD_Z])
    clamped = jnp.abs(position) > bound
    return jnp.clip(position, -bound, bound), jnp.where(clamped, 0.0, velocity)


def collide(position, velocity, action, action_time, controller):
    """Collisions and checks over the 30 ordered pairs in order, updated in place (§6.2 step 4):
    (position, velocity, action, action_time, controller, events [2, 9])."""

    def pair(n, carry):
        position, velocity, action, action_time, controller, events = carry
        i, j = jnp.asarray(PAIRS)[n, 0], jnp.asarray(PAIRS)[n, 1]
        touch = jnp.linalg.norm(position[i] - position[j]) <= 2 * RADIUS
        centre = (position[i] + position[j]) / 2
        v_mean = (velocity[i] + velocity[j]) / 2

        def push(p):
            d = p - centre
            nd = jnp.linalg.norm(d)
            return centre + PUSH * jnp.where(nd <= 0.001, jnp.array([1.0, 0.0]),
                                             d / jnp.where(nd > 0, nd, 1.0))

        new_i, new_j = push(position[i]), push(position[j])
        position = jnp.where(touch, position.at[i].set(new_i).at[j].set(new_j), position)
        velocity = jnp.where(touch, velocity.at[i].set(v_mean).at[j].set(v_mean), velocity)
        other = (i // 3) != (j // 3)
        check_j = touch & other & (controller == i) & (action_time[j] == 0)
        check_i = touch & other & (controller == j) & (action_time[i] == 0) & ~check_j
        loser = jnp.where(check_j, i, j)
        winner = jnp.where(check_j, j, i)
        check = check_j | check_i
        action = jnp.where(check, action.at[loser].set(STUNNED), action)
        action_time = jnp.where(check, action_time.at[loser].set(CHECK_STUN), action_time)
        action_time = jnp.where(
            check, action_time.at[winner].set(jnp.maximum(action_time[winner], RECEIVER_TIME)),
            action_time)
        controller = jnp.where(check, winner, controller)
        gain = jnp.zeros((2, 9), jnp.int32).at[winner // 3, EV_CHECK].set(1)
        gain = gain.at[winner // 3, EV_GAIN].add(1)
        events = events + check * gain
        return position, velocity, action, action_time, controller, events

    carry = (position, velocity, action, action_time, controller, jnp.zeros((2, 9), jnp.int32))
    return jax.lax.fori_loop(0, len(PAIRS), pair, carry)


def tick(state, home_actions, learner, key):
    """One game tick (§6.2). `home_actions` [3] int in 0-8 for the home players flagged in the
    static tuple `learner` (others scripted; away always scripted). Returns (state, events [2, 9])."""
    k_shot, k_int = jax.random.split(key)
    position, velocity = state.position, state.velocity
    action, action_time, controller = state.action, state.action_time, state.controller
    # 1. AI update. It runs in player order; the order only decides which values a player sees
    # of the others, so it is computed in closed form: players before g are updated this tick.
    at_dec = jnp.maximum(0, action_time - 1)
    order = jnp.arange(6)
    earlier = order[None, :] < order[:, None]  # [g, k]: k updates before g
    view_at = jnp.where(earlier | jnp.eye(6, dtype=bool), at_dec[None, :], action_time[None, :])
    view_stunned = jnp.where(earlier, at_dec[None, :] > 0, action[None, :] == STUNNED)
    act, inp = jax.vmap(scripted_think, in_axes=(0, None, 0, 0, None))(
        order, position, view_stunned, view_at, controller)
    for g in range(3):
        if learner[g]:
            a = home_actions[g]
            act = act.at[g].set(jnp.where(a <= PASS_3, a, NONE))
            inp = inp.at[g].set(jnp.asarray(_INPUTS)[a])
    action_time = at_dec
    action = jnp.where(at_dec > 0, STUNNED, act).astype(jnp.int32)
    inp = jax.vmap(_rectify)(jnp.where((at_dec > 0)[:, None], 0.0, inp))
    position, velocity = move(position, velocity, inp, action_time)
    position, velocity, action, action_time, controller, events = collide(
        position, velocity, action, action_time, controller)

    # 5. action update: the controller's shot or pass
    c_team = controller // 3
    opp_idx = 3 * (1 - c_team) + jnp.arange(3)
    opp_pos = position[opp_idx]
    capable = action_time[opp_idx] == 0
    src = position[controller]
    net = jnp.asarray(NETS)[c_team]
    u = jax.random.uniform(k_int, (3,))
    act = action[controller]
    is_shot = act == SHOOT
    mate = 3 * c_team + act - PASS_1
    is_pass = (act >= PASS_1) & (act <= PASS_3) & (mate != controller)
    tgt = jnp.where(is_shot, net, position[jnp.clip(mate, 0, 5)])
    blocker = intercept(src, tgt, opp_pos, capable, u)
    blocked = blocker >= 0
    thief = opp_idx[jnp.maximum(blocker, 0)]
    on = jax.random.uniform(k_shot) < on_chance(src, net)
    goal = is_shot & ~blocked & on
    missed = is_shot & ~blocked & ~on
    rebound = jnp.argmin(jnp.linalg.norm(position - net, axis=1))  # first on ties, either team
    shooter_time = jnp.where(is_shot, SHOOTER_TIME, jnp.where(is_pass, PASSER_TIME, 0))
    action_time = action_time.at[controller].set(jnp.maximum(action_time[controller], shooter_time))
    new_ctrl = jnp.where(blocked, thief, jnp.where(is_pass, mate, jnp.where(missed, rebound, -1)))
    moves = (is_shot | is_pass) & (new_ctrl >= 0)
    new_c = jnp.where(moves, new_ctrl, controller)
    action_time = jnp.where(
        moves, action_time.at[new_c].set(jnp.maximum(action_time[new_c], RECEIVER_TIME)), action_time)
    score = state.score.at[c_team].add(goal.astype(jnp.int32))
    zero = jnp.zeros((), bool)
    by_carrier = jnp.stack([is_shot, goal, missed, zero, is_pass, is_pass & ~blocked, zero, zero,
                            zero])
    by_opponent = jnp.zeros((9,), bool).at[EV_BLOCK].set(is_shot & blocked).at[EV_INTERCEPT].set(
        is_pass & blocked)
    gained = jnp.zeros((9,), bool).at[EV_GAIN].set(moves)
    team_of = lambda t: jax.nn.one_hot(t, 2, dtype=jnp.int32)[:, None]  # noqa: E731
    ev = team_of(c_team) * by_carrier + team_of(1 - c_team) * by_opponent + team_of(new_c // 3) * gained
    events = events + ev
    state = state.replace(position=position, velocity=velocity, action=action,
                          action_time=action_time, controller=new_c, score=score)
    return state, events


ROLE_EVENTS = ("goal", "offensive_rebound", "shot_attempt", "made_pass", "received_pass", "steal",
               "defensive_rebound", "blocked_pass")


def role_events(prev, now) -> jax.Array:
    """[3, 8] int32: which §6.9 game events (`ROLE_EVENTS`) each home player is credited with on
    the tick prev -> now (measure_role_counts, read literally: "prev action" is the action field of
    the state before the tick)."""
    me = jnp.arange(3)
    had, has = prev.controller == me, now.controller == me
    home_prev, away_prev = prev.controller < 3, prev.controller >= 3
    is_pass = lambda a: (a >= PASS_1) & (a <= PASS_3)  # noqa: E731
    home_shot = jnp.any(prev.action[:3] == SHOOT)
    home_pass = jnp.any(is_pass(prev.action[:3]))
    # the away scan stops at the first away player whose action is SHOOT or a pass (§6.9 quirk)
    away = prev.action[3:]
    hit = (away == SHOOT) | is_pass(away)
    first = away[jnp.argmax(hit)]
    away_any = jnp.any(hit)
    scored = now.score[0] > prev.score[0]
    other_home_now = (now.controller < 3) & ~has
    other_home_prev = home_prev & ~had
    events = jnp.stack([
        had & scored,
        home_shot & ~scored & has,
        now.action[:3] == SHOOT,
        home_pass & had & other_home_now,
        home_pass & other_home_prev & has,
        away_prev & ~away_any & has,
        away_prev & away_any & (first == SHOOT) & has,
        away_prev & away_any & is_pass(first) & has,
    ], axis=1)
    return events.astype(jnp.int32)


def start_play(key):
    """START_PLAY (§6.3) and RandomlyGiveControl with a Bernoulli(0.5) team: (state, events)."""
    k_z, k_x, k_team, k_player = jax.random.split(key, 4)
    r = jax.random.uniform(k_z, (6,), maxval=0.5)
    z = jnp.asarray(NETS)[TEAM][:, 1] * (2 * r - 1)
    x = jax.random.randint(k_x, (6,), -9, 9).astype(jnp.float32)
    team = jax.random.bernoulli(k_team).astype(jnp.int32)
    controller = 3 * team + jax.random.randint(k_player, (), 0, 3)
    action_time = jnp.zeros((6,), jnp.int32).at[controller].set(RECEIVER_TIME)
    state = EnvState(position=jnp.stack([x, z], 1), velocity=jnp.zeros((6, 2)),
                     action=jnp.zeros((6,), jnp.int32), action_time=action_time,
                     controller=controller, score=jnp.zeros((2,), jnp.int32),
                     time=jnp.zeros((), jnp.int32))
    events = jnp.zeros((2, 9), jnp.int32).at[team, EV_GAIN].set(1)
    return state, events


def global_state(state) -> jax.Array:
    """The 34-entry state (§6.8)."""
    p, v, c = state.position, state.velocity, state.controller
    scale = jnp.array([9.0, 18.0])
    home_ctrl = jax.nn.one_hot(c, 3) * (c < 3)
    away_ctrl = jax.nn.one_hot(c - 3, 3) * (c >= 3)
    players = jnp.concatenate([p / scale, v], 1)  # [6, 4]
    return jnp.concatenate([p[c] / scale, v[c], home_ctrl, players[:3].reshape(-1), away_ctrl,
                            players[3:].reshape(-1)])


def home_observation(state, i: int) -> jax.Array:
    """The 31-entry observation of home player `i` (§6.8)."""
    p, v, c = state.position, state.velocity, state.controller
    rel = lambda j: jnp.concatenate([(p[j] - p[i]) / jnp.array([18.0, 36.0]), v[j] - v[i]])  # noqa: E731
    mates = [rel(j) for j in range(3) if j != i]
    parts = [rel(c), (c == i)[None], (c < 3)[None], p[i] / jnp.array([9.0, 18.0]), v[i], *mates,
             (c >= 3)[None], *[rel(k) for k in range(3, 6)]]
    return jnp.concatenate([jnp.atleast_1d(x).astype(jnp.float32) for x in parts])


class STS2(Environment):
    """STS2 3v3 with `num_agents` learning home players (1-3); the remaining home players and the
    away team are scripted (§6.5)."""

    team_reward_broadcast = True  # every learner's reward is the one team reward (§6.7)

    def __init__(self, num_agents: int = 3):
        if int(num_agents) not in (1, 2, 3):
            raise ValueError(f"num_agents={num_agents} is invalid for STS2; valid: 1, 2, 3 "
                             "(learning home players; the others are scripted)")
        self.num_agents = int(num_agents)
        self.learner = tuple(g < self.num_agents for g in range(3))

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        for name in ("goal_reward", "possession_change_reward", "possession_reward", "draw_penalty"):
            if float(getattr(params, name)) < 0:
                raise ValueError(f"{name}={getattr(params, name)} must be >= 0 (signs are fixed)")

    def reset_env(self, key, params):
        k_start, k_tick = jax.random.split(key)
        state, _ = start_play(k_start)
        # one tick with the learning home players idle (§6.4)
        state, _ = tick(state, jnp.zeros((3,), jnp.int32), self.learner, k_tick)
        state = state.replace(score=jnp.zeros((2,), jnp.int32), time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        actions = jnp.asarray(actions, jnp.int32)
        home = jnp.zeros((3,), jnp.int32).at[:self.num_agents].set(actions)
        me = jnp.arange(3)
        invalid = ((home >= SHOOT) & (home <= PASS_3) & (state.controller != me)) | (
            home == PASS_1 + me)
        home = jnp.where(invalid, 0, home)
        next_state, events = tick(state, home, self.learner, key)
        next_state = next_state.replace(time=state.time + 1)
        scored = next_state.score - state.score
        before, after = state.controller < 3, next_state.controller < 3
        reward = (params.goal_reward * (scored[0] - scored[1])
                  + params.possession_change_reward * ((~before & after) * 1.0 - (before & ~after))
                  + jnp.where(after, params.possession_reward, -params.possession_reward)
                  - params.draw_penalty * (next_state.time == params.max_steps_in_episode))
        terminated = jnp.any(scored > 0)
        info = {"state": global_state(state), "next_state": global_state(next_state),
                "outcome": scored[0] - scored[1], "events": events,
                "role_events": role_events(state, next_state)[:self.num_agents]}
        reward = jnp.full((self.num_agents,), reward, jnp.float32)
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    def get_obs(self, state, params=None):
        return jnp.stack([home_observation(state, i) for i in range(self.num_agents)])

    def observation_space(self, params=None):
        return spaces.Box(-2.0, 2.0, (31,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)
