r"""Experiment E2, measured by what the data determine: the surplus head of an attention layer.

A teacher layer (:func:`gated_hmoe.models.heads.layer_teacher`: ``H* = 2`` heads, ``d = 2``,
``d_v = 2``, ``N`` tokens) generates ``Y = f(X) + sqrt(nu) xi``; a student of the same class
with one head more is profiled at pinned separations ``delta`` of its surplus pair's value
maps (:mod:`gated_hmoe.estimation.head_profile`), and the resolvable radius
``r_n = max{delta : Delta L_n(delta) <= c nu}`` is recorded per replicate
(:func:`gated_hmoe.estimation.profile.profile`). One configuration per gate position
(:data:`gated_hmoe.models.heads.LAYER_POSITIONS`); the statistics -- median radius, slope
against ``n / nu`` with bootstrap intervals over whole replicate curves, ``n(eps)`` -- are
those of experiment E1 (:class:`gated_hmoe.experiments.e1_profile.ProfileSweep`).

Sweeps as in E1: ``sweep="n"`` (each replicate draws ``n_max`` sequences once; smaller ``n``
use the first ``n``) and ``sweep="noise"`` (``n`` fixed, ``nu`` log-spaced, one design and
noise draw per replicate). Starts (declared): at each offset, the population minimiser at
the same offset -- the constrained fit to ``pop_n`` noiseless sequences, continued from the
teacher (:func:`population_starts`, cached) -- and the replicate's own solution at the
previous offset; with ``backward`` (the default) a second pass in decreasing offsets restarts
each offset from the solutions one and two offsets further out and keeps a lower certified
fit (:func:`gated_hmoe.estimation.profile.profile`).

Two components of the confidence set (SPEC §4): the radius is that of the profile set's
first component (a *local* radius around the split); beside it every grid point carries the
*dead-head branch's* verdict per replicate (:func:`dead_head_point`): the excess
``Delta L_dead = min{L_n : surplus head's leaf zero} - min_G L_n`` in units of ``nu`` -- the
branch's minimum is the least-squares fit of the exactly specified student, started from
the teacher (:func:`gated_hmoe.estimation.head_profile.dead_head_fits`), ``min_G L_n`` the
smaller of it and the profile's reference -- rejected where it exceeds the threshold ``c``
(:func:`report`, ``branches`` per grid point).

The teacher is the declared one (:func:`gated_hmoe.models.heads.layer_teacher`) unless the
configuration gives ``teacher_weights`` (:data:`gated_hmoe.models.heads.TEACHER_FORMAT`) or
``teacher_seed`` (:func:`gated_hmoe.models.heads.seeded_teacher`); either enters the cache
key, the declared teacher's keys are those of earlier versions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import head_profile, profile, rates
from gated_hmoe.experiments import e1_profile, e1_rates, profile_report, runner
from gated_hmoe.models import heads

#: The bound on a valley's largest excess (units of ``nu``), as in experiment E1.
VALLEY_EXCESS_BOUND: float = e1_profile.VALLEY_EXCESS_BOUND

#: Config fields that only post-process the stored profiles (not in the cache key).
POST_FIELDS: tuple[str, ...] = ("c",)


@dataclasses.dataclass(frozen=True)
class AttentionProfileConfig:
    """Everything that determines an attention profile sweep's numbers (hashed for the cache).

    ``position``: one of :data:`gated_hmoe.models.heads.LAYER_POSITIONS`; ``n_tokens``: the
    sequence length ``N``; ``pop_n``: noiseless sequences of the population starts;
    ``backward``: the decreasing continuation pass; the
    other fields as in :class:`gated_hmoe.experiments.e1_profile.ProfileConfig` (teacher
    head 0 is the one split). ``teacher_weights``: a user's two-head teacher as a JSON-ready
    dict (:func:`gated_hmoe.models.heads.teacher_from_dict`), or ``teacher_seed``: a teacher
    drawn by :func:`gated_hmoe.models.heads.seeded_teacher`; neither: the declared teacher
    (they are left out of :meth:`to_dict` and the cache key when ``None``).
    """

    position: str = "ridge"
    sweep: str = "n"
    n_min: int = 250
    n_max: int = 4000
    points: int = 3
    noise: float = 1e-6
    n: int = 250
    noise_min: float = 1e-12
    noise_max: float = 1e-4
    replicates: int = 8
    seed: int = 0
    offsets: tuple = (0.03, 2.0, 8)
    split: float = 0.5
    c: float = profile.CHI2_95
    max_iter: int = 200
    rtol: float = 1e-2
    n_tokens: int = 3
    pop_n: int = 512
    backward: bool = True
    teacher_weights: dict | None = None
    teacher_seed: int | None = None

    def validate(self) -> "AttentionProfileConfig":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        heads.check_layer_position(self.position)
        checks.choice(self.sweep, "sweep", e1_profile.SWEEPS)
        e1_rates.check_sweep(self)
        checks.real(self.c, "c", positive=True)
        split = checks.real(self.split, "split")
        if not 0 < split < 1:
            raise ValueError(f"split must be in (0, 1), got {split!r}")
        checks.positive_int(self.n_tokens, "n_tokens", minimum=3)
        checks.positive_int(self.pop_n, "pop_n")
        if not isinstance(self.backward, bool):
            raise TypeError(f"backward must be a bool, got {type(self.backward).__name__}")
        e1_profile.check_offsets(self.offsets)
        if self.teacher_weights is not None and self.teacher_seed is not None:
            raise ValueError("teacher_weights and teacher_seed are mutually exclusive: give one "
                             "teacher")
        if self.teacher_seed is not None:
            checks.positive_int(self.teacher_seed, "teacher_seed", minimum=0)
        self.teacher()                  # a bad teacher file or seed fails here, naming it
        return self

    #: Radii of the profile set's first component (:func:`gated_hmoe.estimation.profile.radius`):
    #: a surplus head whose value map is zero is switched off, so every profile of a ridge
    #: leaf has a second zero at the dead-head offset ``||V*||/2``
    #: (:meth:`gated_hmoe.estimation.head_profile.PairLayout.dead_head_offset`).
    connected = True

    @property
    def expert(self) -> str:
        """The leaf class of the position in the names of E1 (``linear``, ``glu``, ``silu``),
        for figures drawn with E1's colours."""
        return {"linear": "linear", "GLU": "glu"}.get(heads.LEAF_CLASS[self.position], "silu")

    @property
    def label(self) -> str:
        """The position and its leaf class, e.g. ``"G2-tied (ridge (SiLU) leaf)"``."""
        return f"{self.position} ({heads.LEAF_CLASS[self.position]} leaf)"

    def teacher(self) -> dict:
        """The teacher of :attr:`position` (two heads, ``d_v = 2``): ``teacher_weights``
        (validated), the draw of ``teacher_seed``, or the declared teacher."""
        if self.teacher_weights is not None:
            return heads.teacher_from_dict(self.position, self.teacher_weights,
                                           "teacher_weights")
        if self.teacher_seed is not None:
            return {k: v.copy() for k, v in
                    _seeded_teacher(self.position, self.teacher_seed).items()}
        return heads.layer_teacher(self.position, 2)

    @property
    def teacher_source(self) -> str:
        """Where the teacher comes from: ``"declared"``, ``"file"`` or ``"seed S"``."""
        if self.teacher_weights is not None:
            return "file"
        return "declared" if self.teacher_seed is None else f"seed {self.teacher_seed}"

    def deltas(self) -> np.ndarray:
        """The offsets ``delta`` of the profiles (log-spaced)."""
        return e1_profile.offset_grid(self.offsets)

    def grid(self) -> list[tuple[int, float]]:
        """Grid points ``(n, nu)`` in increasing ``n / nu``."""
        return e1_rates.sweep_grid(self)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["offsets"] = list(self.offsets)
        for k in ("teacher_weights", "teacher_seed"):   # the declared teacher: keys as before
            if out[k] is None:
                del out[k]
        return out

    def key(self) -> str:
        """Hex hash of everything that determines the fits (the cache key)."""
        return runner.config_key({"experiment": "E2 profile",
                                  **{k: v for k, v in self.to_dict().items()
                                     if k not in POST_FIELDS}})


