"""Sphinx extension for the book's "Results at a glance" page (``results.md``).

One directive, ``{book-results} NAME``, renders a table computed when the book is built
from the committed records (``docs/records/*.json``) through the library's own loaders and
statistics -- the same calls the chapters make -- so no number on the page is typed by hand:

- ``e2-calibration``: the threshold ``c`` calibrated on the ridge leaves' null draws
  (:func:`gated_hmoe.experiments.e2_profile.calibrate_radius`);
- ``e2-positions``: every gate position's surplus head on the record grid: largest profile
  excess, its slope, the median radius at ``c`` (with the 1000-iteration refit);
- ``e2-ridge``: the ridge leaves' radius on the local grid, every seed, slope bands;
- ``e2-nsweep``: the tied G2's n-sweeps at fixed noise (the fixed-design check);
- ``e3-profile``, ``e3-noise``: the quadratic gates' profile records (chapter 06);
- ``e3-endpoints``: the quadratic gates' end-point records (failure counts only: end points
  of over-specified fits are not a rate);
- ``records``: every committed record with its provenance.

Run as a script it prints ``docs/records/README.md`` (the records' index, from their own
fields)::

    .venv/bin/python _ext/book_results.py > docs/records/README.md
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import numpy as np
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from book_status import table
from gated_hmoe.estimation.profile import CHI2_95
from gated_hmoe.estimation.rates import format_slope
from gated_hmoe.experiments import e2_profile
from gated_hmoe.experiments import e3_quadratic as qb
from gated_hmoe.models import heads

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "records"
#: Chapter 06 measured the quadratic gates' moduli on ``delta <= 0.4``: the noise sweep's
#: radius slope is taken over the grid points whose median radius is at most this.
E3_INSIDE = 0.4
#: Target radii of the sample-complexity columns (chapter 05's).
EPS = (0.1, 0.03)


# ----------------------------------------------------------------------- formatting

def _tidy(text: str) -> str:
    """``"6.57e+04"`` -> ``"6.57e4"``, ``"1.0e-06"`` -> ``"1e-6"``."""
    return re.sub(r"(\.0)?e([+-])0*(\d)", lambda m: "e" + ("-" if m[2] == "-" else "") + m[3],
                  text)


def _g(v: float, digits: int = 3, end: float | None = None) -> str:
    """``v`` to ``digits`` significant digits; ``"undet."`` if not finite; ``"≥ end"`` at
    the grid's end (a censored radius)."""
    if not np.isfinite(v):
        return "undet."
    if end is not None and v >= end:
        return f"\u2265 {end:g}"
    return _tidy(f"{v:.{digits}g}")


def _sci(v: float) -> str:
    """``2.56e8`` -> ``"2.6e8"``; plain ``g`` format between 0.01 and 1e4."""
    v = float(v)
    return f"{v:g}" if 1e-2 <= abs(v) < 1e4 else _tidy(f"{v:.1e}")


def _minus(text: str) -> str:
    """Typographic minus signs."""
    return text.replace("-", "\u2212")


def _slope(s) -> str:
    return _minus(format_slope(s))


def _end(sweep) -> float:
    """The largest offset of a profile sweep's grid (a radius there is censored)."""
    return float(sweep.config.deltas()[-1])


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


# ----------------------------------------------------------------------- records

@functools.lru_cache(maxsize=None)
def _json(name: str, stamp: float) -> dict:
    return json.loads((RECORDS / f"{name}.json").read_text())


def record(name: str) -> dict:
    """The committed record ``docs/records/NAME.json`` (parsed once per file version)."""
    return _json(name, (RECORDS / f"{name}.json").stat().st_mtime)


@functools.lru_cache(maxsize=None)
def _e2(name: str, stamp: float) -> dict:
    return e2_profile.sweeps_from_record(record(name))


def e2(name: str) -> dict:
    """``{key: ProfileSweep}`` of an E2 record (validated against its cache keys)."""
    return _e2(name, (RECORDS / f"{name}.json").stat().st_mtime)


def e3_profile_name(stem: str) -> str:
    return next(k for k, v in qb.PROFILE_RECORDS.items() if v["file"] == f"{stem}.json")


