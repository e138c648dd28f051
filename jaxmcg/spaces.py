"""Per-agent spaces: gymnax's jittable Discrete and Box, re-exported so envs depend on jaxmcg only."""
from gymnax.environments.spaces import Box, Discrete, Space

__all__ = ["Box", "Discrete", "Space"]
