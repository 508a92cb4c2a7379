"""Profile confidence sets: the constrained fits, the radius, the fixed-design identity, the
sweep with its cache and the command line."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_hmoe import cli
from gated_hmoe.estimation import head_fit, modulus, moe_fit, profile
from gated_hmoe.experiments import e1_profile as ep
from gated_hmoe.experiments import runner
from gated_hmoe.models import data, moe
from gated_hmoe.viz import profile as vp, style

NU = 1e-6


def _data(expert, n=400, R=2, seed=0):
    G = moe.pin_last(moe.default_truth(expert))
    x, y = data.sample_batch(jax.random.split(jax.random.key(seed), R), G, n=n, noise_var=NU,
                             expert=expert)
    return G, np.asarray(x), np.asarray(y)


@pytest.mark.parametrize("excess, expected", [
    ([0.0, 2.0, 6.0, 9.0], ("interpolated", math.sqrt(0.2 * 0.4))),
    ([5.0, 1.0, 3.0, 2.0], ("censored", 0.8)),
    ([5.0, 6.0, 7.0, 9.0], ("below", 0.1)),
    ([0.0, 1.0, 6.0, float("nan")], ("undetermined", float("nan"))),
    ([float("nan"), 1.0, 6.0, 7.0], ("interpolated", 0.2 * 2 ** 0.6)),
    ([0.0, 9.0, 1.0, 9.0], ("interpolated", 0.4 * 2 ** (3 / 8))),   # the last offset inside
])
def test_radius_on_a_grid(excess, expected):
    r, status = profile.radius(np.array([0.1, 0.2, 0.4, 0.8]), np.array(excess), 4.0)
    assert status == expected[0]
    if math.isnan(expected[1]):
        assert math.isnan(r)
    else:
        assert r == pytest.approx(expected[1], rel=1e-12)


def test_pair_normal_equations_are_the_chain_rule():
    """The planar normal equations pulled back through pair_theta equal the forward-mode
    normal equations of the composed residual."""
    G, x, y = _data("silu", n=64, R=2)
    spec = moe.make_spec(expert="silu", k=3, D=1)
    q = profile.pair_dim(spec, 2)
    rng = np.random.default_rng(0)
    psi = jnp.asarray(rng.normal(size=(2, q)) * 0.3 + np.r_[0.5 - math.log(2), 1, 1, 1,
                                                             np.zeros(3), 5.0, 2.0])
    delta = jnp.asarray([0.1, 0.3])
    Gj = jax.tree.map(lambda a: None if a is None else jnp.asarray(a), G)
    layout = moe_fit.planar_data(x, y, D=1)
    m = layout.arrays[0].shape[-1] // layout.chunk
    chunked = tuple(moe_fit.chunks(a, m, layout.chunk) for a in layout.arrays)
    got = profile._pair_normal_equations(psi, delta, chunked, Gj, spec, 0, 0.3, None)

    def residual(ps, d, xx, yy):
        theta = modulus.pair_theta(ps, d, Gj, spec, 0, True, 0.3)
        return yy - moe.mean_of_theta(theta, xx, spec)

    want = head_fit.jacfwd_normal_equations(residual)(psi, delta, jnp.asarray(x), jnp.asarray(y))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_constrained_fits_hold_their_offset_and_split():
    G, x, y = _data("sigmoid")
    spec = moe.make_spec(expert="sigmoid", k=3, D=1)
    _, psi = modulus.modulus_solutions([0.3], expert="sigmoid", split=0.3, starts=0,
                                       quad_points=60)
    layout = moe_fit.planar_data(x, y, D=1)
    fits = profile.fit_pairs(layout, np.repeat(psi, 2, 0), np.array([0.3, 0.3]), spec=spec, G_ref=G,
                             split=0.3)
    assert fits.certified.all()
    for theta in fits.theta:
        M = moe.unpack(jnp.asarray(theta), spec)
        om = np.concatenate([np.asarray(M.beta1), np.asarray(M.expert)], 1)
        assert np.linalg.norm(om[0] - om[1]) / 2 == pytest.approx(0.3, rel=1e-9)
        w = np.exp(np.asarray(M.beta0[:2]))
        assert w[0] / w.sum() == pytest.approx(0.3, rel=1e-9)


def _profile(expert, n=400, R=2):
    G, x, y = _data(expert, n=n, R=R)
    spec = moe.make_spec(expert=expert, k=3, D=1)
    deltas = np.logspace(-2, math.log10(2), 8)
    _, starts = modulus.modulus_solutions(deltas, expert=expert, starts=1, quad_points=80,
                                          stop_below=1e-28)
    return profile.profile(profile.MoEPairProblem(x, y, spec=spec, G_ref=G), deltas=deltas,
                           starts=starts, nu=NU)


def test_ridge_profile_rises_and_linear_valley_stays_flat():
    silu = _profile("silu")
    assert silu.certified_fraction == 1.0
    assert np.all(silu.status == "interpolated") and np.all(silu.radius < 1.0)
    assert np.all(silu.excess[:, -1] > 3 * profile.CHI2_95)   # far offsets are rejected
    assert np.all(silu.excess >= -1e-6)                     # the reference is a minimum
    lin = _profile("linear")
    assert lin.certified_fraction == 1.0 and np.all(lin.status == "censored")
    assert np.nanmax(lin.excess) <= profile.CHI2_95          # O(nu) along the whole valley
    # a wrong claim fails: the ridge profile is not flat
    assert np.nanmax(silu.excess) > 10 * profile.CHI2_95


def test_fixed_design_identity_holds_and_a_wrong_scaling_fails():
    rng = np.random.default_rng(1)
    residual, xi = 1e-3 * rng.normal(size=500), rng.normal(size=500)
    for s in (1e7, 1e12):
        both = ep.fixed_design_identity(residual, xi, s)
        assert both["lhs"] == pytest.approx(both["rhs"], rel=1e-9, abs=1e-6)
    both = ep.fixed_design_identity(residual, xi, 1e9)
    wrong = 1e9 * np.mean(residual ** 2) - 2 * math.sqrt(1e9) * np.sum(xi * residual)
    assert abs(wrong - both["lhs"]) > 1.0


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    cache = tmp_path_factory.mktemp("profile")
    cfg = ep.ProfileConfig(expert="silu", n_min=300, n_max=1200, points=3, replicates=3,
                           offsets=(0.02, 2.0, 8)).validate()
    return cache, cfg, ep.run_profiles(cfg, cache_dir=cache, progress=False)


def test_sweep_radius_shrinks_is_cached_and_resumes(small_sweep, tmp_path):
    cache, cfg, res = small_sweep
    assert res.certified_fraction() == 1.0
    med = res.median_radius()
    assert med[-1] < med[0]
    assert res.slope().slope < 0
    store = runner.Store("profile", cache)
    again = ep.run_profiles(cfg, cache_dir=cache, progress=False)
    assert again.points == res.points
    # a truncated point is reported with its path and recomputed to the same numbers
    path = store.path(f"{cfg.key()}/point_n{res.points[1]['n']}_nu{NU:.6e}")
    path.write_text(path.read_text()[:40])
    with pytest.warns(runner.CacheWarning, match=path.name):
        third = ep.run_profiles(cfg, cache_dir=cache, progress=False)
    np.testing.assert_allclose(third.excess(), res.excess(), rtol=1e-8, atol=1e-8)


def test_profile_figures_follow_the_book_rules(small_sweep):
    _, cfg, res = small_sweep
    fig, _ = vp.profile_panels(res)
    assert style.audit(fig) == []
    fig, ax = style.new_figure()
    vp.sample_complexity_axes(ax, {"SiLU": res}, [0.3, 0.1])
    assert style.audit(fig) == []
    fig, ax = style.new_figure()                          # an empty panel is a finding
    assert any("empty" in f for f in style.audit(fig))
    ax.plot([1, 2], [1, 2])
    assert any("no x-axis label" in f for f in style.audit(fig))
    ax.set(xlabel="n", ylabel="loss")
    assert any("names no quantity" in f for f in style.audit(fig))
    with pytest.raises(ValueError, match="figure rules"):
        style.check(fig)


def test_threshold_is_post_processing(small_sweep):
    _, cfg, res = small_sweep
    import dataclasses
    assert dataclasses.replace(cfg, c=1.0).key() == cfg.key()
    low, high = res.radii(1.0)[0], res.radii(9.0)[0]
    assert np.all(low[np.isfinite(low)] <= high[np.isfinite(low)])


def test_sample_complexity_interpolates_and_reports_not_reached(small_sweep):
    _, cfg, res = small_sweep
    med = res.median_radius()
    eps = float(np.sqrt(med[0] * med[-1]))
    n_eps = res.sample_complexity(eps)
    assert res.n[0] < n_eps <= res.n[-1]
    assert math.isnan(res.sample_complexity(1e-6))


def test_effective_sample_complexity_is_n_over_nu_of_the_same_crossing(small_sweep):
    _, cfg, res = small_sweep
    med = res.median_radius()
    eps = float(np.sqrt(med[0] * med[-1]))
    # an n sweep at one noise level: n/nu(eps) = n(eps) / nu
    assert math.isclose(res.effective_sample_complexity(eps), res.sample_complexity(eps) / cfg.noise,
                        rel_tol=1e-9)
    assert math.isnan(res.effective_sample_complexity(1e-6))
    with pytest.raises(ValueError, match="eps must be"):
        res.effective_sample_complexity(-0.1)


def test_slope_from_x_min_uses_only_the_later_points(small_sweep):
    _, _, res = small_sweep
    full = res.slope()
    later = res.slope(x_min=float(res.x[1]))
    assert list(later.x) == list(res.x[1:]) and list(full.x) == list(res.x)
    # with resolved=True the later of the two starts wins
    assert list(res.slope(resolved=True, x_min=float(res.x[-2])).x) == list(res.x[-2:])
    assert list(res.slope(x_max=float(res.x[-2])).x) == list(res.x[:-1])
    with pytest.raises(ValueError, match="x_min"):
        res.slope(x_min=-1.0)
    with pytest.raises(ValueError, match="x_max"):
        res.slope(x_max=0.0)


def test_design_modulus_is_the_median_excess_over_n_over_nu(small_sweep):
    _, _, res = small_sweep
    m = res.design_modulus()
    e = res.excess()
    assert m.shape == (e.shape[0], e.shape[2])
    i, k = e.shape[0] - 1, e.shape[2] - 1
    assert math.isclose(m[i, k], float(np.nanmedian(e[i, :, k])) / res.x[i], rel_tol=1e-12)


def test_null_excess_is_the_first_offset(small_sweep):
    _, _, res = small_sweep
    e = res.excess()
    assert res.null_excess().shape == e.shape[:2]
    assert np.array_equal(res.null_excess(), e[:, :, 0], equal_nan=True)


@pytest.mark.parametrize("draws, quantile, match", [
    (np.arange(19.0), 0.95, "at least 20 certified draws"),
    (np.r_[np.arange(19.0), np.nan], 0.95, "got 19"),        # nan is not a draw
    (np.arange(100.0), 1.0, "quantile must be in"),
    (np.arange(100.0), 0.0, "quantile must be in"),
])
def test_calibrated_threshold_rejects_too_few_draws_and_bad_quantiles(draws, quantile, match):
    with pytest.raises(ValueError, match=match):
        profile.calibrated_threshold(draws, quantile)


def test_calibrated_threshold_is_the_quantile_of_certified_draws():
    draws = np.r_[np.arange(1.0, 41.0), [np.nan] * 5]
    assert profile.calibrated_threshold(draws, 0.5) == pytest.approx(20.5)
    assert profile.calibrated_threshold(draws, 0.95) == pytest.approx(np.quantile(np.arange(1.0, 41.0), 0.95))


def test_cli_profile_writes_results_and_rejects_bad_flags(tmp_path, capsys):
    argv = ["profile", "--expert", "silu", "--n-min", "200", "--n-max", "400", "--points", "2",
            "--replicates", "2", "--offsets", "0.05,2,6", "--cache-dir", str(tmp_path / "c"),
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.load(open(tmp_path / "o" / "results.json"))
    assert (tmp_path / "o" / "profile.png").exists()
    assert res["fits"] == 2 * 2 * 6 and len(res["points"][0]["radius"]) == 2
    # two grid points cannot carry a slope (at least three medians inside the grid)
    assert res["slopes"]["radius"] is None and "a slope needs 3" in res["slope_note"]
    assert set(res["slope_range"]) >= {"points", "n", "effective_sample_size", "rule"}
    assert {"jax", "gated_hmoe"} <= set(res["versions"])
    for bad in (["--offsets", "0.1,2"], ["--k-fit", "4"], ["--split", "1.5"], ["--expert", "relu"]):
        capsys.readouterr()
        assert cli.main(argv + bad) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {bad[0]} "), err


@pytest.mark.user_input
def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="deltas must be >= 2 increasing offsets"):
        profile.profile(None, deltas=[0.2, 0.1], starts=np.zeros((2, 9)), nu=NU)
    with pytest.raises(ValueError, match="excess must have shape"):
        profile.radius(np.array([0.1, 0.2]), np.array([1.0]), 3.0)
    with pytest.raises(ValueError, match="k_fit must be k_true \\+ 1"):
        ep.ProfileConfig(k_fit=4).validate()
    with pytest.raises(ValueError, match="split must be in"):
        ep.ProfileConfig(split=0.0).validate()
    with pytest.raises(ValueError, match="offsets"):
        ep.ProfileConfig(offsets=(0.1, 2.0)).validate()


def test_bands_follow_from_the_recorded_calibration():
    """The asserted bands are what the declared rule gives on the calibration intervals."""
    for name, intervals in ep.CALIBRATION.items():
        band = ep.band_from_calibration([(None, ci) for ci in intervals], -0.25)
        assert band == ep.BANDS[name], name
    assert ep.HELD_OUT_SEED not in ep.CALIBRATION_SEEDS and 0 not in ep.CALIBRATION_SEEDS


@pytest.mark.slow
def test_held_out_seed_keeps_the_chapter_bands(tmp_path):
    """The chapter's assertions on a seed used nowhere else (reduced: SiLU and sigmoid at the
    chapter's sizes, linear at the smallest)."""
    configs = ep.chapter_configs(seed=ep.HELD_OUT_SEED, experts=("silu", "sigmoid", "linear"))
    configs["linear"] = ep.ProfileConfig(**{**configs["linear"].to_dict(),
                                            "offsets": tuple(ep.CHAPTER_OFFSETS),
                                            "n_max": 1000, "points": 1}).validate()
    res = {e: ep.run_profiles(c, cache_dir=tmp_path, progress=False) for e, c in configs.items()}
    for e, r in res.items():
        assert r.certified_fraction() >= 0.95, e
    lo, hi = ep.BANDS["silu"]
    assert lo <= res["silu"].slope().slope <= hi, res["silu"].slope()
    assert res["sigmoid"].slope(resolved=True).ci[1] < 0
    counts = res["linear"].status_counts()
    assert counts["interpolated"] == counts["below"] == 0, counts
    assert np.median(res["linear"].max_excess()) <= 9.49


