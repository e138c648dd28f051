"""The MGE paper's rabbit-hole game (mge.md §2.3, paper L319) as a tabular Markov game.

The paper's map (Fig. 5 upper right) is lost; this is the recommended reconstruction of mge.md §2.3
and §6 #15, every choice configurable:

* Map: an `n x n` 4-neighbour grid (`grid_size`, default 5; cells row-major, 0 at the top left)
  plus one hole cell H (index n^2), a dead end attached to the boundary cell E = `entrance`
  (row, col), default (0, 0), the top-left corner. H lies beyond E's outer side: above it on the top
  edge, else below on the bottom edge, else left / right (rows first at a corner). From E that
  outward move enters H; from H only the opposite move leads back to E. Both agents may enter.
  The corner was chosen by measurement: with greedy MGE-F play from all 600 starts and a one-time
  prize, the rabbit enters with the fox >= 2 steps from E in 89% of its entries (23% with E at the
  middle of the top edge), and the fox scores 0.09 (mge.md §9 #14; tests/test_mge_paper.py).
* Agents: agent 0 the fox, agent 1 the rabbit (hunter first, as in envs/pursuit.py). Actions
  0 stay, 1 up, 2 down, 3 left, 4 right; moves off the map are masked and, if played, stay in place.
  Moves are simultaneous; a capture is the two agents on one cell (crossing is not a capture).
* Rewards, state rewards on the current joint state every step with R_F = R (as pursuit, §6 #2):
  R_rabbit = +`prize` [rabbit in H] - `capture_reward` [same cell], R_fox = +`capture_reward`
  [same cell]; defaults 0.3 and 2 (L319).
* `prize_once=True` adds a "prize collected" bit to the state: the prize is paid on the first step
  in H only. `capture_terminal=True` adds a game-over state: a capture is paid in the capture state,
  whose every joint action then leads to the absorbing game-over state (reward 0). The registered
  game defaults to the one-time prize, against §2.3's per-step recommendation, because only it
  reproduces the paper's behaviour (fox 0, rabbit entering when the fox is far): with the per-step
  prize (`prize_once=False`, the builder's default) greedy play ends in captures (the fox averages
  2.0 over all starts): the rabbit heads into the dead end with the fox close behind. No termination
  by default (§2.3).
* T = 12 (L319). Starts uniform over the agents on distinct grid cells outside the hole (§6 #20).

Joint states: `fox * C + rabbit` with C = n^2 + 1 cells, plus `C^2` when the prize is collected, and
the game-over state last (`decode` returns all parts).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from envs.pursuit import DOWN, LEFT, RIGHT, STAY, UP, grid_targets
from jaxmcg import tabular

FOX, RABBIT = 0, 1
_OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}


class RabbitHoleMap:
    """The map: `moves[C, 5]` (the cell each action leads to; masked moves stay), `mask[C, 5]`,
    `hole` (H), `entrance` (E's cell index), `dist_to_entrance[C]` (shortest-path steps to E)."""

    def __init__(self, grid_size: int = 5, entrance=(0, 0)):
        if isinstance(grid_size, bool) or int(grid_size) != grid_size or int(grid_size) < 2:
            raise ValueError(f"grid_size={grid_size!r} is invalid: the grid needs an integer n >= 2")
        n = int(grid_size)
        try:
            r, c = (int(x) for x in entrance)
        except (TypeError, ValueError):
            raise ValueError(f"entrance={entrance!r} must be a (row, col) pair") from None
        if not (0 <= r < n and 0 <= c < n) or r not in (0, n - 1) and c not in (0, n - 1):
            raise ValueError(f"entrance={entrance!r} must be a boundary cell of the {n}x{n} grid "
                             f"(row or col in {{0, {n - 1}}})")
        out = UP if r == 0 else DOWN if r == n - 1 else LEFT if c == 0 else RIGHT
        self.grid_size, self.hole, self.entrance = n, n * n, r * n + c
        self.num_cells = n * n + 1
        targets = np.concatenate([grid_targets(n, n), np.full((1, 5), -1)])
        targets[self.entrance, out] = self.hole
        targets[self.hole, _OPPOSITE[out]] = self.entrance
        targets[:, STAY] = np.arange(self.num_cells)
        self.mask = targets >= 0
        self.moves = np.where(self.mask, targets, np.arange(self.num_cells)[:, None])
        rows, cols = np.divmod(np.arange(n * n), n)
        self.dist_to_entrance = np.append(np.abs(rows - r) + np.abs(cols - c), 1)


def rabbit_hole_game(grid_size: int = 5, entrance=(0, 0), prize: float = 0.3,
                     capture_reward: float = 2.0, prize_once: bool = False,
                     capture_terminal: bool = False, dtype=np.float32) -> tabular.TabularGame:
    """The rabbit-hole game of the module docstring (mge.md §2.3)."""
    for key, v in (("prize", prize), ("capture_reward", capture_reward)):
        if not np.isfinite(float(v)):
            raise ValueError(f"{key}={v!r} must be a finite number")
    world = RabbitHoleMap(grid_size, entrance)
    c = world.num_cells
    n_bits = 2 if prize_once else 1
    s_live = n_bits * c * c
    s = s_live + int(bool(capture_terminal))
    bit, fox, rabbit = np.unravel_index(np.arange(s_live), (n_bits, c, c))
    acts = tabular.joint_actions(2, 5)
    nf = world.moves[fox[:, None], acts[None, :, FOX]]
    nr = world.moves[rabbit[:, None], acts[None, :, RABBIT]]
    nbit = bit | (rabbit == world.hole) if prize_once else bit  # collected on the first step in H
    nxt = np.ravel_multi_index((np.broadcast_to(nbit[:, None], nf.shape), nf, nr),
                               (n_bits, c, c))
    caught = fox == rabbit
    in_hole = (rabbit == world.hole) & (bit == 0)
    reward = np.zeros((2, s))
    reward[FOX, :s_live] = capture_reward * caught
    reward[RABBIT, :s_live] = prize * in_hole - capture_reward * caught
    mask = np.ones((2, s, 5), bool)
    mask[FOX, :s_live], mask[RABBIT, :s_live] = world.mask[fox], world.mask[rabbit]
    absorbing = np.zeros(s, bool)
    if capture_terminal:
        nxt[caught] = s_live
        nxt = np.concatenate([nxt, np.full((1, nxt.shape[1]), s_live)])
        absorbing[s_live] = True
    init = np.zeros(s)
    init[:s_live] = (bit == 0) & ~caught & (fox != world.hole) & (rabbit != world.hole)
    return tabular.make_game(nxt, None, reward, final_reward=reward, action_mask=mask,
                             init_dist=init / init.sum(), absorbing=absorbing, num_agents=2,
                             num_actions=5, dtype=dtype)


def decode(joint_state, grid_size: int = 5, prize_once: bool = False):
    """`(fox, rabbit, collected, over)` of joint states (arrays of their shape): the agents' cells
    (n^2 is the hole), the prize-collected bit and whether it is the game-over state (whose cells
    read as -1)."""
    s = jnp.asarray(joint_state)
    c = int(grid_size) ** 2 + 1
    n_bits = 2 if prize_once else 1
    over = s >= n_bits * c * c
    bit, fox, rabbit = jnp.unravel_index(jnp.minimum(s, n_bits * c * c - 1), (n_bits, c, c))
    return (jnp.where(over, -1, fox), jnp.where(over, -1, rabbit), bit.astype(bool), over)


def hole_entries(states, world: RabbitHoleMap, prize_once: bool = False):
    """Rabbit's hole entries along the last axis of rollout `states[..., T+1]`: returns
    `(entered[..., T], fox_distance[..., T])`, where `entered[t]` marks the rabbit at E at step t
    and in H at t+1, and `fox_distance[t]` is the fox's distance to E at step t, when the rabbit
    decided (the quantity of mge.md §9 #14)."""
    fox, rabbit, _, _ = decode(states, world.grid_size, prize_once)
    entered = (rabbit[..., :-1] == world.entrance) & (rabbit[..., 1:] == world.hole)
    dist = jnp.asarray(world.dist_to_entrance)[jnp.maximum(fox[..., :-1], 0)]
    return entered, dist


class RabbitHole(tabular.TabularEnv):
    """`rabbit_hole-v0` (mge.md §2.3): fox (agent 0) chases rabbit (agent 1), T = 12."""

    def __init__(self, grid_size: int = 5, entrance=(0, 0), prize: float = 0.3,
                 capture_reward: float = 2.0, prize_once: bool = True,
                 capture_terminal: bool = False):
        self.map = RabbitHoleMap(grid_size, entrance)
        self.prize_once = bool(prize_once)
        self.game = rabbit_hole_game(grid_size, entrance, prize, capture_reward, prize_once,
                                     capture_terminal)
        self.horizon_default = 12

    action_names = ("stay", "up", "down", "left", "right")
    agent_names = ("fox", "rabbit")

    def describe_state(self, joint_state):
        fox, rabbit, collected, over = (np.asarray(x) for x in decode(
            joint_state, self.map.grid_size, self.prize_once))
        if over:
            return "game over"
        return (f"fox at cell {int(fox)}, rabbit at cell {int(rabbit)}"
                + (", prize collected" if collected else ""))
