"""Figures of the quadratic-gate chapter (E3): modulus curves, the contrast, small multiples.

Functions take the chapter's results (:func:`gated_hmoe.experiments.e3_quadratic.run_grid`,
modulus tables already computed) and return matplotlib objects.
"""

from __future__ import annotations

import numpy as np

from gated_hmoe.estimation import rates
from gated_hmoe.models.moe import EXPERT_LABELS, EXPERTS, GATE_LABELS, GATES
from gated_hmoe.viz import explorer as ex
from gated_hmoe.viz.rates import RATE_STYLES, live_fit_view, rate_figure
from gated_hmoe.viz.style import EXPERT_COLORS, MIN_LEGEND_POINTS, new_figure

#: Metrics of the chapter's slope table (drawn by default).
TABLE_METRICS: tuple[str, ...] = ("worst_overfitted", "d1", "V")

#: Marker and line style of each expert class (with its colour from
#: :data:`gated_hmoe.viz.style.EXPERT_COLORS`), so that curves lying on top of each other
#: stay apart: no two classes share a marker or a dash pattern.
#: Marker sizes differ too (a small SiLU triangle stays visible inside a sigmoid square).
EXPERT_STYLES: dict[str, dict] = {
    "linear": {"marker": "o", "linestyle": "-", "markersize": 6},
    "glu": {"marker": "D", "linestyle": (0, (5, 1, 1, 1)), "markersize": 6},
    "sigmoid": {"marker": "s", "linestyle": "--", "markersize": 7},
    "silu": {"marker": "^", "linestyle": ":", "markersize": 4.5},
}

#: How a gate class is drawn on top of its expert's style: the monomial gate with filled
#: markers and a thick line, the polynomial gate with hollow markers (2 points larger, so a
#: hollow marker rings a filled one at the same place) and a thin line.
GATE_DRAW: dict[str, dict] = {
    "quadratic-monomial": {"linewidth": 2.0, "fillstyle": "full", "grow": 0.0},
    "quadratic-polynomial": {"linewidth": 1.1, "fillstyle": "none", "grow": 2.0},
}

#: Theory's slopes for the book's losses against ``n / nu``: over-fitted atoms of strongly
#: identifiable experts ``-1/4``, ``D_1`` and the identifiable part ``-1/2`` (theorem
#: ``thm-ridge-rates`` of the book, cited), no convergence ``0``.
REFERENCE_SLOPES: dict[str, float] = {"worst_overfitted": -0.25, "d1": -0.5, "V": -0.5}

_SLOPE_TEXT = {-0.25: "−1/4", -0.5: "−1/2", 0.0: "0", 4.0: "4", 8.0: "8", -0.125: "−1/8"}


def curve_style(expert: str, gate: str | None = None) -> dict:
    """``ax.plot`` keywords of one (expert, gate) curve: colour, marker and line style of
    the expert class; fill and width of the gate class (:data:`GATE_DRAW`)."""
    out = {"color": EXPERT_COLORS[expert], **EXPERT_STYLES[expert]}
    draw = dict(GATE_DRAW.get(gate, {}))
    out["markersize"] += draw.pop("grow", 0.0)
    return {**out, **draw}


def reference_line(ax, x, slope: float, through: tuple[float, float], *, what: str = "theory"):
    """Draw ``y = y0 (x / x0)^slope`` over ``x`` (grey, dash-dot) as a reference, labelled
    ``"reference slope ..."`` in the legend; ``through = (x0, y0)``."""
    x = np.asarray(x, float)
    x0, y0 = through
    label = _SLOPE_TEXT.get(slope, f"{slope:g}")
    return ax.plot(x, y0 * (x / x0) ** slope, color="0.45", lw=1.0, ls="-.", zorder=1,
                   label=f"reference slope {label} ({what})")[0]


def _present(results: dict, position: int, order: tuple[str, ...]) -> list[str]:
    """The classes at ``position`` of the keys of ``results``, in the book's order."""
    return [c for c in order if any(k[position] == c for k in results)]


