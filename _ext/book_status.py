"""Sphinx extension for the book's status page (``status.md``): versions and run times.

Two directives, filled in when the book is built, never typed by hand:

- ``{book-versions}``: the library's version (``pyproject.toml``, and the git commit when
  built from a checkout), Python, the installed versions of the numerical libraries and of
  the book toolchain (``importlib.metadata``), and the web assets served with the HTML
  (the ``_npm/*/.asset.json`` stamps written by ``scripts/fetch_web_assets.py``);
- ``{book-run-times}``: the measured run times in ``docs/run_times.json`` (updated by
  ``scripts/record_run_time.py``), each with the date and machine it was measured on.

The status page is re-read on every build (``env-get-outdated``), so its versions are the
ones the build ran with. Chapter execution status and times come from myst-nb's own
``{nb-exec-table}``. None of this is in a chapter, so nbval's comparisons stay
deterministic.
"""

from __future__ import annotations

import json
import platform
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

#: Distributions shown on the status page, by role.
LIBRARIES = ("jax", "jaxlib", "numpy", "scipy", "sympy", "optax", "matplotlib", "ipywidgets")
TOOLCHAIN = ("jupyter-book", "sphinx", "myst-nb", "myst-parser", "sphinx-book-theme",
             "pydata-sphinx-theme", "sphinxcontrib-bibtex", "sphinx-proof", "jupyter-cache",
             "nbclient", "ipykernel", "nbval", "pytest")
#: Docnames re-read on every build.
STATUS_DOCS = ("status",)


def table(headers: list[str], rows: list[list[str]], code: tuple[int, ...] = ()) -> nodes.table:
    """A docutils table with a header row; cells are plain text, columns ``code`` literal."""
    out = nodes.table(classes=["book-status"])
    group = nodes.tgroup(cols=len(headers))
    out += group
    for _ in headers:
        group += nodes.colspec(colwidth=1)

    def row(cells: list[str], literal: tuple[int, ...] = ()) -> nodes.row:
        line = nodes.row()
        for i, cell in enumerate(cells):
            entry = nodes.entry()
            para = nodes.paragraph()
            para += nodes.literal(text=cell) if i in literal else nodes.Text(cell)
            entry += para
            line += entry
        return line

    head = nodes.thead()
    head += row(headers)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells, code)
    group += head
    group += body
    return out


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit(root: Path) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                              capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown (not a git checkout)"


def version_rows(root: Path) -> list[list[str]]:
    """``[what, version, role]`` rows for the library, Python, packages and web assets."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    rows = [
        [project["name"], f'{project["version"]} (commit {_commit(root)})', "this book's library"],
        ["Python", platform.python_version(), "interpreter"],
    ]
    rows += [[name, _installed(name), "numerics"] for name in LIBRARIES]
    rows += [[name, _installed(name), "book toolchain"] for name in TOOLCHAIN]
    for stamp in sorted((root / "_npm").glob("*/.asset.json")):
        spec = json.loads(stamp.read_text())["spec"]
        name, _, version = spec.rpartition("@")
        rows.append([name, version, "web asset served with the HTML (npm registry)"])
    return rows


def run_time_rows(path: Path) -> list[list[str]]:
    """``[what, command, time, date, machine]`` rows from the run-times file at ``path``."""
    runs = json.loads(path.read_text())["runs"]
    rows = []
    for run in runs:
        seconds = float(run["seconds"])
        shown = f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"
        what = run["name"] + (f' ({run["note"]})' if run.get("note") else "")
        rows.append([what, run["command"], shown, run["date"], run["machine"]])
    return rows


class BookVersions(SphinxDirective):
    """``{book-versions}``: the versions this build ran with."""

    def run(self) -> list[nodes.Node]:
        root = Path(self.env.srcdir)
        return [table(["package", "version", "role"], version_rows(root))]


class BookRunTimes(SphinxDirective):
    """``{book-run-times}``: measured run times from ``docs/run_times.json``."""

    def run(self) -> list[nodes.Node]:
        path = Path(self.env.srcdir) / "docs" / "run_times.json"
        self.env.note_dependency(str(path))
        rows = run_time_rows(path)
        return [table(["run", "command", "wall time", "measured", "machine"], rows, code=(1,))]


def _always_reread(app, env, added, changed, removed) -> list[str]:
    return [doc for doc in STATUS_DOCS if doc in env.found_docs]


def setup(app):
    app.add_directive("book-versions", BookVersions)
    app.add_directive("book-run-times", BookRunTimes)
    app.connect("env-get-outdated", _always_reread)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
