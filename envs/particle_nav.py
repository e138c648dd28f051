"""Multi-goal cooperative navigation in the particle world (cm3-hsd.md §4.1; thesis A.7.1,
[C-CM3 multiagent/core.py, environment.py, scenarios/multi-goal_spread.py]).

N agents (circles of radius 0.15, mass 1, colliding) each must reach their own landmark (radius 0.05,
static, non-colliding) on an unbounded plane. Physics per step, exactly MPE's (§4.1): action force
5·u for the unit vector u of the action (0 noop, 1 -x, 2 +x, 3 -y, 4 +y; code mapping, A-CM3-4);
for every pair of agents a contact force 100·(p_i - p_j)/d·κ·softplus(-(d - 0.3)/κ), κ = 1e-3, on i
and its opposite on j; then v <- 0.75·v + 0.1·F, p <- p + 0.1·v (damping 0.25, dt 0.1). Under a
constant action the speed tends to 2.0.

Reward of agent i (after the physics step): -‖p_i - ℓ_i‖ - #{j != i: ‖p_i - p_j‖ < 0.3}. Agent i
has reached its goal when ‖p_i - ℓ_i‖ <= 0.05; the episode terminates when all have at the same step
(agents are never frozen), and is truncated after 50 steps (25 in Stage 1).

Start: with probability `prob_random` agents and landmarks are uniform in [-1, 1]^2 (0.2 in Stage 2,
1.0 in Stage 1); otherwise the scenario's fixed positions (§4.1 table, from the code: A-CM3-1..3),
with Gaussian noise `initial_std` on the agents (0.05 for Merge). Velocities start at 0.

Observation of agent i (flat, layout `obs_layout`; velocity first): o_self = [v_i, p_i], the goal
g_i = ℓ_i (absolute), then o_others = [v_j - v_i, p_j - p_i] for j != i in index order. `info` has
the critics' inputs (§10.1): `state` / `next_state` [N, 4] = rows [v_n, p_n] before / after the step
(before any auto-reset), `goal` [N, 2], and `reached`, `collisions` [N].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import spaces
from jaxmcg.environment import Environment

NUM_ACTIONS = 5
_DIRECTIONS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.float32)  # code mapping
DT, DAMPING, MASS = 0.1, 0.25, 1.0
SENSITIVITY = 5.0  # agent.accel is None -> MPE's default
CONTACT_FORCE, CONTACT_MARGIN = 100.0, 1e-3
AGENT_RADIUS, GOAL_RADIUS = 0.15, 0.05  # GOAL_RADIUS: the "reached" threshold (landmark size)
COLLISION_DIST = 2 * AGENT_RADIUS

# (agent starts, landmarks, initial_std) per scenario, agent order (§4.1 table, [C-CM3 configs]).
# Merge swaps the thesis' starts so the two paths cross (A-CM3-1).
SCENARIOS = {
    "antipodal": ([[-0.9, -0.9], [0.9, 0.9], [-0.9, 0.9], [0.9, -0.9]],
                  [[0.9, 0.9], [-0.9, -0.9], [0.9, -0.9], [-0.9, 0.9]], 0.0),
    "intersection": ([[-0.9, -0.15], [0.9, 0.15], [0.15, -0.9], [-0.15, 0.9]],
                     [[0.9, -0.15], [-0.9, 0.15], [0.15, 0.9], [-0.15, -0.9]], 0.0),
    "merge": ([[-0.9, 0.2], [-0.9, -0.2]], [[0.9, -0.2], [0.9, 0.2]], 0.05),
}


@struct.dataclass
class EnvState:
    position: jax.Array  # [N, 2]
    velocity: jax.Array  # [N, 2]
    landmark: jax.Array  # [N, 2] goal of each agent
    time: jax.Array


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = 50
    prob_random: float = 0.2  # probability of a uniformly random start (§4.1)
    initial_std: float = 0.0  # Gaussian noise on the fixed agent starts


def physics_step(position, velocity, actions):
    """One MPE step: `(position', velocity', force)` for integer `actions` [N] (§4.1)."""
    force = SENSITIVITY * jnp.asarray(_DIRECTIONS)[actions]
    diff = position[:, None, :] - position[None, :, :]  # [N, N, 2] p_i - p_j
    dist = jnp.sqrt(jnp.sum(diff**2, axis=-1))
    n = position.shape[0]
    # softplus written as logaddexp(0, x), as MPE; d = 0 guarded (the original divides by zero)
    penetration = CONTACT_MARGIN * jnp.logaddexp(0.0, -(dist - COLLISION_DIST) / CONTACT_MARGIN)
    safe = jnp.where(dist > 0, dist, 1.0)
    pair = CONTACT_FORCE * diff / safe[..., None] * penetration[..., None]
    pair = jnp.where((~jnp.eye(n, dtype=bool))[..., None], pair, 0.0)
    force = force + jnp.sum(pair, axis=1)
    velocity = velocity * (1.0 - DAMPING) + force * DT / MASS
    return position + velocity * DT, velocity, force


class ParticleNav(Environment):
    """Cooperative navigation; `scenario` in `SCENARIOS` or "random" (uniform starts only; with
    `num_agents` = 1 this is CM3's Stage 1, the induced single-agent MDP)."""

    def __init__(self, scenario: str = "antipodal", num_agents: int | None = None):
        if scenario not in (*SCENARIOS, "random"):
            raise ValueError(f"scenario={scenario!r} is invalid; valid: "
                             f"{', '.join([*SCENARIOS, 'random'])}")
        self.scenario = scenario
        if scenario == "random":
            n = 1 if num_agents is None else int(num_agents)
            if n < 1:
                raise ValueError(f"num_agents={num_agents} must be >= 1")
        else:
            n = len(SCENARIOS[scenario][0])
            if num_agents is not None and int(num_agents) != n:
                raise ValueError(f"num_agents={num_agents} is invalid for scenario {scenario!r}; "
                                 f"valid: {n}")
        self.num_agents = n
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32)
        self.obs_layout = {"self": (0, 4), "goal": (4, 6), "others": (6, 6 + 4 * (n - 1))}
        self.obs_dim = 6 + 4 * (n - 1)

    @property
    def default_params(self) -> EnvParams:
        if self.scenario == "random":  # Stage 1 (§4.1): random starts, 25 steps
            return EnvParams(max_steps_in_episode=25, prob_random=1.0)
        return EnvParams(initial_std=SCENARIOS[self.scenario][2])

    def validate_params(self, params: EnvParams) -> None:
        super().validate_params(params)
        if not 0.0 <= float(params.prob_random) <= 1.0:
            raise ValueError(f"prob_random={params.prob_random} must be a probability in [0, 1]")
        if self.scenario == "random" and float(params.prob_random) != 1.0:
            raise ValueError(f"prob_random={params.prob_random} is invalid for scenario 'random' "
                             "(it has no fixed start); valid: 1.0")
        if float(params.initial_std) < 0:
            raise ValueError(f"initial_std={params.initial_std} must be >= 0")

    def reset_env(self, key, params):
        n = self.num_agents
        k_coin, k_uniform, k_noise = jax.random.split(key, 3)
        uniform = jax.random.uniform(k_uniform, (2, n, 2), minval=-1.0, maxval=1.0)
        if self.scenario == "random":
            position, landmark = uniform[0], uniform[1]
        else:
            starts, goals, _ = SCENARIOS[self.scenario]
            fixed = jnp.asarray(starts) + params.initial_std * jax.random.normal(k_noise, (n, 2))
            use_random = jax.random.uniform(k_coin) < params.prob_random
            position = jnp.where(use_random, uniform[0], fixed)
            landmark = jnp.where(use_random, uniform[1], jnp.asarray(goals))
        state = EnvState(position=position.astype(jnp.float32),
                         velocity=jnp.zeros((n, 2), jnp.float32),
                         landmark=landmark.astype(jnp.float32), time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        actions = jnp.asarray(actions, jnp.int32)
        position, velocity, _ = physics_step(state.position, state.velocity, actions)
        next_state = state.replace(position=position, velocity=velocity, time=state.time + 1)
        to_goal = jnp.linalg.norm(position - state.landmark, axis=-1)
        dist = jnp.linalg.norm(position[:, None] - position[None], axis=-1)
        collisions = jnp.sum((dist < COLLISION_DIST) & ~jnp.eye(self.num_agents, dtype=bool), 1)
        reward = -to_goal - collisions
        reached = to_goal <= GOAL_RADIUS
        info = {"state": self.state_vector(state), "next_state": self.state_vector(next_state),
                "goal": state.landmark, "reached": reached, "collisions": collisions}
        return self.get_obs(next_state, params), next_state, reward, jnp.all(reached), info

    @staticmethod
    def state_vector(state) -> jax.Array:
        """Global state s [N, 4]: row n is [v_n, p_n] (§4.1)."""
        return jnp.concatenate([state.velocity, state.position], axis=1)

    def get_obs(self, state, params=None):
        n = self.num_agents
        s = self.state_vector(state)  # [N, 4] = o_self per agent
        others = (s[self._others] - s[:, None, :]).reshape(n, 4 * (n - 1))
        return jnp.concatenate([s, state.landmark, others], axis=1).astype(jnp.float32)

    def observation_space(self, params=None):
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_dim,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(NUM_ACTIONS)
