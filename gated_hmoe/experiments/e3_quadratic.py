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
  quadratic gate's default truth, cached by configuration;
- :data:`BANDS`: the chapter's assertion bands (one place, glued into its prose);
- :func:`make_record` / :func:`load_record` / :func:`record_results`: the runs too slow for
  the chapter (the 17-level grid, the 2000-iteration budget check), written by
  ``scripts/e3_records.py`` to ``docs/records/`` with their configuration, versions,
  commit, date, machine and wall time, and read back by the chapter;
- :data:`PROFILE_RECORDS` / :func:`profile_configs` / :func:`make_profile_record` /
  :func:`load_profile_record`: what the data determine under each gate -- chapter 04's
  profile confidence sets of the over-fitted pair (an n-sweep to ``n = 1e5``, a noise sweep
  to ``n / nu = 1e17``), as records.

Figures and the explorer: :mod:`gated_hmoe.viz.quadratic`.

Shapes: inputs ``D = 1`` throughout (the default truths of :func:`gated_hmoe.models.moe.default_truth`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import modulus as modulus_lib
from gated_hmoe.estimation import rates
from gated_hmoe.experiments import e1_profile, e1_rates, runner
from gated_hmoe.models import moe

#: The two quadratic gate classes compared in the chapter.
QUADRATIC_GATES: tuple[str, ...] = ("quadratic-monomial", "quadratic-polynomial")
#: Expert classes compared (ridge experts; ``glu`` is not part of E3).
CHAPTER_EXPERTS: tuple[str, ...] = ("linear", "sigmoid", "silu")
#: Metrics of the slope table, in the order printed.
TABLE_METRICS: tuple[str, ...] = ("worst_overfitted", "d1", "V")
#: The chapter's sweeps ``(gate, expert, spread)``: spread 0.1 for every expert class,
#: spread 0.3 for linear and SiLU experts (the budget of a 3-minute chapter).
CHAPTER_SWEEPS: tuple[tuple[str, str, float], ...] = (
    *((g, e, 0.1) for g in QUADRATIC_GATES for e in CHAPTER_EXPERTS),
    *((g, e, 0.3) for g in QUADRATIC_GATES for e in ("linear", "silu")))

#: The chapter's assertion bands, set from one feasibility run (the same seeds) and
#: glued into its prose from here. ``modulus_*``: exponent of ``m(delta)`` for ridge
#: experts and the round-off ceiling for linear ones; ``worst_ridge``/``d1_ridge``: main-range
#: slopes of non-linear experts (the bands of the linear-gate contrast); ``worst_linear_*``:
#: main-range slope of linear experts per gate; ``V``: identifiable part, every sweep;
#: ``plateau_over_silu``: linear plateau at ``1e17`` over the SiLU median of the same gate and
#: spread (at least); ``gate_ratio``: polynomial over monomial median worst error at ``1e17``
#: (at least); ``gate_slope_gap``: largest difference of the two gates' slopes;
#: ``upper_ridge``/``upper_linear``: slopes over ``[UPPER_FIT_MIN, 1e17]``.
BANDS: dict = {
    "modulus_zero": 1e-28,
    "modulus_monomial": (3.5, 4.5),
    "modulus_polynomial": (7.0, 9.0),
    "worst_ridge": (-0.32, -0.15),
    "d1_ridge": (-0.65, -0.30),
    "V": (-0.70, -0.30),
    "worst_linear_monomial": (-0.10, 0.10),
    "worst_linear_polynomial": (-0.20, 0.10),
    "plateau_over_silu": 5.0,
    "gate_ratio": 1.5,
    "gate_slope_gap": 0.10,
    "upper_ridge": (-0.32, -0.18),
    "upper_linear": (-0.10, 0.10),
}



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


def split_halves(result, index: int = -1) -> dict:
    """Per-replicate half-separation of the over-fitted pair at grid point ``index``:
    ``{coordinate: (replicates,)}`` (coordinates as in :func:`split_profile`; ``nan`` for a
    replicate whose cells are not (2, 1) or whose fit is not finite)."""
    cfg = result.config
    spec = moe.make_spec(expert=cfg.expert, gate=cfg.gate, k=cfg.k_fit, D=1)
    names = (["beta1"] if cfg.gate == "quadratic-polynomial" else []) + ["A", "a", "b"]
    reps = result.points[index]["replicates"]
    out = np.full((len(names), len(reps)), np.nan)
    for r, rep in enumerate(reps):
        over = np.array(rep["atom_overfitted"], bool)
        if over.sum() != 2 or not np.all(np.isfinite(rep["theta"])):
            continue
        M = moe.unpack(jnp.asarray(rep["theta"]), spec)
        cols = ([np.asarray(M.beta1)] if cfg.gate == "quadratic-polynomial" else []) + [
            np.asarray(M.quad).reshape(cfg.k_fit, -1), np.asarray(M.expert)]
        om = np.concatenate(cols, 1)[over]
        out[:, r] = np.abs(om[0] - om[1]) / 2
    return dict(zip(names, out))


def split_slopes(result) -> dict:
    """``{coordinate: Slope}``: log-log slope of the pair's half-separation per coordinate
    (:func:`split_halves`) against ``n / nu`` over the sweep's slope range, with the same
    bootstrap over replicates as the sweep's slopes (a skipped replicate counts as a failed
    fit)."""
    lo, hi = result.config.slope_range()
    halves = [split_halves(result, i) for i in range(len(result.points))]
    return {k: rates.slope(result.x, np.array([h[k] for h in halves]), x_min=lo, x_max=hi,
                           seed=result.config.seed) for k in halves[0]}


def split_profile(result, index: int = -1) -> dict:
    """Median (over replicates) half-separation of the two over-fitted atoms, per coordinate.

    For grid point ``index`` of a sweep with ``k* = 2``, ``k = 3`` and ``D = 1``: the
    over-fitted pair ``omega_1, omega_2`` (the two atoms sharing a Voronoi cell) gives
    ``|omega_1 - omega_2| / 2`` coordinate-wise, with coordinates ``beta1`` (polynomial gate
    only), ``A``, ``a``, ``b``. Replicates whose cells are not (2, 1) are skipped and counted
    in ``"skipped"``.
    """
    halves = split_halves(result, index)
    ok = np.all(np.isfinite(np.array(list(halves.values()))), 0)
    return {**{k: float(np.median(v[ok])) if ok.any() else float("nan")
               for k, v in halves.items()}, "skipped": int((~ok).sum())}


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
               "max_nfev": max_nfev, "version": 2}

    def compute():
        m = modulus_lib.modulus_values(deltas, expert=expert, gate=gate, quad_points=quad_points,
                                       starts=starts, seed=seed, max_nfev=max_nfev)
        return {**payload, "m": m.tolist()}

    entry = runner.Store("quadratic_modulus", cache_dir).get(runner.config_key(payload), compute)
    return np.array(entry["m"], float)


