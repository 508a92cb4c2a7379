r"""Experiment E2: fitted attention layers, the errors of their HMoE leaves vs ``n / nu``.

A student with a surplus head (:mod:`gated_hmoe.models.heads`) is fitted by least squares
(:mod:`gated_hmoe.estimation.head_fit`) to data from a teacher layer, for every gate
position; its heads are matched to the teacher's by Voronoi cells
(:func:`gated_hmoe.estimation.voronoi.head_losses`) and their errors are swept against the
effective sample size ``n / nu`` (the noise-sweep protocol of SPEC §5: ``n`` fixed, ``nu``
log-spaced, the same inputs and standardised noise at every ``nu``). Failures are handled
as everywhere in the book: a fit that is not certified converged keeps the losses of where
it stopped and is flagged and counted; a non-finite fit has ``nan`` losses.

Cached per position in the :class:`~gated_hmoe.experiments.runner.Store` ``"attention_fit"``.
Figures: :mod:`gated_hmoe.viz.attention`. Command line: ``python -m gated_hmoe attention-fit``.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gated_hmoe import checks
from gated_hmoe.estimation import head_fit, rates, voronoi
from gated_hmoe.estimation import init as inits
from gated_hmoe.experiments import runner
from gated_hmoe.models import heads

#: Lower end of the slope fit against ``n / nu`` (as for E1, SPEC §5).
FIT_MIN: float = 5.6e10
#: Per-head errors swept against ``n / nu``.
METRICS: tuple[str, ...] = ("worst_overfitted", "V")


@dataclasses.dataclass(frozen=True)
class FitSweepConfig:
    """Everything that determines E2's numbers for one gate position (hashed for the cache).

    Noise sweep: ``n`` fixed, ``nu = n / x`` for effective sample sizes
    ``x = logspace(log10_x_min, log10_x_max, points)``; ``replicates`` data sets (the same
    ``X`` and standardised noise at every ``nu``), split initialisation with ``spread``.
    """

    position: str = "MHSA"
    teacher_heads: int = 1
    student_heads: int = 2
    n: int = 1000
    log10_x_min: float = 7.0
    log10_x_max: float = 17.0
    points: int = 11
    replicates: int = 12
    spread: float = 0.1
    seed: int = 0
    max_iter: int = 400
    rtol: float = 1e-3

    def validate(self) -> "FitSweepConfig":
        heads.check_position(self.position)
        th = checks.positive_int(self.teacher_heads, "teacher_heads")
        if th > heads.MAX_TEACHER_HEADS:
            raise ValueError(f"teacher_heads must be <= {heads.MAX_TEACHER_HEADS}, got {th}")
        sh = checks.positive_int(self.student_heads, "student_heads")
        if sh <= th:
            raise ValueError(f"student_heads must exceed teacher_heads (a surplus head), got {sh} <= {th}")
        for name in ("n", "points", "replicates", "max_iter"):
            checks.positive_int(getattr(self, name), name)
        checks.positive_int(self.seed, "seed", minimum=0)
        checks.real(self.spread, "spread", positive=True)
        checks.real(self.rtol, "rtol", positive=True)
        checks.real(self.log10_x_min, "log10_x_min")
        checks.real(self.log10_x_max, "log10_x_max")
        if not self.log10_x_min < self.log10_x_max:
            raise ValueError("log10_x_min must be < log10_x_max")
        return self

    @property
    def x(self) -> np.ndarray:
        """Effective sample sizes ``n / nu``."""
        return np.logspace(self.log10_x_min, self.log10_x_max, self.points)

    @property
    def noise(self) -> np.ndarray:
        return self.n / self.x

    def key(self) -> str:
        """Hex hash of the configuration (the cache key)."""
        return runner.config_key(dataclasses.asdict(self), length=16)


def compute(cfg: FitSweepConfig) -> dict:
    """All fits of one position's sweep (no caching): a JSON-ready dict."""
    t_start = time.perf_counter()
    pos, R = cfg.position, cfg.replicates
    truth = heads.teacher_params(pos, cfg.teacher_heads)
    rng = np.random.default_rng([cfg.seed, 7])
    starts = [inits.split_heads(pos, teacher_heads=cfg.teacher_heads,
                                student_heads=cfg.student_heads, spread=cfg.spread, rng=rng)
              for _ in range(R)]
    _, unravel = ravel_pytree({k: jnp.asarray(v) for k, v in starts[0].items()})
    th0 = np.stack([np.asarray(ravel_pytree({k: jnp.asarray(v) for k, v in s.items()})[0])
                    for s in starts])
    keys = jax.random.split(jax.random.key(cfg.seed), R)
    xs, eps = jax.vmap(lambda k: heads.sample_inputs(k, n=cfg.n))(keys)     # (R, n, 2, 2)
    f = jax.vmap(lambda xx: heads.batched_output({k: jnp.asarray(v) for k, v in truth.items()},
                                                 xx, pos))(xs)
    nus = cfg.noise
    P = len(nus)
    sd = jnp.sqrt(jnp.asarray(nus))[:, None, None, None, None]
    y = (f[None] + sd * eps[None]).reshape((P * R,) + f.shape[1:])
    xb = jnp.broadcast_to(xs[None], (P,) + xs.shape).reshape((P * R,) + xs.shape[1:])
    t0 = np.broadcast_to(th0[None], (P,) + th0.shape).reshape(P * R, -1)
    out = head_fit.fit_students(xb, y, t0, unravel=unravel, position=pos,
                                max_iter=cfg.max_iter, rtol=cfg.rtol)
    ssr_true = np.asarray(jnp.sum(eps ** 2, axis=(1, 2, 3)))                # in units of nu
    points = []
    for a, nu in enumerate(nus):
        reps = []
        for r in range(R):
            b = a * R + r
            theta = out["theta"][b]
            finite = bool(np.all(np.isfinite(theta)) and np.isfinite(out["ssr"][b]))
            if finite:
                pf = {k: np.asarray(v) for k, v in unravel(jnp.asarray(theta)).items()}
                L = voronoi.head_losses(pf, truth, pos)
            else:
                L = {"atom_error": [], "cells": [], "worst_overfitted": float("nan"),
                     "worst_singleton": float("nan"), "V": float("nan")}
            conv = bool(out["converged"][b]) and finite
            reps.append({**L, "converged": conv, "iterations": int(out["iterations"][b]),
                         "excess_loss": float(out["ssr"][b] / nu - ssr_true[r])})
        points.append({"noise": float(nu), "x": float(cfg.n / nu), "replicates": reps,
                       "failures": int(sum(not q["converged"] for q in reps))})
    return {"config": dataclasses.asdict(cfg), "cache_key": cfg.key(),
            "teacher": {k: v.tolist() for k, v in truth.items()}, "points": points,
            "seconds": time.perf_counter() - t_start}


