"""Rate fitting: known slopes recovered, bootstrap intervals, failures counted."""

import numpy as np
import pytest

from gated_hmoe.estimation import rates


def test_known_slope_and_interval():
    rng = np.random.default_rng(0)
    x = np.logspace(3, 5, 8)
    L = 2.0 * x[:, None] ** -0.5 * np.exp(0.2 * rng.standard_normal((8, 30)))
    s = rates.slope(x, L)
    assert abs(s.slope + 0.5) < 0.05
    assert s.ci[0] < -0.5 < s.ci[1] and s.ci[1] - s.ci[0] < 0.2
    assert "slope" in s.label()


def test_failures_counted_not_dropped():
    x = np.array([1e3, 1e4, 1e5])
    L = np.array([[1.0, 1.1, 0.9], [0.1, np.nan, 0.11], [0.01, 0.011, 0.009]])
    s = rates.slope(x, L)
    assert s.failures == (0, 1, 0)
    assert s.medians[1] == pytest.approx(0.11)  # nan counted as +inf -> median moves up


@pytest.mark.user_input
def test_range_and_bad_input():
    x = np.logspace(1, 4, 4)
    L = np.ones((4, 3)) * x[:, None] ** -1.0
    assert rates.slope(x, L, x_min=100).x == (100.0, 1000.0, 10000.0)
    with pytest.raises(ValueError, match="losses must have shape"):
        rates.slope(x, np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        rates.slope(x, L, x_min=1e4)
    with pytest.raises(ValueError, match="x must"):
        rates.slope(-x, L)
    with pytest.raises(ValueError, match="losses must be >= 0"):
        rates.slope(x, -L)
    with pytest.raises(ValueError, match="at least one replicate"):
        rates.slope(x, np.ones((4, 0)))
    with pytest.raises(ValueError, match="distinct x-values"):
        rates.slope(np.ones(4), L)
    with pytest.raises(TypeError, match="level must be a real number"):
        rates.slope(x, L, level="0.9")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        rates.slope(x, L, seed=-1)
    # failed fits (nan) are kept as +inf, an exact fit (median 0) gives a nan slope
    assert rates.slope(x, np.where(np.arange(3) == 0, np.nan, L)).failures == (1, 1, 1, 1)
    assert np.isnan(rates.slope(x, 0.0 * L).slope)


def test_deterministic():
    rng = np.random.default_rng(3)
    x = np.logspace(2, 4, 5)
    L = rng.lognormal(size=(5, 10))
    assert rates.slope(x, L, seed=1) == rates.slope(x, L, seed=1)


def test_loglog_slope_and_the_one_slope_format():
    assert rates.loglog_slope([1.0, 2.0, 4.0], [5.0, 5.0 / 16, 5.0 / 256])[0] == pytest.approx(-4.0)
    assert np.isnan(rates.loglog_slope([1.0, 2.0], [1.0, 0.0])[0])        # an exact zero
    with pytest.raises(ValueError, match="x must hold at least 2 distinct values"):
        rates.loglog_slope([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y must have shape"):
        rates.loglog_slope([1.0, 2.0], [1.0])
    rng = np.random.default_rng(0)
    x = np.logspace(2, 5, 6)
    s = rates.slope(x, x[:, None] ** -0.5 * np.exp(0.1 * rng.standard_normal((6, 20))))
    assert s.label() == "slope " + rates.format_slope(s)
    assert rates.format_slope((s.slope, *s.ci)) == rates.format_slope(s)
    undefined = rates.slope(x, np.zeros((6, 3)))
    assert "undefined" in undefined.label()
