"""Voronoi losses: zero at the truth, relabelling, a hand computation, a loop reference."""

import itertools
import math

import numpy as np
import pytest

from gated_hmoe.estimation import voronoi
from gated_hmoe.models import moe
from gated_hmoe.models.moe import MixingMeasure


def _loop_d1_d2(G, Gs, r):
    w, ws = np.exp(G.beta0), np.exp(Gs.beta0)
    om = [np.concatenate([G.beta1[i], G.expert[i]]) for i in range(len(w))]
    oms = [np.concatenate([Gs.beta1[j], Gs.expert[j]]) for j in range(len(ws))]
    cell = [int(np.argmin([np.linalg.norm(o - s) for s in oms])) for o in om]
    D = G.beta1.shape[1]
    d1 = d2 = 0.0
    for j in range(len(ws)):
        members = [i for i in range(len(w)) if cell[i] == j]
        mass = abs(sum(w[i] for i in members) - ws[j])
        d1 += mass
        d2 += mass
        for i in members:
            db = np.linalg.norm(G.beta1[i] - Gs.beta1[j])
            de = np.linalg.norm(G.expert[i] - Gs.expert[j])
            d1 += w[i] * ((db + de) if len(members) == 1 else (db ** 2 + de ** 2))
            da = np.linalg.norm(G.expert[i][:D] - Gs.expert[j][:D])
            dbb = abs(G.expert[i][D] - Gs.expert[j][D])
            d2 += w[i] * (db ** r + da ** r + dbb ** r)
    return d1, d2


def _random(rng, k, D=1):
    return MixingMeasure(rng.normal(size=k), rng.normal(size=(k, D)) * 3, rng.normal(size=(k, D + 1)) * 3)


def test_zero_at_truth():
    G = moe.default_truth("sigmoid")
    assert voronoi.d1(G, G) == 0.0 and voronoi.d2(G, G, r=2) == 0.0
    assert voronoi.identifiable_part(G, G) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_equals_loop(seed):
    rng = np.random.default_rng(seed)
    Gs = _random(rng, 2, D=2)
    G = _random(rng, 4, D=2)
    for r in (1, 1.5, 3):
        d1, d2 = _loop_d1_d2(G, Gs, r)
        assert voronoi.d1(G, Gs) == pytest.approx(d1, rel=1e-12)
        assert voronoi.d2(G, Gs, r=r) == pytest.approx(d2, rel=1e-12)


def test_relabelling_invariance():
    rng = np.random.default_rng(7)
    Gs = _random(rng, 2)
    G = _random(rng, 3)
    ref = (voronoi.d1(G, Gs), voronoi.d2(G, Gs), voronoi.identifiable_part(G, Gs))
    for perm in itertools.permutations(range(3)):
        p = list(perm)
        Gp = MixingMeasure(G.beta0[p], G.beta1[p], G.expert[p])
        got = (voronoi.d1(Gp, Gs), voronoi.d2(Gp, Gs), voronoi.identifiable_part(Gp, Gs))
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    q = [1, 0]
    Gsq = MixingMeasure(Gs.beta0[q], Gs.beta1[q], Gs.expert[q])
    assert voronoi.d1(G, Gsq) == pytest.approx(ref[0], rel=1e-12)


def test_hand_computed_example():
    # truth: atoms at omega=(0, 0, 0) mass 1 and (10, 0, 0) mass 1.
    Gs = MixingMeasure(np.zeros(2), np.array([[0.0], [10.0]]), np.zeros((2, 2)))
    # fitted: two atoms near the first (over-fitted cell), one near the second (singleton).
    G = MixingMeasure(np.log(np.array([0.5, 0.25, 2.0])), np.array([[0.0], [0.0], [10.0]]),
                      np.array([[0.3, 0.4], [0.0, -0.1], [0.0, 0.2]]))
    # mass: |0.75 - 1| + |2 - 1| = 1.25; over-fitted: 0.5*0.25 + 0.25*0.01; singleton: 2*0.2
    assert voronoi.d1(G, Gs) == pytest.approx(1.25 + 0.125 + 0.0025 + 0.4, rel=1e-12)
    # d2 r=1 (a, b split): 1.25 + 0.5*(0.3+0.4) + 0.25*(0+0.1) + 2*(0+0.2)
    assert voronoi.d2(G, Gs, r=1) == pytest.approx(1.25 + 0.35 + 0.025 + 0.4, rel=1e-12)
    ae = voronoi.atom_errors(G, Gs)
    assert ae["overfitted"].tolist() == [True, True, False]
    assert ae["worst_overfitted"] == pytest.approx(0.5) and ae["worst_singleton"] == pytest.approx(0.2)
    # V: |0.75-1| + |(0.5*(0.3,0.4) + 0.25*(0,-0.1))/0.75| + 0
    mean = (0.5 * np.array([0.3, 0.4]) + 0.25 * np.array([0.0, -0.1])) / 0.75
    assert voronoi.identifiable_part(G, Gs) == pytest.approx(0.25 + math.hypot(*mean), rel=1e-12)


@pytest.mark.user_input
def test_bad_input():
    G = moe.default_truth("linear")
    with pytest.raises(ValueError, match="r must"):
        voronoi.d2(G, G, r=0.5)
    with pytest.raises(TypeError, match="r must"):
        voronoi.d2(G, G, r="2")
    H = MixingMeasure(np.zeros(2), np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="gate dimensions"):
        voronoi.d1(H, G)
    H = MixingMeasure(np.zeros(2), np.zeros((2, 1)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="expert"):
        voronoi.d1(H, G)
    with pytest.raises(ValueError, match="k >= 1"):
        voronoi.d1(MixingMeasure(np.zeros(0), np.zeros((0, 1)), np.zeros((0, 2))), G)
    with pytest.raises(ValueError, match="G_true.beta0"):
        voronoi.d1(G, MixingMeasure(np.array([np.inf, 0]), G.beta1, G.expert))


def test_one_cell_computation_serves_measures_and_heads():
    """MoE atoms and attention heads go through the same :func:`voronoi.cells`."""
    atoms = np.array([[0.1, 0.0], [-0.1, 0.0], [3.0, 1.0]])
    true = np.array([[0.0, 0.0], [3.0, 1.2]])
    assign, sizes, err = voronoi.cells(atoms, true)
    assert assign.tolist() == [0, 0, 1] and sizes.tolist() == [2, 1]
    np.testing.assert_allclose(err, [0.1, 0.1, 0.2], rtol=1e-12)
    G = MixingMeasure(np.zeros(3), atoms[:, :1], np.c_[atoms[:, 1], np.zeros(3)])
    Gs = MixingMeasure(np.zeros(2), true[:, :1], np.c_[true[:, 1], np.zeros(2)])
    assert voronoi.measure_cells(G, Gs).tolist() == [0, 0, 1]