@functools.lru_cache(maxsize=None)
def _e3(stem: str, stamp: float) -> dict:
    return qb.load_profile_record(e3_profile_name(stem))


def e3(stem: str) -> dict:
    """``{(gate, expert): ProfileSweep}`` of an E3 profile record (checked by the library)."""
    return _e3(stem, (RECORDS / f"{stem}.json").stat().st_mtime)


def threshold() -> float:
    """Chapter 05's calibrated radius threshold ``c`` (units of ``nu``)."""
    return e2_profile.calibrate_radius(e2("e2_profile_calibration")).c


# ----------------------------------------------------------------------- E2 tables

def e2_calibration_rows() -> list[list[str]]:
    sweeps = e2("e2_profile_calibration")
    cal = e2_profile.calibrate_radius(sweeps)
    draws = cal.draws[np.isfinite(cal.draws)]
    positions = sorted({sw.config.position for sw in sweeps.values()})
    seeds = sorted({sw.config.seed for sw in sweeps.values()})
    return [[", ".join(positions), ", ".join(map(str, seeds)),
             ", ".join(_sci(x) for x in next(iter(sweeps.values())).x),
             f"{draws.size} of {cal.draws.size}", f"{np.median(draws):.2f} \u03bd",
             f"{cal.c:.2f} \u03bd ({cal.quantile:.0%} quantile)",
             _pct(float(np.mean(draws > CHI2_95)))]]


def _ends(values, end: float | None = None) -> list[str]:
    """The first and the last of a per-grid-point series, formatted."""
    return [_g(float(values[0]), 3, end), _g(float(values[-1]), 3, end)]


def e2_position_rows() -> tuple[list[float], list[list[str]]]:
    c = threshold()
    full, budget = e2("e2_profile_noise"), e2("e2_profile_noise_budget")
    rows = []
    for pos, sw in full.items():
        for fit in (sw, budget.get(pos)):
            if fit is None:
                continue
            rows.append([pos, heads.LEAF_CLASS[pos], str(fit.config.max_iter),
                         _pct(fit.certified_fraction()), *_ends(np.median(fit.max_excess(), 1)),
                         _slope(fit.max_excess_slope()),
                         *_ends(fit.median_radius(c), end=_end(fit))])
    return list(next(iter(full.values())).x), rows


def _reached(sw, eps: float, c: float) -> str:
    v = sw.effective_sample_complexity(eps, c)
    return _sci(v) if np.isfinite(v) else f"> {_sci(sw.x.max())}"


def e2_ridge_rows() -> tuple[list[float], list[list[str]], dict]:
    c = threshold()
    groups = (("calibration", "e2_profile_local_calibration"),
              ("asserted", "e2_profile_local"), ("held out", "e2_profile_local_heldout"))
    cal = e2("e2_profile_local_calibration")
    positions = list(dict.fromkeys(sw.config.position for sw in cal.values()))
    bands = {p: e2_profile.radius_band({k: sw for k, sw in cal.items()
                                        if sw.config.position == p}, c) for p in positions}
    rows = []
    for p in positions:
        for role, name in groups:
            for sw in e2(name).values():
                if sw.config.position == p:
                    rows.append([p, f"{sw.config.seed} ({role})", _pct(sw.certified_fraction()),
                                 *_ends(sw.median_radius(c), end=_end(sw)),
                                 _slope(sw.slope(c, resolved=True)),
                                 *(_reached(sw, e, c) for e in EPS)])
    return list(next(iter(e2("e2_profile_local").values())).x), rows, bands


def e2_nsweep_rows() -> tuple[list[int], list[list[str]]]:
    c = threshold()
    rows, ns = [], None
    for name in ("e2_profile_nsweep", "e2_profile_nsweep_low", "e2_profile_nsweep_heldout"):
        for sw in e2(name).values():
            ns = [int(n) for n in sw.n]
            rows.append([sw.config.position, str(sw.config.seed), _sci(sw.config.noise),
                         _pct(sw.certified_fraction()),
                         *_ends(sw.median_radius(c), end=_end(sw)), _slope(sw.slope(c))])
    return ns, rows


# ----------------------------------------------------------------------- E3 tables

def _gate(gate: str) -> str:
    return qb.gate_label(gate).removesuffix(" gate")