@functools.lru_cache(maxsize=64)
def _seeded_teacher(position: str, seed) -> dict:
    return heads.seeded_teacher(position, seed)


#: Peak-memory model of :func:`run_profiles`: ``MEMORY_BASE`` bytes, plus
#: ``MEMORY_PER_SAMPLE`` bytes per replicate, drawn sequence and token (``n_max`` or ``n``
#: sequences of ``n_tokens`` tokens), plus ``MEMORY_PER_RECORD`` bytes per replicate and grid
#: point. Calibrated by measuring the peak resident memory of ``attention-profile`` runs
#: (``scripts/calibrate_memory.py``, 2 CPU cores, ridge, noise sweep, 3 tokens, 2 offsets:
#: 581 MiB at 1 replicate x 50 sequences, 3160 MiB at 4 x 1e4, giving 581 MiB and 22.5 kB
#: per replicate, sequence and token; rounded up below). The per-record term was not
#: measured here: it is E1 rates' 75 kB per replicate and grid point
#: (:data:`gated_hmoe.experiments.e1_rates.MEMORY_PER_RECORD`).
MEMORY_BASE: int = 600 * 2**20
MEMORY_PER_SAMPLE: float = 23_000.0
MEMORY_PER_RECORD: float = 75_000.0


def peak_bytes(config: AttentionProfileConfig) -> int:
    """Estimated peak memory of :func:`run_profiles` for ``config`` in bytes."""
    n = config.n_max if config.sweep == "n" else config.n
    return int(MEMORY_BASE + MEMORY_PER_SAMPLE * config.replicates * n * config.n_tokens
               + MEMORY_PER_RECORD * config.replicates * config.points)


