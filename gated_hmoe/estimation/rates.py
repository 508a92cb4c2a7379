r"""Convergence rates: log-log slopes of a loss against sample size, with bootstrap intervals.

Given a loss measured for ``R`` replicates at each of ``m`` values ``x`` (sample size ``n``
or effective sample size ``n / nu``), :func:`slope` fits the ordinary least-squares line of
``log(median loss)`` on ``log x`` and a 95% bootstrap interval that resamples replicates
*within* each ``x``. Failed fits are never dropped: a non-finite loss counts as ``+inf``
(it can only raise a median) and is reported in ``failures``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import ArrayLike, Float

from gated_hmoe import checks


@dataclasses.dataclass(frozen=True)
class Slope:
    """A fitted rate: ``loss ~ C x^slope``; ``ci`` the bootstrap interval, ``medians (m,)``."""

    slope: float
    ci: tuple[float, float]
    intercept: float
    medians: tuple[float, ...]
    x: tuple[float, ...]
    failures: tuple[int, ...]
    n_boot: int
    level: float

    def label(self, name: str = "slope") -> str:
        """``"slope -0.49 [-0.53, -0.45]"`` for figure legends; a note instead of a number
        when a median in range is a failed fit (the slope is then undefined)."""
        if not np.isfinite(self.slope):
            return f"{name} undefined (a median in range is a failed fit)"
        return f"{name} {format_slope(self)}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def format_slope(s) -> str:
    """The book's one slope format, ``"-0.49 [-0.53, -0.45]"``: a :class:`Slope`, a
    ``(slope, lo, hi)`` tuple, or ``None`` (``"-"``).

    >>> format_slope((-0.4901, -0.53, -0.45))
    '-0.49 [-0.53, -0.45]'
    """
    if s is None:
        return "-"
    b, lo, hi = (s.slope, *s.ci) if isinstance(s, Slope) else s
    return f"{b:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def ols_slope(logx: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line ``logy = a + b logx``.

    >>> ols_slope(np.log([1., 10., 100.]), np.log([1., .1, .01]))[0]
    -1.0
    """
    b, a = np.polyfit(logx, logy, 1)
    return float(round(b, 12)), float(a)


def loglog_slope(x, y) -> tuple[float, float]:
    """Slope and intercept of ``log y = a + b log x`` for a deterministic curve (no
    replicates); ``(nan, nan)`` when some ``y <= 0`` (an exact zero has no logarithm).

    >>> round(loglog_slope([1.0, 2.0, 4.0], [3.0, 12.0, 48.0])[0], 6)
    2.0
    """
    xa = checks.finite_array(x, "x", ndim=1)
    ya = checks.finite_array(y, "y", shape=(xa.shape[0],))
    if xa.shape[0] < 2 or np.ptp(xa) == 0:
        raise ValueError(f"x must hold at least 2 distinct values, got {xa.tolist()}")
    if np.any(xa <= 0):
        raise ValueError("x must be positive (a log-log slope is fitted)")
    if np.any(ya <= 0):
        return float("nan"), float("nan")
    return ols_slope(np.log(xa), np.log(ya))


def _medians(values: np.ndarray) -> np.ndarray:
    v = np.where(np.isfinite(values), values, np.inf)
    return np.median(v, axis=-1)


def slope(x: Float[ArrayLike, " m"], losses: Float[ArrayLike, "m R"], *, n_boot: int = 2000,
          level: float = 0.95, seed: int = 0, x_min: float | None = None,
          x_max: float | None = None, paired: bool = False) -> Slope:
    """Rate of ``losses: (m, R)`` (replicates along the last axis) against ``x: (m,)``.

    ``x_min``/``x_max`` restrict the fit to a range of ``x`` (inclusive). A median of 0 (an
    exact fit) has no logarithm: the slope is then ``nan``. Bootstrap:
    ``n_boot`` resamples of the replicates within each ``x`` (numpy ``Generator(seed)``),
    percentile interval at ``level``; with ``paired=True`` whole replicate curves are
    resampled (column ``r`` is the same replicate at every ``x``: the grid points share
    their data or noise draws).

    >>> rng = np.random.default_rng(0)
    >>> x = np.logspace(2, 5, 6)
    >>> L = x[:, None] ** -0.5 * np.exp(0.1 * rng.standard_normal((6, 20)))
    >>> s = slope(x, L)
    >>> round(s.slope, 1), s.ci[0] < -0.5 < s.ci[1]
    (-0.5, True)
    """
    x = checks.finite_array(x, "x", ndim=1)
    L = np.asarray(losses, dtype=float)
    if L.ndim != 2 or L.shape[0] != x.shape[0]:
        raise ValueError(f"losses must have shape ({x.shape[0]}, R) to match x, got {L.shape}")
    if L.shape[1] < 1:
        raise ValueError(f"losses must have at least one replicate per x, got shape {L.shape}")
    if np.any(x <= 0):
        raise ValueError("x must be positive (a log-log slope is fitted)")
    if np.any(L[np.isfinite(L)] < 0):
        raise ValueError("losses must be >= 0 (non-finite entries count as failed fits)")
    n_boot = checks.positive_int(n_boot, "n_boot")
    seed = checks.positive_int(seed, "seed", minimum=0)
    for name, v in (("level", level), ("x_min", x_min), ("x_max", x_max)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
            raise TypeError(f"{name} must be a real number, got {v!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    keep = np.ones(x.shape[0], bool)
    if x_min is not None:
        keep &= x >= x_min * (1 - 1e-9)
    if x_max is not None:
        keep &= x <= x_max * (1 + 1e-9)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 x-values in [x_min, x_max] to fit a slope, got {int(keep.sum())}")
    x, L = x[keep], L[keep]
    if np.ptp(x) == 0:
        raise ValueError(f"need at least 2 distinct x-values to fit a slope, got {x.tolist()}")
    failures = tuple(int(v) for v in np.sum(~np.isfinite(L), axis=1))
    med = _medians(L)
    lx = np.log(x)
    with np.errstate(divide="ignore"):
        ly = np.log(med)
    if not np.all(np.isfinite(ly)):
        b, a = float("nan"), float("nan")
    else:
        b, a = ols_slope(lx, ly)
    if not isinstance(paired, bool):
        raise TypeError(f"paired must be a bool, got {type(paired).__name__}")
    rng = np.random.default_rng(seed)
    m, R = L.shape
    idx = np.broadcast_to(rng.integers(0, R, size=(n_boot, 1 if paired else m, R)),
                          (n_boot, m, R))
    boot = _medians(np.take_along_axis(np.broadcast_to(L, (n_boot, m, R)), idx, axis=2))
    with np.errstate(divide="ignore", invalid="ignore"):
        lb = np.log(boot)
    ok = np.all(np.isfinite(lb), axis=1)
    lxc = lx - lx.mean()
    bs = (lb[ok] - lb[ok].mean(1, keepdims=True)) @ lxc / (lxc @ lxc)
    alpha = (1 - level) / 2
    ci = ((float(np.quantile(bs, alpha)), float(np.quantile(bs, 1 - alpha)))
          if bs.size else (float("nan"), float("nan")))
    return Slope(b, ci, a, tuple(float(v) for v in med), tuple(float(v) for v in x), failures,
                 n_boot, level)


__all__ = ["Slope", "slope", "ols_slope", "loglog_slope", "format_slope"]
