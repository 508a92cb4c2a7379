"""Figures of the profile confidence sets: excess profiles, radius vs n, sample complexity.

Functions take results (:class:`gated_hmoe.experiments.e1_profile.ProfileSweep`, keyed by a
label) and return matplotlib objects; nothing here fits anything.
"""

from __future__ import annotations

import numpy as np

from gated_hmoe.viz.style import EXPERT_COLORS, SERIES_COLORS, SERIES_MARKERS, new_figure

#: Markers of the radius status: interpolated (filled), censored at the grid's end (hollow).
STATUS_MARKERS = {"interpolated": "o", "censored": "^", "below": "v"}


def _colour(sweep) -> str:
    return EXPERT_COLORS.get(sweep.config.expert, "0.3")


def _quartiles(values):
    """Median and interquartile range over replicates (last axis) of ``values (points, R)``,
    as order statistics, not interpolation: undetermined (non-finite) values rank last."""
    v = np.where(np.isfinite(values), values, np.inf)
    return (np.median(v, 1), np.quantile(v, 0.25, 1, method="lower"),
            np.quantile(v, 0.75, 1, method="higher"))


def excess_axes(ax, sweep, point: int = -1, *, colour=None):
    """``Delta L_n(delta) / nu`` against ``delta`` for every replicate at one grid point,
    with the threshold ``c`` (dashed); uncertified offsets are left out of the curves."""
    d = sweep.config.deltas()
    e = sweep.excess()[point]
    p = sweep.points[point]
    colour = colour or _colour(sweep)
    for i, row in enumerate(e):
        ax.plot(d, np.maximum(row, 1e-3), "-", color=colour, alpha=0.45, lw=1,
                label="replicates" if i == 0 else None)
    if not np.isfinite(e).any():
        ax.text(0.5, 0.5, "no certified constrained fit", transform=ax.transAxes, ha="center")
        ax.set_xlim(d[0], d[-1])        # no curve to set the (log) range
    ax.axhline(sweep.config.c, color="0.2", ls="--", lw=1, label=f"threshold c = {sweep.config.c:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="offset δ of the over-fitted pair",
           ylabel="profile excess ΔL_n(δ) / ν (drawn at 1e-3 if below)",
           title=f"{getattr(sweep.config, 'position', sweep.config.expert)}: n = {p['n']}, "
                 f"ν = {p['noise']:.0e}")
    ax.legend(loc="upper left")
    return ax


def radius_axes(ax, sweeps: dict, *, c: float | None = None, reference: float | None = -0.25,
                colours: dict | None = None, resolved=(), slopes: dict | None = None,
                predicted: dict | None = None):
    """Median radius (interquartile band) against ``n / nu`` for several sweeps
    (``label -> ProfileSweep``) at threshold ``c`` (default each sweep's own). A median
    censored at the grid's end is a lower bound: drawn as an upward arrow, nudged sideways
    per series so that equal bounds stay visible, and left out of the line and the slope.
    The legend states each slope with its bootstrap 95% interval over whole replicate curves
    and the certified share: by default the sweep's own rule
    (:meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.radius_slope`: medians inside
    the grid, at least three); ``resolved``: labels whose slope is fitted from the first
    point whose median radius is inside the grid
    (:meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.slope`); ``slopes``:
    ``label -> text`` given in place of the legend's slope (the rule of the text that states
    it). ``reference``: a theory slope drawn through the first sweep's first median inside
    the grid (dotted); ``colours``: ``label -> colour`` (default the expert class's);
    ``predicted``: ``label -> (x, radius, censored)`` a predicted radius drawn dashed,
    censored values as arrows."""
    first = None
    for i, (label, sw) in enumerate(sweeps.items()):
        r, _ = sw.radii(c)
        med, q1, q3 = _quartiles(r)
        colour = (colours or {}).get(label) or _colour(sw)
        censored = med >= sw.config.deltas()[-1]
        ok = np.isfinite(med)                  # a median that is undetermined is not drawn
        inside = ok & ~censored
        if label in (slopes or {}):
            slope = slopes[label]
        elif len(sw.points) < 2:
            slope = "no slope (one point)"
        elif label in resolved:
            slope = sw.slope(c, resolved=True).label() + " (resolved points)"
        else:
            slope = sw.radius_slope(c).label()
        certified = f"certified {sw.certified_fraction():.0%}"
        if inside.any():
            ax.plot(sw.x[inside], med[inside], "o-", color=colour,
                    label=f"{label}: {slope}; {certified}")
        ax.plot(sw.x[ok & censored] * 1.06 ** i, med[ok & censored], "^", color=colour,
                mfc="none", ms=7, label=None if inside.any() else
                f"{label}: censored at every point (no slope); {certified}")
        band = np.isfinite(q3) & inside
        ax.fill_between(sw.x[band], q1[band], q3[band], color=colour, alpha=0.15, linewidth=0)
        usable = sw.usable_points(c)
        if first is None and usable.any():
            first = (sw.x[usable], med[usable])
        if label in (predicted or {}):
            px, pr, pc = (np.asarray(v) for v in predicted[label])
            ax.plot(px, pr, "--", color=colour, lw=1.2,
                    label=f"{label}: predicted by the truth's modulus")
            ax.plot(px[pc], pr[pc], "^", color=colour, ms=8, alpha=0.6)
    if reference is not None and first is not None:
        xs, med = first
        ax.plot(xs, med[0] * (xs / xs[0]) ** reference, ":", color="0.3",
                label=f"reference slope {reference:+.2f}")
    if not any(np.isfinite(sw.median_radius(c)).any() for sw in sweeps.values()):
        ax.text(0.5, 0.5, "no median radius determined", transform=ax.transAxes, ha="center")
        ax.set_ylim(1e-3, 10.0)
        ax.set_xlim(min(sw.x.min() for sw in sweeps.values()) / 2,
                    max(sw.x.max() for sw in sweeps.values()) * 2)
    ax.plot([], [], "^", color="0.3", mfc="none",
            label="median censored at the grid's end (a lower bound)")
    ax.set(xscale="log", yscale="log", xlabel="effective sample size n / ν",
           ylabel="resolvable radius r_n (offset units)")
    ax.legend(loc="lower left")
    return ax


