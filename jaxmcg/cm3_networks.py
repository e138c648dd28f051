"""The staged networks of CM3 and its on-policy baselines (cm3-hsd.md §2.4, §2.5; thesis A.8,
[C-CM3 networks.py]).

Every staged network has a Stage-1 part and, from Stage 2 on, a branch that joins its **last hidden
layer** (function augmentation, §2.4 [T L475]):

    h = relu(W_1 h_1 + W_12 h_branch [+ b])

with bias-free cross matrices ("W_*_h2" in the code: truncated normal, σ = 0.01), TF's default
Glorot-uniform kernels and zero biases elsewhere (§2.4 "Initialization"), and one bias vector b after
the sum for actors (zeros: the spec's recommendation for the code's Glorot-initialised 1-D variable).
Stage-1 parameter names are a subset of Stage 2's with identical shapes, so restoring a Stage-1 net
into a fresh Stage-2 one is `augment(stage1_params, stage2_params)`.

Observations are the environments' flat per-agent vectors; a network reads its inputs through the
environment's `obs_layout` (a static tuple of `(name, start, stop)`, see `layout`). The environment
families are told apart by `env_kind`.
"""
from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

ENV_KINDS = ("particle", "checkers", "lane_merge")
LOG_FLOOR = 1e-15  # log(p + 1e-15) of the floored policy [C-CM3 alg_*.py] (§2.3)

dense_init = nn.initializers.xavier_uniform()  # TF1 tf.layers.dense / contrib conv2d default
cross_init = nn.initializers.truncated_normal(stddev=0.01)  # networks.get_variable (§2.4)
zeros = nn.initializers.zeros


def env_kind(env) -> str:
    """The network family of a CM3 environment: "particle", "checkers" or "lane_merge"; ValueError
    for any other environment."""
    from envs.checkers import Checkers
    from envs.lane_merge import LaneMerge
    from envs.particle_nav import ParticleNav

    for cls, kind in ((ParticleNav, "particle"), (Checkers, "checkers"), (LaneMerge, "lane_merge")):
        if isinstance(env, cls):
            return kind
    name = getattr(env, "name", type(env).__name__)
    raise ValueError(f"environment {name!r} has no CM3 network for its observations; "
                     "valid: particle_* (particle_nav), checkers*, lane_merge*")


def layout(env) -> tuple[tuple[str, int, int], ...]:
    """The environment's `obs_layout` as a hashable `((name, start, stop), ...)`, a static field."""
    return tuple((name, int(a), int(b)) for name, (a, b) in sorted(env.obs_layout.items(),
                                                                   key=lambda kv: kv[1][0]))


def piece(obs: jax.Array, lay, name: str) -> jax.Array:
    """The slice `name` of flat observations `obs[..., D]` under layout `lay`."""
    for n, a, b in lay:
        if n == name:
            return obs[..., a:b]
    raise ValueError(f"observation part {name!r} is not in the layout; valid: "
                     f"{', '.join(n for n, _, _ in lay)}")


def floored_probs(logits: jax.Array, eps) -> jax.Array:
    """P = (1 - eps) softmax(logits) + eps / |A| over the last axis (§2.3, [T L1516])."""
    return (1.0 - eps) * jax.nn.softmax(logits, axis=-1) + eps / logits.shape[-1]


def floored_log_probs(logits: jax.Array, eps) -> jax.Array:
    """log(P + 1e-15) of the eps-floored softmax, as the code takes it (§2.3). (Not
    `distributions.mixed_log_probs`, which has no 1e-15.)"""
    return jnp.log(floored_probs(logits, eps) + LOG_FLOOR)


