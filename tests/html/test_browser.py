"""Every page of the built book, opened in headless Chromium with the network off.

The book is served from 127.0.0.1 and every request to another host is refused and
recorded; the start page and the chapters are also opened from disk (``file://``). Each page must then show what a reader expects offline:

- math typeset: each Sphinx math element holds MathJax output (``mjx-container``) and no
  raw ``\\(``, ``\\[``, ``$$`` or ``\\begin{`` is left in the visible text (code excluded);
- every ``<img>`` loaded (``naturalWidth > 0``);
- no console error, uncaught exception, failed request or request to another host;
- every static interactive figure responds: in each ``div.gh-explorer``, changing each
  ``.gh-control`` (``<select>`` or ``<input type=range>``) changes the ``src`` of its one
  ``img.gh-frame`` and the new frame loads.

A screenshot of each page (the first screen) and of each explorer is kept in
``_build/screenshots/`` (with each stored-state Jupyter widget, which needs a kernel to
redraw and is not exercised), and ``report.json``: each page's weight (bytes received, images
included, browser cache off), its load-and-typeset time, and the test's run time.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import urljoin

import pytest
from built_book import ARTEFACTS, HTML, NOT_BUILT, built_pages, missing
from chromium import INSTALL_HINT, Browser, find_chromium, serve

PAGES = built_pages()
CHROMIUM = find_chromium()

#: Waits for MathJax's first typeset and the images, then reports what the page shows.
PAGE_STATE = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const ready = performance.now();
  const nav = performance.getEntriesByType('navigation')[0];
  const skip = new Set(['SCRIPT', 'STYLE', 'PRE', 'CODE', 'TEXTAREA', 'NOSCRIPT',
                        'TEMPLATE', 'MJX-CONTAINER', 'KBD', 'SAMP']);
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    let code = false;
    for (let e = n.parentElement; e; e = e.parentElement) {
      if (skip.has(e.tagName)) { code = true; break; }
    }
    if (code) continue;
    const t = n.nodeValue;
    if (['\\(', '\\[', '$$', '\\begin{'].some(d => t.includes(d))) raw.push(t.trim().slice(0, 100));
  }
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    math: math.length,
    mjx: document.querySelectorAll('mjx-container').length,
    mathjax: (window.MathJax && MathJax.version) || null,
    untypeset: math.filter(e => !e.querySelector('mjx-container'))
                   .map(e => e.textContent.trim().slice(0, 80)),
    raw: raw,
    images: imgs.length,
    bad_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                    .map(i => (i.currentSrc || i.src).slice(0, 120)),
    explorers: document.querySelectorAll('.gh-explorer').length,
    load_ms: nav.loadEventEnd - nav.startTime,
    ready_ms: ready - nav.startTime,
  };
})()
"""

#: Changes control j of explorer i and reports whether the explorer's frame followed.
EXERCISE_CONTROL = r"""
(async (i, j) => {
  const ex = document.querySelectorAll('.gh-explorer')[i];
  const frames = ex.querySelectorAll('img.gh-frame');
  if (frames.length !== 1) return {error: `${frames.length} img.gh-frame elements (expected one)`};
  const frame = frames[0];
  const c = ex.querySelectorAll('.gh-control')[j];
  const label = `${c.tagName.toLowerCase()}${c.type ? '[' + c.type + ']' : ''}` +
                `${c.name || c.id ? ' ' + (c.name || c.id) : ''}`;
  // The frame follows when its src changes or, where the explorer names the selection's
  // frame (data-key), when that key does: two selections may share one picture.
  const before = frame.src, beforeKey = frame.getAttribute('data-key');
  const followed = () => frame.src !== before ||
    (beforeKey !== null && frame.getAttribute('data-key') !== beforeKey);
  const old = c.value;
  if (c.tagName === 'SELECT') {
    if (c.options.length < 2) return {control: label, error: 'fewer than two options'};
    c.selectedIndex = (c.selectedIndex + 1) % c.options.length;
  } else if (c.tagName === 'INPUT' && c.type === 'range') {
    c.stepUp();
    if (c.value === old) c.stepDown();
    if (c.value === old) return {control: label, error: 'the range has a single value'};
  } else {
    return {control: label, error: 'not a <select> or <input type=range>'};
  }
  c.dispatchEvent(new Event('input', {bubbles: true}));
  c.dispatchEvent(new Event('change', {bubbles: true}));
  const t0 = performance.now();
  while (!followed() && performance.now() - t0 < 5000) {
    await new Promise(r => setTimeout(r, 20));
  }
  if (!followed()) {
    return {control: label, error: `frame src did not change (value ${old} -> ${c.value})`};
  }
  await frame.decode().catch(() => null);
  if (!(frame.complete && frame.naturalWidth > 0)) {
    return {control: label, error: `the new frame did not load: ${frame.src.slice(0, 120)}`};
  }
  return {control: label, error: null};
})
"""