def e3_profile_rows() -> tuple[list[int], list[list[str]]]:
    prof = e3("e3_profile")
    rows = []
    for (gate, expert), sw in prof.items():
        try:
            slope = _slope(sw.slope(resolved=True))
        except ValueError:
            slope = "none: at the grid's end at every n"
        certified, fits = sw.certified_count()
        rows.append([_gate(gate), expert, f"{certified} of {fits}",
                     *_ends(sw.median_radius(), end=_end(sw)), slope])
    return [int(n) for n in next(iter(prof.values())).n], rows


def e3_noise_rows() -> list[list[str]]:
    seeds = {0: "e3_profile_noise", 1: "e3_profile_noise_heldout",
             **{s: f"e3_profile_noise_seed{s}" for s in qb.PROFILE_CALIBRATION_SEEDS}}
    prof = {s: e3(stem) for s, stem in seeds.items()}
    cal = [prof[s] for s in qb.PROFILE_CALIBRATION_SEEDS]
    bands = qb.profile_slope_bands(qb.calibration_slopes(cal, E3_INSIDE))
    rows = []
    for key in prof[0]:
        def shown(s):
            v = prof[s][key].slope_below(E3_INSIDE)
            return "fewer than 2 points" if v is None else _slope(v)
        band = bands[key]
        rows.append([_gate(key[0]), key[1], _minus(f"{qb.PROFILE_THEORY_SLOPE[key[0]]:+.3f}"),
                     "none" if band is None else _minus(f"[{band[0]:+.2f}, {band[1]:+.2f}]"),
                     shown(0), shown(1),
                     "; ".join(shown(s).split(" ")[0] for s in qb.PROFILE_CALIBRATION_SEEDS)])
    return rows


def e3_endpoint_rows() -> list[list[str]]:
    rows = []
    for name in ("full-grid", "budget2000"):
        for (gate, expert, spread), sw in qb.record_results(qb.load_record(name)).items():
            failed, fits = sw.failure_count()
            rows.append([name, _gate(gate), expert, f"{spread:g}",
                         str(sw.config.max_iter),
                         f"{len(sw.x)} ({_sci(sw.x.min())} \u2026 {_sci(sw.x.max())})",
                         f"{failed} of {fits}"])
    return rows


# ----------------------------------------------------------------------- the index

