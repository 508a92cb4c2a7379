"""One figure style for the whole book: colours per expert class and gate position.

Every chapter draws with these colours so that "linear experts" or "G1" look the same on
every page. Functions return the matplotlib objects; the caller calls ``plt.show()``.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

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
    "G1-ridge": "#56B4E9",
    "G2": "#009E73",
    "G3": "#E69F00",
    "G4": "#F0E442",
    "G5": "#CC79A7",
}

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


def position_color(position: str) -> str:
    """The book's colour of an attention variant (``"ridge"`` takes ``"G1-ridge"``)."""
    return GATE_COLORS["G1-ridge" if position == "ridge" else position]


__all__ = ["EXPERT_COLORS", "GATE_COLORS", "LEVEL_COLORS", "apply_style", "new_figure",
           "position_color"]
