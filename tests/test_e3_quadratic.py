"""E3, quadratic gates: configurations, the cached modulus for quadratic gates, tables, figures."""

import dataclasses
import json
import math
import re
import types

import numpy as np
import pytest

from gated_hmoe.estimation import rates
from gated_hmoe.experiments import e1_rates, e3_quadratic as qb
from gated_hmoe.viz import quadratic as vq
from gated_hmoe.viz import style


def test_sweep_config_grid_contains_slope_range_ends():
    cfg = qb.sweep_config("quadratic-monomial", "sigmoid", 0.1)
    xs = [n / nu for n, nu in cfg.grid()]
    assert len(xs) == 9
    assert math.isclose(xs[0], 1e7, rel_tol=1e-9) and math.isclose(xs[-1], 1e17, rel_tol=1e-9)
    # the lower end of the slope range is a grid point
    assert any(math.isclose(x, e1_rates.NOISE_FIT_MIN, rel_tol=5e-3) for x in xs)
    assert cfg.init == "split" and cfg.k_fit == 3 and cfg.gate == "quadratic-monomial"


def test_sweep_config_rejects_unknown_gate():
    with pytest.raises(ValueError, match="gate"):
        qb.sweep_config("cubic", "sigmoid", 0.1)


@pytest.mark.slow
def test_modulus_linear_is_zero_and_ridge_exponents_differ_by_gate(tmp_path):
    deltas = np.array([0.1, 0.2])
    lin = qb.modulus(deltas, expert="linear", gate="quadratic-polynomial", starts=0,
                     quad_points=60, max_nfev=300, cache_dir=tmp_path)
    assert np.all(lin <= 1e-26)
    mono = qb.modulus(deltas, expert="sigmoid", gate="quadratic-monomial", starts=0,
                      quad_points=60, max_nfev=300, cache_dir=tmp_path)
    poly = qb.modulus(deltas, expert="sigmoid", gate="quadratic-polynomial", starts=0,
                      quad_points=60, max_nfev=300, cache_dir=tmp_path)
    assert 3.0 < qb.modulus_exponent(deltas, mono) < 5.0
    assert qb.modulus_exponent(deltas, poly) > 6.0
    # cached: a second call reads the file and returns the same numbers
    again = qb.modulus(deltas, expert="sigmoid", gate="quadratic-monomial", starts=0,
                       quad_points=60, max_nfev=300, cache_dir=tmp_path)
    assert np.array_equal(again, mono)


def test_modulus_bad_input():
    with pytest.raises(ValueError, match="deltas"):
        qb.modulus([0.1, -0.2], expert="sigmoid", gate="quadratic-monomial")
    with pytest.raises(ValueError, match="gate"):
        qb.modulus([0.1], expert="sigmoid", gate="cubic")


def test_modulus_exponent_of_a_power_law():
    d = np.array([0.1, 0.2, 0.4])
    assert qb.modulus_exponent(d, 3.0 * d ** 4) == pytest.approx(4.0)
    assert math.isnan(qb.modulus_exponent(d, np.array([1.0, 0.0, 1.0])))


