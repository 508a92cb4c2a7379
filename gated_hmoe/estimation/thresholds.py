r"""Thresholds for the profile excess: parametric bootstrap, split likelihood ratio, chi-square.

The profile excess of :mod:`gated_hmoe.estimation.profile` is a likelihood-ratio statistic:
with Gaussian noise of *known* variance ``nu`` (the book's experiments know ``nu``; every
function here takes it as given and never estimates it) the log-likelihood is
``-L_n(G) / (2 nu)`` plus a constant, so

.. math::
    \Delta L_n(\delta_0) = \frac{\min\{L_n(G) : G \in H_0\} - \min_G L_n(G)}{\nu}
    = 2\,\big(\sup_{G} \log p_n(G) - \sup_{G \in H_0} \log p_n(G)\big),

twice the log-likelihood ratio of the null ``H_0`` (the pair at offset ``delta_0``). In a
regular model with ``q`` pinned directions it is asymptotically ``chi^2_q``; at an
over-fitted truth the model is singular and ``chi^2_1`` (``c = 3.84``) is a convention.
Three cutoffs ``c`` of the set ``{delta : Delta L_n(delta) <= c}`` live here:

- **Parametric bootstrap** (:func:`bootstrap_draws`, :func:`bootstrap_threshold`): fit the
  null model to the data set, simulate ``B`` data sets ``y* = f_null(x) + sqrt(nu) xi*`` on
  the *same design* ``x`` with the *known* ``nu``, recompute the statistic on each with
  every fit redone, and take the ``1 - alpha`` quantile (the Monte-Carlo test's order
  statistic), with its Monte-Carlo error from the binomial law of the order statistics.
  A problem enters through three hooks (:class:`BootstrapProblem`): ``observe``,
  ``excess`` and ``null_mean``; :class:`PinnedProblem` (the regular case: coordinates of
  an exactly specified fit pinned) and :class:`MoEProfileProblem` (the over-fitted pair's
  profile) implement them; an attention profile plugs in the same way.
- **Split likelihood ratio** of universal inference (Wasserman, Ramdas & Balakrishnan
  2020; :func:`split_lrt_statistic`, :func:`split_lrt_excess`): valid at every ``n``,
  without asymptotics or regularity.
- ``chi^2_1``: :data:`gated_hmoe.estimation.profile.CHI2_95`.

:func:`radius_under_thresholds` reports one grid point's radii under all three.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jaxtyping import ArrayLike, Float

from gated_hmoe import checks
from gated_hmoe.estimation import lm, moe_fit, profile
from gated_hmoe.models import moe
from gated_hmoe.models.moe import ModelSpec

#: ``2 log(20)``: the split likelihood-ratio cutoff at level ``alpha = 0.05`` (units of ``nu``).
SPLIT_LRT_95 = 2.0 * math.log(20.0)


def split_lrt_cutoff(alpha: float = 0.05) -> float:
    r"""``2 log(1 / alpha)``: the split-LRT cutoff in units of ``nu`` (:func:`split_lrt_statistic`).

    >>> round(split_lrt_cutoff(0.05), 4)
    5.9915
    """
    return 2.0 * math.log(1.0 / _level(alpha))


def _level(alpha) -> float:
    a = checks.real(alpha, "alpha")
    if not 0 < a < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


# ------------------------------------------------------------------ the bootstrap quantile

def order_statistic_ranks(B: int, quantile: float, level: float = 0.95) -> tuple[int, int]:
    r"""1-based ranks ``(l, u)`` with ``P(X_(l) <= xi_q <= X_(u)) >= level`` for the
    ``quantile`` ``xi_q`` of ``B`` i.i.d. draws: the count of draws ``<= xi_q`` is
    ``Binomial(B, q)``, so ``l`` and ``u - 1`` are its ``(1 -+ level) / 2`` quantiles
    (clipped to ``[1, B]``).

    >>> order_statistic_ranks(200, 0.95)
    (184, 197)
    """
    B = checks.positive_int(B, "B")
    q = _level(quantile)
    lv = _level(level)
    lo = int(scipy.stats.binom.ppf((1 - lv) / 2, B, q))
    hi = int(scipy.stats.binom.ppf((1 + lv) / 2, B, q)) + 1
    return max(lo, 1), min(hi, B)


@dataclasses.dataclass
class BootstrapThreshold:
    r"""Bootstrap thresholds of ``R`` data sets, each from its own ``B`` draws.

    ``c (R,)``: the ``(1 - alpha)`` Monte-Carlo critical value, the order statistic
    ``X_(ceil((1 - alpha)(B + 1)))`` of the draws (a test rejecting when the observed
    statistic exceeds it has level ``alpha`` exactly when the draws and the observation are
    exchangeable, i.e. when the fitted null is the truth); ``lower``, ``upper (R,)``: the
    95% interval of the ``(1 - alpha)`` quantile of the bootstrap law from the binomial
    order statistics (:func:`order_statistic_ranks`); ``se (R,)``: its half-width / 1.96
    (a normal-equivalent Monte-Carlo standard error); ``failed (R,)``: draws whose
    statistic was not certified (``nan``), ranked as ``+inf`` -- never dropped, so they can
    only raise ``c`` (a conservative threshold); ``B``, ``alpha``.
    """

    c: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    se: np.ndarray
    failed: np.ndarray
    B: int
    alpha: float

    def to_dict(self) -> dict:
        return {"c": self.c.tolist(), "lower": self.lower.tolist(),
                "upper": self.upper.tolist(), "se": self.se.tolist(),
                "failed": self.failed.tolist(), "B": self.B, "alpha": self.alpha}


def bootstrap_threshold(draws: Float[ArrayLike, "*R B"], alpha: float = 0.05
                        ) -> BootstrapThreshold:
    r"""The bootstrap threshold of each data set from its draws ``(R, B)`` (or ``(B,)`` for
    one data set) of the statistic in units of ``nu``; see :class:`BootstrapThreshold`.

    >>> t = bootstrap_threshold(np.arange(1.0, 200.0), 0.05)
    >>> float(t.c[0]), float(t.lower[0]), float(t.upper[0]), int(t.failed[0])
    (190.0, 183.0, 196.0, 0)
    >>> float(bootstrap_threshold(np.array([1.0, np.nan] * 10), 0.05).c[0])
    inf
    """
    a = _level(alpha)
    e = np.asarray(draws, float)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2 or e.shape[1] < 1:
        raise ValueError(f"draws must have shape (R, B) or (B,), got {np.shape(draws)}")
    B = e.shape[1]
    failed = np.sum(~np.isfinite(e), 1)
    s = np.sort(np.where(np.isfinite(e), e, np.inf), 1)
    rank = math.ceil(round((1 - a) * (B + 1), 9))
    c = s[:, rank - 1] if rank <= B else np.full(e.shape[0], np.inf)
    lo, hi = order_statistic_ranks(B, 1 - a)
    lower, upper = s[:, lo - 1], s[:, hi - 1]
    with np.errstate(invalid="ignore"):
        se = (upper - lower) / (2 * 1.959963984540054)
    return BootstrapThreshold(c, lower, upper, se, failed, B, a)


@runtime_checkable
class BootstrapProblem(Protocol):
    """What :func:`bootstrap_draws` needs of a problem (e.g. :class:`PinnedProblem`,
    :class:`MoEProfileProblem`; an attention profile implements the same three hooks).

    - ``observe(x, y, parent=None, rows=None)``: every fit of the statistic on ``R`` data
      sets ``x (R, ...)``, ``y (R, ...)``; for bootstrap draws ``parent`` is the observed
      data sets' result and ``rows (R,)`` the data set each draw came from (for starts);
    - ``excess(observed) -> (R,)``: the statistic in units of ``nu`` (``nan`` where a fit is
      not certified);
    - ``null_mean(x, y, observed) -> (f (R, ...), certified (R,))``: the regression function
      of the null model fitted to each data set, on its design (``f`` has ``y``'s shape).
    """

    def observe(self, x, y, parent=None, rows=None) -> Any: ...

    def excess(self, observed) -> np.ndarray: ...

    def null_mean(self, x, y, observed) -> tuple[np.ndarray, np.ndarray]: ...


def bootstrap_draws(problem: BootstrapProblem, key, x: ArrayLike, y: ArrayLike, *, nu: float,
                    draws: int = 200, batch: int = 2048, observed=None) -> dict:
    r"""Parametric bootstrap of ``problem``'s statistic for ``R`` data sets ``x (R, ...)``,
    ``y (R, ...)``.

    Per data set ``r``: the null model is fitted (``problem.null_mean``), and ``draws = B``
    data sets ``y*_{rb} = f_null,r(x_r) + sqrt(nu) xi_{rb}``, ``xi`` standard normal from
    ``key`` (batch ``i`` of the draws, in data-set order, uses ``fold_in(key, i)``), are
    simulated on the same design ``x_r`` with the known noise variance ``nu``; on each, the
    statistic is recomputed with every fit redone (``problem.observe``, in equal batches of
    at most ``batch`` draws, the last one padded, so that one program is compiled).

    Returns ``observed`` (``problem.observe(x, y)``, or the one passed in), ``excess (R,)``
    the observed statistic, ``draws (R, B)`` (``nan`` where not certified, and for every
    draw of a data set whose null fit is not certified), ``null_certified (R,)``.
    """
    nu = checks.real(nu, "nu", positive=True)
    B = checks.positive_int(draws, "draws")
    batch = checks.positive_int(batch, "batch")
    key = checks.prng_key(key, "key")
    x = checks.finite_array(x, "x").astype(float)
    y = checks.finite_array(y, "y").astype(float)
    if x.ndim < 2 or y.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have a leading data-set axis of the same length, "
                         f"got shapes {x.shape} and {y.shape}")
    if observed is None:
        observed = problem.observe(x, y)
    t_obs = np.asarray(problem.excess(observed), float)
    f0, ok = problem.null_mean(x, y, observed)
    f0 = np.asarray(f0, float)
    ok = np.asarray(ok, bool) & np.all(np.isfinite(f0.reshape(f0.shape[0], -1)), 1)
    f0 = np.where(ok.reshape((-1,) + (1,) * (f0.ndim - 1)), f0, y)   # finite placeholder
    R = x.shape[0]
    rows = np.repeat(np.arange(R), B)
    size = -(-R * B // -(-R * B // batch))  # equal batches of <= batch: one compiled program
    out = np.full(R * B, np.nan)
    for s in range(0, R * B, size):
        r = rows[s:s + size]
        m = r.size
        r = np.concatenate([r, np.repeat(r[-1:], size - m)])      # pad the last batch
        xi = np.asarray(jax.random.normal(jax.random.fold_in(key, s // size),
                                          (size,) + y.shape[1:], jnp.float64))
        ys = f0[r] + math.sqrt(nu) * xi
        out[s:s + m] = problem.excess(problem.observe(x[r], ys, parent=observed, rows=r))[:m]
    out = out.reshape(R, B)
    out[~ok] = np.nan
    return {"observed": observed, "excess": t_obs, "draws": out, "null_certified": ok}


# ------------------------------------------------------------------ the regular case

def _pinned_normal_equations(psi, base, free, data, spec, active):
    theta = base.at[:, free].set(psi)
    ssr, g, H = moe_fit.normal_equations(theta, data, spec, active)
    return ssr, g[:, free], H[:, free][:, :, free]


def _fit_pinned_batch(psi0, base, xt, y, w, n, active, max_iter, rtol, *, spec: ModelSpec,
                      chunk: int, free: tuple):
    m = xt.shape[-1] // chunk
    data = (moe_fit.chunks(xt, m, chunk), moe_fit.chunks(y, m, chunk),
            moe_fit.chunks(w, m, chunk))
    idx = jnp.asarray(free)
    out = lm.levenberg_marquardt(
        lambda psi: _pinned_normal_equations(psi, base, idx, data, spec, active),
        psi0, n_obs=n, max_iter=max_iter, rtol=rtol)
    out["full_theta"] = base.at[:, idx].set(out["theta"])
    return out


fit_pinned_batch = jax.jit(_fit_pinned_batch, static_argnames=("spec", "chunk", "free"))


def fit_pinned(x: Float[ArrayLike, "R n D"], y: Float[ArrayLike, "R n"],
               theta0: Float[ArrayLike, "R p"], *, spec: ModelSpec, pinned: tuple[int, ...],
               max_iter: int = 200, rtol: float = 1e-3) -> moe_fit.FitResult:
    r"""Least squares ``min {L_n(theta) : theta_j = theta0_j for j in pinned}`` for ``R``
    data sets ``x (R, n, D)``, ``y (R, n)``: the coordinates ``pinned`` of the free
    parameter vector (:func:`gated_hmoe.models.moe.pack`) stay at their values in
    ``theta0 (R, p)``, the others start there. The one loop (:mod:`.lm`) on the planar
    normal equations of :mod:`.moe_fit` restricted to the free coordinates (the
    constrained problem's ``J`` is the unconstrained one's columns outside ``pinned``).
    Returns :class:`~gated_hmoe.estimation.moe_fit.FitResult` with the full ``theta (R, p)``.

    >>> G = moe.default_truth("silu")
    >>> spec = moe.make_spec(expert="silu", k=2, D=1)
    >>> x = np.linspace(-1, 1, 64)[None, :, None]
    >>> y = np.asarray(moe.mean(G, x[0], expert="silu"))[None]
    >>> th = np.asarray(moe.pack(G, spec))[None]
    >>> res = fit_pinned(x, y, th + np.array([0.0, 0.0, 0.0, 0.05, 0.05, 0.05]), spec=spec,
    ...                  pinned=(2,))
    >>> bool(res.converged[0]), float(res.theta[0, 2]) == float(th[0, 2])
    (True, True)
    """
    moe.check_spec(spec)
    p = spec.num_params
    pinned = tuple(sorted({checks.positive_int(j, "pinned index", minimum=0) for j in pinned}))
    if not pinned or pinned[-1] >= p:
        raise ValueError(f"pinned must hold 1 to {p - 1} distinct indices in [0, {p}), "
                         f"got {pinned!r}")
    free = tuple(j for j in range(p) if j not in pinned)
    if not free:
        raise ValueError(f"pinned must leave at least one of the {p} coordinates free")
    data = moe_fit.planar_data(x, y, D=spec.D)
    theta0 = checks.finite_array(theta0, "theta0", shape=(data.R, p))
    base = data.rows(theta0)
    out = fit_pinned_batch(base[:, np.array(free)], base, *data.arrays, *data.sizes,
                           jnp.asarray(checks.positive_int(max_iter, "max_iter")),
                           jnp.asarray(checks.real(rtol, "rtol", positive=True)),
                           spec=spec, chunk=data.chunk, free=free)
    out = {k: np.asarray(v)[:data.R] for k, v in out.items()}
    finite = np.isfinite(out["mse"]) & np.all(np.isfinite(out["full_theta"]), 1)
    conv = out["converged"] & finite
    return moe_fit.FitResult(spec, out["full_theta"], out["mse"], out["grad_norm"],
                             out["decrement"], out["iterations"], out["nfev"], conv, ~conv)


@dataclasses.dataclass
class PinnedFits:
    """:class:`PinnedProblem`'s fits of ``R`` data sets: the null (pinned) and the full fit."""

    null: moe_fit.FitResult
    full: moe_fit.FitResult
    n: int


class PinnedProblem:
    r"""The regular likelihood-ratio test: an exactly specified mixture (``spec.k = k*``,
    distinct atoms), the null ``theta_j = value_j`` for ``j in pinned`` (``q`` coordinates),

    .. math::
        T = \frac{\min\{L_n : \theta_{\text{pinned}} = \text{value}\} - \min L_n}{\nu}
        \;\to\; \chi^2_q \quad (n \to \infty,\ \text{true null, regular model}).

    Both fits run the one loop: the pinned one (:func:`fit_pinned`) and the full one
    (:func:`gated_hmoe.estimation.moe_fit.fit`), each from ``start (p,)`` (declared; the
    pinned coordinates are then set to ``value``) on observed data and from the data set's
    own null fit on bootstrap draws; the full minimum is the smaller of the two (the null
    is nested). The statistic is ``nan`` unless both fits are certified. ``null_mean``:
    the pinned fit's regression function.
    """

    def __init__(self, *, spec: ModelSpec, pinned: tuple[int, ...], value: ArrayLike,
                 start: ArrayLike, nu: float, max_iter: int = 200, rtol: float = 1e-3):
        self.spec = moe.check_spec(spec)
        self.pinned = tuple(int(j) for j in pinned)
        self.value = checks.finite_array(value, "value", shape=(len(self.pinned),))
        start = checks.finite_array(start, "start", shape=(spec.num_params,)).copy()
        start[list(self.pinned)] = self.value
        self.start = start
        self.nu = checks.real(nu, "nu", positive=True)
        self.max_iter, self.rtol = max_iter, rtol

    def observe(self, x, y, parent: PinnedFits | None = None, rows=None) -> PinnedFits:
        R, n = np.shape(y)[0], np.shape(y)[1]
        th0 = (np.tile(self.start, (R, 1)) if parent is None
               else parent.null.theta[np.asarray(rows)])
        null = fit_pinned(x, y, th0, spec=self.spec, pinned=self.pinned,
                          max_iter=self.max_iter, rtol=self.rtol)
        full = moe_fit.fit(x, y, th0, spec=self.spec, max_iter=self.max_iter, rtol=self.rtol)
        return PinnedFits(null, full, n)

    def excess(self, obs: PinnedFits) -> np.ndarray:
        ssr0, ssr1 = obs.null.mse * obs.n, obs.full.mse * obs.n
        ok = obs.null.converged & obs.full.converged
        return np.where(ok, (ssr0 - np.minimum(ssr0, ssr1)) / self.nu, np.nan)

    def null_mean(self, x, y, obs: PinnedFits) -> tuple[np.ndarray, np.ndarray]:
        f = jax.vmap(lambda t, xx: moe.mean_of_theta(t, xx, self.spec))(
            jnp.asarray(obs.null.theta), jnp.asarray(x))
        return np.asarray(f), obs.null.converged


# ------------------------------------------------------------------ the over-fitted pair

def merge_pair(theta: Float[ArrayLike, "R p"], spec: ModelSpec) -> np.ndarray:
    r"""The exactly specified measure (``spec.k - 1`` atoms) nearest a fit whose first two
    atoms are the over-fitted pair (:func:`~gated_hmoe.estimation.modulus.pair_theta`
    layout): the pair becomes one atom of mass ``e^{b_a} + e^{b_b}`` at the mass-weighted
    mean of the two locations (gate slopes, quadratic gate, expert). Exact at offset 0.
    ``theta (R, p)`` -> ``(R, p*)`` for ``make_spec(k=spec.k - 1)``.
    """
    moe.check_spec(spec)
    if spec.k < 3:
        raise ValueError(f"spec.k must be >= 3 (a pair and another atom), got {spec.k}")
    theta = checks.finite_array(theta, "theta", ndim=2)
    small = moe.make_spec(expert=spec.expert, gate=spec.gate, k=spec.k - 1, D=spec.D)

    def one(t):
        G = moe.unpack(t, spec)
        w = jax.nn.softmax(G.beta0[:2])

        def merged(a):
            return jnp.concatenate([jnp.tensordot(w, a[:2], 1)[None], a[2:]])
        b0 = jnp.concatenate([jax.nn.logsumexp(G.beta0[:2])[None], G.beta0[2:]])
        quad = None if G.quad is None else merged(G.quad)
        return moe.pack(moe.MixingMeasure(b0, merged(G.beta1), merged(G.expert), quad), small)

    return np.asarray(jax.vmap(one)(jnp.asarray(theta)))


class MoEProfileProblem:
    r"""The over-fitted pair's profile excess at one grid offset as a bootstrap problem.

    ``observe(x, y)`` runs :func:`gated_hmoe.estimation.profile.profile` on ``x (R, n, D)``,
    ``y (R, n)`` (:class:`~gated_hmoe.estimation.profile.MoEPairProblem`, offsets
    ``deltas``, shared ``starts (K, q)`` plus continuation, reference minimum = smallest
    certified constrained value or its polish), identically on observed and simulated data;
    ``excess`` is ``Delta L_n(deltas[at]) / nu``. The null fitted to a data set:

    - ``null="exact"`` (the truth's own offset, ``delta = 0``: the exactly specified model;
      ``deltas[at]`` is then the stand-in offset nearest 0, as for the oracle threshold,
      and its population part ``n m(deltas[at]) / nu`` is in the statistic, as there): the
      least-squares fit with ``k - 1`` atoms (:func:`gated_hmoe.estimation.moe_fit.fit`,
      ``max_iter``, ``rtol``) started from the merged (:func:`merge_pair`) constrained fit
      at the smallest certified offset, or from ``G_ref`` where none is certified
      (declared);
    - ``null="constrained"``: the profile's own constrained fit at ``deltas[at]``
      (the pair pinned there; ``nan`` where not certified).
    """

    NULLS: tuple[str, ...] = ("exact", "constrained")

    def __init__(self, *, spec: ModelSpec, G_ref: moe.MixingMeasure, deltas: ArrayLike,
                 starts: ArrayLike, nu: float, at: int = 0, null: str = "exact",
                 split: float = 0.5, max_iter: int = 200, rtol: float = 1e-2,
                 connected: bool = False, devices: int | None = None):
        self.spec = moe.check_spec(spec)
        self.G_ref = moe.pin_last(G_ref)
        self.deltas = checks.finite_array(deltas, "deltas", ndim=1)
        self.starts = checks.finite_array(starts, "starts",
                                          shape=(self.deltas.size, profile.pair_dim(spec, spec.k - 1)))
        self.nu = checks.real(nu, "nu", positive=True)
        self.at = checks.positive_int(at, "at", minimum=0)
        if self.at >= self.deltas.size:
            raise ValueError(f"at must index deltas (< {self.deltas.size}), got {at}")
        self.null = checks.choice(null, "null", self.NULLS)
        self.split, self.max_iter, self.rtol = split, max_iter, rtol
        self.connected, self.devices = connected, devices
        self.small = moe.make_spec(expert=spec.expert, gate=spec.gate, k=spec.k - 1, D=spec.D)

    def observe(self, x, y, parent=None, rows=None) -> profile.Profile:
        pp = profile.MoEPairProblem(x, y, spec=self.spec, G_ref=self.G_ref, split=self.split,
                                    max_iter=self.max_iter, rtol=self.rtol,
                                    polish_iter=self.max_iter, devices=self.devices)
        return profile.profile(pp, deltas=self.deltas, starts=self.starts, nu=self.nu,
                               connected=self.connected)

    def excess(self, prof: profile.Profile) -> np.ndarray:
        return prof.excess[:, self.at]

    def null_theta(self, x, y, prof: profile.Profile) -> tuple[np.ndarray, np.ndarray, ModelSpec]:
        """``(theta (R, p_null), certified (R,), spec of the null)``."""
        if self.null == "constrained":
            return prof.theta[:, self.at], prof.certified[:, self.at], self.spec
        R = prof.theta.shape[0]
        first = np.argmax(prof.certified, 1)
        have = prof.certified.any(1)
        merged = merge_pair(np.where(have[:, None], prof.theta[np.arange(R), first], 0.0),
                            self.spec)
        ref = np.asarray(moe.pack(self.G_ref, self.small))
        th0 = np.where(have[:, None], merged, ref)
        res = moe_fit.fit(x, y, th0, spec=self.small, max_iter=self.max_iter, rtol=self.rtol,
                          devices=self.devices)
        return res.theta, res.converged, self.small

    def null_mean(self, x, y, prof: profile.Profile) -> tuple[np.ndarray, np.ndarray]:
        theta, ok, spec = self.null_theta(x, y, prof)
        theta = np.where(ok[:, None], theta, 0.0)
        f = jax.vmap(lambda t, xx: moe.mean_of_theta(t, xx, spec))(jnp.asarray(theta),
                                                                  jnp.asarray(x))
        return np.asarray(f), ok


# ------------------------------------------------------------------ the split likelihood ratio

def split_lrt_statistic(ssr_null_d0: Float[ArrayLike, "R K"], ssr_hat_d0: Float[ArrayLike, " R"],
                        nu: float) -> np.ndarray:
    r"""The split likelihood-ratio statistic of universal inference in units of ``nu``.

    Split the data in ``D0``, ``D1``; let ``theta_1`` be *any* estimate computed from ``D1``
    alone. For the composite null ``H_0`` (the pair at offset ``delta``) the universal test
    rejects when ``p_{D0}(theta_1) / sup_{H_0} p_{D0} > 1 / alpha`` (Wasserman, Ramdas &
    Balakrishnan 2020: ``P(reject) <= alpha`` under ``H_0`` by Markov's inequality, at every
    ``n``, for any model). With Gaussian noise of known ``nu``,
    ``log p_{D0}(G) = -L_{D0}(G) / (2 nu) + const``, so ``log`` of the ratio is
    ``(min_{H_0} L_{D0} - L_{D0}(theta_1)) / (2 nu)`` and the set at level ``alpha`` is

    .. math::
        \{\delta : S(\delta) \le 2 \log(1/\alpha)\}, \qquad
        S(\delta) = \frac{\min\{L_{D0}(G) : \text{pair at } \delta\} - L_{D0}(\theta_1)}{\nu}

    (the factor 2: the log-likelihood is ``-L / (2 nu)``; ``2 log 20 = 5.99`` at
    ``alpha = 0.05``). ``S`` may be negative. ``ssr_null_d0 (R, K)``: the constrained minima
    on ``D0`` (``nan`` where not certified: a value above the minimum would shrink the set
    and void the guarantee); ``ssr_hat_d0 (R,)``: ``L_{D0}(theta_1)``. Returns ``S (R, K)``.

    >>> split_lrt_statistic(np.array([[3.0, 9.0]]), np.array([1.0]), 0.5).tolist()
    [[4.0, 16.0]]
    """
    nu = checks.real(nu, "nu", positive=True)
    a = np.asarray(ssr_null_d0, float)
    b = np.asarray(ssr_hat_d0, float)
    if a.ndim != 2 or b.shape != a.shape[:1]:
        raise ValueError(f"ssr_null_d0 must have shape (R, K) and ssr_hat_d0 (R,), got "
                         f"{a.shape} and {b.shape}")
    return (a - b[:, None]) / nu


@dataclasses.dataclass
class SplitLRT:
    """:func:`split_lrt_excess`'s result for ``R`` data sets on ``K`` offsets: ``statistic
    (R, K)`` (``S`` of :func:`split_lrt_statistic`), ``radius (R,)``, ``status (R,)``
    (:data:`gated_hmoe.estimation.profile.RADIUS_STATUS`), ``c`` the cutoff, ``theta_hat
    (R, p)`` the ``D1`` estimate, ``n0`` the size of ``D0``."""

    statistic: np.ndarray
    radius: np.ndarray
    status: np.ndarray
    c: float
    theta_hat: np.ndarray
    n0: int


def split_halves(n: int) -> tuple[slice, slice]:
    """``(D0, D1)``: the first ``floor(n / 2)`` samples and the rest (the samples are i.i.d.,
    so a fixed split is a random one)."""
    n = checks.positive_int(n, "n", minimum=2)
    return slice(0, n // 2), slice(n // 2, n)


def split_lrt_excess(x: Float[ArrayLike, "R n D"], y: Float[ArrayLike, "R n"], *,
                     spec: ModelSpec, G_ref: moe.MixingMeasure, deltas: ArrayLike,
                     starts: ArrayLike, nu: float, alpha: float = 0.05, split: float = 0.5,
                     max_iter: int = 200, rtol: float = 1e-2, connected: bool = False
                     ) -> SplitLRT:
    r"""The split-LRT set of the over-fitted pair's offset for ``R`` data sets.

    ``D1`` (:func:`split_halves`): the profile on ``D1``
    (:func:`gated_hmoe.estimation.profile.profile`, shared ``starts (K, q)``), then an
    unconstrained fit (:func:`gated_hmoe.estimation.moe_fit.fit`) from its best certified
    constrained fit; ``theta_1`` is whichever of the two has the smaller ``L_{D1}`` (any
    function of ``D1`` keeps the guarantee, so an uncertified polish may serve). ``D0``: the
    profile's constrained minima at ``deltas``. Returns :class:`SplitLRT` with the radius
    ``max{delta : S(delta) <= 2 log(1/alpha)}`` (:func:`gated_hmoe.estimation.profile.radius`).
    """
    x = checks.finite_array(x, "x", ndim=3)
    y = checks.finite_array(y, "y", shape=x.shape[:2])
    kw = dict(spec=spec, G_ref=G_ref, split=split, max_iter=max_iter, rtol=rtol,
              polish_iter=max_iter)

    def polish(theta, have, ssr, x1, y1):
        pol = moe_fit.fit(x1, y1, theta, spec=spec, max_iter=max_iter, rtol=rtol)
        better = np.isfinite(pol.mse) & (pol.mse * x1.shape[1] < ssr)
        return np.where(better[:, None], pol.theta, theta)

    def predict(theta, x0):
        return jax.vmap(lambda t, xx: moe.mean_of_theta(t, xx, spec))(jnp.asarray(theta),
                                                                     jnp.asarray(x0))

    return split_lrt(x, y, make_problem=lambda xx, yy: profile.MoEPairProblem(xx, yy, **kw),
                     predict=predict, polish=polish, deltas=deltas, starts=starts, nu=nu,
                     alpha=alpha, connected=connected)


def split_lrt(x: ArrayLike, y: ArrayLike, *, make_problem, predict, deltas: ArrayLike,
              starts: ArrayLike, nu: float, alpha: float = 0.05, connected: bool = False,
              backward: bool = False, polish=None) -> SplitLRT:
    r"""The split-LRT set of ``R`` data sets ``x (R, n, ...)``, ``y (R, n, ...)`` for any
    profile problem: ``make_problem(x, y)`` builds the constrained fits of a half
    (:class:`~gated_hmoe.estimation.profile.MoEPairProblem`, or the attention one),
    ``predict(theta (R, p), x0) -> f`` (``y``'s shape on ``x0``) is the fitted regression
    function of a profile's parameters. ``D1`` (:func:`split_halves`): the profile on ``D1``;
    ``theta_1`` its best certified constrained fit, replaced by ``polish(theta, have, ssr,
    x1, y1)`` where given (any function of ``D1`` keeps the guarantee). ``D0``: the profile's
    constrained minima; :func:`split_lrt_statistic` and the radius at ``2 log(1/alpha)``.
    """
    c = split_lrt_cutoff(alpha)
    nu = checks.real(nu, "nu", positive=True)
    d = checks.finite_array(deltas, "deltas", ndim=1)
    x, y = np.asarray(x, float), np.asarray(y, float)
    i0, i1 = split_halves(x.shape[1])
    p1 = profile.profile(make_problem(x[:, i1], y[:, i1]), deltas=d, starts=starts, nu=nu,
                         connected=connected, backward=backward)
    R = x.shape[0]
    best = np.argmin(np.where(p1.certified, p1.ssr, np.inf), 1)
    have = p1.certified.any(1)
    theta_hat = np.where(have[:, None], p1.theta[np.arange(R), best], 0.0)
    if polish is not None:
        ssr_c = np.where(have, p1.ssr[np.arange(R), best], np.inf)
        theta_hat = polish(theta_hat, have, ssr_c, x[:, i1], y[:, i1])
    f0 = np.asarray(predict(theta_hat, x[:, i0]))
    axes = tuple(range(1, y.ndim))
    ssr_hat = np.where(have, np.sum((y[:, i0] - f0) ** 2, axis=axes), np.nan)
    p0 = profile.profile(make_problem(x[:, i0], y[:, i0]), deltas=d, starts=starts, nu=nu,
                         connected=connected, backward=backward)
    S = split_lrt_statistic(p0.ssr, ssr_hat, nu)
    radii = [profile.radius(d, s, c, connected=connected) for s in S]
    return SplitLRT(S, np.array([r for r, _ in radii]), np.array([st for _, st in radii]), c,
                    theta_hat, x.shape[1] // 2)


# ------------------------------------------------------------------ three thresholds side by side

def radius_under_thresholds(deltas: Float[ArrayLike, " K"], excess: Float[ArrayLike, "*R K"],
                            c_bootstrap: float | Float[ArrayLike, "*R"],
                            split_statistic: Float[ArrayLike, "*R K"], *, alpha: float = 0.05,
                            connected: bool = False) -> dict:
    r"""One grid point's radii ``r = max{delta : statistic(delta) <= c}`` of ``R`` data sets
    under three thresholds (:func:`gated_hmoe.estimation.profile.radius`, same
    interpolation and statuses):

    - ``"chi2"``: ``excess (R, K)`` (units of ``nu``) at ``c = chi^2_1(1 - alpha)`` (3.84);
    - ``"bootstrap"``: the same excess at each data set's ``c_bootstrap (R,)`` (or one
      scalar; ``inf`` -- too many failed draws -- gives the grid's end, censored);
    - ``"split_lrt"``: ``split_statistic (R, K)`` (:func:`split_lrt_statistic`) at
      ``2 log(1/alpha)``.

    Returns ``{name: {"c": [R], "radius": [R], "status": [R]}}`` (JSON-ready; ``None``
    for ``nan``).

    >>> d = np.array([0.1, 0.2, 0.4])
    >>> out = radius_under_thresholds(d, np.array([[0.0, 4.0, 20.0]]), 8.0,
    ...                               np.array([[-1.0, 3.0, 30.0]]))
    >>> [round(out[k]["radius"][0], 4) for k in ("chi2", "bootstrap", "split_lrt")]
    [0.1946, 0.2378, 0.216]
    """
    a = _level(alpha)
    d = checks.finite_array(deltas, "deltas", ndim=1)
    e = np.asarray(excess, float)
    s = np.asarray(split_statistic, float)
    if e.ndim == 1:
        e = e[None]
    if s.ndim == 1:
        s = s[None]
    if e.shape[1:] != d.shape or s.shape[1:] != d.shape or s.shape[0] != e.shape[0]:
        raise ValueError(f"excess and split_statistic must have shape (R, {d.size}), got "
                         f"{e.shape} and {s.shape}")
    R = e.shape[0]
    cb = np.broadcast_to(np.asarray(c_bootstrap, float), (R,))
    if np.any(np.isnan(cb)):
        raise ValueError("c_bootstrap must not be nan (an undetermined null fit has no threshold)")
    chi2 = float(scipy.stats.chi2.ppf(1 - a, 1))
    split_c = split_lrt_cutoff(a)

    def radii(stat, cs):
        out = [profile.radius(d, row, float(ci) if np.isfinite(ci) else np.inf,
                              connected=connected) for row, ci in zip(stat, cs)]
        return {"c": [float(ci) for ci in cs],
                "radius": [None if not np.isfinite(r) else float(r) for r, _ in out],
                "status": [st for _, st in out]}

    return {"chi2": radii(e, np.full(R, chi2)), "bootstrap": radii(e, cb),
            "split_lrt": radii(s, np.full(R, split_c))}


__all__ = ["BootstrapProblem", "BootstrapThreshold", "MoEProfileProblem", "PinnedFits", "split_lrt",
           "PinnedProblem", "SPLIT_LRT_95", "SplitLRT", "bootstrap_draws",
           "bootstrap_threshold", "fit_pinned", "fit_pinned_batch", "merge_pair",
           "order_statistic_ranks", "radius_under_thresholds", "split_halves",
           "split_lrt_cutoff", "split_lrt_excess", "split_lrt_statistic"]
