"""Thresholds of the profile radius: the bootstrap machinery validated first where the law is
known (a regular, exactly specified mixture: chi-square), then the split likelihood ratio,
then the over-fitted pair's profile at one grid point (plumbing, small sizes).

Sizes here are reduced to keep the suite fast; the full-size validation is
``experiments.thresholds.regular_validation(RegularConfig())`` (200 data sets, 200 draws
each; its measured numbers are in that function's docstring).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import scipy.stats

from gated_hmoe.estimation import modulus, thresholds
from gated_hmoe.experiments import e1_profile
from gated_hmoe.experiments import thresholds as et
from gated_hmoe.models import moe

CHI2_95 = 3.841458820694124


# ------------------------------------------------------------------ the regular case first

@pytest.fixture(scope="module")
def regular():
    """200 data sets (n = 1000, nu = 1e-6, SiLU, k = k* = 2, the slope of expert 0 pinned);
    the bootstrap (100 draws each) on the first 20."""
    return et.regular_validation(et.RegularConfig(n=1000, data_sets=200, draws=100,
                                                  bootstrap_sets=20))


def test_regular_statistic_is_chi2(regular):
    # (a) the likelihood-ratio statistic over 200 independent data sets is chi^2_1
    assert regular["failed"] == 0
    assert regular["ks_pvalue"] > 0.01
    q = regular["excess_quantile"]
    assert q["lower"] <= CHI2_95 <= q["upper"]
    assert abs(regular["excess_mean"] - 1.0) < 3 * math.sqrt(2 / 200)


def test_regular_bootstrap_quantile_matches_chi2(regular):
    # (b) the bootstrap's 95% quantile, pooled over 20 data sets x 100 draws, within its
    # order-statistic interval of 3.84; and most per-data-set intervals hold 3.84
    b = regular["bootstrap"]
    assert b["null_certified"] == 20 and sum(b["failed"]) == 0
    assert b["pooled"]["lower"] <= CHI2_95 <= b["pooled"]["upper"]
    inside = np.mean((np.array(b["lower"]) <= CHI2_95) & (CHI2_95 <= np.array(b["upper"])))
    assert inside >= 0.8
    assert np.all(np.array(b["se"]) > 0)


def test_regular_bootstrap_coverage(regular):
    # (c) the share of data sets whose statistic at the truth is <= its bootstrap threshold
    lo, hi = regular["bootstrap"]["coverage_interval"]
    assert lo <= 0.95 <= hi


def test_regular_split_lrt_is_conservative(regular):
    # (d) universal inference: coverage >= 95% at any n (not significantly below)
    s = regular["split_lrt"]
    assert s["failed"] == 0
    assert s["coverage_interval"][1] >= 0.95
    assert s["coverage"] >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / 200)


# ------------------------------------------------------------------ the pieces

def test_bootstrap_threshold_interval_covers_the_quantile():
    # the order-statistic interval of the 0.95 quantile holds chi^2_1's 3.84 in >= ~95%
    # of 400 exact samples of B = 200
    rng = np.random.default_rng(0)
    t = thresholds.bootstrap_threshold(rng.chisquare(1, (400, 200)), 0.05)
    cover = np.mean((t.lower <= CHI2_95) & (CHI2_95 <= t.upper))
    assert cover >= 0.93
    # the Monte-Carlo critical value X_(ceil(0.95 (B + 1))): exact level on exchangeable draws
    assert np.mean(scipy.stats.chi2(1).cdf(t.c)) == pytest.approx(190 / 201, abs=0.01)
    assert np.all(t.failed == 0) and t.B == 200


def test_bootstrap_threshold_ranks_failures_last():
    draws = np.arange(1.0, 21.0)
    draws[0] = np.nan
    t = thresholds.bootstrap_threshold(draws, 0.1)
    assert t.failed.tolist() == [1]
    assert float(t.c[0]) == 20.0               # rank 19 of [2..20, inf]


def test_fit_pinned_keeps_pinned_coordinates_and_lowers_nothing_below_full():
    G = moe.pin_last(moe.default_truth("sigmoid"))
    spec = moe.make_spec(expert="sigmoid", k=2, D=1)
    cfg = et.RegularConfig(expert="sigmoid", n=400, nu=1e-4, data_sets=20, bootstrap_sets=0)
    x, y, th = et.regular_data(cfg)
    start = np.tile(th, (20, 1))
    start[:, 3] += 0.1
    res = thresholds.fit_pinned(x, y, start, spec=spec, pinned=(3, 5))
    assert res.converged.all()
    np.testing.assert_array_equal(res.theta[:, [3, 5]], start[:, [3, 5]])
    assert np.asarray(moe.pack(G, spec)).shape == (spec.num_params,)


def test_split_lrt_statistic_and_cutoff():
    assert thresholds.SPLIT_LRT_95 == pytest.approx(5.991464547)
    assert thresholds.split_lrt_cutoff(0.05) == pytest.approx(2 * math.log(20))
    S = thresholds.split_lrt_statistic(np.array([[2.0, np.nan]]), np.array([1.0]), 0.1)
    assert S[0, 0] == pytest.approx(10.0) and np.isnan(S[0, 1])


def test_merge_pair_is_exact_at_offset_zero():
    G = moe.pin_last(moe.default_truth("silu"))
    spec = moe.make_spec(expert="silu", k=3, D=1)
    small = moe.make_spec(expert="silu", k=2, D=1)
    psi = np.array([0.3, 0.6, -0.8, 0.2, 0.1, -0.05, 0.04, 5.0, 2.0])
    theta = np.asarray(modulus.pair_theta(psi, 0.0, G, spec, 0, True, 0.3))
    merged = thresholds.merge_pair(theta[None], spec)
    x = np.linspace(-1, 1, 33)[:, None]
    np.testing.assert_allclose(moe.mean_of_theta(merged[0], x, small),
                               moe.mean_of_theta(theta, x, spec), rtol=0, atol=1e-12)


def test_radius_under_thresholds_validates():
    d = np.array([0.1, 0.2, 0.4])
    out = thresholds.radius_under_thresholds(d, np.zeros((2, 3)), np.array([1.0, np.inf]),
                                             np.zeros((2, 3)))
    assert out["bootstrap"]["status"] == ["censored", "censored"]
    assert out["chi2"]["c"][0] == pytest.approx(CHI2_95)


def test_regular_config_names_bad_fields():
    with pytest.raises(ValueError, match="pinned"):
        et.RegularConfig(pinned=(7,)).validate()
    with pytest.raises(ValueError, match="bootstrap_sets"):
        et.RegularConfig(data_sets=20, bootstrap_sets=30).validate()
    with pytest.raises(ValueError, match="expert"):
        et.RegularConfig(expert="linear").validate()
    with pytest.raises(TypeError, match="config"):
        et.regular_validation({"n": 10})


# ------------------------------------------------------------------ the over-fitted pair

@pytest.mark.slow
def test_profile_point_thresholds_small(tmp_path):
    cfg = e1_profile.ProfileConfig(expert="silu", n_min=300, n_max=300, points=1,
                                   replicates=2, offsets=(0.05, 1.0, 3)).validate()
    out = et.profile_point_thresholds(cfg, 300, 1e-6, replicates=(1,), draws=20, batch=20,
                                      cache_dir=tmp_path)
    boot = out["thresholds"]["bootstrap"]
    assert out["thresholds"]["null_certified"] == [True]
    assert boot["B"] == 20 and len(out["thresholds"]["bootstrap_draws"][0]) == 20
    draws = np.array(out["thresholds"]["bootstrap_draws"][0], float)
    assert np.sum(np.isfinite(draws)) >= 18 and np.nanmin(draws) >= 0
    assert boot["c"][0] >= np.nanmedian(draws)
    assert set(out["radii"]) == {"chi2", "bootstrap", "split_lrt"}
    for name, r in out["radii"].items():
        assert r["status"][0] in ("interpolated", "censored", "below", "undetermined"), name
    # the split-LRT set is computed on half the data: its statistic exists at every offset
    assert all(v is not None for v in out["split_lrt_statistic"][0])
    with pytest.raises(ValueError, match="replicates"):
        et.profile_point_thresholds(cfg, 300, 1e-6, replicates=(5,), cache_dir=tmp_path)


@pytest.mark.user_input
def test_errors_name_the_argument():
    spec = moe.make_spec(expert="silu", k=2, D=1)
    x, y = np.zeros((2, 8, 1)), np.zeros((2, 8))
    start = np.zeros((2, 6))
    with pytest.raises(ValueError, match="alpha"):
        thresholds.bootstrap_threshold(np.ones(20), 1.5)
    with pytest.raises(ValueError, match="draws"):
        thresholds.bootstrap_threshold(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="pinned"):
        thresholds.fit_pinned(x, y, start, spec=spec, pinned=(9,))
    with pytest.raises(ValueError, match="theta0"):
        thresholds.fit_pinned(x, y, start[:, :3], spec=spec, pinned=(1,))
    with pytest.raises(ValueError, match="ssr_null_d0"):
        thresholds.split_lrt_statistic(np.ones(3), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="spec.k"):
        thresholds.merge_pair(np.zeros((1, 6)), spec)
    d = np.array([0.1, 0.2, 0.4])
    with pytest.raises(ValueError, match="split_statistic"):
        thresholds.radius_under_thresholds(d, np.zeros((2, 3)), 1.0, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="c_bootstrap"):
        thresholds.radius_under_thresholds(d, np.zeros((1, 3)), np.nan, np.zeros((1, 3)))
    problem = thresholds.PinnedProblem(spec=spec, pinned=(2,), value=np.array([4.0]),
                                       start=np.zeros(6), nu=1.0)
    with pytest.raises(TypeError, match="key"):
        thresholds.bootstrap_draws(problem, 0, x, y, nu=1.0)
    with pytest.raises(ValueError, match="draws"):
        thresholds.bootstrap_draws(problem, jax.random.key(0), x, y, nu=1.0, draws=0)
    with pytest.raises(ValueError, match="null"):
        thresholds.MoEProfileProblem(spec=moe.make_spec(expert="silu", k=3, D=1),
                                     G_ref=moe.default_truth("silu"), deltas=np.array([0.1, 0.2]),
                                     starts=np.zeros((2, 9)), nu=1.0, null="other")