@pytest.mark.slow
def test_tiny_grid_table_profile_and_explorer(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    res = qb.run_grid(gates=("quadratic-polynomial",), experts=("sigmoid",), spreads=(0.1,),
                      cache_dir=tmp_path, replicates=2, points=3, max_iter=30)
    rows = qb.slope_rows(res)
    assert len(rows) == 1 and rows[0]["fits"] == 6
    assert set(qb.TABLE_METRICS) <= set(rows[0])
    text = qb.format_rows(rows)
    assert "polynomial gate" in text and "sigmoid" in text
    prof = qb.split_profile(next(iter(res.values())), -1)
    assert set(prof) == {"beta1", "A", "a", "b", "skipped"}
    widget = vq.explorer(res, live_fit=e1_rates.live_fit)
    assert len(widget.children) == 3          # controls, live-fit row, output
    assert widget.live_button.description == "run live fit"
    fig, _ = vq.small_multiples(res)
    assert style.audit(fig) == []
    fig, _ = vq.contrast_figure(res, gates=("quadratic-polynomial",), experts=("sigmoid",))
    assert style.audit(fig) == []


def test_upper_slopes_of_a_synthetic_power_law():
    """upper_slopes fits only the points at or above x_min."""

    class Fake:
        config = qb.sweep_config("quadratic-monomial", "sigmoid", 0.1)
        x = np.logspace(7, 17, 9)

        def losses(self, metric):
            rng = np.random.default_rng(1)
            # flat below 1e13, slope -1/4 above: only the upper part must be seen
            base = np.where(self.x < 1e13, 1.0, (self.x / 1e13) ** -0.25)
            return base[:, None] * np.exp(0.01 * rng.standard_normal((9, 12)))

    out = qb.upper_slopes({("g", "e", 0.1): Fake()})
    s = out[("g", "e", 0.1)]
    assert len(s.x) == 4 and s.slope == pytest.approx(-0.25, abs=0.02)


# ------------------------------------------------------------------ records of the long runs

@pytest.mark.parametrize("name", sorted(qb.RECORDS))
def test_committed_record_matches_its_configuration_and_slopes(name):
    """The committed record is the run of ``record_configs(name)``: same sweeps and grids
    (load_record), metadata present, failures and losses consistent, and every recorded
    slope equal to the slope recomputed from the recorded per-replicate losses."""
    record = qb.load_record(name)
    assert record["command"] == qb.RECORD_COMMAND.format(name=name)
    assert record["overrides"] == qb.RECORDS[name]["overrides"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"])
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]) and record["dirty"] is False
    assert record["machine"] and record["seconds"] > 0
    assert record["versions"]["gated_hmoe"]
    assert record["seconds"] >= sum(s["seconds"] for s in record["sweeps"]) - 1.0
    results = qb.record_results(record)
    assert list(results) == list(qb.record_configs(name))
    for entry, (key, res) in zip(record["sweeps"], results.items()):
        assert entry["cache_key"] == res.config.key(), key
        failed, fits = res.failure_count()
        assert fits == len(res.x) * res.config.replicates and 0 <= failed <= fits
        assert np.all(np.isfinite(res.losses("V"))), key      # V is defined for every fit
        for m, sl in res.slopes.items():
            assert entry["slopes"][m] == pytest.approx([sl.slope, *sl.ci], abs=1e-9), (key, m)
            assert sl.ci[0] <= sl.slope <= sl.ci[1], (key, m)
        upper = qb.upper_slopes({0: res})[0]
        assert entry["upper_slope"] == pytest.approx([upper.slope, *upper.ci], abs=1e-9), key


@pytest.mark.parametrize("name", sorted(qb.RECORDS))
def test_record_sweeps_are_the_rates_command(name):
    """Each recorded sweep is what the ``rates`` command with ``--gate`` runs: the command
    line of rates_command parses back to the same configuration."""
    from gated_hmoe import cli

    for key, config in qb.record_configs(name).items():
        words = qb.rates_command(config).split()
        assert words[:3] == ["python", "-m", "gated_hmoe"]
        args = cli.build_parser().parse_args(words[3:])
        assert cli.rates_config(args) == config, key


def test_load_record_rejects_a_record_of_another_configuration(tmp_path):
    record = json.loads((qb.RECORD_DIR / qb.RECORDS["full-grid"]["file"]).read_text())
    path = tmp_path / "r.json"
    bad = json.loads(json.dumps(record))
    bad["sweeps"][0]["config"]["replicates"] = 11
    qb.write_record(bad, path)
    with pytest.raises(ValueError, match="configuration differs"):
        qb.load_record("full-grid", path)
    bad = json.loads(json.dumps(record))
    bad["sweeps"] = bad["sweeps"][1:]
    qb.write_record(bad, path)
    with pytest.raises(ValueError, match="sweeps"):
        qb.load_record("full-grid", path)
    bad = json.loads(json.dumps(record))
    bad["sweeps"][0]["losses"]["d1"] = bad["sweeps"][0]["losses"]["d1"][1:]
    qb.write_record(bad, path)
    with pytest.raises(ValueError, match="shape"):
        qb.load_record("full-grid", path)
    with pytest.raises(ValueError, match="no record"):
        qb.load_record("full-grid", tmp_path / "missing.json")


@pytest.mark.slow
def test_make_record_round_trip_and_budget_comparison(tmp_path):
    """A tiny record: written, read back (with its overrides), slopes recomputed equal, and
    compared with the same sweeps at another budget."""
    small = dict(replicates=2, points=5)
    record = qb.make_record("budget2000", cache_dir=tmp_path, machine="test", max_iter=30,
                            **small)
    path = tmp_path / "record.json"
    qb.write_record(record, path)
    back = qb.load_record("budget2000", path, max_iter=30, **small)
    assert back["sweeps"] == json.loads(json.dumps(record["sweeps"]))
    with pytest.raises(ValueError, match="configuration differs"):
        qb.load_record("budget2000", path, max_iter=31, **small)
    long = qb.record_results(back)
    short = qb.run_grid(experts=("linear", "sigmoid"), cache_dir=tmp_path, max_iter=10, **small)
    rows = qb.budget_comparison(short, long)
    assert list(rows) == list(long)
    for key, row in rows.items():
        assert row["fits"] == 10 and len(row["medians"][0]) == 5
        assert row["main"][1] == pytest.approx(back["sweeps"][list(long).index(key)]
                                               ["slopes"]["worst_overfitted"], abs=1e-9)
    other_seed = {k: qb.RecordedSweep(dataclasses.replace(v.config, seed=1), v.entry)
                  for k, v in long.items()}
    with pytest.raises(ValueError, match="max_iter"):
        qb.budget_comparison(other_seed, long)