def modulus_exponent(deltas, m) -> float:
    """Log-log least-squares slope of ``m(delta)`` against ``delta`` (``nan`` if any ``m <= 0``)."""
    return rates.loglog_slope(deltas, m)[0]


def modulus_law(deltas, m) -> tuple[float, float]:
    """``(p, C)`` of the log-log least-squares law ``m(delta) ~ C delta^p``."""
    p, a = rates.loglog_slope(deltas, m)
    return p, float(np.exp(a))


def predicted_radius(x, c: float, p: float, C: float, end: float) -> np.ndarray:
    """The radius the law ``m ~ C delta^p`` predicts at effective sample sizes ``x = n / nu``:
    the offset where ``x m(delta) = c``, ``(c / (x C))^(1/p)``, capped at the grid's ``end``.

    >>> predicted_radius([1e8, 1e12], 3.84, 4.0, 3.84e-4, 2.0).round(3).tolist()
    [0.1, 0.01]
    """
    return np.minimum((c / (np.asarray(x, float) * C)) ** (1 / p), end)

# ------------------------------------------------------------------ records of the long runs

#: Where the committed records live (``docs/records/`` of the repository).
RECORD_DIR: Path = Path(__file__).resolve().parents[2] / "docs" / "records"

#: The runs too slow for the chapter: sweeps, overrides of :func:`sweep_config`, file name.
#: ``full-grid``: the chapter's ten sweeps on 17 noise levels; ``budget2000``: the
#: spread-0.1 sweeps of linear and sigmoid experts with a 2000-iteration budget.
RECORDS: dict = {
    "full-grid": {"file": "e3_full_grid.json", "sweeps": CHAPTER_SWEEPS,
                  "overrides": {"points": 17}},
    "budget2000": {"file": "e3_budget2000.json",
                   "sweeps": tuple((g, e, 0.1) for g in QUADRATIC_GATES
                                   for e in ("linear", "sigmoid")),
                   "overrides": {"max_iter": 2000}},
}

