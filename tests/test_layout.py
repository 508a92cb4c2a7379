"""The package's architecture as a test: its folders are its layers, imports run one way.

Layers (``gated_hmoe/<folder>/``), and what each may import from the package:

=============  ===============================================================
``checks``     nothing (the base: argument validation)
``models``     base, models
``theory``     base, models, theory
``estimation`` base, models, estimation
``experiments``  base, models, theory, estimation, experiments
``viz``        base, models (names and result types), ``estimation.rates`` (the
               ``Slope`` result type and its formatter), viz -- never experiments,
               theory or the rest of estimation: figures draw results, they do not
               compute them (a live-fit button receives a callback)
``cli``        anything (the composition root), as does ``__main__``
=============  ===============================================================

Also: no module imports another module's ``_private`` name (``from m import _x`` or
``m._x``); no ``gated_hmoe`` import sits inside a function or class (imports are
visible at the top of each module); and the package never uses the short aliases of SPEC
§6 (``gated_hmoe.voronoi`` etc., for users) on itself, so every arrow is visible. The
walker is tested on planted violations below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gated_hmoe import ALIASES

PACKAGE = Path(__file__).resolve().parents[1] / "gated_hmoe"

ALLOWED: dict[str, set[str]] = {
    "base": {"base"},
    "models": {"base", "models"},
    "theory": {"base", "models", "theory"},
    "estimation": {"base", "models", "estimation"},
    "experiments": {"base", "models", "theory", "estimation", "experiments"},
    "viz": {"base", "models", "estimation.rates", "viz"},
    "cli": {"base", "models", "theory", "estimation", "experiments", "viz", "cli"},
}
#: Modules of the base layer (importable from everywhere).
BASE = {"gated_hmoe", "gated_hmoe.checks"}


def layer_of(module: str) -> str:
    """``gated_hmoe.models.moe`` -> ``models``; base modules -> ``base``; the CLI -> ``cli``."""
    if module in BASE:
        return "base"
    parts = module.split(".")
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1]


def target_layers(imported: str) -> set[str]:
    """The layer names an imported module counts as (``estimation.rates`` is also
    ``estimation``)."""
    layer = layer_of(imported)
    out = {layer}
    parts = imported.split(".")
    if layer not in ("base", "cli") and len(parts) > 2:
        out.add(f"{parts[1]}.{parts[2]}")
    return out


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.Module, module: str):
    """``(node, imported module, imported names, inside a function or class)`` for every
    import of the package."""
    out = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] == "gated_hmoe":
                        out.append((child, a.name, [], nested, a.asname or a.name))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".")[: -child.level or None]
                    base = ".".join(pkg + ([base] if base else []))
                if base.split(".")[0] == "gated_hmoe":
                    for a in child.names:
                        # "from gated_hmoe.models import moe" imports the module gated_hmoe.models.moe
                        sub = f"{base}.{a.name}"
                        out.append((child, sub if _is_module(sub) else base, [a.name], nested,
                                    a.asname or a.name))
            visit(child, inner)

    visit(tree, False)
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def violations(root: Path = PACKAGE) -> list[str]:
    """Every broken rule in the package at ``root``, one line each."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        layer = layer_of(module)
        aliases = {}
        for node, imported, names, nested, alias in _imports(tree, module):
            where = f"{path.relative_to(root.parent)}:{node.lineno}"
            if nested:
                found.append(f"{where}: function-level import of {imported}")
            if not (target_layers(imported) & ALLOWED[layer]):
                found.append(f"{where}: {layer} must not import {imported}")
            for n in names:
                if imported == "gated_hmoe" and n in ALIASES:
                    found.append(f"{where}: imports the alias gated_hmoe.{n}; inside the "
                                 f"package use {ALIASES[n]}")
                if n.startswith("_") and not n.startswith("__"):
                    found.append(f"{where}: imports the private name {n} from {imported}")
            if not names or _is_module(f"{imported}"):
                aliases[alias] = imported
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: uses the private "
                             f"name {node.attr} of {aliases[node.value.id]}")
    return found


def test_the_package_follows_its_layers():
    assert violations() == []


def test_every_module_sits_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer = layer_of(module_name(path, PACKAGE))
        assert layer in ALLOWED, path


@pytest.mark.parametrize("source, expected", [
    ("from gated_hmoe.experiments import runner\n", "models must not import"),
    ("from gated_hmoe.models.moe import _is_traced\n", "private name _is_traced"),
    ("from gated_hmoe.models import moe\nx = moe._is_traced\n", "uses the private name _is_traced"),
    ("def f():\n    from gated_hmoe.models import moe\n    return moe\n", "function-level import"),
    ("import gated_hmoe.viz.style\n", "models must not import gated_hmoe.viz.style"),
    ("from gated_hmoe import voronoi\n", "imports the alias gated_hmoe.voronoi"),
])
def test_the_walker_catches_planted_violations(tmp_path, source, expected):
    """A copy of the package with one planted line in a model module fails the rules."""
    import shutil

    copy = tmp_path / "gated_hmoe"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = copy / "models" / "planted.py"
    planted.write_text(source)
    found = violations(copy)
    assert any(expected in line and "planted.py" in line for line in found), found


def test_viz_may_not_import_experiments(tmp_path):
    import shutil

    copy = tmp_path / "gated_hmoe"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "viz" / "planted.py").write_text("from gated_hmoe.experiments import e1_rates\n"
                                             "from gated_hmoe.estimation import voronoi\n")
    found = [line for line in violations(copy) if "planted.py" in line]
    assert len(found) == 2, found


def test_spec_short_names_are_the_layered_modules():
    """SPEC §6's stable names resolve to the same module objects as the layered paths."""
    import importlib

    import gated_hmoe

    for short, target in ALIASES.items():
        module = importlib.import_module(target)
        assert importlib.import_module(f"gated_hmoe.{short}") is module
        assert getattr(gated_hmoe, short) is module
    from gated_hmoe.attention import AttentionParams
    from gated_hmoe.models.attention import AttentionParams as layered
    assert AttentionParams is layered
    with pytest.raises(AttributeError, match="no attribute 'rates_book'"):
        gated_hmoe.rates_book
