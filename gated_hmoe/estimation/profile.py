r"""Profile confidence sets: what the data determine about an over-fitted pair (SPEC §5).

For one data set ``(x_t, y_t)``, ``t = 1..n``, and a fitted class with one surplus atom, the
*profile excess loss* at offset ``delta`` is

.. math::
    \Delta L_n(\delta) = \min\{L_n(G) : \text{the over-fitted pair sits at offset } \delta\}
                         - \min_G L_n(G), \qquad L_n(G) = \sum_t (y_t - f_G(x_t))^2,

where ``delta`` is half the pair's separation in ``omega = (gate slopes, expert)``; the
pair's weights stay in a fixed ratio (``split``, equal by default), while its centre,
direction and common intercept and every other atom are free
(:func:`gated_hmoe.estimation.modulus.pair_theta`). Pinning the offset removes the flat
direction of the over-fitted cell, so these constrained fits converge; each is *certified*
by the loop (:mod:`gated_hmoe.estimation.lm`: Gauss-Newton decrement below ``rtol`` units
of the estimated noise variance) and an uncertified value is never used (it is ``nan``,
and counted).

The *resolvable radius* is the largest offset the data cannot reject at level ``c``,

.. math::
    r_n = \max\{\delta : \Delta L_n(\delta) \le c\,\nu\},

interpolated linearly in ``(log delta, Delta L)`` between the last grid offset inside the
set and the next one (``c = 3.84``, the 95% quantile of chi-square with one degree of
freedom: the likelihood-ratio test of one constraint with Gaussian noise of known variance
``nu``). When every grid offset is inside the set, ``r_n`` is the grid's end and flagged
*censored*. Its population version is ``n m(delta)`` with the modulus ``m`` of
:mod:`gated_hmoe.estimation.modulus`: ridge experts (``m ~ C delta^4``) predict
``r_n ~ (c nu / (n C))^{1/4}``; for linear and GLU experts ``m = 0`` along the valley, so
``Delta L_n`` stays ``O(nu)`` and ``r_n`` does not shrink.

``min_G L_n`` is the smallest certified constrained value or, if lower, the residual of an
unconstrained fit started from the best constrained one (the loop only accepts decreasing
steps, so any value it returns bounds the minimum from above; an upper bound can only
lower ``Delta L_n`` and widen ``r_n``, never narrow it).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from gated_hmoe import checks
from gated_hmoe.estimation import lm, moe_fit
from gated_hmoe.estimation.modulus import pair_theta
from gated_hmoe.models import moe
from gated_hmoe.models.moe import ModelSpec

#: The 95% quantile of the chi-square law with one degree of freedom.
CHI2_95 = 3.841458820694124


def pair_dim(spec: ModelSpec, k_true: int) -> int:
    """Length ``q`` of ``psi`` in :func:`~gated_hmoe.estimation.modulus.pair_theta` (centre
    free) for a fitted ``spec`` with ``k = k_true + 1`` atoms."""
    return 1 + 2 * spec.omega_dim + (k_true - 2) * spec.F + (k_true - 1) * spec.P


def _pair_normal_equations(psi, delta, data, G_ref, spec, atom, split, active):
    """``(SSR, J_psi^T r, J_psi^T J_psi)`` per row: the planar normal equations in ``theta``
    pulled back through ``theta = pair_theta(psi, delta)`` (chain rule,
    ``J_psi = J_theta dtheta/dpsi``)."""
    def to_theta(ps, d):
        return pair_theta(ps, d, G_ref, spec, atom, True, split)

    theta = jax.vmap(to_theta)(psi, delta)
    ssr, g, H = moe_fit.normal_equations(theta, data, spec, active)
    A = jax.vmap(jax.jacfwd(to_theta))(psi, delta)                       # (R, p, q)
    return ssr, jnp.einsum("rpq,rp->rq", A, g), jnp.einsum("rpq,rps,rst->rqt", A, H, A)


def _fit_pairs_batch(psi0, delta, xt, y, w, n, active, max_iter, rtol, G_ref, *,
                     spec: ModelSpec, chunk: int, atom: int, split: float):
    m = xt.shape[-1] // chunk
    data = (moe_fit.chunks(xt, m, chunk), moe_fit.chunks(y, m, chunk),
            moe_fit.chunks(w, m, chunk))
    out = lm.levenberg_marquardt(
        lambda psi: _pair_normal_equations(psi, delta, data, G_ref, spec, atom, split, active),
        psi0, n_obs=n, max_iter=max_iter, rtol=rtol)
    out["full_theta"] = jax.vmap(lambda ps, d: pair_theta(ps, d, G_ref, spec, atom, True,
                                                          split))(out["theta"], delta)
    return out


fit_pairs_batch = jax.jit(_fit_pairs_batch, static_argnames=("spec", "chunk", "atom", "split"))


@dataclasses.dataclass
class PairFits:
    """Constrained fits, one per row: ``psi (R, q)``, the full parameters ``theta (R, p)``,
    ``ssr``, ``decrement`` and ``certified`` (converged and finite), all with a leading ``R``."""

    psi: Float[np.ndarray, "R q"]
    theta: Float[np.ndarray, "R p"]
    ssr: Float[np.ndarray, " R"]
    decrement: Float[np.ndarray, " R"]
    certified: Bool[np.ndarray, " R"]


def fit_pairs(data: moe_fit.PlanarData, psi0: Float[ArrayLike, "R q"],
              delta: Float[ArrayLike, " R"], *, spec: ModelSpec, G_ref: moe.MixingMeasure,
              atom: int = 0, split: float = 0.5, max_iter: int = 200,
              rtol: float = 1e-3) -> PairFits:
    """Least squares over measures whose over-fitted pair sits at offset ``delta`` (one per
    row; :func:`~gated_hmoe.estimation.modulus.pair_theta` with centre free), from ``psi0``,
    on data laid out by :func:`gated_hmoe.estimation.moe_fit.planar_data`. ``G_ref``: the
    pinned true measure, which only fixes the origin of the pair's centre."""
    moe.check_spec(spec)
    G_ref = moe.pin_last(moe.validate_measure(G_ref, "G_ref", expert=spec.expert,
                                              gate=spec.gate, k=spec.k - 1, D=spec.D))
    psi0 = checks.finite_array(psi0, "psi0", shape=(data.R, pair_dim(spec, spec.k - 1)))
    delta = checks.finite_array(delta, "delta", shape=(data.R,))
    if np.any(delta < 0):
        raise ValueError("delta must be >= 0 (half the pair's separation)")
    split = checks.real(split, "split")
    if not 0 < split < 1:
        raise ValueError(f"split must be in (0, 1), got {split!r}")
    G_j = jax.tree.map(lambda a: None if a is None else jnp.asarray(a), G_ref)
    out = fit_pairs_batch(data.rows(psi0), data.rows(delta), *data.arrays, *data.sizes,
                          jnp.asarray(checks.positive_int(max_iter, "max_iter")),
                          jnp.asarray(checks.real(rtol, "rtol", positive=True)), G_j,
                          spec=spec, chunk=data.chunk, atom=atom, split=split)
    out = {k: np.asarray(v)[:data.R] for k, v in out.items()}
    finite = np.isfinite(out["ssr"]) & np.all(np.isfinite(out["theta"]), 1)
    return PairFits(out["theta"], out["full_theta"], out["ssr"], out["decrement"],
                    out["converged"] & finite)


