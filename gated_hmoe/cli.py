"""Command line ``python -m gated_hmoe <command> ...``: the composition root.

Each sub-command builds an experiment configuration from its flags, runs it through the
experiment's cached, resumable runner (:mod:`gated_hmoe.experiments`), writes
``results.json`` with the configuration and library versions, and draws its figures with
:mod:`gated_hmoe.viz`.

Every command runs in two phases. First, before any work: the flags are parsed, the
configuration validated, the output and cache folders checked writable and the estimated
peak memory (``peak_bytes`` of the experiment) compared with the machine's available
memory; anything wrong ends in one ``error: ...`` line naming the flag as typed and exit
status 2. Then the run: a failure there ends in one ``error: ...`` line and exit status 1
(``--debug`` before the command, or ``GATED_HMOE_DEBUG=1``, re-raises with the traceback).
Each command's ``--help`` ends with a small example.

- ``rates``: E1 (and E3 with ``--gate``) -- least-squares rates of MoE experts;
- ``profile``: E1 measured by what the data determine -- profile confidence sets;
- ``attention-profile``: E2 measured the same way -- the surplus head of a gate position;
- ``attention-fit``: E2 -- fitted attention layers per gate position;
- ``transformer``: E4 -- a small transformer with and without gates.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import moe_fit
from gated_hmoe.estimation.profile import CHI2_95
from gated_hmoe.experiments import e1_profile, e1_rates, e2_attention, e2_profile, profile_report, runner
from gated_hmoe.experiments import e4_transformer as e4
from gated_hmoe.experiments import e5_teacher_student as e5
from gated_hmoe.models import heads, moe
from gated_hmoe.viz import attention as viz_attention
from gated_hmoe.viz import profile as viz_profile
from gated_hmoe.viz import rates as viz_rates
from gated_hmoe.viz import teacher_student as viz_teacher_student
from gated_hmoe.viz import transformer as viz_transformer


def _save(fig, path: Path) -> None:
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


#: Environment variable that, set to a non-empty value, makes errors re-raise (as ``--debug``).
DEBUG_ENV = "GATED_HMOE_DEBUG"


class UsageError(Exception):
    """A bad argument, in the words of the command line (printed as one ``error:`` line,
    exit status 2)."""


class Parser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` whose errors are one line (:class:`UsageError`)
    instead of the usage text, and whose help keeps the layout of its description and
    example (:class:`argparse.RawDescriptionHelpFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def example(*lines: str) -> str:
    """The epilog of a command's ``--help``: ``example:`` and the command, one line each.

    >>> print(example("python -m gated_hmoe rates --out results/r"))
    example:
      python -m gated_hmoe rates --out results/r
    """
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def examples(parser: argparse.ArgumentParser) -> list[list[str]]:
    """The example commands in the epilog of ``parser`` as argument lists (without
    ``python -m gated_hmoe``)."""
    text = (parser.epilog or "").split("example:", 1)[-1]
    out = []
    for line in text.strip().splitlines():
        words = shlex.split(line)
        if words[:3] == ["python", "-m", "gated_hmoe"]:
            out.append(words[3:])
    return out


# ------------------------------------------------------------------ rates (E1, E3)

def e1_sweep_fields(args) -> dict:
    """The configuration fields of the flags of :func:`add_e1_sweep_flags` (the true measure
    read from ``--true``; the grid of the chosen ``--sweep``)."""
    true = None
    if args.true is not None:
        true = moe.measure_to_dict(moe.load_measure(args.true, expert=args.expert, gate=args.gate))
    return dict(expert=args.expert, gate=args.gate, k_true=args.k_true, k_fit=args.k_fit,
                true=true, **grid_fields(args))


def grid_fields(args) -> dict:
    """The configuration fields of the flags of :func:`add_grid_flags` (the grid of the
    chosen ``--sweep``), with the replicates, seed and the loop's budget."""
    fields = dict(sweep=args.sweep, points=args.points, replicates=args.replicates,
                  seed=args.seed, max_iter=args.max_iter, rtol=args.rtol)
    if args.sweep == "n":
        fields.update(n_min=args.n_min, n_max=args.n_max, noise=args.noise)
    else:
        fields.update(n=args.n, noise_min=args.noise_min, noise_max=args.noise_max)
    return fields


