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
``box.live_button.click()``) and ``box.redraw()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure


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


def explorer(controls: dict[str, Sequence], draw: Callable[..., Any], *,
             live: Callable[..., Any] | None = None,
             live_controls: dict[str, Sequence] | None = None,
             live_label: str = "run live fit", value: dict | None = None) -> widgets.VBox:
    """An ipywidgets explorer; see the module docstring. ``value``: initial selection."""
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
    box = widgets.VBox([*rows, out])
    box.live_button = button
    box.redraw = redraw
    redraw()
    return box


__all__ = ["explorer", "show"]
