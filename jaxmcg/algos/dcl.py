"""Differentiable Commitment Learning: DCL, DCL-IC and decentralized DCL (dcl.md §2).

Every agent i has four PyTorch-initialised MLPs (dcl.md §2.1): a proposal policy phi^i(m|s), a
commitment policy psi^i(c|s, m) over {0 = reject, 1 = commit}, an action policy pi^i(a|s) played
when there is no agreement, and a critic Q^i(s, x) of the executed joint action x, each with its own
Adam and element-wise gradient clipping to [-1, 1] (D21). The environment is wrapped in its
commitment game (`jaxmcg.commitment`). Each iteration, each agent takes `num_updates` rounds of
four full-batch steps, in the authors' order (dcl.md §2.5, C:base_agent.py):

(a) critic: MSE of Q^i(s, x) to the Monte-Carlo return;
(b) action: -omega Q^i(s, a) log pi^i(a^i|s) with omega = e, the code's mask (D1; "no_agreement" is
    the paper's Eq. 3);
(c) commitment: own commitment re-sampled by straight-through Gumbel-softmax; score term weighted by
    the value of what happens, plus the pathwise term (Q_a - Q_m) u(c^i) on agreement;
(d) proposal: everything re-sampled at the batch states; the proposer differentiates through every
    agent's commitment network via its own straight-through proposal; DCL-IC adds
    lambda sum_j max(0, Q^j_a - Q^j_m)^2 log phi^i (the code's estimator, D4).

u(c) = c[1]^4 (D2). Entropy bonuses are means over batch and classes (D22). Agents update
simultaneously from the same parameters in each round (D10; `sequential_agent_updates` replays the
authors' agent-by-agent order). Decentralized DCL (Algorithm 3, D11): agent i keeps its own model
of every agent's four networks (its own true ones and estimates of the others), and trains the whole
model by running the centralized update on it, so estimates of b are trained by b's DCL update on b's
observed returns; the policies played are the diagonal (agent i's own networks in i's model).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxmcg import critic as C
from jaxmcg import distributions as D
from jaxmcg.commitment import Commitment, CommitmentGame
from jaxmcg.losses import masked_mean
from jaxmcg.networks import TorchMLP, agent_slice, apply_per_agent
from jaxmcg.returns import discounted_returns

NETS = ("proposal", "commit", "action", "critic")
ACTION_PG_MASKS = ("agreement", "no_agreement", "all")
IC_FORMS = ("sq_hinge_score", "hinge_score")
BASELINES = ("none", "code")


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: int = 8  # two hidden layers of this width; Table 5 (PD), Tables 6-7: 32
    lr: float = 4e-4  # policies, Tables 5-7
    lr_critic: float = 8e-4  # Tables 5-7 (the code's 7e-4, D6)
    ic_weight: float = 0.0  # lambda: 0 = DCL, 1 = DCL-IC; fixed, no dual ascent (D5, S:L262-268)
    ic_form: str = "sq_hinge_score"  # the code's squared hinge (D4); "hinge_score": max(0, .)
    entropy_start: float = 1.0  # Table 5 (Tables 6-7: 2.0)
    entropy_decay: float = 5e-4  # per agent per iteration, so x N per iteration (D7)
    entropy_min: float = 0.0  # Table 5 (Tables 6-7: 0.001; the code's floor: 0.1)
    temperature: float = 10.0  # Gumbel tau, Table 5 (Tables 6-7: 1.0)
    temperature_decay: float = 0.05  # per proposal update, Table 5
    temperature_min: float = 1.0  # Table 5
    num_updates: int = 1  # rounds of the four steps per iteration; Table 5 (Tables 6-7: 30)
    gamma: float = 0.99  # Tables 6-7
    mega_step: int = 1  # K-step commitments (§2.11); RPC uses 2
    legacy_mega_reward: bool = False  # True: the code's gamma r1 + r2 and gamma between decisions (D8)
    action_pg_mask: str = "agreement"  # D1: code "agreement" (omega = e), paper "no_agreement", "all"
    pathwise_terms: bool = True  # False: score-function terms only (the exact-gradient ablation, §2.12)
    # "code": the decentralized branch's baselines (D11): the action loss subtracts the expected
    # fallback value E_pi Q; commitment and proposal subtract the realised value, which cancels their
    # score-function terms and leaves the pathwise and IC terms
    baseline: str = "none"
    pathwise_product: bool = False  # D3: True multiplies u^j by the others' commitments (Eq. 5)
    indicator_power: int = 4  # u(c) = c[1]^power (D2)
    sequential_agent_updates: bool = False  # D10
    decentralized: bool = False  # Algorithm 3 (§2.8)
    grad_clip: float = 1.0  # element-wise (D21)
    greedy_eval: bool = False  # evaluation samples like training (D24); True: argmax policies

    def validate(self, num_agents: int | None = None) -> None:
        if self.action_pg_mask not in ACTION_PG_MASKS:
            raise ValueError(f"action_pg_mask={self.action_pg_mask!r} is invalid; valid: "
                             f"{', '.join(ACTION_PG_MASKS)}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r} is invalid; valid: {', '.join(BASELINES)}")
        if self.ic_form not in IC_FORMS:
            raise ValueError(f"ic_form={self.ic_form!r} is invalid; valid: {', '.join(IC_FORMS)}")
        for name in ("hidden", "num_updates", "mega_step", "indicator_power"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be >= 1")
        for name in ("lr", "lr_critic", "temperature", "temperature_min", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be > 0")
        for name in ("ic_weight", "entropy_start", "entropy_decay", "entropy_min",
                     "temperature_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: must be >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma} is invalid: must be in [0, 1]")
        if num_agents is not None and num_agents < 2:
            raise ValueError(f"DCL needs at least 2 agents, got {num_agents}")


@struct.dataclass
class State:
    params: dict  # NETS -> leaves [N, ...]; decentralized: [N, N, ...], row i = agent i's model
    opt_state: dict
    temperature: jax.Array  # [N] per agent (decentralized: [N, N])
    entropy_coef: jax.Array
    iteration: jax.Array
    key: jax.Array  # Gumbel noise of the updates
    config: Config = struct.field(pytree_node=False)
    nets: dict = struct.field(pytree_node=False)
    order: tuple = struct.field(pytree_node=False)  # order[j]: j first, then the others


def wrap_env(env, config: Config):
    """The commitment game of `env` with the config's mega-step (dcl.md §1.2, §2.11)."""
    if isinstance(env, CommitmentGame):
        return env
    return CommitmentGame(env, config.mega_step, config.gamma, config.legacy_mega_reward)