# ------------------------------------------------------------------ the profile of one data set

@dataclasses.dataclass
class Profile:
    """The profiles of ``R`` data sets on a grid of ``K`` offsets.

    ``deltas (K,)``; ``ssr (R, K)`` constrained minima (``nan`` where not certified);
    ``certified (R, K)``; ``ssr_min (R,)`` the reference ``min_G L_n``; ``excess (R, K)``
    ``= (ssr - ssr_min) / nu`` in units of the noise variance; ``radius (R,)`` and its
    ``status (R,)`` (:data:`RADIUS_STATUS`; ``nan`` when undetermined); ``theta (R, K, p)``
    the certified constrained measures; ``c``, ``nu``, ``split``.
    """

    deltas: np.ndarray
    ssr: np.ndarray
    certified: np.ndarray
    ssr_min: np.ndarray
    excess: np.ndarray
    radius: np.ndarray
    status: np.ndarray
    theta: np.ndarray
    c: float
    nu: float
    split: float

    @property
    def certified_fraction(self) -> float:
        """Share of constrained fits certified converged."""
        return float(np.mean(self.certified))


#: What a radius is: interpolated inside the grid, at or beyond its end (``censored``: a
#: lower bound), below its start (an upper bound), or not determined (a value it needs is
#: not certified).
RADIUS_STATUS: tuple[str, ...] = ("interpolated", "censored", "below", "undetermined")


