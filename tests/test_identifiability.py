"""Tests for gated_hmoe.theory.identifiability (P1-P4, the exact-fit valley, the Gaussian
KL) and its figures in gated_hmoe.viz.theory."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sympy as sp  # noqa: E402

from gated_hmoe.estimation import rates, voronoi  # noqa: E402
from gated_hmoe.models import moe  # noqa: E402
from gated_hmoe.theory import identifiability as idf  # noqa: E402
from gated_hmoe.viz import theory as vt  # noqa: E402
from gated_hmoe.viz import style  # noqa: E402

POINT = {"x": 0.5, "x1": 0.5, "x2": -0.3, "beta": 0.7, "beta1": 0.7, "beta2": -0.2,
         "a": 1.3, "a1": 1.3, "a2": 0.4, "b": -0.4}


# --- P1 --------------------------------------------------------------------------------

@pytest.mark.parametrize("expert", ["linear", "sigmoid", "silu", "generic"])
@pytest.mark.parametrize("d", [1, 2])
def test_p1_holds_for_every_ridge_expert(expert, d):
    term = idf.ridge_term(expert, d=d)
    residuals = idf.p1_residuals(term)
    assert len(residuals) == d
    assert all(idf.is_zero(r) for r in residuals)


def test_p1_is_the_stated_identity_for_linear_experts():
    term = idf.ridge_term("linear")
    x, beta = term.x[0], term.beta[0]
    # both sides equal x exp(beta x)
    assert sp.simplify(sp.diff(term.u, term.a[0]) - x * sp.exp(beta * x)) == 0


def test_p1_wrong_partner_fails():
    term = idf.ridge_term("sigmoid")
    u, beta, a, b = term.u, term.beta[0], term.a[0], term.b
    wrong = sp.diff(u, beta, a) - sp.diff(u, b)     # not an identity
    assert abs(idf.evaluate_at(wrong, POINT)) > 1e-3


# --- P2 --------------------------------------------------------------------------------

def test_p2_holds_for_linear_experts():
    for d in (1, 2):
        res = idf.p2_residuals(idf.ridge_term("linear", d=d))
        assert set(res) == ({"euler", "aa", "ab", "bb", "beta"} if d == 1
                            else {"euler", "aa", "ab", "bb"})
        assert all(idf.is_zero(v) for v in res.values())


@pytest.mark.parametrize("expert", ["sigmoid", "silu"])
def test_p2_fails_for_nonlinear_experts(expert):
    res = idf.p2_residuals(idf.ridge_term(expert))
    for name, value in res.items():
        num = np.abs(np.asarray(idf.evaluate_at(value, POINT))).max()
        assert num > 1e-3, (expert, name, num)
        assert not idf.is_zero(value)


# --- P3 --------------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("expert", ["generic", "linear", "sigmoid"])
def test_p3_holds_for_quadratic_polynomial_gate(expert, symmetric):
    term = idf.quadratic_gate_term(expert, d=2, symmetric=symmetric)
    res = idf.p3_residuals(term)
    want = {(0, 0), (0, 1), (1, 1)} | (set() if symmetric else {(1, 0)})
    assert set(res) == want
    assert all(idf.is_zero(v) for v in res.values())


def test_p3_wrong_sign_and_wrong_factor_fail():
    term = idf.quadratic_gate_term("generic", d=2)
    u, A, b = term.u, term.A, term.b
    wrong_sign = sp.diff(u, A[0, 1]) + sp.diff(u, b[0], b[1])
    assert not idf.is_zero(wrong_sign)
    # symmetric parametrisation: the factor 2 off the diagonal is needed
    sym = idf.quadratic_gate_term("linear", d=2, symmetric=True)
    no_factor = sp.diff(sym.u, sym.A[0, 1]) - sp.diff(sym.u, sym.b[0], sym.b[1])
    pt = {"x1": 0.5, "x2": -0.3, "A11": 0.2, "A12": 0.1, "A22": -0.3, "b1": 0.4,
          "b2": 0.1, "c": 0.0, "w1": 1.3, "w2": 0.4, "w0": -0.4}
    assert abs(idf.evaluate_at(no_factor, pt)) > 1e-3


def test_monomial_gate_has_no_p3():
    term = idf.quadratic_gate_term("generic", d=2, monomial=True)
    assert term.b == ()
    with pytest.raises(ValueError, match="monomial"):
        idf.p3_residuals(term)
    first = idf.gate_first_derivatives(term)
    assert set(first) == {"A11", "A12", "A21", "A22", "c"}


# --- P4 --------------------------------------------------------------------------------

def test_rank_of_monomials():
    x = idf.default_grid()
    assert idf.numerical_rank(np.stack([x**0, x, x**2], axis=1)) == 3
    assert idf.numerical_rank(np.stack([x, 2 * x, x**2], axis=1)) == 2
    assert idf.numerical_rank(np.zeros((5, 3))) == 0


@pytest.mark.parametrize("expert,rank", [("linear", 4), ("sigmoid", 9), ("silu", 9)])
def test_rank_order_two(expert, rank):
    res = idf.family_rank(expert, 2)
    assert res.n_functions == 10
    assert res.rank == rank
    assert idf.exact_rank(expert, 2) == rank == idf.predicted_rank(expert, 2)


def test_linear_rank_grows_by_one_per_order():
    assert [idf.family_rank("linear", r).rank for r in (1, 2, 3)] == [3, 4, 5]
    assert [idf.exact_rank("linear", r) for r in (1, 2, 3)] == [3, 4, 5]


def test_glu_leaf_is_rank_deficient():
    res = idf.family_rank("glu", 2)
    assert res.n_functions == 21
    assert res.rank == idf.exact_rank("glu", 2) == 11
    assert res.rank < res.n_functions


def test_generic_ridge_rank_and_order_three_exact():
    assert [idf.exact_rank("generic", r) for r in range(4)] == [1, 4, 9, 16]
    assert idf.exact_rank("sigmoid", 3) == 16


def test_quadratic_gates_exact_ranks():
    # polynomial gate: P3 and P1-type duplicates; monomial gate: full rank for sigmoid
    assert idf.exact_rank("sigmoid", 2, gate="quadratic") == 12
    assert idf.exact_rank("sigmoid", 2, gate="monomial") == 10
    assert idf.exact_rank("linear", 2, gate="monomial") == 5


# --- valley and KL -----------------------------------------------------------------------

def _d1(cv):
    return np.array([voronoi.d1(G, cv.truth) for G in cv.measures])


def test_exact_fit_valley():
    deltas = np.logspace(-3, -1, 5)
    for expert in ("linear", "glu"):
        cv = idf.valley_curve(expert, deltas)
        assert np.all(cv.l2 < 1e-14) and np.all(_d1(cv) > 0)
    for expert in ("sigmoid", "silu"):
        cv = idf.valley_curve(expert, deltas)
        assert abs(rates.loglog_slope(deltas, cv.l2)[0] - 2.0) < 0.01
        assert abs(rates.loglog_slope(deltas, _d1(cv))[0] - 2.0) < 1e-9


def test_valley_curve_splits_the_library_truth():
    """The chapter's split (p = 0.3, v = (1, -1/2)) of moe.default_truth, for every class."""
    for expert in idf.EXPERTS:
        cv = idf.valley_curve(expert, [0.1])
        truth = moe.default_truth(expert)
        np.testing.assert_array_equal(cv.truth.expert, truth.expert)
        want = moe.valley_measure(0.1, expert=expert, p=0.3, direction=(1, -0.5))
        np.testing.assert_array_equal(cv.measures[0].expert, want.expert)
        np.testing.assert_array_equal(cv.measures[0].beta0, want.beta0)


