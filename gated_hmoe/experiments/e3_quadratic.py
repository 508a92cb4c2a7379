r"""Quadratic gates (E3, SPEC §5): monomial vs polynomial gate, linear vs non-linear experts.

The chapter "Quadratic gates" runs the E1 contrast protocol (noise sweep at fixed ``n``,
split initialisation, float64 least squares) with the two quadratic gate classes of
:mod:`gated_hmoe.moe`,

.. math::
    z_i(x) = x^\top A_i x + \beta_{0i} \quad\text{(monomial)}, \qquad
    z_i(x) = x^\top A_i x + \beta_{1i}^\top x + \beta_{0i} \quad\text{(polynomial)},

and collects here what the chapter needs on top of :func:`gated_hmoe.e1_rates.run_sweep`:

- :func:`sweep_config` / :func:`run_grid`: the chapter's sweeps, one per (gate, expert,
  spread), cached by ``run_sweep`` under ``$GATED_HMOE_CACHE``;
- :func:`slope_rows`: the slope table (worst over-fitted atom error, ``D_1``, identifiable
  part ``V``) with bootstrap intervals and failure counts;
- :func:`modulus`: the modulus ``m(delta)`` of :mod:`gated_hmoe.estimation.modulus` for a
  quadratic gate's default truth, cached by configuration.

Figures and the explorer: :mod:`gated_hmoe.viz.quadratic`.

Shapes: inputs ``D = 1`` throughout (the default truths of :func:`gated_hmoe.models.moe.default_truth`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import modulus as modulus_lib
from gated_hmoe.estimation import rates
from gated_hmoe.experiments import e1_rates, runner
from gated_hmoe.models import moe

#: The two quadratic gate classes compared in the chapter.
QUADRATIC_GATES: tuple[str, ...] = ("quadratic-monomial", "quadratic-polynomial")
#: Expert classes compared (ridge experts; ``glu`` is not part of E3).
CHAPTER_EXPERTS: tuple[str, ...] = ("linear", "sigmoid", "silu")
#: Metrics of the slope table, in the order printed.
TABLE_METRICS: tuple[str, ...] = ("worst_overfitted", "d1", "V")



def gate_label(gate: str) -> str:
    """Short human name of a gate class, e.g. ``"monomial gate"``."""
    checks.choice(gate, "gate", moe.GATES)
    return moe.GATE_LABELS[gate]


def sweep_config(gate: str, expert: str, spread: float, *, replicates: int = 12,
                 points: int = 9, seed: int = 0, max_iter: int = 500,
                 rtol: float = 1e-3) -> e1_rates.SweepConfig:
    """The E1-contrast noise sweep for one (gate, expert, spread).

    ``k* = 2`` (default truth of :func:`gated_hmoe.models.moe.default_truth` for ``gate``), ``k = 3``,
    split initialisation of atom 0 with the given spread, ``n = 1000``,
    ``nu`` log-spaced in ``[1e-14, 1e-4]`` (``n / nu`` from ``1e7`` to ``1e17``); with
    ``points = 9`` the grid contains ``5.62e10``, the lower end of the slope range.
    """
    checks.choice(gate, "gate", moe.GATES)
    checks.choice(expert, "expert", moe.EXPERTS)
    return e1_rates.SweepConfig(
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
                out[(gate, expert, float(spread))] = e1_rates.run_sweep(
                    cfg, cache_dir=cache_dir, progress=False)
    return out


def slope_rows(results: dict) -> list[dict]:
    """One row per sweep: gate, expert, spread, slope and CI per metric, failures.

    ``failures`` counts fits flagged unconverged or non-finite over the whole grid (they are
    kept in the medians, never dropped); ``failures_in_range`` over the slope range only.
    """
    rows = []
    for (gate, expert, spread), res in results.items():
        failed, fits = res.failure_count()
        row = {"gate": gate, "expert": expert, "spread": spread, "failures": failed, "fits": fits}
        s = res.slopes[TABLE_METRICS[0]]
        row["failures_in_range"] = int(sum(s.failures))
        row["fits_in_range"] = len(s.x) * res.config.replicates
        for m in TABLE_METRICS:
            sl = res.slopes[m]
            row[m] = (sl.slope, sl.ci[0], sl.ci[1])
        row["plateau"] = float(s.medians[-1])
        rows.append(row)
    return rows


#: Lower end of the upper slope range (see :data:`gated_hmoe.e1_rates.UPPER_FIT_MIN`).
UPPER_FIT_MIN: float = e1_rates.UPPER_FIT_MIN
#: Slopes over the upper range (:func:`gated_hmoe.e1_rates.upper_slopes`).
upper_slopes = e1_rates.upper_slopes


def format_rows(rows: list[dict]) -> str:
    """The slope table as fixed-width text (slopes to 2 decimals, plateau to 2 digits)."""
    head = (f"{'gate':16s} {'expert':8s} {'s':>4s}  {'worst over-fitted atom':24s} "
            f"{'D1':24s} {'V':24s} {'median worst @1e17':>18s} {'failures':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [rates.format_slope(r[m]) for m in TABLE_METRICS]
        lines.append(f"{gate_label(r['gate']):16s} {moe.EXPERT_LABELS[r['expert']]:8s} "
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
    spec = moe.make_spec(expert=cfg.expert, gate=cfg.gate, k=cfg.k_fit, D=1)
    names = (["beta1"] if cfg.gate == "quadratic-polynomial" else []) + ["A", "a", "b"]
    halves, skipped = [], 0
    for rep in result.points[index]["replicates"]:
        over = np.array(rep["atom_overfitted"], bool)
        if over.sum() != 2 or not np.all(np.isfinite(rep["theta"])):
            skipped += 1
            continue
        M = moe.unpack(jnp.asarray(rep["theta"]), spec)
        cols = ([np.asarray(M.beta1)] if cfg.gate == "quadratic-polynomial" else []) + [
            np.asarray(M.quad).reshape(cfg.k_fit, -1), np.asarray(M.expert)]
        om = np.concatenate(cols, 1)[over]
        halves.append(np.abs(om[0] - om[1]) / 2)
    med = np.median(np.array(halves), 0) if halves else np.full(len(names), np.nan)
    return {**{n: float(v) for n, v in zip(names, med)}, "skipped": skipped}


# ------------------------------------------------------------------ modulus for any gate

def modulus(deltas, *, expert: str, gate: str, quad_points: int = 200, starts: int = 2,
            seed: int = 0, max_nfev: int = 1000, cache_dir=None) -> np.ndarray:
    r"""``m(delta) = min ||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` for each ``delta`` in ``deltas``.

    :func:`gated_hmoe.estimation.modulus.modulus_values` for the default truth of ``gate``
    (true atom 0 split into a pair at ``omega*_0 + c ± delta u``, equal weights, free common
    centre ``c``, direction ``u``, common intercept and the other atom's expert; ``omega`` =
    gate parameters without the intercept, then the expert), from the coordinate axes and
    ``starts`` random directions, at most ``max_nfev`` evaluations per start. Cached in the
    :class:`~gated_hmoe.experiments.runner.Store` ``"quadratic_modulus"``.

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

    def compute():
        m = modulus_lib.modulus_values(deltas, expert=expert, gate=gate, quad_points=quad_points,
                                       starts=starts, seed=seed, max_nfev=max_nfev)
        return {**payload, "m": m.tolist()}

    entry = runner.Store("quadratic_modulus", cache_dir).get(runner.config_key(payload), compute)
    return np.array(entry["m"], float)


def modulus_exponent(deltas, m) -> float:
    """Log-log least-squares slope of ``m(delta)`` against ``delta`` (``nan`` if any ``m <= 0``)."""
    return rates.loglog_slope(deltas, m)[0]


__all__ = ["QUADRATIC_GATES", "CHAPTER_EXPERTS", "TABLE_METRICS", "UPPER_FIT_MIN", "format_rows",
           "gate_label", "modulus", "modulus_exponent", "run_grid", "slope_rows",
           "split_profile", "sweep_config", "upper_slopes"]