def modulus_figure(deltas, table: dict, *, ax=None):
    """Log-log ``m(delta)`` per (gate, expert); ``table[(gate, expert)] = m (len(deltas),)``.

    Colour, marker and line style = expert class (:data:`EXPERT_STYLES`); filled markers
    and thick lines = monomial gate, hollow markers and thin lines = polynomial gate
    (:data:`GATE_DRAW`); the legend gives the fitted exponent. Grey dash-dot lines: the
    exponents 4 and 8 that the log-cosh series predicts, through the first ridge curve of each gate at the
    largest ``delta``. Values below ``1e-28`` (round-off; linear experts) are drawn at
    ``1e-28``.
    """
    if ax is None:
        fig, ax = new_figure(width=6.4, height=5.8)
    else:
        fig = ax.figure
    deltas = np.asarray(deltas, float)
    floor = 1e-28
    anchors = {}
    for (gate, expert), m in table.items():
        m = np.asarray(m, float)
        slope = rates.loglog_slope(deltas, m)[0] if np.all(m > floor) else float("nan")
        what = f"exponent {slope:.2f}" if np.isfinite(slope) else "0 (round-off)"
        if np.isfinite(slope):
            anchors.setdefault(gate, (deltas[-1], m[-1]))
        ax.plot(deltas, np.maximum(m, floor), **curve_style(expert, gate),
                label=f"{GATE_LABELS[gate]}, {EXPERT_LABELS[expert]}: {what}")
    for gate, exponent in (("quadratic-monomial", 4.0), ("quadratic-polynomial", 8.0)):
        if gate in anchors:
            reference_line(ax, deltas, exponent, anchors[gate],
                           what=f"δ^{exponent:.0f}, {GATE_LABELS[gate]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("half-separation δ of the over-fitted pair (parameter units)")
    ax.set_ylabel("m(δ) = min ‖f_G − f_G*‖² (drawn at 1e-28 if below)")
    ax.set_title("Modulus m(δ): how visible an over-fitted pair at offset δ is")
    ax.legend(loc="upper center", bbox_to_anchor=(0.45, -0.14), ncol=2, fontsize=7)
    fig.tight_layout()
    return fig, ax


def _fail_text(res) -> str:
    return "failures {}/{}".format(*res.failure_count())


def contrast_figure(results: dict, *, spread: float = 0.1, metric: str = "worst_overfitted",
                    gates=None, experts=None):
    """One panel per gate: the median ``metric`` (interquartile band) against ``n / nu`` for
    every expert class at ``spread`` (marker and line style per class,
    :data:`EXPERT_STYLES`); legend = fitted slope [95% CI] and failures; the dashed
    vertical line marks the start of the slope range; grey dash-dot lines are the reference
    slopes ``-1/4`` (theory for over-fitted atoms, through twice the smallest median at the
    largest ``n / nu``) and ``0`` (no convergence, through twice the linear experts' median
    there) when ``metric`` is ``"worst_overfitted"``. ``results[(gate, expert, spread)]``;
    gates and experts default to those present."""
    gates = _present(results, 0, GATES) if gates is None else gates
    experts = _present(results, 1, EXPERTS) if experts is None else experts
    fig, axes = new_figure(len(gates), width=11.0, height=4.0, sharey=True)
    axes = np.atleast_1d(axes)
    style = RATE_STYLES[metric]
    for ax, gate in zip(axes, gates):
        for expert in experts:
            res = results[(gate, expert, float(spread))]
            s = res.slopes[metric]
            L = res.losses(metric)
            L = np.where(np.isfinite(L), L, np.inf)
            colour = EXPERT_COLORS[expert]
            ax.plot(res.x, np.median(L, 1), **curve_style(expert),
                    label=f"{EXPERT_LABELS[expert]}: {s.label()}, {_fail_text(res)}")
            ax.fill_between(res.x, np.quantile(L, 0.25, 1), np.quantile(L, 0.75, 1),
                            color=colour, alpha=0.12, linewidth=0)
            xs = np.array(s.x)
            ax.plot(xs, np.exp(s.intercept) * xs ** s.slope, color="0.3", lw=0.8, ls=":")
        if metric == "worst_overfitted":
            _reference_lines(ax, {e: results[(gate, e, float(spread))] for e in experts}, metric)
        ax.axvline(res.config.slope_range()[0], color="0.6", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{GATE_LABELS[gate]}, split init (spread {spread})")
        ax.set_xlabel("effective sample size n / ν")
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel(f"{style['label']} (median, IQR band)")
    fig.tight_layout()
    return fig, axes


def _slope_range_x(res) -> np.ndarray:
    """The grid points of a sweep inside its slope range."""
    lo = res.config.slope_range()[0] or float(res.x.min())
    return res.x[res.x >= lo * (1 - 1e-9)]


def _last_median(res, metric: str) -> float:
    """Median of ``metric`` at the largest ``n / nu`` (a failed fit counts as ``inf``)."""
    L = res.losses(metric)[-1]
    return float(np.median(np.where(np.isfinite(L), L, np.inf)))


def _reference_lines(ax, by_expert: dict, metric: str) -> None:
    """Reference slopes over the slope range of the sweeps in ``by_expert`` (``{expert:
    result}``): theory's slope of ``metric`` (:data:`REFERENCE_SLOPES`) through twice the
    smallest median at the largest ``n / nu``, and ``0`` through twice the linear experts'
    median there if they are drawn (for ``worst_overfitted``)."""
    x = _slope_range_x(next(iter(by_expert.values())))
    last = {e: _last_median(r, metric) for e, r in by_expert.items()}
    reference_line(ax, x, REFERENCE_SLOPES[metric], (x[-1], 2 * min(last.values())))
    if metric == "worst_overfitted" and "linear" in last:
        reference_line(ax, x, 0.0, (x[-1], 2 * last["linear"]), what="no convergence")


def small_multiples(results: dict, *, metrics=TABLE_METRICS):
    """Rows = (gate, spread), columns = expert: :func:`gated_hmoe.viz.rates.rate_figure` of
    every cached sweep (the static counterpart of :func:`explorer`), with the reference
    slopes ``-1/4`` (over-fitted atoms) and ``-1/2`` (``D_1``, identifiable part) of the
    theory as grey dash-dot lines over the slope range."""
    rows = sorted({(k[0], k[2]) for k in results}, key=lambda r: (GATES.index(r[0]), r[1]))
    cols = _present(results, 1, EXPERTS)
    fig, axes = new_figure(len(cols), len(rows), width=4.2 * len(cols),
                           height=3.4 * len(rows), sharex=True, squeeze=False)
    for i, (gate, spread) in enumerate(rows):
        for j, expert in enumerate(cols):
            ax = axes[i, j]
            res = results.get((gate, expert, spread))
            if res is None:
                ax.set_visible(False)
                continue
            rate_figure(res, metrics=list(metrics), ax=ax)
            x = _slope_range_x(res)
            for slope in sorted({REFERENCE_SLOPES[m] for m in metrics if m in REFERENCE_SLOPES}):
                low = min(_last_median(res, m) for m in metrics
                          if REFERENCE_SLOPES.get(m) == slope)
                reference_line(ax, x, slope, (x[-1], low / 3))
            ax.set_title(f"{GATE_LABELS[gate]}, {EXPERT_LABELS[expert]}, s = {spread}\n"
                         f"{_fail_text(res)}", fontsize=9)
            ax.legend(loc="lower left", fontsize=MIN_LEGEND_POINTS)
            if i < len(rows) - 1:
                ax.set_xlabel("")
            ax.set_ylabel("")
    fig.supylabel("parameter loss (median over replicates; see legends)", fontsize=10)
    fig.tight_layout()
    return fig, axes


def explorer(results: dict, *, metrics=TABLE_METRICS, live_fit=None):
    """Explorer over the cached sweeps: gate class, expert class and spread redraw the
    log-log rate plot; with ``live_fit`` (:func:`gated_hmoe.experiments.e1_rates.live_fit`)
    a button runs a small live fit with the chosen gate (``k = 3``, split start)."""
    if not results:
        raise ValueError("results must hold at least one sweep (see run_grid)")
    gates, experts = _present(results, 0, GATES), _present(results, 1, EXPERTS)
    spreads = sorted({k[2] for k in results})

    def draw(gate, expert, spread):
        res = results.get((gate, expert, float(spread)))
        if res is None:
            return "no cached sweep for this combination"
        fig, ax = rate_figure(res, metrics=list(metrics))
        ax.set_title(f"{GATE_LABELS[gate]}, {EXPERT_LABELS[expert]} experts, "
                     f"spread {spread} ({_fail_text(res)})")
        return fig

    def live(gate, expert, spread, n, noise):
        return live_fit_view(live_fit(expert=expert, k=3, n=n, noise=noise, spread=float(spread),
                                      gate=gate))

    return ex.explorer(
        {"gate": [(GATE_LABELS[g], g) for g in gates],
         "expert": [(EXPERT_LABELS[e], e) for e in experts], "spread": spreads},
        draw, live=None if live_fit is None else live,
        live_controls={"n": [50, 100, 200, 300, 500, 1000],
                       "noise": [1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2]})


__all__ = ["EXPERT_STYLES", "GATE_DRAW", "REFERENCE_SLOPES", "contrast_figure", "curve_style",
           "explorer", "modulus_figure", "reference_line", "small_multiples"]