def dense(units: int, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(units, use_bias=use_bias, kernel_init=dense_init, bias_init=zeros, name=name)


def as_parts(x) -> tuple:
    """A list or tuple of arrays as a tuple; a single array as a one-part tuple."""
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


class PartsDense(nn.Module):
    """`dense(units, name)` of the concatenation of `parts` along the last axis, computed part by
    part: sum_k x_k W[rows of k] (+ b). The parts' leading axes broadcast against each other, so a
    part that repeats along an axis (size 1 there) is multiplied once rather than per copy. Same
    parameters ("kernel" [sum_k d_k, units], "bias") and initial draws as `dense` on the
    concatenation; a single array is one part."""

    units: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, parts) -> jax.Array:
        parts = as_parts(parts)
        sizes = [x.shape[-1] for x in parts]
        kernel = self.param("kernel", dense_init, (sum(sizes), self.units))
        z, start = 0.0, 0
        for x, d in zip(parts, sizes):
            z, start = z + x @ kernel[start:start + d], start + d
        if self.use_bias:
            z = z + self.param("bias", zeros, (self.units,))
        return z


def concat_parts(parts) -> jax.Array:
    """The concatenation that `PartsDense` reads `parts` as: broadcast leading axes, joined along
    the last."""
    parts = as_parts(parts)
    lead = jnp.broadcast_shapes(*(x.shape[:-1] for x in parts))
    return jnp.concatenate([jnp.broadcast_to(x, lead + x.shape[-1:]) for x in parts], -1)


def conv_flat(x: jax.Array, features: int, kernel: tuple[int, int], name: str) -> jax.Array:
    """conv(features, kernel), stride 1, SAME, ReLU, flattened (the code's `convnet_1`, §2.5);
    `x[..., H, W, C]`."""
    batch = x.shape[:-3]
    y = nn.Conv(features, kernel, padding="SAME", kernel_init=dense_init, bias_init=zeros,
                name=name)(x.reshape((-1,) + x.shape[-3:]))
    return nn.relu(y).reshape(batch + (-1,))


class Merge(nn.Module):
    """The augmented layer relu(Σ_k x_k W_k [+ b]) (§2.4): one bias-free cross matrix `W_<key>` per
    input of the dict `inputs` (truncated normal σ = 0.01), a single bias `b` when `use_bias`
    (actors; critics have none). Stage 1 passes only its own input; Stage 2 adds the branch's, so the
    Stage-1 parameters are a subset."""

    units: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array]) -> jax.Array:
        z = 0.0
        for key, x in inputs.items():
            z = z + x @ self.param(f"W_{key}", cross_init, (x.shape[-1], self.units))
        if self.use_bias:
            z = z + self.param("b", zeros, (self.units,))
        return nn.relu(z)


class Actor(nn.Module):
    """The shared staged actor π(a | o, g) of CM3, IAC and COMA (§2.5): logits `[..., A]` of flat
    observations `obs[..., D]` read through `layout`.

    * particle: [o_self, g] → 64; Stage 2: o_others → 128; merge 64 (+b); dense A.
    * checkers: conv(6, 3x3)(o_self,T) → 32, concat [o_self,V, onehot a_{t-1}, g] → 256; Stage 2:
      o_others → 256; merge 256 (+b); dense A [C-CM3 config_checkers_stage*.json].
    * lane_merge: o_self → 32 and g → 32, concatenated; Stage 2: the 13x9x2 grid → conv(4, 5x3) →
      64; merge 64 (+b); dense A (`actor_staged`).
    """

    kind: str
    num_actions: int
    stage: int
    layout: tuple
    hidden: int | None = None  # Stage-1 width (64 / 256 / 32 per kind when None)
    others: int | None = None  # branch width (128 / 256 / 64)
    merge: int | None = None  # merged-layer width (64 / 256 / 64)

    def sizes(self) -> tuple[int, int, int]:
        default = {"particle": (64, 128, 64), "checkers": (256, 256, 256),
                   "lane_merge": (32, 64, 64)}[self.kind]
        return tuple(d if v is None else v for v, d in zip((self.hidden, self.others, self.merge),
                                                           default))

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        check_stage(self.kind, self.stage)
        hidden, others_width, merge_width = self.sizes()
        lay = self.layout
        goal = piece(obs, lay, "goal")
        if self.kind == "particle":
            h_self = nn.relu(dense(hidden, "branch_self")(
                jnp.concatenate([piece(obs, lay, "self"), goal], -1)))
        elif self.kind == "checkers":
            view = piece(obs, lay, "self_T").reshape(obs.shape[:-1] + (5, 5, 3))
            conv = nn.relu(dense(32, "conv_linear")(conv_flat(view, 6, (3, 3), "conv")))
            h_self = nn.relu(dense(hidden, "branch_self")(jnp.concatenate(
                [conv, piece(obs, lay, "self_V"), piece(obs, lay, "prev_action"), goal], -1)))
        else:
            h_self = jnp.concatenate([nn.relu(dense(hidden, "branch_obs")(piece(obs, lay, "self"))),
                                      nn.relu(dense(hidden, "branch_goal")(goal))], -1)
        inputs = {"self": h_self}
        if self.stage > 1:
            inputs["others"] = others_branch(self.kind, piece(obs, lay, "others"), others_width)
        h = Merge(merge_width, use_bias=True, name="merge")(inputs)
        return dense(self.num_actions, "out")(h)


