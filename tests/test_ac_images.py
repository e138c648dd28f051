"""Independent actor-critic (jaxmcg.algos.ac) with the thesis' conv net on Cleanup images (§2.10)."""
import jax
import jax.numpy as jnp
import numpy as np
from gradcheck import assert_ac_losses_match_fd, f64
from seeds import train_seeds

import jaxmcg
from jaxmcg.algos import ac
from jaxmcg.rollout import Trajectory
from jaxmcg.train import TrainConfig, make_train

CONV = dict(network="conv", hidden=(64, 64), critic_hidden=(64, 64))

# An apple-rich 7x7 Cleanup for short learning tests: one cleaning shot restores the river for good
# (no waste respawn, depletion only at density 1) and apples regrow at rate 1 - density, so the
# rewards are dense enough to learn from in a few dozen updates (the thesis' settings need
# thousands). Uniform random play collects 6.3 per episode (collective; measured, 256 episodes).
RICH = dict(apple_respawn_prob=1.0, waste_spawn_prob=0.0, threshold_depletion=1.0)
RANDOM_RETURN = 6.3


def image_batch(key, t, e, n, obs_shape, num_actions, dtype=jnp.float32):
    """A random `[t, e, n, *obs_shape]` image trajectory, about half its cells black (as Cleanup's
    views outside the map), with a padded last step in environment 0."""
    k = jax.random.split(key, 5)
    shape = (t, e, n) + tuple(obs_shape)

    def images(key):
        ka, kb = jax.random.split(key)
        black = jax.random.bernoulli(ka, 0.5, shape[:-1] + (1,))
        return jnp.where(black, 0.0, jax.random.uniform(kb, shape)).astype(dtype)

    return Trajectory(
        obs=images(k[0]),
        action=jax.random.randint(k[1], (t, e, n), 0, num_actions),
        reward=jax.random.bernoulli(k[2], 0.3, (t, e, n)).astype(dtype),
        next_obs=images(k[3]),
        valid=jnp.ones((t, e), dtype).at[-1, 0].set(0.0),
        terminated=jnp.zeros((t, e), bool),
        truncated=jnp.zeros((t, e), bool).at[-1].set(True),
        extras={},
        info={},
    )


def off_kinks(tree):
    """float64 parameters with every leaf shifted by 0.01: zero-initialised biases would put an
    all-black patch exactly on a ReLU kink, where finite differences are meaningless."""
    return f64(jax.tree_util.tree_map(lambda p: p + 0.01, tree))


def test_conv_shapes_and_parameter_count():
    """Conv 6 filters 3x3 SAME on 9x9x3 -> 486 -> FC64 -> FC64 -> 6 logits (A22), per agent."""
    env, params = jaxmcg.make("cleanup-7x7")
    state = ac.init(jax.random.PRNGKey(0), env, params, ac.Config(**CONV))
    assert state.params["Dense_0"]["kernel"].shape == (2, 9 * 9 * 6, 64)
    assert state.params["Dense_2"]["kernel"].shape == (2, 64, 6)
    assert state.critic_params["Dense_2"]["kernel"].shape == (2, 64, 1)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(1), 3), params)
    actions, _ = ac.act(state, obs, jax.random.PRNGKey(2))
    assert actions.shape == (3, 2) and actions.dtype == jnp.int32


def test_gradients_match_finite_differences(x64):
    env, env_params = jaxmcg.make("cleanup-7x7")
    config = ac.Config(network="conv", hidden=(16, 8), critic_hidden=(16, 8))
    state = ac.init(jax.random.PRNGKey(0), env, env_params, config)
    state = state.replace(
        params=off_kinks(state.params),
        critic_params=off_kinks(state.critic_params),
        target_params=f64(jax.tree_util.tree_map(lambda p: 0.7 * p + 0.02, state.critic_params)),
    )
    batch = image_batch(jax.random.PRNGKey(1), 4, 2, 2, (9, 9, 3), 6, jnp.float64)
    assert_ac_losses_match_fd(state, batch)


def train_rich_cleanup(algo, config, iterations=40, seeds=None):
    """`iterations` updates of 32 episodes on `RICH` Cleanup; metrics of 2 evaluations, for one seed
    or, with `seeds`, stacked over that many vmapped seeds."""
    env, params = jaxmcg.make("cleanup-7x7", **RICH)
    tc = TrainConfig(n_envs=32, iterations=iterations, log_every=iterations // 2, eval_envs=64)
    train = make_train(algo, env, params, config, tc)
    if seeds is not None:
        return train_seeds(train, seeds)[1]
    _, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(np.asarray, metrics)


def test_learns_on_rich_cleanup():
    """With a learning rate for few updates (0.05; the other hyperparameters Table B.5's AC), 40
    updates of the conv AC at least double the random collective return (measured: 6.3 -> 27)."""
    m = train_rich_cleanup(ac, ac.Config(**CONV, lr=0.05))
    assert m["collective_return"][-1] >= 2 * RANDOM_RETURN, m["collective_return"]
    assert np.all(np.isfinite(m["ac/critic_loss"]))