def radius(deltas: Float[ArrayLike, " K"], excess: Float[ArrayLike, " K"], c: float, *,
           connected: bool = False) -> tuple[float, str]:
    """``r = max{delta : excess(delta) <= c}`` on a grid (excess in units of ``nu``; ``nan``
    where not certified), linear in ``(log delta, excess)`` between the last offset inside
    the set and the next one. Returns ``(r, status)`` (:data:`RADIUS_STATUS`): the grid's
    end when the last offset is inside (``censored``), its start when none is
    (``below``), ``nan`` when a value after the last offset inside is not certified
    (``undetermined``: a later offset might be inside).

    ``connected=True``: the radius of the set's component that starts at the grid's first
    offset -- the last offset of the leading run inside the set -- for profiles with a
    second, separate branch of near-exact fits (an attention head switched off by a zero
    value map, :mod:`gated_hmoe.estimation.head_profile`); only uncertified offsets before
    the first certified one outside the set make it undetermined (those after it belong to
    another component).

    >>> r, status = radius(np.array([0.1, 0.2, 0.4]), np.array([0.0, 2.0, 6.0]), 4.0)
    >>> round(r, 6), status
    (0.282843, 'interpolated')
    >>> radius(np.array([0.1, 0.2, 0.4]), np.array([0.0, 2.0, np.nan]), 4.0)[1]
    'undetermined'
    >>> radius(np.array([0.1, 0.2, 0.4]), np.array([0.0, 6.0, 1.0]), 4.0, connected=True)[1]
    'interpolated'
    >>> radius(np.array([0.1, 0.2, 0.4]), np.array([np.nan, 1.0, 6.0]), 4.0, connected=True)[1]
    'interpolated'
    >>> radius(np.array([0.1, 0.2, 0.4]), np.array([1.0, 6.0, np.nan]), 4.0, connected=True)[1]
    'interpolated'
    >>> radius(np.array([0.1, 0.2, 0.4]), np.array([1.0, np.nan, 6.0]), 4.0, connected=True)[1]
    'undetermined'
    """
    d = checks.finite_array(deltas, "deltas", ndim=1)
    e = np.asarray(excess, float)
    if e.shape != d.shape:
        raise ValueError(f"excess must have shape {d.shape} like deltas, got {e.shape}")
    inside = e <= c
    end = d.size                        # offsets that can still extend the set
    if connected:                       # cut at the first certified offset outside the set
        outside = np.flatnonzero(e > c)
        end = int(outside[0]) if outside.size else d.size
        inside = inside & (np.arange(d.size) < end)
    last = int(np.flatnonzero(inside)[-1]) if inside.any() else -1
    if np.isnan(e[last + 1:end]).any():
        return float("nan"), "undetermined"
    if last == -1:
        return float(d[0]), "below"
    if last == d.size - 1:
        return float(d[-1]), "censored"
    t = (c - e[last]) / (e[last + 1] - e[last])
    log_r = math.log(d[last]) + t * (math.log(d[last + 1]) - math.log(d[last]))
    return float(math.exp(log_r)), "interpolated"


