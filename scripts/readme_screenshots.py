"""Copy the README's two screenshots from the browser test's artefacts, as small PNGs.

The browser test (``tests/html/test_browser.py``, part of ``make test``) keeps a screenshot
of every page and of every interactive figure in ``_build/screenshots/``. This script takes
a chapter's first screen and one interactive figure from there, reduces them to a 256-colour
palette and writes them to ``docs/img/`` (each must stay under 200 kB)::

    .venv/bin/python scripts/readme_screenshots.py [--chapter STEM] [--figure STEM]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gated_hmoe.viz.explorer import palette_png

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
OUT = ROOT / "docs" / "img"
LIMIT = 200_000


def small_png(source: Path, target: Path) -> int:
    """Write ``source`` as a 256-colour PNG at ``target``; its size in bytes."""
    data = palette_png(source.read_bytes())
    if len(data) > LIMIT:
        raise SystemExit(f"readme_screenshots: {source.name} is {len(data)} bytes as a PNG "
                         f"(limit {LIMIT}); pick a smaller figure")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default="chapters__03_identifiability",
                        help="screenshot stem of the chapter page (default: %(default)s)")
    parser.add_argument("--figure", default="chapters__05_gate_positions_fitted.explorer0",
                        help="screenshot stem of the interactive figure (default: %(default)s)")
    args = parser.parse_args(argv)
    for flag, stem, name in (("--chapter", args.chapter, "chapter.png"),
                             ("--figure", args.figure, "interactive-figure.png")):
        source = SHOTS / f"{stem}.png"
        if not source.is_file():
            parser.error(f"{flag}: no screenshot {source} (run the browser test: make test, or "
                         "pytest tests/html after make book)")
        size = small_png(source, OUT / name)
        print(f"readme_screenshots: {source.name} -> docs/img/{name} ({size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
