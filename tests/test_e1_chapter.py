"""The rate chapter's experiment set (E1): configs, modulus curve, valley profile, overlap,
budget rows, figures and the live fit."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from gated_hmoe.estimation import modulus, rates
from gated_hmoe.experiments import e1_rates as rb
from gated_hmoe.viz import rates as vr
from gated_hmoe.viz import style


def _fake_result(config, slope_by_metric, failures=0, seed=0):
    """A SweepResult whose losses follow known power laws in n/nu (with lognormal scatter)."""
    rng = np.random.default_rng(seed)
    points = []
    for i, (n, nu) in enumerate(config.grid()):
        x = n / nu
        reps = []
        for r in range(config.replicates):
            rep = {m: float(x ** b * math.exp(0.05 * rng.standard_normal()))
                   for m, b in slope_by_metric.items()}
            for m in rb.METRICS:
                rep.setdefault(m, 1.0)
            rep["excess_loss"] = -5.0
            reps.append(rep)
        points.append({"n": n, "noise": nu, "x": x, "seconds": 0.0,
                       "failures": failures if i == 0 else 0, "replicates": reps})
    return rb.SweepResult(config, points, rb.compute_slopes(config, points),
                                   0.0, {})


def test_noise_configs_follow_the_protocol():
    cfgs = rb.noise_sweep_configs()
    assert set(cfgs) == set(rb.NOISE_CELLS)
    for (expert, spread), c in cfgs.items():
        assert c.sweep == "noise" and c.n == 1000 and c.k_true == 2 and c.k_fit == 3
        assert c.init == "split" and c.spread == spread and c.replicates >= 12
        x = np.array([n / nu for n, nu in c.grid()])
        assert x[0] == pytest.approx(1e7) and x[-1] == pytest.approx(1e17)
        lo, _ = c.slope_range()
        assert lo == pytest.approx(5.6e10, rel=1e-3)
        assert np.sum(x >= lo * (1 - 1e-9)) == 6          # 10^10.75 is a grid point
        assert np.any(np.isclose(x, 10 ** 10.75))
    with pytest.raises(ValueError, match="replicates must be >= 12"):
        rb.noise_sweep_configs(replicates=8)


def test_n_configs_declare_their_start():
    cfgs = rb.n_sweep_configs()
    assert set(cfgs) == {(e, k) for e in rb.CLASSES for k in (2, 3)}
    for (e, k), c in cfgs.items():
        assert c.init == ("near" if k == 2 else "split") and c.k_fit == k
        assert c.grid()[-1][0] == 30_000 and c.grid()[0][0] == 1000
    with pytest.raises(ValueError, match="n_max"):
        rb.n_sweep_configs(n_max=10)


def test_modulus_curve_matches_library_modulus():
    # the chapter's call (early stop at round-off) against the plain values
    cv = modulus.modulus_curve(np.array([0.2]), expert="sigmoid", starts=0, stop_below=1e-28)
    ref = modulus.modulus_values([0.2], expert="sigmoid", starts=0)[0]
    assert cv.m[0] == pytest.approx(ref, rel=1e-6)
    assert math.isnan(cv.exponent)                          # one point: no slope fitted
    with pytest.raises(ValueError, match="deltas must be a non-empty 1-d array of numbers > 0"):
        modulus.modulus_curve(np.array([-0.1, 0.1]), expert="silu")
    with pytest.raises(ValueError, match="expert"):
        modulus.modulus_curve(np.array([0.1]), expert="cubic")


def test_valley_profile_linear_flat_ridge_quartic():
    ts = np.logspace(-3, -1, 3)
    lin = rb.valley_profile("linear", ts)
    assert np.all(lin["along"] < 1e-28)
    assert np.polyfit(np.log(ts), np.log(lin["across"]), 1)[0] == pytest.approx(2, abs=0.05)
    sig = rb.valley_profile("sigmoid", ts)
    assert np.polyfit(np.log(ts), np.log(sig["along"]), 1)[0] == pytest.approx(4, abs=0.05)
    # a wrong claim must fail: sigmoid's valley is not flat
    assert not np.all(sig["along"] < 1e-28)


def test_slope_rows_plateau_and_overlap():
    noise_cfg = rb.noise_sweep_configs()[("silu", 0.1)]
    res = _fake_result(noise_cfg, {"worst_overfitted": -0.25, "d1": -0.5, "V": -0.5}, failures=3)
    row = rb.slope_rows({("silu", 0.1): res})[0]
    assert row["failures"] == (3, 9 * 12)
    assert row["worst_overfitted"][0] == pytest.approx(-0.25, abs=0.02)
    assert rates.format_slope(row["d1"]).startswith("-0.5")
    assert rates.format_slope(None) == "-"
    flat = _fake_result(noise_cfg, {"worst_overfitted": 0.0})
    assert rb.plateau(flat) == pytest.approx(1.0, rel=0.05)
    n_cfg = rb.n_sweep_configs()[("silu", 3)]
    n_res = _fake_result(n_cfg, {"worst_overfitted": -0.25})
    ov = rb.sweep_overlap(n_res, res, "worst_overfitted")
    assert ov["max_log10_ratio"] < 0.05 and len(ov["x"]) == 4
    shifted = _fake_result(n_cfg, {"worst_overfitted": -0.25 + 0.2})   # a different law
    assert rb.sweep_overlap(shifted, res, "worst_overfitted")["max_log10_ratio"] > 0.5


def test_rate_panel_shows_failures():
    cfg = rb.noise_sweep_configs()[("linear", 0.1)]
    res = _fake_result(cfg, {"worst_overfitted": 0.0, "d1": 0.0, "V": -0.5}, failures=2)
    fig, ax = vr.rate_panel(res)
    assert "2 of 108" in ax.get_legend().get_title().get_text()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("[" in lab for lab in labels)                 # slopes carry their intervals
    # noise-free fake losses give zero-width intervals, which the audit flags; nothing else
    assert all("zero-width interval" in f for f in style.audit(fig)), style.audit(fig)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_live_fit_validates_before_fitting():
    with pytest.raises(ValueError, match="n must be <= 1000"):
        rb.live_fit(expert="silu", k=3, n=5000, noise=1e-6, spread=0.1)
    with pytest.raises(ValueError, match="k must be 2 or 3"):
        rb.live_fit(expert="silu", k=4, n=100, noise=1e-6, spread=0.1)
    with pytest.raises(ValueError, match="noise"):
        rb.live_fit(expert="silu", k=2, n=100, noise=-1.0, spread=0.1)
    with pytest.raises(ValueError, match="expert"):
        rb.live_fit(expert="cubic", k=2, n=100, noise=1e-6, spread=0.1)


def test_live_fit_small():
    out = rb.live_fit(expert="sigmoid", k=2, n=200, noise=1e-8, spread=0.05, replicates=2)
    assert len(out["measures"]) == 2 and out["x"].shape == (200,)
    assert all(loss["d1"] < 0.05 for loss in out["losses"])
    assert np.max(np.abs(out["f_fit"] - out["f_true"])) < 1e-3
    fig, _ = vr.plot_live_fit(out)
    assert fig.axes[0].get_xlabel() == "input x"
    assert style.audit(fig) == []


def _set_pair_weights(res, weight):
    """Give every fit a theta (sigmoid, k = 3, D = 1) whose over-fitted pair (atoms 0, 1) has
    gate intercepts ``log 0.3`` and ``log weight(i, r)`` (the pinned atom 2 has 0)."""
    for i, p in enumerate(res.points):
        for r, rep in enumerate(p["replicates"]):
            rep["theta"] = [math.log(0.3), 5.0, math.log(weight(i, r)), 5.0,
                            4.0, -2.0, 4.0, -2.0, 5.0, 2.0]
            rep["atom_overfitted"] = [True, True, False]
    return res


def test_overfitted_weights_and_budget_rows():
    import dataclasses

    cfg = rb.noise_sweep_configs()[("sigmoid", 0.1)]
    law = {"worst_overfitted": -0.25, "d1": -0.5, "V": -0.5}
    short = _set_pair_weights(_fake_result(cfg, law), lambda i, r: 0.3)
    w = short.overfitted_weights()
    assert w.shape == (9, 12) and np.allclose(w, 0.3 / 1.6)
    long_cfg = rb.longer_budget({"k": cfg}, 5000)["k"]
    assert long_cfg.max_iter == 5000 and long_cfg.grid() == cfg.grid()
    low = int(np.argmax(short.x >= cfg.slope_range()[0]))               # first point of the range
    long = _set_pair_weights(_fake_result(long_cfg, law, failures=1),
                             lambda i, r: 0.01 if (i == low and r < 5) else 0.3)
    for rep in long.points[low]["replicates"]:                          # fading: larger errors
        rep["worst_overfitted"] *= 10.0
    long.slopes = rb.compute_slopes(long_cfg, long.points)
    row = rb.budget_rows({("sigmoid", 0.1): short}, {("sigmoid", 0.1): long})[0]
    assert row["failures"] == (0, 1, 108)
    assert row["fading_low"] == (0, 5) and row["fading_upper"] == (0, 0)
    assert row["x_low"] == pytest.approx(5.6e10, rel=0.01)
    assert row["upper_change"] == 0.0                     # same losses over the upper range
    assert row["main"][1].slope < row["main"][0].slope - 0.05
    assert row["upper"][0].slope == pytest.approx(row["upper"][1].slope)
    text = rb.format_budget_rows([row], (500, 5000))
    assert "max_iter 500 | 5000" in text and "0 | 5" in text
    other = _fake_result(dataclasses.replace(cfg, seed=1).validate(), law)
    with pytest.raises(ValueError, match="same sweep"):
        rb.budget_rows({"k": short}, {"k": other})
    with pytest.raises(ValueError, match="max_iter"):
        rb.longer_budget({"k": cfg}, 0)


def test_audit_finds_zero_width_slopes_and_hidden_series():
    import matplotlib.pyplot as plt
    fig, ax = style.new_figure()
    x = np.array([1.0, 10.0, 100.0])
    ax.plot(x, np.full(3, 2.0), "o-", label="linear: slope +0.00 [+0.00, +0.00]")
    ax.plot(x, np.full(3, 2.0), "o-", label="GLU")
    ax.set(xlabel="n", ylabel="radius r_n")
    ax.legend()
    found = style.audit(fig)
    assert any("zero-width interval" in f for f in found), found
    assert any("'GLU' hides 'linear" in f for f in found), found
    plt.close(fig)