def predicted_radii(deltas: Float[ArrayLike, " K"], m: Float[ArrayLike, " K"],
                    x: Float[ArrayLike, " P"], c: float) -> tuple[np.ndarray, np.ndarray]:
    r"""The radius the population predicts at effective sample sizes ``x = n / nu``:
    :func:`radius` of the population excess ``x m(delta)`` (units of ``nu``) on the same
    offsets and threshold ``c`` as a measured profile, so a censored radius, or a far branch
    where ``m`` dips below ``c / x`` again, is predicted as it would be measured. Returns
    ``(radius (P,), status (P,))``.

    >>> d = np.array([0.1, 0.2, 0.4, 0.8])
    >>> r, s = predicted_radii(d, 1e-4 * d ** 4, np.array([1e2, 1e6]), 4.0)
    >>> s.tolist(), round(float(r[1]), 4)
    (['censored', 'interpolated'], 0.4105)
    """
    d = checks.finite_array(deltas, "deltas", ndim=1)
    m = checks.finite_array(m, "m", shape=d.shape)
    x = checks.finite_array(x, "x", ndim=1)
    c = checks.real(c, "c", positive=True)
    if np.any(m < 0) or np.any(x <= 0):
        raise ValueError("m must be >= 0 and x > 0")
    out = [radius(d, xi * m, c) for xi in x]
    return np.array([r for r, _ in out]), np.array([s for _, s in out])


