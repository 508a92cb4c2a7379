r"""E5's declared CPU grid, its committed record and the verdicts of its declaration.

The grid (``docs/declarations/e5_teacher_student.md``, section "The grid run on CPU"):
positions :data:`POSITIONS` with ``H = 3`` (one surplus head) and ``H = 2`` (exactly
specified) students of the ``H* = 2`` teacher ``teacher_from_seed(0)``, ``n`` on 5
log-spaced points from 100 to 3162, ``nu = 1e-2`` of the teacher's output variance, 4
initialisations per data set, a budget of 2000 Adam steps, and three seed sets
(:data:`SEED_SETS`): calibration seeds set the bands, asserted and held-out seeds are
checked against them.

A band is :func:`gated_hmoe.experiments.e1_profile.band_from_calibration` of the calibration
sweep's slope around the declared theory slope :data:`THEORY`; a statement *holds* when the
slope (the median curve's least-squares slope) of the asserted and of the held-out seeds lies
in the band, and is *not decided* when the band contains the competing slope
:data:`COMPETING` (it could not tell the two apart). Slopes
are those of the practitioner's pick (lowest training loss of the initialisations of a data
set), bootstrapped over whole seed curves (:func:`e5_teacher_student.slope_record`).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from pathlib import Path

import numpy as np

from gated_hmoe.estimation import head_voronoi
from gated_hmoe.experiments import e1_profile, runner
from gated_hmoe.experiments import e5_teacher_student as e5

#: Gate positions run on CPU: two linear in ``W_V`` (MHSA, the literal G1 gate) and the two
#: ridge forms (G2 tied to the values; a value activation).
POSITIONS: tuple[str, ...] = ("MHSA", "G1", "G2-tied", "ridge")
#: The ridge positions among :data:`POSITIONS` (prediction 3; the others: prediction 4).
RIDGE: tuple[str, ...] = ("G2-tied", "ridge")
#: Student sizes: one surplus head, exactly specified.
HEADS: tuple[int, ...] = (3, 2)
#: Seed sets: name -> (first seed, number of data sets).
SEED_SETS: dict[str, tuple[int, int]] = {"calibration": (101, 3), "asserted": (0, 8),
                                         "held-out": (201, 3)}
#: The grid and training settings shared by every sweep.
GRID: dict = dict(n_min=100, n_max=3162, points=5, noise=1e-2, inits=4, steps=2000)
#: Declared theory slopes against ``n``.
THEORY: dict[str, float] = {"head_loss": -0.5, "excess_risk": -1.0, "split_error": -0.25}
#: The slope each band-based statement must be told apart from (the declaration's addendum):
#: a band that contains it decides nothing.
COMPETING: dict[str, float] = {"head_loss": -0.25, "excess_risk": -0.5, "split_error": 0.0}
#: Prediction 4's bound: a split error whose slope interval lies above this does not fall.
NOT_FALLING: float = -0.125
#: Share of picks that must show the declared fate at the largest ``n`` (7 of 8).
FATE_SHARE: float = 7 / 8
#: Where the committed record lives.
RECORD: Path = Path(__file__).resolve().parents[2] / "docs" / "records" / "e5_teacher_student.json"


def config(position: str, heads: int, seed_set: str) -> e5.TeacherStudentConfig:
    """The declared configuration of one sweep."""
    if seed_set not in SEED_SETS:
        raise ValueError(f"seed_set must be one of {list(SEED_SETS)}, got {seed_set!r}")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {list(POSITIONS)}, got {position!r}")
    if heads not in HEADS:
        raise ValueError(f"heads must be one of {list(HEADS)}, got {heads!r}")
    seed, seeds = SEED_SETS[seed_set]
    return e5.TeacherStudentConfig(position=position, heads=heads, seed=seed, seeds=seeds,
                                   **GRID).validate()


def sweep_name(position: str, heads: int, seed_set: str) -> str:
    """The key of a sweep in the record: ``"MHSA/H3/asserted"``."""
    return f"{position}/H{heads}/{seed_set}"


def declared() -> list[tuple[str, int, str]]:
    """Every declared sweep, in the order the record holds them."""
    return [(p, h, s) for p in POSITIONS for h in HEADS for s in SEED_SETS]


def _compact(result: dict) -> dict:
    """A sweep's result without its ``versions`` (the record holds them once), floats
    rounded to 7 significant digits."""
    def rounded(v):
        if isinstance(v, float) and math.isfinite(v) and v != 0.0:
            return float(f"{v:.7g}")
        if isinstance(v, list):
            return [rounded(u) for u in v]
        if isinstance(v, dict):
            return {k: rounded(u) for k, u in v.items()}
        return v
    return rounded({k: v for k, v in result.items() if k != "versions"})


def build(*, cache_dir=None, progress: bool = True, only: list[str] | None = None) -> dict:
    """Run (or read from the cache) every declared sweep, or those named in ``only``
    (:func:`sweep_name` keys), and return the record: ``sweeps`` by name, the library
    versions, the commit, the date and the machine."""
    names = {sweep_name(*d): d for d in declared()}
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"only names unknown sweeps {unknown}; known: {sorted(names)}")
    sweeps, seconds = {}, 0.0
    for name, d in names.items():
        if only and name not in only:
            continue
        result = e5.run(config(*d), cache_dir=cache_dir, progress=progress)
        seconds += sum(p["seconds"] for p in result["points"])
        sweeps[name] = _compact(result)
    return runner.json_safe({
        "experiment": "E5 teacher-student record", "declaration":
            "docs/declarations/e5_teacher_student.md", "grid": GRID, "seed_sets": SEED_SETS,
        "command": "python scripts/record_e5_teacher_student.py",
        "sweeps": sweeps, "versions": runner.versions(), **runner.source_commit(),
        "date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
        "compute_seconds": seconds})


def load(path=None) -> dict:
    """The committed record (or ``path``), every sweep's configuration checked against the
    declared one; ``ValueError`` naming the sweep or the file otherwise."""
    file = Path(path) if path is not None else RECORD
    record = runner.read_record(file, label="E5 record",
                                writer="scripts/record_e5_teacher_student.py",
                                fields=("sweeps",))
    if not isinstance(record["sweeps"], dict):
        raise ValueError(f"E5 record {file}: 'sweeps' is not an object")
    names = {sweep_name(*d): d for d in declared()}
    for name, sweep in record["sweeps"].items():
        if name not in names:
            raise ValueError(f"E5 record {file}: sweep {name!r} is not declared")
        want = config(*names[name]).to_dict()
        if sweep.get("config") != want:
            raise ValueError(f"E5 record {file}: sweep {name!r} has another configuration "
                             "than the declared one")
    return record


# ----------------------------------------------------------------------- summaries

def picked(sweep: dict, quantity: str, *, fate: str | None = None) -> np.ndarray:
    """``(points, seeds)``: the pick's ``quantity`` (``head_loss``, ``excess_risk``,
    ``split_error``; the excess risk in units of the noise variance); ``fate``: only the data
    sets whose pick has this fate at the largest ``n`` (whole curves)."""
    values = np.asarray(sweep["picked"][quantity], float)
    if quantity == "excess_risk":
        values = values / sweep["noise_variance"]
    if fate is not None:
        values = values[:, fates(sweep)[-1] == fate]
    return values


def fates(sweep: dict) -> np.ndarray:
    """``(points, seeds)``: the pick's fate per grid point and data set."""
    return np.array([[p["fate"][s][i] for s, i in enumerate(p["pick"])]
                     for p in sweep["points"]])