def describe(name: str) -> dict:
    """``what``, ``configuration``, ``command``, ``size`` of a record, from its own fields."""
    rec = record(name)
    size = f"{(RECORDS / f'{name}.json').stat().st_size / 1024:.0f} kB"
    if "positions" in rec:                                   # E2: scripts/record_e2_profile.py
        cfgs = [s.config for s in e2(name).values()]
        cfg = cfgs[0]
        positions = list(dict.fromkeys(c.position for c in cfgs))
        seeds = sorted({c.seed for c in cfgs})
        grid = rec.get("grid", "record")
        if cfg.sweep == "noise":
            axis = f"n = {cfg.n}, \u03bd = {_sci(cfg.noise_min)} \u2026 {_sci(cfg.noise_max)}"
        else:
            axis = f"n = {cfg.n_min} \u2026 {cfg.n_max}, \u03bd = {_sci(cfg.noise)}"
        lo, hi, k = cfg.offsets
        command = (f"python scripts/record_e2_profile.py --grid {grid} --seeds "
                   f"{','.join(map(str, seeds))} --positions {','.join(positions)}"
                   + (f" --max-iter {cfg.max_iter}" if cfg.max_iter != 200 else "")
                   + f" --out docs/records/{name}.json")
        return {"what": f"E2 (chapter 05): surplus-head profile, {', '.join(positions)}",
                "configuration": f"{cfg.sweep} sweep, {axis} on {cfg.points} points, "
                                 f"{cfg.replicates} replicates, {k} offsets in [{lo:g}, {hi:g}], "
                                 f"{cfg.max_iter} iterations; seed{'s' if len(seeds) > 1 else ''} "
                                 f"{', '.join(map(str, seeds))}",
                "command": command, "size": size}
    if rec.get("experiment") == "E5 teacher-student record":    # scripts/record_e5_teacher_student.py
        cfgs = [s["config"] for s in rec["sweeps"].values()]
        cfg = cfgs[0]
        positions = list(dict.fromkeys(c["position"] for c in cfgs))
        sets = ", ".join(f"{k} {s}\u2013{s + m - 1}" for k, (s, m) in rec["seed_sets"].items())
        return {"what": f"E5 (chapter 08): Adam-trained students of a 2-head teacher, "
                        f"{len(cfgs)} sweeps ({', '.join(positions)}; H = 2 and 3)",
                "configuration": f"n = {cfg['n_min']} \u2026 {cfg['n_max']} on {cfg['points']} "
                                 f"points, \u03bd = {_sci(cfg['noise'])} of the output variance, "
                                 f"{cfg['inits']} initialisations, {cfg['steps']} steps; "
                                 f"seeds: {sets}",
                "command": rec["command"], "size": size}
    sweeps = rec["sweeps"]
    cfg = sweeps[0]["config"]
    gates = list(dict.fromkeys(_gate(s["gate"]) for s in sweeps))
    experts = list(dict.fromkeys(s["expert"] for s in sweeps))
    if cfg["sweep"] == "noise":
        axis = f"n = {cfg['n']}, \u03bd = {_sci(cfg['noise_min'])} \u2026 {_sci(cfg['noise_max'])}"
    else:
        axis = f"n = {cfg['n_min']} \u2026 {cfg['n_max']}, \u03bd = {_sci(cfg['noise'])}"
    if "offsets" in cfg:
        lo, hi, k = cfg["offsets"]
        what = "E3 (chapter 06): profile of the over-fitted pair under quadratic gates"
        extra = f", {k} offsets in [{lo:g}, {hi:g}]"
    else:
        what = "E3 (chapter 06): end points of least-squares fits under quadratic gates"
        spreads = sorted({f"{s['spread']:g}" for s in sweeps})
        extra = f", spread{'s' if len(spreads) > 1 else ''} {', '.join(spreads)} (split start)"
    return {"what": what + f" ({len(sweeps)} sweeps; {', '.join(gates)} gate; "
                    f"{', '.join(experts)} experts)",
            "configuration": f"{cfg['sweep']} sweep, {axis} on {cfg['points']} points, "
                             f"{cfg['replicates']} replicates{extra}, {cfg['max_iter']} "
                             f"iterations; seed {cfg['seed']}",
            "command": rec["command"], "size": size}


def record_names() -> list[str]:
    return sorted(p.stem for p in RECORDS.glob("*.json"))


def index_rows() -> list[list[str]]:
    rows = []
    for name in record_names():
        d, rec = describe(name), record(name)
        rows.append([f"{name}.json", d["what"], d["configuration"], d["command"],
                     f"{rec['date']}, commit {rec['commit'][:7]}", d["size"]])
    return rows


INDEX_HEADERS = ["record", "what it is", "configuration", "regenerate (from the repository root)",
                 "written", "size"]