def others_branch(kind: str, others: jax.Array, width: int) -> jax.Array:
    """The Stage-2 o_others branch of the actor and IAC's V (call inside a compact module): a dense
    layer for particle / checkers, conv(4, 5x3) + dense for the lane-merge grid (§2.5)."""
    if kind == "lane_merge":
        grid = others.reshape(others.shape[:-1] + (13, 9, 2))
        others = conv_flat(grid, 4, (5, 3), "conv_others")
    return nn.relu(dense(width, "branch_others")(others))


def check_stage(kind: str, stage: int) -> None:
    if kind not in ENV_KINDS:
        raise ValueError(f"kind={kind!r} is invalid; valid: {', '.join(ENV_KINDS)}")
    if stage not in (1, 2):
        raise ValueError(f"stage={stage!r} is invalid; valid: 1, 2")


def make_actor(env, stage: int, env_params=None, **sizes) -> Actor:
    """The staged actor for `env` (its kind, layout and number of actions)."""
    kind = env_kind(env)
    check_stage(kind, stage)
    return Actor(kind, int(env.action_space(env_params).n), stage, layout(env), **sizes)


def baseline_stage(env) -> int:
    """The stage of the baselines' networks on `env` (§3: the Stage-2 architecture): 1 when its
    o_others part is empty (a one-agent particle or checkers env), where no branch can exist."""
    start, stop = env.obs_layout["others"]
    return 2 if stop > start else 1


def augment(stage1_params, stage2_params):
    """`stage2_params` (a fresh Stage-2 tree) with every leaf of `stage1_params` copied in (the
    restore of §2.4). Raises ValueError when a Stage-1 name is missing from Stage 2 or a shape
    differs."""
    def merge(old, new, path):
        if isinstance(old, Mapping):
            if not isinstance(new, Mapping):
                raise ValueError(f"{path or 'params'}: a Stage-1 subtree meets a Stage-2 leaf")
            out = dict(new)
            for k, v in old.items():
                if k not in new:
                    raise ValueError(f"Stage-1 parameter {path + '/' + k!r} is not in the Stage-2 "
                                     f"network; valid: {', '.join(map(str, new))}")
                out[k] = merge(v, new[k], f"{path}/{k}")
            return out
        if isinstance(new, Mapping) or jnp.shape(old) != jnp.shape(new):
            raise ValueError(f"Stage-1 parameter {path!r} has shape {jnp.shape(old)}, Stage 2 "
                             f"{'a subtree' if isinstance(new, Mapping) else jnp.shape(new)}")
        return jnp.asarray(old, jnp.asarray(new).dtype)

    return merge(stage1_params, stage2_params, "")


