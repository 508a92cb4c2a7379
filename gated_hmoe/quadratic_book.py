r"""Quadratic gates (E3, SPEC §5): monomial vs polynomial gate, linear vs non-linear experts.

The chapter "Quadratic gates" runs the E1 contrast protocol (noise sweep at fixed ``n``,
split initialisation, float64 least squares) with the two quadratic gate classes of
:mod:`gated_hmoe.moe`,

.. math::
    z_i(x) = x^\top A_i x + \beta_{0i} \quad\text{(monomial)}, \qquad
    z_i(x) = x^\top A_i x + \beta_{1i}^\top x + \beta_{0i} \quad\text{(polynomial)},

and collects here what the chapter needs on top of :func:`gated_hmoe.experiments.run_sweep`:

- :func:`sweep_config` / :func:`run_grid`: the chapter's sweeps, one per (gate, expert,
  spread), cached by ``run_sweep`` under ``$GATED_HMOE_CACHE``;
- :func:`slope_rows`: the slope table (worst over-fitted atom error, ``D_1``, identifiable
  part ``V``) with bootstrap intervals and failure counts;
- :func:`modulus`: the modulus ``m(delta)`` for *any* gate class.
  :func:`gated_hmoe.experiments.modulus` builds its model with the linear gate only
  (``make_spec(expert=..., k=...)`` and ``gate_params("linear", ...)``), so it cannot take a
  quadratic truth; this is the same definition with the gate class as an argument;
- :func:`small_multiples` and :func:`explorer`: the static figure and the ipywidgets
  explorer over the cached sweeps.

Shapes: inputs ``D = 1`` throughout (the default truths of :func:`gated_hmoe.moe.default_truth`).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from gated_hmoe import cache, checks, estimators, experiments, moe, plots

#: The two quadratic gate classes compared in the chapter.
QUADRATIC_GATES: tuple[str, ...] = ("quadratic-monomial", "quadratic-polynomial")
#: Expert classes compared (ridge experts; ``glu`` is not part of E3).
CHAPTER_EXPERTS: tuple[str, ...] = ("linear", "sigmoid", "silu")
#: Metrics of the slope table, in the order printed.
TABLE_METRICS: tuple[str, ...] = ("worst_overfitted", "d1", "V")

_GATE_LABELS = {"linear": "linear gate", "quadratic-monomial": "monomial gate",
                "quadratic-polynomial": "polynomial gate"}
_EXPERT_LABELS = {"linear": "linear", "sigmoid": "sigmoid", "silu": "SiLU", "glu": "GLU"}


def gate_label(gate: str) -> str:
    """Short human name of a gate class, e.g. ``"monomial gate"``."""
    checks.choice(gate, "gate", moe.GATES)
    return _GATE_LABELS[gate]


def sweep_config(gate: str, expert: str, spread: float, *, replicates: int = 12,
                 points: int = 9, seed: int = 0, max_iter: int = 500,
                 rtol: float = 1e-3) -> experiments.SweepConfig:
    """The E1-contrast noise sweep for one (gate, expert, spread).

    ``k* = 2`` (default truth of :func:`gated_hmoe.moe.default_truth` for ``gate``), ``k = 3``,
    split initialisation of atom 0 with the given spread, ``n = 1000``,
    ``nu`` log-spaced in ``[1e-14, 1e-4]`` (``n / nu`` from ``1e7`` to ``1e17``); with
    ``points = 9`` the grid contains ``5.62e10``, the lower end of the slope range.
    """
    checks.choice(gate, "gate", moe.GATES)
    checks.choice(expert, "expert", moe.EXPERTS)
    return experiments.SweepConfig(
        expert=expert, gate=gate, k_true=2, k_fit=3, sweep="noise", n=1000,
        noise_min=1e-14, noise_max=1e-4, points=points, replicates=replicates, seed=seed,
        init="split", spread=float(spread), split_atom=0, max_iter=max_iter, rtol=rtol,
    ).validate()


def run_grid(*, gates=QUADRATIC_GATES, experts=CHAPTER_EXPERTS, spreads=(0.1,),
             cache_dir=None, **config_kwargs) -> dict:
    """Run (or load from the ``run_sweep`` cache) every sweep of the grid.

    Returns ``{(gate, expert, spread): SweepResult}``. No progress bars.
    """
    out = {}
    for spread in spreads:
        for gate in gates:
            for expert in experts:
                cfg = sweep_config(gate, expert, spread, **config_kwargs)
                out[(gate, expert, float(spread))] = experiments.run_sweep(
                    cfg, cache_dir=cache_dir, progress=False)
    return out


def total_fits(result) -> int:
    """Number of least-squares fits in one sweep (grid points times replicates)."""
    return len(result.points) * result.config.replicates


def slope_rows(results: dict) -> list[dict]:
    """One row per sweep: gate, expert, spread, slope and CI per metric, failures.

    ``failures`` counts fits flagged unconverged or non-finite over the whole grid (they are
    kept in the medians, never dropped); ``failures_in_range`` over the slope range only.
    """
    rows = []
    for (gate, expert, spread), res in results.items():
        row = {"gate": gate, "expert": expert, "spread": spread,
               "failures": int(sum(res.failures())), "fits": total_fits(res)}
        s = res.slopes[TABLE_METRICS[0]]
        row["failures_in_range"] = int(sum(s.failures))
        row["fits_in_range"] = len(s.x) * res.config.replicates
        for m in TABLE_METRICS:
            sl = res.slopes[m]
            row[m] = (sl.slope, sl.ci[0], sl.ci[1])
        row["plateau"] = float(s.medians[-1])
        rows.append(row)
    return rows


#: Lower end of the upper slope range (see :data:`gated_hmoe.experiments.UPPER_FIT_MIN`).
UPPER_FIT_MIN: float = experiments.UPPER_FIT_MIN
#: Slopes over the upper range (:func:`gated_hmoe.experiments.upper_slopes`).
upper_slopes = experiments.upper_slopes


def format_rows(rows: list[dict]) -> str:
    """The slope table as fixed-width text (slopes to 2 decimals, plateau to 2 digits)."""
    head = (f"{'gate':16s} {'expert':8s} {'s':>4s}  {'worst over-fitted atom':24s} "
            f"{'D1':24s} {'V':24s} {'median worst @1e17':>18s} {'failures':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{r[m][0]:+.2f} [{r[m][1]:+.2f}, {r[m][2]:+.2f}]" for m in TABLE_METRICS]
        lines.append(f"{gate_label(r['gate']):16s} {_EXPERT_LABELS[r['expert']]:8s} "
                     f"{r['spread']:4.1f}  {cells[0]:24s} {cells[1]:24s} {cells[2]:24s} "
                     f"{r['plateau']:18.1e} {r['failures']:4d}/{r['fits']:<4d}")
    return "\n".join(lines)


def split_profile(result, index: int = -1) -> dict:
    """Median (over replicates) half-separation of the two over-fitted atoms, per coordinate.

    For grid point ``index`` of a sweep with ``k* = 2``, ``k = 3`` and ``D = 1``: the
    over-fitted pair ``omega_1, omega_2`` (the two atoms sharing a Voronoi cell) gives
    ``|omega_1 - omega_2| / 2`` coordinate-wise, with coordinates ``beta1`` (polynomial gate
    only), ``A``, ``a``, ``b``. Replicates whose cells are not (2, 1) are skipped and counted
    in ``"skipped"``.
    """
    cfg = result.config
    spec = estimators.make_spec(expert=cfg.expert, gate=cfg.gate, k=cfg.k_fit, D=1)
    names = (["beta1"] if cfg.gate == "quadratic-polynomial" else []) + ["A", "a", "b"]
    halves, skipped = [], 0
    for rep in result.points[index]["replicates"]:
        over = np.array(rep["atom_overfitted"], bool)
        if over.sum() != 2 or not np.all(np.isfinite(rep["theta"])):
            skipped += 1
            continue
        M = estimators.unpack(jnp.asarray(rep["theta"]), spec)
        cols = ([np.asarray(M.beta1)] if cfg.gate == "quadratic-polynomial" else []) + [
            np.asarray(M.quad).reshape(cfg.k_fit, -1), np.asarray(M.expert)]
        om = np.concatenate(cols, 1)[over]
        halves.append(np.abs(om[0] - om[1]) / 2)
    med = np.median(np.array(halves), 0) if halves else np.full(len(names), np.nan)
    return {**{n: float(v) for n, v in zip(names, med)}, "skipped": skipped}


# ------------------------------------------------------------------ modulus for any gate

def _modulus_cache_path(cache_dir, payload: dict) -> Path:
    return cache.cache_root(cache_dir) / "quadratic_modulus" / f"{cache.config_key(payload)}.json"


def modulus(deltas, *, expert: str, gate: str, quad_points: int = 200, starts: int = 2,
            seed: int = 0, max_nfev: int = 1000, cache_dir=None) -> np.ndarray:
    r"""``m(delta) = min ||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` for each ``delta`` in ``deltas``.

    :func:`gated_hmoe.experiments.modulus_values` for the default truth of ``gate`` (true
    atom 0 split into a pair at ``omega*_0 + c ± delta u``, equal weights, free common
    centre ``c``, direction ``u``, common intercept and the other atom's expert; ``omega`` =
    gate parameters without the intercept, then the expert), from the coordinate axes and
    ``starts`` random directions, at most ``max_nfev`` evaluations per start. Results are
    cached as JSON under ``cache_dir/quadratic_modulus`` (default ``$GATED_HMOE_CACHE``).

    Returns ``(len(deltas),)``.
    """
    checks.choice(expert, "expert", moe.EXPERTS)
    checks.choice(gate, "gate", moe.GATES)
    deltas = checks.finite_array(deltas, "deltas", ndim=1).astype(float)
    if deltas.size < 1 or np.any(deltas <= 0):
        raise ValueError(f"deltas must be a non-empty 1-d array of numbers > 0, got {deltas}")
    quad_points = checks.positive_int(quad_points, "quad_points")
    starts = checks.positive_int(starts, "starts", minimum=0)
    payload = {"expert": expert, "gate": gate, "deltas": deltas.tolist(),
               "quad_points": quad_points, "starts": starts, "seed": seed,
               "max_nfev": max_nfev, "version": 1}
    path = _modulus_cache_path(cache_dir, payload)
    if path.exists():
        with open(path) as fh:
            return np.array(json.load(fh)["m"], float)
    out = experiments.modulus_values(deltas, expert=expert, gate=gate, quad_points=quad_points,
                                     starts=starts, seed=seed, max_nfev=max_nfev)
    cache.write_json_atomic(path, {**payload, "m": out.tolist()})
    return out


def modulus_exponent(deltas, m) -> float:
    """Log-log least-squares slope of ``m(delta)`` against ``delta`` (``nan`` if any ``m <= 0``)."""
    deltas, m = np.asarray(deltas, float), np.asarray(m, float)
    if np.any(m <= 0):
        return float("nan")
    return float(np.polyfit(np.log(deltas), np.log(m), 1)[0])


def modulus_figure(deltas, table: dict, *, ax=None):
    """Log-log ``m(delta)`` per (gate, expert); ``table[(gate, expert)] = m (len(deltas),)``.

    Colour = expert class, solid = monomial gate, dashed = polynomial gate; the legend gives
    the fitted exponent. Values below ``1e-28`` (round-off; linear experts) are drawn at
    ``1e-28``.
    """
    if ax is None:
        fig, ax = plots.new_figure()
    else:
        fig = ax.figure
    deltas = np.asarray(deltas, float)
    floor = 1e-28
    for (gate, expert), m in table.items():
        m = np.asarray(m, float)
        slope = modulus_exponent(deltas, m) if np.all(m > floor) else float("nan")
        what = f"exponent {slope:.2f}" if np.isfinite(slope) else "0 (round-off)"
        ax.plot(deltas, np.maximum(m, floor), color=plots.EXPERT_COLORS[expert],
                linestyle="-" if gate == "quadratic-monomial" else "--",
                marker="o" if gate == "quadratic-monomial" else "s",
                label=f"{gate_label(gate)}, {_EXPERT_LABELS[expert]}: {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("half-separation δ of the over-fitted pair (parameter units)")
    ax.set_ylabel("m(δ) = min ‖f_G − f_G*‖² (drawn at 1e-28 if below)")
    ax.set_title("Modulus m(δ): how visible an over-fitted pair at offset δ is")
    ax.legend(loc="center right", fontsize=7)
    return fig, ax


# ------------------------------------------------------------------ figures and explorer

def _fail_text(res) -> str:
    return f"failures {sum(res.failures())}/{total_fits(res)}"


def contrast_figure(results: dict, *, spread: float = 0.1, metric: str = "worst_overfitted",
                    gates=QUADRATIC_GATES, experts=CHAPTER_EXPERTS):
    """One panel per gate: the median ``metric`` (interquartile band) against ``n / nu`` for
    every expert class at ``spread``; legend = fitted slope [95% CI] and failures."""
    fig, axes = plots.new_figure(len(gates), width=11.0, height=4.0, sharey=True)
    axes = np.atleast_1d(axes)
    style = plots.RATE_STYLES[metric]
    for ax, gate in zip(axes, gates):
        for expert in experts:
            res = results[(gate, expert, float(spread))]
            s = res.slopes[metric]
            L = res.losses(metric)
            L = np.where(np.isfinite(L), L, np.inf)
            colour = plots.EXPERT_COLORS[expert]
            ax.plot(res.x, np.median(L, 1), color=colour, marker=style["marker"],
                    label=f"{_EXPERT_LABELS[expert]}: {s.label()}, {_fail_text(res)}")
            ax.fill_between(res.x, np.quantile(L, 0.25, 1), np.quantile(L, 0.75, 1),
                            color=colour, alpha=0.12, linewidth=0)
            xs = np.array(s.x)
            ax.plot(xs, np.exp(s.intercept) * xs ** s.slope, color="0.3", lw=0.8, ls=":")
        ax.axvline(experiments.NOISE_FIT_MIN, color="0.6", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{gate_label(gate)}, split init (spread {spread})")
        ax.set_xlabel("effective sample size n / ν")
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel(f"{style['label']} (median, IQR band)")
    fig.tight_layout()
    return fig, axes


def small_multiples(results: dict, *, metrics=TABLE_METRICS):
    """Rows = (gate, spread), columns = expert: :func:`gated_hmoe.plots.rate_figure` of every
    cached sweep (the static counterpart of :func:`explorer`)."""
    keys = sorted(results, key=lambda k: (QUADRATIC_GATES.index(k[0]) if k[0] in QUADRATIC_GATES
                                          else 9, k[2], CHAPTER_EXPERTS.index(k[1])
                                          if k[1] in CHAPTER_EXPERTS else 9))
    rows = sorted({(k[0], k[2]) for k in keys}, key=lambda r: (QUADRATIC_GATES.index(r[0]), r[1]))
    cols = [e for e in CHAPTER_EXPERTS if any(k[1] == e for k in keys)]
    fig, axes = plots.new_figure(len(cols), len(rows), width=4.2 * len(cols),
                                 height=3.4 * len(rows), sharex=True, squeeze=False)
    for i, (gate, spread) in enumerate(rows):
        for j, expert in enumerate(cols):
            ax = axes[i, j]
            res = results.get((gate, expert, spread))
            if res is None:
                ax.set_visible(False)
                continue
            plots.rate_figure(res, metrics=list(metrics), ax=ax)
            ax.set_title(f"{gate_label(gate)}, {_EXPERT_LABELS[expert]}, s = {spread}\n"
                         f"{_fail_text(res)}", fontsize=9)
            ax.legend(loc="lower left", fontsize=6)
            if i < len(rows) - 1:
                ax.set_xlabel("")
            if j > 0:
                ax.set_ylabel("")
    fig.tight_layout()
    return fig, axes


def explorer(results: dict, *, metrics=TABLE_METRICS):
    """An ipywidgets control (gate class, expert class, spread) redrawing the log-log rate
    plot of the matching cached sweep, and a button that runs a small live fit
    (:func:`gated_hmoe.rates_book.live_fit` with the chosen gate, ``k = 3``, split start).
    Returns the widget (display it in a notebook)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    if not results:
        raise ValueError("results must hold at least one sweep (see run_grid)")
    gates = [g for g in QUADRATIC_GATES if any(k[0] == g for k in results)]
    experts_ = [e for e in CHAPTER_EXPERTS if any(k[1] == e for k in results)]
    spreads = sorted({k[2] for k in results})
    gate = widgets.Dropdown(options=[(gate_label(g), g) for g in gates], value=gates[0],
                            description="gate")
    expert = widgets.Dropdown(options=[(_EXPERT_LABELS[e], e) for e in experts_],
                              value=experts_[0], description="expert")
    spread = widgets.Dropdown(options=spreads, value=spreads[0], description="spread")
    out = widgets.Output()

    def redraw(*_):
        key = (gate.value, expert.value, float(spread.value))
        with out:
            out.clear_output(wait=True)
            res = results.get(key)
            if res is None:
                display(widgets.HTML("no cached sweep for this combination"))
                return
            fig, ax = plots.rate_figure(res, metrics=list(metrics))
            ax.set_title(f"{gate_label(key[0])}, {_EXPERT_LABELS[key[1]]} experts, "
                         f"spread {key[2]} ({_fail_text(res)})")
            plt.show()

    n_live = widgets.IntSlider(value=300, min=50, max=1000, step=50, description="live n")
    nu_live = widgets.FloatLogSlider(value=1e-8, base=10, min=-12, max=-2, description="live ν")
    go = widgets.Button(description="run live fit")

    def live(*_):
        from gated_hmoe import rates_book
        with out:
            out.clear_output(wait=True)
            r = rates_book.live_fit(expert=expert.value, k=3, n=n_live.value, noise=nu_live.value,
                                    spread=float(spread.value), gate=gate.value)
            rates_book.plot_live_fit(r)
            plt.show()
            txt = ", ".join(f"{q['worst_overfitted']:.2e}" for q in r["losses"])
            display(widgets.HTML(f"worst over-fitted atom error per replicate: {txt}; "
                                 f"not converged: {int(np.sum(r['failed']))} of {len(r['losses'])}"))

    for wdg in (gate, expert, spread):
        wdg.observe(redraw, names="value")
    go.on_click(live)
    redraw()
    box = widgets.VBox([widgets.HBox([gate, expert, spread]), widgets.HBox([n_live, nu_live, go]),
                        out])
    box.live_button = go            # for tests and scripted use: box.live_button.click()
    return box


__all__ = ["QUADRATIC_GATES", "CHAPTER_EXPERTS", "TABLE_METRICS", "gate_label", "sweep_config",
           "run_grid", "total_fits", "slope_rows", "split_profile", "upper_slopes", "UPPER_FIT_MIN", "format_rows", "modulus", "modulus_exponent", "modulus_figure",
           "contrast_figure", "small_multiples", "explorer"]