def slope(sweep: dict, quantity: str, *, fate: str | None = None) -> dict | None:
    """The slope record of :func:`picked` (``None`` without a data set)."""
    values = picked(sweep, quantity, fate=fate)
    if values.shape[1] == 0:
        return None
    return e5.slope_record(sweep["grid"], values)


@dataclasses.dataclass(frozen=True)
class Statement:
    """One declared statement on one sweep family (a position and student size): what is
    measured, the theory value, the band from calibration (``None``: not set), the slope
    and interval on the asserted and the held-out seeds (``None``: no data set qualifies),
    and the verdict (``"holds"``, ``"contradicted"``, ``"not decided"``)."""

    prediction: int
    position: str
    heads: int
    quantity: str
    theory: float | None
    band: tuple[float, float] | None
    asserted: dict | None
    heldout: dict | None
    verdict: str
    note: str = ""


def _finite(s: dict | None) -> bool:
    return s is not None and math.isfinite(s["slope"]) and all(map(math.isfinite, s["ci"]))


def band(record: dict, position: str, heads: int, quantity: str, *,
         fate: str | None = None) -> tuple[float, float] | None:
    """The declared band of ``quantity`` from the calibration sweep (``None`` where its
    interval is undefined)."""
    cal = slope(record["sweeps"][sweep_name(position, heads, "calibration")], quantity,
                fate=fate)
    if not _finite(cal):
        return None
    return e1_profile.band_from_calibration([(cal["slope"], tuple(cal["ci"]))],
                                            THEORY[quantity])


