"""Maintainer tool, run by `make execute`: keep the stored outputs of the chapters small.

- drops stored widget state (large; nbval ignores widget cells, the HTML book shows a
  static figure instead);
- re-encodes stored PNG figures as 256-colour palette PNGs (plots have few colours; the
  pictures look the same and nbval does not compare images).

Usage: python scripts/tidy_notebooks.py chapters/*.ipynb
"""

import base64
import io
import json
import sys

from PIL import Image


def compress_png(data: str) -> str:
    img = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    new = base64.b64encode(out.getvalue()).decode()
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
