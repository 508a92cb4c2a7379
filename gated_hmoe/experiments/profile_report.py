r"""What a profile sweep reports: the radius slope over the points that can carry one, and the
prediction of the truth's own modulus.

A median radius at the grid's end is a lower bound (*censored*), one at its start an upper
bound, an undetermined one no value at all: none of them enters a slope
(:meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.radius_slope`, over at least
:data:`MIN_SLOPE_POINTS` usable points).

For a mixture-of-experts truth the population version of the excess at offset ``delta`` is
``(n / nu) m(delta)``, with ``m`` the truth's modulus
(:func:`gated_hmoe.estimation.modulus.modulus_values`) on the profile's own offsets; the
same threshold and the same radius rule (:func:`gated_hmoe.estimation.profile.radius`) turn
it into a predicted radius per grid point (:func:`predict`), so censoring, and a far branch
where ``m`` dips again, are predicted too. The quartic law ``m ~ C delta^4`` is the small-
``delta`` limit; at the radii a sweep reaches, the local exponent of ``m``
(:func:`gated_hmoe.estimation.profile.local_exponent`) says whether a radius slope of
``-1/4`` is to be expected or the slope of the predicted radii, ``-1/p`` for a local
exponent ``p``.

A prediction can be ill-conditioned: where ``(n / nu) m(delta)`` passes the threshold almost
flat, or a far offset's population excess sits near ``c``, a small change of the excess
moves the predicted radius by a large factor, and the measured median of a few replicates
(whose excess fluctuates by order one ``nu``) may land on either side. Each grid point
therefore also carries the *predicted range*: the radii at thresholds ``c / F`` and
``c F`` (``F`` = :data:`PREDICTION_FACTOR`). A point is *well conditioned* when both ends
are inside the grid and differ by at most ``F``, or both are censored (or both below the
grid); the agreement of measured and predicted
radii is stated over all points and over the well-conditioned ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import profile, rates
from gated_hmoe.experiments import runner
from gated_hmoe.models import moe
from gated_hmoe.experiments.e1_profile import (MIN_SLOPE_POINTS, ProfileConfig, ProfileSweep,
                                               RadiusSlope, population_solutions)

#: The measured median radius and the truth's predicted radius agree within this factor at
#: every grid point where both are inside the grid (the book's agreement factor,
#: :data:`gated_hmoe.experiments.e1_profile.AGREEMENT_FACTOR`).
PREDICTION_FACTOR: float = 1.5
#: Local exponents of ``m`` within this distance of 4 count as the quartic regime.
QUARTIC_TOLERANCE: float = 0.5
#: Settings of the population modulus behind a prediction
#: (:func:`gated_hmoe.estimation.modulus.modulus_solutions`: its default directions and
#: budget, each offset also started from its neighbours' minimisers, round-off stops a
#: direction).
MODULUS_SETTINGS: dict = {"starts": 4, "quad_points": 200, "max_nfev": 2000,
                          "stop_below": 1e-28, "seed": 0, "continuation": True}


# ------------------------------------------------------------------ the truth's prediction

def population_modulus(config: ProfileConfig, *, cache_dir=None) -> np.ndarray:
    """``m(delta) (K,)`` of the configuration's truth on its offsets
    (:func:`~gated_hmoe.experiments.e1_profile.population_solutions` with
    :data:`MODULUS_SETTINGS`; cached)."""
    if not isinstance(config, ProfileConfig):
        raise TypeError(f"config must be a ProfileConfig, got {type(config).__name__}")
    return population_solutions(config.validate(), MODULUS_SETTINGS, cache_dir=cache_dir)[0]


def output_variance(config: ProfileConfig, *, quad_points: int = 200) -> float:
    """``Var f_{G*}(X)`` of the configuration's truth
    (:func:`gated_hmoe.models.moe.population_variance`)."""
    if not isinstance(config, ProfileConfig):
        raise TypeError(f"config must be a ProfileConfig, got {type(config).__name__}")
    return moe.population_variance(config.truth(), expert=config.expert, gate=config.gate,
                                   quad_points=quad_points)


def predicted_at(config: ProfileConfig, x, *, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """``(radius (P,), status (P,))`` the truth's own prediction at effective sample sizes
    ``x = n / nu (P,)`` on the configuration's offsets and threshold (no data: the radius rule
    on ``x m(delta)``, :func:`gated_hmoe.estimation.profile.predicted_radii`)."""
    m = population_modulus(config, cache_dir=cache_dir)
    return profile.predicted_radii(config.deltas(), m, checks.finite_array(x, "x", ndim=1),
                                   config.c)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The truth's prediction of a sweep: ``m (K,)`` on ``deltas (K,)``; per grid point the
    predicted ``radius`` and its ``status``, the ``measured`` median, their ``ratio``
    (``nan`` unless both lie inside the grid), the ``local_exponent`` of ``m`` at the
    measured median; ``expected_slope``: the slope of the predicted radii over the measured
    slope's points (``nan`` without one); the predicted range ``range_low``, ``range_high``
    (the radii at thresholds ``c / F`` and ``c F``) and whether the point is
    ``well_conditioned`` (both inside the grid, within a factor ``F``, or both censored or
    both below the grid)."""

    deltas: np.ndarray
    m: np.ndarray
    x: np.ndarray
    radius: np.ndarray
    status: np.ndarray
    measured: np.ndarray
    ratio: np.ndarray
    local_exponent: np.ndarray
    expected_slope: float
    range_low: np.ndarray
    range_high: np.ndarray
    well_conditioned: np.ndarray

    def ratios_agree(self, factor: float = PREDICTION_FACTOR, *,
                     well_conditioned_only: bool = False) -> bool:
        """Every finite ratio (measured and predicted radius both inside the grid) within
        ``[1/factor, factor]`` -- at the well-conditioned points only, if asked."""
        keep = np.isfinite(self.ratio)
        if well_conditioned_only:
            keep &= self.well_conditioned
        r = self.ratio[keep]
        return bool(np.all((r >= 1 / factor) & (r <= factor)))

    def within_range(self, factor: float = PREDICTION_FACTOR) -> bool:
        """Every measured median inside the grid lies in
        ``[range_low / factor, range_high * factor]``."""
        keep = (np.isfinite(self.measured) & (self.measured < self.deltas[-1])
                & (self.measured > self.deltas[0]))
        m = self.measured[keep]
        return bool(np.all((m >= self.range_low[keep] / factor)
                           & (m <= self.range_high[keep] * factor)))

    def same_censoring(self) -> bool:
        """Every grid point whose predicted radius is censored is measured censored (median
        at the grid's end), and the reverse."""
        return bool(np.array_equal(self.status == "censored", self.measured >= self.deltas[-1]))

    def agrees(self, factor: float = PREDICTION_FACTOR) -> bool:
        """:meth:`ratios_agree` and :meth:`same_censoring`."""
        return self.ratios_agree(factor) and self.same_censoring()

    def regime(self, used: tuple[int, ...]) -> str:
        """Whether the measured radii over ``used`` lie in the quartic regime of ``m``."""
        p = self.local_exponent[list(used)]
        if p.size == 0 or not np.all(np.isfinite(p)):
            return "no local exponent of m at the measured radii"
        if np.all(np.abs(p - 4.0) <= QUARTIC_TOLERANCE):
            return "quartic regime: the radius slope is expected near -1/4"
        return (f"before the quartic regime (local exponent of m {p.min():.1f} to "
                f"{p.max():.1f}): the slope follows the modulus, {self.expected_slope:+.2f} "
                "predicted, not -1/4")


