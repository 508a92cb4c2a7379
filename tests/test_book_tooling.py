"""The book's build tooling: offline web assets, recorded run times, the status tables."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


assets = _load(ROOT / "scripts" / "fetch_web_assets.py")
record_run_time = _load(ROOT / "scripts" / "record_run_time.py")
book_status = _load(ROOT / "_ext" / "book_status.py")


def test_assets_are_pinned_exactly():
    for asset in assets.ASSETS:
        assert re.fullmatch(r"(@[a-z0-9-]+/)?[a-z0-9.-]+@\d+\.\d+\.\d+", asset.spec), asset.spec
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", asset.integrity), asset.spec


def test_asset_members_kept():
    mathjax = next(a for a in assets.ASSETS if a.name == "mathjax")
    manager = next(a for a in assets.ASSETS if a.name == "html-manager")
    assert assets._wanted("package/es5/tex-mml-chtml.js", mathjax.keep)
    assert assets._wanted("package/es5/output/chtml/fonts/woff-v2/MathJax_Zero.woff", mathjax.keep)
    assert not assets._wanted("package/es5/tex-svg.js", mathjax.keep)
    assert assets._wanted("package/dist/d878b0a6a1144760244f.woff2", manager.keep)
    assert not assets._wanted("package/dist/embed.js", manager.keep)
    assert not assets._wanted("package/dist/sub/x.woff2", manager.keep)


def test_fetch_needs_the_book_root(tmp_path, capsys):
    with pytest.raises(SystemExit):
        assets.main(["--root", str(tmp_path)])
    assert "--root" in capsys.readouterr().err


def test_record_run_time_times_a_command(tmp_path):
    path = tmp_path / "runs.json"
    assert record_run_time.main(["--name", "a", "--file", str(path), "--", sys.executable,
                                 "-c", "pass"]) == 0
    assert record_run_time.main(["--name", "b", "--file", str(path), "--command", "x",
                                 "--seconds", "90", "--machine", "m"]) == 0
    assert record_run_time.main(["--name", "a", "--file", str(path), "--command", "y",
                                 "--seconds", "5", "--note", "again"]) == 0
    runs = json.loads(path.read_text())["runs"]
    assert [r["name"] for r in runs] == ["a", "b"]  # replaced in place, order kept
    assert runs[0]["command"] == "y" and runs[0]["seconds"] == 5 and runs[0]["note"] == "again"
    assert runs[1]["machine"] == "m"
    rows = book_status.run_time_rows(path)
    assert rows[0][0] == "a (again)" and rows[0][2] == "5 s" and rows[1][2] == "90 s"


def test_record_run_time_keeps_nothing_from_a_failed_command(tmp_path):
    path = tmp_path / "runs.json"
    rc = record_run_time.main(["--name", "a", "--file", str(path), "--", sys.executable,
                               "-c", "raise SystemExit(3)"])
    assert rc == 3 and not path.exists()


@pytest.mark.parametrize("argv, message", [
    (["--name", "a", "--seconds", "3"], "--command"),
    (["--name", "a", "--seconds", "-1", "--command", "x"], "--seconds"),
    (["--name", "a"], "either --seconds"),
])
def test_record_run_time_bad_arguments(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        record_run_time.main([*argv, "--file", str(tmp_path / "r.json")])
    assert message in capsys.readouterr().err


def test_committed_run_times_are_readable():
    rows = book_status.run_time_rows(ROOT / "docs" / "run_times.json")
    assert rows and all(len(r) == 5 and all(r) for r in rows)


def test_status_versions_name_the_library_and_the_served_assets(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2"\n')
    stamp = tmp_path / "_npm" / "mathjax" / ".asset.json"
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"spec": "mathjax@3.2.2"}))
    rows = book_status.version_rows(tmp_path)
    assert rows[0][:1] == ["x"] and rows[0][1].startswith("1.2 (commit ")
    assert ["mathjax", "3.2.2", "web asset served with the HTML (npm registry)"] in rows
    assert any(r[0] == "sphinx" and r[1] != "not installed" for r in rows)


def test_records_index_is_generated_from_the_records():
    """``docs/records/README.md`` is what ``_ext/book_results.py`` prints from the records, and
    every results table renders."""
    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        book_results = _load(ROOT / "_ext" / "book_results.py")
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    index = (ROOT / "docs" / "records" / "README.md").read_text()
    assert index == book_results.records_readme()
    for path in (ROOT / "docs" / "records").glob("*.json"):
        assert path.name in index, path.name
    for name in book_results.BookResults.NAMES:
        assert book_results.render(name)[1], name
