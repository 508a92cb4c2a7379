"""Test setup: float64 JAX, hypothesis profiles, and runtime shape checks.

The array signatures of :mod:`gated_hmoe.models` and :mod:`gated_hmoe.estimation` carry
their shapes (``jaxtyping``, e.g. ``x: Float[ArrayLike, "n D"] -> Float[Array, " n"]``).
The test suite checks every call against them: jaxtyping's import hook wraps those modules
with ``beartype`` before anything imports them, so a shape that does not match its
signature -- in a test or in a chain of library calls -- raises a ``TypeCheckError``.

Users do not run the hook, so the messages a user sees for bad input come from the
library's own validation at the public boundary. Tests of those messages are marked
``user_input``: the shape checks are switched off while they run, and they see exactly
what a user sees.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jaxtyping  # noqa: E402

#: The layers whose signatures carry shapes (checked here with beartype).
CHECKED = ("gated_hmoe.models", "gated_hmoe.estimation")
#: beartype with PEP 484's numeric tower: an ``int`` is a valid ``float`` argument.
TYPECHECKER = "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
jaxtyping.install_import_hook(list(CHECKED), TYPECHECKER)

import gated_hmoe  # noqa: E402,F401  (enables jax_enable_x64)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _shape_checks(request):
    """Shape checks on, except in tests marked ``user_input`` (what a user sees)."""
    off = request.node.get_closest_marker("user_input") is not None
    jaxtyping.config.update("jaxtyping_disable", off)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)