def test_gaussian_kl():
    kl, (m1, m2, nu) = idf.gaussian_kl_one()
    assert sp.simplify(kl - (m1 - m2) ** 2 / (2 * nu)) == 0
    assert sp.simplify(kl - (m1 + m2) ** 2 / (2 * nu)) != 0   # a wrong formula fails
    kl3, m, mp, nu = idf.gaussian_kl_iid(3)
    assert sp.simplify(kl3 - sum((a - b) ** 2 for a, b in zip(m, mp)) / (2 * nu)) == 0


def test_kl_monte_carlo():
    G = moe.valley_measure(0.5, expert="sigmoid", p=0.3, direction=(1, -0.5))
    res = idf.kl_monte_carlo("sigmoid", G, moe.default_truth("sigmoid"), 4e-8,
                             samples=50_000, seed=1)
    assert abs(res.estimate - res.exact) <= 4 * res.std_error


# --- bad input -----------------------------------------------------------------------------

def test_bad_input():
    with pytest.raises(ValueError, match="order"):
        idf.family_rank("linear", -1)
    with pytest.raises(TypeError, match="order"):
        idf.family_rank("linear", 1.5)
    with pytest.raises(ValueError, match="expert"):
        idf.family_rank("relu", 2)
    with pytest.raises(ValueError, match="expert"):
        idf.ridge_term("tanh")
    with pytest.raises(ValueError, match="gate"):
        idf.family_rank("linear", 2, gate="cubic")
    with pytest.raises(ValueError, match="grid"):
        idf.family_rank("linear", 2, grid=[0.5])
    with pytest.raises(ValueError, match="grid"):
        idf.family_rank("linear", 2, grid=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="grid"):
        idf.family_rank("linear", 2, grid=[0.0, np.nan])
    with pytest.raises(ValueError, match="matrix"):
        idf.numerical_rank(np.ones(3))
    with pytest.raises(ValueError, match="rtol"):
        idf.numerical_rank(np.ones((3, 2)), rtol=0.0)
    with pytest.raises(TypeError, match="term"):
        idf.p1_residuals("u")
    with pytest.raises(ValueError, match="p"):
        idf.valley_curve("linear", [0.1], p=1.5)
    with pytest.raises(ValueError, match="deltas"):
        idf.valley_curve("linear", [0.1, np.inf])
    with pytest.raises(ValueError, match="expert"):
        idf.valley_curve("relu", [0.1])
    with pytest.raises(ValueError, match="d"):
        idf.ridge_term("linear", d=0)


