"""Independent PG: gradient check and the thesis' failure on Escape Room."""
import jax
import numpy as np
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg.algos import pg
from jaxmcg.rollout import episode_rollout
from jaxmcg.train import TrainConfig, make_train


def test_pg_gradient_matches_finite_differences(x64):
    env, params = jaxmcg.make("escape_room")
    state = f64(pg.init(jax.random.PRNGKey(0), env, params, pg.Config()))
    act = lambda o, k: pg.act(state, o, k)
    batch = f64(jax.jit(lambda k: episode_rollout(env, params, act, k, 8, 5))(jax.random.PRNGKey(1)))
    assert_grad_matches_fd(lambda p: pg.policy_loss(p, state, batch, batch.reward), state.params,
                           jax.random.PRNGKey(2), h=1e-4, scale=0.01)


def test_pg_fails_on_er_2_1():
    """Thesis Fig 5.5: independent PG stays at start or goes greedily to the door; with a learning
    rate at which it converges (1e-2 at 256 episodes per update) the median ends <= 0."""
    env, params = jaxmcg.make("escape_room")
    train = make_train(pg, env, params, pg.Config(lr=1e-2),
                       TrainConfig(n_envs=256, iterations=1000, log_every=50, eval_envs=1024))
    _, m = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 5))
    final = np.asarray(m["collective_return"])[:, -3:].mean(axis=1)
    assert np.median(final) <= 0.0, final