def exercise_explorers(browser: Browser) -> tuple[list[dict], list[str]]:
    """Change every control of every ``.gh-explorer``; (results, problems)."""
    counts = browser.evaluate(
        "Array.from(document.querySelectorAll('.gh-explorer'))"
        ".map(e => e.querySelectorAll('.gh-control').length)")
    results, problems = [], []
    for i, controls in enumerate(counts):
        if controls == 0:
            problems.append(f"explorer {i}: no .gh-control")
        for j in range(controls):
            result = browser.evaluate(f"{EXERCISE_CONTROL}({i}, {j})", timeout=30)
            results.append({"explorer": i, **result})
            if result["error"]:
                problems.append(f"explorer {i}, {result.get('control', '')}: {result['error']}")
    return results, problems


#: Stored-state Jupyter widgets (rendered by the widget manager; they redraw only with a kernel).
WIDGETS = ".widget-subarea"
#: Fixed and sticky bars (the theme's header) would cover a clipped screenshot: make them static.
UNSTICK = r"""
(() => {
  for (const e of document.querySelectorAll('body *')) {
    const position = getComputedStyle(e).position;
    if (position === 'fixed' || position === 'sticky') e.style.position = 'static';
  }
  document.querySelectorAll('.skip-link').forEach(e => { e.style.display = 'none'; });
})()
"""


def shoot(browser: Browser, stem: str, explorers: int) -> list[str]:
    """Screenshots: the page's first screen, each explorer and each stored-state widget."""
    browser.evaluate("window.scrollTo(0, 0)")
    files = [ARTEFACTS / f"{stem}.png"]
    browser.screenshot(files[0])
    widgets = browser.evaluate(f"document.querySelectorAll('{WIDGETS}').length")
    if explorers or widgets:
        browser.evaluate(UNSTICK)
    for selector, kind, count in ((".gh-explorer", "explorer", explorers),
                                  (WIDGETS, "widget", widgets)):
        for i in range(count):
            box = browser.evaluate(
                f"(() => {{ const e = document.querySelectorAll('{selector}')[{i}]; "
                "e.scrollIntoView(); const r = e.getBoundingClientRect(); return {x: r.left + "
                "scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })()")
            if box["width"] > 0 and box["height"] > 0:
                files.append(ARTEFACTS / f"{stem}.{kind}{i}.png")
                browser.screenshot(files[-1], clip=box)
    return [str(f.relative_to(ARTEFACTS)) for f in files]


REFRESH = re.compile(r"""<meta\s+http-equiv=["']refresh["']\s+content=["']\d+;\s*url=([^"']+)["']""",
                     re.IGNORECASE)


def check_page(browser: Browser, url: str, stem: str, html: str = "",
               screenshots: bool = True) -> tuple[dict, list[str]]:
    """Load ``url`` (whose source is ``html``), check the page it lands on (a meta refresh is
    followed), exercise its explorers, screenshot it; (record, problems)."""
    redirect = REFRESH.search(html)
    page = browser.open(url, lands_on=urljoin(url, redirect.group(1)) if redirect else None)
    state = browser.evaluate(PAGE_STATE, timeout=60)
    explorer_results, problems = exercise_explorers(browser)
    shots = shoot(browser, stem, state["explorers"]) if screenshots else []
    browser.idle()  # every request of the page finished: its weight is complete
    if state["math"] and not state["mjx"]:
        problems.append(f"{state['math']} math elements and no MathJax output "
                        f"(MathJax loaded: {state['mathjax']})")
    if state["untypeset"]:
        problems.append(f"math not typeset: {state['untypeset'][:5]}")
    if state["raw"]:
        problems.append(f"raw TeX in the visible text: {state['raw'][:5]}")
    if state["bad_images"]:
        problems.append(f"images not loaded: {state['bad_images']}")
    if page.blocked:
        problems.append(f"requests to another host (blocked): {page.blocked}")
    if page.failed:
        problems.append(f"failed requests: {page.failed}")
    if page.console_errors:
        problems.append(f"console errors: {page.console_errors}")
    record = {"page": stem, "bytes": page.bytes, "requests": page.requests,
              "load_ms": round(max(state["load_ms"], state["ready_ms"]), 1),
              "load_event_ms": round(state["load_ms"], 1), "math": state["math"],
              "mjx": state["mjx"], "images": state["images"],
              "explorers": state["explorers"], "controls": explorer_results,
              "screenshots": shots, "problems": problems}
    return record, problems


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        missing(INSTALL_HINT)
    with Browser(CHROMIUM) as b:
        yield b


