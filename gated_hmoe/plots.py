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


#: Marker and line style per rate metric (colour = expert class).
RATE_STYLES: dict[str, dict] = {
    "d1": {"marker": "o", "linestyle": "-", "label": "$D_1$"},
    "d2": {"marker": "D", "linestyle": ":", "label": "$D_{2,1}$"},
    "worst_singleton": {"marker": "s", "linestyle": "--", "label": "singleton atoms (worst)"},
    "worst_overfitted": {"marker": "^", "linestyle": "-.", "label": "over-fitted atoms (worst)"},
    "V": {"marker": "v", "linestyle": (0, (1, 1)), "label": "identifiable part $V$"},
}


def rate_figure(result, *, metrics=None, ax=None):
    """Log-log medians (with interquartile band) of a rate sweep against ``n / nu``.

    ``result``: a :class:`gated_hmoe.experiments.SweepResult`. The legend states each
    fitted slope with its bootstrap 95% interval; the dotted lines are the fitted laws over
    the slope range. Returns ``(fig, ax)``.
    """
    import numpy as np

    cfg = result.config
    if ax is None:
        fig, ax = new_figure()
    else:
        fig = ax.figure
    colour = EXPERT_COLORS.get(cfg.expert, "k")
    x = result.x
    for name in (metrics or list(result.slopes)):
        if name not in result.slopes:
            continue
        s = result.slopes[name]
        style = RATE_STYLES.get(name, {"marker": "o", "linestyle": "-", "label": name})
        L = result.losses(name)
        L = np.where(np.isfinite(L), L, np.inf)
        med = np.median(L, axis=1)
        q1, q3 = np.quantile(L, 0.25, axis=1), np.quantile(L, 0.75, axis=1)
        ax.plot(x, med, color=colour, marker=style["marker"], linestyle=style["linestyle"],
                label=f"{style['label']}: {s.label()}")
        ax.fill_between(x, q1, q3, color=colour, alpha=0.12, linewidth=0)
        xs = np.array(s.x)
        ax.plot(xs, np.exp(s.intercept) * xs ** s.slope, color="0.3", linewidth=0.8,
                linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    what = "noise sweep, n = %d" % cfg.n if cfg.sweep == "noise" else "n sweep, ν = %g" % cfg.noise
    ax.set_title(f"{cfg.expert} experts, k* = {cfg.k_true}, k = {cfg.k_fit} ({what})")
    ax.set_xlabel("effective sample size n / ν")
    ax.set_ylabel("loss (median over replicates)")
    ax.legend(loc="best")
    return fig, ax


def hmoe_levels(terms, *, query: int = 0, output: int = 0, title: str | None = None):
    """Four panels for one entry ``O[query, output]`` of an attention layer as a three-level HMoE.

    ``terms`` is a :class:`gated_hmoe.hmoe.HMoETerms`. Panels: level-1 weight per head,
    level-2 router ``pi^h_{query, j}`` per head and key token, level-3 weight per head and
    value channel, and the leaf experts ``E_hjl`` per (head, channel) and key token.
    """
    import numpy as np

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
    ax.set(title=title, xlabel="position along the line t (input units)", ylabel=ylabel)
    ax.legend()
    return fig, ax
