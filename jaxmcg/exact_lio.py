"""Exact LIO on the stateless prisoner's dilemma (thesis Prop. 3, App. B.2; spec §2.8).

theta^i is agent i's probability of cooperating, eta^i = [eta_C, eta_D] what agent i gives the other
for C and for D. Values are closed-form (Eq B.1), so the inner policy step and the incentive step are
exact gradients; `closed_form_step` is the thesis' hand-derived version (Eq B.4-B.8) for comparison.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Table 5.1, (agent 1, agent 2) rewards for CC, CD, DC, DD
PAYOFF = jnp.array([[-1.0, -1.0], [-3.0, 0.0], [0.0, -3.0], [-2.0, -2.0]])


def values(theta: jax.Array, eta: jax.Array, gamma: float) -> jax.Array:
    """V^i = p^T r^i / (1 - gamma) with incentives added to the recipient's rewards (Eq B.1-B.3).

    `theta` is `[2]`, `eta` is `[2 giver, 2 (C, D)]`; returns `[2]`.
    """
    t1, t2 = theta
    p = jnp.array([t1 * t2, t1 * (1 - t2), (1 - t1) * t2, (1 - t1) * (1 - t2)])
    # agent 1 receives eta^2 for its own action: C in CC, CD; D in DC, DD (and symmetrically)
    r1 = PAYOFF[:, 0] + jnp.array([eta[1, 0], eta[1, 0], eta[1, 1], eta[1, 1]])
    r2 = PAYOFF[:, 1] + jnp.array([eta[0, 0], eta[0, 1], eta[0, 0], eta[0, 1]])
    return jnp.stack([p @ r1, p @ r2]) / (1.0 - gamma)


def extrinsic_values(theta, gamma):
    return values(theta, jnp.zeros((2, 2)), gamma)


def inner_step(theta, eta, alpha, gamma):
    """theta-hat^j = theta^j + alpha dV^j/dtheta^j (each agent ascends its own total value)."""
    grads = jnp.stack([jax.grad(lambda t, j=j: values(t, eta, gamma)[j])(theta)[j] for j in range(2)])
    return theta + alpha * grads


def exact_lio_step(theta, eta, alpha, beta, gamma):
    """One LIO iteration: eta^i ascends V^i_env(theta-hat(eta)) through the inner step; then
    theta <- theta-hat. Returns `(theta, eta)`; theta is clipped to [0, 1]."""
    def outer(eta_i, i):
        eta_full = eta.at[i].set(eta_i)
        return extrinsic_values(inner_step(theta, eta_full, alpha, gamma), gamma)[i]

    eta_grad = jnp.stack([jax.grad(outer)(eta[i], i) for i in range(2)])
    theta_hat = jnp.clip(inner_step(theta, eta, alpha, gamma), 0.0, 1.0)
    return theta_hat, eta + beta * eta_grad


def closed_form_step(theta, eta, alpha, beta, gamma):
    """Eq B.4-B.8: theta-hat^j = theta^j + alpha/(1-gamma) (eta^i_C - eta^i_D - 1);
    eta^i <- eta^i + beta alpha / (1-gamma)^2 * 2 [1, -1]."""
    d = eta[:, 0] - eta[:, 1] - 1.0  # d[i]: what giver i's incentives do to the other's gradient
    theta_hat = theta + alpha / (1 - gamma) * d[::-1]
    eta_new = eta + beta * alpha / (1 - gamma) ** 2 * 2.0 * jnp.array([1.0, -1.0])
    return jnp.clip(theta_hat, 0.0, 1.0), eta_new