@pytest.fixture(scope="module")
def book(browser):
    """The book served on 127.0.0.1; writes ``report.json`` when the module ends."""
    if not PAGES:
        missing(NOT_BUILT)
    server, base = serve(HTML)
    records: list[dict] = []
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.glob("*.png"):
        old.unlink()
    yield base, records
    server.shutdown()
    report = {"seconds": round(time.perf_counter() - browser.started, 1), "html": str(HTML),
              "pages": records}
    (ARTEFACTS / "report.json").write_text(json.dumps(report, indent=1) + "\n")


def test_chromium_is_installed():
    """``make test`` needs the browser (``.ci/run`` installs the Debian package)."""
    if CHROMIUM is None:
        missing(INSTALL_HINT)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_page_offline(browser, book, page):
    base, records = book
    rel = page.relative_to(HTML).as_posix()
    record, problems = check_page(browser, base + rel, rel.removesuffix(".html").replace("/", "__"),
                                  page.read_text(encoding="utf-8"))
    records.append(record)
    assert not problems, f"{rel}:\n  " + "\n  ".join(problems)


#: What a reader opens from disk (README): the start page and the chapters.
READER_PAGES = [p for p in PAGES if p.name == "index.html" or p.parent.name == "chapters"]


@pytest.mark.parametrize("page", READER_PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_page_offline_from_disk(browser, book, page):
    """The same checks with the page opened as a file (``file://``), as the README says."""
    rel = page.relative_to(HTML).as_posix()
    _, problems = check_page(browser, page.resolve().as_uri(), rel, page.read_text(encoding="utf-8"),
                             screenshots=False)
    assert not problems, f"{page.as_uri()}:\n  " + "\n  ".join(problems)


# -- the checker itself, on small pages made here ------------------------------------------
def _png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\0" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


EXPLORER_PAGE = """<!doctype html><html><body><p>Inline math \\(x\\) not typeset.</p>
<div class="gh-explorer" id="good">
  <select class="gh-control"><option value="0">a</option><option value="1">b</option></select>
  <input type="range" class="gh-control" min="0" max="1" step="1" value="0">
  <img class="gh-frame" src="f0.png">
</div>
<div class="gh-explorer" id="stuck">
  <select class="gh-control"><option>a</option><option>b</option></select>
  <img class="gh-frame" src="f0.png">
</div>
<div class="gh-explorer" id="broken">
  <input type="range" class="gh-control" min="0" max="2" value="0">
  <img class="gh-frame" src="f0.png">
</div>
<script>
  const good = document.getElementById('good');
  good.addEventListener('change', () => {
    const [s, r] = good.querySelectorAll('.gh-control');
    good.querySelector('.gh-frame').src = (+s.value + +r.value) % 2 ? 'f1.png' : 'f0.png';
  });
  const broken = document.getElementById('broken');
  broken.addEventListener('input', e => {
    broken.querySelector('.gh-frame').src = 'missing' + e.target.value + '.png';
  });
</script></body></html>"""


def test_checker_finds_what_is_broken(browser, tmp_path, monkeypatch):
    """A working explorer passes; a stuck one, a missing frame and raw TeX are reported."""
    (tmp_path / "index.html").write_text(EXPLORER_PAGE)
    (tmp_path / "f0.png").write_bytes(_png((200, 30, 30)))
    (tmp_path / "f1.png").write_bytes(_png((30, 30, 200)))
    monkeypatch.setattr(sys.modules[__name__], "ARTEFACTS", tmp_path / "shots")
    server, base = serve(tmp_path)
    try:
        record, problems = check_page(browser, base + "index.html", "synthetic")
    finally:
        server.shutdown()
    good = [c for c in record["controls"] if c["explorer"] == 0]
    assert [c["error"] for c in good] == [None, None]
    text = "\n".join(problems)
    assert "explorer 1, select[select-one]: frame src did not change (value a -> b)" in text
    assert "explorer 2, input[range]: the new frame did not load" in text
    assert "raw TeX in the visible text: ['Inline math \\\\(x\\\\) not typeset.']" in text
    assert "HTTP 404" in text
    assert len(record["screenshots"]) == 4