def max_excess_axes(ax, sweeps: dict, *, bound: float | None = None, colours: dict | None = None,
                    reference: float | None = 1.0, bound_label: str | None = None):
    """The largest excess along the grid of offsets, ``max_delta Delta L_n(delta) / nu``
    (median over replicates, interquartile band), against ``n / nu`` for several sweeps
    (``label -> ProfileSweep``); the legend states each slope with its bootstrap 95% interval
    over whole replicate curves and the certified share. ``bound``: a level drawn dashed (an
    excess of order ``nu``), named ``bound_label`` in the legend (default its value);
    ``reference``: a slope drawn dotted through the highest curve's first median (1: the
    excess grows like ``n / nu``; ``None``: none)."""
    top = None
    for i, (label, sw) in enumerate(sweeps.items()):
        med, q1, q3 = _quartiles(np.maximum(sw.max_excess(), 1e-3))
        colour = (colours or {}).get(label) or _colour(sw)
        ok = np.isfinite(med)
        ax.plot(sw.x[ok], med[ok], "-", marker=SERIES_MARKERS[i % len(SERIES_MARKERS)],
                color=colour, label=f"{label}: {sw.max_excess_slope().label()}; "
                                    f"certified {sw.certified_fraction():.0%}")
        band = np.isfinite(q3)
        ax.fill_between(sw.x[band], q1[band], q3[band], color=colour, alpha=0.15, linewidth=0)
        if ok.any() and (top is None or med[ok][0] > top[1][0]):
            top = (sw.x[ok], med[ok])
    if top is not None and reference is not None:
        xs, med = top
        ax.plot(xs, med[0] * (xs / xs[0]) ** reference, ":", color="0.3",
                label=f"reference slope {reference:+g} (excess ∝ n/ν)")
    if bound is not None:
        ax.axhline(bound, color="0.2", ls="--", lw=1,
                   label=f"{bound:.2f} ν" if bound_label is None else bound_label)
    ax.set(xscale="log", yscale="log", xlabel="effective sample size n / ν",
           ylabel="largest excess along the offsets, max_δ ΔL_n(δ) / ν")
    ax.legend(loc="upper left")
    return ax


