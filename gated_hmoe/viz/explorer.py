"""The one explorer builder: controls plus a drawing function make an interactive figure.

Every chapter's "Explore" section is :func:`explorer` over its cached results:

- ``controls`` -- name -> options (plain values, or ``(label, value)`` pairs); each becomes
  a drop-down;
- ``draw(**selection)`` -- returns what to show for one choice of the controls: a
  matplotlib figure, a string (shown as a note), or a sequence of these. It only reads
  results that are already computed;
- ``live`` (optional) -- a callback that *does* compute (a small live fit), run on a button
  click with the current selection and the values of ``live_controls`` (name -> options,
  each a slider). The callback comes from the caller: the viz layer never starts a
  computation itself.

The returned box has ``box.live_button`` (for tests and scripted use:
``box.live_button.click()``), ``box.redraw()``, and ``box.controls`` and ``box.draw`` (what
it was built from, e.g. to render the static explorer with other settings).

Without a kernel (the static HTML book) the same ``draw`` serves a static explorer,
:func:`static_html`: every combination of the controls is drawn once, ahead of time, into a
frame (a palette PNG, :func:`palette_png`); the frames and plain inline JavaScript (no
library, no network) sit in one self-contained HTML fragment that swaps the frame when a
drop-down changes. The box carries it (``box.static_html``) as the ``text/html`` part of its
display bundle: Jupyter and Colab render the widget (live fit included), renderers without a
widget manager -- the book, whose ``_config.yml`` drops the widget view for HTML -- render
the fragment. At most ``max_frames`` combinations are drawn (:data:`MAX_FRAMES`); a chapter
with more passes fewer options. Frames that draw the same picture are stored once.

The fragment's DOM (tests and the book's browser check rely on it)::

    <div class="gh-explorer" data-frames="N">       one per explorer (N combinations), no ids
      <select class="gh-control" name="NAME">       one per control, option values "0", "1", ...
      <img class="gh-frame" data-key="i-j-...">     exactly one; src = the selection's frame
      <div class="gh-note">                         strings returned by draw (HTML)
      <script type="application/json" class="gh-data">  see render_frames, plus "blank"
      <script>                                      wires every not yet wired .gh-explorer

A frame key is the selected option indices joined by ``-`` in the order of ``controls``;
a selection that draws only strings shows a blank 1x1 image (hidden) and its text.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure
from PIL import Image

from gated_hmoe import checks

#: Most combinations of the controls a static explorer draws (see :func:`static_html`).
MAX_FRAMES = 64
#: Resolution of the static frames (dots per inch; saved with a tight bounding box, as the
#: notebook's inline backend does): a 6.4 x 4 in figure is about 512 x 320 pixels.
FRAME_DPI = 80
#: Colours of a static frame's palette (plots have few; the picture looks the same).
FRAME_COLORS = 128
#: A valid 1x1 transparent PNG, the frame of a selection that draws only strings.
BLANK_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR4"
             "nGNgYAAAAAMAASsJTYQAAAAASUVORK5CYII=")


def _options(values: Sequence) -> list[tuple[str, Any]]:
    out = []
    for v in values:
        label, value = v if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) \
            else (str(v), v)
        out.append((label, value))
    if not out:
        raise ValueError("every control needs at least one option")
    return out


def show(item: Any) -> None:
    """Display a figure (then close it), a string (as a note) or a sequence of these."""
    if item is None:
        return
    if isinstance(item, Figure):
        display(item)
        plt.close(item)
    elif isinstance(item, str):
        display(widgets.HTML(item))
    elif isinstance(item, (list, tuple)):
        for part in item:
            show(part)
    else:
        raise TypeError(f"draw/live must return a figure, a string or a sequence of these, "
                        f"got {type(item).__name__}")


def palette_png(data: bytes, colors: int = 256) -> bytes:
    """Re-encode PNG bytes as a ``colors``-colour palette PNG (median cut, optimised); the
    original if that is not smaller. Used for the static frames and by
    ``scripts/tidy_notebooks.py`` for stored figures."""
    colors = checks.positive_int(colors, "colors", minimum=2)
    if colors > 256:
        raise ValueError(f"colors must be an integer in [2, 256], got {colors}")
    img = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, format="PNG",
                                                                       optimize=True)
    new = out.getvalue()
    return new if len(new) < len(data) else data


def _parts(item: Any) -> tuple[list[Figure], list[str]]:
    """The figures and strings of what ``draw`` returned (see :func:`show`), in order."""
    if item is None:
        return [], []
    if isinstance(item, Figure):
        return [item], []
    if isinstance(item, str):
        return [], [item]
    if isinstance(item, (list, tuple)):
        figs, notes = [], []
        for part in item:
            f, n = _parts(part)
            figs += f
            notes += n
        return figs, notes
    raise TypeError(f"draw/live must return a figure, a string or a sequence of these, "
                    f"got {type(item).__name__}")


def frame_png(figs: Sequence[Figure], *, dpi: int = FRAME_DPI,
              colors: int | None = FRAME_COLORS) -> bytes:
    """One PNG of ``figs`` stacked top to bottom, a ``colors``-colour palette PNG
    (:func:`palette_png`; ``None``: full colour); each figure is closed."""
    images = []
    for fig in figs:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white", bbox_inches="tight")
        plt.close(fig)
        images.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    sheet = images[0]
    if len(images) > 1:
        sheet = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)),
                          "white")
        y = 0
        for im in images:
            sheet.paste(im, (0, y))
            y += im.height
    raw = io.BytesIO()
    sheet.save(raw, format="PNG", optimize=colors is None)
    return raw.getvalue() if colors is None else palette_png(raw.getvalue(), colors)


def _start_indices(names: list[str], options: list[list[tuple[str, Any]]],
                   value: dict, extra: Sequence[str]) -> list[int]:
    """The option index each control starts at: ``value[name]`` if given, else 0."""
    unknown = sorted(set(value) - set(names) - set(extra))
    if unknown:
        raise ValueError(f"value names no control: {unknown} (controls: {names})")
    start = []
    for name, opts in zip(names, options):
        if name not in value:
            start.append(0)
            continue
        hits = [i for i, (_, v) in enumerate(opts) if v == value[name]]
        if not hits:
            raise ValueError(f"value[{name!r}] = {value[name]!r} is not one of the options "
                             f"{[v for _, v in opts]}")
        start.append(hits[0])
    return start


def render_frames(controls: dict[str, Sequence], draw: Callable[..., Any], *,
                  max_frames: int = MAX_FRAMES,
                  encode: Callable[[list[Figure]], str] | None = None) -> dict:
    """Draw every combination of ``controls`` once: ``{"controls": names, "options":
    [[label, ...], ...], "keys": {key: frame index}, "frames": [{"image", "note"}, ...],
    "images": [data URI, ...]}``.

    ``key`` is the option indices joined by ``-`` (``"0-1-0"``); ``image`` indexes
    ``images`` (-1 when the combination draws only strings), each a data URI from
    ``encode(figures)`` (default: a palette PNG at :data:`FRAME_DPI`); ``note`` the strings,
    joined by ``<br>``. Identical images and identical frames are stored once. Raises
    ``ValueError`` naming ``max_frames`` if the controls have more combinations than that.
    """
    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    if not isinstance(controls, dict) or not controls:
        raise ValueError("controls must be a non-empty dict name -> options")
    max_frames = checks.positive_int(max_frames, "max_frames")
    names = list(controls)
    options = [_options(controls[n]) for n in names]
    count = math.prod(len(o) for o in options)
    if count > max_frames:
        sizes = " x ".join(f"{len(o)} {n}" for n, o in zip(names, options))
        raise ValueError(f"the controls have {count} combinations ({sizes}), more than "
                         f"max_frames={max_frames}: pass fewer options or raise max_frames")
    if encode is None:
        def encode(figs):
            png = frame_png(figs)
            return "data:image/png;base64," + base64.b64encode(png).decode()
    keys, frames, images = {}, [], []
    for combo in itertools.product(*(range(len(o)) for o in options)):
        figs, notes = _parts(draw(**{n: options[j][i][1]
                                     for j, (n, i) in enumerate(zip(names, combo))}))
        image = -1
        if figs:
            uri = encode(figs)
            if uri not in images:
                images.append(uri)
            image = images.index(uri)
        frame = {"image": image, "note": "<br>".join(notes)}
        if frame not in frames:
            frames.append(frame)
        keys["-".join(map(str, combo))] = frames.index(frame)
    return {"controls": names, "options": [[label for label, _ in o] for o in options],
            "keys": keys, "frames": frames, "images": images}


#: The static explorers' script: wires every ``div.gh-explorer`` of the page not yet wired
#: (so it runs once per explorer, and several explorers on a page need no ids).
_SCRIPT = """(function () {
  var roots = document.querySelectorAll("div.gh-explorer:not([data-gh-ready])");
  Array.prototype.forEach.call(roots, function (root) {
    var holder = root.querySelector("script.gh-data");
    var img = root.querySelector("img.gh-frame");
    var note = root.querySelector("div.gh-note");
    if (!holder || !img || !note) { return; }
    var data = JSON.parse(holder.textContent);
    var all = root.querySelectorAll(".gh-control");
    var controls = data.controls.map(function (name) {
      return Array.prototype.filter.call(all, function (c) {
        return c.getAttribute("name") === name; })[0];
    });
    function update() {
      var key = controls.map(function (c) { return c.value; }).join("-");
      var frame = data.frames[data.keys[key]];
      if (!frame) { return; }
      img.src = frame.image < 0 ? data.blank : data.images[frame.image];
      img.hidden = frame.image < 0;
      img.setAttribute("data-key", key);
      note.innerHTML = frame.note;
    }
    controls.forEach(function (c) {
      c.addEventListener("change", update);
      c.addEventListener("input", update);
    });
    root.setAttribute("data-gh-ready", "1");
    update();
  });
})();"""


def static_html(controls: dict[str, Sequence], draw: Callable[..., Any], *,
                value: dict | None = None, live_controls: Sequence[str] = (),
                caption: str = "", max_frames: int = MAX_FRAMES,
                encode: Callable[[list[Figure]], str] | None = None) -> str:
    """The self-contained static explorer (one HTML fragment, see the module docstring):
    :func:`render_frames` of ``controls`` and ``draw``, a drop-down per control starting at
    ``value`` (names in ``live_controls`` are allowed there and ignored), ``caption`` (HTML)
    under the frame."""
    value = dict(value or {})
    data = render_frames(controls, draw, max_frames=max_frames, encode=encode)
    start = _start_indices(data["controls"], [_options(controls[n]) for n in data["controls"]],
                           value, live_controls)
    key = "-".join(map(str, start))
    first = data["frames"][data["keys"][key]]
    selects = []
    for name, labels, s in zip(data["controls"], data["options"], start):
        opts = "".join(f'<option value="{i}"{" selected" if i == s else ""}>'
                       f"{html.escape(label)}</option>" for i, label in enumerate(labels))
        selects.append(f'<label style="margin-right:1em">{html.escape(name)} '
                       f'<select class="gh-control" name="{html.escape(name)}">{opts}</select>'
                       f"</label>")
    payload = json.dumps({**{k: data[k] for k in ("controls", "keys", "frames", "images")},
                          "blank": BLANK_PNG}, separators=(",", ":")).replace("</", "<\\/")
    src = BLANK_PNG if first["image"] < 0 else data["images"][first["image"]]
    hidden = " hidden" if first["image"] < 0 else ""
    return (f'<div class="gh-explorer" data-frames="{len(data["keys"])}"'
            f' data-images="{len(data["images"])}">'
            f'<div class="gh-controls">{"".join(selects)}</div>'
            f'<img class="gh-frame" data-key="{key}" src="{src}"'
            f' alt="explorer frame" style="max-width:100%"{hidden}>'
            f'<div class="gh-note">{first["note"]}</div>'
            + (f'<div class="gh-caption" style="font-size:85%">{caption}</div>' if caption
               else "")
            + f'<script type="application/json" class="gh-data">{payload}</script>'
            f"<script>{_SCRIPT}</script></div>")


class Explorer(widgets.VBox):
    """The explorer's widget box; its display bundle also holds the static explorer
    (``text/html``) for renderers without a widget manager."""

    static_html: str | None = None
    live_button: widgets.Button | None = None
    controls: dict | None = None
    draw: Callable[..., Any] | None = None

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None and self.static_html:
            data["text/html"] = self.static_html
        return data


def explorer(controls: dict[str, Sequence], draw: Callable[..., Any], *,
             live: Callable[..., Any] | None = None,
             live_controls: dict[str, Sequence] | None = None,
             live_label: str = "run live fit", value: dict | None = None,
             static: bool = True, max_frames: int = MAX_FRAMES) -> Explorer:
    """An ipywidgets explorer; see the module docstring. ``value``: initial selection;
    ``static``: also render the static explorer (:func:`static_html`, at most
    ``max_frames`` combinations), shown where no widget manager is."""
    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    if live is not None and not callable(live):
        raise TypeError(f"live must be callable or None, got {type(live).__name__}")
    value = dict(value or {})
    drops = {}
    for name, opts in controls.items():
        options = _options(opts)
        start = value.get(name, options[0][1])
        drops[name] = widgets.Dropdown(options=options, value=start, description=name)
    sliders = {}
    for name, opts in (live_controls or {}).items():
        options = _options(opts)
        start = value.get(name, options[len(options) // 2][1])
        sliders[name] = widgets.SelectionSlider(options=options, value=start, description=name)
    out = widgets.Output()

    def selection():
        return {name: w.value for name, w in drops.items()}

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            show(draw(**selection()))

    for w in drops.values():
        w.observe(redraw, names="value")
    rows = [widgets.HBox(list(drops.values()))]
    button = None
    if live is not None:
        button = widgets.Button(description=live_label)

        def run_live(*_):
            with out:
                out.clear_output(wait=True)
                show(live(**selection(), **{n: w.value for n, w in sliders.items()}))

        button.on_click(run_live)
        rows.append(widgets.HBox([*sliders.values(), button]))
    box = Explorer([*rows, out])
    box.live_button = button
    box.redraw = redraw
    box.controls, box.draw = dict(controls), draw
    if static:
        caption = ("Precomputed from the cached results; the live fit needs a running "
                   "kernel (Binder or Colab)." if live is not None else
                   "Precomputed from the cached results.")
        box.static_html = static_html(controls, draw, value=value,
                                      live_controls=tuple(live_controls or ()),
                                      caption=caption, max_frames=max_frames)
    redraw()
    return box


__all__ = ["BLANK_PNG", "Explorer", "FRAME_COLORS", "FRAME_DPI", "MAX_FRAMES", "explorer",
           "frame_png", "palette_png", "render_frames", "show", "static_html"]