def replicate_data(config: AttentionProfileConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replicate the sequences ``x (R, n, N, d)``, standard normal noise
    ``xi (R, n, N, 1)`` and the teacher's outputs ``f (R, n, N, 1)``, ``n = n_max`` (n-sweep)
    or ``n`` (noise sweep); replicate ``r`` uses the key ``fold_in(key(seed), r)``."""
    n = config.n_max if config.sweep == "n" else config.n
    teacher = jax.tree.map(jnp.asarray, config.teacher())
    xs, xis = [], []
    for r in range(config.replicates):
        x, xi = heads.sample_inputs(jax.random.fold_in(jax.random.key(config.seed), r), n=n,
                                    n_tokens=config.n_tokens, d=2)
        xs.append(x)
        xis.append(xi)
    x = jnp.stack(xs)
    f = jax.vmap(lambda xx: heads.batched_output(teacher, xx, config.position))(x)
    return np.asarray(x), np.asarray(jnp.stack(xis)), np.asarray(f)


def population_starts(config: AttentionProfileConfig, *, cache_dir=None) -> np.ndarray:
    """Constrained fits ``psi (K, q)`` to ``pop_n`` noiseless sequences (drawn with the
    fixed key 12345, whatever the seed) at the profile's offsets, each started from the
    teacher and from the fit at the previous offset (starting points, not measurements),
    cached in the store ``"profile"``."""
    teacher = config.teacher()
    payload = {"kind": "attention population starts", "position": config.position,
               "deltas": config.deltas().tolist(), "split": config.split,
               "n_tokens": config.n_tokens, "pop_n": config.pop_n,
               "max_iter": config.max_iter, "version": 1}
    if config.teacher_source != "declared":     # the declared teacher's entries keep their keys
        payload["teacher"] = heads.teacher_to_dict(teacher)

    def compute():
        x, _ = heads.sample_inputs(jax.random.key(12345), n=config.pop_n,
                                   n_tokens=config.n_tokens, d=2)
        f = heads.batched_output(jax.tree.map(jnp.asarray, teacher), x, config.position)
        problem = head_profile.AttentionPairProblem(
            np.asarray(x)[None], np.asarray(f)[None], position=config.position,
            teacher=teacher, split=config.split, max_iter=config.max_iter, rtol=config.rtol)
        K = config.deltas().size
        prof = profile.profile(problem, deltas=config.deltas(),
                               starts=np.tile(problem.layout.declared_start(), (K, 1)),
                               nu=1.0, c=config.c)
        psi = prof.theta[0, :, :problem.q]
        psi = np.where(np.isfinite(psi), psi, problem.layout.declared_start()[None])
        return {**payload, "ssr": [None if not np.isfinite(v) else float(v)
                                   for v in prof.ssr[0]], "psi": psi.tolist()}

    entry = runner.Store("profile", cache_dir).get(f"starts/{runner.config_key(payload)}",
                                                   compute)
    return np.array(entry["psi"], float)


def point_data(config: AttentionProfileConfig, n: int, nu: float, replicate_draws=None):
    """``(n, nu, x, f, y)`` of one grid point, validated: the first ``n`` sequences of every
    replicate (``replicate_draws``: :func:`replicate_data` of the config, drawn if not
    given), the teacher's outputs ``f`` and the data ``y = f + sqrt(nu) xi``."""
    if not isinstance(config, AttentionProfileConfig):
        raise TypeError(f"config must be an AttentionProfileConfig, got {type(config).__name__}")
    config.validate()
    n = checks.positive_int(n, "n")
    nu = checks.real(nu, "nu", positive=True)
    x, xi, f = replicate_draws if replicate_draws is not None else replicate_data(config)
    if n > x.shape[1]:
        raise ValueError(f"n must be <= the {x.shape[1]} drawn sequences, got {n}")
    return n, nu, x[:, :n], f[:, :n], f[:, :n] + math.sqrt(nu) * xi[:, :n]


def run_point(config: AttentionProfileConfig, n: int, nu: float, *, starts: np.ndarray,
              replicate_draws=None) -> dict:
    """The profiles of every replicate at one grid point: a JSON-ready dict (no caching), in
    the layout of :func:`gated_hmoe.experiments.e1_profile.run_point`."""
    n, nu, x, f, y = point_data(config, n, nu, replicate_draws)
    t0 = time.perf_counter()
    problem = head_profile.AttentionPairProblem(x, y, position=config.position,
                                                teacher=config.teacher(), split=config.split,
                                                max_iter=config.max_iter, rtol=config.rtol,
                                                polish_iter=config.max_iter)
    prof = profile.profile(problem, deltas=config.deltas(), starts=starts, nu=nu, c=config.c,
                           connected=config.connected, backward=config.backward)
    ssr_true = np.sum((y - f) ** 2, axis=(1, 2, 3))
    return e1_profile.point_record(n, nu, prof, ssr_true, time.perf_counter() - t0)


#: Version of the dead-head entries of the store ``"profile"`` (:func:`run_profiles`); a
#: change of what they hold bumps it, so older entries are recomputed.
DEAD_HEAD_VERSION: int = 1


def dead_head_point(config: AttentionProfileConfig, n: int, nu: float, *,
                    replicate_draws=None) -> dict:
    """The dead-head branch's fits of every replicate at one grid point (no caching): the
    exactly specified student fitted from the teacher
    (:func:`gated_hmoe.estimation.head_profile.dead_head_fits`, the configuration's budget
    and certification). JSON-ready: ``dead_head_ssr_over_noise`` (``None`` where not finite),
    ``dead_head_certified``, ``dead_head_iterations`` per replicate, ``dead_head_seconds``."""
    n, nu, x, _, y = point_data(config, n, nu, replicate_draws)
    t0 = time.perf_counter()
    fits = head_profile.dead_head_fits(x, y,
                                       position=config.position, teacher=config.teacher(),
                                       max_iter=config.max_iter, rtol=config.rtol)
    return {"dead_head_ssr_over_noise": [None if not np.isfinite(v) else float(v / nu)
                                         for v in fits["ssr"]],
            "dead_head_certified": [bool(v) for v in fits["certified"]],
            "dead_head_iterations": [int(v) for v in fits["iterations"]],
            "dead_head_seconds": float(time.perf_counter() - t0)}


def with_dead_head(point: dict, fits: dict) -> dict:
    """A grid point's record with the dead-head fits ``fits`` (:func:`dead_head_point`) and
    ``dead_head_excess`` per replicate in units of ``nu``
    (:func:`gated_hmoe.estimation.head_profile.dead_head_excess` against the profile's
    reference ``ssr_min_over_noise``; ``None`` where not certified)."""
    ssr = np.array([np.nan if v is None else v for v in fits["dead_head_ssr_over_noise"]], float)
    ref = np.array([np.nan if v is None else v for v in point["ssr_min_over_noise"]], float)
    excess = head_profile.dead_head_excess(ssr, np.array(fits["dead_head_certified"], bool),
                                           ref, 1.0)
    return {**point, **fits,
            "dead_head_excess": [None if not np.isfinite(v) else float(v) for v in excess]}


def dead_head_excess(sweep: e1_profile.ProfileSweep) -> np.ndarray:
    """``(points, R)`` the dead-head branch's excess in units of ``nu`` (``nan`` where not
    certified, or where a stored record has none)."""
    R = sweep.config.replicates
    return np.array([[np.nan if v is None else v for v in p.get("dead_head_excess", [None] * R)]
                     for p in sweep.points], float)


def run_profiles(config: AttentionProfileConfig, *, cache_dir=None, progress: bool = True
                 ) -> e1_profile.ProfileSweep:
    """Run (or load from the store ``"profile"``) every grid point of ``config``, each with
    its dead-head branch (:func:`dead_head_point`, stored as its own entry beside the
    point's, so profiles cached before it are completed, not recomputed)."""
    if not isinstance(config, AttentionProfileConfig):
        raise TypeError(f"config must be an AttentionProfileConfig, got {type(config).__name__}")
    config.validate()
    starts = population_starts(config, cache_dir=cache_dir)
    draws = []

    def replicate_draws():
        if not draws:
            draws.append(replicate_data(config))
        return draws[0]

    sweep = e1_profile.sweep_points(
        config, config.position, replicate_draws,
        lambda n, nu, d: run_point(config, n, nu, starts=starts, replicate_draws=d),
        cache_dir=cache_dir, progress=progress)
    store = runner.Store("profile", cache_dir)
    points = []
    for p in sweep.points:
        n, nu = p["n"], p["noise"]
        fits = store.get(f"{config.key()}/dead_head_v{DEAD_HEAD_VERSION}_n{n}_nu{nu:.6e}",
                         lambda: dead_head_point(config, n, nu,
                                                 replicate_draws=replicate_draws()))
        points.append(with_dead_head(p, fits))
    return dataclasses.replace(sweep, points=points,
                               seconds=sweep.seconds + sum(p["dead_head_seconds"]
                                                           for p in points))


def report(sweep: e1_profile.ProfileSweep) -> dict:
    """``results.json`` of ``attention-profile``: :func:`gated_hmoe.experiments.profile_report.report`
    with, per grid point, ``branches``: ``local_radius`` per replicate (the radius of the
    profile set's first component, :attr:`AttentionProfileConfig.connected`) and
    ``dead_head``: its ``excess`` and whether it is ``rejected`` (excess ``> c``; ``None``
    where not certified) per replicate, the ``threshold`` ``c`` and the number of leaf weights
    the branch pins (the surplus head's router is then unidentified: the excess is a singular
    likelihood ratio, and ``c`` a convention, not its calibration); and the teacher used
    (``teacher``: its source and weights)."""
    config = sweep.config
    out = profile_report.report(sweep)
    c = float(config.c)
    r, _ = sweep.radii()
    dead = dead_head_excess(sweep)
    leaf_dim = head_profile.PairLayout(config.position, config.teacher()).leaf_dim
    for i, point in enumerate(out["points"]):
        out["points"][i] = {**point, "branches": {
            "local_radius": [None if not np.isfinite(v) else float(v) for v in r[i]],
            "dead_head": {"excess": [None if not np.isfinite(v) else float(v) for v in dead[i]],
                          "rejected": [None if not np.isfinite(v) else bool(v > c)
                                       for v in dead[i]],
                          "threshold": c, "pinned_weights": leaf_dim}}}
    out["branches_rule"] = (
        "local_radius: the radius of the profile set's first component (cut at the first "
        "rejected offset); dead_head: min L_n over students whose surplus head has a zero leaf "
        "(the exactly specified student fitted from the teacher, certified by the loop's "
        "decrement) minus min_G L_n (the smaller of the profile's reference and that fit), in "
        "units of nu, rejected where it exceeds the threshold")
    out["teacher"] = {"source": config.teacher_source,
                      "weights": heads.teacher_to_dict(config.teacher())}
    return runner.json_safe(out)


@dataclasses.dataclass(frozen=True)
class DeadHeadSummary:
    """The dead-head branch of one sweep at threshold ``c``: ``excess (points, R)`` in units
    of ``nu`` (``nan`` where not certified), its per-point ``median (points,)``, the number of
    certified values ``above`` ``c`` and above ``chi^2_1``'s 3.84 (``above_chi2``) of
    ``certified``, and the log-log ``slope`` of the medians against ``n / nu``
    (:func:`gated_hmoe.estimation.rates.loglog_slope`; ``nan`` with fewer than two finite
    positive medians)."""

    excess: np.ndarray
    median: np.ndarray
    above: int
    above_chi2: int
    certified: int
    slope: float


def dead_head_summary(sweep: e1_profile.ProfileSweep, c: float) -> DeadHeadSummary:
    """:class:`DeadHeadSummary` of ``sweep``'s dead-head branch at threshold ``c``."""
    c = checks.real(c, "c", positive=True)
    dead = dead_head_excess(sweep)
    ok = np.isfinite(dead)
    if not ok.any():
        raise ValueError("sweep has no certified dead-head excess (a record written before "
                         "the dead-head branch was measured?)")
    med = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan
                    for row in dead])
    keep = np.isfinite(med) & (med > 0)
    slope = (rates.loglog_slope(sweep.x[keep], med[keep])[0] if keep.sum() >= 2
             else float("nan"))
    return DeadHeadSummary(dead, med, int(np.sum(dead[ok] > c)),
                           int(np.sum(dead[ok] > profile.CHI2_95)), int(ok.sum()), float(slope))


