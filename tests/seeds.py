"""Training several seeds in one compiled program, as the learning tests do."""
import jax
import numpy as np


def train_seeds(train, seeds: int, seed: int = 0):
    """`jit(vmap(train))` over `seeds` keys split from `PRNGKey(seed)`: `(runner, metrics)`, with the
    metrics as numpy arrays whose leading axis is the seed."""
    runner, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(seed), seeds))
    return runner, jax.tree_util.tree_map(np.asarray, metrics)
