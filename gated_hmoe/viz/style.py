"""One figure style for the whole book: colours per expert class and gate position.

Every chapter draws with these colours so that "linear experts" or "G1" look the same on
every page. Functions return the matplotlib objects; the caller calls ``plt.show()``.
"""

from __future__ import annotations

import re

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

#: Colour of each expert class / leaf type (colour-blind safe, Okabe-Ito).
EXPERT_COLORS: dict[str, str] = {
    "linear": "#D55E00",   # vermillion: the slow class
    "glu": "#CC79A7",      # reddish purple: literal gate, linear in value weights
    "sigmoid": "#0072B2",  # blue
    "silu": "#009E73",     # bluish green
}

#: Colour of each attention variant (MHSA and gate positions).
GATE_COLORS: dict[str, str] = {
    "MHSA": "#D55E00",
    "G1": "#0072B2",
    "G1-headwise": "#56B4E9",
    "G1-ridge": "#882E72",        # purple (Paul Tol)
    "G2": "#009E73",
    "G2-tied": "#000000",
    "G3": "#E69F00",
    "G4": "#F0E442",
    "G5": "#CC79A7",
}

#: Colours of several series of one kind on one axes (in order; Okabe-Ito, colour-blind safe).
SERIES_COLORS: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9")

#: Markers that tell several series on one axes apart (in order), with the colours above.
SERIES_MARKERS: tuple[str, ...] = ("o", "s", "D", "^", "v", "P", "X", "*", "h")

#: Colour of the three HMoE levels.
LEVEL_COLORS: tuple[str, str, str] = ("#E69F00", "#56B4E9", "#009E73")


def apply_style() -> None:
    """Set the book's matplotlib defaults (sizes, grid, fonts). Idempotent."""
    mpl.rcParams.update({
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 8,
        "legend.frameon": False,
        "lines.linewidth": 1.6,
        "lines.markersize": 4,
        "image.cmap": "viridis",
    })


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float | None = None,
               height: float | None = None, **kwargs):
    """``plt.subplots`` with the book's style and a size that grows with the panel count."""
    apply_style()
    single = ncols == 1 and nrows == 1
    w = width if width is not None else (6.4 if single else min(3.6 * ncols, 12.0))
    h = height if height is not None else (4.0 if single else 3.2 * nrows)
    return plt.subplots(nrows, ncols, figsize=(w, h), **kwargs)


#: Axis labels that name no quantity (an audit finding when used alone).
GENERIC_LABELS: frozenset[str] = frozenset({"loss", "value", "values", "error", "y", "x", "f"})

#: Smallest legend font the audit accepts, in points (readable at page width).
MIN_LEGEND_POINTS: float = 6.5


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.images or ax.patches or ax.tables)


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _tick_labels_hidden(ax, axis: str) -> bool:
    """True for an inner panel of a shared grid (``label_outer``): no tick labels on ``axis``."""
    params = (ax.xaxis if axis == "x" else ax.yaxis).get_tick_params()
    sides = ("labelbottom", "labeltop") if axis == "x" else ("labelleft", "labelright")
    defaults = (True, False)
    return not any(params.get(side, default) for side, default in zip(sides, defaults))


#: A slope of zero with a zero-width interval, ``"slope +0.00 [+0.00, +0.00]"``: what a fit
#: through values that do not move at all (censored at a grid's end, or a constant) prints.
_DEGENERATE_SLOPE = re.compile(r"[+-]?0\.00 \[[+-]?0\.00, [+-]?0\.00\]")


def _hidden_series(ax) -> list[str]:
    """Labels of line series drawn exactly on top of an earlier one (same points, same
    marker and line style), so that the later hides the earlier."""
    seen, hidden = {}, []
    for line in ax.lines:
        x, y = (np.asarray(v, float) for v in line.get_data())
        label = line.get_label()
        if not line.get_visible() or x.size < 2 or label.startswith("_"):
            continue
        key = (x.tobytes(), y.tobytes(), line.get_marker(), line.get_linestyle())
        if key in seen:
            hidden.append(f"{label!r} hides {seen[key]!r}")
        else:
            seen[key] = label
    return hidden


def audit(fig) -> list[str]:
    """What breaks the book's figure rules in ``fig``, one finding per string (empty: none).

    Rules: every visible panel shows data (a panel with only a note is empty); every
    visible panel with data names its quantities on both axes (an inner panel of a shared
    grid may leave the label to its row or column -- its tick labels hidden -- or to the
    figure's ``supxlabel``/``supylabel``), and no label is a bare generic word
    (:data:`GENERIC_LABELS`); legends are at least :data:`MIN_LEGEND_POINTS` points; every
    heat map (image or mesh) has a colour bar; no legend prints a zero slope with a
    zero-width interval (a slope fitted through censored or constant values); no labelled
    series is drawn exactly on top of another.
    """
    findings = []
    panels = [ax for ax in fig.axes if ax.get_visible() and not _is_colorbar(ax)]
    sup_x = getattr(fig, "_supxlabel", None) is not None
    sup_y = getattr(fig, "_supylabel", None) is not None
    for i, ax in enumerate(panels):
        name = f"panel {i} ({ax.get_title() or 'untitled'})"
        if not ax.axison:
            continue                      # an axes drawn as a picture or a text block
        if not _has_data(ax):
            findings.append(f"{name}: empty (no data drawn)")
            continue
        for axis, label, sup in (("x", ax.get_xlabel(), sup_x), ("y", ax.get_ylabel(), sup_y)):
            inner = _tick_labels_hidden(ax, axis)
            if not label.strip():
                if not (sup or inner):
                    findings.append(f"{name}: no {axis}-axis label")
            elif label.strip().lower() in GENERIC_LABELS:
                findings.append(f"{name}: {axis}-axis label {label!r} names no quantity")
        leg = ax.get_legend()
        if leg is not None:
            size = min((t.get_fontsize() for t in leg.get_texts()), default=MIN_LEGEND_POINTS)
            if size < MIN_LEGEND_POINTS:
                findings.append(f"{name}: legend at {size:g} pt (< {MIN_LEGEND_POINTS:g} pt)")
            for text in leg.get_texts():
                if _DEGENERATE_SLOPE.search(text.get_text()):
                    findings.append(f"{name}: legend slope zero with a zero-width interval "
                                    f"({text.get_text()!r}): fitted through values that do not "
                                    "move")
        findings.extend(f"{name}: series {h}" for h in _hidden_series(ax))
        for art in [*ax.images, *ax.collections]:
            if hasattr(art, "get_array") and art.get_array() is not None \
                    and type(art).__name__ in ("AxesImage", "QuadMesh") and art.colorbar is None:
                findings.append(f"{name}: heat map without a colour bar")
    if not panels:
        findings.append("figure has no visible panel")
    return findings


def check(fig):
    """Raise ``ValueError`` listing :func:`audit`'s findings for ``fig``; return ``fig``."""
    findings = audit(fig)
    if findings:
        raise ValueError("figure breaks the book's figure rules: " + "; ".join(findings))
    return fig


def position_color(position: str) -> str:
    """The book's colour of an attention variant (``"ridge"`` takes ``"G1-ridge"``)."""
    return GATE_COLORS["G1-ridge" if position == "ridge" else position]


__all__ = ["EXPERT_COLORS", "GATE_COLORS", "GENERIC_LABELS", "LEVEL_COLORS",
           "MIN_LEGEND_POINTS", "SERIES_COLORS", "SERIES_MARKERS", "apply_style", "audit", "check", "new_figure", "position_color"]
