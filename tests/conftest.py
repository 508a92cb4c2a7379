"""Test setup: float64 JAX (the package enables it on import) and hypothesis profiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import gated_hmoe  # noqa: E402,F401  (enables jax_enable_x64)
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")
