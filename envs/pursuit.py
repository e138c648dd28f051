"""The MGE paper's pursuit games on the 9-node graph of its Fig. 2 (mge.md §2.1-§2.2), as tabular
Markov games (`jaxmcg.tabular`).

Reconstruction (mge.md §6 #1): Fig. 2 is lost; its graph is read as a 3x3 grid with nodes 0..8
row-major, node 0 at the top left. Every agent may stay or follow one of its arrows; an arrow set is
a set of directions ("up", "down", "left", "right") offered at every node where the move stays on
the grid, or `"H2"` (all four: the 4-neighbour grid that reproduces Fig. 4, mge.md §8.1), or a bool
array `[9, 5]` naming the valid actions of every node (stay is always valid). Actions are
0 stay, 1 up, 2 down, 3 left, 4 right for every agent; an action without an arrow is masked and,
if played anyway, leaves the agent in place (every joint action has a defined transition). Moves are
simultaneous and deterministic; agents may share or cross nodes.

Rewards are state rewards on the current joint state at every decision, with R_F = R on the state
after the last one (mge.md §6 #2); nothing terminates the game (§6 #3).

* `pursuit-2-v0`, variant 1 (§2.1): agent 0 hunter, agent 1 prey; R_h = -R_p = 0.4 when they share a
  node. Hunter arrows default H2, prey arrows {left, up} (Weinberg & Rosenschein's prey, §2.1
  recommendation). T = 22. Starts uniform over the 72 joint states on distinct nodes (§6 #20). A
  "hunt" is a state with hunter and prey on one node (score = 0.4 x hunts, §2.1 [inferred]).
* `pursuit-3-v0`, variant 2 (§2.2): agents 0, 1 hunters h1, h2 and agent 2 prey, all on H2.
  R_h1 = 0 if h1 is on neither other node, -15/4 if h1 = h2 != p, -10/4 if h1 = h2 = p, +5/4 if
  h1 = p != h2 (h2 symmetric); R_p = -1/8 if a hunter is on its node. T = 3. Named starts
  (L303-L305): I1 = (h1 0, h2 8, p 4), I2 = (0, 8, 2) and T1 = (1, 5, 2), the one-move variant
  (T = 1); `"uniform"` is uniform over the 504 states on distinct nodes.

Joint states ravel the agents' nodes with agent 0 most significant (`positions` decodes them).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxmcg import tabular

STAY, UP, DOWN, LEFT, RIGHT = range(5)
ACTIONS = ("stay", "up", "down", "left", "right")
_DELTAS = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])
SIDE = 3  # the 3x3 reading of Fig. 2 (mge.md §6 #1)
NODES = SIDE * SIDE
PURSUIT3_STARTS = {"I1": (0, 8, 4), "I2": (0, 8, 2), "T1": (1, 5, 2)}  # L303-L305, footnote 8


def grid_targets(rows: int, cols: int) -> np.ndarray:
    """`[rows * cols, 5]`: the cell each action leads to on a 4-neighbour grid, -1 off the grid."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    nr, nc = r[:, None] + _DELTAS[:, 0], c[:, None] + _DELTAS[:, 1]
    inside = (nr >= 0) & (nr < rows) & (nc >= 0) & (nc < cols)
    return np.where(inside, nr * cols + nc, -1)


def arrow_mask(arrows, name: str = "arrows") -> np.ndarray:
    """Bool `[9, 5]` valid actions per node of an arrow set: "H2", a sequence of direction names, or
    a bool array `[9, 5]` (stay is forced valid; moves off the grid are never valid)."""
    on_grid = grid_targets(SIDE, SIDE) >= 0
    if isinstance(arrows, str):
        if arrows != "H2":
            raise ValueError(f"{name}={arrows!r} is invalid; valid: 'H2', a list of directions "
                             f"from {ACTIONS[1:]}, or a bool array [{NODES}, 5]")
        return on_grid
    arr = np.asarray(arrows)
    if arr.dtype == bool:
        if arr.shape != (NODES, 5):
            raise ValueError(f"{name} bool array has shape {arr.shape}; expected {(NODES, 5)}")
        return (arr | (np.arange(5) == STAY)) & on_grid
    names = [str(a) for a in arr.ravel()]
    bad = [a for a in names if a not in ACTIONS[1:]]
    if bad or not names:
        raise ValueError(f"{name}={arrows!r} has invalid direction(s) {bad}; valid: {ACTIONS[1:]}")
    allowed = np.isin(np.array(ACTIONS), names) | (np.arange(5) == STAY)
    return on_grid & allowed


def _moves(mask: np.ndarray) -> np.ndarray:
    """`[9, 5]` node after each action; masked actions stay in place."""
    targets = grid_targets(SIDE, SIDE)
    return np.where(mask, targets, np.arange(NODES)[:, None])


def _joint_next(moves: list[np.ndarray]) -> np.ndarray:
    """`[S, J]` next joint state of simultaneous deterministic moves (`moves[i]`: `[9, 5]`)."""
    m = len(moves)
    pos = np.stack(np.unravel_index(np.arange(NODES ** m), (NODES,) * m), -1)  # [S, M]
    acts = tabular.joint_actions(m, 5)  # [J, M]
    nxt = [moves[i][pos[:, i][:, None], acts[None, :, i]] for i in range(m)]
    return np.ravel_multi_index(nxt, (NODES,) * m)


def _check_finite(**values) -> None:
    for key, v in values.items():
        if not np.isfinite(float(v)):
            raise ValueError(f"{key}={v!r} must be a finite number")


