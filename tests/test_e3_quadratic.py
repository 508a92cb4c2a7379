"""E3, quadratic gates: configurations, the cached modulus for quadratic gates, tables, figures."""

import math

import numpy as np
import pytest

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