def rates_config(args) -> e1_rates.SweepConfig:
    """The :class:`~gated_hmoe.experiments.e1_rates.SweepConfig` of the ``rates`` flags."""
    return e1_rates.SweepConfig(**e1_sweep_fields(args), init=args.init, spread=args.spread,
                                starts=args.starts, box=args.box, fit_min=args.fit_min,
                                fit_max=args.fit_max).validate()


def cli_rates(args, config: e1_rates.SweepConfig) -> int:
    """``rates``: one E1/E3 sweep; ``DIR/results.json`` and ``DIR/rates.png``."""
    result = e1_rates.run_sweep(config, cache_dir=args.cache_dir, progress=not args.no_progress,
                                devices=args.devices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runner.write_json_atomic(out / "results.json", result.to_dict(), indent=1)
    _save(viz_rates.rate_figure(result)[0], out / "rates.png")
    print(f"wrote {out / 'results.json'} and {out / 'rates.png'}")
    if config.slope_note() is not None:
        print(f"  {config.slope_note()}")
    notes = e1_rates.slope_notes(config, result.slopes)
    for m, s in result.slopes.items():
        if s is not None:
            note = f"  ({notes[m]})" if m in notes else ""
            print(f"  {m:17s} {s.label()}  failures {sum(s.failures)}{note}")
    failed, fits = result.failure_count()
    print(f"  total failures {failed} of {fits} fits; fit seconds {result.seconds:.1f}")
    return 0


def add_e1_sweep_flags(p, *, expert: str, k_fit: int, points: int, replicates: int,
                       sweep_help: str) -> None:
    """The flags that E1's sweeps share: class, sizes and the n or noise grid."""
    p.add_argument("--expert", default=expert, help=f"one of {moe.EXPERTS}")
    p.add_argument("--gate", default="linear", help=f"one of {moe.GATES}")
    p.add_argument("--k-true", type=int, default=2)
    p.add_argument("--k-fit", type=int, default=k_fit)
    add_grid_flags(p, points=points, replicates=replicates, sweep_help=sweep_help)


def add_grid_flags(p, *, points: int, replicates: int, sweep_help: str, n_min: int = 1000,
                   n_max: int = 100_000, n: int = 1000, noise_min: float = 1e-14) -> None:
    """The flags of an n or noise grid with replicates (E1 and E2 sweeps)."""
    p.add_argument("--sweep", default="n", help=sweep_help)
    p.add_argument("--n-min", type=int, default=n_min)
    p.add_argument("--n-max", type=int, default=n_max)
    p.add_argument("--noise", type=float, default=1e-6, help="noise variance for --sweep n")
    p.add_argument("--n", type=int, default=n, help="fixed sample size for --sweep noise")
    p.add_argument("--noise-min", type=float, default=noise_min)
    p.add_argument("--noise-max", type=float, default=1e-4)
    p.add_argument("--points", type=int, default=points)
    p.add_argument("--replicates", type=int, default=replicates)
    p.add_argument("--seed", type=int, default=0)


def add_rates(sub) -> None:
    p = sub.add_parser("rates", help="E1: least-squares rates of MoE experts (n or noise sweep)",
                       description=e1_rates.__doc__.split("\n\n")[0],
                       epilog=example("python -m gated_hmoe rates --expert sigmoid --n-min 100 "
                                      "--n-max 400 --points 3 --replicates 3 --out results/rates"))
    add_e1_sweep_flags(p, expert="sigmoid", k_fit=2, points=12, replicates=20,
                       sweep_help="'n' (sample size) or 'noise' (E1 contrast protocol)")
    p.add_argument("--init", default="near", help="one of ('near', 'split', 'random')")
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
    p.set_defaults(func=cli_rates, config=rates_config, memory=e1_rates.peak_bytes)


# ------------------------------------------------------------------ profile (E1, what the data determine)

def _offsets(text: str) -> tuple[float, float, int]:
    try:
        lo, hi, count = text.split(",")
        return float(lo), float(hi), int(count)
    except ValueError as exc:
        raise ValueError(f"offsets must be MIN,MAX,COUNT (e.g. 0.01,2,14), got {text!r}") from exc


def profile_config(args) -> e1_profile.ProfileConfig:
    """The :class:`~gated_hmoe.experiments.e1_profile.ProfileConfig` of the ``profile`` flags."""
    return e1_profile.ProfileConfig(**e1_sweep_fields(args), offsets=_offsets(args.offsets),
                                    split=args.split, c=args.c).validate()


def cli_profile(args, config: e1_profile.ProfileConfig) -> int:
    """``profile``: profile confidence sets of the over-fitted pair along an n or noise
    sweep, with the prediction of the truth's own modulus; ``DIR/results.json`` and
    ``DIR/profile.png``."""
    result = e1_profile.run_profiles(config, cache_dir=args.cache_dir,
                                     progress=not args.no_progress, devices=args.devices)
    m = profile_report.population_modulus(config, cache_dir=args.cache_dir)
    return write_profile(result, Path(args.out), profile_report.predict(result, m))


def write_profile(result: e1_profile.ProfileSweep, out: Path,
                  prediction: profile_report.Prediction | None = None) -> int:
    """Write ``out/results.json`` (:func:`~gated_hmoe.experiments.profile_report.report`) and
    ``out/profile.png`` of a profile sweep and print its summary (certified fits, median
    radii, the prediction where given, the slope over the usable points, time)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = profile_report.report(result, prediction)
    runner.write_json_atomic(out / "results.json", payload, indent=1)
    rs = result.radius_slope()
    predicted = None if prediction is None else (
        prediction.x, prediction.radius, prediction.status == "censored")
    _save(viz_profile.profile_panels(result, slope=rs.label(), predicted=predicted)[0],
          out / "profile.png")
    print(f"wrote {out / 'results.json'} and {out / 'profile.png'}")
    print(f"  certified {payload['certified']} of {payload['fits']} constrained fits")
    for i, (p, m) in enumerate(zip(result.points, result.median_radius())):
        line = f"  n = {p['n']:>7d}, nu = {p['noise']:.1e}: median radius {m:.3g}"
        if prediction is not None:
            line += (f", predicted {prediction.radius[i]:.3g} ({prediction.status[i]})"
                     + (f", ratio {prediction.ratio[i]:.2f}"
                        if np.isfinite(prediction.ratio[i]) else "")
                     + ("" if prediction.well_conditioned[i] else
                        f" [ill-conditioned: {prediction.range_low[i]:.3g} to "
                        f"{prediction.range_high[i]:.3g} at thresholds c/"
                        f"{profile_report.PREDICTION_FACTOR:g} to c*"
                        f"{profile_report.PREDICTION_FACTOR:g}]"))
        print(line)
    print(f"  radius {rs.label()}" if rs.slope is not None else f"  radius: {payload['slope_note']}")
    if prediction is not None:
        print(f"  {payload['prediction']['regime']}")
        print(f"  measured/predicted within a factor {profile_report.PREDICTION_FACTOR} where "
              f"both are inside the grid: {payload['prediction']['ratios_agree']} (at the "
              f"well-conditioned points: "
              f"{payload['prediction']['ratios_agree_where_well_conditioned']}); censored at "
              f"the same points: {payload['prediction']['same_censoring']}")
    print(f"  fit seconds {result.seconds:.1f}")
    return 0


def add_profile(sub) -> None:
    p = sub.add_parser(
        "profile", help="E1: profile confidence sets of the over-fitted pair (radius vs n)",
        description=e1_profile.__doc__.split("\n\n")[0],
        epilog=example("python -m gated_hmoe profile --expert silu --n-min 200 --n-max 400 "
                       "--points 2 --replicates 2 --offsets 0.05,2,6 --out results/profile"))
    add_e1_sweep_flags(p, expert="silu", k_fit=3, points=5, replicates=16,
                       sweep_help="'n' (sample size at fixed noise) or 'noise'")
    p.add_argument("--true", default=None, metavar="FILE.json", help="true measure (JSON)")
    add_profile_flags(p, offsets="0.02,2,12")
    p.add_argument("--devices", type=int, default=None)
    p.set_defaults(func=cli_profile, config=profile_config, memory=e1_profile.peak_bytes)


def add_profile_flags(p, *, offsets: str) -> None:
    """The flags of a profile: offsets, split, threshold, the loop's budget, cache, output."""
    p.add_argument("--offsets", default=offsets, metavar="MIN,MAX,COUNT",
                   help="log-spaced grid of offsets delta")
    p.add_argument("--split", type=float, default=0.5, help="weight share of the pair's first atom")
    p.add_argument("--c", type=float, default=CHI2_95,
                   help="threshold of the radius in units of nu (default: chi2(1) 95%%)")
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--rtol", type=float, default=1e-2,
                   help="certify a fit when its Gauss-Newton decrement is <= rtol * nu")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, metavar="DIR")


