"""Differentiable games: n players with continuous strategies and differentiable losses (D3C's
traffic network, convex prisoner's dilemma and small analytic games; d3c.md §2.1-2.3).

They are not Markov games: a game exposes `losses(x, params) -> [n]` over a joint strategy
`x[n, d]` (row i is player i's block; a game with unequal blocks pads them), and sits in the same
registry as the Markov games (`jaxmcg.make("braess")`). Learning is simultaneous gradient play on
`x`, so the train loop steps strategies instead of rolling out episodes.
"""
from __future__ import annotations

import jax


class DifferentiableGame:
    """Base class. Subclasses set `num_agents`, `strategy_dim` and implement `losses`; they may
    override `init_strategies`, `project` (e.g. onto a box after each step) and `social_optimum`."""

    num_agents: int
    strategy_dim: int

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def default_params(self):
        raise NotImplementedError

    def validate_params(self, params) -> None:
        """Raise ValueError for impossible parameters, before any compilation."""

    def losses(self, x: jax.Array, params) -> jax.Array:
        """Each player's loss, `[n]`, at the joint strategy `x[n, d]`."""
        raise NotImplementedError

    def init_strategies(self, key: jax.Array, params) -> jax.Array:
        """A random starting joint strategy `[n, d]` (default U[0, 1], d3c.md A3)."""
        return jax.random.uniform(key, (self.num_agents, self.strategy_dim))

    def project(self, x: jax.Array, params) -> jax.Array:
        """Map a strategy after a gradient step back into the strategy set (default: unconstrained)."""
        return x

    def social_optimum(self, params) -> jax.Array:
        """The minimum total loss over joint strategies (the price of anarchy's denominator)."""
        raise NotImplementedError

    def loss_jacobian(self, x: jax.Array, params) -> jax.Array:
        """`J[k, j] = grad_{x_j} f_k(x)`, shape `[n, n, d]`."""
        return jax.jacrev(self.losses)(x, params)


def is_differentiable_game(env) -> bool:
    return isinstance(env, DifferentiableGame)
