r"""The rate chapter's experiment set (E1): its sweeps, the modulus and valley pictures, widgets.

The chapter "Estimating experts: rates and the contrast" runs two families of
:func:`gated_hmoe.experiments.run_sweep` configurations, both cached on disk by configuration:

- :func:`n_sweep_configs` -- the sample-size sweep at noise variance ``1e-6``: exact
  (``k = k* = 2``, ``init="near"``) and over-specified (``k = 3``, ``init="split"``) fits;
- :func:`noise_sweep_configs` -- the E1 contrast protocol of SPEC §5: ``n = 1000`` fixed,
  ``nu`` log-spaced from ``1e-4`` to ``1e-14``, split initialisation with spread 0.1 / 0.3.

Also here: the modulus curve ``m(delta)`` and its fitted exponent (:func:`modulus_curve`),
the population loss along and across the exact-fit valley (:func:`valley_profile`), the
agreement of the two sweeps where they overlap (:func:`sweep_overlap`), the static
small-multiples figure (:func:`small_multiples`) and the "Explore" widget
(:func:`rate_explorer`), which redraws from the cached sweeps and runs a small live fit.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks, data, estimators, experiments, moe, plots, rates, voronoi

#: Expert classes of the chapter (the ridge classes and the linear one).
CLASSES: tuple[str, ...] = ("linear", "sigmoid", "silu")
#: Noise-sweep cells ``(expert, spread)`` of SPEC §5's table.
NOISE_CELLS: tuple[tuple[str, float], ...] = (
    ("linear", 0.1), ("linear", 0.3), ("sigmoid", 0.1), ("silu", 0.1), ("silu", 0.3))
#: Metrics drawn for each specification.
EXACT_METRICS: tuple[str, ...] = ("d1", "worst_singleton")
OVER_METRICS: tuple[str, ...] = ("d1", "worst_overfitted", "worst_singleton", "V")
#: Range of ``n / nu`` where the two sweeps overlap (SPEC §5).
OVERLAP: tuple[float, float] = (1e9, 1e11)


def n_sweep_configs(*, n_max: int = 30_000, points: int = 4, replicates: int = 8,
                    noise: float = 1e-6, seed: int = 0) -> dict[tuple[str, int], experiments.SweepConfig]:
    """Sample-size sweeps keyed ``(expert, k_fit)``: ``k_fit = 2`` (``init="near"``, spread 0.1)
    and ``k_fit = 3`` (``init="split"``, spread 0.1) for every class in :data:`CLASSES`;
    ``n`` log-spaced in ``[1000, n_max]``."""
    n_max = checks.positive_int(n_max, "n_max", minimum=1000)
    out = {}
    for expert in CLASSES:
        for k in (2, 3):
            out[(expert, k)] = experiments.SweepConfig(
                expert=expert, k_true=2, k_fit=k, sweep="n", n_min=1000, n_max=n_max,
                points=points, replicates=replicates, noise=noise, seed=seed,
                init="near" if k == 2 else "split", spread=0.1).validate()
    return out


def noise_sweep_configs(*, points: int = 9, replicates: int = 12, n: int = 1000,
                        seed: int = 0) -> dict[tuple[str, float], experiments.SweepConfig]:
    """Noise sweeps (the E1 contrast protocol) keyed ``(expert, spread)`` over :data:`NOISE_CELLS`:
    ``k* = 2``, ``k = 3``, split initialisation, ``nu`` from ``1e-4`` to ``1e-14``.

    ``points = 9`` puts grid points at ``n / nu = 10^{7 + 1.25 i}``, so the slope range
    ``[5.6e10, 1e17]`` of SPEC §5 holds its last six points.
    """
    replicates = checks.positive_int(replicates, "replicates")
    if replicates < 12:
        raise ValueError(f"replicates must be >= 12 for the contrast protocol, got {replicates}")
    return {(e, s): experiments.SweepConfig(
        expert=e, k_true=2, k_fit=3, sweep="noise", n=n, noise_min=1e-14, noise_max=1e-4,
        points=points, replicates=replicates, seed=seed, init="split", spread=s).validate()
        for e, s in NOISE_CELLS}


def run_all(configs: dict, *, cache_dir=None) -> dict:
    """:func:`~gated_hmoe.experiments.run_sweep` for every config (no progress bar)."""
    return {key: experiments.run_sweep(cfg, cache_dir=cache_dir, progress=False)
            for key, cfg in configs.items()}


def total_failures(result: experiments.SweepResult) -> tuple[int, int]:
    """``(failed fits, all fits)`` of a sweep (failures are counted, never dropped)."""
    return int(sum(result.failures())), len(result.points) * result.config.replicates


# ------------------------------------------------------------------ slope tables

def slope_rows(results: dict, metrics=("worst_overfitted", "d1", "V")) -> list[dict]:
    """One row per sweep: ``key``, and per metric ``(slope, lo, hi)`` rounded to 2 decimals."""
    rows = []
    for key, res in results.items():
        row = {"key": key, "failures": total_failures(res)}
        for m in metrics:
            s = res.slopes.get(m)
            row[m] = None if s is None else (round(s.slope, 2), round(s.ci[0], 2), round(s.ci[1], 2))
        rows.append(row)
    return rows


def format_slope(t) -> str:
    """``"-0.23 [-0.29, -0.20]"`` from a rounded ``(slope, lo, hi)`` tuple (``"-"`` if None)."""
    if t is None:
        return "-"
    return f"{t[0]:+.2f} [{t[1]:+.2f}, {t[2]:+.2f}]"


def plateau(result: experiments.SweepResult, metric: str = "worst_overfitted",
            last: int = 3) -> float:
    """Geometric mean of the medians of ``metric`` over the ``last`` grid points."""
    L = result.losses(metric)
    med = np.median(np.where(np.isfinite(L), L, np.inf), axis=1)[-last:]
    return float(np.exp(np.mean(np.log(med))))


# ------------------------------------------------------------------ the iteration budget

#: A surplus atom *fades* when its mixing weight falls below this share (the true cell's
#: weight is 0.62 at the default truth).
FADE_WEIGHT: float = 0.05


def longer_budget(configs: dict, max_iter: int) -> dict:
    """The same sweeps (data, starts, grid) with another iteration budget."""
    max_iter = checks.positive_int(max_iter, "max_iter")
    return {key: dataclasses.replace(cfg, max_iter=max_iter).validate()
            for key, cfg in configs.items()}


def budget_rows(short: dict, long: dict, *, metric: str = "worst_overfitted",
                fade: float = FADE_WEIGHT) -> list[dict]:
    """Compare the same sweeps at two iteration budgets, one row per key of ``short``.

    Each row: ``key``; ``failures`` ``(short, long, fits)``; ``main`` and ``upper``: the
    :class:`~gated_hmoe.rates.Slope` pairs ``(short, long)`` of ``metric`` over the
    configured range and over ``[UPPER_FIT_MIN, max]``; ``upper_change``: the largest
    relative change of a median over the upper range; ``fading_low``: fits ``(short,
    long)`` with an over-fitted atom below ``fade`` at the lowest grid point of the
    configured range; ``fading_upper``: the same summed over the upper range.
    """
    rows = []
    for key, a in short.items():
        b = long[key]
        if dataclasses.replace(a.config, max_iter=b.config.max_iter) != b.config:
            raise ValueError(f"short[{key!r}] and long[{key!r}] must be the same sweep, "
                             "differing only in max_iter")
        x = a.x
        lo = a.config.slope_range()[0] or float(x.min())
        low = int(np.argmax(x >= lo))
        up = x >= experiments.UPPER_FIT_MIN
        med = [np.median(r.losses(metric), axis=1) for r in (a, b)]
        wa, wb = (r.overfitted_weights() < fade for r in (a, b))
        upper = [experiments.upper_slopes({0: r}, metric=metric)[0] for r in (a, b)]
        rows.append({
            "key": key,
            "failures": (total_failures(a)[0], total_failures(b)[0], total_failures(a)[1]),
            "main": (a.slopes[metric], b.slopes[metric]),
            "upper": tuple(upper),
            "upper_change": float(np.max(np.abs(med[1][up] / med[0][up] - 1.0))),
            "fading_low": (int(wa[low].sum()), int(wb[low].sum())),
            "fading_upper": (int(wa[up].sum()), int(wb[up].sum())),
            "x_low": float(x[low]),
        })
    return rows


def format_budget_rows(rows: list[dict], budgets: tuple[int, int]) -> str:
    """:func:`budget_rows` as text, one block per sweep (slopes to 2 decimals)."""
    def lab(sl):
        return f"{sl.slope:+.2f} [{sl.ci[0]:+.2f}, {sl.ci[1]:+.2f}]"

    lines = []
    for r in rows:
        e, sp = r["key"]
        fa, fb, tot = r["failures"]
        lines += [f"{e} (s = {sp}), max_iter {budgets[0]} | {budgets[1]}:",
                  f"  not converged (of {tot})            {fa:>3d} | {fb}",
                  (f"  fading fits at n/nu = {r['x_low']:.1e}      {r['fading_low'][0]:>3d} | "
                   f"{r['fading_low'][1]}"),
                  (f"  fading fits, upper range           {r['fading_upper'][0]:>3d} | "
                   f"{r['fading_upper'][1]}"),
                  f"  slope, main range    {lab(r['main'][0])} | {lab(r['main'][1])}",
                  f"  slope, upper range   {lab(r['upper'][0])} | {lab(r['upper'][1])}",
                  f"  upper-range medians: largest change {r['upper_change']:.1%}"]
    return "\n".join(lines)


# ------------------------------------------------------------------ the modulus and the valley

@dataclasses.dataclass(frozen=True)
class ModulusCurve:
    """``m(delta)`` for one expert class; ``exponent`` the log-log slope (``nan`` if some
    ``m`` is not positive), ``coef`` the fitted ``C`` of ``m ~ C delta^exponent``."""

    expert: str
    deltas: np.ndarray
    m: np.ndarray
    exponent: float
    coef: float


def modulus_curve(expert: str, deltas, *, starts: int = 2, quad_points: int = 200,
                  seed: int = 0) -> ModulusCurve:
    """``m(delta)`` of :func:`gated_hmoe.experiments.modulus_values` (default truth, linear
    gate, atom 0 split, free centre; directions: the coordinate axes and ``starts`` random
    ones) on a grid of offsets, with the fitted exponent ``m ~ C delta^exponent`` (``nan``
    for a single offset or when some ``m <= 1e-28``, zero to machine precision). Stops
    trying further directions once a value ``<= 1e-28`` is reached."""
    checks.choice(expert, "expert", CLASSES)
    deltas = checks.finite_array(deltas, "deltas", ndim=1)
    if np.any(deltas <= 0):
        raise ValueError("deltas must be positive")
    m = experiments.modulus_values(deltas, expert=expert, starts=starts, quad_points=quad_points,
                                   seed=seed, stop_below=1e-28)
    if m.size >= 2 and np.all(m > 1e-28):
        b, a = rates.ols_slope(np.log(deltas), np.log(m))
        return ModulusCurve(expert, deltas, m, float(b), float(math.exp(a)))
    return ModulusCurve(expert, deltas, m, float("nan"), float("nan"))


def _population_loss(G, G_true, expert, nodes, weights) -> float:
    f = np.asarray(moe.mean(G, nodes, expert=expert))
    f0 = np.asarray(moe.mean(G_true, nodes, expert=expert))
    return float(np.sum(weights / 2.0 * (f - f0) ** 2))


def valley_profile(expert: str, ts, *, quad_points: int = 200) -> dict[str, np.ndarray]:
    r"""Population loss ``||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` along and across the valley.

    ``along``: :func:`gated_hmoe.experiments.valley_measure` ``G_t`` (split atom 0, ``p = 1/2``,
    value offsets ``±t u/2``). ``across``: the same split with both atoms' value weights
    moved together by ``t u/2`` (the cell's mean expert leaves ``eta*``). Returns
    ``{"t", "along", "across"}``.
    """
    checks.choice(expert, "expert", moe.EXPERTS)
    ts = checks.finite_array(ts, "ts", ndim=1)
    G0 = moe.pin_last(moe.default_truth(expert))
    nodes, weights = np.polynomial.legendre.leggauss(checks.positive_int(quad_points, "quad_points"))
    nodes = nodes[:, None]
    along, across = [], []
    for t in ts:
        Gt = experiments.valley_measure(float(t), expert=expert, p=0.5)
        along.append(_population_loss(Gt, G0, expert, nodes, weights))
        P = Gt.expert.shape[1]
        shift = np.zeros_like(Gt.expert)
        shift[:2] = 0.5 * float(t) * np.ones(P) / math.sqrt(P)
        Gx = Gt._replace(expert=Gt.expert + shift)
        across.append(_population_loss(Gx, G0, expert, nodes, weights))
    return {"t": ts, "along": np.array(along), "across": np.array(across)}


def plot_valley_profiles(profiles: dict[str, dict], *, floor: float = 1e-32):
    """One panel per class: population loss along (solid) and across (dashed) the valley."""
    fig, axes = plots.new_figure(len(profiles), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (expert, prof) in zip(axes, profiles.items()):
        c = plots.EXPERT_COLORS[expert]
        for name, ls in (("along", "-"), ("across", "--")):
            v = prof[name]
            pos = v > 1e-28
            tag = (f"slope {rates.ols_slope(np.log(prof['t'][pos]), np.log(v[pos]))[0]:.1f}"
                   if pos.all() else "0 (round-off)")
            ax.plot(prof["t"], np.maximum(v, floor), ls, marker="o", color=c,
                    label=f"{name} the valley: {tag}")
        ax.set(xscale="log", yscale="log", title=f"{expert} experts",
               xlabel="distance t along / across (parameter units)")
        ax.legend(loc="center right")
    axes[0].set_ylabel(r"$\|f_G - f_{G^*}\|^2$ (drawn at $10^{-32}$ if below)")
    fig.tight_layout()
    return fig, axes


def plot_modulus(curves: list[ModulusCurve], *, floor: float = 1e-32):
    """Log-log ``m(delta)`` per class with the fitted exponent in the legend."""
    fig, ax = plots.new_figure()
    for cv in curves:
        tag = ("0 to machine precision" if not np.isfinite(cv.exponent)
               else f"exponent {cv.exponent:.2f}, C = {cv.coef:.1e}")
        ax.plot(cv.deltas, np.maximum(cv.m, floor), "o-", color=plots.EXPERT_COLORS[cv.expert],
                label=f"{cv.expert}: {tag}")
    d = curves[0].deltas
    ax.set(xscale="log", yscale="log", xlabel=r"offset $\delta$ of the over-fitted pair",
           ylabel=r"$m(\delta)$ (drawn at $10^{-32}$ if below)",
           title=r"Smallest population error of a split at offset $\delta$")
    ax.plot(d, 1e-7 * (d / d[-1]) ** 4 * d[-1] ** 4, color="0.4", lw=0.8, ls=":",
            label=r"reference $\propto \delta^4$")
    ax.legend(loc="center right")
    return fig, ax


# ------------------------------------------------------------------ overlap of the two sweeps

def sweep_overlap(n_result: experiments.SweepResult, noise_result: experiments.SweepResult,
                  metric: str, *, window: tuple[float, float] = OVERLAP) -> dict:
    """Compare medians of ``metric`` where both sweeps have points with ``n/nu`` in ``window``.

    The noise sweep's log-median is interpolated (log-log) at the n-sweep's points in the
    window. Returns ``x``, ``n_sweep``, ``noise_sweep`` medians and ``max_log10_ratio``.
    """
    def med(res):
        L = res.losses(metric)
        return np.median(np.where(np.isfinite(L), L, np.inf), axis=1)

    xn, mn = n_result.x, med(n_result)
    xv, mv = noise_result.x, med(noise_result)
    keep = (xn >= window[0]) & (xn <= window[1]) & (xn >= xv.min()) & (xn <= xv.max())
    if not keep.any():
        raise ValueError("the two sweeps have no common points in the overlap window")
    interp = np.exp(np.interp(np.log(xn[keep]), np.log(xv), np.log(mv)))
    ratio = np.abs(np.log10(mn[keep] / interp))
    return {"x": xn[keep], "n_sweep": mn[keep], "noise_sweep": interp,
            "max_log10_ratio": float(ratio.max())}


# ------------------------------------------------------------------ figures

def _annotate_failures(ax, result) -> None:
    f, total = total_failures(result)
    leg = ax.get_legend()
    title = f"not converged: {f} of {total} fits"
    if leg is not None:
        leg.set_title(title, prop={"size": 7})
    else:
        ax.text(0.02, 0.02, title, transform=ax.transAxes, fontsize=7)


def rate_panel(result: experiments.SweepResult, *, metrics=None, ax=None, title=None):
    """:func:`gated_hmoe.plots.rate_figure` plus the failure count in the legend title."""
    if metrics is None:
        metrics = EXACT_METRICS if result.config.k_fit == result.config.k_true else OVER_METRICS
    fig, ax = plots.rate_figure(result, metrics=list(metrics), ax=ax)
    _annotate_failures(ax, result)
    if title is not None:
        ax.set_title(title)
    return fig, ax


def sweep_grid(results: dict, keys, titles, *, metrics=None, ncols: int = 3,
               width: float = 15.0, row_height: float = 4.2):
    """Small multiples: one :func:`rate_panel` per key, in a grid with ``ncols`` columns."""
    keys = list(keys)
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plots.new_figure(ncols, nrows, width=width, height=row_height * nrows,
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


# ------------------------------------------------------------------ live fit

def live_fit(*, expert: str, k: int, n: int, noise: float, spread: float, replicates: int = 4,
             seed: int = 0, gate: str = "linear") -> dict:
    """A small live least-squares fit (``n <= 1000``) from the chapter's declared starts.

    ``k = 2``: ``init="near"``; ``k = 3``: ``init="split"``; the default truth of ``gate``
    (:func:`gated_hmoe.moe.default_truth`). Returns the fitted measures, the losses per
    replicate and the data of the first replicate.
    """
    checks.choice(expert, "expert", CLASSES)
    checks.choice(gate, "gate", moe.GATES)
    k = checks.positive_int(k, "k")
    if k not in (2, 3):
        raise ValueError(f"k must be 2 or 3, got {k}")
    n = checks.positive_int(n, "n")
    if n > 1000:
        raise ValueError(f"n must be <= 1000 for a live fit, got {n}")
    noise = checks.real(noise, "noise", positive=True)
    G = moe.pin_last(moe.default_truth(expert, gate=gate))
    spec = estimators.make_spec(expert=expert, gate=gate, k=k, D=1)
    key = jax.random.key(seed)
    kx, ki = jax.random.split(key)
    keys = jax.random.split(kx, replicates)
    x, eps = jax.vmap(lambda kk: data.standard_draws(kk, n=n, D=1))(keys)
    Gj = jax.tree.map(jnp.asarray, G)
    y = jax.vmap(lambda xx: moe.mean_unchecked(Gj, xx, expert, gate))(x) + math.sqrt(noise) * eps
    init = estimators.InitConfig("near" if k == 2 else "split", spread)
    theta0 = estimators.initial_thetas(ki, G, spec, init, replicates)
    res = estimators.fit(np.asarray(x), np.asarray(y), theta0, spec=spec)
    measures = [res.measure(r) for r in range(replicates)]
    losses = [voronoi.losses(m, G) for m in measures]
    return {"x": np.asarray(x[0, :, 0]), "y": np.asarray(y[0]), "measures": measures,
            "losses": losses, "failed": res.failed, "truth": G, "expert": expert, "gate": gate}


def plot_live_fit(out: dict):
    """Data, true and fitted regression functions of a :func:`live_fit` (first replicate)."""
    fig, ax = plots.new_figure()
    grid = np.linspace(-1, 1, 300)[:, None]
    c = plots.EXPERT_COLORS[out["expert"]]
    ax.plot(out["x"], out["y"], ".", color="0.6", ms=2, label="data (replicate 1)")
    gate = out["gate"]
    ax.plot(grid[:, 0], np.asarray(moe.mean(out["truth"], grid, expert=out["expert"], gate=gate)),
            color="k", lw=2, label="truth $f_{G^*}$")
    ax.plot(grid[:, 0], np.asarray(moe.mean(out["measures"][0], grid, expert=out["expert"],
                                            gate=gate)),
            "--", color=c, label="least-squares fit")
    ax.set(xlabel="x", ylabel="y", title=f"live fit: {out['expert']} experts")
    ax.legend()
    return fig, ax


# ------------------------------------------------------------------ the widget

def rate_explorer(n_results: dict, noise_results: dict):
    """ipywidgets: expert class, specification, initial spread and sweep type redraw the
    log-log plot from the cached sweeps; a button runs a small :func:`live_fit`."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    expert = widgets.Dropdown(options=list(CLASSES), value="silu", description="expert")
    spec = widgets.Dropdown(options=[("exact (k = 2)", 2), ("over-specified (k = 3)", 3)],
                            value=3, description="fit")
    spread = widgets.Dropdown(options=[0.1, 0.3], value=0.1, description="spread")
    sweep = widgets.ToggleButtons(options=[("n sweep", "n"), ("noise sweep", "noise")],
                                  value="noise", description="sweep")
    n_live = widgets.IntSlider(value=300, min=50, max=1000, step=50, description="live n")
    nu_live = widgets.FloatLogSlider(value=1e-6, base=10, min=-12, max=-2, description="live ν")
    go = widgets.Button(description="run live fit")
    out = widgets.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            if sweep.value == "n":
                res = n_results.get((expert.value, spec.value))
                note = "" if spread.value == 0.1 else " (n sweep: spread 0.1 only)"
            else:
                res = noise_results.get((expert.value, spread.value))
                note = "" if spec.value == 3 else " (noise sweep: over-specified only)"
            if res is None:
                display(widgets.HTML(f"no cached sweep for this choice{note}"))
                return
            rate_panel(res)
            plt.show()
            if note:
                display(widgets.HTML(note))

    def live(*_):
        with out:
            out.clear_output(wait=True)
            r = live_fit(expert=expert.value, k=spec.value, n=n_live.value, noise=nu_live.value,
                         spread=spread.value)
            plot_live_fit(r)
            plt.show()
            L = r["losses"]
            txt = ", ".join(f"{l['d1']:.2e}" for l in L)
            display(widgets.HTML(f"D1 per replicate: {txt}; not converged: "
                                 f"{int(np.sum(r['failed']))} of {len(L)}"))

    for w in (expert, spec, spread, sweep):
        w.observe(redraw, names="value")
    go.on_click(live)
    redraw()
    box = widgets.VBox([widgets.HBox([expert, spec, spread]), sweep,
                        widgets.HBox([n_live, nu_live, go]), out])
    box.live_button = go            # for tests and scripted use: box.live_button.click()
    return box


__all__ = [
    "CLASSES",
    "FADE_WEIGHT",
    "NOISE_CELLS",
    "ModulusCurve",
    "budget_rows",
    "format_budget_rows",
    "format_slope",
    "longer_budget",
    "live_fit",
    "modulus_curve",
    "n_sweep_configs",
    "noise_sweep_configs",
    "plateau",
    "plot_live_fit",
    "plot_modulus",
    "plot_valley_profiles",
    "rate_explorer",
    "rate_panel",
    "run_all",
    "slope_rows",
    "small_multiples",
    "sweep_grid",
    "sweep_overlap",
    "total_failures",
    "valley_profile",
]