# ------------------------------------------------------------------ attention-profile (E2, what the data determine)

def attention_profile_config(args) -> e2_profile.AttentionProfileConfig:
    """The :class:`~gated_hmoe.experiments.e2_profile.AttentionProfileConfig` of the
    ``attention-profile`` flags (the teacher read from ``--teacher`` or drawn by
    ``--teacher-seed``; neither: the declared teacher)."""
    weights = None
    if args.teacher_weights is not None:
        weights = heads.teacher_to_dict(heads.load_teacher(
            args.teacher_weights, heads.check_layer_position(args.position), "teacher_weights"))
    return e2_profile.AttentionProfileConfig(
        position=args.position, **grid_fields(args), offsets=_offsets(args.offsets),
        split=args.split, c=args.c, n_tokens=args.n_tokens, teacher_weights=weights,
        teacher_seed=args.teacher_seed).validate()


def cli_attention_profile(args, config: e2_profile.AttentionProfileConfig) -> int:
    """``attention-profile``: profile confidence sets of the surplus head of one gate
    position along an n or noise sweep; ``DIR/results.json`` (with both components of the
    confidence set per grid point, ``branches``: :func:`gated_hmoe.experiments.e2_profile.report`)
    and ``DIR/profile.png``."""
    result = e2_profile.run_profiles(config, cache_dir=args.cache_dir,
                                     progress=not args.no_progress)
    status = write_profile(result, Path(args.out))
    runner.write_json_atomic(Path(args.out) / "results.json", e2_profile.report(result),
                             indent=1)
    print(f"  both components (threshold c = {config.c:.3g} ν; teacher: "
          f"{config.teacher_source}):")
    for line in e2_profile.branch_lines(result):
        print(f"  {line}")
    return status


