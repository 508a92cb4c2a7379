r"""Experiment E5: trained attention -- does an Adam-trained student recover the teacher's heads?

A teacher attention layer with ``H*`` heads at one gate position
(:mod:`gated_hmoe.estimation.teacher_student`: free ``W_Q, W_K, W_V, W_O``, tokens i.i.d.
``N(0, I_d)``) generates ``Y = f(X) + noise`` with noise variance ``nu`` times the variance
of the teacher's output; students with ``heads`` heads (``H*``: exactly specified,
``H* + 1``: one surplus head) are trained by full-batch Adam from ``inits`` random
initialisations on each of ``seeds`` data sets, at each ``n`` of a log-spaced grid, under the
declared plateau rule with a step budget. Measured per ``(n, seed, init)``: the final
training loss, the test excess risk (on fresh sequences), the head-level Voronoi loss and the
surplus head's fate (:mod:`gated_hmoe.estimation.head_voronoi`), the steps used and whether
the budget bound. The practitioner's pick is the initialisation with the lowest training loss
per data set; slopes of its head loss and excess risk against ``n`` come with bootstrap
intervals over whole seed curves (:func:`gated_hmoe.estimation.rates.slope`,
``paired=True``: data set ``s`` at a smaller ``n`` is the first ``n`` sequences of the
same draw, and keeps its initialisations).

Teachers: :func:`teacher_from_seed` (a seeded draw with separated heads) or
:func:`teacher_from_file` (a JSON file; format in :func:`teacher_from_dict`). Each grid point
is cached in a :class:`gated_hmoe.experiments.runner.Store` (kind ``"teacher_student"``), so
an interrupted sweep resumes at the first missing point.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import head_voronoi, rates
from gated_hmoe.estimation import teacher_student as ts
from gated_hmoe.experiments import runner
from gated_hmoe.models.attention import AttentionParams, gate_shape

#: Config fields that do not change the numbers (not in the cache key).
RUN_FIELDS: tuple[str, ...] = ("chunk",)
#: Entries of a teacher file besides the weights.
WEIGHTS: tuple[str, ...] = ("wq", "wk", "wv", "wo", "wg", "bias")


# ------------------------------------------------------------------ teachers

def teacher_to_dict(teacher: ts.LayerParams, position: str) -> dict:
    """The JSON form of a teacher (the format of :func:`teacher_from_dict`)."""
    ts.check_layer(teacher, position, "teacher")
    out = {"position": position}
    for name in WEIGHTS:
        value = teacher.bias if name == "bias" else getattr(teacher.attn, name)
        out[name] = None if value is None else np.asarray(value, float).tolist()
    return out


def teacher_from_dict(payload, *, position: str | None = None) -> ts.LayerParams:
    """A teacher from its JSON form, validated; errors name the field (``teacher.wq`` ...).

    Format: an object with ``"position"`` (one of
    :data:`gated_hmoe.estimation.teacher_student.POSITIONS`; must equal ``position`` when
    that is given) and nested lists ``"wq"``, ``"wk"`` ``(H, d, d_k)``, ``"wv"``
    ``(H, d, d_v)``, ``"wo"`` ``(H, d_v, d_out)``; ``"wg"``: the gate weights of the position
    (``(H, d, d_v)`` G1/G2, ``(H, d)`` G1-headwise, ``(H, d, d_k)`` G3/G4, ``(d, d_out)``
    G5) or ``null``/absent where there is none (also for ``"G2-tied"``, whose gate is
    ``W_V``); ``"bias"``: ``(H, d_v)`` for ``"ridge"``, else ``null``/absent.

    >>> teacher_from_dict({"position": "MHSA", "wq": [[[1.0]]], "wk": [[[1.0]]],
    ...                    "wv": [[[1.0]]], "wo": "x"})
    Traceback (most recent call last):
    ...
    TypeError: teacher.wo must be an array of real numbers, got dtype <U1
    """
    if not isinstance(payload, dict):
        raise TypeError(f"teacher must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"position", *WEIGHTS})
    if unknown:
        raise ValueError(f"teacher has unknown fields {unknown}; allowed: "
                         f"{['position', *WEIGHTS]}")
    if "position" not in payload:
        raise ValueError("teacher.position is missing")
    where = checks.choice(payload["position"], "teacher.position", ts.POSITIONS)
    if position is not None and where != position:
        raise ValueError(f"teacher.position must be {position!r} (the experiment's position), "
                         f"got {where!r}")
    arrays = {}
    for name in ("wq", "wk", "wv", "wo"):
        if name not in payload:
            raise ValueError(f"teacher.{name} is missing")
        arrays[name] = checks.finite_array(payload[name], f"teacher.{name}", ndim=3)
    H, d, d_k = arrays["wq"].shape
    d_v, d_out = arrays["wv"].shape[2], arrays["wo"].shape[2]
    want = {"wk": (H, d, d_k), "wv": (H, d, None), "wo": (H, d_v, None)}
    for name, shape in want.items():
        checks.finite_array(arrays[name], f"teacher.{name}", shape=shape)
    gate, granularity = ts.SETTINGS[where]
    gshape = gate_shape(gate, granularity, heads=H, d=d, d_k=d_k, d_v=d_v, d_out=d_out)
    wg = payload.get("wg")
    if gshape is None and wg is not None:
        raise ValueError(f"teacher.wg must be null for position {where!r}")
    if gshape is not None:
        if wg is None:
            raise ValueError(f"teacher.wg is missing (shape {gshape} for position {where!r})")
        wg = checks.finite_array(wg, "teacher.wg", shape=gshape)
    bias = payload.get("bias")
    if where == "ridge":
        if bias is None:
            raise ValueError(f"teacher.bias is missing (shape {(H, d_v)} for 'ridge')")
        bias = checks.finite_array(bias, "teacher.bias", shape=(H, d_v))
    elif bias is not None:
        raise ValueError(f"teacher.bias must be null for position {where!r}")
    attn = AttentionParams(**{k: jnp.asarray(v, jnp.float64) for k, v in arrays.items()},
                           wg=None if wg is None else jnp.asarray(wg, jnp.float64), gate=gate,
                           granularity=granularity)
    teacher = ts.LayerParams(attn, None if bias is None else jnp.asarray(bias, jnp.float64))
    return ts.check_layer(teacher, where, "teacher")


def teacher_from_file(path, *, position: str | None = None) -> ts.LayerParams:
    """A teacher read from the JSON file ``path`` (format: :func:`teacher_from_dict`)."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"teacher must be a path to a JSON file, got {type(path).__name__}")
    try:
        with open(path) as fh:
            payload = json.load(fh)
    except OSError as exc:
        raise ValueError(f"teacher file {str(path)!r} cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"teacher file {str(path)!r} is not JSON ({exc})") from None
    return teacher_from_dict(payload, position=position)


def head_separation(teacher: ts.LayerParams) -> float:
    """The largest ``|cos|`` between two heads' score matrices or two heads' value-output
    maps (``vec`` inner products): ``0`` for one head."""
    maps = head_voronoi.head_maps(teacher.attn, name="teacher.attn")
    worst = 0.0
    for a, b in itertools.combinations(range(maps.mass.shape[0]), 2):
        for m in (maps.score, maps.value):
            u, v = np.ravel(m[a]), np.ravel(m[b])
            worst = max(worst, abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(worst)


def teacher_from_seed(seed: int, *, position: str, heads: int = 2, d: int = 4, d_k: int = 4,
                      d_v: int = 2, d_out: int = 4, score_scale: float = 1.5,
                      max_cos: float = 0.5, max_tries: int = 1000) -> ts.LayerParams:
    """A seeded teacher with separated heads (declared rule).

    Draw ``t = 0, 1, ...``: :func:`gated_hmoe.estimation.teacher_student.init_layer` with the
    key ``fold_in(key(seed), t)``, then ``W_Q, W_K`` multiplied by ``score_scale`` (so that
    the attention is not nearly uniform) and, for ``"ridge"``, a bias ``N(0, 0.5^2)``
    (otherwise the value activation would be the tied G2 gate). Accept the first draw whose
    heads are separated: :func:`head_separation` ``<= max_cos`` (no two score matrices and no
    two value-output maps with ``|cos| > max_cos``).

    >>> t = teacher_from_seed(0, position="MHSA")
    >>> t.attn.wq.shape, head_separation(t) <= 0.5
    ((2, 4, 4), True)
    """
    seed = checks.positive_int(seed, "teacher_seed", minimum=0)
    ts.check_position(position)
    max_cos = checks.real(max_cos, "max_cos", positive=True)
    score_scale = checks.real(score_scale, "score_scale", positive=True)
    max_tries = checks.positive_int(max_tries, "max_tries")
    for t in range(max_tries):
        key = jax.random.fold_in(jax.random.key(seed), t)
        layer = ts.init_layer(key, position, d=d, heads=heads, d_k=d_k, d_v=d_v, d_out=d_out)
        attn = dataclasses.replace(layer.attn, wq=score_scale * layer.attn.wq,
                                   wk=score_scale * layer.attn.wk)
        bias = layer.bias
        if position == "ridge":
            bias = 0.5 * jax.random.normal(jax.random.fold_in(key, 1), layer.bias.shape)
        teacher = ts.LayerParams(attn, bias)
        if head_separation(teacher) <= max_cos:
            return teacher
    raise ValueError(f"teacher_seed {seed}: no draw in {max_tries} has heads separated by "
                     f"|cos| <= {max_cos}")


# ------------------------------------------------------------------ configuration

@dataclasses.dataclass(frozen=True)
class TeacherStudentConfig:
    """Everything that determines an E5 sweep's numbers (hashed for the cache).

    ``position``; ``heads`` (student), ``teacher_heads`` (``H*``); sizes ``d``, ``d_k``,
    ``d_v``, ``d_out``, ``n_tokens`` (``N``); the grid ``n_min``..``n_max`` (``points``
    log-spaced, rounded to integers); ``noise`` (``nu``, a fraction of the teacher's output
    variance); data sets ``seed, seed + 1, ..., seed + seeds - 1``; ``inits``
    initialisations per data set; training ``steps`` (budget), ``lr``, ``final_lr_frac``,
    ``window``, ``rel_tol`` (:class:`gated_hmoe.estimation.teacher_student.TrainSettings`);
    the teacher: ``teacher`` (the JSON form, e.g. from a file) or else
    ``teacher_from_seed(teacher_seed)``; ``n_test`` test sequences per data set;
    ``dead_tol`` (:func:`gated_hmoe.estimation.head_voronoi.surplus_fate`); ``chunk``: data
    sets trained per compiled call (``None``: all; memory only, not in the key).
    """

    position: str = "MHSA"
    heads: int = 3
    teacher_heads: int = 2
    d: int = 4
    d_k: int = 4
    d_v: int = 2
    d_out: int = 4
    n_tokens: int = 8
    n_min: int = 100
    n_max: int = 100_000
    points: int = 5
    noise: float = 1e-2
    seed: int = 0
    seeds: int = 8
    inits: int = 4
    steps: int = 2000
    lr: float = 3e-2
    final_lr_frac: float = 0.01
    window: int = 100
    rel_tol: float = 1e-4
    teacher_seed: int = 0
    teacher: dict | None = None
    n_test: int = 2048
    dead_tol: float = 0.05
    chunk: int | None = None

    def validate(self) -> "TeacherStudentConfig":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``."""
        ts.check_position(self.position)
        for name in ("heads", "teacher_heads", "d", "d_k", "d_v", "d_out", "n_tokens",
                     "n_min", "n_max", "points", "seeds", "inits", "n_test"):
            checks.positive_int(getattr(self, name), name)
        for name in ("seed", "teacher_seed"):
            checks.positive_int(getattr(self, name), name, minimum=0)
        if self.heads < self.teacher_heads:
            raise ValueError(f"heads must be >= teacher_heads, got heads={self.heads}, "
                             f"teacher_heads={self.teacher_heads}")
        if self.n_max < self.n_min:
            raise ValueError(f"n_max must be >= n_min, got n_min={self.n_min}, "
                             f"n_max={self.n_max}")
        checks.real(self.noise, "noise", positive=True)
        checks.real(self.dead_tol, "dead_tol", positive=True)
        ts.check_settings(self.settings())
        if self.chunk is not None:
            checks.positive_int(self.chunk, "chunk")
        if self.teacher is not None:
            teacher = teacher_from_dict(self.teacher, position=self.position)
            sizes = teacher.attn.sizes
            for name in ("d", "d_k", "d_v", "d_out"):
                if sizes[name] != getattr(self, name):
                    raise ValueError(f"teacher has {name}={sizes[name]}, the configuration "
                                     f"{name}={getattr(self, name)}")
            if sizes["heads"] != self.teacher_heads:
                raise ValueError(f"teacher has {sizes['heads']} heads, the configuration "
                                 f"teacher_heads={self.teacher_heads}")
        return self

    def settings(self) -> ts.TrainSettings:
        """The training settings."""
        return ts.TrainSettings(steps=self.steps, lr=float(self.lr),
                                final_lr_frac=float(self.final_lr_frac), window=self.window,
                                rel_tol=float(self.rel_tol))

    def grid(self) -> list[int]:
        """The sample sizes ``n`` (log-spaced, rounded, distinct, increasing)."""
        ns = np.round(np.logspace(math.log10(self.n_min), math.log10(self.n_max), self.points))
        return sorted({int(v) for v in ns})

    def teacher_layer(self) -> ts.LayerParams:
        """The teacher: :attr:`teacher` if given, else :func:`teacher_from_seed`."""
        if self.teacher is not None:
            return teacher_from_dict(self.teacher, position=self.position)
        return teacher_from_seed(self.teacher_seed, position=self.position,
                                 heads=self.teacher_heads, d=self.d, d_k=self.d_k,
                                 d_v=self.d_v, d_out=self.d_out)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hex hash of everything that determines the numbers (the cache key)."""
        return runner.config_key({"experiment": "E5 teacher-student", "version": 1,
                                  **{k: v for k, v in self.to_dict().items()
                                     if k not in RUN_FIELDS}})


#: Peak-memory model of :func:`run`: ``MEMORY_BASE`` bytes plus ``MEMORY_PER_SEQUENCE`` bytes
#: per trained run (data set x initialisation in one compiled call) and sequence, times
#: ``N^2 H / 192`` (the attention weights' share; 192 = the default ``N = 8``, ``H = 3``),
#: plus twice the data. Measured (MHSA, defaults, n = 1e4, 2 CPU cores): peak resident
#: 894 MiB at 4 runs and 1386 MiB at 8, i.e. about 12.3 kB per run and sequence over a
#: base near 400 MiB; rounded up below.
MEMORY_BASE: int = 600 * 2**20
MEMORY_PER_SEQUENCE: float = 16_000.0


def peak_bytes(config: TeacherStudentConfig) -> int:
    """Estimated peak memory of :func:`run` for ``config`` in bytes."""
    per_call = min(config.chunk or config.seeds, config.seeds)
    scale = config.n_tokens ** 2 * config.heads / 192
    data = 8 * config.seeds * (config.n_max + config.n_test) * config.n_tokens \
        * (config.d + config.d_out)
    return int(MEMORY_BASE + MEMORY_PER_SEQUENCE * scale * per_call * config.inits
               * config.n_max + 2 * data)


# ------------------------------------------------------------------ the sweep

def _draws(config: TeacherStudentConfig, s: int):
    """Data set ``s`` (an absolute seed): ``x (n_max, N, d)``, noise ``(n_max, N, d_out)``,
    test sequences and the ``inits`` initial students."""
    key = jax.random.key(s)
    x = ts.sample_inputs(jax.random.fold_in(key, 0), n=config.n_max,
                         n_tokens=config.n_tokens, d=config.d)
    xi = jax.random.normal(jax.random.fold_in(key, 1), (config.n_max, config.n_tokens,
                                                        config.d_out), jnp.float64)
    x_test = ts.sample_inputs(jax.random.fold_in(key, 2), n=config.n_test,
                              n_tokens=config.n_tokens, d=config.d)
    keys = jax.random.split(jax.random.fold_in(key, 3), config.inits)
    inits = jax.vmap(lambda k: ts.init_layer(k, config.position, d=config.d,
                                             heads=config.heads, d_k=config.d_k,
                                             d_v=config.d_v, d_out=config.d_out))(keys)
    return x, xi, x_test, inits


def compute_point(config: TeacherStudentConfig, teacher: ts.LayerParams, noise_variance: float,
                  n: int) -> dict:
    """Train every ``(seed, init)`` at sample size ``n`` and measure it (the cache entry of one
    grid point): lists over data sets of lists over initialisations."""
    start = time.perf_counter()
    seeds = list(range(config.seed, config.seed + config.seeds))
    chunk = min(config.chunk or config.seeds, config.seeds)
    f_teacher = jax.jit(jax.vmap(lambda xx: ts.batched_output(teacher, xx, config.position)))
    fields = ("train_loss", "excess_risk", "steps", "budget_hit")
    records = {k: [] for k in (*fields, "head_loss", "split_error", "fate", "masses")}
    for lo in range(0, len(seeds), chunk):
        block = seeds[lo: lo + chunk]
        block = block + [block[-1]] * (chunk - len(block))      # one shape for every call
        draws = [_draws(config, s) for s in block]
        x = jnp.stack([dr[0][:n] for dr in draws])
        y = f_teacher(x) + math.sqrt(noise_variance) * jnp.stack([dr[1][:n] for dr in draws])
        x_test = jnp.stack([dr[2] for dr in draws])
        params0 = jax.tree.map(lambda *a: jnp.stack(a), *[dr[3] for dr in draws])
        runs = ts.train_runs(params0, x, y, x_test, teacher, config.position,
                             config.settings())
        keep = min(chunk, len(seeds) - lo)
        for s in range(keep):
            for name in fields:
                records[name].append(getattr(runs, name)[s].tolist())
            reports = []
            for i in range(config.inits):
                student = ts.run_params(runs, s, i)
                finite = all(np.all(np.isfinite(a)) for a in jax.tree.leaves(student))
                reports.append(head_voronoi.head_report(student.attn, teacher.attn,
                                                        dead_tol=config.dead_tol)
                               if finite else {"head_loss": float("nan"), "fate": "other",
                                               "split_error": float("nan"), "masses": None})
            for name in ("head_loss", "split_error", "fate", "masses"):
                records[name].append([r[name] for r in reports])
    picks = ts.pick(np.asarray(records["train_loss"], float))
    return runner.json_safe({"n": int(n), "seeds": seeds, **records,
                             "pick": [int(v) for v in picks],
                             "seconds": time.perf_counter() - start})


def _picked(points: list[dict], name: str) -> np.ndarray:
    """``(m, S)``: the picked initialisation's ``name`` per grid point and data set
    (``None`` -> ``nan``)."""
    return np.array([[np.nan if p[name][s][i] is None else p[name][s][i]
                      for s, i in enumerate(p["pick"])] for p in points], float)


def slope_record(ns, values: np.ndarray) -> dict | None:
    """``rates.slope`` of ``values (m, S)`` against ``ns`` over whole seed curves, as a dict
    (``None`` with fewer than two grid points)."""
    if len(ns) < 2:
        return None
    s = rates.slope(np.asarray(ns, float), values, paired=True)
    return {"slope": s.slope, "ci": list(s.ci), "medians": list(s.medians),
            "failures": list(s.failures), "label": s.label()}


def run(config: TeacherStudentConfig, *, cache_dir=None, progress: bool = True) -> dict:
    """The sweep (each grid point cached; resumable): a strict-JSON-ready result dict with
    ``config``, ``versions``, ``teacher``, ``output_variance``, ``noise_variance``, ``grid``,
    ``points`` (per ``n``: per seed and init ``train_loss``, ``excess_risk``, ``head_loss``,
    ``split_error``, ``fate``, ``masses``, ``steps``, ``budget_hit``; ``pick``),
    ``picked`` (the pick's ``head_loss``, ``excess_risk`` per ``n`` and seed),
    ``fates`` (per ``n``: counts of each fate among the picks), ``budget_hits`` (per ``n``,
    all runs), ``slopes`` (``head_loss`` and ``excess_risk`` of the pick: ``slope``, ``ci``)
    and ``seconds`` (computed in this call). The estimated peak memory (:func:`peak_bytes`)
    is checked against the machine's first."""
    if not isinstance(config, TeacherStudentConfig):
        raise TypeError(f"config must be a TeacherStudentConfig, got {type(config).__name__}")
    config.validate()
    checks.fits_in_memory(peak_bytes(config), f"chunk {config.chunk or config.seeds} data sets "
                          f"x inits {config.inits} at n_max {config.n_max} (lower chunk)")
    teacher = config.teacher_layer()
    variance = ts.output_variance(teacher, config.position, n_tokens=config.n_tokens)
    noise_variance = config.noise * variance
    store = runner.Store("teacher_student", cache_dir)
    start = time.perf_counter()
    points = []
    bar = runner.progress(config.grid(), desc=f"teacher-student {config.position}",
                          enabled=progress, unit="n")
    for n in bar:
        bar.set_postfix(n=n)
        points.append(store.get(f"{config.key()}/n{n}",
                                lambda n=n: compute_point(config, teacher, noise_variance, n)))
    ns = [p["n"] for p in points]
    picked = {m: _picked(points, m) for m in ("head_loss", "excess_risk", "split_error")}
    fates = [{f: sum(p["fate"][s][i] == f for s, i in enumerate(p["pick"]))
              for f in head_voronoi.FATES} for p in points]
    result = {
        "experiment": "E5 teacher-student", "config": config.to_dict(),
        "versions": runner.versions(), "teacher": teacher_to_dict(teacher, config.position),
        "output_variance": variance, "noise_variance": noise_variance, "grid": ns,
        "points": points, "picked": {m: v.tolist() for m, v in picked.items()},
        "fates": fates,
        "budget_hits": [int(np.sum(p["budget_hit"])) for p in points],
        "runs_per_point": config.seeds * config.inits,
        "slopes": {m: slope_record(ns, picked[m]) for m in ("head_loss", "excess_risk")},
        "seconds": time.perf_counter() - start}
    return runner.json_safe(result)


def write_results(result: dict, out_dir) -> Path:
    """Write ``out_dir/results.json`` (strict JSON) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    runner.write_json_atomic(path, runner.json_safe(result), indent=1)
    return path


def config_from_args(args) -> TeacherStudentConfig:
    """The configuration of the ``teacher-student`` flags (``args`` from ``argparse``;
    attributes ``position, heads, n_min, n_max, points, noise, seeds, inits, steps, teacher,
    teacher_seed`` and, where the parser has them, ``seed, n_tokens, lr, window, chunk``).
    ``teacher`` (a file) and ``teacher_seed`` exclude each other."""
    fields = {k: getattr(args, k) for k in ("position", "heads", "n_min", "n_max", "points",
                                            "noise", "seeds", "inits", "steps")}
    for k in ("seed", "n_tokens", "lr", "window", "chunk"):
        if getattr(args, k, None) is not None:
            fields[k] = getattr(args, k)
    teacher_file, teacher_seed = getattr(args, "teacher", None), getattr(args, "teacher_seed", None)
    if teacher_file is not None and teacher_seed is not None:
        raise ValueError("teacher and teacher_seed exclude each other, got both")
    if teacher_file is not None:
        layer = teacher_from_file(teacher_file, position=args.position)
        sizes = layer.attn.sizes
        fields.update(teacher=teacher_to_dict(layer, args.position),
                      teacher_heads=sizes["heads"],
                      **{k: sizes[k] for k in ("d", "d_k", "d_v", "d_out")})
    elif teacher_seed is not None:
        fields["teacher_seed"] = teacher_seed
    return TeacherStudentConfig(**fields).validate()


__all__ = ["TeacherStudentConfig", "compute_point", "config_from_args", "head_separation",
           "peak_bytes", "run", "slope_record", "teacher_from_dict", "teacher_from_file",
           "teacher_from_seed", "teacher_to_dict", "write_results"]