def _optimisers(config: Config) -> dict:
    return {name: optax.chain(optax.clip(config.grad_clip),
                              optax.adam(config.lr_critic if name == "critic" else config.lr))
            for name in NETS}


def check_env(env, env_params, config: Config):
    """Raise ValueError unless DCL can play `env` (before anything is compiled); returns the
    commitment game."""
    config.validate(num_agents=env.num_agents)
    game = wrap_env(env, config)
    game.validate_params(env_params)
    shape = game.observation_space(env_params).shape
    if len(shape) != 1:
        raise ValueError(f"DCL's MLPs need flat observations; {env.name} has shape {shape}")
    return game


def init(key, env, env_params, config: Config) -> State:
    env = check_env(env, env_params, config)
    shape = env.observation_space(env_params).shape
    n, m, s = env.num_agents, env.num_actions, shape[0]
    hidden = (config.hidden, config.hidden)
    nets = {"proposal": TorchMLP(hidden, m), "commit": TorchMLP(hidden, 2),
            "action": TorchMLP(hidden, m), "critic": TorchMLP(hidden, 1)}
    inputs = {"proposal": s, "commit": s + n * m, "action": s, "critic": s + n * m}

    def init_world(key):
        keys = jax.random.split(key, len(NETS))
        return {name: jax.vmap(lambda k, net=nets[name], d=inputs[name]: net.init(
                    k, jnp.zeros((d,)))["params"])(jax.random.split(k_, n))
                for name, k_ in zip(NETS, keys)}

    key, net_key = jax.random.split(key)
    if config.decentralized:  # every agent initialises its own model of everyone independently
        params = jax.vmap(init_world)(jax.random.split(net_key, n))
        lead = (n, n)
    else:
        params, lead = init_world(net_key), (n,)
    tx = _optimisers(config)
    opt_state = {name: _vmap_lead(tx[name].init, len(lead))(params[name]) for name in NETS}
    order = tuple(tuple([j] + [k for k in range(n) if k != j]) for j in range(n))
    return State(params=params, opt_state=opt_state,
                 temperature=jnp.full(lead, config.temperature, jnp.float32),
                 entropy_coef=jnp.asarray(config.entropy_start, jnp.float32),
                 iteration=jnp.zeros((), jnp.int32), key=key, config=config, nets=nets, order=order)