#: The command that writes a record (run from the repository root).
RECORD_COMMAND: str = "python scripts/e3_records.py {name}"


def record_configs(name: str, **overrides) -> dict:
    """``{(gate, expert, spread): SweepConfig}`` of record ``name`` (:data:`RECORDS`);
    ``overrides`` replace fields of the declared configuration (small test runs)."""
    checks.choice(name, "name", tuple(RECORDS))
    spec = RECORDS[name]
    kwargs = {**spec["overrides"], **overrides}
    return {(g, e, float(sp)): sweep_config(g, e, sp, **kwargs) for g, e, sp in spec["sweeps"]}


def rates_command(config: e1_rates.SweepConfig, out: str = "results/e3") -> str:
    """The ``rates`` command line that runs the sweep ``config`` of :func:`sweep_config`
    (every field that differs from the command's defaults is a flag; the test suite parses
    it back and compares the configuration)."""
    return (f"python -m gated_hmoe rates --expert {config.expert} --gate {config.gate} "
            f"--k-fit {config.k_fit} --init {config.init} --spread {config.spread:g} "
            f"--sweep {config.sweep} --n {config.n} --noise-min {config.noise_min:g} "
            f"--noise-max {config.noise_max:g} --points {config.points} "
            f"--replicates {config.replicates} --max-iter {config.max_iter} --out {out}")


def _finite_or_none(values) -> list:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in values]


def _slope_triple(s) -> list | None:
    return None if s is None else [s.slope, s.ci[0], s.ci[1]]


def _upper_slope(result, metric: str = "worst_overfitted"):
    """:func:`upper_slopes` of one sweep; ``None`` when fewer than 2 grid points lie in the
    upper range."""
    if np.sum(result.x >= UPPER_FIT_MIN * (1 - 1e-9)) < 2:
        return None
    return upper_slopes({0: result}, metric=metric)[0]


def sweep_entry(key, result, wall_seconds: float) -> dict:
    """What a record keeps of one sweep: its key and configuration, the grid, the failures
    per grid point, the per-replicate losses of :data:`TABLE_METRICS` (``None`` for a failed
    fit), the slopes over the configured range and over ``[UPPER_FIT_MIN, max]`` (``[slope,
    lo, hi]``) and the wall time of the sweep."""
    gate, expert, spread = key
    upper = _upper_slope(result)
    return {"gate": gate, "expert": expert, "spread": float(spread),
            "config": result.config.to_dict(), "cache_key": result.config.key(),
            "x": [float(v) for v in result.x], "failures": result.failures(),
            "losses": {m: _finite_or_none(result.losses(m)) for m in TABLE_METRICS},
            "slopes": {m: _slope_triple(result.slopes[m]) for m in TABLE_METRICS},
            "upper_slope": _slope_triple(upper), "seconds": round(float(wall_seconds), 1)}


def make_record(name: str, *, cache_dir=None, machine: str = "unknown", log=None,
                **overrides) -> dict:
    """Run every sweep of record ``name`` (:data:`RECORDS`) and return the record.

    Each sweep runs through :func:`gated_hmoe.experiments.e1_rates.run_sweep` (pass a fresh
    ``cache_dir`` for a cold-cache time); its wall time is measured here. The record holds
    the name, the command, the date, ``machine``, the library versions, the git commit at
    the start (``dirty``: whether the library or the scripts had uncommitted changes), the
    total wall time, the machine's 1-minute load average at the start and the end
    (``load_average``) and one :func:`sweep_entry` per sweep. ``log``: called with one line
    per finished sweep.
    """
    configs = record_configs(name, **overrides)
    commit = runner.source_commit()              # the code that runs: the tree at the start
    load = [round(os.getloadavg()[0], 1)]   # other work on the machine slows the sweeps
    sweeps, start = [], time.perf_counter()
    for key, cfg in configs.items():
        t0 = time.perf_counter()
        res = e1_rates.run_sweep(cfg, cache_dir=cache_dir, progress=False)
        sweeps.append(sweep_entry(key, res, time.perf_counter() - t0))
        if log is not None:
            log(f"{key}: {sweeps[-1]['seconds']} s, failures {sum(res.failures())}")
    return {**_provenance(name, machine, commit, load, start),
            "overrides": {**RECORDS[name]["overrides"], **overrides}, "sweeps": sweeps}


