"""The bibliography is complete and lean: every ``{cite}`` key in the book's pages is an
entry of ``chapters/references.bib``, and every entry is cited somewhere.

sphinxcontrib-bibtex already warns (and the strict build fails) on an undefined key; an
*uncited* entry only shows up silently in the reference list, so this test makes it fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "chapters" / "references.bib"
ENTRY = re.compile(r"^@\w+\{([^,\s]+),", re.MULTILINE)
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def bib_keys(text: str) -> list[str]:
    return ENTRY.findall(text)


def cited_keys(text: str) -> set[str]:
    return {k.strip() for group in CITE.findall(text) for k in group.split(",") if k.strip()}


def book_pages() -> list[Path]:
    """Every page of the book's table of contents (root included)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    out = []
    for f in files:
        for ext in (".md", ".ipynb"):
            if (ROOT / (f + ext)).exists():
                out.append(ROOT / (f + ext))
                break
        else:
            raise AssertionError(f"_toc.yml names {f!r}, which has no .md or .ipynb file")
    return out


def page_text(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text())
        return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return path.read_text()


def test_every_entry_is_unique_and_cited_and_every_citation_defined():
    keys = bib_keys(BIB.read_text())
    assert len(keys) == len(set(keys)), "duplicate keys in references.bib"
    cited = set().union(*(cited_keys(page_text(p)) for p in book_pages()))
    undefined = sorted(cited - set(keys))
    uncited = sorted(set(keys) - cited)
    assert not undefined, f"cited but not in references.bib: {undefined}"
    assert not uncited, f"in references.bib but never cited in the book: {uncited}"


def test_no_placeholder_authors():
    for author in re.findall(r"author\s*=\s*\{(.*)\},?$", BIB.read_text(), re.MULTILINE):
        assert "authors}" not in author and "arXiv" not in author, author


@pytest.mark.parametrize("text, keys", [
    ("see {cite}`a,b` and {cite:t}`c`", {"a", "b", "c"}),
    ("no citation here", set()),
])
def test_the_parser_finds_citations(text, keys):
    assert cited_keys(text) == keys


def test_the_check_catches_an_uncited_entry():
    keys = bib_keys("@misc{used,\n title={x}\n}\n@misc{unused,\n title={y}\n}\n")
    assert set(keys) - cited_keys("{cite}`used`") == {"unused"}