def _vmap_lead(fn, depth: int):
    for _ in range(depth):
        fn = jax.vmap(fn)
    return fn


def policies(state: State) -> dict:
    """The networks the agents play: decentralized agents play their own rows' diagonal."""
    if not state.config.decentralized:
        return state.params
    n = state.temperature.shape[0]
    return jax.tree_util.tree_map(lambda x: x[np.arange(n), np.arange(n)], state.params)


# --- network evaluation ------------------------------------------------------------------------

def _probs(state, world, name, x):
    """Softmax outputs of every agent's `name` network, agent j on `x[..., j, :]`."""
    return jax.nn.softmax(apply_per_agent(state.nets[name], world[name], x), axis=-1)


def _values(state, world, x):
    return C.values(state.nets["critic"], world["critic"], x)


def joint_actions(num_actions: int, num_agents: int) -> np.ndarray:
    """Every joint action, `[M^N, N]`, agent 0's action the most significant digit."""
    return np.array(np.unravel_index(np.arange(num_actions ** num_agents),
                                     (num_actions,) * num_agents)).T


def joint_input(order, s, onehots):
    """Agent j's commitment/critic input: its state, then the one-hot proposals (or actions) of
    itself first and the others in index order (the code's own-first order, D23). `s[..., N, S]`,
    `onehots[..., N, M]` -> `[..., N, S + N*M]`."""
    # static slices: a gather here would be a scatter in the backward pass (slow on CPU)
    ordered = jnp.stack([jnp.concatenate([onehots[..., k, :] for k in row], axis=-1)
                         for row in order], axis=-2)
    return jnp.concatenate([s, ordered], axis=-1)


def act(state: State, obs, key, evaluate: bool = False):
    """Sample proposals, then commitments given the joint proposal, then fallback actions
    (`[E, N]` each) for observations `[E, N, S]`."""
    world = policies(state)
    c = state.config
    greedy = evaluate and c.greedy_eval
    keys = jax.random.split(key, 3)

    def sample(k, probs):
        if greedy:
            return jnp.argmax(probs, axis=-1).astype(jnp.int32)
        return D.sample(k, jnp.log(probs + D.LOG_EPS))

    probs_m = _probs(state, world, "proposal", obs)
    m = sample(keys[0], probs_m)
    m_oh = jax.nn.one_hot(m, probs_m.shape[-1])
    commit = sample(keys[1], _probs(state, world, "commit", joint_input(state.order, obs, m_oh)))
    a = sample(keys[2], _probs(state, world, "action", obs))
    return Commitment(proposal=m, commit=commit, action=a), {}


# --- the four losses of one agent (dcl.md §2.5) ------------------------------------------------

def _merge(world, own, i):
    """`world` with agent i's networks replaced by `own` (i may be traced)."""
    return jax.tree_util.tree_map(lambda s, o: s.at[i].set(o), world, own)


def _others_commit(c, i):
    """prod_{k != i} 1(c^k = 1) for `c[B, N]`."""
    return jnp.prod(jnp.where(jnp.arange(c.shape[-1]) == i, 1.0, c), axis=-1)


def critic_loss(state, p, i, data):
    x = jnp.where(data["e"][:, None, None] > 0, data["m"], data["a"])
    q = state.nets["critic"].apply({"params": p}, joint_input(state.order, data["s"], x)[:, i])
    return masked_mean((q[:, 0] - data["G"][:, i]) ** 2, data["w"])


