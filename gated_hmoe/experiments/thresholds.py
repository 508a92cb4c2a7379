r"""Thresholds for the profile radius, validated where the answer is known (SPEC §5 "Thresholds").

Two experiments on :mod:`gated_hmoe.estimation.thresholds`:

- :func:`regular_validation`: the bootstrap machinery on a *regular* case, where the law is
  known. An exactly specified mixture (``k = k* = 2``, the default truth's distinct atoms,
  ``D = 1``); the null pins ``q`` coordinates of the free parameter vector at their true
  values; the likelihood-ratio statistic is then asymptotically ``chi^2_q``. Measured on
  ``data_sets`` independent data sets drawn from the truth: (a) the statistic's law against
  ``chi^2_q`` (Kolmogorov-Smirnov p-value; the ``1 - alpha`` quantile with its binomial
  order-statistic interval), (b) the parametric bootstrap threshold of each of the first
  ``bootstrap_sets`` data sets (``draws`` simulated data sets each, every fit redone),
  pooled and per data set, against ``chi^2_q(1 - alpha)``, (c) the coverage of the truth
  by ``{T <= c_bootstrap}``, and (d) the split likelihood-ratio set's coverage (fit on one
  half, evaluate on the other; at least ``1 - alpha`` at every ``n``). Declared starts: the
  observed data sets' fits start at the truth (this checks the statistic's law, not the
  optimiser); the bootstrap draws' fits start at their data set's null fit.
- :func:`profile_point_thresholds`: one grid point of an E1 profile configuration
  (:class:`gated_hmoe.experiments.e1_profile.ProfileConfig`): the bootstrap threshold of
  the excess at the truth's own offset (null: the fitted exactly specified model; the
  statistic at the grid's first offset, the stand-in for 0) per replicate data set, the
  split-LRT set, and the radius under ``chi^2_1``, bootstrap and split-LRT thresholds
  (:func:`gated_hmoe.estimation.thresholds.radius_under_thresholds`).
- :func:`attention_point_thresholds`: the same three for one grid point of an attention
  profile (:class:`gated_hmoe.experiments.e2_profile.AttentionProfileConfig`): the null is
  the exactly specified student, the radii are local (the profile set's first component).

Both use the known noise variance ``nu`` (the book's experiments know it).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from gated_hmoe import checks
from gated_hmoe.estimation import head_profile, moe_fit, thresholds
from gated_hmoe.experiments import e1_profile, e2_profile
from gated_hmoe.models import data, moe


def binomial_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a proportion (e.g. a coverage).

    >>> [round(v, 3) for v in binomial_interval(190, 200)]
    [0.91, 0.976]
    """
    k = checks.positive_int(successes, "successes", minimum=0)
    m = checks.positive_int(trials, "trials")
    if k > m:
        raise ValueError(f"successes must be <= trials = {m}, got {k}")
    a = 1 - level
    lo = 0.0 if k == 0 else float(scipy.stats.beta.ppf(a / 2, k, m - k + 1))
    hi = 1.0 if k == m else float(scipy.stats.beta.ppf(1 - a / 2, k + 1, m - k))
    return lo, hi


def quantile_summary(values: np.ndarray, q: float) -> dict:
    """The ``q`` quantile of i.i.d. ``values`` (``nan`` ranked ``+inf``) with the 95%
    binomial order-statistic interval (:func:`~gated_hmoe.estimation.thresholds.order_statistic_ranks`)."""
    v = np.sort(np.where(np.isfinite(values), values, np.inf))
    lo, hi = thresholds.order_statistic_ranks(v.size, q)
    return {"quantile": float(np.quantile(v, q)), "lower": float(v[lo - 1]),
            "upper": float(v[hi - 1]), "count": int(v.size)}


