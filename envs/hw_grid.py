"""Hu-Wellman grid games I and II of the MGE paper (mge.md §2.4-§2.5, paper L17-L22, L317-L323) as
tabular Markov games.

The paper's figures are lost; the layouts are Hu & Wellman's / Greenwald's 3x3 Grid Game 1 and 2
(mge.md §2.4-§2.5 [external]). Cells are row-major, 0 at the top left; agent 0 is A, agent 1 is B.

* Game I (`hw_grid1-v0`): A starts bottom-left (6) with goal top-right (2); B starts bottom-right (8)
  with goal top-left (0). Goal reward +30.
* Game II (`hw_grid2-v0`): A at 6, B at 8, common goal G top-centre (1), goal reward +2. A barrier
  lies above each start cell: moving up from 6 or 8 succeeds with probability `barrier_success` =
  0.5, else the agent stays (L321, mge.md §2.5). Moving down to a start cell is not hindered: this
  one-way reading gives the calibrated MMCE-F values of mge.md §8.3 (T = 15 / 20 / 30: 1.27 / 1.38 /
  1.47 per agent, exact expectations), where a two-way barrier gives 1.30 / 1.41 / 1.49.

Rules (mge.md §2.4 "Rules to implement"): actions 0 stay, 1 up, 2 down, 3 left, 4 right, all valid;
walls block (the agent stays). Moves are simultaneous; barrier coin flips are independent. If the two
agents would end on the same cell that is no goal cell (both moving in, or one moving onto the
other's cell while it stays), both go back to their previous cells and both get `collision_penalty`
= -1. An agent that ends on its own goal gets `goal_reward`. Rewards are paid on the transition,
as expectations over the coin flips (`reward[i, s, j]`), so the collision penalty of a move across a
barrier is its probability times -1. No final reward.

`termination` (mge.md §6 #7):
* "individual" (default, the MMCE-F reproduction of §8.3): an agent on its goal is frozen there
  (its actions do nothing and it is paid once); when both have arrived the game enters the absorbing
  game-over state.
* "first" (Greenwald's rule, for the baselines): the game enters game-over as soon as any agent
  arrives (agents arriving together are both paid).

`absorbing_actions` (mge.md §5.9 #3, §6 #11): "all" (default) keeps the five dummy actions valid in
the game-over state and for a frozen agent, the fixed-horizon view that reproduces the paper under
the log-sum-exp value; "single" leaves only stay valid there.

82 joint states: `a * 9 + b` for the cells of A and B, and game-over (81). K = 4 outcomes. T = 20
(mge.md §6 #9); every episode starts at (6, 8).
"""
from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from envs.pursuit import UP, grid_targets
from jaxmcg import tabular

SIDE, CELLS = 3, 9
OVER = CELLS * CELLS  # the game-over state
STARTS = (6, 8)
LAYOUTS = {  # game: (goals of A and B, goal reward, barrier moves (cell, action))
    1: ((2, 0), 30.0, ()),
    2: ((1, 1), 2.0, ((6, UP), (8, UP))),
}
TERMINATIONS = ("individual", "first")
ABSORBING_ACTIONS = ("all", "single")


