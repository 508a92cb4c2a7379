"""gated_hmoe: gated attention as a hierarchical mixture of experts, in JAX.

The library behind the executable book. Importing it switches JAX to float64
(``jax_enable_x64``): the book's identities are asserted at 1e-12 relative error
and its least-squares fits are ill-conditioned in float32.

Modules (one idea each):

- :mod:`gated_hmoe.attention` -- multi-head self-attention, plain and gated (G1-G5).
- :mod:`gated_hmoe.hmoe` -- the same outputs rewritten as a three-level HMoE.
- :mod:`gated_hmoe.symbolic` -- sympy versions of the identities, for symbolic weights.
- :mod:`gated_hmoe.checks` -- argument validation shared by the public functions.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

__all__ = ["__version__"]
