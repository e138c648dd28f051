"""Background traffic of the lane merge's heavy-traffic tests (Table A.1; cm3-hsd.md §4.3.1 "Heavy
traffic", §4.3.2 step 4), for `envs.lane_merge` with `traffic="heavy"`.

The original inserts the egos into SUMO's `merge_stage3.rou.xml` stream: per-lane flows at x = 0
with emission probabilities 0.9, 0.9, 0.2, 0.2 per second (lanes 0-3), departure speed 29.1 m/s,
lane 0 20% and lane 1 10% trucks, Krauss drivers (σ = 0.5) who never change lane (mode 513 on a
single-edge route). Here each background vehicle is a slot of fixed-size arrays (`SLOTS`):

* Krauss following [EXT]: the leader is the nearest vehicle ahead, ego or background, whose
  lateral interval overlaps; with gap g = x_k - L_k - x - 2.5 (minGap),
  v_safe = v_k + (g - v_k τ) / ((v + v_k) / (2b) + τ), τ = 1 s, and
  v' = max(0, min(v + a dt, v_des, v_safe) - σ a dt U), U ~ U[0, 1); x += v' dt. Every vehicle
  plans from the pre-step positions (SUMO's simultaneous planMove).
* Removal once the rear passes the road end (x - L > 200).
* Insertion: each step a lane enqueues a vehicle with probability p dt; its queue head enters at
  x = 0 with 29.1 m/s once the last vehicle in the lane has x - L - 2.5 >= 29.1 τ (one per lane
  and step; none while every slot is taken). Type: truck (vClass trailer, L 16.5 [EXT], W 2.55,
  a 1.1, b 4.0, v_max 35) with the lane's share, else car (L 5, W 1.8, a 2.6, b 4.5, v_max 50);
  desired speed min(v_max, 30 f), f ~ N(1, 0.1) clipped to [0.2, 2] (speedDev 0.1).

Lost (§4.3.2): SUMO's insertion checks beyond the gap rule, its exact Krauss variant (action steps,
emergency braking), teleports, random streams, reactions to an ego that only encroaches laterally.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

SLOTS = 64  # M: 200 m of four lanes hold about 15 background vehicles at these flows
WARMUP_STEPS = 200  # from an empty road before the first episode (§4.3.2 reset 6)
FLOW = (0.9, 0.9, 0.2, 0.2)  # emissions per second at x = 0, lanes 0-3 [merge_stage3.rou.xml]
TRUCK_SHARE = (0.2, 0.1, 0.0, 0.0)
DEPART_SPEED, SPEED_LIMIT = 29.1, 30.0
TAU, DAWDLE, MIN_GAP = 1.0, 0.5, 2.5  # Krauss τ, σ; SUMO's default minGap
# length, width, accel, decel, v_max [SUMO passenger and trailer vTypes, EXT]
CAR = (5.0, 1.8, 2.6, 4.5, 50.0)
TRUCK = (16.5, 2.55, 1.1, 4.0, 35.0)
QUEUE_CAP = 1_000  # lanes 0-1 saturate (at most about 0.8 insertions/s), so their queues grow


@struct.dataclass
class Traffic:
    """The background vehicles, `M` slots (M = 0 on the empty road of training)."""

    x: jax.Array  # [M] front bumper, m
    lane: jax.Array  # [M] int32 (never changes)
    v: jax.Array  # [M]
    v_des: jax.Array  # [M] desired speed
    length: jax.Array  # [M]
    width: jax.Array  # [M]
    accel: jax.Array  # [M]
    decel: jax.Array  # [M]
    active: jax.Array  # [M] bool, on the road
    queue: jax.Array  # [4] int32, vehicles waiting at x = 0 per lane

    @property
    def u(self) -> jax.Array:
        """Lateral centre (m from the right edge): background vehicles keep their lane's centre."""
        return 3.2 * self.lane.astype(jnp.float32) + 1.6


def empty(slots: int) -> Traffic:
    """A road with no background vehicle, `slots` free slots."""
    z = jnp.zeros((slots,), jnp.float32)
    return Traffic(x=z, lane=jnp.zeros((slots,), jnp.int32), v=z, v_des=z, length=z, width=z,
                   accel=z, decel=z, active=jnp.zeros((slots,), bool),
                   queue=jnp.zeros((4,), jnp.int32))