def add_attention_profile(sub) -> None:
    p = sub.add_parser(
        "attention-profile",
        help="E2: profile confidence sets of the surplus head (radius vs n), one gate position",
        description=e2_profile.__doc__.split("\n\n")[0],
        epilog=example("python -m gated_hmoe attention-profile --position G1 --sweep noise "
                       "--n 64 --noise-min 1e-9 --noise-max 1e-7 --points 2 --replicates 1 "
                       "--offsets 0.1,1,2 --out results/attention-profile"))
    p.add_argument("--position", default="ridge", help=f"one of {heads.LAYER_POSITIONS}")
    p.add_argument("--tokens", dest="n_tokens", type=int, default=3,
                   help="sequence length N (>= 3)")
    teacher = p.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", dest="teacher_weights", default=None, metavar="FILE.json",
                         help=f"the teacher's weights: {heads.TEACHER_FORMAT} (default: the "
                              "book's declared teacher)")
    teacher.add_argument("--teacher-seed", dest="teacher_seed", type=int, default=None,
                         metavar="S",
                         help="a teacher drawn with seed S >= 0: independent normal entries "
                              "(sd 1.5 for W_K, 0.3 for value biases, 1 otherwise), redrawn "
                              f"until |cos| <= {heads.SEEDED_MAX_COSINE} between the two "
                              "heads' score matrices and between their value maps, every "
                              f"value map's norm >= {heads.SEEDED_MIN_LEAF} and every mass "
                              f"|W_O| >= {heads.SEEDED_MIN_MASS} (ridge, G2-tied)")
    add_grid_flags(p, points=3, replicates=8, n_min=250, n_max=4000, n=250, noise_min=1e-12,
                   sweep_help="'n' (sample size at fixed noise) or 'noise'")
    add_profile_flags(p, offsets="0.03,2,8")
    p.set_defaults(func=cli_attention_profile, config=attention_profile_config,
                   memory=e2_profile.peak_bytes)


