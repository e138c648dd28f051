"""Per-agent spaces: gymnax's jittable Discrete, Box and Dict, re-exported for envs to use."""
from gymnax.environments.spaces import Box, Dict, Discrete, Space

__all__ = ["Box", "Dict", "Discrete", "Space"]
