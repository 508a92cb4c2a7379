"""The dead-head branch of an attention profile (both components of the confidence set) and
the user's teacher of ``attention-profile`` (a file or a seed)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from gated_hmoe import cli
from gated_hmoe.estimation import head_profile
from gated_hmoe.experiments import e2_profile, runner
from gated_hmoe.models import heads

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "records"


def _tiny(position, **kw):
    fields = dict(position=position, sweep="noise", n=32, noise_min=1e-11, noise_max=1e-9,
                  points=2, replicates=2, offsets=(0.1, 1.0, 2))
    return e2_profile.AttentionProfileConfig(**{**fields, **kw}).validate()


# ------------------------------------------------------------------ the dead-head branch

@pytest.mark.parametrize("position", ["MHSA", "G2-tied", "ridge"])
def test_dead_head_fit_reproduces_noiseless_teacher_data(position):
    teacher = heads.layer_teacher(position, 2)
    x, _ = heads.sample_inputs(jax.random.key(0), n=24, n_tokens=3, d=2)
    y = heads.batched_output(teacher, x, position)
    fits = head_profile.dead_head_fits(np.asarray(x)[None], np.asarray(y)[None],
                                       position=position, teacher=teacher)
    assert fits["certified"].tolist() == [True] and fits["ssr"][0] < 1e-20


def test_a_surplus_head_with_a_zero_leaf_outputs_nothing():
    # the branch the exactly specified fit stands for: any router, zero leaf
    for position in ("MHSA", "G2-tied", "ridge", "G1", "G5"):
        teacher = heads.layer_teacher(position, 2)
        rng = np.random.default_rng(0)
        student = {k: (v if k == "g5" else np.concatenate([v, rng.normal(size=v[:1].shape)]))
                   for k, v in teacher.items()}
        student["wv"][2] = 0.0
        if "b" in student:
            student["b"][2] = 0.0
        x, _ = heads.sample_inputs(jax.random.key(1), n=16, n_tokens=3, d=2)
        assert heads.max_output_gap(student, teacher, position, x) < 1e-13, position


def test_dead_head_excess_is_measured_from_the_smaller_minimum():
    e = head_profile.dead_head_excess(np.array([5.0, 3.0, np.nan, 4.0]),
                                      np.array([True, True, True, False]),
                                      np.array([4.0, 4.0, 4.0, 1.0]), 0.5)
    assert e[:2].tolist() == [2.0, 0.0] and np.isnan(e[2:]).all()


@pytest.mark.parametrize("position", ["MHSA", "G2-tied"])
def test_both_components_are_reported_per_grid_point(position, tmp_path):
    """Measured (seed 0, n = 32, 3 tokens, 2 replicates, n/nu = 3.2e10 and 3.2e12): the
    dead-head excess is O(nu) -- about 5-20 nu, and the same at both n/nu (the branch holds
    the teacher, so the excess is a null draw that does not grow with n/nu) -- while the chi2(1)
    threshold 3.84 rejects it: only what holds robustly is asserted here."""
    cfg = _tiny(position)
    sweep = e2_profile.run_profiles(cfg, cache_dir=tmp_path, progress=False)
    dead = e2_profile.dead_head_excess(sweep)
    assert dead.shape == (2, 2) and np.isfinite(dead).all()
    assert (dead >= 0).all() and (dead < 100).all(), dead
    ratio = dead[1] / np.maximum(dead[0], 1e-9)
    assert np.all((ratio > 1 / 3) & (ratio < 3)), dead          # not growing like n/nu
    report = json.loads(json.dumps(e2_profile.report(sweep)))   # strict JSON
    r, _ = sweep.radii()
    for i, point in enumerate(report["points"]):
        b = point["branches"]
        assert b["local_radius"] == pytest.approx(r[i].tolist())
        assert b["dead_head"]["excess"] == pytest.approx(dead[i].tolist())
        assert b["dead_head"]["rejected"] == [bool(v > cfg.c) for v in dead[i]]
        assert b["dead_head"]["threshold"] == cfg.c
        assert point["dead_head_certified"] == [True, True]
    assert report["teacher"]["source"] == "declared"
    assert "rejected in" in e2_profile.branch_lines(sweep)[0]


def test_profiles_cached_before_the_dead_head_are_completed_not_recomputed(tmp_path):
    cfg = _tiny("MHSA", points=1, noise_min=1e-9, noise_max=1e-9)
    first = e2_profile.run_profiles(cfg, cache_dir=tmp_path, progress=False)
    store = runner.Store("profile", tmp_path)
    folder = store.folder / cfg.key()
    (entry,) = list(folder.glob("dead_head_v*"))
    entry.unlink()
    point = next(folder.glob("point_*"))
    record = json.loads(point.read_text())
    record["excess"][0][0] = 123.0                  # a marker: this entry must be reused
    point.write_text(json.dumps(record))
    again = e2_profile.run_profiles(cfg, cache_dir=tmp_path, progress=False)
    assert again.points[0]["excess"][0][0] == 123.0
    np.testing.assert_allclose(e2_profile.dead_head_excess(again),
                               e2_profile.dead_head_excess(first), rtol=1e-9)


def test_declared_teacher_keeps_the_cache_keys_of_the_committed_records():
    for path in sorted(RECORDS.glob("e2_profile*.json")):
        record = json.loads(path.read_text())
        if "positions" not in record:
            continue
        sweeps = e2_profile.sweeps_from_record(record)      # every key still matches
        sweep = next(iter(sweeps.values()))
        assert "teacher_seed" not in sweep.config.to_dict()
        dead = e2_profile.dead_head_excess(sweep)      # stored whole or not at all
        assert np.isnan(dead).all() or np.isfinite(dead).all(), path.name


# ------------------------------------------------------------------ the user's teacher

def test_seeded_teacher_follows_its_law():
    for position in heads.LAYER_POSITIONS:
        t = heads.seeded_teacher(position, 7)
        assert {k: v.shape for k, v in t.items()} == heads.teacher_shapes(position)
        assert max(heads.head_cosines(t).values()) <= heads.SEEDED_MAX_COSINE
        again = heads.seeded_teacher(position, 7)
        assert all(np.array_equal(t[k], again[k]) for k in t)
        if position in heads.MASSFUL:
            assert np.all(np.abs(t["wo"]) >= heads.SEEDED_MIN_MASS)
    a, b = heads.seeded_teacher("MHSA", 1), heads.seeded_teacher("MHSA", 2)
    assert not np.array_equal(a["wk"], b["wk"])
    # the declared teacher is not a draw of the law (stated apart)
    assert heads.head_cosines(heads.layer_teacher("MHSA"))["wk"] > heads.SEEDED_MAX_COSINE


def test_declared_teacher_has_the_documented_shapes():
    for position in heads.LAYER_POSITIONS:
        t = heads.layer_teacher(position, 2)
        assert {k: v.shape for k, v in t.items()} == heads.teacher_shapes(position)


def test_teacher_file_round_trips(tmp_path):
    for position in heads.LAYER_POSITIONS:
        t = heads.seeded_teacher(position, 4)
        path = tmp_path / f"{position}.json"
        path.write_text(json.dumps(heads.teacher_to_dict(t)))
        back = heads.load_teacher(str(path), position)
        assert sorted(back) == sorted(t)
        assert all(np.array_equal(back[k], t[k]) for k in t)


@pytest.mark.user_input
def test_bad_teacher_names_the_field():
    good = heads.teacher_to_dict(heads.layer_teacher("ridge", 2))
    cases = [({k: v for k, v in good.items() if k != "b"}, "field 'b' is missing"),
             ({**good, "t": [[1.0, 2.0]] * 2}, "field 't' is not a weight of position ridge"),
             ({**good, "wo": [1.0, 2.0]}, r"field 'wo' must have shape \(2, 2\), got \(2,\)"),
             ({**good, "wk": [[[1.0, float("nan")], [0.0, 1.0]]] * 2}, "field 'wk' must be finite"),
             ({**good, "wv": [[[0.0, 0.0], [0.0, 0.0]], good["wv"][1]],
               "b": [[0.0, 0.0], good["b"][1]]}, "field 'wv' of head 0 is zero"),
             ({**good, "wv": "abc"}, "field 'wv' must be numbers"),
             ([1, 2], "must be a JSON object")]
    for bad, match in cases:
        with pytest.raises(ValueError, match="teacher " + match if "JSON" not in match
                           else match):
            heads.teacher_from_dict("ridge", bad)
    with pytest.raises(ValueError, match="mutually exclusive"):
        e2_profile.AttentionProfileConfig(teacher_weights=good, teacher_seed=1).validate()
    with pytest.raises(TypeError, match="teacher_seed must be an integer"):
        e2_profile.AttentionProfileConfig(teacher_seed=1.5).validate()


def _argv(tmp_path, *extra):
    return ["attention-profile", "--position", "G2-tied", "--sweep", "noise", "--n", "24",
            "--noise-min", "1e-9", "--noise-max", "1e-9", "--points", "1", "--replicates", "1",
            "--offsets", "0.2,1,2", "--cache-dir", str(tmp_path / "c"),
            "--out", str(tmp_path / "o"), "--no-progress", *extra]


@pytest.mark.user_input
def test_cli_teacher_errors_are_one_line_naming_the_flag(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    wrong = heads.teacher_to_dict(heads.layer_teacher("G2-tied", 2))
    wrong["wv"] = wrong["wv"][0]
    bad.write_text(json.dumps(wrong))
    cases = [(["--teacher", str(bad)], "error: --teacher field 'wv' must have shape (2, 2, 2)"),
             (["--teacher", str(tmp_path / "none.json")], "error: --teacher must be a readable"),
             (["--teacher-seed", "-2"], "error: --teacher-seed must be an integer >= 0"),
             (["--teacher", str(bad), "--teacher-seed", "1"], "error: argument --teacher-seed")]
    for extra, start in cases:
        capsys.readouterr()
        assert cli.main(_argv(tmp_path, *extra)) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(start), err
    assert not (tmp_path / "o").exists()


def test_cli_seeded_and_file_teachers_run_and_enter_the_cache_key(tmp_path, capsys):
    parser = cli.build_parser()
    declared = cli.attention_profile_config(parser.parse_args(_argv(tmp_path)))
    seeded = cli.attention_profile_config(parser.parse_args(_argv(tmp_path, "--teacher-seed", "5")))
    assert seeded.key() != declared.key()
    assert cli.main(_argv(tmp_path, "--teacher-seed", "5")) == 0
    out = capsys.readouterr().out
    assert "dead-head branch rejected in" in out and "teacher: seed 5" in out
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["cache_key"] == seeded.key() and res["config"]["teacher_seed"] == 5
    assert res["teacher"]["source"] == "seed 5"
    t = heads.seeded_teacher("G2-tied", 5)
    assert all(np.array_equal(np.array(res["teacher"]["weights"][k]), t[k]) for k in t)
    (point,) = res["points"]
    dead = point["branches"]["dead_head"]
    assert len(dead["excess"]) == 1 and dead["threshold"] == pytest.approx(3.841458820694124)
    assert dead["excess"][0] is None or dead["excess"][0] >= 0
    # the same teacher from a file: read back exactly, its own key
    path = tmp_path / "t.json"
    path.write_text(json.dumps(res["teacher"]["weights"]))
    from_file = cli.attention_profile_config(parser.parse_args(_argv(tmp_path, "--teacher",
                                                                     str(path))))
    assert all(np.array_equal(from_file.teacher()[k], t[k]) for k in t)
    assert from_file.key() not in (declared.key(), seeded.key())
    assert from_file.teacher_source == "file"


def test_committed_local_record_holds_both_components_of_the_ridge_sets():
    """The chapter's local record: the dead-head excess of every replicate certified, not
    growing with n/nu (the branch holds the teacher: its excess is a null draw)."""
    record, sweeps = e2_profile.load_record("e2_profile_local")
    assert set(sweeps) == {"G2-tied", "ridge"} and record["seeds"] == [0]
    for sw in sweeps.values():
        d = e2_profile.dead_head_summary(sw, sw.config.c)
        assert d.certified == d.excess.size
        assert abs(d.slope) < 0.05 and np.all(d.median > 0)
        assert d.above <= d.above_chi2 <= d.certified


def test_records_are_read_by_name_with_errors_naming_it(tmp_path):
    with pytest.raises(ValueError, match="name must name an E2 record"):
        e2_profile.load_record("../secrets")
    with pytest.raises(ValueError, match="name 'e2_profile_missing': no record"):
        e2_profile.load_record("e2_profile_missing")
    bad = tmp_path / "e2_profile_bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        e2_profile.load_record("e2_profile_bad", path=bad)
    _, sweeps = e2_profile.load_record("e2_profile_noise")   # written before the branch
    with pytest.raises(ValueError, match="no certified dead-head excess"):
        e2_profile.dead_head_summary(sweeps["MHSA"], 3.84)