def _provenance(name: str, machine: str, commit: dict, load: list, start: float) -> dict:
    """A record's metadata: name, command, date, machine, versions, the commit at the start,
    the wall time since ``start`` and the load average at the start and now."""
    return {"name": name, "command": RECORD_COMMAND.format(name=name),
            "date": datetime.date.today().isoformat(), "machine": machine,
            "versions": runner.versions(), **commit,
            "seconds": round(time.perf_counter() - start, 1),
            "load_average": load + [round(os.getloadavg()[0], 1)]}


def write_record(record: dict, path) -> None:
    """Write ``record`` as JSON: metadata indented, one line per sweep."""
    head = {k: v for k, v in record.items() if k != "sweeps"}
    text = json.dumps(head, indent=1)[:-2] + ',\n "sweeps": [\n'
    text += ",\n".join("  " + json.dumps(s, allow_nan=False) for s in record["sweeps"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n ]\n}\n")
    tmp.replace(path)


def _read_record(name: str, path, table: dict) -> tuple[Path, dict]:
    """``(path, record)``: the JSON record ``name`` at ``path`` (default ``RECORD_DIR /
    table[name]["file"]``); ``ValueError`` naming the command that writes it if missing."""
    path = Path(path) if path is not None else RECORD_DIR / table[name]["file"]
    if not path.is_file():
        raise ValueError(f"no record {name!r} at {path}: write it with "
                         f"{RECORD_COMMAND.format(name=name)}")
    return path, json.loads(path.read_text())


def load_record(name: str, path=None, **overrides) -> dict:
    """Read record ``name`` (default ``RECORD_DIR / RECORDS[name]["file"]``) and check it:
    its sweeps are exactly those of :func:`record_configs` (``overrides`` as it was written
    with), each with the grid, shapes and failure counts of its configuration. Raises
    ``ValueError`` naming what does not match."""
    configs = record_configs(name, **overrides)
    path, record = _read_record(name, path, RECORDS)
    for field in ("name", "command", "date", "machine", "versions", "commit", "seconds"):
        if field not in record:
            raise ValueError(f"record {path}: no {field!r}")
    if record["name"] != name:
        raise ValueError(f"record {path} is {record['name']!r}, expected {name!r}")
    keys = [(s["gate"], s["expert"], s["spread"]) for s in record["sweeps"]]
    if keys != list(configs):
        raise ValueError(f"record {path}: sweeps {keys}, expected {list(configs)}")
    for entry, (key, cfg) in zip(record["sweeps"], configs.items()):
        if entry["config"] != json.loads(json.dumps(cfg.to_dict())):
            raise ValueError(f"record {path}, sweep {key}: configuration differs from "
                             f"record_configs({name!r})")
        xs = [n / nu for n, nu in cfg.grid()]
        if len(entry["x"]) != len(xs) or not np.allclose(entry["x"], xs, rtol=1e-9):
            raise ValueError(f"record {path}, sweep {key}: grid differs from the configuration")
        for m in TABLE_METRICS:
            if np.shape(entry["losses"][m]) != (len(xs), cfg.replicates):
                raise ValueError(f"record {path}, sweep {key}: losses[{m!r}] shape "
                                 f"{np.shape(entry['losses'][m])}")
        if any(not 0 <= f <= cfg.replicates for f in entry["failures"]):
            raise ValueError(f"record {path}, sweep {key}: failures {entry['failures']}")
    return record


