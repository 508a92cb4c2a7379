r"""Figures of the identifiability chapter: ranks of the Taylor family, spectra, the valley.

Every function draws results it receives and returns matplotlib objects; nothing here
computes. The results are those of :mod:`gated_hmoe.theory.identifiability`, read by
their fields (duck typing):

- a rank result has ``order``, ``rank``, ``n_functions``, ``rtol`` and ``log10_spectrum``
  (:math:`\log_{10}(\lambda_i/\lambda_1)`, descending, ``-inf`` for exact zeros);
- a valley curve has ``expert``, ``deltas`` (the split steps :math:`\gamma`) and ``l2``
  (:math:`\|f_{G_\gamma} - f_{G^*}\|_{L^2(\mu)}` along the split family);
- a Le Cam result has ``expert``, ``ns``, ``nu`` and ``bound``.

The "Explore" widget :func:`spectrum_explorer` receives the rank computation as a callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from gated_hmoe import checks
from gated_hmoe.estimation import rates
from gated_hmoe.models.moe import EXPERT_LABELS
from gated_hmoe.viz.explorer import explorer
from gated_hmoe.viz.style import EXPERT_COLORS, new_figure

#: Legend names of the expert classes in this chapter (the GLU leaf is the literal gate).
LABELS: dict[str, str] = {**EXPERT_LABELS, "glu": "GLU (literal gate)"}

#: Below this a distance is round-off: drawn at :data:`FLOOR`, no slope in the legend.
ROUNDOFF = 1e-13
FLOOR = 1e-18


def plot_rank_vs_order(ranks: dict[str, dict[int, int]], *,
                       exact: dict[str, dict[int, int]] | None = None,
                       spectra: dict[str, Any] | None = None):
    r"""Left: rank against the order :math:`q` per expert class (float64 filled, exact hollow) with
    the closed forms :math:`q + 2` (linear) and :math:`(q + 1)^2` (generic ridge) and the
    count :math:`\binom{q+3}{3}` of functions in three parameters; right (if ``spectra``):
    :func:`plot_spectra`. Returns ``(fig, axes)``."""
    ncols = 2 if spectra else 1
    fig, axes = new_figure(ncols, width=5.2 * ncols, height=3.8)
    axes = np.atleast_1d(axes)
    ax = axes[0]
    orders = sorted({r for d in list(ranks.values()) + list((exact or {}).values()) for r in d})
    rr = np.arange(0, max(orders) + 1)
    ax.plot(rr, [math.comb(r + 3, 3) for r in rr], ":", color="0.5",
            label="number of functions (3 params)")
    ax.plot(rr, (rr + 1) ** 2, "--", color="0.3", label=r"generic ridge $(q+1)^2$")
    ax.plot(rr, [1 if r == 0 else r + 2 for r in rr], "-.", color=EXPERT_COLORS["linear"],
            alpha=0.5, label=r"linear $q+2$")
    for i, (name, d) in enumerate(ranks.items()):
        ks = sorted(d)
        off = (i - 1.5) * 0.06
        ax.plot(np.array(ks) + off, [d[k] for k in ks], "o", color=EXPERT_COLORS[name],
                label=f"{LABELS[name]} (float64, rtol 1e-10)")
        if exact and name in exact:
            ke = sorted(exact[name])
            ax.plot(np.array(ke) + off, [exact[name][k] for k in ke], "s", mfc="none",
                    ms=8, color=EXPERT_COLORS[name])
    ax.plot([], [], "s", mfc="none", color="0.3", label="exact rank (hollow)")
    ax.set_xticks(rr)
    ax.set_xlabel("order q of the derivatives")
    ax.set_ylabel("rank of the derivative family")
    ax.set_title("Rank of the Taylor family, gate $e^{\\beta x}$")
    ax.legend(loc="upper left", fontsize=7)
    if spectra:
        plot_spectra(spectra, ax=axes[1])
    fig.tight_layout()
    return fig, axes


def plot_spectra(spectra: dict[str, Any], *, ax=None, legend_loc: str | None = "best"):
    r"""Normalised singular values :math:`\lambda_i / \lambda_1` (log scale) per expert class, with the
    tolerance line (``legend_loc=None``: no legend; the ranks go into the title).
    Returns the axes."""
    if ax is None:
        _, ax = new_figure(1, width=5.2, height=3.8)
    for name, res in spectra.items():
        spec = np.maximum(res.log10_spectrum, np.log10(FLOOR))
        ax.plot(np.arange(1, spec.size + 1), 10.0 ** spec, "o-",
                color=EXPERT_COLORS.get(name, "0.3"),
                label=f"{LABELS.get(name, name)}: rank {res.rank} of {res.n_functions}")
    first = next(iter(spectra.values()))
    ax.axhline(first.rtol, color="0.4", lw=1, ls="--", label=f"tolerance {first.rtol:.0e}")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 3, 3)
    n_max = max(r.n_functions for r in spectra.values())
    ax.set_xlim(0.5, n_max + 0.5)
    if n_max <= 10:
        ax.set_xticks(range(1, n_max + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("index i of the singular value")
    ax.set_ylabel(r"$\lambda_i / \lambda_1$ (exact zeros drawn at $10^{-18}$)")
    if legend_loc is None:
        ranks = ", ".join(f"{r.rank}" for r in spectra.values())
        ax.set_title(f"order {first.order}: ranks {ranks}")
    else:
        ax.set_title(f"Singular values, order {first.order}")
        ax.legend(loc=legend_loc, fontsize=7)
    return ax


def plot_valley(curves: Sequence[Any], *, d1: Any):
    r""":math:`\|f_{G_\delta} - f_{G^*}\|_{L^2(\mu)}` of each curve against the split size
    :math:`\delta` (log-log; the legend gives the slope, or "0 up to round-off" below
    :data:`ROUNDOFF`), and the Voronoi loss ``d1`` (same ``deltas`` as ``curves[0]``) dashed.
    Returns ``(fig, ax)``."""
    d1 = checks.finite_array(d1, "d1", shape=(len(curves[0].deltas),))
    fig, ax = new_figure(1, width=5.6, height=3.8)
    for cv in curves:
        tag = (f"slope {rates.loglog_slope(cv.deltas, cv.l2)[0]:.2f}"
               if np.all(cv.l2 > ROUNDOFF) else "0 up to round-off")
        ax.plot(cv.deltas, np.maximum(cv.l2, FLOOR), "o-", color=EXPERT_COLORS[cv.expert],
                label=rf"{LABELS[cv.expert]}: $\|f_G-f_{{G^*}}\|$, {tag}")
    ax.plot(curves[0].deltas, d1, "k--", lw=1, label=r"Voronoi loss $D_1$ (slope 2)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"split step $\gamma$ (half-separation $\delta = \gamma\|v\|/2$)")
    ax.set_ylabel(r"distance (drawn at $10^{-18}$ if below)")
    ax.set_title("The exact-fit valley: split atoms, true mean expert")
    ax.legend(loc="center right", fontsize=7)
    fig.tight_layout()
    return fig, ax


def spectrum_explorer(compute: Callable[[str, int], Any], *, experts: Sequence[str],
                      max_order: int = 3):
    """Drop-downs (expert class, order ``0..max_order``) redrawing :func:`plot_spectra` of
    ``compute(expert, order)`` -- the caller's rank test, e.g.
    ``identifiability.family_rank``. Returns the widget box of :func:`viz.explorer.explorer`."""
    if not callable(compute):
        raise TypeError(f"compute must be callable, got {type(compute).__name__}")
    experts = tuple(experts)
    if not experts:
        raise ValueError("experts must name at least one expert class")
    max_order = checks.positive_int(max_order, "max_order")

    def draw(expert: str, order: int):
        res = compute(expert, order)
        ax = plot_spectra({expert: res})
        return [ax.figure, f"rank {res.rank} of {res.n_functions} functions"]

    return explorer({"expert": [(LABELS.get(e, e), e) for e in experts],
                     "order": list(range(max_order + 1))}, draw,
                    value={"order": min(2, max_order)})


__all__ = ["FLOOR", "LABELS", "ROUNDOFF", "plot_le_cam", "plot_rank_vs_order", "plot_spectra", "plot_valley",
           "spectrum_explorer"]


def plot_le_cam(results: Sequence[Any], *, reference_slope: float = -0.25):
    r"""Le Cam's two-point lower bound of each result against the sample size (log-log),
    with a dotted reference line of slope ``reference_slope`` through the last point of
    the last result whose bound is not constant. Returns ``(fig, ax)``."""
    fig, ax = new_figure(1, width=5.6, height=3.8)
    shrinking = None
    for lc in results:
        flat = bool(np.allclose(lc.bound, lc.bound[0], rtol=1e-6))
        ax.plot(lc.ns, lc.bound, "s--" if flat else "o-", color=EXPERT_COLORS[lc.expert],
                label=f"{LABELS[lc.expert]}" + (": constant in n" if flat else ""))
        if not flat:
            shrinking = lc
    if shrinking is not None:
        ns = np.asarray(shrinking.ns, float)
        ax.plot(ns, shrinking.bound[-1] * (ns / ns[-1]) ** reference_slope, ":", color="grey",
                label=f"slope {reference_slope:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size $n$")
    ax.set_ylabel(r"lower bound on $\max_k\,\mathbb{E}|\hat T - T(G_k)|$")
    ax.set_title(rf"Le Cam's two-point bound on the pair's half-separation ($\nu$ = {results[0].nu:g})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, ax