def branch_lines(sweep: e1_profile.ProfileSweep) -> list[str]:
    """The summary of both components per grid point: the median local radius and how many
    replicates reject the dead-head branch (with the median certified excess)."""
    c = sweep.config.c
    dead = dead_head_excess(sweep)
    lines = []
    for i, (p, m) in enumerate(zip(sweep.points, sweep.median_radius())):
        ok = np.isfinite(dead[i])
        median = f"median excess {np.median(dead[i][ok]):.3g} ν" if ok.any() else "no certified fit"
        lines.append(f"n = {p['n']:>7d}, nu = {p['noise']:.1e}: local radius median {m:.3g}; "
                     f"dead-head branch rejected in {int(np.sum(dead[i][ok] > c))} of "
                     f"{dead.shape[1]} replicates ({median}"
                     + ("" if ok.all() else f"; {int(np.sum(~ok))} not certified") + ")")
    return lines


def sweeps_from_record(record: dict) -> dict[str, e1_profile.ProfileSweep]:
    """The sweeps stored in a record of several positions (``{"positions": {position:
    ProfileSweep.to_dict()}}``, as ``scripts/record_e2_profile.py`` writes it), keyed by
    position; each configuration is validated and must hash to the stored cache key
    (:func:`gated_hmoe.experiments.e1_profile.sweeps_from_record`)."""
    if not isinstance(record, dict) or not isinstance(record.get("positions"), dict):
        raise ValueError("record must be a dict with a 'positions' mapping")
    return e1_profile.sweeps_from_record(record["positions"], AttentionProfileConfig)


