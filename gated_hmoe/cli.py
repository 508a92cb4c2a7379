"""Command line ``python -m gated_hmoe <command> ...``: the composition root.

Each sub-command builds an experiment configuration from its flags, runs it through the
experiment's cached, resumable runner (:mod:`gated_hmoe.experiments`), writes
``results.json`` with the configuration and library versions, and draws its figures with
:mod:`gated_hmoe.viz`. Bad arguments end in one ``error: ...`` line and exit status 2.

- ``rates``: E1 (and E3 with ``--gate``) -- least-squares rates of MoE experts;
- ``profile``: E1 measured by what the data determine -- profile confidence sets;
- ``attention-profile``: E2 measured the same way -- the surplus head of a gate position;
- ``attention-fit``: E2 -- fitted attention layers per gate position;
- ``transformer``: E4 -- a small transformer with and without gates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from gated_hmoe.estimation.profile import CHI2_95
from gated_hmoe.experiments import e1_profile, e1_rates, e2_attention, e2_profile, runner
from gated_hmoe.experiments import e4_transformer as e4
from gated_hmoe.models import heads, moe
from gated_hmoe.viz import attention as viz_attention
from gated_hmoe.viz import profile as viz_profile
from gated_hmoe.viz import rates as viz_rates
from gated_hmoe.viz import transformer as viz_transformer


def _save(fig, path: Path) -> None:
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


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


def cli_rates(args) -> int:
    """``rates``: one E1/E3 sweep; ``DIR/results.json`` and ``DIR/rates.png``."""
    config = rates_config(args)
    result = e1_rates.run_sweep(config, cache_dir=args.cache_dir, progress=not args.no_progress,
                                devices=args.devices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runner.write_json_atomic(out / "results.json", result.to_dict(), indent=1)
    _save(viz_rates.rate_figure(result)[0], out / "rates.png")
    print(f"wrote {out / 'results.json'} and {out / 'rates.png'}")
    for m, s in result.slopes.items():
        print(f"  {m:17s} {s.label()}  failures {sum(s.failures)}")
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
                       description=e1_rates.__doc__.split("\n\n")[0])
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
    p.set_defaults(func=cli_rates)


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


def cli_profile(args) -> int:
    """``profile``: profile confidence sets of the over-fitted pair along an n or noise
    sweep; ``DIR/results.json`` and ``DIR/profile.png``."""
    config = profile_config(args)
    result = e1_profile.run_profiles(config, cache_dir=args.cache_dir,
                                     progress=not args.no_progress, devices=args.devices)
    return write_profile(result, Path(args.out))


def write_profile(result: e1_profile.ProfileSweep, out: Path) -> int:
    """Write ``out/results.json`` and ``out/profile.png`` of a profile sweep and print its
    summary (certified fits, median radii, slope, time)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    runner.write_json_atomic(out / "results.json", payload, indent=1)
    _save(viz_profile.profile_panels(result)[0], out / "profile.png")
    print(f"wrote {out / 'results.json'} and {out / 'profile.png'}")
    print(f"  certified {payload['certified']} of {payload['fits']} constrained fits")
    median = result.median_radius()
    for p, m in zip(result.points, median):
        print(f"  n = {p['n']:>7d}, nu = {p['noise']:.1e}: median radius {m:.3g}")
    if payload["slopes"]["radius"] is not None:
        print(f"  radius {result.slope().label()}")
    print(f"  fit seconds {result.seconds:.1f}")
    return 0


