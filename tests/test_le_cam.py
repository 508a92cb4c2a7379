"""Tests for the computed Le Cam two-point bound, the valley's contact constant and the
rank test of arbitrary leaves and of every attention layer class
(gated_hmoe.theory.identifiability)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from gated_hmoe.models import heads
from gated_hmoe.theory import identifiability as idf

NS = np.logspace(4, 12, 9)


@pytest.mark.parametrize("expert", ["linear", "glu"])
def test_le_cam_bound_is_a_constant_on_the_valley(expert):
    lc = idf.le_cam_two_point(expert, NS, delta_max=0.8)
    assert lc.kl.max() < 1e-9                        # the two laws coincide
    expected = 0.8 * np.linalg.norm((1.0, -0.5)) / 4  # half of T(G_delta) at delta_max
    np.testing.assert_allclose(lc.bound, expected, rtol=1e-6)
    np.testing.assert_allclose(lc.best_delta, 0.8)


@pytest.mark.parametrize("expert", ["sigmoid", "silu"])
def test_le_cam_bound_shrinks_like_n_to_the_minus_quarter(expert):
    nu = 1e-6
    lc = idf.le_cam_two_point(expert, NS, nu=nu)
    C = idf.valley_contact_constant(expert)
    # closed form of the maximised bound: (||v||/6) sqrt(2 / (3 C)) (nu / n)^(1/4)
    closed = np.linalg.norm((1.0, -0.5)) / 6 * np.sqrt(2 / (3 * C)) * (nu / NS) ** 0.25
    np.testing.assert_allclose(lc.bound, closed, rtol=0.02)
    slope = np.polyfit(np.log(NS), np.log(lc.bound), 1)[0]
    assert abs(slope + 0.25) < 0.005
    assert np.all(np.abs(lc.kl - 2 / 9) < 0.03)        # the optimum sits at KL = 2/9


@pytest.mark.parametrize("expert", ["sigmoid", "silu"])
def test_contact_constant_matches_the_valley_curve(expert):
    cv = idf.valley_curve(expert, [1e-4, 2e-4])
    C = idf.valley_contact_constant(expert)
    np.testing.assert_allclose(cv.l2 / cv.deltas ** 2, C, rtol=1e-3)


@pytest.mark.parametrize("expert", ["linear", "glu"])
def test_contact_constant_is_zero_for_leaves_linear_in_their_values(expert):
    assert idf.valley_contact_constant(expert) == 0.0


def test_a_wrong_kl_would_fail():
    # the bound with the KL taken 100x too large is not the computed one
    lc = idf.le_cam_two_point("silu", NS)
    wrong = idf.le_cam_two_point("silu", NS * 100)
    assert np.all(wrong.bound < 0.5 * lc.bound)


@pytest.mark.parametrize("bad, match", [
    ({"expert": "tanh"}, "expert"), ({"ns": [0.5]}, "ns"), ({"ns": []}, "ns"),
    ({"nu": -1.0}, "nu"), ({"delta_max": 0.0}, "delta_max"), ({"direction": (1, 2, 3)}, "direction"),
])
def test_le_cam_rejects_bad_input(bad, match):
    kwargs = {"expert": "linear", "ns": [1e3], **bad}
    with pytest.raises((ValueError, TypeError), match=match):
        idf.le_cam_two_point(kwargs.pop("expert"), kwargs.pop("ns"), **kwargs)


def test_position_rank_follows_the_leaf_class():
    got = {pos: idf.position_rank(pos) for pos in heads.LAYER_POSITIONS}
    for pos, res in got.items():
        cls = heads.LEAF_CLASS[pos]
        assert (res.rank, res.n_functions) == {"linear": (4, 10), "GLU": (11, 21),
                                               "ridge (SiLU)": (9, 10)}[cls], pos
    with pytest.raises(ValueError, match="position"):
        idf.position_rank("G6")


def test_expression_rank_reproduces_family_rank_and_exact_rank():
    x, t, t0, c, c0 = sp.symbols("x t t0 c c0", real=True)
    glu = sp.exp(0) * (1 / (1 + sp.exp(-(t * x + t0)))) * (c * x + c0)
    vals = {"t": 1.3, "t0": -0.4, "c": -0.8, "c0": 0.5}
    assert expression_rank_of(glu, x, (t, t0, c, c0), vals) == idf.family_rank("glu", 2).rank
    a, b = sp.symbols("a b", real=True)
    assert expression_rank_of(a * x + b, x, (a, b), {"a": 1.3, "b": -0.4}) == 4


def expression_rank_of(h, x, params, vals):
    return idf.expression_rank(h, x, params, vals, order=2).rank


def test_expression_rank_rejects_bad_input():
    x, a = sp.symbols("x a", real=True)
    with pytest.raises(TypeError, match="h"):
        idf.expression_rank("a*x", x, (a,), {"a": 1.0})
    with pytest.raises(ValueError, match="missing"):
        idf.expression_rank(a * x, x, (a,), {})
    with pytest.raises(ValueError, match="beta"):
        idf.expression_rank(a * x, x, (a, sp.Symbol("beta", real=True)), {"a": 1.0})
