import os
import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers: env_checks, gradcheck
# tests measure fresh compiles (and must not depend on an earlier run's cache)
os.environ.setdefault("JAXMCG_COMPILATION_CACHE", "0")


@pytest.fixture
def x64():
    """Run a test in float64 (gradient checks), restoring the previous setting after."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
