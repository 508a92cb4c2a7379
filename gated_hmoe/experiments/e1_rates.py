r"""Rate experiments E1 (SPEC §5): sweeps over sample size or noise, cached and resumable.

A :class:`SweepConfig` declares everything that determines the numbers (truth, expert and
gate class, atoms, grid, replicates, seed, initialisation, optimiser budget).
:func:`run_sweep` fits every replicate at every grid point with the batched least-squares
estimator, measures Voronoi losses, fits log-log slopes with bootstrap intervals, and caches
each grid point on disk (atomic writes), keyed by a hash of the configuration; an
interrupted run resumes where it stopped and gives identical numbers.

Two sweeps:

- ``sweep="n"``: ``n`` log-spaced in ``[n_min, n_max]`` at fixed noise variance ``noise``;
- ``sweep="noise"`` (the E1 contrast protocol): ``n`` fixed, ``nu`` log-spaced in
  ``[noise_min, noise_max]``; the same inputs and standard normal draws are reused at every
  ``nu`` (common random numbers), ``y = f(x) + sqrt(nu) eps``.

Both report losses against the effective sample size ``n / nu``. Failures are handled as
everywhere in the book: a fit that the loop does not certify converged keeps the losses of
where it stopped, is flagged (``converged``/``failed``) and counted in every table and
legend; a non-finite fit has ``nan`` losses, which rank as ``+inf`` in medians
(:func:`gated_hmoe.estimation.rates.slope`).

Also here, for the chapter "Estimating experts: rates and the contrast": its two families of
sweeps (:func:`n_sweep_configs`, :func:`noise_sweep_configs`), their tables, the comparison
of iteration budgets, the population loss along and across the exact-fit valley
(:func:`valley_profile`), the overlap of the two sweeps (:func:`sweep_overlap`) and a small
live fit (:func:`live_fit`). Figures: :mod:`gated_hmoe.viz.rates`.

Command line: ``python -m gated_hmoe rates --help``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import init as inits
from gated_hmoe.estimation import moe_fit, rates, voronoi
from gated_hmoe.experiments import runner
from gated_hmoe.models import data, moe

SWEEPS: tuple[str, ...] = ("n", "noise")
#: Lower end of the slope fit for the noise sweep (SPEC §5: slopes over [5.6e10, 1e17]).
NOISE_FIT_MIN: float = 5.6e10
#: Lower end of the *upper* slope range of a 9-level noise sweep (its last 4 grid points,
#: ``1.78e13 .. 1e17``), where the medians no longer depend on the iteration budget
#: (measured: 500 vs 2000 iterations in chapter 06, 500 vs 5000 in chapter 04).
UPPER_FIT_MIN: float = 1.7e13
#: Config fields that only choose the slope range: they do not change a fit, so they are
#: not part of the cache key (a new range re-uses the cached grid points).
SLOPE_ONLY_FIELDS: tuple[str, ...] = ("fit_min", "fit_max")
#: Losses for which slopes are reported (when defined for the configuration).
METRICS: tuple[str, ...] = ("d1", "d2", "worst_singleton", "worst_overfitted", "V")
#: Every number stored per replicate (what :meth:`SweepResult.losses` can return).
REPLICATE_FIELDS: tuple[str, ...] = METRICS + (
    "d2_r2", "mse_over_noise", "excess_loss", "grad_norm", "decrement_over_noise",
    "iterations", "converged", "failed")


#: The most grid points a sweep may have (each one fits every replicate; the book's longest
#: sweep has 17).
MAX_POINTS: int = 10_000


def check_sweep(cfg) -> None:
    """Check the sweep fields that E1's configurations share (``sweep``, ``n_min``, ``n_max``,
    ``noise`` or ``n``, ``noise_min``, ``noise_max``, ``points``, ``replicates``, ``seed``,
    ``max_iter``, ``rtol``); ``ValueError``/``TypeError`` naming the field."""
    if cfg.sweep == "n":
        lo = checks.positive_int(cfg.n_min, "n_min")
        hi = checks.positive_int(cfg.n_max, "n_max")
        if hi < lo:
            raise ValueError(f"n_max must be >= n_min, got n_min={lo}, n_max={hi}")
        checks.real(cfg.noise, "noise", positive=True)
    else:
        checks.positive_int(cfg.n, "n")
        lo = checks.real(cfg.noise_min, "noise_min", positive=True)
        hi = checks.real(cfg.noise_max, "noise_max", positive=True)
        if hi < lo:
            raise ValueError(f"noise_max must be >= noise_min, got {lo} and {hi}")
    if checks.positive_int(cfg.points, "points") > MAX_POINTS:
        raise ValueError(f"points must be <= {MAX_POINTS} (each grid point fits every "
                         f"replicate), got {cfg.points}")
    checks.positive_int(cfg.replicates, "replicates")
    checks.positive_int(cfg.seed, "seed", minimum=0)
    checks.positive_int(cfg.max_iter, "max_iter")
    checks.real(cfg.rtol, "rtol", positive=True)


def sweep_grid(cfg) -> list[tuple[int, float]]:
    """Grid points ``(n, nu)`` of an E1 configuration, in increasing effective sample size
    ``n / nu``: ``n`` log-spaced at fixed ``noise`` (``sweep="n"``), or ``nu`` log-spaced at
    fixed ``n`` (``sweep="noise"``)."""
    if cfg.sweep == "n":
        ns = np.unique(np.round(np.logspace(math.log10(cfg.n_min), math.log10(cfg.n_max),
                                            cfg.points)).astype(int))
        return [(int(n), float(cfg.noise)) for n in ns]
    nus = np.logspace(math.log10(cfg.noise_max), math.log10(cfg.noise_min), cfg.points)
    nus = sorted({float(f"{v:.12e}") for v in nus}, reverse=True)
    return [(int(cfg.n), v) for v in nus]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that determines a rate experiment's numbers (hashed for the cache).

    ``true``: a measure as a dict (``beta0, beta1, expert[, quad]``) or ``None`` for
    :func:`gated_hmoe.models.moe.default_truth`. ``fit_min``/``fit_max``: range of ``n / nu`` used
    for the slopes (``None``: whole grid; for the noise sweep ``fit_min`` defaults to
    :data:`NOISE_FIT_MIN`). ``init`` etc.: see :class:`gated_hmoe.estimation.init.InitConfig`.
    ``max_iter``/``rtol``: optimiser budget and stopping rule
    (:func:`gated_hmoe.estimation.moe_fit.fit`).
    """

    expert: str = "sigmoid"
    gate: str = "linear"
    k_true: int = 2
    k_fit: int = 2
    sweep: str = "n"
    n_min: int = 1000
    n_max: int = 100_000
    points: int = 12
    noise: float = 1e-6
    n: int = 1000
    noise_min: float = 1e-14
    noise_max: float = 1e-4
    replicates: int = 20
    seed: int = 0
    init: str = "near"
    spread: float = 0.1
    split_atom: int = 0
    starts: int = 8
    box: float = 6.0
    max_iter: int = 500
    rtol: float = 1e-3
    true: dict | None = None
    fit_min: float | None = None
    fit_max: float | None = None

    # -------------------------------------------------------------- validation
    def truth(self) -> moe.MixingMeasure:
        """The true measure (pinned)."""
        if self.true is None:
            return moe.default_truth(self.expert, gate=self.gate)
        return moe.pin_last(moe.measure_from_dict(self.true, "true", expert=self.expert,
                                                  gate=self.gate))

    def validate(self) -> "SweepConfig":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        checks.choice(self.expert, "expert", moe.EXPERTS)
        checks.choice(self.gate, "gate", moe.GATES)
        checks.choice(self.sweep, "sweep", SWEEPS)
        checks.choice(self.init, "init", inits.INITS)
        k_true = checks.positive_int(self.k_true, "k_true")
        k_fit = checks.positive_int(self.k_fit, "k_fit")
        if k_fit < k_true:
            raise ValueError(f"k_fit must be >= k_true, got k_fit={k_fit} < k_true={k_true}")
        G = self.truth()
        if G.beta0.shape[0] != k_true:
            raise ValueError(f"k_true must equal the number of atoms of the true measure "
                             f"({G.beta0.shape[0]}), got {k_true}")
        check_sweep(self)
        for name in ("fit_min", "fit_max"):
            if getattr(self, name) is not None:
                checks.real(getattr(self, name), name, positive=True)
        self.init_config().validate()
        if self.init == "near" and k_fit != k_true:
            raise ValueError(f"init='near' needs k_fit == k_true (got k_fit={k_fit}, "
                             f"k_true={k_true}); use init='split' for over-specified fits")
        if self.init == "split" and k_fit == k_true:
            raise ValueError("init='split' needs k_fit > k_true; use init='near' for exact fits")
        if self.init == "split" and self.split_atom >= k_true - 1:
            raise ValueError(f"split_atom must index a non-pinned true atom (< {k_true - 1}), "
                             f"got {self.split_atom}")
        if (self.fit_min is not None or self.fit_max is not None) and self.slope_count() < 2:
            lo, hi = self.slope_range()     # a range asked for explicitly must hold a slope
            xs = [float(f"{n / nu:.3g}") for n, nu in self.grid()]
            raise ValueError(f"the slope range (fit_min={lo}, fit_max={hi}) must hold at least 2 "
                             f"of the grid's n/nu values (points={self.points}: {xs}), "
                             f"got {self.slope_count()}")
        return self

    def slope_count(self) -> int:
        """How many grid points lie in the slope range (a slope needs 2; with the default
        range and fewer, the sweep runs and reports its slopes as not computable)."""
        lo, hi = self.slope_range()
        return sum(1 for n, nu in self.grid() if (lo is None or n / nu >= lo * (1 - 1e-9))
                   and (hi is None or n / nu <= hi * (1 + 1e-9)))

    def slope_note(self) -> str | None:
        """Why no slope can be fitted (fewer than 2 grid points in the slope range), else
        ``None``."""
        count, points = self.slope_count(), len(self.grid())
        if count >= 2:
            return None
        if points < 2:
            return f"no slope can be fitted: the grid has {points} n/nu value, a slope needs 2"
        lo, hi = self.slope_range()
        where = f"[{lo or 0:.3g}, {'inf' if hi is None else f'{hi:.3g}'}]"
        return (f"no slope can be fitted: {count} of the grid's {points} n/nu values lie in "
                f"the slope range {where} (fit_min, fit_max), a slope needs 2")

    def init_config(self) -> inits.InitConfig:
        """The declared initialisation."""
        return inits.InitConfig(self.init, self.spread, self.split_atom, self.starts, self.box)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hex hash of everything that determines the fits (the cache key)."""
        fits = {k: v for k, v in self.to_dict().items() if k not in SLOPE_ONLY_FIELDS}
        return runner.config_key(fits)

    # -------------------------------------------------------------- grid
    def grid(self) -> list[tuple[int, float]]:
        """Grid points ``(n, nu)``, in increasing effective sample size ``n / nu``."""
        return sweep_grid(self)

    def slope_range(self) -> tuple[float | None, float | None]:
        lo = self.fit_min
        if lo is None and self.sweep == "noise":
            lo = NOISE_FIT_MIN
        return lo, self.fit_max


# ------------------------------------------------------------------ memory

#: Peak-memory model of :func:`run_sweep`, used to refuse sizes the machine cannot hold
#: before any work: ``MEMORY_BASE`` bytes (Python, JAX, the compiled loop), plus
#: ``MEMORY_PER_SAMPLE`` bytes per fitted replicate (times ``starts`` for random
#: multi-starts) and sample of the largest grid point at ``D = 1`` (the draws, their numpy
#: copies and the padded planar layout of the loop; scaled by ``(D + 2) / 3``), plus
#: ``MEMORY_PER_RECORD`` bytes per replicate and grid point (the stored records). Calibrated
#: by measuring the peak resident memory of ``rates`` runs
#: (``scripts/calibrate_memory.py``, 2 CPU cores, two host devices, sigmoid experts, k = 2:
#: 412 MiB at 4 replicates x 100 samples, 714 MiB at 16 x 2e5, 1587 MiB at 4000 replicates
#: on 4 grid points of <= 100 samples, giving 412 MiB, 99 B per sample and 75 kB per record;
#: the values below are rounded up).
MEMORY_BASE: int = 450 * 2**20
MEMORY_PER_SAMPLE: float = 100.0
MEMORY_PER_RECORD: float = 75_000.0


def peak_bytes(config: SweepConfig) -> int:
    """Estimated peak memory of :func:`run_sweep` for ``config`` in bytes (see
    :data:`MEMORY_PER_SAMPLE`); an estimate for refusing impossible sizes, not a bound."""
    fits = config.replicates * (config.starts if config.init == "random" else 1)
    n = config.n_max if config.sweep == "n" else config.n
    D = config.truth().beta1.shape[1]
    return int(MEMORY_BASE + MEMORY_PER_SAMPLE * fits * n * (D + 2) / 3
               + MEMORY_PER_RECORD * config.replicates * config.points)


# ------------------------------------------------------------------ one grid point

@functools.partial(jax.jit, static_argnames=("n", "D", "R", "expert", "gate"))
def _point_data(key, G: moe.MixingMeasure, *, n: int, D: int, R: int, expert: str, gate: str):
    """One grid point's draws, compiled as one program: ``x: (R, n, D)``, standard normal
    ``eps: (R, n)`` and the true regression function ``f: (R, n)``."""
    return data.draws_and_means(jax.random.split(key, R), G, n, D, expert, gate)


def run_point(config: SweepConfig, n: int, nu: float, *, devices: int | None = None,
              capacity: int | None = None) -> dict:
    """Fit all replicates at one grid point; return a JSON-ready dict (no caching).
    ``capacity``: see :func:`gated_hmoe.estimation.moe_fit.fit` (one compiled fit for a whole sweep)."""
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    config.validate()
    n = checks.positive_int(n, "n")
    nu = checks.real(nu, "nu", positive=True)
    G = config.truth()
    D = G.beta1.shape[1]
    R = config.replicates
    spec = moe.make_spec(expert=config.expert, gate=config.gate, k=config.k_fit, D=D)
    base = jax.random.key(config.seed)
    x, eps, f_true = _point_data(jax.random.fold_in(base, n), jax.tree.map(jnp.asarray, G),
                                 n=n, D=D, R=R, expert=config.expert, gate=config.gate)
    x, eps = np.asarray(x), np.asarray(eps)
    y = np.asarray(f_true) + math.sqrt(nu) * eps
    theta0 = inits.initial_thetas(jax.random.fold_in(base, 2**30 + 7), G, spec,
                                  config.init_config(), R)
    t0 = time.perf_counter()
    res = moe_fit.fit_with_init(x, y, theta0, spec=spec, max_iter=config.max_iter,
                                rtol=config.rtol, devices=devices, capacity=capacity)
    seconds = time.perf_counter() - t0
    mse_true = np.mean(eps ** 2, axis=1) * nu
    reps = []
    for r in range(R):
        finite = bool(np.all(np.isfinite(res.theta[r])))
        if finite:
            L = voronoi.losses(res.measure(r), G)
        else:
            L = {m: float("nan") for m in voronoi.LOSS_NAMES}
            L["atom_error"], L["atom_overfitted"] = [], []
        reps.append({**L,
                     "mse_over_noise": float(res.mse[r] / nu),
                     "excess_loss": float(n * (res.mse[r] - mse_true[r]) / nu),
                     "grad_norm": float(res.grad_norm[r]),
                     "decrement_over_noise": float(res.decrement[r] / nu),
                     "iterations": int(res.iterations[r]),
                     "converged": bool(res.converged[r]),
                     "failed": bool(res.failed[r]),
                     "theta": [float(v) for v in res.theta[r]]})
    return {"n": int(n), "noise": float(nu), "x": float(n / nu), "seconds": seconds,
            "failures": int(np.sum(res.failed)), "replicates": reps}


# ------------------------------------------------------------------ the sweep

@dataclasses.dataclass
class SweepResult:
    """Results of :func:`run_sweep`. ``points[i]["replicates"][r]`` holds each replicate's
    losses and diagnostics; ``slopes`` maps a metric to its :class:`~gated_hmoe.estimation.rates.Slope`,
    or to ``None`` when the grid has fewer than 2 points in the slope range
    (:meth:`SweepConfig.slope_note` says why)."""

    config: SweepConfig
    points: list[dict]
    slopes: dict[str, rates.Slope | None]
    seconds: float
    versions: dict

    @property
    def x(self) -> np.ndarray:
        """Effective sample sizes ``n / nu`` of the grid."""
        return np.array([p["x"] for p in self.points])

    def losses(self, metric: str) -> np.ndarray:
        """``(points, replicates)`` array of one per-replicate number (any of
        :data:`REPLICATE_FIELDS`; losses are ``nan`` where a fit failed)."""
        checks.choice(metric, "metric", REPLICATE_FIELDS)
        return np.array([[r[metric] for r in p["replicates"]] for p in self.points], float)

    def overfitted_weights(self) -> np.ndarray:
        """``(points, replicates)``: for each fit the smallest mixing weight
        ``exp(beta0_i) / sum_j exp(beta0_j)`` among the atoms that share a Voronoi cell
        (``nan`` without an over-fitted cell or for a non-finite fit). A weight near 0 marks
        a *fading* surplus atom, whose other parameters the data barely constrain."""
        cfg = self.config
        spec = moe.make_spec(expert=cfg.expert, gate=cfg.gate, k=cfg.k_fit,
                             D=cfg.truth().beta1.shape[1])
        out = np.full((len(self.points), cfg.replicates), np.nan)
        for i, p in enumerate(self.points):
            for r, rep in enumerate(p["replicates"]):
                over = np.array(rep.get("atom_overfitted", []), bool)
                theta = np.asarray(rep["theta"], float)
                if over.any() and np.all(np.isfinite(theta)):
                    b0 = np.asarray(moe.unpack(jnp.asarray(theta), spec).beta0)
                    w = np.exp(b0 - b0.max())
                    out[i, r] = float(np.min(w[over]) / np.sum(w))
        return out

    def failures(self) -> list[int]:
        """Fits not certified converged, per grid point (counted, never dropped)."""
        return [p["failures"] for p in self.points]

    def failure_count(self) -> tuple[int, int]:
        """``(failed fits, all fits)`` over the whole sweep."""
        return int(sum(self.failures())), len(self.points) * self.config.replicates

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "cache_key": self.config.key(),
                "versions": self.versions,
                "init": dataclasses.asdict(self.config.init_config()),
                "truth": moe.measure_to_dict(self.config.truth()),
                "grid": {"n": [p["n"] for p in self.points],
                         "noise": [p["noise"] for p in self.points],
                         "effective_sample_size": [p["x"] for p in self.points]},
                "slopes": {m: None if s is None else s.to_dict() for m, s in self.slopes.items()},
                "slope_note": self.config.slope_note(),
                "slope_notes": slope_notes(self.config, self.slopes),
                "failures": self.failures(), "total_failures": int(sum(self.failures())),
                "seconds": self.seconds, "points": self.points}


def upper_slopes(results: dict, *, metric: str = "worst_overfitted",
                 x_min: float = UPPER_FIT_MIN) -> dict:
    """``{key: Slope}``: slope of ``metric`` against ``n / nu`` over ``[x_min, max]`` for each
    :class:`SweepResult` in ``results`` (same bootstrap as the main slopes, seed of the
    sweep's configuration)."""
    return {key: rates.slope(res.x, res.losses(metric), x_min=x_min, seed=res.config.seed)
            for key, res in results.items()}


def compute_slopes(config: SweepConfig, points: list[dict]) -> dict[str, rates.Slope | None]:
    """Slopes of every defined metric against ``n / nu`` over the configured range; ``None``
    for each when fewer than 2 grid points lie in the range (:meth:`SweepConfig.slope_note`)."""
    x = np.array([p["x"] for p in points])
    lo, hi = config.slope_range()
    computable = config.slope_note() is None
    out = {}
    for m in METRICS:
        L = np.array([[r[m] for r in p["replicates"]] for p in points], float)
        if m == "worst_overfitted" and config.k_fit == config.k_true:
            continue
        if m == "V" and config.k_fit == config.k_true:
            continue
        if m == "worst_singleton" and np.all(np.isnan(L)):
            continue
        out[m] = rates.slope(x, L, x_min=lo, x_max=hi, seed=config.seed) if computable else None
    return out


#: Metrics of the over-fitted atoms: end points of over-specified fits (SPEC §5).
ENDPOINT_METRICS: tuple[str, ...] = ("worst_overfitted", "V")


def slope_notes(config: SweepConfig, slopes: dict) -> dict[str, str]:
    """Why a printed slope is not a rate, per metric: a median in range that is a failed fit
    (the slope is undefined), or the end points of an over-specified fit's over-fitted atoms,
    which report the optimiser's start, budget and branch rather than what the data
    determine (a profile measures that: ``python -m gated_hmoe profile``)."""
    notes = {}
    for m, s in slopes.items():
        if s is not None and not np.isfinite(s.slope):
            notes[m] = "undefined: a median in the slope range is a failed fit"
        elif s is not None and m in ENDPOINT_METRICS and config.k_fit > config.k_true:
            notes[m] = ("end points of an over-specified fit: they report the start, budget "
                        "and branch, not a rate (see the profile command)")
    return notes


def run_sweep(config: SweepConfig, *, cache_dir=None, progress: bool = True,
              devices: int | None = None) -> SweepResult:
    """Run (or load from cache) every grid point of ``config``; fit the slopes.

    Points live in the :class:`~gated_hmoe.experiments.runner.Store` ``"rates"`` under
    ``<config.key()>/`` (``cache_dir``: default ``$GATED_HMOE_CACHE``); an unreadable point
    is reported and recomputed. ``devices``: JAX devices to shard replicates over (does not
    enter the cache key).
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    config.validate()
    if devices is not None:
        devices = checks.positive_int(devices, "devices")
    store = runner.Store("rates", cache_dir)
    store.save(f"{config.key()}/config", config.to_dict())
    grid = config.grid()
    capacity = max(n for n, _ in grid)         # one compiled fit serves every grid point
    points = []
    bar = runner.progress(grid, desc=f"rates {config.expert} k={config.k_fit} ({config.sweep})",
                          enabled=progress, unit="pt")
    for n, nu in bar:
        point = store.get(f"{config.key()}/point_n{n}_nu{nu:.6e}",
                          lambda: run_point(config, n, nu, devices=devices, capacity=capacity))
        bar.set_postfix(n=n, nu=f"{nu:.0e}", fail=point["failures"])
        points.append(point)
    seconds = sum(p["seconds"] for p in points)
    return SweepResult(config, points, compute_slopes(config, points), seconds, runner.versions())


# ------------------------------------------------------------------ the chapter's sweeps

#: Expert classes of the chapter (the ridge classes and the linear one).
CLASSES: tuple[str, ...] = ("linear", "sigmoid", "silu")
#: Noise-sweep cells ``(expert, spread)`` of SPEC §5's table.
NOISE_CELLS: tuple[tuple[str, float], ...] = (
    ("linear", 0.1), ("linear", 0.3), ("sigmoid", 0.1), ("silu", 0.1), ("silu", 0.3))
#: Range of ``n / nu`` where the two sweeps overlap (SPEC §5).
OVERLAP: tuple[float, float] = (1e9, 1e11)


def n_sweep_configs(*, n_max: int = 30_000, points: int = 4, replicates: int = 8,
                    noise: float = 1e-6, seed: int = 0) -> dict[tuple[str, int], SweepConfig]:
    """Sample-size sweeps keyed ``(expert, k_fit)``: ``k_fit = 2`` (``init="near"``, spread 0.1)
    and ``k_fit = 3`` (``init="split"``, spread 0.1) for every class in :data:`CLASSES`;
    ``n`` log-spaced in ``[1000, n_max]``."""
    n_max = checks.positive_int(n_max, "n_max", minimum=1000)
    out = {}
    for expert in CLASSES:
        for k in (2, 3):
            out[(expert, k)] = SweepConfig(
                expert=expert, k_true=2, k_fit=k, sweep="n", n_min=1000, n_max=n_max,
                points=points, replicates=replicates, noise=noise, seed=seed,
                init="near" if k == 2 else "split", spread=0.1).validate()
    return out


def noise_sweep_configs(*, points: int = 9, replicates: int = 12, n: int = 1000,
                        seed: int = 0) -> dict[tuple[str, float], SweepConfig]:
    """Noise sweeps (the E1 contrast protocol) keyed ``(expert, spread)`` over :data:`NOISE_CELLS`:
    ``k* = 2``, ``k = 3``, split initialisation, ``nu`` from ``1e-4`` to ``1e-14``.

    ``points = 9`` puts grid points at ``n / nu = 10^{7 + 1.25 i}``, so the slope range
    ``[5.6e10, 1e17]`` of SPEC §5 holds its last six points.
    """
    replicates = checks.positive_int(replicates, "replicates")
    if replicates < 12:
        raise ValueError(f"replicates must be >= 12 for the contrast protocol, got {replicates}")
    return {(e, s): SweepConfig(
        expert=e, k_true=2, k_fit=3, sweep="noise", n=n, noise_min=1e-14, noise_max=1e-4,
        points=points, replicates=replicates, seed=seed, init="split", spread=s).validate()
        for e, s in NOISE_CELLS}


def run_all(configs: dict, *, cache_dir=None) -> dict:
    """:func:`run_sweep` for every config (no progress bar)."""
    return {key: run_sweep(cfg, cache_dir=cache_dir, progress=False)
            for key, cfg in configs.items()}


def slope_rows(results: dict, metrics=("worst_overfitted", "d1", "V")) -> list[dict]:
    """One row per sweep: ``key``, and per metric ``(slope, lo, hi)`` rounded to 2 decimals."""
    rows = []
    for key, res in results.items():
        row = {"key": key, "failures": res.failure_count()}
        for m in metrics:
            s = res.slopes.get(m)
            row[m] = None if s is None else (round(s.slope, 2), round(s.ci[0], 2), round(s.ci[1], 2))
        rows.append(row)
    return rows


def plateau(result: SweepResult, metric: str = "worst_overfitted",
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
        up = x >= UPPER_FIT_MIN
        med = [np.median(r.losses(metric), axis=1) for r in (a, b)]
        wa, wb = (r.overfitted_weights() < fade for r in (a, b))
        upper = [upper_slopes({0: r}, metric=metric)[0] for r in (a, b)]
        rows.append({
            "key": key,
            "failures": (a.failure_count()[0], b.failure_count()[0], a.failure_count()[1]),
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
    lab = rates.format_slope
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


# ------------------------------------------------------------------ the valley and the two sweeps

def valley_profile(expert: str, ts, *, quad_points: int = 200) -> dict[str, np.ndarray]:
    r"""Population loss ``||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` along and across the valley.

    ``along``: :func:`gated_hmoe.models.moe.valley_measure` ``G_t`` (split atom 0, ``p = 1/2``,
    value offsets ``±t u/2``). ``across``: the same split with both atoms' value weights
    moved together by ``t u/2`` (the cell's mean expert leaves ``eta*``). Returns
    ``{"t", "along", "across"}``.
    """
    checks.choice(expert, "expert", moe.EXPERTS)
    ts = checks.finite_array(ts, "ts", ndim=1)
    G0 = moe.pin_last(moe.default_truth(expert))
    quad_points = checks.positive_int(quad_points, "quad_points")
    along, across = [], []
    for t in ts:
        Gt = moe.valley_measure(float(t), expert=expert, p=0.5)
        along.append(moe.population_sq_distance(Gt, G0, expert=expert, quad_points=quad_points))
        P = Gt.expert.shape[1]
        shift = np.zeros_like(Gt.expert)
        shift[:2] = 0.5 * float(t) * np.ones(P) / math.sqrt(P)
        Gx = Gt._replace(expert=Gt.expert + shift)
        across.append(moe.population_sq_distance(Gx, G0, expert=expert, quad_points=quad_points))
    return {"t": ts, "along": np.array(along), "across": np.array(across)}


def sweep_overlap(n_result: SweepResult, noise_result: SweepResult,
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


# ------------------------------------------------------------------ a live fit

def live_fit(*, expert: str, k: int, n: int, noise: float, spread: float, replicates: int = 4,
             seed: int = 0, gate: str = "linear") -> dict:
    """A small live least-squares fit (``n <= 1000``) from the chapter's declared starts.

    ``k = 2``: ``init="near"``; ``k = 3``: ``init="split"``; the default truth of ``gate``
    (:func:`gated_hmoe.models.moe.default_truth`). Returns the fitted measures, the losses
    and the failure flags per replicate, the data of the first replicate (``x``, ``y``),
    and the true and first fitted regression functions on ``grid`` (``f_true``, ``f_fit``).
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
    replicates = checks.positive_int(replicates, "replicates")
    G = moe.pin_last(moe.default_truth(expert, gate=gate))
    spec = moe.make_spec(expert=expert, gate=gate, k=k, D=1)
    kx, ki = jax.random.split(jax.random.key(checks.positive_int(seed, "seed", minimum=0)))
    x, y = data.sample_batch(jax.random.split(kx, replicates), G, n=n, noise_var=noise,
                             expert=expert, gate=gate)
    init = inits.InitConfig("near" if k == 2 else "split", spread)
    theta0 = inits.initial_thetas(ki, G, spec, init, replicates)
    res = moe_fit.fit(np.asarray(x), np.asarray(y), theta0, spec=spec)
    measures = [res.measure(r) for r in range(replicates)]
    grid = np.linspace(-1, 1, 300)
    return {"x": np.asarray(x[0, :, 0]), "y": np.asarray(y[0]), "measures": measures,
            "losses": [voronoi.losses(m, G) for m in measures], "failed": res.failed,
            "grid": grid,
            "f_true": np.asarray(moe.mean(G, grid[:, None], expert=expert, gate=gate)),
            "f_fit": np.asarray(moe.mean(measures[0], grid[:, None], expert=expert, gate=gate)),
            "truth": G, "expert": expert, "gate": gate}


__all__ = ["CLASSES", "FADE_WEIGHT", "MAX_POINTS", "MEMORY_BASE", "MEMORY_PER_RECORD",
           "MEMORY_PER_SAMPLE", "METRICS", "check_sweep", "sweep_grid", "NOISE_CELLS", "NOISE_FIT_MIN", "OVERLAP",
           "REPLICATE_FIELDS", "SLOPE_ONLY_FIELDS", "SWEEPS", "SweepConfig", "SweepResult",
           "UPPER_FIT_MIN", "ENDPOINT_METRICS", "budget_rows", "slope_notes", "compute_slopes", "format_budget_rows", "live_fit",
           "longer_budget", "n_sweep_configs", "noise_sweep_configs", "peak_bytes", "plateau", "run_all",
           "run_point", "run_sweep", "slope_rows", "sweep_overlap", "upper_slopes",
           "valley_profile"]