class LocalV(nn.Module):
    """IAC's staged V(o, g) on the local observation (§2.5 "IAC V", [C-CM3 networks.py
    V_particle_local, V_sumo_local, V_checkers_local]): values `[...]` of `obs[..., D]`.

    * particle: [o_self, g] → 64; Stage 2: o_others → 128; merge 64, no bias; linear 1, no bias.
    * checkers: conv(6, 3x3)(o_self,T) with [o_self,V, g] → 256; Stage 2: o_others → 32; merge 256,
      no bias; linear 1 **with** bias (the code's `bias=True`).
    * lane_merge: [o_self, g] → 64; Stage 2: conv(4, 5x3)(grid) → 128; merge 64; linear 1, no bias.
    """

    kind: str
    layout: tuple
    stage: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        check_stage(self.kind, self.stage)
        hidden, others_width, merge_width = {"particle": (64, 128, 64), "checkers": (256, 32, 256),
                                             "lane_merge": (64, 128, 64)}[self.kind]
        lay = self.layout
        goal = piece(obs, lay, "goal")
        if self.kind == "checkers":
            view = piece(obs, lay, "self_T").reshape(obs.shape[:-1] + (5, 5, 3))
            x = jnp.concatenate([conv_flat(view, 6, (3, 3), "conv"), piece(obs, lay, "self_V"), goal],
                                -1)
        else:
            x = jnp.concatenate([piece(obs, lay, "self"), goal], -1)
        inputs = {"self": nn.relu(dense(hidden, "branch_self")(x))}
        if self.stage > 1:
            inputs["others"] = others_branch(self.kind, piece(obs, lay, "others"), others_width)
        h = Merge(merge_width, use_bias=False, name="merge")(inputs)
        return dense(1, "out", use_bias=self.kind == "checkers")(h)[..., 0]


class ComaCritic(nn.Module):
    """COMA's goal-augmented critic Q(s, a^{-n}, a^n = ·, g^n, g^{-n}, n, o_self^n) → `[..., A]`
    (§2.5, [C-CM3 networks.py Q_global, Q_coma_checkers]): two ReLU layers of `units` (thesis 128;
    256 for Checkers, A-CM3-13) and a linear output. `x` is the concatenated flat input; checkers
    also passes `state_env` (s_T, 54 = 3x9x2) and `view` (o_self,T, 75 = 5x5x3), each through its
    conv: conv(4, 3x5) and conv(6, 3x3).

    The dense kernels are truncated normal σ = 0.01: the code builds them in `fc3`, whose variable
    scope sets that initializer (its convs, outside that scope, are Glorot).
    """

    num_actions: int
    units: int = 128

    @nn.compact
    def __call__(self, x, state_env=None, view=None):
        parts = [x]
        if state_env is not None:
            grid = state_env.reshape(state_env.shape[:-1] + (3, 9, 2))
            parts.insert(0, conv_flat(grid, 4, (3, 5), "conv_s"))
        if view is not None:
            parts.append(conv_flat(view.reshape(view.shape[:-1] + (5, 5, 3)), 6, (3, 3), "conv_o"))
        h = jnp.concatenate(parts, -1)
        for k in range(2):
            h = nn.relu(nn.Dense(self.units, kernel_init=cross_init, bias_init=zeros,
                                 name=f"h{k + 1}")(h))
        return nn.Dense(self.num_actions, kernel_init=cross_init, bias_init=zeros, name="out")(h)


def others_of(x: jax.Array) -> jax.Array:
    """`x[..., N, k]` → `[..., N, (N-1)·k]`: row n holds the other agents' rows in index order
    (a^{-n}, g^{-n}, s^{-n} of §2.5). Static indices: a gather of a constant pattern."""
    n = x.shape[-2]
    idx = [[j for j in range(n) if j != i] for i in range(n)]
    out = x[..., jnp.asarray(idx, jnp.int32).reshape(-1), :] if n > 1 else x[..., :0, :]
    return out.reshape(x.shape[:-2] + (n, (n - 1) * x.shape[-1]))