def null_axes(ax, draws, c: float, *, df: int = 1, regular: float | None = None,
              groups: dict | None = None, xlabel: str = "excess at the true offset ΔL_n(δ_0) / ν"):
    """The empirical distribution of null draws of the excess (units of ``nu``; a step
    curve; non-finite draws -- uncertified fits -- left out and counted in the legend)
    against the chi-square law with ``df`` degrees of freedom that a regular model would
    give, with the calibrated threshold ``c`` and the regular one ``regular`` (default
    chi-square's 95% quantile) as vertical lines and the 95% level as a horizontal one.
    ``groups``: ``label -> draws`` drawn as thin curves too (e.g. one per ``n / nu``, to show
    whether the draws share one law)."""
    import scipy.stats

    def ecdf(values, **kwargs):
        v = np.asarray(values, float).ravel()
        ok = np.sort(v[np.isfinite(v)])
        if ok.size:
            ax.step(ok, np.arange(1, ok.size + 1) / ok.size, where="post", **kwargs)
        return v.size, ok

    size, ok = ecdf(draws, color="0.1", lw=1.8)
    if ok.size == 0:
        raise ValueError("draws must hold at least one finite value")
    ax.lines[-1].set_label(f"all null draws ({ok.size} certified, {size - ok.size} not)")
    for i, (label, values) in enumerate((groups or {}).items()):
        ecdf(values, color=SERIES_COLORS[i % len(SERIES_COLORS)], lw=0.9, label=label)
    regular = float(scipy.stats.chi2.ppf(0.95, df)) if regular is None else regular
    grid = np.linspace(0.0, max(ok.max(), c) * 1.1, 400)
    ax.plot(grid, scipy.stats.chi2.cdf(grid, df), "--", color="0.5",
            label=f"χ²_{df} (a regular model)")
    ax.axvline(c, color="#882255", lw=1.5, label=f"calibrated c = {c:.2f}")
    ax.axvline(regular, color="0.5", lw=1, ls=":", label=f"χ²_{df} 95% quantile {regular:.2f}")
    ax.axhline(0.95, color="0.75", lw=0.8, label="95% of the draws")
    ax.set(xlabel=xlabel, ylabel="cumulative share of draws", ylim=(0, 1.02))
    ax.legend(loc="lower right")
    return ax


def profile_panels(sweep, *, slope: str | None = None, predicted=None):
    """Two panels for one sweep: the excess profiles at the largest ``n / nu`` and the
    radius against ``n / nu`` (what the command line writes); ``slope``: the legend's slope
    text, ``predicted``: ``(x, radius, censored)`` of a predicted radius
    (:func:`radius_axes`)."""
    fig, axes = new_figure(2, width=12.0, height=4.4)
    excess_axes(axes[0], sweep, -1)
    label = getattr(sweep.config, "label", sweep.config.expert)
    radius_axes(axes[1], {label: sweep}, slopes=None if slope is None else {label: slope},
                predicted=None if predicted is None else {label: predicted})
    axes[1].set_title("resolvable radius of the over-fitted pair")
    fig.tight_layout()
    return fig, axes


def sample_complexity_axes(ax, sweeps: dict, eps, *, reference: float = -4.0,
                           c: float | None = None, effective: bool = False,
                           colours: dict | None = None):
    """``n(eps)`` against ``eps`` (log-log) per sweep (``label -> ProfileSweep``, n sweeps);
    a sweep that reaches no ``eps`` is named in the legend as "not reached at any n in
    range (n <= max)". Dotted: the ``eps^reference`` law through the first curve's first
    point. ``effective=True``: ``(n / nu)(eps)`` instead (any sweep,
    :meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.effective_sample_complexity`);
    ``c``: the radius threshold (default each sweep's own); ``colours`` as in
    :func:`radius_axes`."""
    eps = np.asarray(eps, float)
    drawn = None
    name = "n / ν" if effective else "n"
    for label, sw in sweeps.items():
        n_eps = np.array([sw.effective_sample_complexity(e, c) if effective
                          else sw.sample_complexity(e, c) for e in eps])
        colour = (colours or {}).get(label) or _colour(sw)
        top = sw.x.max() if effective else sw.n.max()
        if np.all(np.isnan(n_eps)):
            ax.plot([], [], "x", color=colour,
                    label=f"{label}: not reached at any {name} in range ({name} ≤ {top:.0e})")
            continue
        ax.plot(eps, n_eps, "o-", color=colour, label=label)
        if drawn is None:
            i = int(np.flatnonzero(np.isfinite(n_eps))[0])
            drawn = (eps[i], n_eps[i])
    if drawn is not None:
        e0, n0 = drawn
        ax.plot(eps, n0 * (eps / e0) ** reference, ":", color="0.3",
                label=f"reference ε^{reference:g}")
    ax.set(xscale="log", yscale="log", xlabel="target radius ε (offset units)",
           ylabel=f"{'effective sample size (n / ν)' if effective else 'samples n'}(ε) "
                  "with median r_n ≤ ε")
    ax.legend(loc="upper right")
    return ax


__all__ = ["STATUS_MARKERS", "excess_axes", "max_excess_axes", "null_axes", "profile_panels", "radius_axes", "sample_complexity_axes"]
