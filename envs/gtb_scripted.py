"""Scripted GTB policies and the episode statistics of gtb.md §9.2 (the reference table measured on
the authors' simulator [F], thesis configuration, 500 episodes, mean ± s.e.).

Policies map one agent's `(action_mask [50] bool, key) -> action` (vmap them):
- `uniform`: uniform over the valid actions of the mask;
- `move_build`: Build when valid, otherwise uniform over NO-OP and the valid moves.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs import gtb

# §9.2 [M]: rows (policy, tax) -> column -> (mean, s.e.); "ret" = mean over agents of the episode
# return, "labor" = mean final labour, "taxes" = total tax collected per episode
REFERENCE = {
    ("uniform", "free"): dict(prod=(68.51, 0.98), eq=(0.572, 0.007), sum_prod_eq=(3098, 24),
                              houses=(1.68, 0.06), trades=(23.2, 0.4), taxes=(0.0, 0.0),
                              ret=(-11.54, 0.10), labor=(70.85, 0.18), collections=(23.7, 0.3)),
    ("uniform", "us_federal"): dict(prod=(68.95, 1.03), eq=(0.627, 0.006), sum_prod_eq=(3263, 26),
                                    houses=(1.73, 0.06), trades=(23.4, 0.4), taxes=(6.67, 0.14),
                                    ret=(-11.42, 0.10), labor=(71.09, 0.19), collections=(24.3, 0.3)),
    ("uniform", "flat_0.5"): dict(prod=(66.06, 1.01), eq=(0.736, 0.005), sum_prod_eq=(3548, 31),
                                  houses=(1.57, 0.06), trades=(23.3, 0.4), taxes=(28.2, 0.6),
                                  ret=(-11.51, 0.11), labor=(70.68, 0.19), collections=(24.2, 0.3)),
    ("move_build", "free"): dict(prod=(106.30, 1.37), eq=(0.425, 0.007), sum_prod_eq=(4029, 6),
                                 houses=(4.04, 0.08), trades=(0.0, 0.0), taxes=(0.0, 0.0),
                                 ret=(-12.48, 0.09), labor=(93.49, 0.27), collections=(28.4, 0.3)),
    ("move_build", "us_federal"): dict(prod=(106.30, 1.37), eq=(0.491, 0.006),
                                       sum_prod_eq=(4387, 10), houses=(4.04, 0.08), trades=(0.0, 0.0),
                                       taxes=(7.67, 0.17), ret=(-12.19, 0.09), labor=(93.49, 0.27),
                                       collections=(28.4, 0.3)),
    ("move_build", "flat_0.5"): dict(prod=(106.30, 1.37), eq=(0.712, 0.003), sum_prod_eq=(5585, 33),
                                     houses=(4.04, 0.08), trades=(0.0, 0.0), taxes=(33.1, 0.7),
                                     ret=(-11.51, 0.11), labor=(93.49, 0.27), collections=(28.4, 0.3)),
}

TAX_SETTINGS = {"free": gtb.FREE_MARKET_RATES, "us_federal": gtb.US_FEDERAL_RATES,
                "flat_0.5": (0.5,) * 7}


def uniform(mask, key):
    """Uniform over the valid actions of `mask` [50]."""
    return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf))


def move_build(mask, key):
    """Build if valid, else uniform over NO-OP and the valid moves."""
    keep = jnp.zeros(mask.shape[-1], bool).at[gtb.NOOP].set(True).at[gtb.MOVE_LEFT:].set(True)
    roam = jax.random.categorical(key, jnp.where(mask & keep, 0.0, -jnp.inf))
    return jnp.where(mask[gtb.BUILD], gtb.BUILD, roam)


POLICIES = {"uniform": uniform, "move_build": move_build}


def make_episode_stats(env, params, policy, n_envs: int):
    """A jitted `run(key, tax_rates [7]) -> {column: [n_envs] float32}` (the columns of `REFERENCE`)
    that plays one episode (`max_steps_in_episode` steps) in each of `n_envs` environments with the
    scripted `policy` under the fixed `tax_rates`."""
    horizon = int(params.max_steps_in_episode)
    return jax.jit(lambda key, rates: _episode_stats(
        env, params.replace(tax_rates=jnp.asarray(rates, jnp.float32)), policy, key, n_envs, horizon))


def _episode_stats(env, params, policy, key, n_envs, horizon):
    key_reset, key_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset_env, in_axes=(0, None))(jax.random.split(key_reset, n_envs), params)
    step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

    def body(carry, k):
        obs, state = carry
        k_act, k_step = jax.random.split(k)
        mask = env.split_obs(obs)["action_mask"] > 0.5
        actions = jax.vmap(jax.vmap(policy))(mask, _keys(k_act, mask.shape[:-1]))
        obs, state, reward, _, info = step(jax.random.split(k_step, n_envs), state, actions, params)
        return (obs, state), (reward, info)

    (_, state), (reward, info) = jax.lax.scan(body, (obs, state), jax.random.split(key_run, horizon))
    return episode_summary(reward, info, state)


def episode_summary(reward, info, final_state):
    """The §9.2 columns per episode, `{column: [E]}`, from one whole episode: `reward` [T, E, N],
    stacked `info` [T, E, ...] and the `final_state` (batched [E, ...])."""
    coin = final_state.inv[..., 0] + final_state.esc[..., 0]
    return {
        "prod": coin.sum(-1), "eq": gtb.equality(coin),
        "sum_prod_eq": (info["prod"] * info["eq"]).sum(0),
        "houses": info["houses_built"].sum((0, -1)), "trades": info["trades"].sum(0).astype(jnp.float32),
        "taxes": info["tax_paid"].sum((0, -1)), "ret": reward.sum(0).mean(-1),
        "labor": final_state.labor.mean(-1), "collections": info["collected"].sum((0, -2, -1)),
    }


def _keys(key, shape):
    """Independent keys for every agent of every environment: `[*shape]` keys."""
    return jax.random.split(key, int(np.prod(shape))).reshape(*shape, -1)


def compare(stats, reference, n_sigma: float = 3.0):
    """Per column: (ours mean, our s.e., ref mean, ref s.e., ok) with ok = |Δ| <= n_sigma·√(se²+se_ref²)."""
    out = {}
    for name, (ref, ref_se) in reference.items():
        x = np.asarray(stats[name], np.float64)
        mean, se = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
        tol = n_sigma * np.sqrt(se ** 2 + ref_se ** 2)
        out[name] = (mean, se, ref, ref_se, bool(abs(mean - ref) <= tol + 1e-9))
    return out