def _in_band(s: dict | None, b) -> bool | None:
    if b is None or not _finite(s):
        return None
    return b[0] <= s["slope"] <= b[1]


def _verdict(checks_: list[bool | None]) -> str:
    if any(c is False for c in checks_):
        return "contradicted"
    if checks_ and all(c is True for c in checks_):
        return "holds"
    return "not decided"


def _band_statement(record, prediction, position, heads, quantity, *, fate=None, note=""):
    sw = record["sweeps"]
    b = band(record, position, heads, quantity, fate=fate)
    a = slope(sw[sweep_name(position, heads, "asserted")], quantity, fate=fate)
    h = slope(sw[sweep_name(position, heads, "held-out")], quantity, fate=fate)
    verdict = _verdict([_in_band(a, b), _in_band(h, b)])
    if b is not None and b[0] <= COMPETING[quantity] <= b[1]:
        verdict = "not decided"
        note = (note + "; " if note else "") + (f"the band contains {COMPETING[quantity]:+g}")
    return Statement(prediction, position, heads, quantity, THEORY[quantity], b, a, h,
                     verdict, note)


def fate_share(sweep: dict, allowed: tuple[str, ...]) -> float:
    """Share of the picks whose fate at the largest ``n`` is one of ``allowed``."""
    last = fates(sweep)[-1]
    return float(np.mean(np.isin(last, allowed)))


def _fate_statement(record, prediction, position, heads, allowed):
    sw = record["sweeps"]
    shares = [fate_share(sw[sweep_name(position, heads, s)], allowed)
              for s in ("asserted", "held-out")]
    verdict = _verdict([v >= FATE_SHARE - 1e-12 for v in shares])
    return Statement(prediction, position, heads, "fate " + " or ".join(allowed), None, None,
                     {"share": shares[0]}, {"share": shares[1]}, verdict)


def _not_pinned(record, position) -> Statement:
    """Prediction 4: the split error of the picks that split does not fall, and their head
    loss falls more slowly than the exactly specified band allows."""
    sw = record["sweeps"]
    out = []
    b2 = band(record, position, 2, "head_loss")
    for s in ("asserted", "held-out"):
        split = slope(sw[sweep_name(position, 3, s)], "split_error", fate="split")
        loss = slope(sw[sweep_name(position, 3, s)], "head_loss", fate="split")
        flat = None if not _finite(split) else (
            split["ci"][0] <= 0 <= split["ci"][1] or split["ci"][0] > NOT_FALLING)
        slow = None if (b2 is None or not _finite(loss)) else loss["ci"][0] > b2[1]
        out.append((split, loss, flat, slow))
    verdict = _verdict([c for o in out for c in o[2:]])
    return Statement(4, position, 3, "split error and head loss of split picks", None, b2,
                     {"split_error": out[0][0], "head_loss": out[0][1]},
                     {"split_error": out[1][0], "head_loss": out[1][1]}, verdict)


def statements(record: dict) -> list[Statement]:
    """Every declared statement that the record's sweeps allow, in the declaration's order."""
    def complete(position, heads):
        return all(sweep_name(position, heads, s) in record["sweeps"] for s in SEED_SETS)

    out = []
    for p in POSITIONS:
        if complete(p, 2):
            out.append(_fate_statement(record, 1, p, 2, ("none",)))
            out.append(_band_statement(record, 1, p, 2, "head_loss"))
    for p in POSITIONS:
        for h in HEADS:
            if complete(p, h):
                out.append(_band_statement(record, 2, p, h, "excess_risk"))
    for p in RIDGE:
        if complete(p, 3):
            out.append(_band_statement(record, 3, p, 3, "head_loss"))
            out.append(_band_statement(record, 3, p, 3, "split_error", fate="split",
                                       note="picks that split at the largest n"))
            out.append(_fate_statement(record, 3, p, 3, ("dead", "split")))
    for p in POSITIONS:
        if p not in RIDGE and complete(p, 3) and complete(p, 2):
            out.append(_not_pinned(record, p))
    return out


