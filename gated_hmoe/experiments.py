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

Both report losses against the effective sample size ``n / nu``. Also here: the modulus
:func:`modulus` ``m(delta)`` and the exact-fit valley :func:`valley_measure` of SPEC §4-§5.

Command line: ``python -m gated_hmoe rates --help``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import __version__, cache, checks, data, estimators, moe, rates, voronoi

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


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that determines a rate experiment's numbers (hashed for the cache).

    ``true``: a measure as a dict (``beta0, beta1, expert[, quad]``) or ``None`` for
    :func:`gated_hmoe.moe.default_truth`. ``fit_min``/``fit_max``: range of ``n / nu`` used
    for the slopes (``None``: whole grid; for the noise sweep ``fit_min`` defaults to
    :data:`NOISE_FIT_MIN`). ``init`` etc.: see :class:`gated_hmoe.estimators.InitConfig`.
    ``max_iter``/``rtol``: optimiser budget and stopping rule
    (:func:`gated_hmoe.estimators.fit`).
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
        checks.choice(self.init, "init", estimators.INITS)
        k_true = checks.positive_int(self.k_true, "k_true")
        k_fit = checks.positive_int(self.k_fit, "k_fit")
        if k_fit < k_true:
            raise ValueError(f"k_fit must be >= k_true, got k_fit={k_fit} < k_true={k_true}")
        G = self.truth()
        if G.beta0.shape[0] != k_true:
            raise ValueError(f"k_true must equal the number of atoms of the true measure "
                             f"({G.beta0.shape[0]}), got {k_true}")
        if self.sweep == "n":
            lo = checks.positive_int(self.n_min, "n_min")
            hi = checks.positive_int(self.n_max, "n_max")
            if hi < lo:
                raise ValueError(f"n_max must be >= n_min, got n_min={lo}, n_max={hi}")
            checks.real(self.noise, "noise", positive=True)
        else:
            checks.positive_int(self.n, "n")
            lo = checks.real(self.noise_min, "noise_min", positive=True)
            hi = checks.real(self.noise_max, "noise_max", positive=True)
            if hi < lo:
                raise ValueError(f"noise_max must be >= noise_min, got {lo} and {hi}")
        checks.positive_int(self.points, "points")
        checks.positive_int(self.replicates, "replicates")
        checks.positive_int(self.seed, "seed", minimum=0)
        checks.positive_int(self.max_iter, "max_iter")
        checks.real(self.rtol, "rtol", positive=True)
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
        xs = [n / nu for n, nu in self.grid()]
        lo, hi = self.slope_range()
        inside = [x for x in xs if (lo is None or x >= lo * (1 - 1e-9))
                  and (hi is None or x <= hi * (1 + 1e-9))]
        if len(inside) < 2:
            raise ValueError(f"the slope range (fit_min={lo}, fit_max={hi}) must hold at least 2 "
                             f"of the grid's n/nu values (points={self.points}: "
                             f"{[float(f'{x:.3g}') for x in xs]}), got {len(inside)}")
        return self

    def init_config(self) -> estimators.InitConfig:
        return estimators.InitConfig(self.init, self.spread, self.split_atom, self.starts, self.box)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hex hash of everything that determines the fits (the cache key)."""
        fits = {k: v for k, v in self.to_dict().items() if k not in SLOPE_ONLY_FIELDS}
        return cache.config_key(fits)

    # -------------------------------------------------------------- grid
    def grid(self) -> list[tuple[int, float]]:
        """Grid points ``(n, nu)``, in increasing effective sample size ``n / nu``."""
        if self.sweep == "n":
            ns = np.unique(np.round(np.logspace(math.log10(self.n_min), math.log10(self.n_max),
                                                self.points)).astype(int))
            return [(int(n), float(self.noise)) for n in ns]
        nus = np.logspace(math.log10(self.noise_max), math.log10(self.noise_min), self.points)
        nus = sorted({float(f"{v:.12e}") for v in nus}, reverse=True)
        return [(int(self.n), v) for v in nus]

    def slope_range(self) -> tuple[float | None, float | None]:
        lo = self.fit_min
        if lo is None and self.sweep == "noise":
            lo = NOISE_FIT_MIN
        return lo, self.fit_max


def default_cache_dir() -> Path:
    """``$GATED_HMOE_CACHE`` if set, else ``~/.cache/gated_hmoe`` (see :mod:`gated_hmoe.cache`)."""
    return cache.cache_root()


def versions() -> dict:
    """Library versions recorded with every result."""
    import scipy
    import jaxlib
    return {"gated_hmoe": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def _atomic_write_json(path: Path, obj) -> None:
    cache.write_json_atomic(path, obj, indent=1)


# ------------------------------------------------------------------ one grid point

@functools.partial(jax.jit, static_argnames=("n", "D", "R", "expert", "gate"))
def _point_data(key, G: moe.MixingMeasure, *, n: int, D: int, R: int, expert: str, gate: str):
    """One grid point's draws, compiled as one program: ``x: (R, n, D)``, standard normal
    ``eps: (R, n)`` and the true regression function ``f: (R, n)``."""
    return data.draws_and_means(jax.random.split(key, R), G, n, D, expert, gate)


def run_point(config: SweepConfig, n: int, nu: float, *, devices: int | None = None,
              capacity: int | None = None) -> dict:
    """Fit all replicates at one grid point; return a JSON-ready dict (no caching).
    ``capacity``: see :func:`gated_hmoe.estimators.fit` (one compiled fit for a whole sweep)."""
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    config.validate()
    n = checks.positive_int(n, "n")
    nu = checks.real(nu, "nu", positive=True)
    G = config.truth()
    D = G.beta1.shape[1]
    R = config.replicates
    spec = estimators.make_spec(expert=config.expert, gate=config.gate, k=config.k_fit, D=D)
    base = jax.random.key(config.seed)
    x, eps, f_true = _point_data(jax.random.fold_in(base, n), jax.tree.map(jnp.asarray, G),
                                 n=n, D=D, R=R, expert=config.expert, gate=config.gate)
    x, eps = np.asarray(x), np.asarray(eps)
    y = np.asarray(f_true) + math.sqrt(nu) * eps
    theta0 = estimators.initial_thetas(jax.random.fold_in(base, 2**30 + 7), G, spec,
                                       config.init_config(), R)
    t0 = time.perf_counter()
    res = estimators.fit_with_init(x, y, theta0, spec=spec, max_iter=config.max_iter,
                                   rtol=config.rtol, devices=devices, capacity=capacity)
    seconds = time.perf_counter() - t0
    mse_true = np.mean(eps ** 2, axis=1) * nu
    reps = []
    for r in range(R):
        finite = bool(np.all(np.isfinite(res.theta[r])))
        if finite:
            L = voronoi.losses(res.measure(r), G)
        else:
            L = {m: float("nan") for m in ("d1", "d2", "d2_r2", "V", "worst_overfitted",
                                          "worst_singleton")}
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
    losses and diagnostics; ``slopes`` maps a metric to its :class:`~gated_hmoe.rates.Slope`."""

    config: SweepConfig
    points: list[dict]
    slopes: dict[str, rates.Slope]
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
        spec = estimators.make_spec(expert=cfg.expert, gate=cfg.gate, k=cfg.k_fit,
                                    D=cfg.truth().beta1.shape[1])
        out = np.full((len(self.points), cfg.replicates), np.nan)
        for i, p in enumerate(self.points):
            for r, rep in enumerate(p["replicates"]):
                over = np.array(rep.get("atom_overfitted", []), bool)
                theta = np.asarray(rep["theta"], float)
                if over.any() and np.all(np.isfinite(theta)):
                    b0 = np.asarray(estimators.unpack(jnp.asarray(theta), spec).beta0)
                    w = np.exp(b0 - b0.max())
                    out[i, r] = float(np.min(w[over]) / np.sum(w))
        return out

    def failures(self) -> list[int]:
        return [p["failures"] for p in self.points]

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "cache_key": self.config.key(),
                "versions": self.versions,
                "init": dataclasses.asdict(self.config.init_config()),
                "truth": moe.measure_to_dict(self.config.truth()),
                "grid": {"n": [p["n"] for p in self.points],
                         "noise": [p["noise"] for p in self.points],
                         "effective_sample_size": [p["x"] for p in self.points]},
                "slopes": {m: s.to_dict() for m, s in self.slopes.items()},
                "failures": self.failures(), "total_failures": int(sum(self.failures())),
                "seconds": self.seconds, "points": self.points}

    def write(self, out_dir) -> Path:
        """Write ``results.json`` and ``rates.png`` into ``out_dir``; return the JSON path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(out / "results.json", self.to_dict())
        from gated_hmoe import plots
        import matplotlib.pyplot as plt
        fig, _ = plots.rate_figure(self)
        fig.savefig(out / "rates.png", bbox_inches="tight")
        plt.close(fig)
        return out / "results.json"


def upper_slopes(results: dict, *, metric: str = "worst_overfitted",
                 x_min: float = UPPER_FIT_MIN) -> dict:
    """``{key: Slope}``: slope of ``metric`` against ``n / nu`` over ``[x_min, max]`` for each
    :class:`SweepResult` in ``results`` (same bootstrap as the main slopes, seed of the
    sweep's configuration)."""
    return {key: rates.slope(res.x, res.losses(metric), x_min=x_min, seed=res.config.seed)
            for key, res in results.items()}


def compute_slopes(config: SweepConfig, points: list[dict]) -> dict[str, rates.Slope]:
    """Slopes of every defined metric against ``n / nu`` over the configured range."""
    x = np.array([p["x"] for p in points])
    lo, hi = config.slope_range()
    out = {}
    for m in METRICS:
        L = np.array([[r[m] for r in p["replicates"]] for p in points], float)
        if m == "worst_overfitted" and config.k_fit == config.k_true:
            continue
        if m == "V" and config.k_fit == config.k_true:
            continue
        if m == "worst_singleton" and np.all(np.isnan(L)):
            continue
        out[m] = rates.slope(x, L, x_min=lo, x_max=hi, seed=config.seed)   # validate(): >= 2 points
    return out


def run_sweep(config: SweepConfig, *, cache_dir=None, progress: bool = True,
              devices: int | None = None) -> SweepResult:
    """Run (or load from cache) every grid point of ``config``; fit the slopes.

    ``cache_dir``: default :func:`default_cache_dir`; points live in
    ``cache_dir/rates/<config.key()>/``. ``devices``: JAX devices to shard replicates over
    (does not enter the cache key).
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    config.validate()
    if devices is not None:
        devices = checks.positive_int(devices, "devices")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "rates" / config.key()
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(folder / "config.json", config.to_dict())
    grid = config.grid()
    capacity = max(n for n, _ in grid)         # one compiled fit serves every grid point
    points = []
    from tqdm.auto import tqdm
    bar = tqdm(grid, desc=f"rates {config.expert} k={config.k_fit} ({config.sweep})",
               disable=not progress, unit="pt")
    for n, nu in bar:
        path = folder / f"point_n{n}_nu{nu:.6e}.json"
        if path.exists():
            with open(path) as fh:
                point = json.load(fh)
        else:
            point = run_point(config, n, nu, devices=devices, capacity=capacity)
            _atomic_write_json(path, point)
        bar.set_postfix(n=n, nu=f"{nu:.0e}", fail=point["failures"])
        points.append(point)
    seconds = sum(p["seconds"] for p in points)
    return SweepResult(config, points, compute_slopes(config, points), seconds, versions())


# ------------------------------------------------------------------ modulus m(delta) and the valley

def _omega_dim(spec: estimators.ModelSpec) -> int:
    return spec.F - 1 + spec.P


def _pair_measure(psi, delta, G_true, spec, atom, center):
    """Measure with the pair of atoms at omega*_atom (+ c) ± delta * v/|v| (equal weights)."""
    k_true = G_true.beta0.shape[0]
    tg = moe.gate_params(spec.gate, G_true)                      # (k*, F)
    te = G_true.expert
    w = _omega_dim(spec)
    c0, v, rest = psi[0], psi[1: 1 + w], psi[1 + w:]
    u = v / jnp.linalg.norm(v)
    om = jnp.concatenate([tg[atom, 1:], te[atom]])
    if center:
        om, rest = om + rest[:w], rest[w:]
    pair = jnp.stack([om + delta * u, om - delta * u])
    pair_g = jnp.concatenate([jnp.full((2, 1), c0), pair[:, : spec.F - 1]], 1)
    pair_e = pair[:, spec.F - 1:]
    others = [j for j in range(k_true) if j != atom]
    n_free_g = (len(others) - 1) * spec.F
    og = jnp.concatenate([rest[:n_free_g].reshape(len(others) - 1, spec.F),
                          jnp.zeros((1, spec.F))]) if others else jnp.zeros((0, spec.F))
    oe = rest[n_free_g:].reshape(len(others), spec.P)
    gates = jnp.concatenate([pair_g, og])
    experts = jnp.concatenate([pair_e, oe])
    theta = jnp.concatenate([gates[:-1].reshape(-1), experts.reshape(-1)])
    return theta


def modulus_values(deltas, *, expert: str, gate: str = "linear",
                   G_true: moe.MixingMeasure | None = None, atom: int = 0, center: bool = True,
                   quad_points: int = 200, starts: int = 4, seed: int = 0, max_nfev: int = 2000,
                   stop_below: float | None = None) -> np.ndarray:
    r"""``m(delta) = min ||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` for each ``delta`` in
    ``deltas: (d,)``, over fits with one extra atom whose over-fitted pair sits at
    ``omega*_atom + c ± delta u`` (``|u| = 1``, equal weights; ``omega`` = the atom's gate
    parameters without the intercept, then its expert; ``delta`` is half the pair's
    separation; the common centre ``c`` is free when ``center=True``, fixed at 0 otherwise).

    Minimised (scipy Levenberg-Marquardt, tolerances 1e-15, at most ``max_nfev``
    evaluations, on a Gauss-Legendre rule with ``quad_points`` nodes, ``D = 1``, any gate
    class) over the direction ``u``, the pair's common intercept and all other atoms, from
    the coordinate axes and ``starts`` random directions of ``Generator(seed)``; the
    smallest value is kept. With ``stop_below`` set, further directions are skipped once a
    value ``<= stop_below`` is reached (``m`` cannot be negative). The residual and its
    Jacobian are compiled once, with ``delta`` as an argument. Exactly 0 for linear experts
    (the valley), ``~ delta^4`` for ridge experts under the linear gate. Returns ``(d,)``.
    """
    import scipy.optimize

    checks.choice(expert, "expert", moe.EXPERTS)
    checks.choice(gate, "gate", moe.GATES)
    deltas = checks.finite_array(deltas, "deltas", ndim=1).astype(float)
    if deltas.size < 1 or np.any(deltas <= 0):
        raise ValueError(f"deltas must be a non-empty 1-d array of numbers > 0, got {deltas}")
    G = moe.default_truth(expert, gate=gate) if G_true is None else moe.validate_measure(
        G_true, "G_true", expert=expert, gate=gate)
    G = moe.pin_last(G)
    if G.beta1.shape[1] != 1:
        raise ValueError(f"G_true must have D = 1 (quadrature on [-1, 1]), got D={G.beta1.shape[1]}")
    k_true = G.beta0.shape[0]
    atom = checks.positive_int(atom, "atom", minimum=0)
    if atom >= k_true - 1:
        raise ValueError(f"atom must index a non-pinned true atom (< {k_true - 1}), got {atom}")
    quad_points = checks.positive_int(quad_points, "quad_points")
    starts = checks.positive_int(starts, "starts", minimum=0)
    max_nfev = checks.positive_int(max_nfev, "max_nfev")
    if stop_below is not None:
        stop_below = checks.real(stop_below, "stop_below", positive=True)
    spec = estimators.make_spec(expert=expert, gate=gate, k=k_true + 1, D=1)
    Gj = jax.tree.map(lambda a: None if a is None else jnp.asarray(a), G)
    nodes, weights = np.polynomial.legendre.leggauss(quad_points)
    xq = jnp.asarray(nodes)[:, None]
    sw = jnp.sqrt(jnp.asarray(weights) / 2.0)
    f_true = moe.mean_unchecked(Gj, xq, expert, gate)

    def resid(psi, delta):
        theta = _pair_measure(psi, delta, Gj, spec, atom, center)
        return sw * (estimators._mean(theta, xq, spec) - f_true)

    r_jit, j_jit = jax.jit(resid), jax.jit(jax.jacfwd(resid))
    w = _omega_dim(spec)
    tg = np.asarray(moe.gate_params(gate, Gj))
    others = [j for j in range(k_true) if j != atom]
    rest0 = np.concatenate([tg[others][:-1].ravel(), np.asarray(G.expert)[others].ravel()])
    rng = np.random.default_rng(seed)
    dirs = list(np.eye(w)) + list(rng.standard_normal((starts, w)))
    out = []
    for delta in deltas:
        d = jnp.asarray(float(delta))
        best = np.inf
        for v in dirs:
            psi0 = np.concatenate([[float(G.beta0[atom]) - math.log(2)], v,
                                   np.zeros(w if center else 0), rest0])
            sol = scipy.optimize.least_squares(
                lambda p, d=d: np.asarray(r_jit(jnp.asarray(p), d)), psi0,
                jac=lambda p, d=d: np.asarray(j_jit(jnp.asarray(p), d)), method="lm",
                xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=max_nfev)
            best = min(best, float(np.sum(sol.fun ** 2)))
            if stop_below is not None and best <= stop_below:
                break
        out.append(best)
    return np.array(out)


def modulus(delta: float, *, expert: str, G_true: moe.MixingMeasure | None = None,
            atom: int = 0, center: bool = True, quad_points: int = 200, starts: int = 4,
            seed: int = 0) -> float:
    r"""``m(delta)`` of :func:`modulus_values` at one offset ``delta`` (linear gate)."""
    delta = checks.real(delta, "delta", positive=True)
    return float(modulus_values(np.array([delta]), expert=expert, G_true=G_true, atom=atom,
                                center=center, quad_points=quad_points, starts=starts,
                                seed=seed)[0])


def valley_measure(t: float, *, expert: str, G_true: moe.MixingMeasure | None = None,
                   atom: int = 0, p: float = 0.5, direction=None) -> moe.MixingMeasure:
    r"""The exact-fit valley ``G_t`` (SPEC §4): atom ``atom`` split into two atoms with the true
    gate slope and weights ``p w*``, ``(1-p) w*``, value weights ``eta* + (1-p) t u`` and
    ``eta* - p t u`` (``p``-weighted mean = ``eta*``).

    ``u`` (default: all ones, normalised) acts on the *value* weights: the whole ``(a, b)``
    for ``linear``/``sigmoid``/``silu``, only ``(c, e)`` for ``glu`` (its gate ``(t, s)`` is
    kept). ``f_{G_t} = f_{G*}`` exactly for ``linear`` and ``glu``; not for ridge experts.

    >>> G = moe.default_truth("linear")
    >>> Gt = valley_measure(0.7, expert="linear")
    >>> x = np.linspace(-1, 1, 101)[:, None]
    >>> diff = moe.mean(Gt, x, expert="linear") - moe.mean(G, x, expert="linear")
    >>> bool(np.max(np.abs(diff)) < 1e-12)
    True
    """
    checks.choice(expert, "expert", moe.EXPERTS)
    t = checks.real(t, "t")
    p = checks.real(p, "p")
    if not (0 < p < 1):
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    atom = checks.positive_int(atom, "atom", minimum=0)
    G = moe.default_truth(expert) if G_true is None else moe.validate_measure(
        G_true, "G_true", expert=expert)
    G = jax.tree.map(lambda a: None if a is None else np.asarray(a, float), moe.pin_last(G))
    k_true, D = G.beta1.shape
    if not (0 <= atom < k_true - 1):
        raise ValueError(f"atom must index a non-pinned true atom (< {k_true - 1}), got {atom}")
    P = G.expert.shape[1]
    value = slice(D + 1, P) if expert == "glu" else slice(0, P)
    nv = value.stop - value.start
    u = np.ones(nv) if direction is None else checks.finite_array(direction, "direction", shape=(nv,))
    if not np.any(u != 0):
        raise ValueError("direction must be a non-zero vector (it is normalised to length 1)")
    u = u / np.linalg.norm(u)
    e1, e2 = G.expert[atom].copy(), G.expert[atom].copy()
    e1[value] += (1 - p) * t * u
    e2[value] -= p * t * u
    idx = [atom, atom] + [j for j in range(k_true) if j != atom]
    beta0 = G.beta0[idx].copy()
    beta0[0] += math.log(p)
    beta0[1] += math.log(1 - p)
    expert_arr = np.concatenate([e1[None], e2[None], G.expert[idx[2:]]])
    quad = None if G.quad is None else G.quad[idx]
    return moe.MixingMeasure(beta0, G.beta1[idx], expert_arr, quad)


# ------------------------------------------------------------------ command line

def _config_from_args(args) -> SweepConfig:
    true = None
    if args.true is not None:
        try:
            with open(args.true) as fh:
                true = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"true must be a readable JSON file, could not read {args.true!r}: "
                             f"{exc}") from exc
        if not isinstance(true, dict):
            raise ValueError("true must hold a JSON object with keys beta0, beta1, expert")
    fields = dict(expert=args.expert, gate=args.gate, k_true=args.k_true, k_fit=args.k_fit,
                  sweep=args.sweep, points=args.points, replicates=args.replicates,
                  seed=args.seed, init=args.init, spread=args.spread, starts=args.starts,
                  box=args.box, max_iter=args.max_iter, rtol=args.rtol, true=true,
                  fit_min=args.fit_min, fit_max=args.fit_max)
    if args.sweep == "n":
        fields.update(n_min=args.n_min, n_max=args.n_max, noise=args.noise)
    else:
        fields.update(n=args.n, noise_min=args.noise_min, noise_max=args.noise_max)
    return SweepConfig(**fields).validate()


def _cli_rates(args) -> int:
    config = _config_from_args(args)
    result = run_sweep(config, cache_dir=args.cache_dir, progress=not args.no_progress,
                       devices=args.devices)
    path = result.write(args.out)
    print(f"wrote {path} and {Path(args.out) / 'rates.png'}")
    for m, s in result.slopes.items():
        print(f"  {m:17s} {s.label()}  failures {sum(s.failures)}")
    print(f"  total failures {sum(result.failures())} of "
          f"{len(result.points) * config.replicates} fits; fit seconds {result.seconds:.1f}")
    return 0


def register_cli(subparsers) -> None:
    """Add the ``rates`` sub-command."""
    p = subparsers.add_parser("rates", help="E1: least-squares rates of MoE experts (n or noise sweep)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--expert", default="sigmoid", help=f"one of {moe.EXPERTS}")
    p.add_argument("--gate", default="linear", help=f"one of {moe.GATES}")
    p.add_argument("--k-true", type=int, default=2)
    p.add_argument("--k-fit", type=int, default=2)
    p.add_argument("--sweep", default="n", help="'n' (sample size) or 'noise' (E1 contrast protocol)")
    p.add_argument("--n-min", type=int, default=1000)
    p.add_argument("--n-max", type=int, default=100_000)
    p.add_argument("--noise", type=float, default=1e-6, help="noise variance for --sweep n")
    p.add_argument("--n", type=int, default=1000, help="fixed sample size for --sweep noise")
    p.add_argument("--noise-min", type=float, default=1e-14)
    p.add_argument("--noise-max", type=float, default=1e-4)
    p.add_argument("--points", type=int, default=12)
    p.add_argument("--replicates", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="near", help=f"one of {estimators.INITS}")
    p.add_argument("--spread", type=float, default=0.1)
    p.add_argument("--starts", type=int, default=8, help="random multi-start count")
    p.add_argument("--box", type=float, default=6.0, help="random multi-start half-width")
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--true", default=None, metavar="FILE.json", help="true measure (JSON)")
    p.add_argument("--fit-min", type=float, default=None, help="slope range: min n/nu")
    p.add_argument("--fit-max", type=float, default=None, help="slope range: max n/nu")
    p.add_argument("--devices", type=int, default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=_cli_rates)

