"""What a profile sweep reports: slopes only over usable points, the truth's own prediction,
the same numbers on every run, and the command line's edges."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gated_hmoe import cli
from gated_hmoe.estimation import profile
from gated_hmoe.experiments import e1_profile as ep
from gated_hmoe.experiments import profile_report as pr

#: A truth that appears nowhere else in the repository (SiLU experts).
OTHER_TRUTH = {"beta0": [0.3, 0.0], "beta1": [[-4.0], [0.0]],
               "expert": [[3.5, 1.5], [-4.5, -1.0]]}


def synthetic_sweep(medians: list[float], *, replicates: int = 5) -> ep.ProfileSweep:
    """An n-sweep whose every replicate has the radius ``medians[i]`` at grid point ``i``
    (an excess that crosses ``c`` there; ``nan`` median: nothing certified)."""
    config = ep.ProfileConfig(n_min=1000, n_max=1000 * 10 ** (len(medians) - 1),
                              points=len(medians), replicates=replicates,
                              offsets=(0.1, 2.0, 9)).validate()
    d = config.deltas()
    points = []
    for (n, nu), r in zip(config.grid(), medians):
        excess = (None if np.isnan(r) else
                  [float(config.c * (delta / r) ** 4) for delta in d])
        points.append({"n": n, "noise": nu, "x": n / nu, "seconds": 0.0,
                       "certified": 0 if excess is None else replicates * d.size,
                       "fits": replicates * d.size,
                       "excess": [[None] * d.size if excess is None else excess] * replicates})
    return ep.ProfileSweep(config, points, 0.0, {})


def test_slope_skips_censored_and_undetermined_points():
    sw = synthetic_sweep([3.0, 1.0, 0.5, 0.25, 0.125])      # the first censored at the end (2)
    rs = sw.radius_slope()
    assert rs.used == (1, 2, 3, 4) and rs.note is None
    assert rs.slope.slope == pytest.approx(np.log(0.5) / np.log(10), abs=0.02)  # interpolated radii
    assert rs.slope.x[0] == pytest.approx(sw.x[1])


def test_too_few_usable_points_give_no_slope_and_say_why():
    rs = synthetic_sweep([3.0, 3.0, 0.5, 0.25]).radius_slope()
    assert rs.slope is None and rs.used == (2, 3)
    assert "2 of 4" in rs.note and "2 censored" in rs.note and "needs 3" in rs.note
    rs = synthetic_sweep([0.5, 0.25, np.nan]).radius_slope()
    assert rs.slope is None and "1 undetermined" in rs.note
    payload = pr.report(synthetic_sweep([3.0, 3.0, 0.5, 0.25]))
    assert payload["slopes"]["radius"] is None and "needs 3" in payload["slope_note"]
    assert payload["slope_range"]["n"] == [100000, 1000000]
    json.dumps(payload, allow_nan=False)


def test_prediction_of_a_quartic_modulus_matches_its_own_radii():
    sw = synthetic_sweep([0.8, 0.45, 0.25, 0.14])
    d = sw.config.deltas()
    m = sw.config.c * d ** 4 / (0.45 ** 4 * sw.x[1])        # predicts 0.45 at the 2nd point
    pred = pr.predict(sw, m)
    assert pred.radius[1] == pytest.approx(0.45, rel=0.05)
    assert np.all(pred.local_exponent == pytest.approx(4.0))
    assert "quartic regime" in pred.regime((0, 1, 2, 3))
    assert pred.expected_slope == pytest.approx(-0.25, abs=0.01)      # interpolated radii
    payload = pr.report(sw, pred)
    assert set(payload["points"][0]) >= {"predicted_radius", "ratio", "local_exponent"}
    assert payload["prediction"]["modulus"]["m"] == pytest.approx(m.tolist())
    assert np.all(pred.well_conditioned)                      # c*F / (c/F): a factor F^(1/2)
    assert pred.range_high[1] / pred.range_low[1] == pytest.approx(pr.PREDICTION_FACTOR ** 0.5,
                                                                   rel=0.05)
    assert payload["prediction"]["ill_conditioned_points"] == []


def test_a_far_branch_at_the_threshold_is_ill_conditioned_and_reported():
    """A modulus that dips back to ``c / x`` at the last offset: the predicted radius at the
    second grid point sits on a knife edge (censored at ``c F``), the measured median lands
    on the far branch, and the report says which criterion fails and why."""
    sw = synthetic_sweep([2.0, 2.0, 0.25, 0.14])
    d = sw.config.deltas()
    m = sw.config.c * d ** 4 / (0.45 ** 4 * sw.x[1])
    m[-1] = 1.02 * sw.config.c / sw.x[1]                       # a far branch just above c / x
    pred = pr.predict(sw, m)
    assert pred.status[1] == "interpolated" and not pred.well_conditioned[1]
    assert pred.range_high[1] == d[-1]
    payload = pr.report(sw, pred)
    assert 1 in payload["prediction"]["ill_conditioned_points"]
    assert payload["points"][1]["predicted_range"][1] == pytest.approx(d[-1])
    assert payload["points"][1]["well_conditioned"] is False
    assert not pred.same_censoring()                         # measured at the grid's end
    sw = synthetic_sweep([2.0, 1.5, 0.25, 0.14])              # the far branch, inside the grid
    pred = pr.predict(sw, m)
    assert not pred.ratios_agree() and pred.ratios_agree(well_conditioned_only=True)
    assert pred.within_range()


def test_a_modulus_that_vanishes_predicts_censored_radii():
    r, status = profile.predicted_radii(np.array([0.1, 1.0]), np.zeros(2), np.array([1e20]), 3.84)
    assert status.tolist() == ["censored"] and r[0] == 1.0
    with pytest.raises(ValueError, match="m must be"):
        profile.predicted_radii(np.array([0.1, 1.0]), np.array([-1.0, 0.0]), np.array([1.0]), 3.84)


@pytest.mark.slow
@pytest.mark.parametrize("expert, truth", [
    ("silu", OTHER_TRUTH),
    ("sigmoid", {"beta0": [-0.2, 0.0], "beta1": [[3.0], [0.0]],
                 "expert": [[-3.0, 1.0], [4.0, -0.5]]}),
    ("linear", {"beta0": [0.4, 0.0], "beta1": [[-3.0], [0.0]],
                "expert": [[2.0, -1.0], [-3.0, 0.5]]}),
])
def test_measured_radii_agree_with_the_truths_own_prediction(tmp_path, expert, truth):
    """Truths chosen for this test only: medians within the stated factor of the prediction
    wherever both are inside the grid; linear experts predicted and measured censored. (Where
    the radius reaches offsets of 1.5 and more, the censoring is not always predicted: the
    SiLU truth at n = 3000 measured 1.90 where the prediction is censored, the sigmoid truth
    measured censored where 2.6 and 2.1 are predicted, so it has no point where both are
    inside the grid; reported, not asserted.)"""
    cfg = ep.ProfileConfig(expert=expert, true=truth, n_min=3000, n_max=30000, points=2,
                           replicates=4, offsets=(0.05, 3.0, 12), seed=7).validate()
    sw = ep.run_profiles(cfg, cache_dir=tmp_path, progress=False)
    pred = pr.predict(sw, pr.population_modulus(cfg, cache_dir=tmp_path))
    assert pred.ratios_agree(), (pred.measured, pred.radius, pred.status)
    if expert == "linear":
        assert pred.same_censoring() and np.all(pred.status == "censored")


PROFILE_ARGS = ["profile", "--expert", "silu", "--n-min", "300", "--n-max", "600", "--points",
                "2", "--replicates", "2", "--offsets", "0.05,3,8", "--no-progress"]


@pytest.mark.slow
def test_same_seed_same_numbers_with_separate_caches(tmp_path):
    """Three runs in fresh processes, each with its own cache, write the same results (the
    population starts used to depend on the state of memory, through scipy's MINPACK)."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(OTHER_TRUTH))
    results = []
    for i in range(3):
        argv = PROFILE_ARGS + ["--true", str(truth), "--cache-dir", str(tmp_path / f"c{i}"),
                               "--out", str(tmp_path / f"o{i}")]
        done = subprocess.run([sys.executable, "-m", "gated_hmoe", *argv], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        res = json.loads((tmp_path / f"o{i}" / "results.json").read_text())
        for key in ("seconds", "versions"):
            res.pop(key)
        for p in res["points"]:
            p.pop("seconds")
        results.append(res)
    assert results[1] == results[0] and results[2] == results[0]


@pytest.mark.user_input
def test_a_bad_field_of_true_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**OTHER_TRUTH, "beta0": [0.3, "x"]}))
    assert cli.main(PROFILE_ARGS + ["--true", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --true field 'beta0'"), err


@pytest.mark.user_input
@pytest.mark.parametrize("flag, where", [("--out", "/proc/gated-hmoe-test/out"),
                                         ("--cache-dir", "/proc/gated-hmoe-test-cache"),
                                         ("--out", "/dev/null/out")])
def test_a_folder_that_cannot_be_created_is_refused_before_work(tmp_path, capsys, flag, where):
    argv = PROFILE_ARGS + ["--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    argv[argv.index(flag) + 1] = where
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag} must be a folder"), err
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_output_variance_and_the_prediction_at_a_realistic_noise(tmp_path):
    cfg = ep.ProfileConfig(expert="silu", offsets=(0.05, 2.0, 8)).validate()
    v = pr.output_variance(cfg)
    x = np.random.default_rng(0).uniform(-1, 1, (200_000, 1))
    from gated_hmoe.models import moe
    f = np.asarray(moe.mean_unchecked(cfg.truth(), x, cfg.expert, cfg.gate))
    assert v == pytest.approx(np.var(f), rel=0.02)
    r, status = pr.predicted_at(cfg, np.array([1e4, 1e9, 1e14]), cache_dir=tmp_path)
    assert status[0] == "censored" and np.all(np.diff(r) <= 0)
    with pytest.raises(TypeError, match="ProfileConfig"):
        pr.output_variance(object())
