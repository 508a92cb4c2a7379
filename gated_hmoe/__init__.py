"""gated_hmoe: gated attention as a hierarchical mixture of experts, in JAX.

The library behind the executable book. Importing it switches JAX to float64
(``jax_enable_x64``): the book's identities are asserted at 1e-12 relative error
and its least-squares fits are ill-conditioned in float32.

The folders are the architecture; imports run one way (``tests/test_layout.py``):

- :mod:`gated_hmoe.checks` -- argument validation at the public boundary (used everywhere);
- :mod:`gated_hmoe.models` -- the objects: attention layers and their HMoE reading
  (``attention``, ``hmoe``), mixtures of experts (``moe``), data (``data``), attention
  students as atoms (``heads``), a small transformer and its task (``transformer``,
  ``tasks``);
- :mod:`gated_hmoe.theory` -- what is derived: sympy identities (``symbolic``), the
  PDE-type interactions and the rank test (``identifiability``);
- :mod:`gated_hmoe.estimation` -- what is estimated and how: the one Levenberg-Marquardt
  loop (``lm``) and its problems (``moe_fit``, ``head_fit``), starting points (``init``),
  Voronoi losses (``voronoi``), the modulus (``modulus``), rates (``rates``), training of
  the transformer (``training``);
- :mod:`gated_hmoe.experiments` -- E1-E4 (``e1_rates``, ``e2_attention``, ``e3_quadratic``,
  ``e4_transformer``) on one cached, resumable runner (``runner``);
- :mod:`gated_hmoe.viz` -- one figure style and one explorer builder; figures take results;
- :mod:`gated_hmoe.cli` -- the command line ``python -m gated_hmoe``.

The short names of SPEC §6 stay available: ``gated_hmoe.attention``, ``gated_hmoe.hmoe``,
``gated_hmoe.moe``, ``gated_hmoe.symbolic`` and ``gated_hmoe.voronoi`` are the modules
above -- the same module objects, loaded on first import (``import gated_hmoe.attention``,
``from gated_hmoe.attention import attention`` and ``from gated_hmoe import attention`` all
work). The package itself never uses them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

#: SPEC §6's stable public names -> the modules that hold them.
ALIASES: dict[str, str] = {
    "attention": "gated_hmoe.models.attention",
    "hmoe": "gated_hmoe.models.hmoe",
    "moe": "gated_hmoe.models.moe",
    "symbolic": "gated_hmoe.theory.symbolic",
    "voronoi": "gated_hmoe.estimation.voronoi",
}


class _AliasLoader(importlib.abc.Loader):
    """Loads ``gated_hmoe.<alias>`` as the module it stands for (the same object)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        """Nothing to run: the target module is already executed."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the names of :data:`ALIASES` as sub-modules of the package."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix == __name__ and name in ALIASES:
            return importlib.util.spec_from_loader(fullname, _AliasLoader(ALIASES[name]))
        return None


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())


def __getattr__(name: str):
    """``gated_hmoe.moe`` etc. without an import statement: the alias, imported on first use."""
    if name in ALIASES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALIASES", "__version__"]
