"""Figures of the rate experiments (E1, and E3's sweeps): log-log rates, the modulus, the valley.

Every function takes results (:class:`gated_hmoe.experiments.e1_rates.SweepResult` and the
chapter's dictionaries of them, curves already computed) and returns matplotlib objects;
nothing here starts a computation. The "Explore" widget is :func:`rate_explorer`.
"""

from __future__ import annotations

import math

import numpy as np

from gated_hmoe.estimation import rates
from gated_hmoe.models.moe import EXPERTS
from gated_hmoe.viz import explorer as ex
from gated_hmoe.viz.style import EXPERT_COLORS, new_figure

#: Metrics drawn for each specification (exact fits; over-specified fits).
EXACT_METRICS: tuple[str, ...] = ("d1", "worst_singleton")
OVER_METRICS: tuple[str, ...] = ("d1", "worst_overfitted", "worst_singleton", "V")

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

    ``result``: a :class:`gated_hmoe.experiments.e1_rates.SweepResult`. The legend states each
    fitted slope with its bootstrap 95% interval; the dotted lines are the fitted laws over
    the slope range (a metric without a slope, ``None``, is drawn with "no slope").
    Returns ``(fig, ax)``.
    """
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
                label=f"{style['label']}: " + ("no slope" if s is None else s.label()))
        ax.fill_between(x, q1, q3, color=colour, alpha=0.12, linewidth=0)
        if s is None:                   # fewer than 2 grid points in the slope range
            continue
        xs = np.array(s.x)
        ax.plot(xs, np.exp(s.intercept) * xs ** s.slope, color="0.3", linewidth=0.8,
                linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    what = "noise sweep, n = %d" % cfg.n if cfg.sweep == "noise" else "n sweep, ν = %g" % cfg.noise
    ax.set_title(f"{cfg.expert} experts, k* = {cfg.k_true}, k = {cfg.k_fit} ({what})")
    ax.set_xlabel("effective sample size n / ν")
    ax.set_ylabel("parameter loss (median over replicates; see legend)")
    ax.legend(loc="best")
    return fig, ax


def plot_valley_profiles(profiles: dict[str, dict], *, floor: float = 1e-32):
    """One panel per class: population loss along (solid) and across (dashed) the valley."""
    fig, axes = new_figure(len(profiles), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (expert, prof) in zip(axes, profiles.items()):
        c = EXPERT_COLORS[expert]
        for name, ls in (("along", "-"), ("across", "--")):
            v = prof[name]
            pos = v > 1e-28
            tag = (f"slope {rates.ols_slope(np.log(prof['t'][pos]), np.log(v[pos]))[0]:.1f}"
                   if pos.all() else "0 (round-off)")
            ax.plot(prof["t"], np.maximum(v, floor), ls, marker="o", color=c,
                    label=f"{name} the valley: {tag}")
        ax.set(xscale="log", yscale="log", title=f"{expert} experts",
               xlabel="step or shift γ (parameter units)")
        ax.legend(loc="center right")
    axes[0].set_ylabel(r"$\|f_G - f_{G^*}\|^2$ (drawn at $10^{-32}$ if below)")
    fig.tight_layout()
    return fig, axes


def plot_modulus(curves, *, floor: float = 1e-32):
    """Log-log ``m(delta)`` per class with the fitted exponent in the legend."""
    fig, ax = new_figure()
    for cv in curves:
        tag = ("0 to machine precision" if not np.isfinite(cv.exponent)
               else f"exponent {cv.exponent:.2f}, $C_{{\\mathrm{{m}}}}$ = {cv.coef:.1e}")
        ax.plot(cv.deltas, np.maximum(cv.m, floor), "o-", color=EXPERT_COLORS[cv.expert],
                label=f"{cv.expert}: {tag}")
    d = curves[0].deltas
    ax.set(xscale="log", yscale="log", xlabel=r"offset $\delta$ of the over-fitted pair",
           ylabel=r"$m(\delta)$ (drawn at $10^{-32}$ if below)",
           title=r"Smallest population error of a split at offset $\delta$")
    ax.plot(d, 1e-7 * (d / d[-1]) ** 4 * d[-1] ** 4, color="0.4", lw=0.8, ls=":",
            label=r"reference $\propto \delta^4$")
    ax.legend(loc="center right")
    return fig, ax


def _annotate_failures(ax, result) -> None:
    f, total = result.failure_count()
    leg = ax.get_legend()
    title = f"not converged: {f} of {total} fits"
    if leg is not None:
        leg.set_title(title, prop={"size": 7})
    else:
        ax.text(0.02, 0.02, title, transform=ax.transAxes, fontsize=7)


def rate_panel(result, *, metrics=None, ax=None, title=None):
    """:func:`rate_figure` plus the failure count in the legend title."""
    if metrics is None:
        metrics = EXACT_METRICS if result.config.k_fit == result.config.k_true else OVER_METRICS
    fig, ax = rate_figure(result, metrics=list(metrics), ax=ax)
    _annotate_failures(ax, result)
    if title is not None:
        ax.set_title(title)
    return fig, ax


def sweep_grid(results: dict, keys, titles, *, metrics=None, ncols: int = 3,
               width: float = 15.0, row_height: float = 4.2):
    """Small multiples: one :func:`rate_panel` per key, in a grid with ``ncols`` columns."""
    keys = list(keys)
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = new_figure(ncols, nrows, width=width, height=row_height * nrows,
                                 squeeze=False)
    flat = axes.ravel()
    for ax, key, title in zip(flat, keys, titles):
        rate_panel(results[key], metrics=metrics, ax=ax, title=title)
        ax.legend(loc="best", fontsize=6.5,
                  title=ax.get_legend().get_title().get_text(), title_fontsize=6.5)
    for ax in flat[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig, axes


def small_multiples(n_results: dict, noise_results: dict):
    """The Explore section's static figure: every cached sweep of the chapter, one panel each."""
    keys = [("n", k) for k in n_results] + [("noise", k) for k in noise_results]
    merged = {("n", k): v for k, v in n_results.items()}
    merged.update({("noise", k): v for k, v in noise_results.items()})
    titles = []
    for sweep, key in keys:
        if sweep == "n":
            titles.append(f"n sweep: {key[0]}, k = {key[1]}")
        else:
            titles.append(f"noise sweep: {key[0]}, spread {key[1]}")
    return sweep_grid(merged, keys, titles, ncols=4, width=18.0, row_height=3.9)