@pytest.mark.parametrize("excess, expected", [
    ([0.0, 9.0, 1.0, 9.0], ("interpolated", 0.1 * 2 ** (4 / 9))),    # first component only
    ([float("nan"), 1.0, 9.0, 1.0], ("interpolated", 0.2 * 2 ** (3.0 / 8))),
    ([1.0, float("nan"), 9.0, 1.0], ("undetermined", float("nan"))),
    ([1.0, 9.0, float("nan"), 1.0], ("interpolated", 0.1 * 2 ** (3 / 8))),  # after the cut
    ([9.0, 1.0, 1.0, 1.0], ("below", 0.1)),
    ([1.0, 1.0, 1.0, 1.0], ("censored", 0.8)),
])
def test_connected_radius_is_that_of_the_first_component(excess, expected):
    r, status = profile.radius(np.array([0.1, 0.2, 0.4, 0.8]), np.array(excess), 4.0,
                               connected=True)
    assert status == expected[0]
    if math.isnan(expected[1]):
        assert math.isnan(r)
    else:
        assert r == pytest.approx(expected[1], rel=1e-12)


class _TwoBasins:
    """A stub profile problem: a fit started at psi >= 0.5, or at any offset >= 1, reaches the
    good basin (ssr = delta^2); a fit started below 0.5 at a small offset stalls 1 above it."""

    R, q, p, split = 2, 1, 2, 0.5

    def fit(self, psi0, delta):
        good = (psi0[:, 0] >= 0.5) | (delta >= 1.0)
        psi = np.where(good, 1.0, 0.0)[:, None]
        ssr = delta ** 2 + np.where(good, 0.0, 1.0)
        theta = np.concatenate([psi, np.full_like(psi, delta)], 1)
        return profile.PairFits(psi, theta, ssr, np.zeros(len(ssr)), np.ones(len(ssr), bool))

    def polish(self, theta):
        return np.full(len(theta), 0.0)


