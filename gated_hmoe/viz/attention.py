"""Figures of attention as an HMoE (chapters 01-02) and of fitted attention layers (E2).

Functions take computed objects (:class:`gated_hmoe.models.hmoe.HMoETerms`, leaf values,
:class:`gated_hmoe.experiments.e2_attention.FitSweepResult`) and return matplotlib objects.
"""

from __future__ import annotations

import numpy as np

from gated_hmoe.models.heads import LEAF_CLASS, POSITIONS
from gated_hmoe.viz import explorer as ex
from gated_hmoe.viz.style import LEVEL_COLORS, SERIES_MARKERS, new_figure, position_color

#: Axis label of each E2 metric.
METRIC_LABELS: dict[str, str] = {"worst_overfitted": "worst over-fitted head error",
                                 "V": "identifiable part V"}


def hmoe_levels(terms, *, query: int = 0, output: int = 0, title: str | None = None):
    """Four panels for one entry ``O[query, output]`` of an attention layer as a three-level HMoE.

    ``terms`` is a :class:`gated_hmoe.models.hmoe.HMoETerms`. Panels: level-1 weight per head,
    level-2 router ``pi^h_{query, j}`` per head and key token, level-3 weight per head and
    value channel, and the leaf experts ``E_hjl`` per (head, channel) and key token.
    """
    g1 = np.asarray(terms.head_router)[query, :, output]              # (H,)
    pi = np.asarray(terms.token_router)[:, query, :]                  # (H, N)
    g3 = np.asarray(terms.channel_router)[:, query, :, output]        # (H, d_v)
    ex = np.asarray(terms.experts)                                    # (H, N, d_v)
    heads, n_tok = pi.shape
    d_v = g3.shape[1]
    fig, axes = new_figure(4, width=12.0, height=3.0)
    axes[0].bar(np.arange(1, heads + 1), g1, color=LEVEL_COLORS[0])
    axes[0].set(title="level 1: head weight", xlabel="head h", ylabel="weight (unitless)",
                xticks=np.arange(1, heads + 1), ylim=(0, max(1.05, float(g1.max()) * 1.05)))
    im = axes[1].imshow(pi, vmin=0, vmax=1, aspect="auto", cmap="Blues")
    axes[1].set(title=f"level 2: router $\\pi^h_{{{query + 1}j}}$", xlabel="key token j",
                ylabel="head h", xticks=range(n_tok), xticklabels=range(1, n_tok + 1),
                yticks=range(heads), yticklabels=range(1, heads + 1))
    axes[1].grid(False)
    fig.colorbar(im, ax=axes[1], fraction=0.05)
    width = 0.8 / heads
    for h in range(heads):
        axes[2].bar(np.arange(1, d_v + 1) + (h - (heads - 1) / 2) * width, g3[h], width,
                    label=f"head {h + 1}", color=LEVEL_COLORS[2], alpha=0.5 + 0.5 * h / max(heads - 1, 1))
    axes[2].axhline(0, color="black", lw=0.8)
    axes[2].set(title="level 3: channel weight", xlabel="value channel l",
                ylabel="weight (signed)", xticks=np.arange(1, d_v + 1))
    axes[2].legend()
    lim = float(np.abs(ex).max())
    im = axes[3].imshow(ex.transpose(0, 2, 1).reshape(heads * d_v, n_tok), cmap="RdBu_r",
                        vmin=-lim, vmax=lim, aspect="auto")
    axes[3].set(title="leaf experts $E_{hjl}$", xlabel="key token j", ylabel="(head, channel)",
                xticks=range(n_tok), xticklabels=range(1, n_tok + 1),
                yticks=range(heads * d_v),
                yticklabels=[f"({h + 1},{l + 1})" for h in range(heads) for l in range(d_v)])
    axes[3].grid(False)
    fig.colorbar(im, ax=axes[3], fraction=0.05)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


def curves_along_line(ts, curves: dict, *, title: str, ylabel: str, colors: dict | None = None,
                      ax=None):
    """Line plot of several labelled curves ``curves[label]: (T,)`` against ``ts: (T,)``."""
    if ax is None:
        fig, ax = new_figure()
    else:
        fig = ax.figure
    colors = colors or {}
    for label, values in curves.items():
        ax.plot(ts, values, label=label, color=colors.get(label.split(" ")[0]))
    ax.set(title=title, xlabel="position ζ along the line (input units)", ylabel=ylabel)
    ax.legend()
    return fig, ax


def sweep_axes(ax, results: dict, *, metric: str = "worst_overfitted", colors=None,
               bands=True):
    """Draw medians (interquartile band) of ``metric`` for several results on ``ax``.

    ``results``: label -> :class:`FitSweepResult`; the legend states each slope with its
    bootstrap 95% interval and the number of failed fits. Each series has its own marker
    (:data:`~gated_hmoe.viz.style.SERIES_MARKERS`). ``bands``: ``True`` (every series), or
    the labels whose interquartile band is drawn (bands of many series hide each other).
    """
    colors = colors or {}
    for i, (label, res) in enumerate(results.items()):
        L = res.losses(metric)
        L = np.where(np.isfinite(L), L, np.inf)    # a non-finite fit ranks last
        with np.errstate(invalid="ignore"):
            med = np.median(L, 1)
            q1, q3 = np.quantile(L, 0.25, 1), np.quantile(L, 0.75, 1)
        s = res.slope(metric)
        c = colors.get(label, position_color(res.config.position))
        ax.plot(res.x, med, marker=SERIES_MARKERS[i % len(SERIES_MARKERS)], color=c,
                label=f"{label}: {s.label()}, fail {res.failures()}")
        if bands is True or label in bands:
            ax.fill_between(res.x, q1, q3, color=c, alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("effective sample size n / ν")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.legend(loc="lower left")
    return ax


def fit_explorer(results: dict, *, live_fit=None):
    """Explorer over ``results[(position, spread)]`` (cached E2 sweeps): gate position,
    spread and metric redraw the log-log plot; with ``live_fit``
    (:func:`gated_hmoe.experiments.e2_attention.live_fit`) a button runs one small live fit
    (``n = 200``, 4 replicates, ``n/nu = 1e12``) and prints the Voronoi-matched errors."""
    positions = sorted({k[0] for k in results}, key=POSITIONS.index)
    spreads = sorted({k[1] for k in results})

    def draw(position, spread, metric):
        key = (position, spread)
        if key not in results:
            return f"not in the cache: run the sweep for {key}"
        fig, ax = new_figure()
        sweep_axes(ax, {f"{position} (s={spread})": results[key]}, metric=metric)
        ax.set_title(f"{position}: {LEAF_CLASS[position]} leaves")
        return fig

    def live(position, spread, metric):
        return "<br>".join(live_fit(position=position, spread=spread))

    return ex.explorer({"position": positions, "spread": spreads,
                        "metric": [(METRIC_LABELS[m], m) for m in METRIC_LABELS]},
                       draw, live=None if live_fit is None else live,
                       live_label="run one live fit")


__all__ = ["METRIC_LABELS", "curves_along_line", "fit_explorer", "hmoe_levels", "sweep_axes"]