# ------------------------------------------------------------------ attention-fit (E2)

def attention_fit_configs(args) -> list[e2_attention.FitSweepConfig]:
    """The :class:`~gated_hmoe.experiments.e2_attention.FitSweepConfig` of each position of
    the ``attention-fit`` flags."""
    positions = [q.strip() for q in args.positions.split(",") if q.strip()]
    if not positions:
        raise ValueError(f"positions must name at least one of {heads.POSITIONS}, "
                         f"got {args.positions!r}")
    for q in positions:
        if q not in heads.POSITIONS:
            raise ValueError(f"positions must be a comma-separated subset of {heads.POSITIONS}, "
                             f"got {q!r}")
    return [e2_attention.FitSweepConfig(
        position=q, teacher_heads=args.teacher_heads, student_heads=args.student_heads, n=args.n,
        log10_x_min=args.log10_x_min, log10_x_max=args.log10_x_max, points=args.points,
        replicates=args.replicates, spread=args.spread, seed=args.seed, max_iter=args.max_iter,
        rtol=args.rtol).validate() for q in positions]


def cli_attention_fit(args, configs: list[e2_attention.FitSweepConfig]) -> int:
    """``attention-fit``: the E2 noise sweep for several positions; ``DIR/results.json`` and
    ``DIR/attention_fit.png``."""
    out_dir = Path(args.out)
    results = {}
    bar = runner.progress(configs, desc="attention-fit", enabled=not args.no_progress,
                          unit="position")
    for cfg in bar:
        bar.set_postfix(position=cfg.position)
        results[cfg.position] = e2_attention.run_sweep(cfg, cache_dir=args.cache_dir)
    metrics = e2_attention.METRICS
    payload = {"versions": runner.versions(), "positions": {}}
    for q, res in results.items():
        payload["positions"][q] = {
            "config": dataclasses.asdict(res.config), "leaf_class": heads.LEAF_CLASS[q],
            "x": res.x.tolist(), "seconds": res.seconds, "failures": res.failures(),
            "slopes": {m: res.slope_record(m) for m in metrics}, "points": res.points}
    runner.write_json_atomic(out_dir / "results.json", payload)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.4 * len(metrics), 4.8))
    for ax, m in zip(axes, metrics):
        if all(payload["positions"][q]["slopes"][m] is not None for q in results):
            viz_attention.sweep_axes(ax, dict(results), metric=m)
        ax.set_title(f"E2, n = {args.n}: {m}")
    fig.tight_layout()
    _save(fig, out_dir / "attention_fit.png")
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'attention_fit.png'}")
    for q, res in results.items():
        secs = "no time recorded" if res.seconds is None else f"{res.seconds:.0f} s"
        secs += " (cached)" if res.cached else ""
        slopes = payload["positions"][q]["slopes"]
        text = "; ".join(f"{m} " + (f"no slope can be fitted (< 2 points with n/nu >= "
                                     f"{e2_attention.FIT_MIN:.2g})" if slopes[m] is None
                                    else res.slope(m).label()) for m in metrics)
        print(f"  {q:6s} ({heads.LEAF_CLASS[q]}) {text}; failures {res.failures()}; {secs}")
    return 0


def add_attention_fit(sub) -> None:
    p = sub.add_parser(
        "attention-fit", help="E2: fitted attention layers, leaf-expert errors vs n/nu",
        description="E2 noise sweep per gate position (cached per position; an interrupted "
                    "run resumes at the first unfinished position).",
        epilog=example("python -m gated_hmoe attention-fit --positions MHSA,ridge --n 30 "
                       "--points 3 --log10-x-min 11 --log10-x-max 13 --replicates 2 "
                       "--max-iter 20 --out results/attention-fit"))
    p.add_argument("--positions", default=",".join(heads.POSITIONS),
                   help=f"comma-separated subset of {heads.POSITIONS}")
    p.add_argument("--teacher-heads", type=int, default=1)
    p.add_argument("--student-heads", type=int, default=2)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--log10-x-min", type=float, default=7.0, help="log10 of the smallest n/nu")
    p.add_argument("--log10-x-max", type=float, default=17.0, help="log10 of the largest n/nu")
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--replicates", type=int, default=12)
    p.add_argument("--spread", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--rtol", type=float, default=1.0,
                   help="stop when the Gauss-Newton decrement is <= rtol * nu (chapter 05: 1.0)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cli_attention_fit, config=attention_fit_configs,
                   memory=lambda configs: max(e2_attention.peak_bytes(c) for c in configs))