def expected_fallback_value(state, world, i, s):
    """E_{a ~ pi} Q^i(s, a) over every joint fallback action, `[B]` (small games only)."""
    m_size, n = state.nets["action"].out, s.shape[-2]
    joint = joint_actions(m_size, n)  # [J, N]
    probs = jax.lax.stop_gradient(_probs(state, world, "action", s))  # [B, N, M]
    weight = jnp.prod(probs[:, np.arange(n), joint], axis=-1)  # [B, J]
    onehots = jnp.broadcast_to(jax.nn.one_hot(joint, m_size), (s.shape[0],) + joint.shape + (m_size,))
    x = joint_input(state.order, jnp.broadcast_to(s[:, None], onehots.shape[:3] + s.shape[-1:]),
                    onehots)
    q = state.nets["critic"].apply({"params": agent_slice(world["critic"], i)}, x[:, :, i])[..., 0]
    return jax.lax.stop_gradient(jnp.sum(weight * q, axis=-1))


def action_loss(state, p, i, own, data, beta, world=None):
    c = state.config
    q_a = state.nets["critic"].apply({"params": own["critic"]},
                                     joint_input(state.order, data["s"], data["a"])[:, i])[:, 0]
    if c.baseline == "code":
        q_a = q_a - expected_fallback_value(state, _merge(world, own, i), i, data["s"])
    omega = {"agreement": data["e"], "no_agreement": 1.0 - data["e"],
             "all": jnp.ones_like(data["e"])}[c.action_pg_mask]
    probs = jax.nn.softmax(state.nets["action"].apply({"params": p}, data["s"][:, i]), axis=-1)
    logp = D.selected_log_prob(probs, data["a"][:, i])
    return -masked_mean(omega * q_a * logp, data["w"]) - beta * D.mean_entropy(probs, data["w"])


def commit_loss(state, p, i, own, data, beta, tau, key):
    c = state.config
    critic = lambda x: state.nets["critic"].apply(  # noqa: E731
        {"params": own["critic"]}, joint_input(state.order, data["s"], x)[:, i])[:, 0]
    q_m, q_a = critic(data["m"]), critic(data["a"])
    inp = joint_input(state.order, data["s"], data["m"])[:, i]
    probs = jax.nn.softmax(state.nets["commit"].apply({"params": p}, inp), axis=-1)
    sample = D.straight_through_gumbel(key, probs, tau)
    u = sample[:, 1] ** c.indicator_power
    e = jax.lax.stop_gradient(u) * _others_commit(data["c"], i)
    logp = D.selected_log_prob(probs, sample)
    loss = e * (-q_m * logp) + (1.0 - e) * (-q_a * logp)
    if c.baseline == "code":  # minus the realised value: the score term cancels (D11)
        loss = jnp.zeros_like(loss)
    if c.pathwise_terms:
        loss = loss + e * (q_a - q_m) * u
    return masked_mean(loss, data["w"]) - beta * D.mean_entropy(probs, data["w"])


def proposal_loss(state, p, i, own, world, data, beta, tau, key):
    """Returns `(loss, ic_violation_rate)`; only `p` (agent i's proposal network) is differentiated."""
    c = state.config
    world = _merge(world, {**own, "proposal": p}, i)
    s, w = data["s"], data["w"]
    keys = jax.random.split(key, 3)
    probs_m = _probs(state, world, "proposal", s)  # [B, N, M]
    m = D.straight_through_gumbel(keys[0], probs_m, tau)
    m_in = m if c.pathwise_terms else jax.lax.stop_gradient(m)
    probs_c = _probs(state, world, "commit", joint_input(state.order, s, m_in))  # [B, N, 2]
    commits = D.straight_through_gumbel(keys[1], probs_c, tau)
    u = commits[..., 1] ** c.indicator_power  # [B, N]
    e = jax.lax.stop_gradient(jnp.prod(u, axis=-1))
    a = jax.lax.stop_gradient(
        D.straight_through_gumbel(keys[2], _probs(state, world, "action", s), tau))
    q_m = jax.lax.stop_gradient(_values(state, world, joint_input(state.order, s, m)))  # [B, N]
    q_a = jax.lax.stop_gradient(_values(state, world, joint_input(state.order, s, a)))
    logp_own = D.selected_log_prob(probs_m[:, i], m[:, i])
    ell = logp_own + jnp.sum(D.selected_log_prob(probs_c, commits), axis=-1)
    loss = e * (-q_m[:, i] * ell) + (1.0 - e) * (-q_a[:, i] * ell)
    if c.baseline == "code":  # minus the realised value: the score term cancels (D11)
        loss = jnp.zeros_like(loss)
    if c.pathwise_terms:
        if c.pathwise_product:  # Eq. 5: u^j counts only when every other agent committed
            paths = jnp.sum(_prod_except(jax.lax.stop_gradient(u)) * u, axis=-1)
        else:  # the code's (Q_a - Q_m) sum_j u^j (D3)
            paths = jnp.sum(u, axis=-1)
        loss = loss + (q_a[:, i] - q_m[:, i]) * paths
    violation = jnp.maximum(q_a - q_m, 0.0)  # [B, N]: the deal leaves agent j worse off
    if c.ic_form == "sq_hinge_score":
        violation = violation ** 2
    loss = loss + c.ic_weight * jnp.sum(violation, axis=-1) * logp_own
    rate = masked_mean(jnp.mean((q_a > q_m).astype(jnp.float32), axis=-1), w)
    return masked_mean(loss, w) - beta * D.mean_entropy(probs_m[:, i], w), rate