def records_readme() -> str:
    """The text of ``docs/records/README.md``."""
    lines = ["# Committed records", "",
             "Full-size runs too slow for a chapter, written by the commands below and read by",
             "chapters 05, 06 and 08 and by the book's *Results at a glance* page (`results.md`,",
             "rendered by `_ext/book_results.py`). Each record holds its configuration, the",
             "library versions, the git commit, the date and machine, and every replicate's",
             "results. Generated from the records' own fields by",
             "`.venv/bin/python _ext/book_results.py > docs/records/README.md`; regenerating a",
             "record reuses the library's on-disk cache (`$GATED_HMOE_CACHE`) when it holds the",
             "configuration, so a cold run takes the times on the book's status page.", "",
             "| " + " | ".join(INDEX_HEADERS) + " |",
             "|" + "---|" * len(INDEX_HEADERS)]
    for row in index_rows():
        cells = [f"`{row[0]}`", row[1], row[2], f"`{row[3]}`", row[4], row[5]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- the directive

def render(name: str) -> tuple[list[str], list[nodes.Node]]:
    """``(records read, nodes)`` of the table ``name``."""
    c = None if name in ("records", "e3-profile", "e3-noise", "e3-endpoints") else threshold()
    calib = ["e2_profile_calibration"]
    if name == "e2-calibration":
        used = calib
        node = table(["positions", "seeds", "n/\u03bd", "certified draws",
                      "median draw", "threshold c",
                      "draws above \u03c7\u00b2\u2081's 95% quantile"],
                     e2_calibration_rows())
    elif name == "e2-positions":
        used = calib + ["e2_profile_noise", "e2_profile_noise_budget"]
        xs, rows = e2_position_rows()
        node = table(["position", "leaf", "iterations", "certified",
                      f"largest excess / \u03bd, n/\u03bd = {_sci(xs[0])}",
                      f"\u2026 {_sci(xs[-1])}",
                      "its slope vs n/\u03bd", f"radius at c = {c:.1f}, n/\u03bd = {_sci(xs[0])}",
                      f"\u2026 {_sci(xs[-1])}"], rows)
    elif name == "e2-ridge":
        used = calib + ["e2_profile_local", "e2_profile_local_calibration",
                        "e2_profile_local_heldout"]
        xs, rows, bands = e2_ridge_rows()
        node = [table(["position", "seed", "certified", f"radius, n/\u03bd = {_sci(xs[0])}",
                       f"\u2026 {_sci(xs[-1])}", "radius slope vs n/\u03bd",
                       *(f"N_eff({e:g})" for e in EPS)], rows),
                nodes.paragraph(text="Bands of the radius slope, from the calibration seeds: "
                                + "; ".join(f"{p} " + _minus(f"[{lo:+.2f}, {hi:+.2f}]")
                                            for p, (lo, hi) in bands.items()) + ".")]
    elif name == "e2-nsweep":
        used = calib + ["e2_profile_nsweep", "e2_profile_nsweep_low", "e2_profile_nsweep_heldout"]
        ns, rows = e2_nsweep_rows()
        node = table(["position", "seed", "\u03bd", "certified", f"radius, n = {ns[0]}",
                      f"\u2026 {ns[-1]}", "radius slope vs n"], rows)
    elif name == "e3-profile":
        used = ["e3_profile"]
        ns, rows = e3_profile_rows()
        node = table(["gate", "expert", "certified", f"radius, n = {_sci(ns[0])}",
                      f"\u2026 {_sci(ns[-1])}",
                      "radius slope vs n (from the first n inside the grid)"], rows)
    elif name == "e3-noise":
        used = [n for n in record_names() if n.startswith("e3_profile_noise")]
        cal = "; ".join(map(str, qb.PROFILE_CALIBRATION_SEEDS))
        node = table(["gate", "expert", "theory", f"band (calibration seeds {cal})", "seed 0",
                      "seed 1 (held out)", f"calibration seeds {cal}"], e3_noise_rows())
    elif name == "e3-endpoints":
        used = ["e3_full_grid", "e3_budget2000"]
        node = table(["record", "gate", "expert", "spread", "iterations", "n/\u03bd points",
                      "fits not converged"], e3_endpoint_rows())
    else:
        used = record_names()
        node = table(["record", "what it is", "configuration", "written"],
                     [[r[0], r[1], r[2], r[4]] for r in index_rows()], code=(0,))
    note = nodes.paragraph()
    note += nodes.emphasis(text="Computed when the book was built, from " + ", ".join(
        f"{n}.json" for n in used) + ".")
    return used, [*(node if isinstance(node, list) else [node]), note]


class BookResults(SphinxDirective):
    """``{book-results} NAME``: a results table computed from the committed records."""

    required_arguments = 1
    NAMES = ("e2-calibration", "e2-positions", "e2-ridge", "e2-nsweep", "e3-profile",
             "e3-noise", "e3-endpoints", "records")

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        if name not in self.NAMES:
            raise self.error(f"book-results: unknown table {name!r}; one of {self.NAMES}")
        for path in RECORDS.glob("*.json"):
            self.env.note_dependency(str(path))
        return render(name)[1]


def _always_reread(app, env, added, changed, removed) -> list[str]:
    """The page is re-read on every build: its numbers depend on the library too."""
    return [doc for doc in ("results",) if doc in env.found_docs]


def setup(app):
    app.add_directive("book-results", BookResults)
    app.connect("env-get-outdated", _always_reread)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.stdout.write(records_readme())