#: Where the committed E2 records live (``docs/records/e2_profile*.json``).
RECORD_DIR: Path = Path(__file__).resolve().parents[2] / "docs" / "records"


def load_record(name: str, path=None) -> tuple[dict, dict[str, e1_profile.ProfileSweep]]:
    """``(record, sweeps)``: the committed E2 record ``name`` (``RECORD_DIR / name.json``, or
    ``path``), as ``scripts/record_e2_profile.py`` writes it, and its sweeps by position
    (:func:`sweeps_from_record`: every configuration validated against its cache key).
    ``ValueError`` naming ``name`` for an unknown or unreadable record."""
    if not isinstance(name, str) or not name.startswith("e2_profile") or "/" in name:
        raise ValueError(f"name must name an E2 record 'e2_profile...' in {RECORD_DIR}, "
                         f"got {name!r}")
    file = Path(path) if path is not None else RECORD_DIR / f"{name}.json"
    record = runner.read_record(file, label=f"name {name!r}",
                                writer="scripts/record_e2_profile.py",
                                fields=("commit", "date", "machine", "versions", "positions"))
    return record, sweeps_from_record(record)


@dataclasses.dataclass(frozen=True)
class RadiusCalibration:
    """A radius threshold calibrated on sweeps of ridge positions (seeds then not used for an
    asserted run): the pooled null draws ``draws`` (the excess at each sweep's first offset,
    :meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.null_excess`; ``nan``: not
    certified) and the ``quantile`` taken of them."""

    draws: np.ndarray
    quantile: float

    @property
    def c(self) -> float:
        """The threshold: the ``quantile`` of the certified draws
        (:func:`gated_hmoe.estimation.profile.calibrated_threshold`)."""
        return profile.calibrated_threshold(self.draws, self.quantile)


