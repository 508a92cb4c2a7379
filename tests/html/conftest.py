"""pytest hooks of the built-HTML tests: the browser test's measurements in the summary."""

from __future__ import annotations

import json
import time

from built_book import ARTEFACTS

#: When this session loaded the hooks: a report older than this is from an earlier run.
_LOADED = time.time()


def pytest_terminal_summary(terminalreporter):
    """After the browser test: the heaviest page's weight and load time, the test's time."""
    report = ARTEFACTS / "report.json"
    if not report.is_file() or report.stat().st_mtime < _LOADED:
        return
    data = json.loads(report.read_text())
    pages = data["pages"]
    if not pages:
        return
    heaviest = max(pages, key=lambda p: p["bytes"])
    slowest = max(pages, key=lambda p: p["load_ms"])
    terminalreporter.write_sep("-", "browser test (network off)")
    terminalreporter.write_line(
        f"{len(pages)} pages in {data['seconds']:.1f} s; heaviest: {heaviest['page']} "
        f"{heaviest['bytes'] / 1e6:.2f} MB in {heaviest['requests']} requests, loaded and "
        f"typeset in {heaviest['load_ms']:.0f} ms; slowest: {slowest['page']} "
        f"{slowest['load_ms']:.0f} ms; screenshots in {ARTEFACTS}")