#: Chapter 06's profile records: what the data determine under each quadratic gate. Chapter
#: 04's profile confidence set of the over-fitted pair (:mod:`gated_hmoe.experiments.e1_profile`)
#: for sigmoid and SiLU experts under both gates (``k* = 2`` fitted with ``k = 3``, threshold
#: ``c = 3.84``), one seed per record:
#:
#: - ``profile``: an n-sweep ``n = 1e3 ... 1e5`` on 5 points at ``nu = 1e-6``, 8 replicates,
#:   12 offsets in ``[0.02, 2]``, seed 0. The chapter asserts only that the polynomial gate's
#:   median radius is at least the monomial gate's at every ``n``, for both experts.
#: - ``profile-noise``: a noise sweep at ``n = 1000``, ``nu = 1e-4 ... 1e-14`` on 9 points
#:   (``n / nu`` to ``1e17``, where the polynomial gate's radius is predicted inside the
#:   modulus's measured range), 8 replicates, 16 offsets in ``[0.001, 2]``, seed 0; and
#:   ``profile-noise-heldout``: the same with seed 1. Prediction (from the chapter's moduli,
#:   ``p ~ 4`` and ``~ 8``): over the grid points whose median radius is at most 0.4, the
#:   polynomial gate's radius slope is shallower than the monomial gate's (near ``-1/8``
#:   against ``-1/4``), per expert.
#:
#: Every record's fits run the loop with a budget of :data:`PROFILE_MAX_ITER` iterations
#: (why 1000: docs/decisions.md). When each record and prediction was written down:
#: Methods, chapter 06, and the decisions log.
PROFILE_MAX_ITER: int = 1000
PROFILE_RECORDS: dict = {
    "profile": {"file": "e3_profile.json",
                "config": {"k_fit": 3, "sweep": "n", "n_min": 1000, "n_max": 100_000,
                           "points": 5, "noise": 1e-6, "replicates": 8,
                           "offsets": (0.02, 2.0, 12), "seed": 0,
                           "max_iter": PROFILE_MAX_ITER}},
    "profile-noise": {"file": "e3_profile_noise.json",
                      "config": {"k_fit": 3, "sweep": "noise", "n": 1000, "noise_min": 1e-14,
                                 "noise_max": 1e-4, "points": 9, "replicates": 8,
                                 "offsets": (0.001, 2.0, 16), "seed": 0,
                                 "max_iter": PROFILE_MAX_ITER}},
}
PROFILE_RECORDS["profile-noise-heldout"] = {
    "file": "e3_profile_noise_heldout.json",
    "config": {**PROFILE_RECORDS["profile-noise"]["config"], "seed": 1}}
#: Seeds of the noise sweep's calibration records ``profile-noise-seed101`` ... (never used
#: for an asserted run): per (gate, expert), the band of the radius slope over the points
#: whose median radius is at most 0.4
#: (:meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.slope_below`) is
#: :func:`~gated_hmoe.experiments.e1_profile.band_from_calibration` of the calibration seeds'
#: slopes around the theory's (:data:`PROFILE_THEORY_SLOPE`: ``-1/4`` for the monomial gate's
#: ``delta^4`` modulus, ``-1/8`` for the polynomial gate's ``delta^8``), from the seeds where
#: that slope has two or more points; chapter 06 asserts that seed 0 and the held-out seed 1
#: lie in their bands wherever both a band and their slope exist.
PROFILE_CALIBRATION_SEEDS: tuple[int, ...] = (101, 102, 103)
PROFILE_THEORY_SLOPE: dict[str, float] = {"quadratic-monomial": -0.25,
                                          "quadratic-polynomial": -0.125}
for _seed in PROFILE_CALIBRATION_SEEDS:
    PROFILE_RECORDS[f"profile-noise-seed{_seed}"] = {
        "file": f"e3_profile_noise_seed{_seed}.json",
        "config": {**PROFILE_RECORDS["profile-noise"]["config"], "seed": _seed}}
del _seed
#: The expert classes of the profile records (ridge experts; linear experts have modulus 0).
PROFILE_EXPERTS: tuple[str, ...] = ("sigmoid", "silu")


def profile_configs(name: str, **overrides) -> dict[tuple[str, str], e1_profile.ProfileConfig]:
    """``{(gate, expert): ProfileConfig}`` of the profile record ``name``
    (:data:`PROFILE_RECORDS`; ``overrides`` replace fields of its declared configuration, for
    small test runs)."""
    checks.choice(name, "name", tuple(PROFILE_RECORDS))
    kwargs = {**PROFILE_RECORDS[name]["config"], **overrides}
    return {(g, e): e1_profile.ProfileConfig(expert=e, gate=g, **kwargs).validate()
            for g in QUADRATIC_GATES for e in PROFILE_EXPERTS}