def _prod_except(u):
    """prod_{k != j} u^k for every j, `[B, N]`."""
    n = u.shape[-1]
    mask = ~np.eye(n, dtype=bool)
    return jnp.prod(jnp.where(mask, u[..., None, :], 1.0), axis=-1)


def _step(tx, params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def agent_round(state, i, own, opt, tau, world, data, beta, key):
    """One round of agent i's four steps (critic, action, commitment, proposal) against the other
    agents' networks in `world`; returns `(own, opt, tau, metrics)`."""
    tx = _optimisers(state.config)
    keys = jax.random.split(key, 2)
    own, opt = dict(own), dict(opt)

    def descend(name, loss_fn):  # one clipped Adam step of network `name` on (loss, aux)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(own[name])
        own[name], opt[name] = _step(tx[name], own[name], opt[name], grads)
        return aux

    q_loss = descend("critic", lambda p: (critic_loss(state, p, i, data),) * 2)
    descend("action", lambda p: (action_loss(state, p, i, own, data, beta, world), None))
    descend("commit", lambda p: (commit_loss(state, p, i, own, data, beta, tau, keys[0]), None))
    rate = descend("proposal", lambda p: proposal_loss(state, p, i, own, world, data, beta, tau,
                                                       keys[1]))
    c = state.config
    tau = jnp.maximum(c.temperature_min, tau - c.temperature_decay)
    return own, opt, tau, {"critic_loss": q_loss, "ic_violation": rate}


def world_update(state, world, opt, tau, data, beta, key):
    """`num_updates` rounds of every agent's four steps on one model of all agents."""
    c, n = state.config, tau.shape[0]
    if not c.sequential_agent_updates:
        def round_(carry, k):  # every agent against the same `world`; agents unrolled, so every
            world, opt, tau = carry  # index is static (a vmap over agents is slow on CPU)
            outs = [agent_round(state, i, agent_slice(world, i), agent_slice(opt, i), tau[i], world,
                                data, beta, ki) for i, ki in enumerate(jax.random.split(k, n))]
            world, opt, tau, metrics = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outs)
            return (world, opt, tau), metrics

        (world, opt, tau), m = jax.lax.scan(round_, (world, opt, tau),
                                            jax.random.split(key, c.num_updates))
        return world, opt, tau, jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), m)
    metrics = []
    for i, k in enumerate(jax.random.split(key, n)):  # agent by agent, as the code (D10)
        def round_(carry, k, i=i):
            own, o, t, world = carry
            own, o, t, m = agent_round(state, i, own, o, t, world, data, beta, k)
            return (own, o, t, _merge(world, own, i)), m

        carry = (agent_slice(world, i), agent_slice(opt, i), tau[i], world)
        (own, o, t, world), m = jax.lax.scan(round_, carry, jax.random.split(k, c.num_updates))
        opt = _merge(opt, o, i)
        tau = tau.at[i].set(t)
        metrics.append(jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), m))
    return world, opt, tau, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *metrics)


# --- the update ----------------------------------------------------------------------------------

def decision_gamma(config: Config) -> float:
    """Discount between decisions: gamma^K, or gamma as the code (D8)."""
    return config.gamma if config.legacy_mega_reward else config.gamma ** config.mega_step