def pursuit2_game(hunter_arrows="H2", prey_arrows=("left", "up"), capture_reward: float = 0.4,
                  dtype=np.float32) -> tabular.TabularGame:
    """Variant 1 (mge.md §2.1): agent 0 hunter, agent 1 prey, 81 joint states `h * 9 + p`."""
    _check_finite(capture_reward=capture_reward)
    masks = [arrow_mask(hunter_arrows, "hunter_arrows"), arrow_mask(prey_arrows, "prey_arrows")]
    h, p = np.divmod(np.arange(NODES ** 2), NODES)
    caught = (h == p).astype(np.float64)
    reward = np.stack([capture_reward * caught, -capture_reward * caught])  # [M, S], §6 #2
    mask = np.stack([mk[pos] for mk, pos in zip(masks, (h, p), strict=True)])
    init = (h != p) / np.sum(h != p)  # §6 #20: distinct nodes
    return tabular.make_game(_joint_next([_moves(mk) for mk in masks]), None, reward,
                             final_reward=reward, action_mask=mask, init_dist=init,
                             num_agents=2, num_actions=5, dtype=dtype)


def pursuit3_game(arrows="H2", start: str = "uniform", catch_reward: float = 5 / 4,
                  collision_penalty: float = -15 / 4, shared_catch_penalty: float = -10 / 4,
                  prey_penalty: float = -1 / 8, dtype=np.float32) -> tabular.TabularGame:
    """Variant 2 (mge.md §2.2): hunters h1, h2 (agents 0, 1) and prey (agent 2) on one arrow set;
    729 joint states `(h1 * 9 + h2) * 9 + p`; `start` is "uniform" or a key of PURSUIT3_STARTS."""
    _check_finite(catch_reward=catch_reward, collision_penalty=collision_penalty,
                  shared_catch_penalty=shared_catch_penalty, prey_penalty=prey_penalty)
    mk = arrow_mask(arrows)
    pos = np.stack(np.unravel_index(np.arange(NODES ** 3), (NODES,) * 3), -1)
    h1, h2, p = pos.T

    def hunter(me, other):  # L280
        return np.select([(me == other) & (me != p), (me == other) & (me == p),
                          (me == p) & (me != other)],
                         [collision_penalty, shared_catch_penalty, catch_reward], 0.0)

    prey = np.where((p == h1) | (p == h2), prey_penalty, 0.0)  # L295
    reward = np.stack([hunter(h1, h2), hunter(h2, h1), prey])
    mask = np.stack([mk[pos[:, i]] for i in range(3)])
    if start == "uniform":
        distinct = (h1 != h2) & (h1 != p) & (h2 != p)
        init = distinct / distinct.sum()
    elif start in PURSUIT3_STARTS:
        init = np.zeros(NODES ** 3)
        init[np.ravel_multi_index(PURSUIT3_STARTS[start], (NODES,) * 3)] = 1.0
    else:
        raise ValueError(f"start={start!r} is invalid; valid: 'uniform', "
                         f"{', '.join(map(repr, PURSUIT3_STARTS))}")
    return tabular.make_game(_joint_next([_moves(mk)] * 3), None, reward, final_reward=reward,
                             action_mask=mask, init_dist=init, num_agents=3, num_actions=5,
                             dtype=dtype)


def positions(joint_state, num_agents: int):
    """`[..., num_agents]` int32 nodes of the agents in pursuit joint states `joint_state[...]`."""
    s = jnp.asarray(joint_state)
    return jnp.stack(jnp.unravel_index(s, (NODES,) * num_agents), -1).astype(jnp.int32)


def state_index(nodes) -> int:
    """Joint state index of the agents' nodes (agent 0 first): the inverse of `positions`."""
    nodes = tuple(int(n) for n in nodes)
    if any(not 0 <= n < NODES for n in nodes):
        raise ValueError(f"nodes {nodes} must lie in 0..{NODES - 1}")
    return int(np.ravel_multi_index(nodes, (NODES,) * len(nodes)))


def hunts(states, num_agents: int = 2):
    """Number of hunts along the last axis of `states[..., T+1]` (rollout states): states in which
    the prey (the last agent) shares its node with a hunter (mge.md §2.1: score = 0.4 x hunts)."""
    pos = positions(states, num_agents)
    caught = jnp.any(pos[..., :-1] == pos[..., -1:], axis=-1)
    return jnp.sum(caught, axis=-1)


class Pursuit2(tabular.TabularEnv):
    """`pursuit-2-v0`: variant 1, hunter vs prey, T = 22 (mge.md §2.1)."""

    def __init__(self, hunter_arrows="H2", prey_arrows=("left", "up"),
                 capture_reward: float = 0.4):
        self.game = pursuit2_game(hunter_arrows, prey_arrows, capture_reward)
        self.horizon_default = 22

    action_names = ACTIONS
    agent_names = ("hunter", "prey")

    def describe_state(self, joint_state):
        return ", ".join(f"{a} at node {int(n)}" for a, n in
                         zip(self.agent_names, positions(joint_state, 2)))


class Pursuit3(tabular.TabularEnv):
    """`pursuit-3-v0`: variant 2, two hunters vs prey, T = 3 (T = 1 for start "T1"; mge.md §2.2)."""

    def __init__(self, arrows="H2", start: str = "uniform", catch_reward: float = 5 / 4,
                 collision_penalty: float = -15 / 4, shared_catch_penalty: float = -10 / 4,
                 prey_penalty: float = -1 / 8):
        self.game = pursuit3_game(arrows, start, catch_reward, collision_penalty,
                                  shared_catch_penalty, prey_penalty)
        self.horizon_default = 1 if start == "T1" else 3

    action_names = ACTIONS
    agent_names = ("hunter 1", "hunter 2", "prey")

    def describe_state(self, joint_state):
        return ", ".join(f"{a} at node {int(n)}" for a, n in
                         zip(self.agent_names, positions(joint_state, 3)))
