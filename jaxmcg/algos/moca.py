"""MOCA, Multi-Objective Contract Augmentation learning (Haupt, Christoffersen, Damani and
Hadfield-Menell 2022, "Formal contracts mitigate social dilemmas in multi-agent RL"), the DCL
paper's lowest-priority baseline (dcl.md §4.3, §6 D14).

The game (`ContractGame`) starts every episode with a contracting step. A proposer, drawn uniformly
at reset, proposes a contract and every other agent accepts or rejects it (the proposer's own
acceptance is implied). If all accept, the contract binds for the episode: the base game follows and
each step's rewards get the contract's transfers. The contracting step advances nothing and pays
nothing. Observations are the base game's, followed by the one-hot of the contract in force (all
zeros at the contracting step), a contracting-step flag and an is-proposer flag (set only at the
contracting step). The acceptance decision sees the proposal in the contract slot (`with_contract`).

Contract space. The paper does not report it (D14); this is the recommended generic space. Index 0 is
the null contract (no transfers). Index 1 + k L + j (L = len(thetas)) means that every agent whose
action is k pays thetas[j] that step, shared equally among its co-players. The default thetas are
0.5, 1, ..., 3 (theta = 0 is the null contract). A contract is symmetric and zero-sum, and the space
has only 1 + |A| L entries (13 in the DCL games), so it can be enumerated.
In the one-shot PD, the contracts "whoever defects pays theta >= 1.5" make cooperation dominant. MOCA
finds them, reaching SW -2 (4 seeds, Table 5 settings, -2.00 to -2.14 at 3,000 iterations) rather
than the paper's -4 (dcl.md §5.2). With thetas = (0.5,) no such contract exists, and it ends at -4.00.

Learning keeps MOCA's separation. Each agent has three independent IPPO learners from
`jaxmcg.algos.ippo`, with the same PPO settings (dcl.md §4.3): the action policy pi(a | o, contract),
the proposal policy and the acceptance policy. An iteration has two phases, each with its own
rollout:

1. negotiation: the policies propose and accept contracts. The proposal and acceptance learners each
   take a PPO update on the contracting decisions that counted (the proposer's proposal, the others'
   acceptances). The reward is the agent's discounted return of the game that followed, transfers
   included.
2. multi-objective: the contract is drawn uniformly from the whole space (the null contract
   included) and binds without negotiation. The action learner takes its IPPO update on the game
   steps. The action policies never train on negotiated contracts, so what a contract is worth does
   not depend on the negotiation policies.

Evaluation negotiates. So do the `train/` returns, which come from the first phase's rollout.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg import distributions as D
from jaxmcg import spaces
from jaxmcg.algos import ippo
from jaxmcg.environment import Environment, Wrapper, num_discrete_actions
from jaxmcg.losses import masked_mean
from jaxmcg.policy import log_probs
from jaxmcg.returns import discounted_returns
from jaxmcg.rollout import Trajectory

ROLES = ("proposal", "acceptance", "action")


@dataclasses.dataclass(frozen=True)
class Config(ippo.Config):
    """IPPO's Table 5 defaults (the MOCA column of Tables 5-7 equals IPPO's) plus the contract space
    (D14: "generic"; the per-step transfer amounts are dcl.md §4.3's example)."""

    thetas: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)

    def validate(self) -> None:
        super().validate()
        t = self.thetas
        if (not isinstance(t, tuple) or not t
                or not all(isinstance(x, (int, float)) and np.isfinite(x) and x > 0 for x in t)
                or len(set(t)) != len(t)):
            raise ValueError(f"thetas={t!r} is invalid: must be a non-empty tuple of distinct "
                             "positive transfer amounts (theta = 0 is the null contract, index 0)")


# Tables 6-7 (Grid game and RPC): hidden 32, 30 updates per iteration.
GRID_RPC = Config(hidden=(32, 32), num_epochs=30)