def calibration_slopes(calibration, r_max: float) -> dict[tuple[str, str], list]:
    """Per ``(gate, expert)``, the radius slopes of the calibration sweeps over the points with
    median radius at most ``r_max``
    (:meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.slope_below`), from the sweeps
    where that slope exists. ``calibration``: one ``{(gate, expert): sweep}`` per seed (e.g.
    :func:`load_profile_record` of each record of :data:`PROFILE_CALIBRATION_SEEDS`)."""
    calibration = list(calibration)
    if not calibration:
        raise ValueError("calibration must hold at least one {(gate, expert): sweep} mapping")
    return {key: [s for sweeps in calibration if (s := sweeps[key].slope_below(r_max)) is not None]
            for key in calibration[0]}


def profile_slope_bands(slopes: dict, *, theory: float | None = None, outward: bool = True
                        ) -> dict[tuple[str, str], tuple | None]:
    """The declared bands of the noise sweep's radius slope: per ``(gate, expert)``,
    :func:`~gated_hmoe.experiments.e1_profile.band_from_calibration` of ``slopes[key]`` (from
    :func:`calibration_slopes`) around ``theory`` -- by default :data:`PROFILE_THEORY_SLOPE`
    of the gate; ``None`` where there is no calibration slope."""
    return {key: (e1_profile.band_from_calibration(
                      [(s.slope, s.ci) for s in v],
                      PROFILE_THEORY_SLOPE[key[0]] if theory is None else theory, outward=outward)
                  if v else None)
            for key, v in slopes.items()}


def make_profile_record(name: str, *, cache_dir=None, machine: str = "unknown", log=None,
                        **overrides) -> dict:
    """Run every sweep of :func:`profile_configs` ``(name)`` through
    :func:`gated_hmoe.experiments.e1_profile.run_profiles` and return the record: the
    metadata of :func:`make_record` and one entry per sweep (its gate, expert and
    :meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.to_dict`)."""
    configs = profile_configs(name, **overrides)
    commit = runner.source_commit()
    load = [round(os.getloadavg()[0], 1)]
    sweeps, start = [], time.perf_counter()
    for (gate, expert), cfg in configs.items():
        sweep = e1_profile.run_profiles(cfg, cache_dir=cache_dir, progress=False)
        sweeps.append({"gate": gate, "expert": expert, **sweep.to_dict()})
        if log is not None:
            log(f"{gate} {expert}: fits {sweep.seconds:.0f} s, certified "
                f"{sweeps[-1]['certified']}/{sweeps[-1]['fits']}")
    return {**_provenance(name, machine, commit, load, start),
            "overrides": overrides, "sweeps": sweeps}


def profile_provenance(name: str, path=None) -> dict:
    """Where and when the profile record ``name`` was written: its ``date``, ``machine``,
    ``commit``, ``seconds`` and ``cache`` fields (the sweeps: :func:`load_profile_record`)."""
    path, record = _read_record(name, path, PROFILE_RECORDS)
    return {k: record.get(k) for k in ("date", "machine", "commit", "seconds", "cache")}


def load_profile_record(name: str, path=None, **overrides
                        ) -> dict[tuple[str, str], "e1_profile.ProfileSweep"]:
    """Read the profile record ``name`` (default ``RECORD_DIR / PROFILE_RECORDS[name]["file"]``):
    ``{(gate, expert): ProfileSweep}``. Its sweeps must be exactly :func:`profile_configs`
    (``overrides`` as written), each hashing to its stored cache key; ``ValueError`` naming
    what does not match."""
    configs = profile_configs(name, **overrides)
    path, record = _read_record(name, path, PROFILE_RECORDS)
    keys = [(s["gate"], s["expert"]) for s in record.get("sweeps", [])]
    if record.get("name") != name or keys != list(configs):
        raise ValueError(f"record {path}: {record.get('name')!r} with sweeps {keys}, expected "
                         f"{name!r} with {list(configs)}")
    sweeps = e1_profile.sweeps_from_record({f"{g}/{e}": s for (g, e), s
                                            in zip(keys, record["sweeps"])})
    out = {}
    for key, sweep in zip(keys, sweeps.values()):
        if sweep.config != configs[key]:
            raise ValueError(f"record {path}, sweep {key}: configuration differs from "
                             f"profile_configs({name!r})")
        out[key] = sweep
    return out


