"""jaxmcg: learning cooperation among self-interested agents, in JAX."""
from jaxmcg.environment import Environment, EnvParams, EnvState
from jaxmcg.registry import (
    get_algo,
    list_algos,
    list_envs,
    make,
    register_algo,
    register_env,
    resolve_env_id,
)

__all__ = [
    "EnvParams",
    "EnvState",
    "Environment",
    "get_algo",
    "list_algos",
    "list_envs",
    "make",
    "register_algo",
    "register_env",
    "resolve_env_id",
]
__version__ = "0.1.0"