# --- the contract space ----------------------------------------------------------------------------

def num_contracts(num_actions: int, num_levels: int) -> int:
    return 1 + num_actions * num_levels


def encode(action, level, num_levels: int):
    """Index of "whoever plays `action` pays thetas[level]"."""
    return 1 + action * num_levels + level


def decode(contract, thetas):
    """`(action, theta)` of contract indices; the null contract gives action -1 and theta 0."""
    thetas = jnp.asarray(thetas, jnp.float32)
    c = jnp.maximum(contract - 1, 0)
    action = jnp.where(contract > 0, c // len(thetas), -1)
    return action, jnp.where(contract > 0, thetas[c % len(thetas)], 0.0)


def transfers(contract, actions, thetas) -> jax.Array:
    """Transfers `[N]` received by each agent for one step of joint `actions[N]`: an agent whose
    action is the contract's pays theta, split equally among the N - 1 others. They sum to zero."""
    action, theta = decode(contract, thetas)
    pays = theta * (actions == action).astype(jnp.float32)
    return (jnp.sum(pays) - pays) / (actions.shape[-1] - 1) - pays


def with_contract(obs, contract, num_contracts_: int):
    """`obs[..., D]` of the contract game with its contract slot set to one-hot(`contract[...]`)."""
    onehot = jax.nn.one_hot(contract, num_contracts_, dtype=obs.dtype)
    return jnp.concatenate([obs[..., :-(num_contracts_ + 2)], onehot, obs[..., -2:]], axis=-1)


# --- the contract game -----------------------------------------------------------------------------

@struct.dataclass
class ContractAction:
    """One step of every agent, each `[N]` int: a contract index (only the proposer's counts), 1 to
    accept or 0 to reject (the proposer's is ignored), and the base-game action (ignored at the
    contracting step)."""

    proposal: jax.Array
    accept: jax.Array
    action: jax.Array


@struct.dataclass
class ContractState:
    inner: object
    time: jax.Array  # the inner game's steps: the contracting step does not count to its horizon
    contracting: jax.Array  # bool: the next step is the contracting step
    proposer: jax.Array
    contract: jax.Array  # in force; 0 (null) until one is agreed


class ContractGame(Wrapper):
    """`env` with a contracting step before every episode; see the module docstring. `info` has the
    inner game's keys (zero at the contracting step) and `contracting`, `proposal` (the proposed
    contract), `agreed`, `contract` (in force after the step), `base_reward` and `transfer` (`[N]`)."""

    def __init__(self, env: Environment, thetas=Config.thetas):
        num_base_actions = num_discrete_actions(env, "MOCA's contract space")
        if env.num_agents < 2:
            raise ValueError(f"contracts need at least 2 agents; {env.name} has {env.num_agents}")
        if len(env.observation_space(env.default_params).shape) != 1:
            raise ValueError(f"{env.name} has non-flat observations; the contract game appends "
                             "the contract to flat (1-D) observations only")
        super().__init__(env)
        self.num_base_actions = num_base_actions
        self.thetas = tuple(float(t) for t in thetas)
        self.num_contracts = num_contracts(self.num_base_actions, len(self.thetas))

    def horizon(self, params) -> int:
        return self.inner.horizon(params) + 1

    def _obs(self, inner_obs, state: ContractState):
        n, c = self.num_agents, state.contracting
        onehot = jnp.where(c, 0.0, jax.nn.one_hot(state.contract, self.num_contracts))
        proposer = (c & (jnp.arange(n) == state.proposer)).astype(jnp.float32)
        extra = jnp.concatenate([jnp.tile(onehot, (n, 1)), jnp.full((n, 1), c, jnp.float32),
                                 proposer[:, None]], axis=-1)
        return jnp.concatenate([inner_obs.astype(jnp.float32), extra], axis=-1)

    def reset_env(self, key, params):
        k_inner, k_proposer = jax.random.split(key)
        obs, inner = self.inner.reset_env(k_inner, params)
        state = ContractState(inner, inner.time, jnp.asarray(True),
                              jax.random.randint(k_proposer, (), 0, self.num_agents),
                              jnp.zeros((), jnp.int32))
        return self._obs(obs, state), state

    def step_env(self, key, state, actions: ContractAction, params):
        c = state.contracting
        proposed = actions.proposal[state.proposer].astype(jnp.int32)
        agreed = jnp.all((actions.accept == 1) | (jnp.arange(self.num_agents) == state.proposer))
        # the game step is computed in both cases (a select under vmap anyway) and discarded here
        obs, inner, reward, terminated, info = self.inner.step_env(key, state.inner, actions.action,
                                                                   params)
        inner = jax.tree_util.tree_map(lambda old, new: jnp.where(c, old, new), state.inner, inner)
        obs = jnp.where(c, self.inner.get_obs(state.inner, params), obs)
        base = jnp.where(c, 0.0, reward.astype(jnp.float32))
        transfer = jnp.where(c, 0.0, transfers(state.contract, actions.action, self.thetas))
        contract = jnp.where(c, jnp.where(agreed, proposed, 0), state.contract)
        new = ContractState(inner, inner.time, jnp.asarray(False), state.proposer, contract)
        info = {**jax.tree_util.tree_map(lambda x: jnp.where(c, jnp.zeros_like(x), x), info),
                "contracting": c, "proposal": proposed, "agreed": c & agreed, "contract": contract,
                "base_reward": base, "transfer": transfer}
        return self._obs(obs, new), new, base + transfer, ~c & terminated, info

    def get_obs(self, state, params=None):
        return self._obs(self.inner.get_obs(state.inner, params), state)

    def observation_space(self, params=None):
        inner = self.inner.observation_space(params)
        d, extra = inner.shape[0], self.num_contracts + 2
        low = jnp.concatenate([jnp.broadcast_to(jnp.asarray(inner.low, jnp.float32), (d,)),
                               jnp.zeros((extra,))])
        high = jnp.concatenate([jnp.broadcast_to(jnp.asarray(inner.high, jnp.float32), (d,)),
                                jnp.ones((extra,))])
        return spaces.Box(low, high, (d + extra,), jnp.float32)

    def action_space(self, params=None):
        """The base game's actions; proposals are indices below `num_contracts`, acceptances 0/1."""
        return self.inner.action_space(params)


def wrap_env(env, config: Config):
    config.validate()  # make_train calls this first: bad values fail before anything is traced
    return env if isinstance(env, ContractGame) else ContractGame(env, config.thetas)


# --- state -----------------------------------------------------------------------------------------

@struct.dataclass
class State:
    learners: dict  # ROLES -> ippo.State, each stacked over agents
    phase: jax.Array  # 0: the next rollout negotiates; 1: it is multi-objective
    iteration: jax.Array
    config: Config = struct.field(pytree_node=False)
    num_contracts: int = struct.field(pytree_node=False)


def init(key, env, env_params, config: Config) -> State:
    env = wrap_env(env, config)
    sizes = {"proposal": env.num_contracts, "acceptance": 2, "action": env.num_base_actions}
    learners = {}
    for role, k in zip(ROLES, jax.random.split(key, len(ROLES))):
        # what ippo.init reads of an environment, with this role's number of choices
        view = SimpleNamespace(num_agents=env.num_agents, name=env.name,
                               observation_space=env.observation_space,
                               action_space=lambda p=None, n=sizes[role]: spaces.Discrete(n))
        learners[role] = ippo.init(k, view, env_params, config)
    return State(learners=learners, phase=jnp.zeros((), jnp.int32),
                 iteration=jnp.zeros((), jnp.int32), config=config,
                 num_contracts=env.num_contracts)


def _log_probs(state: State, role: str, obs):
    learner = state.learners[role]
    return log_probs(learner.policy, learner.params, obs, 0.0)


def act(state: State, obs, key, evaluate: bool = False):
    """Every step samples a proposal, an acceptance of the proposer's proposal and a game action;
    the environment uses what the step needs (as `jaxmcg.commitment`). In the multi-objective phase
    (not in evaluation) the proposal is uniform over the contract space and everybody accepts.
    Evaluation samples the policies too (the paper's curves are of the stochastic policies)."""
    k_prop, k_acc, k_act, k_uniform = jax.random.split(key, 4)
    proposal = D.sample(k_prop, _log_probs(state, "proposal", obs))  # [E, N]
    if not evaluate:
        uniform = jax.random.randint(k_uniform, proposal.shape, 0, state.num_contracts)
        proposal = jnp.where(state.phase == 1, uniform, proposal)
    proposed = jnp.sum(proposal * obs[..., -1].astype(proposal.dtype), axis=-1)  # is-proposer flag
    seen = with_contract(obs, jnp.broadcast_to(proposed[..., None], proposal.shape),
                         state.num_contracts)
    accept = D.sample(k_acc, _log_probs(state, "acceptance", seen))
    if not evaluate:
        accept = jnp.where(state.phase == 1, 1, accept)
    action = D.sample(k_act, _log_probs(state, "action", obs))
    return ContractAction(proposal=proposal, accept=accept, action=action), {}


# --- updates ---------------------------------------------------------------------------------------

def game_steps(batch) -> Trajectory:
    """The base-game part of a contract-game batch (every step after the contracting one), with the
    game actions: the action learner's IPPO batch."""
    rest = lambda x: x[1:]
    return Trajectory(obs=rest(batch.obs), action=rest(batch.action.action),
                      reward=rest(batch.reward), next_obs=rest(batch.next_obs),
                      valid=rest(batch.valid), terminated=rest(batch.terminated),
                      truncated=rest(batch.truncated), extras={}, info={})


def decisions(batch, gamma: float, num_contracts_: int) -> dict:
    """One-step IPPO batches of the contracting decisions, each with a `[1, E, N]` mask of the
    decisions that counted: the proposer's proposal, the other agents' acceptances. Their reward is
    the discounted return of the game that followed (transfers included), and nothing follows them."""
    game = game_steps(batch)
    ret = discounted_returns(game.reward, game.valid[..., None], gamma)[:1]
    obs, proposer = batch.obs[:1], batch.obs[:1, ..., -1]
    seen = with_contract(obs, jnp.broadcast_to(batch.info["proposal"][:1, :, None],
                                               proposer.shape), num_contracts_)
    ones = jnp.ones(batch.valid[:1].shape, bool)

    def one_step(o, a):
        return Trajectory(obs=o, action=a, reward=ret, next_obs=o, valid=batch.valid[:1],
                          terminated=ones, truncated=~ones, extras={}, info={})

    valid = batch.valid[:1, :, None]
    return {"proposal": (one_step(obs, batch.action.proposal[:1]), proposer * valid),
            "acceptance": (one_step(seen, batch.action.accept[:1]), (1.0 - proposer) * valid)}


def update_each_agent(learner: ippo.State, batch: Trajectory, mask):
    """`ippo.update` of every agent alone, on the steps where its `mask[T, E, N]` is 1 (IPPO's
    `valid` is shared by all agents). A `vmap` over agents of one-agent updates, which compiles one
    update rather than N. Every non-scalar leaf of an IPPO state is stacked over agents; the
    scalars (Adam's step count, the iteration) are the same for every agent and stay shared."""
    leaves, treedef = jax.tree_util.tree_flatten(learner)
    per_agent = [x.ndim > 0 for x in leaves]
    axes = [0 if p else None for p in per_agent]

    def alone(leaves, obs, next_obs, action, reward, valid):
        learner = treedef.unflatten([x[None] if p else x for x, p in zip(leaves, per_agent)])
        one = batch.replace(obs=obs[:, :, None], next_obs=next_obs[:, :, None],
                            action=action[..., None], reward=reward[..., None], valid=valid)
        new, metrics = ippo.update(learner, one)
        new_leaves = jax.tree_util.tree_leaves(new)
        return ([x[0] if p else x for x, p in zip(new_leaves, per_agent)],
                jax.tree_util.tree_map(lambda m: m[0], metrics))

    new_leaves, metrics = jax.vmap(alone, in_axes=(axes, 2, 2, 2, 2, 2), out_axes=(axes, 0))(
        leaves, batch.obs, batch.next_obs, batch.action, batch.reward, mask)
    return treedef.unflatten(new_leaves), metrics


def _named(role: str, metrics: dict) -> dict:
    return {f"moca/{role}/{k.split('/', 1)[1]}": v for k, v in metrics.items()}


def contract_metrics(batch, num_contracts_: int, num_actions: int) -> dict:
    """Acceptance rate (share of contracting steps that bound a contract), the proposals' and the
    contracts in force's frequencies `[C]`, each agent's mean transfer received per episode `[N]`,
    and the game actions' frequencies `[N, A]` (the contracting step excluded)."""
    info, first = batch.info, batch.valid[0]
    share = lambda x: masked_mean(x, first, axis=0)  # noqa: E731
    game = game_steps(batch)
    moves = jax.nn.one_hot(game.action, num_actions)
    return {
        "moca/acceptance_rate": share(info["agreed"][0][:, None].astype(jnp.float32))[0],
        "moca/proposal_frequency": share(jax.nn.one_hot(info["proposal"][0], num_contracts_)),
        "moca/contract_frequency": share(jax.nn.one_hot(info["contract"][0], num_contracts_)),
        "moca/mean_transfer": jnp.mean(jnp.sum(info["transfer"] * batch.valid[..., None], 0), 0),
        "moca/action_frequency": masked_mean(moves, game.valid, axis=(0, 1)),
    }


def negotiation_phase(state: State, batch):
    """Phase 1: a PPO update of the proposal and acceptance learners on a negotiated batch."""
    learners, metrics = dict(state.learners), {}
    for role, (decision, mask) in decisions(batch, state.config.gamma,
                                            state.num_contracts).items():
        learners[role], m = update_each_agent(learners[role], decision, mask)
        metrics.update(_named(role, m))
    metrics.update(contract_metrics(batch, state.num_contracts,
                                    state.learners["action"].policy.out))
    return state.replace(learners=learners, phase=jnp.ones((), jnp.int32)), metrics


def contract_phase(state: State, batch):
    """Phase 2 (multi-objective): the action learner's IPPO update on uniformly drawn contracts."""
    learner, metrics = ippo.update(state.learners["action"], game_steps(batch))
    return state.replace(learners={**state.learners, "action": learner},
                         phase=jnp.zeros((), jnp.int32), iteration=state.iteration + 1), \
        _named("action", metrics)


def phases(config: Config):
    return (negotiation_phase, contract_phase)


def update(state: State, batch):
    """One `update` per rollout for callers outside jaxmcg's loop: the phases alternate on
    `state.phase`, so feed a batch collected with `act` on the same state each time."""
    shapes = {}
    for f in phases(state.config):
        shapes.update(jax.eval_shape(f, state, batch)[1])

    def complete(f):
        def run(s, b):
            s, m = f(s, b)
            return s, {k: m[k] if k in m else jnp.zeros(v.shape, v.dtype)
                       for k, v in shapes.items()}
        return run

    return jax.lax.cond(state.phase == 0, *map(complete, phases(state.config)), state, batch)


def eval_metrics(state: State, batch) -> dict:
    return {k.replace("moca/", "moca/eval_", 1): v for k, v in
            contract_metrics(batch, state.num_contracts,
                             state.learners["action"].policy.out).items()}
