"""Finite-difference gradient checks shared by the algorithm tests (run them in float64)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def f64(tree):
    """Cast the floating leaves of `tree` to float64."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def assert_grad_matches_fd(f, params, key, h=1e-6, rtol=1e-4, grad=None, n_directions=4,
                           n_coordinates=8, scale=1.0):
    """`grad` (default: jax.grad of scalar `f`) against central differences of `f` along random
    directions and along the coordinates with the largest gradients (float64).

    Keep `h * scale` small so that ReLU kinks stay out of the stencil.
    """
    flat, unravel = ravel_pytree(params)
    assert flat.dtype == jnp.float64
    fx = jax.jit(lambda x: f(unravel(x)))
    g = np.asarray(ravel_pytree(grad)[0] if grad is not None else jax.grad(fx)(flat))
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0
    for k in jax.random.split(key, n_directions):
        v = scale * jax.random.normal(k, flat.shape, jnp.float64)
        fd = float(fx(flat + h * v) - fx(flat - h * v)) / (2 * h)
        an = float(g @ np.asarray(v))
        assert abs(fd - an) <= rtol * abs(an), (fd, an)
    for i in np.argsort(-np.abs(g))[:n_coordinates]:
        e = jnp.zeros_like(flat).at[i].set(1.0)
        fd = float(fx(flat + h * e) - fx(flat - h * e)) / (2 * h)
        assert abs(fd - g[i]) <= rtol * abs(g[i]), (i, fd, g[i])


def assert_ac_losses_match_fd(state, batch):
    """Actor loss (with a random constant TD error) and critic objective of `jaxmcg.algos.ac` on a
    float64 `state` and `batch`, against central differences."""
    from jaxmcg.algos import ac

    delta = jax.random.normal(jax.random.PRNGKey(2), batch.reward.shape, jnp.float64)
    eps = jnp.asarray(0.2, jnp.float64)
    assert_grad_matches_fd(lambda p: ac.actor_loss(p, state, batch, delta, eps), state.params,
                           jax.random.PRNGKey(3))
    assert_grad_matches_fd(lambda p: ac.critic_objective(p, state, batch)[0], state.critic_params,
                           jax.random.PRNGKey(4))