#: The theory slope of a ridge leaf's radius against ``n / nu``: ``r_n ~ (nu / n)^{1/4}``.
RIDGE_RADIUS_SLOPE: float = -0.25
#: Smallest half-width of a radius slope band (declared before the asserted runs): the
#: bootstrap over 4 replicate curves has 35 distinct resamples, so its intervals understate
#: the spread from seed to seed (E1's bands rest on 8 replicates).
RADIUS_BAND_MIN_WIDTH: float = 0.05


def calibrate_radius(sweeps: dict, quantile: float = 0.95) -> RadiusCalibration:
    """The threshold of :class:`RadiusCalibration` from ``sweeps`` (``name -> ProfileSweep``
    of ridge positions, :data:`gated_hmoe.models.heads.MASSFUL`, whose truth is the merged
    pair, so the excess at the first offset is a null draw up to its population part).
    ``ValueError`` naming ``sweeps`` if one is not a ridge position."""
    _check_ridge(sweeps)
    calibration = RadiusCalibration(
        np.concatenate([sw.null_excess().ravel() for sw in sweeps.values()]), float(quantile))
    calibration.c                       # too few certified draws or a bad quantile: fail here
    return calibration


def radius_band(sweeps: dict, c: float, *, min_width: float = RADIUS_BAND_MIN_WIDTH
                ) -> tuple[float, float]:
    """The band around :data:`RIDGE_RADIUS_SLOPE` that covers the 95% interval of every
    calibration sweep's radius slope at threshold ``c`` (over its resolved points,
    :meth:`~gated_hmoe.experiments.e1_profile.ProfileSweep.slope`), at least ``min_width``
    on each side (:func:`gated_hmoe.experiments.e1_profile.band_from_calibration`); ``sweeps``:
    ``name -> ProfileSweep`` of one ridge position."""
    _check_ridge(sweeps)
    slopes = [sw.slope(c, resolved=True) for sw in sweeps.values()]
    return e1_profile.band_from_calibration([(s.slope, s.ci) for s in slopes],
                                            RIDGE_RADIUS_SLOPE, min_width=min_width)


def _check_ridge(sweeps: dict) -> None:
    if not isinstance(sweeps, dict) or not sweeps:
        raise ValueError("sweeps must be a non-empty dict of ProfileSweep")
    for name, sw in sweeps.items():
        if getattr(sw.config, "position", None) not in heads.MASSFUL:
            raise ValueError(f"sweeps[{name!r}] must be a sweep of a ridge position "
                             f"{heads.MASSFUL}, got {getattr(sw.config, 'position', None)!r}")


__all__ = ["AttentionProfileConfig", "point_data", "RADIUS_BAND_MIN_WIDTH", "RIDGE_RADIUS_SLOPE",
           "RadiusCalibration", "calibrate_radius", "radius_band", "MEMORY_BASE", "MEMORY_PER_RECORD", "MEMORY_PER_SAMPLE",
           "POST_FIELDS", "VALLEY_EXCESS_BOUND", "peak_bytes", "population_starts", "replicate_data",
           "run_point", "run_profiles", "sweeps_from_record", "DEAD_HEAD_VERSION", "branch_lines",
           "dead_head_excess", "dead_head_point", "report", "with_dead_head", "DeadHeadSummary",
           "dead_head_summary", "RECORD_DIR", "load_record"]