#: Peak-memory model of :func:`run_sweep`: ``MEMORY_BASE`` bytes, plus ``MEMORY_PER_SAMPLE``
#: bytes per fitted sequence (all ``points x replicates`` fits run at once on ``n``
#: sequences each), plus ``MEMORY_PER_RECORD`` bytes per replicate and grid point.
#: Calibrated by measuring the peak resident memory of ``attention-fit`` runs
#: (``scripts/calibrate_memory.py``, 2 CPU cores, MHSA: 498 MiB for 2 fits x 30 sequences,
#: 3629 MiB for 16 fits x 5e4, giving 498 MiB and 4.1 kB per fitted sequence; rounded up
#: below). The per-record term was not measured here: it is E1 rates' 75 kB per replicate
#: and grid point (:data:`gated_hmoe.experiments.e1_rates.MEMORY_PER_RECORD`).
MEMORY_BASE: int = 500 * 2**20
MEMORY_PER_SAMPLE: float = 4200.0
MEMORY_PER_RECORD: float = 75_000.0


def peak_bytes(config: FitSweepConfig) -> int:
    """Estimated peak memory of :func:`run_sweep` for ``config`` (one position) in bytes."""
    fits = config.points * config.replicates
    return int(MEMORY_BASE + MEMORY_PER_SAMPLE * fits * config.n + MEMORY_PER_RECORD * fits)


@dataclasses.dataclass
class FitSweepResult:
    """E2 sweep for one position: ``points[i]["replicates"][r]`` per replicate, slopes per metric."""

    config: FitSweepConfig
    points: list
    seconds: float | None = None   # compute time when it was computed
    cached: bool = False           # loaded from the cache rather than computed now

    @property
    def x(self) -> np.ndarray:
        """Effective sample sizes ``n / nu`` of the grid."""
        return np.array([p["x"] for p in self.points])

    def losses(self, metric: str) -> np.ndarray:
        """``(points, replicates)`` array of one per-replicate number (``nan`` where a fit
        is not finite)."""
        return np.array([[r[metric] for r in p["replicates"]] for p in self.points], float)

    def failures(self) -> int:
        """Fits not certified converged (counted, never dropped)."""
        return int(sum(p["failures"] for p in self.points))

    def failure_count(self) -> tuple[int, int]:
        """``(failed fits, all fits)``."""
        return self.failures(), len(self.points) * self.config.replicates

    def slope(self, metric: str) -> rates.Slope:
        """Log-log slope of the median ``metric`` against ``n/nu`` over ``[FIT_MIN, max]``."""
        return rates.slope(self.x, self.losses(metric), x_min=FIT_MIN, seed=self.config.seed)

    def slope_record(self, metric: str) -> dict | None:
        """Slope and CI for a results file; ``None`` when fewer than 2 points reach
        :data:`FIT_MIN`."""
        if np.sum(self.x >= FIT_MIN) < 2:
            return None
        s = self.slope(metric)
        return {"slope": s.slope, "ci": list(s.ci), "x_min": FIT_MIN}


def run_sweep(config: FitSweepConfig, *, cache_dir=None) -> FitSweepResult:
    """Run (or load from the :class:`~gated_hmoe.experiments.runner.Store` ``"attention_fit"``)
    one position's sweep."""
    if not isinstance(config, FitSweepConfig):
        raise TypeError(f"config must be a FitSweepConfig, got {type(config).__name__}")
    config.validate()
    store = runner.Store("attention_fit", cache_dir)
    key = f"{config.position}-{config.key()}"
    data = store.load(key)
    cached = data is not None
    if not cached:
        data = compute(config)
        store.save(key, data)
    return FitSweepResult(config, data["points"], data.get("seconds"), cached)


def live_fit(*, position: str, spread: float, n: int = 200, replicates: int = 4,
             max_iter: int = 200) -> list[str]:
    """One small live fit at ``n/nu = 1e12`` (nothing cached): one line per replicate with
    its convergence flag and Voronoi-matched errors."""
    cfg = FitSweepConfig(position=position, n=n, log10_x_min=12.0, log10_x_max=13.0, points=2,
                         replicates=replicates, spread=float(spread), max_iter=max_iter)
    reps = compute(cfg.validate())["points"][0]["replicates"]
    return [f"converged={r['converged']}  worst over-fitted error={r['worst_overfitted']:.3e}  "
            f"V={r['V']:.3e}" for r in reps]


__all__ = ["FIT_MIN", "MEMORY_BASE", "MEMORY_PER_RECORD", "MEMORY_PER_SAMPLE", "METRICS",
           "peak_bytes", "FitSweepConfig", "FitSweepResult", "compute", "live_fit",
           "run_sweep"]