def _slope_cell(s: dict | None) -> str:
    if s is None:
        return "no data set"
    if "share" in s:
        return f"{s['share']:.2f} of picks"
    if "split_error" in s:
        return f"split error {_slope_cell(s['split_error'])}; head loss {_slope_cell(s['head_loss'])}"
    return s["label"]


def statement_rows(found: list[Statement]) -> list[list[str]]:
    """Table rows (prediction, position, H, what, band, asserted seeds, held-out seeds,
    verdict) of :func:`statements`, as text."""
    rows = []
    for st in found:
        band_text = "not set" if st.band is None else f"[{st.band[0]:+.2f}, {st.band[1]:+.2f}]"
        if st.quantity.startswith("fate"):
            band_text = f"share >= {FATE_SHARE:.3f}"
        what = st.quantity.replace("_", " ")
        if st.theory is not None:
            what += f" slope (theory {st.theory:+g})"
        verdict = st.verdict + (f" ({st.note})" if st.note else "")
        rows.append([str(st.prediction), st.position, str(st.heads), what, band_text,
                     _slope_cell(st.asserted), _slope_cell(st.heldout), verdict])
    return rows


STATEMENT_HEADERS: tuple[str, ...] = ("prediction", "position", "H", "what", "band",
                                      "asserted seeds 0-7", "held-out seeds 201-203",
                                      "verdict")


def teacher_rows(record: dict, *, seed_set: str = "asserted", heads: int = 3) -> list[list[str]]:
    """Per position: the teacher's heads' masses, the largest ``|cos|`` between its heads
    (:func:`e5_teacher_student.head_separation`), its output variance and the noise variance,
    as text."""
    rows = []
    for p in POSITIONS:
        sweep = record["sweeps"].get(sweep_name(p, heads, seed_set))
        if sweep is None:
            continue
        teacher = e5.teacher_from_dict(sweep["teacher"])
        masses = ", ".join(f"{m:.2f}" for m in teacher_masses(sweep))
        rows.append([p, masses, f"{e5.head_separation(teacher):.2f}",
                     f"{sweep['output_variance']:.3g}", f"{sweep['noise_variance']:.3g}"])
    return rows


TEACHER_HEADERS: tuple[str, ...] = ("position", "heads' masses ‖W_V W_O‖",
                                    "largest |cos| between heads", "output variance",
                                    "noise variance ν")