def add_profile(sub) -> None:
    p = sub.add_parser(
        "profile", help="E1: profile confidence sets of the over-fitted pair (radius vs n)",
        description=e1_profile.__doc__.split("\n\n")[0])
    add_e1_sweep_flags(p, expert="silu", k_fit=3, points=5, replicates=16,
                       sweep_help="'n' (sample size at fixed noise) or 'noise'")
    p.add_argument("--true", default=None, metavar="FILE.json", help="true measure (JSON)")
    add_profile_flags(p, offsets="0.02,2,12")
    p.add_argument("--devices", type=int, default=None)
    p.set_defaults(func=cli_profile)


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
    ``attention-profile`` flags."""
    return e2_profile.AttentionProfileConfig(
        position=args.position, **grid_fields(args), offsets=_offsets(args.offsets),
        split=args.split, c=args.c, n_tokens=args.n_tokens).validate()


def cli_attention_profile(args) -> int:
    """``attention-profile``: profile confidence sets of the surplus head of one gate
    position along an n or noise sweep; ``DIR/results.json`` and ``DIR/profile.png``."""
    config = attention_profile_config(args)
    result = e2_profile.run_profiles(config, cache_dir=args.cache_dir,
                                     progress=not args.no_progress)
    return write_profile(result, Path(args.out))


def add_attention_profile(sub) -> None:
    p = sub.add_parser(
        "attention-profile",
        help="E2: profile confidence sets of the surplus head (radius vs n), one gate position",
        description=e2_profile.__doc__.split("\n\n")[0])
    p.add_argument("--position", default="ridge", help=f"one of {heads.LAYER_POSITIONS}")
    p.add_argument("--tokens", dest="n_tokens", type=int, default=3,
                   help="sequence length N (>= 3)")
    add_grid_flags(p, points=3, replicates=8, n_min=250, n_max=4000, n=250, noise_min=1e-12,
                   sweep_help="'n' (sample size at fixed noise) or 'noise'")
    add_profile_flags(p, offsets="0.03,2,8")
    p.set_defaults(func=cli_attention_profile)


# ------------------------------------------------------------------ attention-fit (E2)

def cli_attention_fit(args) -> int:
    """``attention-fit``: the E2 noise sweep for several positions; ``DIR/results.json`` and
    ``DIR/attention_fit.png``."""
    positions = [q.strip() for q in args.positions.split(",") if q.strip()]
    for q in positions:
        heads.check_position(q)
    configs = [e2_attention.FitSweepConfig(
        position=q, teacher_heads=args.teacher_heads, student_heads=args.student_heads, n=args.n,
        log10_x_min=args.log10_x_min, log10_x_max=args.log10_x_max, points=args.points,
        replicates=args.replicates, spread=args.spread, seed=args.seed, max_iter=args.max_iter,
        rtol=args.rtol).validate() for q in positions]
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
        text = "; ".join(f"{m} " + ("no slope (< 2 points with n/nu >= FIT_MIN)" if slopes[m] is None
                                    else res.slope(m).label()) for m in metrics)
        print(f"  {q:6s} ({heads.LEAF_CLASS[q]}) {text}; failures {res.failures()}; {secs}")
    return 0


def add_attention_fit(sub) -> None:
    p = sub.add_parser(
        "attention-fit", help="E2: fitted attention layers, leaf-expert errors vs n/nu",
        description="E2 noise sweep per gate position (cached per position; an interrupted "
                    "run resumes at the first unfinished position).")
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
    p.set_defaults(func=cli_attention_fit)


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


def cli_transformer(args) -> int:
    """``transformer``: the E4 sweep (cached per run, resumable);
    ``DIR/transformer_results.json`` and five figures ``DIR/transformer_*.png``."""
    cfg = transformer_config(args)
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
                    "transformer_results.json and figures to --out.")
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
    p.set_defaults(func=cli_transformer)


# ------------------------------------------------------------------ the parser

#: The sub-commands, each added by one function.
COMMANDS = (add_rates, add_profile, add_attention_profile, add_attention_fit, add_transformer)


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parser of each command of ``parser``."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per experiment."""
    parser = argparse.ArgumentParser(
        prog="python -m gated_hmoe",
        description="Run the book's experiments from the command line (cached, resumable).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with a leading configuration field replaced by its flag as the user types
    it (``"n_min must be ..."`` -> ``"--n-min must be ..."``; also ``"offsets min ..."``).

    >>> p = argparse.ArgumentParser(); _ = p.add_argument("--n-min", type=int)
    >>> as_flags("n_min must be an integer >= 1, got 0", p)
    '--n-min must be an integer >= 1, got 0'
    """
    flags = {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings}
    for dest in sorted(flags, key=len, reverse=True):
        if message.startswith(dest + " "):
            return flags[dest] + message[len(dest):]
    return message


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    matplotlib.use("Agg")                   # figures are written to files
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError) as exc:  # bad input: one clear line, no trace
        command = sub_parsers(parser).get(getattr(args, "command", None), parser)
        print(f"error: {as_flags(str(exc), command)}", file=sys.stderr)
        return 2
