"""E5's declared CPU grid: the verdict logic on synthetic records whose slopes are known, the
record's validation, the figures, and one held-out grid point of the committed record
recomputed from the library (the reduced held-out configuration CI runs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gated_hmoe.experiments import e5_record as er
from gated_hmoe.experiments import e5_teacher_student as e5
from gated_hmoe.viz import style
from gated_hmoe.viz import teacher_student as vts

GRID = [100, 237, 562, 1333, 3162]


def _sweep(position, heads, seed_set, *, head=-0.5, excess=-1.0, split=-0.25, fate=None,
           rng=None):
    """A synthetic sweep with the given slopes (multiplicative noise of 2% per data set)."""
    cfg = er.config(position, heads, seed_set)
    rng = rng or np.random.default_rng(0)
    n = np.asarray(GRID, float)[:, None]
    S = cfg.seeds
    jitter = np.exp(0.02 * rng.standard_normal((len(GRID), S)))
    fate = fate or ("none" if heads == 2 else "split")
    noise_variance = 0.01
    picked = {"head_loss": (n / 100) ** head * jitter,
              "excess_risk": noise_variance * 0.1 * (n / 100) ** excess * jitter,
              "split_error": ((n / 100) ** split * jitter if fate == "split"
                              else np.full((len(GRID), S), np.nan))}
    points = [{"n": g, "seeds": list(range(cfg.seed, cfg.seed + S)), "pick": [0] * S,
               "fate": [[fate] * cfg.inits for _ in range(S)],
               "masses": [[[1.0] * heads] * cfg.inits for _ in range(S)],
               "head_loss": [[float(picked["head_loss"][k, s])] * cfg.inits for s in range(S)]}
              for k, g in enumerate(GRID)]
    teacher = e5.teacher_to_dict(cfg.teacher_layer(), position)
    return {"config": cfg.to_dict(), "grid": GRID, "noise_variance": noise_variance,
            "budget_hits": [0] * len(GRID), "runs_per_point": S * cfg.inits,
            "picked": {k: v.tolist() for k, v in picked.items()}, "points": points,
            "teacher": teacher}


def _record(**changes):
    """Every declared sweep: the declared theory slopes (linear positions' split pairs do not
    fall); ``changes[name] = kwargs`` overrides one sweep."""
    sweeps = {}
    for i, (p, h, s) in enumerate(er.declared()):
        kw = {} if p in er.RIDGE else {"split": 0.0, "head": -0.1 if h == 3 else -0.5}
        kw.update(changes.get(er.sweep_name(p, h, s), {}))
        sweeps[er.sweep_name(p, h, s)] = _sweep(p, h, s, rng=np.random.default_rng(i), **kw)
    return {"sweeps": sweeps}


@pytest.fixture(scope="module")
def synthetic():
    return _record()


def test_every_declared_statement_holds_on_a_record_with_the_declared_slopes(synthetic):
    found = er.statements(synthetic)
    assert len(found) == 4 * 2 + 4 * 2 + 2 * 3 + 2
    assert {st.verdict for st in found} == {"holds"}, [
        (st.prediction, st.position, st.quantity, st.verdict) for st in found
        if st.verdict != "holds"]
    rows = er.statement_rows(found)
    assert all(len(r) == len(er.STATEMENT_HEADERS) for r in rows)
    texts = er.glue_texts(synthetic)
    assert texts["none_mhsa"] == "8 of 8" and texts["fate_tied"] == "dead 0, split 8, other 0 of 8"
    assert texts["hl_tied_3"].startswith("-0.5") and "over 8 data sets" in texts["split_tied"]
    assert texts["byfate_tied"].startswith("split ") and texts["byfate_tied"].endswith("(8)")


def test_a_slope_outside_its_band_on_held_out_seeds_is_a_contradiction(synthetic):
    rec = _record(**{"G2-tied/H3/held-out": {"head": -0.1}})
    (st,) = [s for s in er.statements(rec) if s.prediction == 3 and s.position == "G2-tied"
             and s.quantity == "head_loss"]
    assert st.verdict == "contradicted"
    assert st.band[0] <= st.asserted["slope"] <= st.band[1]
    assert not st.band[0] <= st.heldout["slope"] <= st.band[1]


def test_linear_positions_whose_split_pair_is_pinned_contradict_prediction_4():
    rec = _record(**{f"MHSA/H3/{s}": {"split": -0.25, "head": -0.5} for s in er.SEED_SETS})
    (st,) = [s for s in er.statements(rec) if s.prediction == 4 and s.position == "MHSA"]
    assert st.verdict == "contradicted"


def test_fates_below_seven_of_eight_contradict_and_no_split_is_not_decided():
    rec = _record(**{"ridge/H3/asserted": {"fate": "other"}})
    found = [s for s in er.statements(rec) if s.prediction == 3 and s.position == "ridge"]
    verdicts = {s.quantity: s.verdict for s in found}
    assert verdicts["fate dead or split"] == "contradicted"
    assert verdicts["split_error"] == "not decided"        # no asserted pick splits


def test_incomplete_families_make_no_statement(synthetic):
    rec = {"sweeps": {k: v for k, v in synthetic["sweeps"].items()
                      if not k.startswith("ridge/")}}
    assert not [s for s in er.statements(rec) if s.position == "ridge"]


def test_load_checks_every_sweep_against_the_declaration(tmp_path, synthetic):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(synthetic))
    assert set(er.load(path)["sweeps"]) == set(synthetic["sweeps"])
    bad = json.loads(path.read_text())
    bad["sweeps"]["MHSA/H3/asserted"]["config"]["steps"] = 500
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="MHSA/H3/asserted"):
        er.load(path)
    bad["sweeps"]["MHSA/H4/asserted"] = bad["sweeps"].pop("MHSA/H3/asserted")
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="not declared"):
        er.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        er.load(path)
    with pytest.raises(ValueError, match="no record at"):
        er.load(tmp_path / "missing.json")


@pytest.mark.parametrize("args, field", [(("MHSA", 3, "tuning"), "seed_set"),
                                         (("G5", 3, "asserted"), "position"),
                                         (("MHSA", 4, "asserted"), "heads")])
def test_config_names_the_bad_argument(args, field):
    with pytest.raises(ValueError, match=field):
        er.config(*args)


def test_build_names_unknown_sweeps():
    with pytest.raises(ValueError, match="only names unknown sweeps"):
        er.build(only=["MHSA/H9/asserted"])


def test_figures_follow_the_book_style(synthetic):
    figs = [vts.rate_grid(er.series(synthetic, "head_loss"), ylabel="head-level Voronoi loss",
                          theory=-0.5)[0],
            vts.rate_grid(er.series(synthetic, "excess_risk"),
                          ylabel="test excess risk / noise variance", theory=-1.0)[0],
            vts.fate_bars(er.fate_table(synthetic))[0],
            vts.split_panel(er.series(synthetic, "split_error", heads=(3,), fate="split"),
                            theory=-0.25)[0],
            vts.heads_view(er.point_view(synthetic, "G2-tied", 3, 3162))]
    for fig in figs:
        style.check(fig)


def test_a_held_out_point_of_the_record_is_reproduced_by_the_library():
    """MHSA, H = 3, held-out seeds 201-203, n = 100: retrained from scratch, every run's
    training loss, excess risk and head loss equal the committed record's to 1e-6."""
    record = er.load()
    name = er.sweep_name("MHSA", 3, "held-out")
    sweep = record["sweeps"][name]
    cfg = er.config("MHSA", 3, "held-out")
    teacher = cfg.teacher_layer()
    point = e5.compute_point(cfg, teacher, sweep["noise_variance"], GRID[0])
    stored = sweep["points"][0]
    assert point["n"] == stored["n"] == GRID[0]
    for key in ("train_loss", "excess_risk", "head_loss"):
        got, want = np.asarray(point[key], float), np.asarray(stored[key], float)
        assert np.allclose(got, want, rtol=1e-6, atol=0), key
    assert point["fate"] == stored["fate"] and point["pick"] == stored["pick"]
    assert point["steps"] == stored["steps"]
    assert math.isclose(sweep["noise_variance"], 0.01 * sweep["output_variance"], rel_tol=1e-12)


def test_a_band_that_contains_the_competing_slope_decides_nothing():
    """Calibration data sets spread so widely that the head-loss band reaches -1/4."""
    rec = _record()
    sweep = rec["sweeps"]["G2-tied/H3/calibration"]
    values = np.asarray(sweep["picked"]["head_loss"])
    values[:, 0] *= (np.asarray(GRID) / 100.0) ** 0.8          # one data set rising
    values[:, 1] *= (np.asarray(GRID) / 100.0) ** -0.8
    sweep["picked"]["head_loss"] = values.tolist()
    (st,) = [s for s in er.statements(rec) if s.prediction == 3 and s.position == "G2-tied"
             and s.quantity == "head_loss"]
    assert st.band[0] <= er.COMPETING["head_loss"] <= st.band[1]
    assert st.verdict == "not decided" and "-0.25" in st.note


def test_pooled_fates_count_every_seed_set(synthetic):
    assert er.pooled_fates(synthetic, "MHSA") == {"none": 0, "dead": 0, "split": 14, "other": 0}
    assert er.pooled_fates(synthetic, "MHSA", heads=2)["none"] == 14
