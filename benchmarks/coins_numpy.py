"""Plain numpy Coins (d3c.md §2.5), one environment, written from the spec alone.

The speed baseline for `envs/coins.py` (`python -m benchmarks.coins_numpy` prints its steps/s) and
the oracle of tests/test_coins.py, so it is written independently of the JAX code: a char grid of
coins (`.` none, `0` / `1` a coin of agent 0's / 1's type), agents as a list of (row, col), Python
loops over agents and cells, and `np.random` for every draw.

One step: 1. each agent moves (walls stop it; agents may share cells); 2. each agent on a coin picks
it up: +`coin_reward`, and -`penalty` to the coin's owner if the picker is the other agent; when both
stand on one coin, "both" pays both pickers and "random" gives it to one of them at random; the
coin disappears; 3. every cell without a coin or an agent spawns a coin with probability
`spawn_prob`, of either type with probability 1/2; 4. observations: per agent, planes
(self, other, own-type coins, other-type coins) as `[n, n, 4]` float32.
"""
from __future__ import annotations

import time

import numpy as np

UP, DOWN, LEFT, RIGHT, STAY = range(5)
MOVES = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1), STAY: (0, 0)}


class CoinsNumpy:
    def __init__(self, grid_size=5, spawn_prob=0.005, coin_reward=1.0, penalty=2.0, max_steps=500,
                 tie_break="both", seed=0):
        self.n = grid_size
        self.spawn_prob = spawn_prob
        self.coin_reward = coin_reward
        self.penalty = penalty
        self.max_steps = max_steps
        self.tie_break = tie_break
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self):
        cells = self.rng.choice(self.n * self.n, size=2, replace=False)
        self.agents = [divmod(int(c), self.n) for c in cells]
        self.grid = np.full((self.n, self.n), ".")
        self.t = 0
        return self.observe()

    def set_state(self, agents, grid):
        """`agents`: two (row, col); `grid`: rows of `.`, `0`, `1`."""
        self.agents = [tuple(a) for a in agents]
        self.grid = np.array([list(row) for row in grid])

    def step(self, actions):
        for i, a in enumerate(actions):
            dr, dc = MOVES[int(a)]
            r, c = self.agents[i]
            self.agents[i] = (min(max(r + dr, 0), self.n - 1), min(max(c + dc, 0), self.n - 1))

        rewards = [0.0, 0.0]
        picked = [0, 0]
        own = [0, 0]
        pickers = {}  # cell -> agents on it
        for i, cell in enumerate(self.agents):
            if self.grid[cell] != ".":
                pickers.setdefault(cell, []).append(i)
        for cell, who in pickers.items():
            owner = int(self.grid[cell])
            if len(who) == 2 and self.tie_break == "random":
                who = [who[self.rng.integers(2)]]
            for i in who:
                rewards[i] += self.coin_reward
                picked[i] += 1
                if owner == i:
                    own[i] += 1
                else:
                    rewards[owner] -= self.penalty
            self.grid[cell] = "."

        for r in range(self.n):
            for c in range(self.n):
                if self.grid[r, c] == "." and (r, c) not in self.agents:
                    if self.rng.random() < self.spawn_prob:
                        self.grid[r, c] = str(self.rng.integers(2))

        self.t += 1
        done = self.t >= self.max_steps
        info = {"coins_picked": picked, "own_coins_picked": own,
                "other_coins_picked": [p - o for p, o in zip(picked, own)]}
        return self.observe(), rewards, done, info

    def observe(self):
        obs = np.zeros((2, self.n, self.n, 4), np.float32)
        for i in range(2):
            obs[i, self.agents[i][0], self.agents[i][1], 0] = 1
            obs[i, self.agents[1 - i][0], self.agents[1 - i][1], 1] = 1
            obs[i, :, :, 2] = self.grid == str(i)
            obs[i, :, :, 3] = self.grid == str(1 - i)
        return obs


def main(n_steps: int = 20_000, seed: int = 0) -> float:
    env = CoinsNumpy(seed=seed)
    actions = np.random.default_rng(seed).integers(0, 5, (n_steps, 2)).tolist()
    t0 = time.perf_counter()
    for a in actions:
        _, _, done, _ = env.step(a)
        if done:
            env.reset()
    rate = n_steps / (time.perf_counter() - t0)
    print(f"numpy Coins (1 env, Python loop): {rate:,.0f} steps/s")
    return rate


if __name__ == "__main__":
    main()