def hw_grid_game(game: int = 1, goal_reward: float | None = None, collision_penalty: float = -1.0,
                 barrier_success: float = 0.5, termination: str = "individual",
                 absorbing_actions: str = "all", dtype=np.float32) -> tabular.TabularGame:
    """Grid game `game` (1 or 2) of the module docstring; `goal_reward` None takes 30 (I) / 2 (II)."""
    if isinstance(game, bool) or game not in (1, 2):
        raise ValueError(f"game={game!r} is invalid; valid: 1, 2")
    if termination not in TERMINATIONS:
        raise ValueError(f"termination={termination!r} is invalid; valid: {TERMINATIONS}")
    if absorbing_actions not in ABSORBING_ACTIONS:
        raise ValueError(f"absorbing_actions={absorbing_actions!r} is invalid; "
                         f"valid: {ABSORBING_ACTIONS}")
    goals, default_goal, barriers = LAYOUTS[game]
    goal_reward = default_goal if goal_reward is None else goal_reward
    for key, v in (("goal_reward", goal_reward), ("collision_penalty", collision_penalty)):
        if not np.isfinite(float(v)):
            raise ValueError(f"{key}={v!r} must be a finite number")
    if not 0.0 <= float(barrier_success) <= 1.0:
        raise ValueError(f"barrier_success={barrier_success!r} must be a probability in [0, 1]")
    targets = grid_targets(SIDE, SIDE)
    targets = np.where(targets >= 0, targets, np.arange(CELLS)[:, None])  # walls block
    q = float(barrier_success)
    acts = tabular.joint_actions(2, 5)
    s_all, j_all, k = OVER + 1, len(acts), 4
    next_state = np.full((s_all, j_all, k), OVER, np.int32)
    next_prob = np.zeros((s_all, j_all, k))
    next_prob[..., 0] = 1.0  # the game-over state stays put
    reward = np.zeros((2, s_all, j_all))
    mask = np.ones((2, s_all, 5), bool)
    single = absorbing_actions == "single"
    mask[:, OVER, 1:] = not single
    for s in range(OVER):
        here = np.divmod(s, CELLS)
        frozen = [here[i] == goals[i] for i in range(2)]  # mge.md §2.5: frozen at the goal
        for i in range(2):
            mask[i, s, 1:] = not (frozen[i] and single)
        for j, a in enumerate(acts):
            options = []  # per agent: [(cell, prob)]
            for i in range(2):
                to = here[i] if frozen[i] else targets[here[i], a[i]]
                if (here[i], a[i]) in barriers and to != here[i]:
                    options.append([(to, q), (here[i], 1.0 - q)])
                else:
                    options.append([(to, 1.0)])
            for kk, ((ca, pa), (cb, pb)) in enumerate(itertools.product(*options)):
                cells = [ca, cb]
                r = np.zeros(2)
                if ca == cb and ca not in goals:  # collision: both back (mge.md §2.4)
                    cells = list(here)
                    r[:] = collision_penalty
                arrived = [cells[i] == goals[i] and not frozen[i] for i in range(2)]
                r += goal_reward * np.array(arrived)
                at_goal = [cells[i] == goals[i] for i in range(2)]
                over = any(arrived) if termination == "first" else all(at_goal)
                next_state[s, j, kk] = OVER if over else cells[0] * CELLS + cells[1]
                next_prob[s, j, kk] = pa * pb
                reward[:, s, j] += pa * pb * r
    init = np.zeros(s_all)
    init[STARTS[0] * CELLS + STARTS[1]] = 1.0
    absorbing = np.arange(s_all) == OVER
    return tabular.make_game(next_state, next_prob, reward, action_mask=mask, init_dist=init,
                             absorbing=absorbing, num_agents=2, num_actions=5, dtype=dtype)


def decode(joint_state):
    """`(a, b, over)`: the cells of A and B (-1 in the game-over state) and the game-over flag."""
    s = jnp.asarray(joint_state)
    over = s == OVER
    a, b = jnp.divmod(jnp.minimum(s, OVER - 1), CELLS)
    return jnp.where(over, -1, a), jnp.where(over, -1, b), over


class HWGrid(tabular.TabularEnv):
    """`hw_grid1-v0` / `hw_grid2-v0` (mge.md §2.4-§2.5); T = 20."""

    def __init__(self, game: int = 1, goal_reward: float | None = None,
                 collision_penalty: float = -1.0, barrier_success: float = 0.5,
                 termination: str = "individual", absorbing_actions: str = "all"):
        self.game = hw_grid_game(game, goal_reward, collision_penalty, barrier_success,
                                 termination, absorbing_actions)
        self.goals = LAYOUTS[game][0]  # cells of a and b (G twice in game II)
        self.horizon_default = 20

    action_names = ("stay", "up", "down", "left", "right")
    agent_names = ("A", "B")

    def describe_state(self, joint_state):
        a, b, over = decode(joint_state)
        return "game over" if bool(over) else f"A at cell {int(a)}, B at cell {int(b)}"