# ------------------------------------------------------------------ teacher-student (E5, trained attention)

def cli_teacher_student(args, config: e5.TeacherStudentConfig) -> int:
    """``teacher-student``: students trained with Adam from random initialisations on a
    teacher's data along an n grid; ``DIR/results.json`` and ``DIR/teacher_student.png``."""
    result = e5.run(config, cache_dir=args.cache_dir, progress=not args.no_progress)
    out = Path(args.out)
    path = e5.write_results(result, out)
    _save(viz_teacher_student.sweep_panels(result)[0], out / "teacher_student.png")
    print(f"wrote {path} and {out / 'teacher_student.png'}")
    for i, n in enumerate(result["grid"]):
        fates = ", ".join(f"{k} {v}" for k, v in result["fates"][i].items() if v)
        print(f"  n = {n:>7d}: picked students' fates {fates}; runs at the step budget "
              f"{result['budget_hits'][i]} of {result['runs_per_point']}")
    for key, s in result["slopes"].items():
        print(f"  {key:12s} {'no slope (one grid point)' if s is None else s['label']}")
    print(f"  seconds {result['seconds']:.1f}")
    return 0


def add_teacher_student(sub) -> None:
    p = sub.add_parser(
        "teacher-student",
        help="E5: students trained with Adam on a teacher attention layer (head recovery vs n)",
        description=e5.__doc__.split("\n\n")[0],
        epilog=example("python -m gated_hmoe teacher-student --position G2-tied --heads 3 "
                       "--n-min 100 --n-max 300 --points 2 --seeds 2 --inits 2 --steps 200 "
                       "--out results/teacher-student"))
    p.add_argument("--position", default="MHSA", help=f"one of {heads.LAYER_POSITIONS}")
    p.add_argument("--heads", type=int, default=3, help="student heads (the teacher has 2)")
    p.add_argument("--n-min", type=int, default=100)
    p.add_argument("--n-max", type=int, default=100_000)
    p.add_argument("--points", type=int, default=5)
    p.add_argument("--noise", type=float, default=1e-2,
                   help="noise variance as a fraction of the teacher's output variance")
    p.add_argument("--seed", type=int, default=0, help="first data seed")
    p.add_argument("--seeds", type=int, default=8, help="data sets per n")
    p.add_argument("--inits", type=int, default=4, help="random initialisations per data set")
    p.add_argument("--steps", type=int, default=2000, help="step budget of each run")
    p.add_argument("--tokens", dest="n_tokens", type=int, default=None,
                   help="sequence length N (default 8)")
    p.add_argument("--chunk", type=int, default=None,
                   help="data sets per compiled call (lower it to save memory)")
    p.add_argument("--teacher", default=None, metavar="FILE.json",
                   help="teacher heads' weights (JSON; see the library's teacher_from_file)")
    p.add_argument("--teacher-seed", type=int, default=None,
                   help="a teacher drawn with this seed (heads separated)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cli_teacher_student, config=e5.config_from_args, memory=e5.peak_bytes)


# ------------------------------------------------------------------ transformer (E4)

def transformer_config(args) -> e4.ExperimentConfig:
    """The :class:`~gated_hmoe.experiments.e4_transformer.ExperimentConfig` of the
    ``transformer`` flags: a preset with the flags that were given replacing its fields."""
    cfg = e4.PRESETS[args.preset]
    overrides = {k: getattr(args, k) for k in ("seeds", "steps", "d_model", "layers", "heads")
                 if getattr(args, k) is not None}
    if args.sizes:
        overrides["sizes"] = tuple(args.sizes)
        overrides["pool"] = max(cfg.pool, max(args.sizes))
    return e4.validate_config(cfg._replace(**overrides))


def cli_transformer(args, cfg: e4.ExperimentConfig) -> int:
    """``transformer``: the E4 sweep (cached per run, resumable);
    ``DIR/transformer_results.json`` and five figures ``DIR/transformer_*.png``."""
    res = e4.run_experiment(cfg, cache_dir=args.cache_dir, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = e4.summary(res)
    summary["seconds_this_call"] = res.seconds
    runner.write_json_atomic(out / "transformer_results.json", summary)
    figures = [
        ("sinks", lambda: viz_transformer.plot_sinks(e4.sink_table(res), seq_len=cfg.seq_len)),
        ("learning_curves", lambda: viz_transformer.plot_learning_curves(
            e4.learning_curves(res), cfg.sizes, res.stack(cfg.curve_variants[0], "bayes_loss"),
            steps=cfg.steps)),
        ("stability", lambda: viz_transformer.plot_stability(e4.stability(res)))]
    if {"MHSA", "G1"} <= set(cfg.sink_variants):
        figures += [("attention_maps", lambda: viz_transformer.plot_attention_maps(res)),
                    ("sink_trace", lambda: viz_transformer.plot_sink_trace(res))]
    for name, draw in figures:
        _save(draw(), out / f"transformer_{name}.png")
    print(f"wrote {out / 'transformer_results.json'} and figures "
          f"({len(res.runs)} runs, {len(res.seconds)} variant groups computed)")
    return 0


def add_transformer(sub) -> None:
    p = sub.add_parser(
        "transformer", help="E4: small transformer on Bigram-Backcopy, sinks and learning curves",
        description="Train the E4 sweep (cached per run, resumable) and write "
                    "transformer_results.json and figures to --out.",
        epilog=example("python -m gated_hmoe transformer --preset tiny --out results/transformer"))
    p.add_argument("--preset", choices=sorted(e4.PRESETS), default="chapter")
    p.add_argument("--out", default="results/transformer", metavar="DIR", help="output folder")
    p.add_argument("--cache-dir", default=None, help="cache root (default $GATED_HMOE_CACHE)")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--d-model", dest="d_model", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="training-set sizes of the learning curves")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cli_transformer, config=transformer_config, memory=e4.peak_bytes)


# ------------------------------------------------------------------ the parser

#: The sub-commands, each added by one function.
COMMANDS = (add_rates, add_profile, add_attention_profile, add_attention_fit,
            add_teacher_student, add_transformer)


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parser of each command of ``parser``."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def build_parser() -> Parser:
    """The top-level parser with one sub-parser per experiment."""
    parser = Parser(
        prog="python -m gated_hmoe",
        description="Run the book's experiments from the command line (cached, resumable).",
        epilog="Exit status: 0 done, 2 bad arguments (nothing was run), 1 a failure during the "
               "run.\nErrors are one 'error: ...' line; --debug (or GATED_HMOE_DEBUG=1) shows "
               "the traceback.\n\n"
               + example("python -m gated_hmoe rates --help"))
    parser.add_argument("--debug", action="store_true",
                        help="on an error, re-raise it with its traceback (for developers)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Configuration field (an action's ``dest``) -> the flag that sets it, as typed
    (``{"n_min": "--n-min", "n_tokens": "--tokens", ...}``), from the parser's actions."""
    return {a.dest: a.option_strings[-1] for a in parser._actions
            if a.option_strings and a.dest not in ("help", argparse.SUPPRESS)}


def as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with the configuration fields it names replaced by their flags as the
    user types them (:func:`flag_names`): a leading field (``"n_min must ..."``, also
    ``"offsets min ..."``), a field with an underscore anywhere (``k_true``), and an
    assignment ``field=`` anywhere (``n=``, ``fit_min=``).

    >>> p = argparse.ArgumentParser(); _ = p.add_argument("--n-min", type=int)
    >>> _ = p.add_argument("--n-max", type=int); _ = p.add_argument("--n", type=int)
    >>> as_flags("n_min must be an integer >= 1, got 0", p)
    '--n-min must be an integer >= 1, got 0'
    >>> as_flags("n_max must be >= n_min, got n_min=5000, n_max=100", p)
    '--n-max must be >= --n-min, got --n-min=5000, --n-max=100'
    >>> as_flags("the grid's n/nu values, got n=3", p)
    "the grid's n/nu values, got --n=3"
    """
    flags = flag_names(parser)
    names = sorted(flags, key=len, reverse=True)
    for dest in names:
        if message.startswith(dest + " "):
            message = flags[dest] + message[len(dest):]
            break
    pattern = "|".join(re.escape(d) for d in names if "_" in d)
    assign = "|".join(re.escape(d) for d in names)
    if pattern:
        message = re.sub(rf"(?<![\w.-])({pattern})(?!\w)", lambda m: flags[m.group(1)], message)
    if assign:
        message = re.sub(rf"(?<![\w.-])({assign})=", lambda m: flags[m.group(1)] + "=", message)
    return message


def one_line(exc: BaseException) -> str:
    """An exception as one line: its first non-empty line of text (the type's name if it
    has none), at most 400 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def memory_flags(args, config) -> str:
    """The sizes that set a command's memory, as typed (``"--replicates 20 with --n-max
    100000"``)."""
    if args.command == "transformer":
        given = [f"--{k.replace('_', '-')} {getattr(args, k)}"
                 for k in ("seeds", "d_model", "layers", "heads") if getattr(args, k) is not None]
        sizes = [f"--sizes {' '.join(map(str, args.sizes))}"] if args.sizes else []
        return " with ".join([f"--preset {args.preset}", ", ".join(given + sizes)]
                             if given or sizes else [f"--preset {args.preset}"])
    if args.command == "teacher-student":
        return (f"--seeds {args.seeds} and --inits {args.inits} with --n-max {args.n_max}"
                + ("" if args.chunk is None else f" and --chunk {args.chunk}"))
    parts = [f"--replicates {args.replicates}"]
    if getattr(args, "sweep", None) == "n":
        parts.append(f"--n-max {args.n_max}")
    elif getattr(args, "n", None) is not None:
        parts.append(f"--n {args.n}")
    if args.command == "attention-fit":
        parts.append(f"--points {args.points}")
    if getattr(args, "init", None) == "random":
        parts.append(f"--starts {args.starts}")
    return parts[0] + " with " + " and ".join(parts[1:]) if len(parts) > 1 else parts[0]


def prepare(args):
    """Everything before any work: the configuration of the flags (validated), the memory
    it needs against the machine's, and writable output and cache folders. Raises
    ``ValueError``/``TypeError`` in the configuration's terms (see :func:`as_flags`)."""
    config = args.config(args)
    if getattr(args, "devices", None) is not None:
        moe_fit.device_mesh(args.devices)       # at most the devices there are
    if args.memory is not None:
        checks.fits_in_memory(args.memory(config), memory_flags(args, config))
    checks.writable_folder(args.out, "out")
    if args.cache_dir is not None:
        checks.writable_folder(args.cache_dir, "cache_dir")
    else:
        checks.writable_folder(runner.cache_root(), f"the cache folder (${runner.CACHE_ENV} "
                                                    "or ~/.cache/gated_hmoe; set --cache-dir)")
    return config


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status: 0 done,
    2 bad arguments (before any work), 1 a failure during the run. Errors are one
    ``error: ...`` line on stderr, naming the flag as typed."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:                   # --help
        return exc.code if isinstance(exc.code, int) else 0
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or bool(os.environ.get(DEBUG_ENV))
    command = sub_parsers(parser)[args.command]
    try:
        config = prepare(args)
    except (ValueError, TypeError) as exc:      # bad input: one clear line, no trace
        if debug:
            raise
        print(f"error: {as_flags(one_line(exc), command)}", file=sys.stderr)
        return 2
    matplotlib.use("Agg")                       # figures are written to files
    try:
        return int(args.func(args, config) or 0)
    except KeyboardInterrupt:
        print("error: interrupted; finished grid points are cached, the same command resumes",
              file=sys.stderr)
        return 130
    except Exception as exc:                    # a failure during the run
        if debug:
            raise
        print(f"error: {args.command} failed: {type(exc).__name__}: {one_line(exc)} "
              f"(--debug shows the traceback)", file=sys.stderr)
        return 1