def lane_of(u):
    return jnp.clip(jnp.floor(u / 3.2), 0, 3).astype(jnp.int32)


def step(key, traffic: Traffic, ego_x, ego_u, ego_v, ego_present, ego_length, ego_width,
         dt: float) -> Traffic:
    """One step of the background given the egos' pre-step positions (they lead and block, but
    are not moved here): `move`, then `insert`."""
    k_move, k_insert = jax.random.split(key)
    traffic = move(k_move, traffic, ego_x, ego_u, ego_v, ego_present, ego_length, ego_width, dt)
    return insert(k_insert, traffic, ego_x, ego_u, ego_present, ego_length, dt)


def move(key, traffic: Traffic, ego_x, ego_u, ego_v, ego_present, ego_length, ego_width,
         dt: float) -> Traffic:
    """Krauss moves of the background behind its leaders (pre-step positions), then removal of
    the vehicles past the road end."""
    n = ego_x.shape[0]
    x = jnp.concatenate([ego_x, traffic.x])
    u = jnp.concatenate([ego_u, traffic.u])
    v = jnp.concatenate([ego_v, traffic.v])
    length = jnp.concatenate([jnp.broadcast_to(ego_length, (n,)), traffic.length])
    width = jnp.concatenate([jnp.broadcast_to(ego_width, (n,)), traffic.width])
    present = jnp.concatenate([ego_present, traffic.active])
    m = traffic.x.shape[0]
    ahead = ((x[None, :] > traffic.x[:, None]) & present[None, :]
             & (jnp.abs(u[None, :] - traffic.u[:, None]) < (width[None, :] + traffic.width[:, None]) / 2)
             & ~jnp.eye(m, n + m, n, dtype=bool))  # [follower, vehicle]
    lead = jnp.argmin(jnp.where(ahead, x[None, :], jnp.inf), axis=1)
    gap = x[lead] - length[lead] - traffic.x - MIN_GAP
    v_lead = v[lead]
    v_safe = v_lead + (gap - v_lead * TAU) / ((traffic.v + v_lead) / (2 * traffic.decel) + TAU)
    v_safe = jnp.where(jnp.any(ahead, axis=1), v_safe, jnp.inf)
    wish = jnp.minimum(jnp.minimum(traffic.v + traffic.accel * dt, traffic.v_des), v_safe)
    dawdle = DAWDLE * traffic.accel * dt * jax.random.uniform(key, (m,))
    v_new = jnp.where(traffic.active, jnp.maximum(0.0, wish - dawdle), 0.0)
    x_new = traffic.x + v_new * dt
    active = traffic.active & (x_new - traffic.length <= 200.0)
    return traffic.replace(x=x_new, v=v_new, active=active)


def lane_rear(traffic: Traffic, ego_x, ego_u, ego_present, ego_length) -> jax.Array:
    """[4] the rear x - L of the last vehicle (ego or background) in each lane; inf if none."""
    rear = jnp.concatenate([ego_x - ego_length, traffic.x - traffic.length])
    lane = jnp.concatenate([lane_of(ego_u), traffic.lane])
    present = jnp.concatenate([ego_present, traffic.active])
    in_lane = present[None, :] & (lane[None, :] == jnp.arange(4)[:, None])  # [4, vehicles]
    return jnp.min(jnp.where(in_lane, rear[None, :], jnp.inf), axis=1)