PROFILE_SMALL = dict(n_min=100, n_max=150, points=2, replicates=2, offsets=(0.2, 2.0, 3))


@pytest.mark.slow
def test_profile_record_round_trip_and_rejections(tmp_path):
    """A tiny profile record: written, read back as the sweeps it stored (with its
    overrides), refused with other overrides, an edited configuration or a missing file."""
    record = qb.make_profile_record("profile", cache_dir=tmp_path, machine="test", **PROFILE_SMALL)
    assert record["name"] == "profile" and record["overrides"] == PROFILE_SMALL
    path = tmp_path / "profile.json"
    qb.write_record(record, path)
    sweeps = qb.load_profile_record("profile", path, **PROFILE_SMALL)
    assert list(sweeps) == [(g, e) for g in qb.QUADRATIC_GATES for e in ("sigmoid", "silu")]
    for (gate, expert), sw in sweeps.items():
        assert sw.config.gate == gate and sw.config.expert == expert and sw.config.k_fit == 3
        assert sw.excess().shape == (2, 2, 3)
    entry = record["sweeps"][0]
    assert sweeps[qb.QUADRATIC_GATES[0], "sigmoid"].median_radius().tolist() == pytest.approx(
        np.median([[np.nan if r is None else r for r in p["radius"]]
                   for p in entry["points"]], 1).tolist(), nan_ok=True)
    with pytest.raises(ValueError, match="configuration differs"):
        qb.load_profile_record("profile", path, **{**PROFILE_SMALL, "n_max": 160})
    bad = json.loads(json.dumps(record))
    bad["sweeps"][1]["config"]["replicates"] = 3
    qb.write_record(bad, path)
    with pytest.raises(ValueError, match="cache_key"):
        qb.load_profile_record("profile", path, **PROFILE_SMALL)
    bad["sweeps"] = bad["sweeps"][:3]
    qb.write_record(bad, path)
    with pytest.raises(ValueError, match="expected"):
        qb.load_profile_record("profile", path, **PROFILE_SMALL)
    with pytest.raises(ValueError, match="e3_records.py profile"):
        qb.load_profile_record("profile", tmp_path / "missing.json")


@pytest.mark.parametrize("name, n, seed", [("profile", [1000, 3162, 10000, 31623, 100000], 0),
                                           ("profile-noise", [1000] * 9, 0),
                                           ("profile-noise-heldout", [1000] * 9, 1),
                                           *((f"profile-noise-seed{s}", [1000] * 9, s)
                                             for s in qb.PROFILE_CALIBRATION_SEEDS)])
def test_committed_profile_records_are_the_declared_configurations(name, n, seed):
    """Each committed profile record holds the four declared sweeps (both gates, sigmoid and
    SiLU), each hashing to its cache key, written at a clean commit."""
    sweeps = qb.load_profile_record(name)
    record = json.loads((qb.RECORD_DIR / qb.PROFILE_RECORDS[name]["file"]).read_text())
    assert record["dirty"] is False and len(record["commit"]) == 40
    assert list(sweeps) == [(g, e) for g in qb.QUADRATIC_GATES for e in qb.PROFILE_EXPERTS]
    for sw in sweeps.values():
        assert list(sw.n) == n and sw.config.replicates == 8 and sw.config.seed == seed
        assert sw.config.max_iter == qb.PROFILE_MAX_ITER
        assert sw.excess().shape == (len(n), 8, sw.config.offsets[2])


def test_profile_configs_rejects_an_unknown_record():
    with pytest.raises(ValueError, match="name"):
        qb.profile_configs("profile-typo")


# ------------------------------------------------------------------ figures

