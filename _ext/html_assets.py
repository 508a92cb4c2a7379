"""Sphinx extension: what the HTML pages load comes from the build, and loads cleanly.

- ``scripts/fetch_web_assets.py`` (run by ``make book``) unpacks MathJax, RequireJS and the
  Jupyter widget manager from the npm registry into ``_npm/``. This extension copies that
  folder, with ``widgets-setup.js`` (beside this file: where RequireJS finds the widget
  manager's fonts; MathJax 2's ``Hub.Queue``, which the widget controls call, on MathJax 3), to ``_build/html/_static/offline/``, where ``mathjax_path`` and
  ``nb_ipywidgets_js`` (``_config.yml``) point. The assets are not in the book's
  ``_static/`` on purpose: jupyter-book adds every ``.js`` and ``.css`` file found there to
  every page. A build whose configured assets are missing stops at once with what to run.
- Inline scripts registered by extensions after the builder started (sphinx-thebe's
  ``const THEBE_JS_URL``, sphinx-togglebutton's selector) are emitted twice by Sphinx 7.4
  (registered once as ``None`` and once as ``''``), and the second ``const`` is a console
  error on every page; each page keeps one copy.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util.fileutil import copy_asset, copy_asset_file

#: The fetched assets, relative to the book's root, and their folder under the HTML's _static/.
SOURCE = "_npm"
TARGET = "offline"
#: Files of ours served beside them.
OWN_FILES = (Path(__file__).with_name("widgets-setup.js"),)


def configured_assets(config) -> list[str]:
    """Paths under ``_static/`` that the configuration loads from :data:`TARGET`."""
    paths = [config.mathjax_path, *getattr(config, "nb_ipywidgets_js", {})]
    return [p for p in paths if p and p.split("/", 1)[0] == TARGET]


def check_assets(app) -> None:
    if app.builder.format != "html":
        return
    root = Path(app.srcdir) / SOURCE
    own = {f.name for f in OWN_FILES}
    absent = [p for p in configured_assets(app.config)
              if p.split("/", 1)[1] not in own and not (root / p.split("/", 1)[1]).is_file()]
    if absent:
        raise ExtensionError(
            f"offline assets missing from {root}: {absent}. Fetch them from the npm registry "
            "with `python scripts/fetch_web_assets.py` (`make book` does this first).")


def copy_assets(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / TARGET
    copy_asset(str(Path(app.srcdir) / SOURCE), str(target),
               excluded=lambda path: Path(path).name.startswith("."))
    for path in OWN_FILES:
        copy_asset_file(str(path), str(target / path.name))


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of scripts that differ only in ``None`` against ``''`` as file name."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, keep = set(), []
    for js in scripts:
        if isinstance(js, str):
            key = (js, (), None)
        else:
            key = (js.filename or None, tuple(sorted((k, str(v)) for k, v in js.attributes.items())),
                   js.priority)
        if key not in seen:
            seen.add(key)
            keep.append(js)
    scripts[:] = keep


def setup(app):
    app.connect("builder-inited", check_assets)
    app.connect("build-finished", copy_assets)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