def insert(key, traffic: Traffic, ego_x, ego_u, ego_present, ego_length, dt: float) -> Traffic:
    """Enqueue arrivals, then let each lane's queue head in if its last vehicle has left room."""
    k_arrive, k_type, k_speed = jax.random.split(key, 3)
    queue = jnp.minimum(traffic.queue + (jax.random.uniform(k_arrive, (4,)) < jnp.asarray(FLOW) * dt),
                        QUEUE_CAP)
    last_rear = lane_rear(traffic, ego_x, ego_u, ego_present, ego_length)
    ok = (queue > 0) & (last_rear - MIN_GAP >= DEPART_SPEED * TAU)
    # lanes take the free slots in order; a lane finding none waits (its vehicle stays queued)
    free = ~traffic.active
    rank = jnp.cumsum(ok) - 1
    ok &= rank < jnp.sum(free)
    slots = jnp.where(ok, jnp.argsort(~free, stable=True)[jnp.clip(rank, 0)], free.shape[0])
    truck = jax.random.uniform(k_type, (4,)) < jnp.asarray(TRUCK_SHARE)
    kind = jnp.where(truck[:, None], jnp.asarray(TRUCK), jnp.asarray(CAR))  # [4, 5]
    f = jnp.clip(1.0 + 0.1 * jax.random.normal(k_speed, (4,)), 0.2, 2.0)
    put = lambda a, val: a.at[slots].set(val, mode="drop")  # noqa: E731  (slot M: not inserted)
    traffic = traffic.replace(
        x=put(traffic.x, jnp.zeros(4)), lane=put(traffic.lane, jnp.arange(4)),
        v=put(traffic.v, jnp.full(4, DEPART_SPEED)),
        v_des=put(traffic.v_des, jnp.minimum(kind[:, 4], SPEED_LIMIT * f)),
        length=put(traffic.length, kind[:, 0]), width=put(traffic.width, kind[:, 1]),
        accel=put(traffic.accel, kind[:, 2]), decel=put(traffic.decel, kind[:, 3]),
        active=put(traffic.active, jnp.ones(4, bool)))
    return traffic.replace(queue=queue - ok.astype(jnp.int32))


def warm_up(key, slots: int, steps: int, dt: float) -> Traffic:
    """The stream after `steps` steps from an empty road, with no ego on it."""
    none = jnp.zeros((0,), jnp.float32)

    def body(i, traffic):
        return step(jax.random.fold_in(key, i), traffic, none, none, none, jnp.zeros((0,), bool),
                    none, none, dt)

    return jax.lax.fori_loop(0, steps, body, empty(slots))


def insert_egos(key, traffic: Traffic, lane, depart, speed: float, length: float, width: float,
                rear_gap: float, dt: float, max_wait: int = 500):
    """The egos join the stream as in the original's reset, which steps SUMO until every ego is on
    the road: from step 1 on, ego i enters lane `lane[i]` at x = 0 with `speed` once its departure
    step `depart[i]` has come and the lane's last vehicle has its rear `rear_gap` or more ahead
    (SUMO delays an insertion that does not fit; egos go before the lane's queued background,
    lower index first); entered egos drive on at `speed` while the background lives on; then one
    more (NOOP) step. Returns `(ego_x [N], traffic)`; an ego still out after `max_wait` steps
    enters regardless."""
    n = lane.shape[0]
    u = 3.2 * lane.astype(jnp.float32) + 1.6
    v = jnp.full((n,), speed, jnp.float32)

    def enter(t, x, inside, traffic):
        for i in range(n):
            rear = lane_rear(traffic, x, u, inside, length)[lane[i]]
            go = ~inside[i] & (t >= depart[i]) & (rear >= rear_gap)
            x, inside = x.at[i].set(jnp.where(go, 0.0, x[i])), inside.at[i].set(inside[i] | go)
        return x, inside

    def body(carry):
        t, x, inside, traffic = carry
        t = t + 1
        k_move, k_insert = jax.random.split(jax.random.fold_in(key, t))
        traffic = move(k_move, traffic, x, u, v, inside, length, width, dt)
        x = jnp.where(inside, x + speed * dt, x)
        x, inside = enter(t, x, inside, traffic)
        return t, x, inside, insert(k_insert, traffic, x, u, inside, length, dt)

    carry = (jnp.zeros((), jnp.int32), jnp.zeros((n,), jnp.float32), jnp.zeros((n,), bool), traffic)
    t, x, inside, traffic = jax.lax.while_loop(
        lambda c: ~jnp.all(c[2]) & (c[0] < max_wait), body, carry)
    x = jnp.where(inside, x, 0.0)
    traffic = step(jax.random.fold_in(key, t + 1), traffic, x, u, v, jnp.ones((n,), bool), length,
                   width, dt)
    return x + speed * dt, traffic