def test_backward_pass_rescues_offsets_stalled_from_below():
    deltas = np.array([0.1, 0.3, 1.0, 2.0])
    starts = np.zeros((4, 1))
    fwd = profile.profile(_TwoBasins(), deltas=deltas, starts=starts, nu=1.0)
    both = profile.profile(_TwoBasins(), deltas=deltas, starts=starts, nu=1.0, backward=True)
    np.testing.assert_allclose(fwd.ssr[:, :2], np.tile(deltas[:2] ** 2 + 1.0, (2, 1)))  # stalled
    np.testing.assert_allclose(both.ssr, np.tile(deltas ** 2, (2, 1)))    # rescued from above
    assert np.all(both.ssr <= fwd.ssr)


def test_slope_below_starts_at_the_first_small_median_and_needs_two_points(small_sweep):
    _, _, res = small_sweep
    med = res.median_radius()
    s = res.slope_below(float(med[1]))
    assert s is not None and list(s.x)[0] >= res.x[0]
    assert res.slope_below(float(med.min()) / 2) is None        # no point below
    with pytest.raises(ValueError, match="r_max"):
        res.slope_below(0.0)


def test_independent_nsweeps_use_other_designs_than_the_noise_sweep():
    """Chapter 04's independent-design check: SiLU n-sweeps on a seed other than the noise
    sweep's, over n/nu 1e9 ... 3e13, with the noise sweep's offsets; seed 0 is refused."""
    configs = ep.independent_nsweep_configs()
    noise = ep.chapter_noise_configs()["silu"]
    assert list(configs) == [1e-6, 1e-9]
    for nu, cfg in configs.items():
        assert cfg.seed == ep.INDEPENDENT_SEED != noise.seed
        assert cfg.sweep == "n" and cfg.noise == nu and cfg.offsets == noise.offsets
    xs = np.concatenate([np.array([1000, 30000]) / nu for nu in configs])
    assert xs.min() == pytest.approx(1e9) and xs.max() == pytest.approx(3e13)
    with pytest.raises(ValueError, match="seed must differ"):
        ep.independent_nsweep_configs(seed=0)
    with pytest.raises(ValueError, match="seed"):
        ep.independent_nsweep_configs(seed=-1)