def test_high_precision_rank_matches_exact():
    grid = np.linspace(-2.0, 2.0, 41)
    res = idf.family_rank("sigmoid", 2, grid=grid, rtol=1e-30, dps=50)
    assert res.rank == 9 == idf.exact_rank("sigmoid", 2)


def test_bools_are_not_numbers():
    G = moe.default_truth("sigmoid")
    with pytest.raises(TypeError, match="nu"):
        idf.kl_monte_carlo("sigmoid", G, G, True, samples=10)
    with pytest.raises(TypeError, match="rtol"):
        idf.family_rank("linear", 1, rtol=True)
    with pytest.raises(TypeError, match="rtol"):
        idf.numerical_rank(np.ones((3, 2)), rtol=True)
    with pytest.raises(TypeError, match="deltas"):
        idf.valley_curve("linear", [True, False])
    with pytest.raises(TypeError, match="order"):
        idf.family_rank("linear", True)
    with pytest.raises(TypeError, match="G_prime"):
        idf.kl_monte_carlo("sigmoid", G, {"beta0": [0.0]}, 1.0)


# --- figures (viz.theory): they draw what they receive ----------------------------------

def test_figures_draw_results():
    spectra = {e: idf.family_rank(e, 1) for e in ("linear", "sigmoid")}
    fig, axes = vt.plot_rank_vs_order({"linear": {0: 1, 1: 3}}, exact={"linear": {0: 1, 1: 3}},
                                      spectra=spectra)
    assert len(axes) == 2 and "rank 3 of 4" in axes[1].get_legend().get_texts()[0].get_text()
    deltas = np.logspace(-3, -1, 3)
    curves = [idf.valley_curve(e, deltas) for e in ("linear", "sigmoid")]
    fig2, ax = vt.plot_valley(curves, d1=_d1(curves[0]))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "0 up to round-off" in labels[0] and "slope 2.00" in labels[1]
    assert style.audit(fig) == [] and style.audit(fig2) == []
    plt.close("all")


def test_spectrum_explorer_calls_back():
    calls = []

    def compute(expert, order):
        calls.append((expert, order))
        return idf.family_rank(expert, order)

    box = vt.spectrum_explorer(compute, experts=idf.EXPERTS, max_order=1)
    # every (expert, order) once for the static explorer's frames, then the widget's start
    assert calls == [(e, r) for e in idf.EXPERTS for r in (0, 1)] + [("linear", 1)]
    assert box.static_html.count('class="gh-control"') == 2
    with pytest.raises(TypeError, match="compute"):
        vt.spectrum_explorer(None, experts=idf.EXPERTS)
    assert box.redraw is not None
    plt.close("all")