def local_exponent(deltas: Float[ArrayLike, " K"], m: Float[ArrayLike, " K"],
                   at: Float[ArrayLike, " P"], *, floor: float = 1e-28) -> np.ndarray:
    r"""The local exponent ``d log m / d log delta`` of ``m (K,)`` on ``deltas (K,)`` at the
    offsets ``at (P,)``: the log-log slope of the grid interval that holds each (``nan``
    outside the grid, for a non-finite ``at``, or where ``m <= floor``).

    >>> d = np.array([0.1, 0.2, 0.4])
    >>> local_exponent(d, d ** 4, np.array([0.15, 0.3, 1.0])).round(6).tolist()
    [4.0, 4.0, nan]
    """
    d = checks.finite_array(deltas, "deltas", ndim=1)
    m = checks.finite_array(m, "m", shape=d.shape)
    at = np.asarray(at, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lm = np.where(m > floor, np.log(np.maximum(m, floor)), np.nan)
        seg = np.diff(lm) / np.diff(np.log(d))
        i = np.searchsorted(d, at, side="right") - 1
        i = np.where(at == d[-1], d.size - 2, i)
        ok = np.isfinite(at) & (i >= 0) & (i < d.size - 1)
    return np.where(ok, seg[np.clip(i, 0, d.size - 2)], np.nan)


def calibrated_threshold(null_excess: Float[ArrayLike, "..."], quantile: float = 0.95
                         ) -> float:
    r"""The threshold ``c`` of :func:`radius` calibrated on simulated null draws: the
    ``quantile`` of ``Delta L_n(delta_0) / nu`` at the true offset over data sets simulated
    from the known truth (an oracle Monte Carlo of the likelihood-ratio statistic; a
    practitioner would have to simulate from a fit, which at a singular point is a
    different, unchecked procedure), in place of the chi-square quantile, which assumes a
    regular model. At an over-fitted truth the model is singular (the pair is one atom, its
    direction and routers unidentified) and the likelihood ratio is not chi-square; its law
    is whatever these draws show. Draws that share a data set (one design and noise draw
    seen at several noise levels) are not independent: count data sets, not draws, when
    judging the quantile's precision.

    ``null_excess``: the draws in units of ``nu`` (any shape; ``nan`` -- not certified --
    is dropped and never counts as a small value). At least ``ceil(1 / (1 - quantile))``
    certified draws are needed, else ``ValueError``.

    >>> round(calibrated_threshold(np.arange(1.0, 101.0)), 6)
    95.05
    >>> calibrated_threshold(np.array([1.0, 2.0, np.nan]))
    Traceback (most recent call last):
    ...
    ValueError: null_excess must hold at least 20 certified draws for quantile 0.95, got 2
    """
    q = checks.real(quantile, "quantile")
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    e = np.asarray(null_excess, float).ravel()
    e = e[np.isfinite(e)]
    need = math.ceil(round(1.0 / (1.0 - q), 9))
    if e.size < need:
        raise ValueError(f"null_excess must hold at least {need} certified draws for quantile "
                         f"{q}, got {e.size}")
    return float(np.quantile(e, q))


class MoEPairProblem:
    """The constrained fits of a profile for mixtures of experts: ``R`` data sets laid out
    twice (two starts per data set and offset) for :func:`fit_pairs`, and the unconstrained
    polish for the reference minimum (:func:`gated_hmoe.estimation.moe_fit.fit`)."""

    def __init__(self, x: Float[ArrayLike, "R n D"], y: Float[ArrayLike, "R n"], *,
                 spec: ModelSpec, G_ref: moe.MixingMeasure, split: float = 0.5, atom: int = 0,
                 max_iter: int = 200, rtol: float = 1e-3, polish_iter: int = 200,
                 devices: int | None = None, capacity: int | None = None):
        self.spec = moe.check_spec(spec)
        self.x = checks.finite_array(x, "x", ndim=3)
        self.y = checks.finite_array(y, "y", ndim=2)
        self.R, self.n = self.x.shape[0], self.x.shape[1]
        self.q = pair_dim(spec, spec.k - 1)
        self.p = spec.num_params
        self.G_ref, self.split, self.atom = G_ref, split, atom
        self.max_iter, self.rtol, self.polish_iter = max_iter, rtol, polish_iter
        self.devices, self.capacity = devices, capacity
        self.data = moe_fit.planar_data(np.concatenate([self.x, self.x]),
                                        np.concatenate([self.y, self.y]), D=spec.D,
                                        devices=devices, capacity=capacity)

    def fit(self, psi0: Float[ArrayLike, "R2 q"], delta: float) -> PairFits:
        """Constrained fits at offset ``delta``; rows ``[0, R)`` and ``[R, 2R)`` are the two
        starts of the ``R`` data sets."""
        return fit_pairs(self.data, psi0, np.full(2 * self.R, delta), spec=self.spec,
                         G_ref=self.G_ref, atom=self.atom, split=self.split,
                         max_iter=self.max_iter, rtol=self.rtol)

    def polish(self, theta: Float[ArrayLike, "R p"]) -> Float[np.ndarray, " R"]:
        """Residual sums of squares of unconstrained fits from ``theta`` (upper bounds on
        ``min_G L_n``; ``inf`` where not finite)."""
        res = moe_fit.fit(self.x, self.y, theta, spec=self.spec, max_iter=self.polish_iter,
                          rtol=self.rtol, devices=self.devices, capacity=self.capacity)
        return np.where(np.isfinite(res.mse), res.mse * self.n, np.inf)


def profile(problem, *, deltas: Float[ArrayLike, " K"], starts: Float[ArrayLike, "K q"],
            nu: float, c: float = CHI2_95, connected: bool = False,
            backward: bool = False) -> Profile:
    """The profile excess loss and the resolvable radius of ``problem.R`` data sets.

    ``problem`` supplies ``R``, ``q``, ``p`` (the number of free parameters), ``split``,
    ``fit(psi0 (2R, q), delta) -> PairFits`` and ``polish(theta (R, p)) -> ssr (R,)``
    (:class:`MoEPairProblem`, or
    :class:`gated_hmoe.estimation.head_profile.AttentionPairProblem`). Offsets ``deltas`` are visited in increasing order; at each
    one every data set is fitted from two declared starts -- ``starts[k]`` (shared by all
    data sets; e.g. the population minimiser of
    :func:`~gated_hmoe.estimation.modulus.modulus_solutions` at the same offset) and its
    own certified solution at the previous offset (continuation) -- and the best certified
    fit is kept. The reference ``min_G L_n`` is the smallest certified value, lowered by the
    polish from the best constrained measure when that finds a smaller residual.
    ``connected``: the radius of the set's first component (:func:`radius`).
    ``backward``: then visit the offsets once more in decreasing order, refitting each data
    set from its kept solution at the next larger offset, and keep that fit where it is
    certified and lower (a constrained fit near a merging pair can stall above its minimum
    when started only from below; continuation from both sides catches it).
    """
    nu = checks.real(nu, "nu", positive=True)
    c = checks.real(c, "c", positive=True)
    d = checks.finite_array(deltas, "deltas", ndim=1).astype(float)
    if d.size < 2 or np.any(np.diff(d) <= 0) or d[0] <= 0:
        raise ValueError(f"deltas must be >= 2 increasing offsets > 0, got {d.tolist()}")
    R, q, K = problem.R, problem.q, d.size
    starts = checks.finite_array(starts, "starts", shape=(K, q))
    ssr = np.full((R, K), np.nan)
    theta = np.full((R, K, problem.p), np.nan)
    kept = np.zeros((R, K, q))
    prev = None
    for k, delta in enumerate(d):
        shared = np.broadcast_to(starts[k], (R, q))
        cont = shared if prev is None else prev
        fits = problem.fit(np.concatenate([shared, cont]), float(delta))
        value = np.where(fits.certified, fits.ssr, np.inf).reshape(2, R)
        best = np.argmin(value, 0)
        rows = best * R + np.arange(R)
        ok = np.isfinite(value[best, np.arange(R)])
        ssr[ok, k] = fits.ssr[rows[ok]]
        theta[ok, k] = fits.theta[rows[ok]]
        prev = np.where(ok[:, None], fits.psi[rows], cont)
        kept[:, k] = prev
    if backward:
        for k in range(K - 2, -1, -1):
            # two starts per data set: its solutions one and two offsets further out
            fits = problem.fit(np.concatenate([kept[:, k + 1], kept[:, min(k + 2, K - 1)]]),
                               float(d[k]))
            value = np.where(fits.certified, fits.ssr, np.inf).reshape(2, R)
            best = np.argmin(value, 0)
            rows = best * R + np.arange(R)
            better = value[best, np.arange(R)] < np.where(np.isfinite(ssr[:, k]), ssr[:, k],
                                                          np.inf)
            ssr[better, k] = fits.ssr[rows[better]]
            theta[better, k] = fits.theta[rows[better]]
            kept[better, k] = fits.psi[rows[better]]
    certified = np.isfinite(ssr)
    ssr_min = np.min(np.where(certified, ssr, np.inf), axis=1)
    have = np.isfinite(ssr_min)
    if have.any():
        start = theta[np.arange(R), np.argmin(np.where(certified, ssr, np.inf), 1)]
        ssr_min = np.where(have, np.minimum(ssr_min, problem.polish(np.where(have[:, None],
                                                                              start, 0.0))),
                           np.nan)
    excess = (ssr - ssr_min[:, None]) / nu
    radii = [radius(d, e, c, connected=connected) for e in excess]
    return Profile(d, ssr, certified, ssr_min, excess, np.array([r for r, _ in radii]),
                   np.array([st for _, st in radii]), theta, c, nu, problem.split)


__all__ = ["CHI2_95", "RADIUS_STATUS", "MoEPairProblem", "PairFits", "Profile",
           "calibrated_threshold", "fit_pairs", "local_exponent", "predicted_radii",
           "fit_pairs_batch", "pair_dim", "profile", "radius"]