def markdown_table(headers, rows) -> str:
    """A Markdown table of text cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


#: Short keys of the positions in glued names.
KEYS: dict[str, str] = {"MHSA": "mhsa", "G1": "g1", "G2-tied": "tied", "ridge": "act"}


def _label(s: dict | None) -> str:
    return "no data set" if s is None else s["label"].removeprefix("slope ")


def glue_texts(record: dict, *, seed_set: str = "asserted") -> dict[str, str]:
    """Text snippets a chapter glues, per position ``k`` of :data:`KEYS` with a sweep in the
    record: ``hl_k_H`` and ``er_k_H`` (the pick's head-loss and excess-risk slopes),
    ``budget_k_H`` (runs at the step budget over the grid), ``fate_k`` (the ``H = 3`` picks'
    fates at the largest ``n``), ``none_k`` (``H = 2`` picks with every teacher head
    recovered at the largest ``n``), ``split_k`` (the split error's slope over the picks
    that split at the largest ``n``) and ``byfate_k`` (the ``H = 3`` picks' median head loss
    at the largest ``n`` per fate, with the number of data sets)."""
    out = {}
    for p, k in KEYS.items():
        for h in HEADS:
            sweep = record["sweeps"].get(sweep_name(p, h, seed_set))
            if sweep is None:
                continue
            out[f"hl_{k}_{h}"] = _label(slope(sweep, "head_loss"))
            out[f"er_{k}_{h}"] = _label(slope(sweep, "excess_risk"))
            out[f"budget_{k}_{h}"] = (f"{sum(sweep['budget_hits'])} of "
                                      f"{sweep['runs_per_point'] * len(sweep['grid'])}")
            last = fates(sweep)[-1]
            if h == 3:
                out[f"fate_{k}"] = ", ".join(f"{f} {int(np.sum(last == f))}" for f in
                                             head_voronoi.FATES[1:]) + f" of {last.size}"
                split = slope(sweep, "split_error", fate="split")
                out[f"split_{k}"] = ("no pick splits" if split is None else
                                     f"{_label(split)} over {int(np.sum(last == 'split'))} "
                                     "data sets")
                loss = picked(sweep, "head_loss")[-1]
                out[f"byfate_{k}"] = "; ".join(
                    f"{f} {np.median(loss[last == f]):.3f} ({int(np.sum(last == f))})"
                    for f in head_voronoi.FATES[1:] if np.any(last == f))
            else:
                out[f"none_{k}"] = f"{int(np.sum(last == 'none'))} of {last.size}"
    return out


# ----------------------------------------------------------------------- what figures draw

def series(record: dict, quantity: str, *, seed_set: str = "asserted",
           heads: tuple[int, ...] = HEADS, fate: str | None = None) -> dict:
    """``{position: {H: {"n", "values" (points, seeds), "slope"}}}`` for the sweeps of
    ``seed_set`` in the record (:func:`picked`, :func:`slope`); positions in
    :data:`POSITIONS` order, those without a sweep left out."""
    out = {}
    for p in POSITIONS:
        for h in heads:
            sweep = record["sweeps"].get(sweep_name(p, h, seed_set))
            if sweep is None:
                continue
            out.setdefault(p, {})[h] = {"n": list(sweep["grid"]),
                                        "values": picked(sweep, quantity, fate=fate),
                                        "slope": slope(sweep, quantity, fate=fate)}
    return out


def fate_table(record: dict, *, seed_set: str = "asserted", heads: int = 3) -> dict:
    """``{position: {"n": grid, "shares": {fate: share per n}}}``: the fates of the picks."""
    out = {}
    for p in POSITIONS:
        sweep = record["sweeps"].get(sweep_name(p, heads, seed_set))
        if sweep is None:
            continue
        f = fates(sweep)
        out[p] = {"n": list(sweep["grid"]),
                  "shares": {k: np.mean(f == k, axis=1).tolist() for k in head_voronoi.FATES}}
    return out


def pooled_fates(record: dict, position: str, *, heads: int = 3) -> dict[str, int]:
    """Counts of each fate of the picks at the largest ``n`` over every seed set in the
    record (calibration, asserted and held-out data sets together)."""
    counts = {f: 0 for f in head_voronoi.FATES}
    for s in SEED_SETS:
        sweep = record["sweeps"].get(sweep_name(position, heads, s))
        if sweep is not None:
            last = fates(sweep)[-1]
            for f in counts:
                counts[f] += int(np.sum(last == f))
    return counts


def teacher_masses(sweep: dict) -> list[float]:
    """The teacher's heads' masses ``||W_V W_O||_F`` (the sweep's stored teacher)."""
    teacher = e5.teacher_from_dict(sweep["teacher"])
    return head_voronoi.head_maps(teacher.attn, name="teacher").mass.tolist()


def point_view(record: dict, position: str, heads: int, n: int, *,
               seed_set: str = "asserted") -> dict:
    """One grid point as the explorer draws it: data ``seeds``, per data set the ``pick``,
    its ``fate`` and head ``masses``, every initialisation's ``head_loss``, the
    ``teacher_masses`` and a ``title``."""
    sweep = record["sweeps"][sweep_name(position, heads, seed_set)]
    point = sweep["points"][sweep["grid"].index(n)]
    picks = point["pick"]
    return {"seeds": point["seeds"], "pick": picks,
            "fate": [point["fate"][s][i] for s, i in enumerate(picks)],
            "masses": [point["masses"][s][i] or [] for s, i in enumerate(picks)],
            "head_loss": point["head_loss"], "teacher_masses": teacher_masses(sweep),
            "title": f"{position}, H = {heads}, n = {n}"}


__all__ = ["COMPETING", "FATE_SHARE", "GRID", "HEADS", "NOT_FALLING", "POSITIONS", "RECORD", "RIDGE",
           "SEED_SETS", "STATEMENT_HEADERS", "Statement", "TEACHER_HEADERS", "THEORY", "band", "build", "config", "declared",
           "fate_share", "fate_table", "fates", "pooled_fates", "glue_texts", "KEYS", "load", "markdown_table", "picked", "point_view", "series", "slope",
           "statement_rows", "statements", "sweep_name", "teacher_masses", "teacher_rows"]