@dataclasses.dataclass(frozen=True)
class RegularConfig:
    """The regular validation case (:func:`regular_validation`).

    ``expert`` (``silu``/``sigmoid``), ``n``, ``nu`` (known noise variance), ``data_sets``
    independent data sets (seeds ``fold_in(key(seed), m)``), ``draws`` bootstrap draws for
    each of the first ``bootstrap_sets`` data sets, ``pinned``: indices into the free
    parameter vector of :func:`gated_hmoe.models.moe.pack` (default ``(2,)``: the slope of
    expert 0), ``alpha``, the loop's ``max_iter``/``rtol``, ``batch`` draws per fit call.
    """

    expert: str = "silu"
    n: int = 2000
    nu: float = 1e-6
    data_sets: int = 200
    draws: int = 200
    bootstrap_sets: int = 200
    pinned: tuple = (2,)
    seed: int = 0
    alpha: float = 0.05
    max_iter: int = 200
    rtol: float = 1e-3
    batch: int = 2048

    def validate(self) -> "RegularConfig":
        checks.choice(self.expert, "expert", ("silu", "sigmoid"))
        checks.positive_int(self.n, "n", minimum=4)
        checks.real(self.nu, "nu", positive=True)
        checks.positive_int(self.data_sets, "data_sets", minimum=20)
        checks.positive_int(self.draws, "draws", minimum=20)
        b = checks.positive_int(self.bootstrap_sets, "bootstrap_sets", minimum=0)
        if b > self.data_sets:
            raise ValueError(f"bootstrap_sets must be <= data_sets = {self.data_sets}, got {b}")
        p = moe.make_spec(expert=self.expert, k=2, D=1).num_params
        if (not isinstance(self.pinned, tuple) or not self.pinned
                or len(set(self.pinned)) != len(self.pinned)
                or any(not isinstance(j, int) or not 0 <= j < p for j in self.pinned)
                or len(self.pinned) >= p):
            raise ValueError(f"pinned must be a tuple of 1 to {p - 1} distinct indices in "
                             f"[0, {p}), got {self.pinned!r}")
        a = checks.real(self.alpha, "alpha")
        if not 0 < a < 1:
            raise ValueError(f"alpha must be in (0, 1), got {a!r}")
        checks.positive_int(self.max_iter, "max_iter")
        checks.real(self.rtol, "rtol", positive=True)
        checks.positive_int(self.batch, "batch")
        checks.positive_int(self.seed, "seed", minimum=0)
        return self


def regular_data(config: RegularConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (M, n, 1)``, ``y (M, n)`` drawn from the default truth with noise ``nu``, and the
    truth's free parameters ``theta* (p,)``."""
    G = moe.pin_last(moe.default_truth(config.expert))
    spec = moe.make_spec(expert=config.expert, k=2, D=1)
    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(config.seed), r))(
        jnp.arange(config.data_sets))
    x, xi, f = data.draws_and_means_jit(keys, jax.tree.map(jnp.asarray, G), config.n, 1,
                                        config.expert, "linear")
    y = np.asarray(f) + math.sqrt(config.nu) * np.asarray(xi)
    return np.asarray(x), y, np.asarray(moe.pack(G, spec))


