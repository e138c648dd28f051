"""Small analytic differentiable games from D3C's appendix (d3c.md §2.3). Each player has one
scalar strategy.

- `NashParadox` (Game 1, App. B): min_{x1 in [0,1]} x1^2 + 1/(x2^2 + kappa), and symmetrically.
  Nash (0, 0) with loss 1/kappa each; optimum x = sqrt(1 - kappa) with loss 2 - kappa each.
- `EfficientUnfair` (Game 2, App. F.6): min_x1 x1^2, min_x2 x2^2 - 1.1 x1^2; the welfare optimum is
  unbounded (x1 -> infinity), so `social_optimum` is -inf.
- `Election` (App. F.5): two parties of two candidates; negative advertising within a party is a
  PD, between parties the game is zero-sum. The paper does not give the losses; d3c.md §2.3 infers
  f1 = x1^2 + (x2 - c)^2 + g, f2 = x2^2 + (x1 - c)^2 + g, f3 = x3^2 + (x4 - c)^2 - g,
  f4 = x4^2 + (x3 - c)^2 - g with g = (x1 x3 + x2 x4) / 4, which reproduces both reported
  Jacobian spectra. Training starts from negative advertising, x = 0.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmcg.differentiable import DifferentiableGame


@struct.dataclass
class ParadoxParams:
    kappa: float = 0.2


class NashParadox(DifferentiableGame):
    num_agents, strategy_dim = 2, 1

    @property
    def default_params(self):
        return ParadoxParams()

    def validate_params(self, params):
        k = np.asarray(params.kappa, np.float64)
        if not np.all((k > 0) & (k <= 1)):
            raise ValueError(f"kappa={params.kappa!r} is invalid: must be in (0, 1]")

    def losses(self, x, params):
        x1, x2 = x[0, 0], x[1, 0]
        return jnp.stack([x1 ** 2 + 1 / (x2 ** 2 + params.kappa),
                          x2 ** 2 + 1 / (x1 ** 2 + params.kappa)])

    def project(self, x, params):
        return jnp.clip(x, 0.0, 1.0)

    def social_optimum(self, params):
        return 2 * (2 - params.kappa)


@struct.dataclass
class UnfairParams:
    envy: float = 1.1  # the 11/10 of App. F.6


class EfficientUnfair(DifferentiableGame):
    num_agents, strategy_dim = 2, 1

    @property
    def default_params(self):
        return UnfairParams()

    def losses(self, x, params):
        x1, x2 = x[0, 0], x[1, 0]
        return jnp.stack([x1 ** 2, x2 ** 2 - params.envy * x1 ** 2])

    def social_optimum(self, params):
        return jnp.asarray(-jnp.inf)


@struct.dataclass
class ElectionParams:
    c: float = 1.0
    rivalry: float = 0.25  # the 1/4 of g


class Election(DifferentiableGame):
    num_agents, strategy_dim = 4, 1

    @property
    def default_params(self):
        return ElectionParams()

    def losses(self, x, params):
        x1, x2, x3, x4 = x[:, 0]
        g = params.rivalry * (x1 * x3 + x2 * x4)
        c = params.c
        return jnp.stack([x1 ** 2 + (x2 - c) ** 2 + g, x2 ** 2 + (x1 - c) ** 2 + g,
                          x3 ** 2 + (x4 - c) ** 2 - g, x4 ** 2 + (x3 - c) ** 2 - g])

    def init_strategies(self, key, params):
        return jnp.zeros((4, 1))  # "starting from negative advertising" (App. F.5)

    def social_optimum(self, params):
        # the zero-sum terms cancel in the total, leaving two 2-player convex PDs: 2 * c^2
        return 2.0 * jnp.asarray(params.c, jnp.float32) ** 2
