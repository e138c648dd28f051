"""Trust-Your-Brother (D3C §3.3, App. F.2, G; d3c.md §2.4, A15).

A ring of `ring_size` = 6 cells (0..5 clockwise) around a table, one scripted predator and two prey
(the learners). Each prey acts in {STAY, CW (clockwise, +1), CCW (counter-clockwise, -1)}.

Stated facts (d3c.md §2.4): the predator moves toward the nearest prey unless it is already adjacent
to one, then it stays; equidistant prey are chosen by a coin flip. A prey's reward per step is 0 for
staying, `-move_cost` (-0.1) for *attempting* to move, and an extra `-adjacent_penalty` (-1) if the
predator is adjacent to it after moving. Episodes last 5 steps. Both prey observe the same 2-d vector:
for prey 0 ("dark blue"), its counter-clockwise distance to the predator minus its clockwise
distance, then the same for prey 1 ("light blue").

Reconstruction (d3c.md §2.4 table, [ours] there):
- Start: predator at 0, the attacked prey at 2 (one empty cell from the predator), the other prey at
  3 (the prey start in adjacent cells). Which prey is attacked is drawn with probability 1/2 at each
  reset (`attacked_prey = -1`), fixed by `attacked_prey` = 0 or 1, or, with `attacked_prey = -2`
  (`BALANCED`), alternates over the environments of a batch reset (`reset_batch`: prey 0 in even
  environments, prey 1 in odd ones), which gives the paper's balanced batches, 5 episodes each way
  in a batch of 10 (L1098). Episodes started by `step`'s auto-reset draw it at random.
- Moves are simultaneous. A move fails when its target cell holds the predator, or a prey that does
  not vacate it; in addition (our choice where the table is silent) two prey that swap cells, or that
  enter the same empty cell, both fail: on a ring they cannot pass each other. A failed move still
  costs `move_cost` (it was attempted).
- `step_order` (constructor argument): "prey_first" (default, the table's order): prey move, rewards
  against the predator's current cell, then the predator moves one cell. "predator_first": the
  predator moves (toward the prey's current cells), then the prey move and are scored against its new
  cell. "simultaneous": the predator picks its move from the prey's current cells while the prey move
  (their moves fail against its current cell); if a prey enters the cell the predator was heading
  for, the predator stays; rewards against its final cell.

Under "prey_first", scripted play gives (tests/test_trust_your_brother.py): cooperation (both stay at
the first step, then both step away from the predator every step) -0.4 per prey per episode; a
selfish bystander that stays puts the attacked prey next to the predator for 4 steps, -4 when it
stays (-4.4 if it keeps trying to move), and 0 for the bystander (d3c.md §2.4's figures).

`info` every step: `attacked` int32 (the prey attacked at the start of the episode),
`adjacent` bool [2] (predator adjacent after the prey moved, the -1 case), `attempted` bool [2],
`moved` bool [2] (the move succeeded).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

STAY, CW, CCW = 0, 1, 2
RANDOM, BALANCED = -1, -2  # `attacked_prey` values besides 0 and 1
STEP_ORDERS = ("prey_first", "predator_first", "simultaneous")
PREDATOR_START, ATTACKED_START, OTHER_START = 0, 2, 3  # d3c.md §2.4 table


@struct.dataclass
class EnvState:
    predator: jax.Array  # int32 cell
    prey: jax.Array  # [2] int32 cells
    attacked: jax.Array  # int32: the prey that started next to the predator's empty cell
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 5
    move_cost: float = 0.1  # paid for attempting to move (d3c.md §2.4)
    adjacent_penalty: float = 1.0  # paid when the predator is adjacent after the prey moved
    attacked_prey: int = RANDOM  # -1: drawn with p 1/2 each reset; 0 or 1: fixed; -2: balanced


class TrustYourBrother(Environment):
    """Trust-Your-Brother on a ring of `ring_size` cells; see the module docstring."""

    num_agents = 2

    def __init__(self, ring_size: int = 6, step_order: str = "prey_first"):
        # >= 5 keeps the start cells 0, 2, 3 distinct with cell 3 not next to the predator
        if isinstance(ring_size, bool) or not isinstance(ring_size, (int, np.integer)) or ring_size < 5:
            raise ValueError(f"ring_size={ring_size!r} is invalid: must be an integer >= 5")
        if step_order not in STEP_ORDERS:
            raise ValueError(f"step_order={step_order!r} is invalid; valid: "
                             f"{', '.join(map(repr, STEP_ORDERS))}")
        self.ring_size = int(ring_size)
        self.step_order = step_order

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)

        def values(name):
            try:
                return np.asarray(getattr(params, name), np.float64)
            except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
                return None

        for name in ("move_cost", "adjacent_penalty"):
            x = values(name)
            if x is not None and not np.all(np.isfinite(x)):
                raise ValueError(f"{name}={getattr(params, name)!r} is invalid: must be a finite number")
        x = values("attacked_prey")
        if x is not None and not np.all(np.isin(x, (RANDOM, BALANCED, 0, 1))):
            raise ValueError(f"attacked_prey={params.attacked_prey!r} is invalid; valid: -1 (random "
                             f"each episode), -2 (balanced over a batch), 0, 1")

    # ---- ring geometry ---------------------------------------------------------------------------
    def _distance(self, a, b):
        d = (a - b) % self.ring_size
        return jnp.minimum(d, self.ring_size - d)

    def _prey_move(self, prey, actions, predator):
        """Simultaneous prey moves against a predator standing at `predator`: `(new cells, attempted,
        succeeded)`."""
        a = jnp.asarray(actions, jnp.int32)
        attempted = (a == CW) | (a == CCW)
        target = (prey + (a == CW).astype(jnp.int32) - (a == CCW).astype(jnp.int32)) % self.ring_size
        ok = attempted & (target != predator)
        # both fail when they swap or enter the same cell (our reconstruction, module docstring)
        clash = ok[0] & ok[1] & (((target[0] == prey[1]) & (target[1] == prey[0]))
                                 | (target[0] == target[1]))
        ok = ok & jnp.logical_not(clash)
        # a prey blocks a move into its cell unless it moves out; without swaps this is acyclic
        ok = ok & jnp.logical_not((target == prey[::-1]) & jnp.logical_not(ok[::-1]))
        return jnp.where(ok, target, prey), attempted, ok

    def _predator_move(self, key, predator, prey):
        """One cell toward the nearest prey unless one is adjacent; coin flips for equidistant prey
        and (a prey exactly opposite) for the direction."""
        key_prey, key_dir = jax.random.split(key)
        n = self.ring_size
        dist = self._distance(prey, predator)
        nearest = jnp.where(dist[0] == dist[1], jax.random.bernoulli(key_prey).astype(jnp.int32),
                            (dist[1] < dist[0]).astype(jnp.int32))
        target = jnp.where(nearest == 0, prey[0], prey[1])
        cw_steps = (target - predator) % n
        cw = jnp.where(2 * cw_steps == n, jax.random.bernoulli(key_dir), 2 * cw_steps < n)
        step = jnp.where(cw, 1, -1)
        adjacent = jnp.any(dist <= 1)
        return jnp.where(adjacent, predator, (predator + step) % n).astype(jnp.int32)

    # ---- transitions ---------------------------------------------------------------------------------
    def _start(self, attacked, params):
        prey = jnp.where(jnp.arange(2) == attacked, ATTACKED_START, OTHER_START).astype(jnp.int32)
        state = EnvState(
            predator=jnp.asarray(PREDATOR_START, jnp.int32),
            prey=prey,
            attacked=attacked,
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def reset_env(self, key, params):
        coin = jax.random.bernoulli(key).astype(jnp.int32)
        fixed = jnp.asarray(params.attacked_prey, jnp.int32)
        return self._start(jnp.where(fixed < 0, coin, fixed), params)

    def reset_batch(self, keys, params):
        """As `Environment.reset_batch`; with `attacked_prey = -2` prey 0 is attacked in the even
        environments and prey 1 in the odd ones."""
        obs, state = super().reset_batch(keys, params)
        alternate = jnp.arange(keys.shape[0], dtype=jnp.int32) % 2
        attacked = jnp.where(jnp.asarray(params.attacked_prey) == BALANCED, alternate,
                             state.attacked)
        return jax.vmap(self._start, in_axes=(0, None))(attacked, params)

    def step_env(self, key, state, actions, params):
        pred, prey = state.predator, state.prey
        if self.step_order == "prey_first":
            prey, attempted, moved = self._prey_move(prey, actions, pred)
            scored_at = pred
            pred = self._predator_move(key, pred, prey)
        elif self.step_order == "predator_first":
            pred = self._predator_move(key, pred, prey)
            prey, attempted, moved = self._prey_move(prey, actions, pred)
            scored_at = pred
        else:  # simultaneous
            heading = self._predator_move(key, pred, prey)
            prey, attempted, moved = self._prey_move(prey, actions, pred)
            pred = jnp.where(jnp.any(prey == heading), pred, heading)
            scored_at = pred
        adjacent = self._distance(prey, scored_at) == 1
        reward = (-jnp.asarray(params.move_cost, jnp.float32) * attempted.astype(jnp.float32)
                  - jnp.asarray(params.adjacent_penalty, jnp.float32) * adjacent.astype(jnp.float32))
        next_state = EnvState(predator=pred, prey=prey, attacked=state.attacked, time=state.time + 1)
        info = {"attacked": state.attacked, "adjacent": adjacent, "attempted": attempted,
                "moved": moved}
        return self.get_obs(next_state, params), next_state, reward, jnp.zeros((), jnp.bool_), info

    def get_obs(self, state, params=None):
        n = self.ring_size
        ccw = (state.prey - state.predator) % n  # steps counter-clockwise from prey to predator
        cw = (state.predator - state.prey) % n
        features = (ccw - cw).astype(jnp.float32)  # [2]: prey 0's, then prey 1's
        return jnp.broadcast_to(features, (2, 2))

    def observation_space(self, params=None):
        # a prey never shares the predator's cell, so each distance is in 1..n-1
        bound = float(self.ring_size - 2)
        return spaces.Box(-bound, bound, (2,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(3)