def plot_live_fit(out: dict):
    """Data, true and fitted regression functions of a live fit (first replicate;
    :func:`gated_hmoe.experiments.e1_rates.live_fit`)."""
    fig, ax = new_figure()
    c = EXPERT_COLORS[out["expert"]]
    ax.plot(out["x"], out["y"], ".", color="0.6", ms=2, label="data (replicate 1)")
    ax.plot(out["grid"], out["f_true"], color="k", lw=2, label="truth $f_{G^*}$")
    ax.plot(out["grid"], out["f_fit"], "--", color=c, label="least-squares fit")
    ax.set(xlabel="input x", ylabel="response y", title=f"live fit: {out['expert']} experts")
    ax.legend()
    return fig, ax


def live_fit_view(out: dict) -> tuple:
    """What the explorers show after a live fit: the figure and one line of losses."""
    fig, _ = plot_live_fit(out)
    L = out["losses"]
    txt = ", ".join(f"{q['d1']:.2e}" for q in L)
    worst = ", ".join(f"{q['worst_overfitted']:.2e}" for q in L)
    return fig, (f"D1 per replicate: {txt}; worst over-fitted atom error: {worst}; "
                 f"not converged: {int(np.sum(out['failed']))} of {len(L)}")


def rate_explorer(n_results: dict, noise_results: dict, *, live_fit=None):
    """Explorer over the chapter's cached sweeps: expert class, specification, initial
    spread and sweep type redraw the log-log plot; with ``live_fit`` (the experiment's
    :func:`~gated_hmoe.experiments.e1_rates.live_fit`) a button runs a small live fit."""
    present = {k[0] for k in n_results} | {k[0] for k in noise_results}
    experts = [e for e in EXPERTS if e in present] or list(EXPERTS)

    def draw(expert, fit, spread, sweep):
        if sweep == "n":
            res = n_results.get((expert, fit))
            note = "" if spread == 0.1 else "n sweep: spread 0.1 only"
        else:
            res = noise_results.get((expert, spread))
            note = "" if fit == 3 else "noise sweep: over-specified only"
        if res is None:
            return "no cached sweep for this choice" + (f" ({note})" if note else "")
        fig, _ = rate_panel(res)
        return [fig, note] if note else fig

    def live(expert, fit, spread, sweep, n, noise):
        return live_fit_view(live_fit(expert=expert, k=fit, n=n, noise=noise, spread=spread))

    return ex.explorer(
        {"expert": experts, "fit": [("exact (k = 2)", 2), ("over-specified (k = 3)", 3)],
         "spread": [0.1, 0.3], "sweep": [("noise sweep", "noise"), ("n sweep", "n")]},
        draw, live=None if live_fit is None else live,
        live_controls={"n": [50, 100, 200, 300, 500, 1000],
                       "noise": [1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2]},
        value=_first_cached(n_results, noise_results, experts))


def _first_cached(n_results: dict, noise_results: dict, experts: list) -> dict:
    """The explorer's opening selection: a choice that has a cached sweep (the noise sweep of
    the first expert class that has one, else the n-sweep's), never an empty panel."""
    for e in experts:
        spreads = [s for (ex_, s) in noise_results if ex_ == e]
        if spreads:
            return {"expert": e, "fit": 3, "spread": min(spreads), "sweep": "noise"}
    for e in experts:
        fits = [f for (ex_, f) in n_results if ex_ == e]
        if fits:
            return {"expert": e, "fit": max(fits), "spread": 0.1, "sweep": "n"}
    return {"expert": experts[0], "fit": 3}


__all__ = ["EXACT_METRICS", "OVER_METRICS", "RATE_STYLES", "live_fit_view", "plot_live_fit",
           "plot_modulus", "plot_valley_profiles", "rate_explorer", "rate_figure", "rate_panel",
           "small_multiples", "sweep_grid"]
