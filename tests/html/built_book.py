"""Where the built book is, and what a test does when it or Chromium is missing.

These tests read ``_build/html`` (``make book``). Run alone they skip, with the reason,
when the book is not built or Chromium is missing; ``make test`` sets
``GATED_HMOE_HTML_REQUIRED=1`` so that the same conditions fail instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("GATED_HMOE_HTML", ROOT / "_build" / "html"))
#: Screenshots and the browser test's measurements (ignored by git with _build/).
ARTEFACTS = Path(os.environ.get("GATED_HMOE_SCREENSHOTS", ROOT / "_build" / "screenshots"))
REQUIRED = os.environ.get("GATED_HMOE_HTML_REQUIRED", "") not in ("", "0")


def built_pages() -> list[Path]:
    """Every HTML page of the built book, sorted (the theme's own static files excluded)."""
    if not (HTML / "index.html").is_file():
        return []
    return sorted(p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts)


def missing(reason: str) -> None:
    """Skip with ``reason``; fail instead where the HTML tests are required."""
    if REQUIRED:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


NOT_BUILT = (f"the book is not built ({HTML / 'index.html'} is missing): "
             "run `make book` first")
