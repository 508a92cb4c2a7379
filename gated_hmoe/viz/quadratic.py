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


def _present(results: dict, position: int, order: tuple[str, ...]) -> list[str]:
    """The classes at ``position`` of the keys of ``results``, in the book's order."""
    return [c for c in order if any(k[position] == c for k in results)]


def modulus_figure(deltas, table: dict, *, ax=None):
    """Log-log ``m(delta)`` per (gate, expert); ``table[(gate, expert)] = m (len(deltas),)``.

    Colour = expert class, solid = monomial gate, dashed = polynomial gate; the legend gives
    the fitted exponent. Values below ``1e-28`` (round-off; linear experts) are drawn at
    ``1e-28``.
    """
    if ax is None:
        fig, ax = new_figure()
    else:
        fig = ax.figure
    deltas = np.asarray(deltas, float)
    floor = 1e-28
    for (gate, expert), m in table.items():
        m = np.asarray(m, float)
        slope = rates.loglog_slope(deltas, m)[0] if np.all(m > floor) else float("nan")
        what = f"exponent {slope:.2f}" if np.isfinite(slope) else "0 (round-off)"
        ax.plot(deltas, np.maximum(m, floor), color=EXPERT_COLORS[expert],
                linestyle="-" if gate == "quadratic-monomial" else "--",
                marker="o" if gate == "quadratic-monomial" else "s",
                label=f"{GATE_LABELS[gate]}, {EXPERT_LABELS[expert]}: {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("half-separation δ of the over-fitted pair (parameter units)")
    ax.set_ylabel("m(δ) = min ‖f_G − f_G*‖² (drawn at 1e-28 if below)")
    ax.set_title("Modulus m(δ): how visible an over-fitted pair at offset δ is")
    ax.legend(loc="center right", fontsize=7)
    return fig, ax


def _fail_text(res) -> str:
    return "failures {}/{}".format(*res.failure_count())


def contrast_figure(results: dict, *, spread: float = 0.1, metric: str = "worst_overfitted",
                    gates=None, experts=None):
    """One panel per gate: the median ``metric`` (interquartile band) against ``n / nu`` for
    every expert class at ``spread``; legend = fitted slope [95% CI] and failures; the dashed
    line marks the start of the slope range. ``results[(gate, expert, spread)]``; gates and
    experts default to those present."""
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
            ax.plot(res.x, np.median(L, 1), color=colour, marker=style["marker"],
                    label=f"{EXPERT_LABELS[expert]}: {s.label()}, {_fail_text(res)}")
            ax.fill_between(res.x, np.quantile(L, 0.25, 1), np.quantile(L, 0.75, 1),
                            color=colour, alpha=0.12, linewidth=0)
            xs = np.array(s.x)
            ax.plot(xs, np.exp(s.intercept) * xs ** s.slope, color="0.3", lw=0.8, ls=":")
        ax.axvline(res.config.slope_range()[0], color="0.6", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{GATE_LABELS[gate]}, split init (spread {spread})")
        ax.set_xlabel("effective sample size n / ν")
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel(f"{style['label']} (median, IQR band)")
    fig.tight_layout()
    return fig, axes


def small_multiples(results: dict, *, metrics=TABLE_METRICS):
    """Rows = (gate, spread), columns = expert: :func:`gated_hmoe.viz.rates.rate_figure` of
    every cached sweep (the static counterpart of :func:`explorer`)."""
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


__all__ = ["contrast_figure", "explorer", "modulus_figure", "small_multiples"]
