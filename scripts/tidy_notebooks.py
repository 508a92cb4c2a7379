"""Maintainer tool, run by `make execute`: keep the stored outputs of the chapters small.

- drops stored widget state (large; nbval ignores widget cells, the HTML book shows the
  static explorer stored beside each widget view as ``text/html``, which is kept);
- re-encodes stored PNG figures as 256-colour palette PNGs (plots have few colours; the
  pictures look the same and nbval does not compare images), with the same encoder as the
  static explorers' frames (``gated_hmoe.viz.explorer.palette_png``).

Usage: python scripts/tidy_notebooks.py chapters/*.ipynb
"""

import base64
import json
import sys

from gated_hmoe.viz.explorer import palette_png


def compress_png(data: str) -> str:
    new = base64.b64encode(palette_png(base64.b64decode(data), 256)).decode()
    return new if len(new) < len(data) else data


def tidy(path: str) -> None:
    with open(path) as fh:
        nb = json.load(fh)
    nb["metadata"].pop("widgets", None)
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                png = data["image/png"]
                data["image/png"] = compress_png("".join(png) if isinstance(png, list) else png)
    with open(path, "w") as fh:
        json.dump(nb, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        tidy(p)