def test_modulus_figure_styles_and_reference_exponents():
    import matplotlib
    matplotlib.use("Agg")
    d = np.array([0.05, 0.1, 0.2, 0.4])
    table = {("quadratic-monomial", "linear"): np.zeros(4),
             ("quadratic-monomial", "sigmoid"): 1e-5 * d ** 4,
             ("quadratic-monomial", "silu"): 1.1e-5 * d ** 4,
             ("quadratic-polynomial", "sigmoid"): 1e-5 * d ** 8,
             ("quadratic-polynomial", "silu"): 2e-5 * d ** 8}
    fig, ax = vq.modulus_figure(d, table)
    assert style.audit(fig) == []
    curves = {ln.get_label().split(":")[0]: ln for ln in ax.lines}
    sig, silu = curves["monomial gate, sigmoid"], curves["monomial gate, SiLU"]
    # coinciding curves stay apart: another marker, dash pattern and size
    assert sig.get_marker() != silu.get_marker()
    assert sig.get_linestyle() != silu.get_linestyle()
    assert sig.get_markersize() != silu.get_markersize()
    assert curves["polynomial gate, sigmoid"].get_fillstyle() == "none"
    refs = [ln for ln in ax.lines if ln.get_label().startswith("reference slope")]
    assert len(refs) == 2
    for ln, exponent in zip(refs, (4, 8)):
        x, y = ln.get_data()
        assert np.polyfit(np.log(x), np.log(y), 1)[0] == pytest.approx(exponent)


def test_expert_styles_are_distinct():
    markers = [s["marker"] for s in vq.EXPERT_STYLES.values()]
    dashes = [str(s["linestyle"]) for s in vq.EXPERT_STYLES.values()]
    assert len(set(markers)) == len(markers) and len(set(dashes)) == len(dashes)
    assert set(vq.EXPERT_STYLES) == set(style.EXPERT_COLORS)


def test_contrast_figure_draws_theory_reference_slopes():
    import matplotlib
    matplotlib.use("Agg")

    class Fake:
        def __init__(self, expert, slope):
            self.config = qb.sweep_config("quadratic-monomial", expert, 0.1)
            self.x = np.logspace(7, 17, 9)
            rng = np.random.default_rng(0)
            self._L = ((self.x / 1e7) ** slope)[:, None] * (1 + 0.3 * rng.random((9, 12)))
            self.slopes = {"worst_overfitted": rates.slope(self.x, self._L, x_min=5.6e10)}

        def losses(self, metric):
            return self._L

        def failure_count(self):
            return 0, 108

    res = {("quadratic-monomial", "linear", 0.1): Fake("linear", 0.0),
           ("quadratic-monomial", "sigmoid", 0.1): Fake("sigmoid", -0.25)}
    fig, axes = vq.contrast_figure(res)
    assert style.audit(fig) == []
    refs = {ln.get_label(): ln for ln in axes[0].lines
            if ln.get_label().startswith("reference slope")}
    assert set(refs) == {"reference slope −1/4 (theory)", "reference slope 0 (no convergence)"}
    for label, slope in (("reference slope −1/4 (theory)", -0.25),
                         ("reference slope 0 (no convergence)", 0.0)):
        x, y = refs[label].get_data()
        assert x[0] == pytest.approx(5.62e10, rel=1e-2)
        assert np.polyfit(np.log(x), np.log(y), 1)[0] == pytest.approx(slope, abs=1e-12)


def test_profile_slope_bands_follow_the_declared_rule():
    """Bands around the gate's theory slope from the calibration sweeps that have a slope;
    None where none has one; another theory and the nearest rounding on request; an empty
    calibration is refused."""
    class Sweep:                                   # the one method the rule reads
        def __init__(self, slope):
            self.s = None if slope is None else types.SimpleNamespace(slope=slope[0], ci=slope[1])

        def slope_below(self, r_max):
            assert r_max == 0.4
            return self.s

    mono, poly = qb.QUADRATIC_GATES
    cal = [{(mono, "silu"): Sweep((-0.26, (-0.27, -0.24))), (poly, "silu"): Sweep(None)},
           {(mono, "silu"): Sweep((-0.24, (-0.25, -0.21))), (poly, "silu"): Sweep(None)}]
    slopes = qb.calibration_slopes(cal, 0.4)
    assert [s.slope for s in slopes[(mono, "silu")]] == [-0.26, -0.24] and slopes[(poly, "silu")] == []
    bands = qb.profile_slope_bands(slopes)
    assert bands[(mono, "silu")] == (-0.29, -0.21) and bands[(poly, "silu")] is None
    cal[1][(poly, "silu")] = Sweep((-0.1, (-0.16, -0.02)))
    slopes = qb.calibration_slopes(cal, 0.4)
    assert qb.profile_slope_bands(slopes)[(poly, "silu")] == (-0.24, -0.01)
    assert qb.profile_slope_bands(slopes, outward=False)[(poly, "silu")] == (-0.23, -0.01)
    assert qb.profile_slope_bands(slopes, theory=-0.25)[(poly, "silu")] == (-0.48, -0.02)
    with pytest.raises(ValueError, match="calibration"):
        qb.calibration_slopes([], 0.4)
