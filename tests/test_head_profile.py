"""Profile confidence sets for attention layers (E2): the surplus head's pair layout, the
exact-fit valley it spans, the constrained fits, the sweep and the command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_hmoe import cli
from gated_hmoe.estimation import head_profile, profile
from gated_hmoe.experiments import e1_profile, e2_profile
from gated_hmoe.models import heads

LINEAR_IN_VALUES = [p for p in heads.LAYER_POSITIONS if p not in heads.MASSFUL]


def _x(n=40, seed=0):
    x, _ = heads.sample_inputs(jax.random.key(seed), n=n, n_tokens=3, d=2)
    return x


@pytest.mark.parametrize("position", heads.LAYER_POSITIONS)
def test_pair_at_zero_offset_is_the_teacher(position):
    teacher = heads.layer_teacher(position, 2)
    layout = head_profile.PairLayout(position, teacher)
    student = layout.student(jnp.asarray(layout.declared_start()), 0.0)
    assert student["wv"].shape[0] == 3
    assert heads.max_output_gap(student, teacher, position, _x()) < 1e-13


@pytest.mark.parametrize("position", heads.LAYER_POSITIONS)
def test_value_offset_is_a_valley_exactly_when_the_leaf_is_linear_in_the_values(position):
    teacher = heads.layer_teacher(position, 2)
    layout = head_profile.PairLayout(position, teacher)
    rng = np.random.default_rng(1)
    psi = layout.declared_start(direction=rng.normal(size=layout.leaf_dim))
    gap = heads.max_output_gap(layout.student(jnp.asarray(psi), 0.7), teacher, position, _x())
    if position in LINEAR_IN_VALUES:
        assert gap < 1e-12, gap
    else:
        assert gap > 1e-3, gap


def test_offset_is_half_the_separation_and_masses_keep_the_split():
    teacher = heads.layer_teacher("ridge", 2)
    layout = head_profile.PairLayout("ridge", teacher, split=0.3)
    rng = np.random.default_rng(2)
    psi = jnp.asarray(rng.normal(size=layout.q))
    s = layout.student(psi, 0.4)
    leaf = [np.concatenate([np.ravel(s["wv"][h]), np.ravel(s["b"][h])]) for h in (0, 1)]
    assert np.linalg.norm(leaf[0] - leaf[1]) == pytest.approx(0.8, rel=1e-12)
    np.testing.assert_allclose(0.7 * np.asarray(s["wo"][0]), 0.3 * np.asarray(s["wo"][1]),
                               rtol=1e-12)


def test_constrained_fit_on_noiseless_valley_data_is_exact_and_certified():
    teacher = heads.layer_teacher("MHSA", 2)
    x = np.asarray(_x(n=24))[None]
    y = np.asarray(heads.batched_output(jax.tree.map(jnp.asarray, teacher), jnp.asarray(x[0]),
                                        "MHSA"))[None]
    problem = head_profile.AttentionPairProblem(x, y, position="MHSA", teacher=teacher,
                                                max_iter=50)
    start = problem.layout.declared_start(direction=np.array([1.0, 1.0, 0.0, 0.0]))
    fits = problem.fit(np.stack([start, start]), 0.9)
    assert fits.certified.all() and np.all(fits.ssr < 1e-20)
    assert fits.theta.shape == (2, problem.p) and np.all(fits.theta[:, -1] == 0.9)


def test_profile_of_a_ridge_head_grows_with_the_offset_and_a_linear_one_stays_flat(tmp_path):
    nu = 1e-8
    out = {}
    for position in ("ridge", "MHSA"):
        cfg = e2_profile.AttentionProfileConfig(position=position, sweep="noise", n=256,
                                                noise_min=nu, noise_max=nu, points=1,
                                                replicates=1, offsets=(0.1, 1.0, 5),
                                                pop_n=256, max_iter=100)
        starts = e2_profile.population_starts(cfg, cache_dir=tmp_path)
        out[position] = e2_profile.run_point(cfg, 256, nu, starts=starts)
    ridge = np.array(out["ridge"]["excess"], dtype=float)
    assert out["ridge"]["certified"] >= 4 and out["MHSA"]["certified"] == 5
    assert ridge[0, 2] > 10 * profile.CHI2_95           # delta = 0.32: rejected
    d = cfg.deltas()
    assert profile.radius(d, ridge[0], profile.CHI2_95, connected=True)[0] < d[2]
    # the contrast: at delta = 0.32 the ridge pair is rejected by far more than the linear
    # pair is anywhere on the grid (one replicate; measured 329 nu against at most 11 nu)
    linear = np.array(out["MHSA"]["excess"], dtype=float)
    assert ridge[0, 2] > 10 * np.max(linear), (ridge, linear)


def test_sweep_runs_through_the_cache_and_the_command_line(tmp_path, capsys):
    argv = ["attention-profile", "--position", "G1", "--sweep", "noise", "--n", "64",
            "--noise-min", "1e-9", "--noise-max", "1e-7", "--points", "2", "--replicates", "1",
            "--offsets", "0.1,1,2", "--cache-dir", str(tmp_path / "c"),
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.load(open(tmp_path / "o" / "results.json"))
    assert (tmp_path / "o" / "profile.png").exists()
    assert res["config"]["position"] == "G1" and res["fits"] == 2 * 1 * 2
    # two grid points cannot carry a slope (at least three medians inside the grid)
    assert res["slopes"]["radius"] is None and "a slope needs 3" in res["slope_note"]
    assert set(res["slope_range"]) >= {"points", "n", "effective_sample_size", "rule"}
    cfg = cli.attention_profile_config(cli.build_parser().parse_args(argv))
    again = e2_profile.run_profiles(cfg, cache_dir=tmp_path / "c", progress=False)
    assert [p["excess"] for p in again.points] == [p["excess"] for p in res["points"]]
    for bad in (["--position", "G7"], ["--tokens", "2"], ["--offsets", "0.1,2"],
                ["--split", "1.5"]):
        capsys.readouterr()
        assert cli.main(argv + bad) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {bad[0]} "), err


@pytest.mark.user_input
def test_bad_input_names_the_argument():
    teacher = heads.layer_teacher("ridge", 2)
    with pytest.raises(ValueError, match="atom must be in"):
        head_profile.PairLayout("ridge", teacher, atom=2)
    with pytest.raises(ValueError, match="split must be in"):
        head_profile.PairLayout("ridge", teacher, split=1.0)
    with pytest.raises(ValueError, match="position must be one of"):
        head_profile.PairLayout("G6", teacher)
    layout = head_profile.PairLayout("ridge", teacher)
    with pytest.raises(ValueError, match="direction must be non-zero"):
        layout.declared_start(direction=np.zeros(layout.leaf_dim))
    with pytest.raises(ValueError, match="y must have shape"):
        head_profile.AttentionPairProblem(np.zeros((1, 4, 3, 2)), np.zeros((1, 4, 2, 1)),
                                          position="ridge", teacher=teacher)
    with pytest.raises(ValueError, match="n_tokens must be"):
        e2_profile.AttentionProfileConfig(n_tokens=2).validate()
    with pytest.raises(ValueError, match="position must be one of"):
        e2_profile.AttentionProfileConfig(position="G9").validate()


@pytest.mark.parametrize("position", list(heads.MASSFUL))
def test_a_head_with_a_zero_leaf_is_switched_off_at_the_dead_head_offset(position):
    teacher = heads.layer_teacher(position, 2)
    layout = head_profile.PairLayout(position, teacher)
    d0 = layout.dead_head_offset()
    leaf_star = layout.flat(teacher, 0, layout.leaf_keys)
    psi = layout.declared_start(direction=leaf_star)
    psi[layout.leaf_dim: 2 * layout.leaf_dim] = leaf_star / 2 - leaf_star   # centre V*/2
    start = 2 * layout.leaf_dim + 2 * layout.router_dim
    psi[start: start + layout.mass_dim] = teacher["wo"][0]                  # M = W_O*
    s = layout.student(jnp.asarray(psi), d0)
    assert np.allclose(np.asarray(s["wv"][1]), 0.0, atol=1e-15)
    assert heads.max_output_gap(s, teacher, position, _x()) < 1e-13
    assert np.isnan(head_profile.PairLayout("MHSA", heads.layer_teacher("MHSA", 2)).dead_head_offset())


def test_held_out_seed_keeps_the_valley_contrast_of_chapter_05(tmp_path):
    """Chapter 05's asserted E2 profile contrast on a held-out seed (4; chapter: seed 2,
    bands set on seeds 0-1; seed 3 showed that 200 iterations certify too few G1 fits),
    reduced to the two ends of its noise range: the literal G1 gate's largest excess along
    the valley does not grow with n/nu, the tied G2's grows like n/nu. (Its size has no
    derived bound: on this seed the median at the noisiest point exceeded E1's chi2_4
    bound, which the chapter therefore does not assert. The certified share
    is reported, not asserted: on this seed 13 of 15 tied-G2 fits are certified at the noisiest point,
    the uncertified ones next to the split, where the pair is one head.)"""
    sweeps = {}
    for position in ("G1", "G2-tied"):
        config = e2_profile.AttentionProfileConfig(
            position=position, sweep="noise", n=64, noise_min=1e-10, noise_max=1e-6, points=2,
            replicates=3, offsets=(0.02, 2.0, 5), max_iter=600, seed=4)
        sweeps[position] = e2_profile.run_profiles(config, cache_dir=tmp_path, progress=False)
    for sw in sweeps.values():          # the statistics use certified fits only
        assert sw.certified_fraction() > 0.5
    g1, tied = sweeps["G1"], sweeps["G2-tied"]
    assert g1.max_excess_slope().slope <= 0.25
    assert 0.75 <= tied.max_excess_slope().slope <= 1.25


def test_the_committed_e2_record_loads_and_a_tampered_one_is_refused():
    from pathlib import Path

    record = json.loads((Path(__file__).resolve().parents[1] / "docs" / "records"
                         / "e2_profile_noise.json").read_text())
    sweeps = e2_profile.sweeps_from_record(record)
    assert list(sweeps) == list(heads.LAYER_POSITIONS)
    for sw in sweeps.values():
        assert sw.max_excess().shape == (3, 4) and 0 < sw.certified_fraction() <= 1
    tampered = json.loads(json.dumps(record))
    tampered["positions"]["G1"]["config"]["n"] = 128
    with pytest.raises(ValueError, match="cache_key"):
        e2_profile.sweeps_from_record(tampered)
    with pytest.raises(ValueError, match="positions"):
        e2_profile.sweeps_from_record({"commit": "x"})


def _record(name):
    from pathlib import Path

    return json.loads((Path(__file__).resolve().parents[1] / "docs" / "records"
                       / f"{name}.json").read_text())


def test_the_calibration_records_hold_ridge_positions_on_their_declared_seeds():
    cal = _record("e2_profile_calibration")
    assert cal["seeds"] == [1, 2, 3] and cal["grid"] == "record"
    sweeps = e2_profile.sweeps_from_record(cal)
    assert sorted(sweeps) == sorted(f"{p}@{s}" for p in heads.MASSFUL for s in (1, 2, 3))
    assert {sw.config.seed for sw in sweeps.values()} == {1, 2, 3}
    calibration = e2_profile.calibrate_radius(sweeps)
    # the pooled null draws: 2 positions x 3 seeds x 3 noise levels x 4 replicates
    assert calibration.draws.shape == (72,)
    assert profile.CHI2_95 < calibration.c < np.nanmax(calibration.draws)
    assert calibration.c == pytest.approx(np.nanquantile(calibration.draws, 0.95), rel=1e-12)
    local = {name: _record(name) for name in ("e2_profile_local_calibration",
                                              "e2_profile_local", "e2_profile_local_heldout")}
    assert [r["seeds"] for r in local.values()] == [[1, 2], [0], [5]]
    for r in local.values():
        for sw in e2_profile.sweeps_from_record(r).values():
            assert sw.config.offsets == (0.005, 2.0, 9) and sw.config.points == 5
    with pytest.raises(ValueError, match="ridge position"):
        e2_profile.calibrate_radius(e2_profile.sweeps_from_record(_record("e2_profile_noise")))
    for name, grid, seed, noise in (("e2_profile_nsweep", "nsweep", 0, 1e-9),
                                    ("e2_profile_nsweep_low", "nsweep-low", 0, 1e-11),
                                    ("e2_profile_nsweep_heldout", "nsweep", 5, 1e-9)):
        nsweep = _record(name)
        assert nsweep["seeds"] == [seed] and nsweep["grid"] == grid and nsweep["dirty"] is False
        (sw,) = e2_profile.sweeps_from_record(nsweep).values()
        assert sw.config.sweep == "n" and sw.config.noise == noise and sw.config.seed == seed
        assert list(sw.n) == [26, 82, 258, 813, 2560] and sw.config.position == "G2-tied"


def test_held_out_seed_keeps_the_ridge_radius_slope_in_its_band(tmp_path):
    """Chapter 05's ridge radius slope band (local grid; threshold from seeds 1-3, band from
    seeds 1-2, asserted on seed 0) on the held-out seed 5, reduced to the grid's two ends
    for the tied G2 gate (the full held-out run of both ridge positions is the committed
    record the chapter shows)."""
    calibration = e2_profile.calibrate_radius(
        e2_profile.sweeps_from_record(_record("e2_profile_calibration")))
    local_cal = e2_profile.sweeps_from_record(_record("e2_profile_local_calibration"))
    lo, hi = e2_profile.radius_band({k: sw for k, sw in local_cal.items()
                                     if sw.config.position == "G2-tied"}, calibration.c)
    config = e2_profile.AttentionProfileConfig(
        position="G2-tied", sweep="noise", n=256, noise_min=1e-12, noise_max=1e-8, points=2,
        replicates=4, offsets=(0.005, 2.0, 9), seed=5)
    sweep = e2_profile.run_profiles(config, cache_dir=tmp_path, progress=False)
    assert sweep.certified_fraction() > 0.5
    assert lo <= sweep.slope(calibration.c, resolved=True).slope <= hi


def test_held_out_seed_n_sweep_retraces_the_noise_sweep_from_a_few_hundred_sequences(tmp_path):
    """Chapter 05's n-sweep claims, stated after the seed-0 sweeps were seen (the declared
    agreement failed at n = 26) and checked on the held-out seed 5's record, rerun reduced
    (n = 26 and 258 at nu = 1e-9; the draws are nested, so these are the record's own first
    258 sequences: a reproduction of the record's points, not new data): at n = 258 the
    median radius is within E1's factor of the seed-5 noise sweep's at the same n/nu; at
    n = 26 it is larger, and the 26-sequence designs' modulus (excess / (n/nu) at
    delta = 0.45 and 0.21) is smaller."""
    calibration = e2_profile.calibrate_radius(
        e2_profile.sweeps_from_record(_record("e2_profile_calibration")))
    noise = e2_profile.sweeps_from_record(_record("e2_profile_local_heldout"))["G2-tied"]
    config = e2_profile.AttentionProfileConfig(
        position="G2-tied", sweep="n", n_min=26, n_max=258, points=2, noise=1e-9,
        replicates=4, offsets=(0.005, 2.0, 9), seed=5)
    sweep = e2_profile.run_profiles(config, cache_dir=tmp_path, progress=False)
    assert list(sweep.n) == [26, 258] and sweep.certified_fraction() > 0.5
    ratio = sweep.median_radius(calibration.c) / e1_profile.interpolated_medians(
        noise, sweep.x, calibration.c)
    assert 1 / e1_profile.AGREEMENT_FACTOR <= ratio[1] <= e1_profile.AGREEMENT_FACTOR, ratio
    assert ratio[0] > 1, ratio
    k = [int(np.argmin(np.abs(config.deltas() - d))) for d in (0.45, 0.2)]
    modulus = sweep.design_modulus()[:, k]
    assert np.all(modulus[0] < modulus[1]), modulus


def test_max_excess_figure_follows_the_book_style():
    from pathlib import Path

    from gated_hmoe.viz import profile as vprofile
    from gated_hmoe.viz import style

    record = json.loads((Path(__file__).resolve().parents[1] / "docs" / "records"
                         / "e2_profile_noise.json").read_text())
    sweeps = e2_profile.sweeps_from_record(record)
    fig, ax = style.new_figure()
    vprofile.max_excess_axes(ax, {p: sweeps[p] for p in ("G1", "G2-tied")},
                             bound=e2_profile.VALLEY_EXCESS_BOUND)
    assert style.audit(fig) == []
    assert len(ax.get_lines()) >= 4          # two series, the reference slope, the bound