def predict(sweep: ProfileSweep, m: np.ndarray, c: float | None = None) -> Prediction:
    """The prediction of ``m (K,)`` (the truth's modulus on the sweep's offsets) for every
    grid point of ``sweep`` at threshold ``c`` (default the sweep's)."""
    c = sweep.config.c if c is None else checks.real(c, "c", positive=True)
    d = sweep.config.deltas()
    m = checks.finite_array(m, "m", shape=d.shape)
    x = sweep.x
    r, status = profile.predicted_radii(d, m, x, c)
    f = PREDICTION_FACTOR
    lo, lo_status = profile.predicted_radii(d, m, x, c / f)
    hi, hi_status = profile.predicted_radii(d, m, x, c * f)
    conditioned = (((lo_status == "interpolated") & (hi_status == "interpolated")
                    & (hi <= f * lo))
                   | ((lo_status == hi_status) & (lo_status != "interpolated")))
    med = sweep.median_radius(c)
    inside = sweep.usable_points(c) & (status == "interpolated")
    ratio = np.where(inside, med / r, np.nan)
    local = profile.local_exponent(d, m, np.where(np.isfinite(med), med, np.nan))
    used = np.flatnonzero(sweep.usable_points(c))
    expected = float("nan")
    if used.size >= 2 and np.all(status[used] == "interpolated"):
        expected = rates.loglog_slope(x[used], r[used])[0]
    return Prediction(d, m, x, r, status, med, ratio, local, float(expected), lo, hi,
                      conditioned)


def report(sweep: ProfileSweep, prediction: Prediction | None = None) -> dict:
    """``results.json`` of a profile sweep: :meth:`ProfileSweep.to_dict` (with the radius
    slope over the usable points) and, given a ``prediction``, the modulus with the offsets,
    ``predicted_radius``, ``predicted_status``, ``ratio`` and ``local_exponent`` per grid
    point, the expected slope, the regime and whether measurement and prediction agree
    (strict JSON)."""
    out = sweep.to_dict()
    if prediction is not None:
        p = prediction
        for i, point in enumerate(out["points"]):
            point.update(predicted_radius=float(p.radius[i]),
                         predicted_status=str(p.status[i]), ratio=float(p.ratio[i]),
                         local_exponent=float(p.local_exponent[i]),
                         predicted_range=[float(p.range_low[i]), float(p.range_high[i])],
                         well_conditioned=bool(p.well_conditioned[i]))
        out["prediction"] = {
            "modulus": {"deltas": p.deltas.tolist(), "m": p.m.tolist(),
                        "settings": MODULUS_SETTINGS},
            "rule": ("predicted radius: the radius rule on the population excess "
                     "(n / nu) m(delta) at the same offsets and threshold"),
            "expected_slope": p.expected_slope,
            "regime": p.regime(tuple(out["slope_range"]["points"])),
            "range_rule": (f"predicted range: the radius rule at thresholds c / {PREDICTION_FACTOR}"
                           f" and c * {PREDICTION_FACTOR}; well conditioned: both inside the "
                           f"grid and within a factor {PREDICTION_FACTOR}, or both censored "
                           "or both below the grid"),
            "factor": PREDICTION_FACTOR, "ratios_agree": p.ratios_agree(),
            "ratios_agree_where_well_conditioned": p.ratios_agree(well_conditioned_only=True),
            "ill_conditioned_points": np.flatnonzero(~p.well_conditioned).tolist(),
            "within_range": p.within_range(),
            "same_censoring": p.same_censoring(), "agrees": p.agrees()}
    return runner.json_safe(out)


__all__ = ["MIN_SLOPE_POINTS", "MODULUS_SETTINGS", "PREDICTION_FACTOR", "Prediction",
           "output_variance", "predicted_at",
           "QUARTIC_TOLERANCE", "RadiusSlope", "population_modulus", "predict", "report"]
