"""Fetch the book's JavaScript assets from the npm registry, so the HTML needs no CDN.

The built pages load MathJax (math), RequireJS and the Jupyter widget manager (widget
state stored in a notebook). Sphinx and myst-nb point at CDNs by default; this book serves
them from the book's own ``_static/offline/`` instead (``_config.yml``: ``mathjax_path``,
``nb_ipywidgets_js``), so a page read offline typesets its math.

No maintained PyPI package ships MathJax 3, RequireJS or the widget manager, so the exact
versions below come from the npm registry with ``npm pack`` (the registry's ordinary
client). Each tarball is checked against its pinned sha512 integrity, kept under
``.cache/npm/`` and unpacked into ``_npm/NAME/`` (both ignored by git); the local Sphinx
extension ``_ext/html_assets.py`` copies ``_npm/`` to ``_build/html/_static/offline/``. (Not
``_static/``: jupyter-book would add every script found there to every page.) A second run
with the same pins does nothing. ``make book`` runs this script first.

Usage: ``python scripts/fetch_web_assets.py [--root DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Asset:
    """One npm package: the exact version, its registry integrity, what the book serves."""

    name: str  # folder under _npm/ (and _static/offline/ in the HTML)
    spec: str  # npm package@version
    integrity: str  # sha512-... as the registry states it
    keep: tuple[str, ...]  # paths inside the package (file or folder prefixes) to unpack


ASSETS = (
    Asset(
        name="mathjax",
        spec="mathjax@3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        # The combined component Sphinx uses (tex-mml-chtml) and what it loads on demand:
        # TeX extensions (autoload), CHTML fonts, the menu and its accessibility tools.
        keep=("es5/tex-mml-chtml.js", "es5/input/", "es5/output/chtml.js",
              "es5/output/chtml/", "es5/ui/", "es5/a11y/", "es5/sre/", "es5/adaptors/",
              "LICENSE"),
    ),
    Asset(
        name="requirejs",
        spec="requirejs@2.3.8",
        integrity="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        keep=("require.js",),
    ),
    Asset(
        name="html-manager",
        spec="@jupyter-widgets/html-manager@1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        # embed-amd.js finds its fonts (Font Awesome, bundled) beside itself.
        keep=("dist/embed-amd.js", "dist/embed-amd.js.LICENSE.txt", "dist/*.woff2",
              "dist/*.woff", "dist/*.ttf", "dist/*.eot", "dist/*.svg", "LICENSE"),
    ),
)

STAMP = ".asset.json"
#: Where the assets are unpacked, relative to the book's root.
ASSET_DIR = "_npm"


def _digest(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _wanted(member: str, keep: tuple[str, ...]) -> bool:
    rel = member.removeprefix("package/")
    for pattern in keep:
        if pattern.startswith("dist/*."):
            if rel.startswith("dist/") and "/" not in rel[5:] and rel.endswith(pattern[6:]):
                return True
        elif pattern.endswith("/"):
            if rel.startswith(pattern):
                return True
        elif rel == pattern:
            return True
    return False


def _tarball(asset: Asset, cache: Path) -> Path:
    """The package's tarball in ``cache``, fetched with ``npm pack`` if absent or stale."""
    cache.mkdir(parents=True, exist_ok=True)
    base = asset.spec.lstrip("@").replace("/", "-").replace("@", "-")
    path = cache / f"{base}.tgz"
    if path.is_file() and _digest(path) == asset.integrity:
        return path
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(
            f"fetch_web_assets: npm is not installed; it fetches {asset.spec} from the npm "
            "registry once (Debian/Ubuntu: apt-get install -y npm)."
        )
    proc = subprocess.run(
        [npm, "pack", asset.spec, "--pack-destination", str(cache), "--json"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        sys.exit(
            f"fetch_web_assets: could not fetch {asset.spec} from the npm registry "
            f"(npm pack exited {proc.returncode}). The book's math and widgets are served "
            "from these files; check the network connection to the registry.\n"
            + proc.stderr.strip()[-2000:]
        )
    filename = json.loads(proc.stdout)[0]["filename"]
    fetched = cache / filename
    if fetched != path:
        fetched.replace(path)
    if (got := _digest(path)) != asset.integrity:
        path.unlink()
        sys.exit(
            f"fetch_web_assets: {asset.spec} from the registry has integrity {got}, "
            f"expected {asset.integrity}; refusing to use it."
        )
    return path


def install(asset: Asset, root: Path) -> bool:
    """Unpack ``asset`` into ``root/_npm/NAME``; False if already there."""
    dest = root / ASSET_DIR / asset.name
    stamp = {"spec": asset.spec, "integrity": asset.integrity, "keep": list(asset.keep)}
    if (dest / STAMP).is_file() and json.loads((dest / STAMP).read_text()) == stamp:
        return False
    tarball = _tarball(asset, root / ".cache" / "npm")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    count = 0
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not _wanted(member.name, asset.keep):
                continue
            rel = Path(member.name.removeprefix("package/"))
            if rel.is_absolute() or ".." in rel.parts:
                sys.exit(f"fetch_web_assets: unsafe path {member.name!r} in {asset.spec}")
            rel = rel.relative_to("es5") if asset.name == "mathjax" and rel.parts[0] == "es5" else rel
            rel = rel.relative_to("dist") if rel.parts[0] == "dist" else rel
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    if count == 0:
        sys.exit(f"fetch_web_assets: nothing to unpack from {asset.spec} (keep={asset.keep})")
    (dest / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    print(f"fetch_web_assets: {asset.spec} -> {dest.relative_to(root)} ({count} files)")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the book's root folder (default: this repository)")
    args = parser.parse_args(argv)
    if not (args.root / "_config.yml").is_file():
        parser.error(f"--root: {args.root} has no _config.yml (not the book's root)")
    for asset in ASSETS:
        install(asset, args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
