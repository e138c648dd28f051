"""Training several seeds in one compiled program, as the learning tests do."""
import jax
import numpy as np

import jaxmcg
from experiments.presets import get_preset
from jaxmcg.train import TrainConfig, make_train


def train_seeds(train, seeds: int, seed: int = 0):
    """`jit(vmap(train))` over `seeds` keys split from `PRNGKey(seed)`: `(runner, metrics)`, with the
    metrics as numpy arrays whose leading axis is the seed."""
    runner, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(seed), seeds))
    return runner, jax.tree_util.tree_map(np.asarray, metrics)


def train_preset(name: str, seeds: int, algo_params: dict | None = None, **train) -> dict:
    """Metrics of preset `name` (its algorithm, environment and training budget) over `seeds`
    vmapped seeds, with `algo_params` and the `TrainConfig` fields in `train` overriding it."""
    preset = get_preset(name)
    algo = jaxmcg.get_algo(preset["algo"])
    env, params = jaxmcg.make(preset["env"], **preset.get("env_params", {}))
    config = algo.Config(**{**preset.get("algo_params", {}), **(algo_params or {})})
    fn = make_train(algo, env, params, config, TrainConfig(**{**preset["train"], **train}))
    return train_seeds(fn, seeds)[1]


def final_moving_average(curves, window: int = 5) -> np.ndarray:
    """The last `window`-point moving average of each seed's curve `[seeds, points]`: the learning
    curves are noisy, so thresholds are judged on it (spec/performance-notes.md)."""
    return np.asarray(curves)[:, -window:].mean(axis=1)