def regular_validation(config: RegularConfig) -> dict:
    """Run the regular validation (see the module docstring); a JSON-ready dict with the
    measured numbers and the seconds each stage took.

    What it measured on the book's two configurations: docs/decisions.md.
    """
    if not isinstance(config, RegularConfig):
        raise TypeError(f"config must be a RegularConfig, got {type(config).__name__}")
    config.validate()
    spec = moe.make_spec(expert=config.expert, k=2, D=1)
    q, a = len(config.pinned), config.alpha
    law = scipy.stats.chi2(q)
    c_chi2 = float(law.ppf(1 - a))
    x, y, theta_star = regular_data(config)
    problem = thresholds.PinnedProblem(spec=spec, pinned=config.pinned,
                                       value=theta_star[list(config.pinned)], start=theta_star,
                                       nu=config.nu, max_iter=config.max_iter, rtol=config.rtol)
    seconds = {}
    t0 = time.perf_counter()
    obs = problem.observe(x, y)
    T = problem.excess(obs)
    seconds["fits"] = time.perf_counter() - t0
    ok = np.isfinite(T)
    out = {"config": dataclasses.asdict(config), "chi2_df": q, "chi2_quantile": c_chi2,
           "excess": T.tolist(), "failed": int((~ok).sum()),
           "ks_pvalue": float(scipy.stats.kstest(T[ok], law.cdf).pvalue),
           "excess_quantile": quantile_summary(T, 1 - a),
           "excess_mean": float(np.nanmean(T))}

    # (d) split likelihood ratio: theta_1 = full fit on D1; pinned fit on D0
    t0 = time.perf_counter()
    i0, i1 = thresholds.split_halves(config.n)
    start = np.tile(problem.start, (config.data_sets, 1))
    full1 = moe_fit.fit(x[:, i1], y[:, i1], start, spec=spec, max_iter=config.max_iter,
                        rtol=config.rtol)
    null0 = thresholds.fit_pinned(x[:, i0], y[:, i0], start, spec=spec, pinned=config.pinned,
                                  max_iter=config.max_iter, rtol=config.rtol)
    f1 = jax.vmap(lambda t, xx: moe.mean_of_theta(t, xx, spec))(jnp.asarray(full1.theta),
                                                               jnp.asarray(x[:, i0]))
    ssr_hat = np.sum((y[:, i0] - np.asarray(f1)) ** 2, 1)
    ssr0 = np.where(null0.converged, null0.mse * (config.n // 2), np.nan)
    S = thresholds.split_lrt_statistic(ssr0[:, None], ssr_hat, config.nu)[:, 0]
    c_split = thresholds.split_lrt_cutoff(a)
    covered = int(np.sum(S <= c_split))
    out["split_lrt"] = {"c": c_split, "statistic": S.tolist(), "failed": int(np.isnan(S).sum()),
                        "coverage": covered / config.data_sets,
                        "coverage_interval": binomial_interval(covered, config.data_sets)}
    seconds["split_lrt"] = time.perf_counter() - t0

    # (b), (c) parametric bootstrap on the first bootstrap_sets data sets
    m = config.bootstrap_sets
    if m:
        t0 = time.perf_counter()
        sub = thresholds.PinnedFits(
            *(moe_fit.FitResult(spec, **{f.name: getattr(r, f.name)[:m]
                                         for f in dataclasses.fields(moe_fit.FitResult)
                                         if f.name != "spec"})
              for r in (obs.null, obs.full)), obs.n)
        boot = thresholds.bootstrap_draws(problem, jax.random.key(config.seed + 1), x[:m],
                                          y[:m], nu=config.nu, draws=config.draws,
                                          batch=config.batch, observed=sub)
        bt = thresholds.bootstrap_threshold(boot["draws"], a)
        seconds["bootstrap"] = time.perf_counter() - t0
        cov = int(np.sum(T[:m] <= bt.c))
        out["bootstrap"] = {
            **bt.to_dict(), "null_certified": int(boot["null_certified"].sum()),
            "pooled": quantile_summary(boot["draws"].ravel(), 1 - a),
            "mean_c": float(np.mean(bt.c)),
            "mean_c_se": float(np.std(bt.c, ddof=1) / math.sqrt(m)) if m > 1 else None,
            "coverage": cov / m, "coverage_interval": binomial_interval(cov, m),
            "chi2_coverage": float(np.mean(T[:m] <= c_chi2))}
    out["seconds"] = seconds
    return out


# ------------------------------------------------------------------ one E1 grid point

def profile_point_thresholds(config: e1_profile.ProfileConfig, n: int, nu: float, *,
                             replicates: tuple[int, ...] | None = None, draws: int = 200,
                             alpha: float = 0.05, seed: int = 0, batch: int = 256,
                             cache_dir=None) -> dict:
    r"""The three thresholds at one grid point ``(n, nu)`` of an E1 profile configuration,
    for the replicate data sets ``replicates`` (indices; default all of the config's),
    each on the data :func:`~gated_hmoe.experiments.e1_profile.run_point` would fit.

    Bootstrap (:class:`gated_hmoe.estimation.thresholds.MoEProfileProblem`, ``null="exact"``,
    ``at=0``): per data set, the exactly specified fit ``f_null``, ``draws`` data sets
    ``f_null(x) + sqrt(nu) xi`` on its design with the known ``nu``, and on each the whole
    profile redone (same offsets, declared starts --
    :func:`~gated_hmoe.experiments.e1_profile.population_starts` -- and continuation), the
    statistic being the excess at the grid's first offset; ``c`` its ``1 - alpha``
    Monte-Carlo critical value with the order-statistic interval. Split LRT:
    :func:`gated_hmoe.estimation.thresholds.split_lrt_excess`. Cost: ``draws + 1`` profiles
    per data set (minutes per data set at the chapter's sizes on 2 cores).

    Returns a JSON-ready dict: ``thresholds`` (bootstrap), ``radii``
    (:func:`~gated_hmoe.estimation.thresholds.radius_under_thresholds`), ``excess``
    (observed, ``(R, K)``), ``split_lrt_statistic``, ``seconds``.
    """
    if not isinstance(config, e1_profile.ProfileConfig):
        raise TypeError(f"config must be a ProfileConfig, got {type(config).__name__}")
    config.validate()
    n = checks.positive_int(n, "n", minimum=4)
    nu = checks.real(nu, "nu", positive=True)
    rep = tuple(range(config.replicates)) if replicates is None else tuple(replicates)
    if not rep or any(not 0 <= r < config.replicates for r in rep):
        raise ValueError(f"replicates must index the config's {config.replicates} replicates, "
                         f"got {replicates!r}")
    x, xi, f = e1_profile.replicate_data(config)
    if n > x.shape[1]:
        raise ValueError(f"n must be <= the {x.shape[1]} drawn samples, got {n}")
    idx = np.array(rep)
    x, y = x[idx, :n], f[idx, :n] + math.sqrt(nu) * xi[idx, :n]
    starts = e1_profile.population_starts(config, cache_dir=cache_dir)
    spec = moe.make_spec(expert=config.expert, gate=config.gate, k=config.k_fit, D=1)
    d = config.deltas()
    problem = thresholds.MoEProfileProblem(spec=spec, G_ref=config.truth(), deltas=d,
                                           starts=starts, nu=nu, at=0, null="exact",
                                           split=config.split, max_iter=config.max_iter,
                                           rtol=config.rtol)
    body = _three_thresholds(
        problem, lambda: thresholds.split_lrt_excess(
            x, y, spec=spec, G_ref=config.truth(), deltas=d, starts=starts, nu=nu, alpha=alpha,
            split=config.split, max_iter=config.max_iter, rtol=config.rtol),
        x, y, d, nu=nu, draws=draws, alpha=alpha, seed=seed, batch=batch, connected=False)
    return {"n": n, "noise": nu, "x": n / nu, "replicates": list(rep), "draws": draws,
            "alpha": alpha, "deltas": d.tolist(), "statistic_offset": float(d[0]), **body}


def _three_thresholds(problem, split_lrt, x, y, d, *, nu, draws, alpha, seed, batch,
                      connected) -> dict:
    """The bootstrap of ``problem`` (``draws`` per data set, key ``seed``), the split-LRT set
    ``split_lrt()`` and the radii under the three thresholds, JSON-ready."""
    t0 = time.perf_counter()
    boot = thresholds.bootstrap_draws(problem, jax.random.key(seed), x, y, nu=nu, draws=draws,
                                      batch=batch)
    bt = thresholds.bootstrap_threshold(boot["draws"], alpha)
    t_boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    sl = split_lrt()
    t_split = time.perf_counter() - t0
    prof = boot["observed"]
    radii = thresholds.radius_under_thresholds(d, prof.excess, bt.c, sl.statistic,
                                               alpha=alpha, connected=connected)
    return {"thresholds": {"bootstrap": bt.to_dict(),
                           "null_certified": boot["null_certified"].tolist(),
                           "bootstrap_draws": _listed(boot["draws"]),
                           "split_lrt": sl.c},
            "excess": _listed(prof.excess), "split_lrt_statistic": _listed(sl.statistic),
            "radii": radii, "seconds": {"bootstrap": t_boot, "split_lrt": t_split}}


def _listed(a) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(a)]


def attention_point_thresholds(config: e2_profile.AttentionProfileConfig, n: int, nu: float,
                               *, replicates: tuple[int, ...] | None = None, draws: int = 200,
                               alpha: float = 0.05, seed: int = 0, batch: int = 256,
                               cache_dir=None) -> dict:
    r"""The three thresholds at one grid point ``(n, nu)`` of an attention profile, for the
    replicate data sets ``replicates`` (default all), each on the data
    :func:`~gated_hmoe.experiments.e2_profile.run_point` fits.

    Bootstrap (:class:`gated_hmoe.estimation.head_profile.AttentionProfileProblem`, ``at=0``):
    per data set the exactly specified student's fit ``f_null``, ``draws`` data sets
    ``f_null(x) + sqrt(nu) xi`` on its sequences, and on each the whole profile redone
    (same offsets and starts, continuation, the local component), the statistic being the
    excess at the grid's first offset. Split LRT:
    :func:`gated_hmoe.estimation.head_profile.split_lrt_excess` (halves of the sequences).
    Returns the layout of :func:`profile_point_thresholds`.
    """
    if not isinstance(config, e2_profile.AttentionProfileConfig):
        raise TypeError(f"config must be an AttentionProfileConfig, got {type(config).__name__}")
    config.validate()
    rep = tuple(range(config.replicates)) if replicates is None else tuple(replicates)
    if not rep or any(not 0 <= r < config.replicates for r in rep):
        raise ValueError(f"replicates must index the config's {config.replicates} replicates, "
                         f"got {replicates!r}")
    n, nu, x, _, y = e2_profile.point_data(config, n, nu)
    idx = np.array(rep)
    x, y = x[idx], y[idx]
    starts = e2_profile.population_starts(config, cache_dir=cache_dir)
    d = config.deltas()
    kw = dict(position=config.position, teacher=config.teacher(), split=config.split,
              max_iter=config.max_iter, rtol=config.rtol, connected=config.connected,
              backward=config.backward)
    problem = head_profile.AttentionProfileProblem(deltas=d, starts=starts, nu=nu, at=0, **kw)
    body = _three_thresholds(
        problem, lambda: head_profile.split_lrt_excess(x, y, deltas=d, starts=starts, nu=nu,
                                                       alpha=alpha, **kw),
        x, y, d, nu=nu, draws=draws, alpha=alpha, seed=seed, batch=batch,
        connected=config.connected)
    return {"position": config.position, "n": n, "noise": nu, "x": n / nu,
            "replicates": list(rep), "draws": draws, "alpha": alpha, "deltas": d.tolist(),
            "statistic_offset": float(d[0]), **body}


__all__ = ["attention_point_thresholds", "RegularConfig", "binomial_interval", "profile_point_thresholds", "quantile_summary",
           "regular_data", "regular_validation"]
