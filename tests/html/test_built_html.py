"""The built book loads nothing from another host, and every local resource it names exists.

A page read offline shows raw LaTeX if MathJax comes from a CDN. This test reads every
HTML page and stylesheet under ``_build/html`` and fails on any script, stylesheet, font,
image, frame or other resource on another host (``src``, ``srcset``, ``<link href>``,
``url()`` and ``@import`` in CSS, the widget manager's CDN attribute). Plain hyperlinks
(``<a href>``: papers, the repository, Binder and Colab launch links) are navigation, not
resources, and are allowed.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from built_book import HTML, NOT_BUILT, built_pages, missing

#: ``<link rel=...>`` values that only name another document (navigation, not loaded).
NAVIGATION_RELS = {"index", "search", "next", "prev", "canonical", "alternate", "author",
                   "license", "help", "copyright", "top", "up", "first", "last", "bookmark"}
#: Attributes that make the browser fetch something (``href`` only on ``<link>``).
RESOURCE_ATTRS = {"src", "srcset", "data", "poster", "background", "action", "formaction",
                  "data-jupyter-widgets-cdn", "imagesrcset"}
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)|@import\s+(['"])([^'"]+)\3""")


def is_remote(url: str) -> bool:
    """True for a URL on another host (``http:``, ``https:``, protocol-relative ``//``)."""
    url = url.strip()
    parts = urlsplit(url)
    return url.startswith("//") or parts.scheme in ("http", "https", "ftp", "ws", "wss")


class ResourceParser(HTMLParser):
    """Collects ``(tag, attribute, url)`` for everything a page loads, and inline CSS."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str, str]] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if value is None:
                continue
            if name == "href" and tag == "link":
                rels = set((attrs.get("rel") or "").lower().split())
                if not rels or not rels <= NAVIGATION_RELS:
                    self.resources.append((tag, name, value))
            elif name in RESOURCE_ATTRS:
                urls = ([u.strip().split()[0] for u in value.split(",") if u.strip()]
                        if name.endswith("srcset") else [value])
                self.resources += [(tag, name, u) for u in urls]
            elif name == "style":
                self.css.append(value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


def css_urls(text: str) -> list[str]:
    return [m.group(2) or m.group(4) for m in CSS_URL.finditer(text)]


def local_target(base: Path, url: str) -> Path | None:
    """The file a local URL names, relative to ``base`` (None for data:, fragments, ...)."""
    parts = urlsplit(url)
    if parts.scheme or not parts.path or url.startswith("#"):
        return None
    return (base / unquote(parts.path)).resolve()


PAGES = built_pages()
STYLESHEETS = sorted(HTML.rglob("*.css")) if PAGES else []


def _id(path: Path) -> str:
    return str(path.relative_to(HTML))


def test_book_is_built():
    """The checks below have something to check (``make test`` builds the book first)."""
    if not PAGES:
        missing(NOT_BUILT)
    assert (HTML / "status.html").is_file(), "the status page is missing from the book"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_loads_nothing_from_another_host(page):
    parser = ResourceParser()
    parser.feed(page.read_text(encoding="utf-8"))
    remote = [f"<{tag} {attr}={url!r}>" for tag, attr, url in parser.resources if is_remote(url)]
    remote += [f"inline CSS url({url!r})" for css in parser.css for url in css_urls(css)
               if is_remote(url)]
    assert not remote, f"{_id(page)} loads resources from another host: {remote}"
    # The widget manager's CDN attribute is a folder prefix for modules outside its bundle
    # (none here; the browser test fails on any such request), not a file to check.
    absent = [url for _, attr, url in parser.resources if attr != "data-jupyter-widgets-cdn"
              and (target := local_target(page.parent, url)) is not None and not target.exists()]
    assert not absent, f"{_id(page)} names local resources that are not in the build: {absent}"


@pytest.mark.parametrize("sheet", STYLESHEETS, ids=_id)
def test_stylesheet_loads_nothing_from_another_host(sheet):
    urls = css_urls(sheet.read_text(encoding="utf-8", errors="replace"))
    remote = [u for u in urls if is_remote(u)]
    assert not remote, f"{_id(sheet)} loads from another host: {remote}"
    absent = [u for u in urls
              if (target := local_target(sheet.parent, u)) is not None and not target.exists()]
    assert not absent, f"{_id(sheet)} names files that are not in the build: {absent}"


@pytest.mark.parametrize("url, remote", [
    ("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", True),
    ("//fonts.googleapis.com/css?family=Roboto", True),
    ("http://127.0.0.1:8000/x.js", True),
    ("_static/npm/mathjax/tex-mml-chtml.js", False),
    ("../_static/pygments.css?v=1", False),
    ("data:image/png;base64,AAAA", False),
])
def test_is_remote(url, remote):
    assert is_remote(url) is remote


def test_parser_finds_resources_and_allows_navigation():
    parser = ResourceParser()
    parser.feed('<link rel="stylesheet" href="https://x.org/a.css"><link rel="next" '
                'href="https://x.org/b.html"><a href="https://arxiv.org/abs/1">paper</a>'
                '<img srcset="https://x.org/1.png 1x, b.png 2x"><script src="//x.org/s.js">'
                '</script><style>@import "https://x.org/c.css"; p{background:url(d.png)}'
                '</style><div style="background: url(\'https://x.org/e.png\')"></div>')
    assert [u for _, _, u in parser.resources] == [
        "https://x.org/a.css", "https://x.org/1.png", "b.png", "//x.org/s.js"]
    assert [u for css in parser.css for u in css_urls(css)] == [
        "https://x.org/c.css", "d.png", "https://x.org/e.png"]