def batch_data(state: State, batch) -> dict:
    """Flatten a trajectory `[T, E, ...]` into B = T*E decisions with one-hot proposals/actions."""
    c = state.config
    act_ = batch.action
    m_size = state.nets["proposal"].out
    valid = batch.valid
    returns = discounted_returns(batch.reward, valid[..., None], decision_gamma(c))
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    commits = act_.commit.astype(jnp.float32)
    return {
        "s": flat(batch.obs),
        "m": flat(jax.nn.one_hot(act_.proposal, m_size)),
        "a": flat(jax.nn.one_hot(act_.action, m_size)),
        "c": flat(commits),
        "e": flat(jnp.prod(commits, axis=-1)),
        "G": flat(returns),
        "w": flat(valid),
    }


def code_logged_return(reward, valid, gamma):
    """The authors' logged return acc <- gamma acc + r over an episode's decisions (D18), `[E, N]`."""
    length = jnp.sum(valid, axis=0)  # [E]
    t = jnp.arange(reward.shape[0])[:, None]
    weights = jnp.where(valid > 0, gamma ** jnp.maximum(length[None] - 1 - t, 0), 0.0)
    return jnp.sum(reward * weights[..., None], axis=0)


def update(state: State, batch):
    c = state.config
    data = batch_data(state, batch)
    beta = state.entropy_coef
    next_key, key = jax.random.split(state.key)
    if c.decentralized:
        n = state.temperature.shape[0]
        params, opt, tau, m = jax.vmap(world_update, in_axes=(None, 0, 0, 0, None, None, 0))(
            state, state.params, state.opt_state, state.temperature, data, beta,
            jax.random.split(key, n))
        m = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), m)
    else:
        params, opt, tau, m = world_update(state, state.params, state.opt_state,
                                           state.temperature, data, beta, key)
    n_agents = batch.reward.shape[-1]
    entropy = jnp.maximum(c.entropy_min, beta - c.entropy_decay * n_agents)  # D7
    state = state.replace(params=params, opt_state=opt, temperature=tau, entropy_coef=entropy,
                          iteration=state.iteration + 1, key=next_key)
    metrics = {f"dcl/{k}": v for k, v in m.items()}
    metrics.update(episode_metrics(state, batch, prefix="train/dcl/"))
    metrics["dcl/entropy_coef"] = beta
    metrics["dcl/temperature"] = jnp.mean(tau)
    return state, metrics


def episode_metrics(state: State, batch, prefix: str = "dcl/") -> dict:
    """Agreement rate and the discounted returns of D18 (the loop logs the undiscounted one)."""
    c = state.config
    gamma = decision_gamma(c)
    returns = discounted_returns(batch.reward, batch.valid[..., None], gamma)
    e = jnp.prod(batch.action.commit.astype(jnp.float32), axis=-1)
    return {
        f"{prefix}agreement": masked_mean(e, batch.valid),
        f"{prefix}return_discounted": jnp.mean(returns[0], axis=0),
        f"{prefix}return_code": jnp.mean(code_logged_return(batch.reward, batch.valid, c.gamma),
                                         axis=0),
    }


def eval_metrics(state: State, batch) -> dict:
    return {**episode_metrics(state, batch), **probe_metrics(state, batch.obs[0, 0])}


def probe_metrics(state: State, obs) -> dict:
    """Policies at one state `obs[N, S]`: proposal and action probabilities `[N, M]` and, for small
    games (M^N <= 64), every agent's commitment probability for every joint proposal `[N, M^N]`,
    joint index = sum_j m^j M^(N-1-j) (agent 0 most significant). For the PD: psi[CC, CD, DC, DD]."""
    world = policies(state)
    m_size = state.nets["proposal"].out
    n = obs.shape[0]
    out = {"dcl/proposal_probs": _probs(state, world, "proposal", obs),
           "dcl/action_probs": _probs(state, world, "action", obs)}
    if m_size ** n <= 64:
        joint = joint_actions(m_size, n)
        onehots = jax.nn.one_hot(joint, m_size)
        s = jnp.broadcast_to(obs, (joint.shape[0],) + obs.shape)
        probs = _probs(state, world, "commit", joint_input(state.order, s, onehots))
        out["dcl/commit_probs"] = probs[..., 1].T  # [N, J]
    return out
