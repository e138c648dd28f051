"""Plain numpy Escape Room ER(N, M), one environment, written the way the authors' code is.

A Python class with `reset()` and `step(actions)` that loops over agents, as LIO's
`room_symmetric.py` does (thesis §5.1; no incentive block in the observation). It is the speed
baseline of `benchmarks/throughput.py` and the oracle of `tests/test_escape_room.py`, so it is
written independently of `envs/escape_room.py` from the rules in the spec.
"""
from __future__ import annotations

import numpy as np

LEVER, START, DOOR = 0, 1, 2


class EscapeRoomNumpy:
    """ER(N, M) with `max_steps` = 5. `step` returns `(obs_list, rewards, done)`.

    After each step, `door_open` and `terminated` (door open and an agent at the door, as opposed
    to hitting `max_steps`) are kept as attributes for tests.
    """

    def __init__(self, n_agents=2, min_at_lever=1, max_steps=5):
        if n_agents < 2 or not 1 <= min_at_lever < n_agents:
            raise ValueError(f"ER({n_agents}, {min_at_lever}) needs N >= 2 and 1 <= M < N")
        self.n_agents = n_agents
        self.min_at_lever = min_at_lever
        self.max_steps = max_steps
        self.l_obs = 3 * n_agents
        self.positions = None
        self.steps = 0
        self.door_open = False
        self.terminated = False

    def get_obs(self):
        list_obs = []
        for idx in range(self.n_agents):
            obs = np.zeros(self.l_obs, dtype=np.float32)
            obs[self.positions[idx]] = 1.0
            slot = 1
            for other in range(self.n_agents):
                if other != idx:
                    obs[3 * slot + self.positions[other]] = 1.0
                    slot += 1
            list_obs.append(obs)
        return list_obs

    def reset(self):
        self.positions = [START] * self.n_agents
        self.steps = 0
        self.door_open = False
        self.terminated = False
        return self.get_obs()

    def step(self, actions):
        n_lever = 0
        for action in actions:
            if action == LEVER:
                n_lever += 1
        self.door_open = n_lever >= self.min_at_lever

        rewards = np.zeros(self.n_agents, dtype=np.float32)
        for idx in range(self.n_agents):
            if self.door_open and actions[idx] == DOOR:
                rewards[idx] = 10.0
            elif actions[idx] == self.positions[idx]:
                rewards[idx] = 0.0
            else:
                rewards[idx] = -1.0

        self.positions = [int(a) for a in actions]
        self.steps += 1
        self.terminated = self.door_open and DOOR in self.positions
        done = self.terminated or self.steps == self.max_steps
        return self.get_obs(), rewards, done