@dataclasses.dataclass(frozen=True)
class RecordedSweep:
    """One sweep of a record, with the parts of
    :class:`~gated_hmoe.experiments.e1_rates.SweepResult` that the tables use: ``config``,
    ``x``, :meth:`losses`, :meth:`failures`, :meth:`failure_count` and ``slopes``
    (recomputed from the recorded losses exactly as :func:`e1_rates.compute_slopes` does)."""

    config: e1_rates.SweepConfig
    entry: dict

    @property
    def x(self) -> np.ndarray:
        return np.array(self.entry["x"], float)

    def losses(self, metric: str) -> np.ndarray:
        checks.choice(metric, "metric", TABLE_METRICS)
        return np.array([[np.nan if v is None else v for v in row]
                         for row in self.entry["losses"][metric]], float)

    def failures(self) -> list[int]:
        return list(self.entry["failures"])

    def failure_count(self) -> tuple[int, int]:
        return int(sum(self.failures())), len(self.x) * self.config.replicates

    @property
    def slopes(self) -> dict:
        lo, hi = self.config.slope_range()
        return {m: rates.slope(self.x, self.losses(m), x_min=lo, x_max=hi,
                               seed=self.config.seed) for m in TABLE_METRICS}


def record_results(record: dict) -> dict:
    """``{(gate, expert, spread): RecordedSweep}`` of a record from :func:`load_record`."""
    return {(s["gate"], s["expert"], s["spread"]):
            RecordedSweep(e1_rates.SweepConfig(**s["config"]).validate(), s)
            for s in record["sweeps"]}


def budget_comparison(short: dict, long: dict, *, metric: str = "worst_overfitted") -> dict:
    """The same sweeps at two iteration budgets (``short``, ``long``: results or recorded
    sweeps with the same keys, configurations differing only in ``max_iter``).

    ``{key: row}``, each row: ``failures`` ``(short, long)`` and ``fits``; ``medians``
    ``(short, long)`` of ``metric`` per grid point; ``x``; ``main`` and ``upper`` slope
    triples ``(short, long)`` over the configured range and ``[UPPER_FIT_MIN, max]``;
    ``upper_change``: the largest relative change of a median over the upper range.
    """
    out = {}
    for key, b in long.items():
        a = short[key]
        if dataclasses.replace(a.config, max_iter=b.config.max_iter) != b.config:
            raise ValueError(f"short[{key!r}] and long[{key!r}] must be the same sweep, "
                             "differing only in max_iter")
        med = [np.median(np.where(np.isfinite(L), L, np.inf), axis=1)
               for L in (a.losses(metric), b.losses(metric))]
        up = a.x >= UPPER_FIT_MIN * (1 - 1e-9)
        uppers = [_upper_slope(r, metric) for r in (a, b)]
        out[key] = {
            "failures": (a.failure_count()[0], b.failure_count()[0]),
            "fits": a.failure_count()[1], "x": a.x, "medians": tuple(med),
            "main": tuple(_slope_triple(r.slopes[metric]) for r in (a, b)),
            "upper": tuple(_slope_triple(s) for s in uppers),
            "upper_change": float(np.max(np.abs(med[1][up] / med[0][up] - 1.0)))
            if up.any() else float("nan"),
        }
    return out


__all__ = ["BANDS", "CHAPTER_EXPERTS", "CHAPTER_SWEEPS", "QUADRATIC_GATES", "RECORDS",
           "RECORD_COMMAND", "RECORD_DIR", "RecordedSweep", "TABLE_METRICS", "UPPER_FIT_MIN",
           "budget_comparison", "format_rows", "gate_label", "load_profile_record", "load_record",
           "profile_provenance",
           "make_profile_record", "make_record", "modulus_law", "predicted_radius", "PROFILE_CALIBRATION_SEEDS", "PROFILE_EXPERTS", "PROFILE_MAX_ITER", "PROFILE_RECORDS", "PROFILE_THEORY_SLOPE", "calibration_slopes", "profile_slope_bands", "profile_configs",
           "modulus", "modulus_exponent", "rates_command", "record_configs", "record_results",
           "run_grid", "slope_rows", "split_halves", "split_profile", "split_slopes",
           "sweep_config", "sweep_entry", "upper_slopes", "write_record"]
