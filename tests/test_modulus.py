"""The modulus m(delta): zero for linear experts (the valley), quartic for ridge experts; the
pair construction reproduces the truth at zero offset; the fitted exponent; bad input."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gated_hmoe.estimation import modulus
from gated_hmoe.models import moe


def test_modulus_linear_zero_ridge_quartic():
    assert modulus.modulus_values([0.2], expert="linear", starts=0)[0] < 1e-28
    m = modulus.modulus_values([0.1, 0.2], expert="silu", starts=0)
    assert 3.5 < math.log(m[1] / m[0]) / math.log(2) < 4.5
    assert 1e-7 < m[0] / 0.1 ** 4 < 1e-6


def test_modulus_values_is_modulus_at_each_offset_and_stops_at_zero():
    m = modulus.modulus_values([0.1, 0.2], expert="silu", starts=0, quad_points=60)
    assert m.shape == (2,)
    assert m.tolist() == [modulus.modulus_values([d], expert="silu", starts=0, quad_points=60)[0]
                          for d in (0.1, 0.2)]
    # linear experts: the first direction already reaches the valley; stopping changes nothing
    full = modulus.modulus_values([0.2], expert="linear", starts=1, quad_points=60)
    stop = modulus.modulus_values([0.2], expert="linear", starts=1, quad_points=60, stop_below=1e-28)
    assert full[0] <= 1e-28 and stop[0] <= 1e-28


def test_pair_measure_at_zero_offset_is_the_truth_for_every_gate():
    """With delta = 0 and no shift the split pair reproduces the truth exactly."""
    x = np.linspace(-1, 1, 41)[:, None]
    for gate in moe.GATES:
        G = moe.pin_last(moe.default_truth("silu", gate=gate))
        spec = moe.make_spec(expert="silu", gate=gate, k=3, D=1)
        w = spec.F - 1 + spec.P
        psi = np.concatenate([[G.beta0[0] - math.log(2)], np.ones(w), np.zeros(w), G.expert[1]])
        Gj = moe.MixingMeasure(*(None if a is None else jnp.asarray(a) for a in G))
        theta = modulus.pair_theta(jnp.asarray(psi), 0.0, Gj, spec, 0, True)
        f = moe.mean_unchecked(moe.unpack(theta, spec), jnp.asarray(x), "silu", gate)
        ref = np.asarray(moe.mean(G, x, expert="silu", gate=gate))
        assert np.max(np.abs(np.asarray(f) - ref)) < 1e-13


@pytest.mark.parametrize("kwargs, match", [
    ({"deltas": []}, "deltas"), ({"deltas": [0.1, -0.1]}, "deltas"),
    ({"deltas": [[0.1]]}, "deltas"), ({"gate": "cubic"}, "gate"), ({"expert": "relu"}, "expert"),
    ({"max_nfev": 0}, "max_nfev"), ({"starts": -1}, "starts"), ({"stop_below": -1.0}, "stop_below"),
    ({"quad_points": 0}, "quad_points"), ({"atom": 1}, "atom")])
def test_modulus_values_bad_input(kwargs, match):
    args = {"deltas": [0.1], "expert": "sigmoid", **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        modulus.modulus_values(args.pop("deltas"), **args)


def test_modulus_curve_fits_the_exponent():
    cv = modulus.modulus_curve([0.1, 0.2, 0.4], expert="sigmoid", starts=0, quad_points=60)
    assert 3.5 < cv.exponent < 4.5 and cv.coef > 0
    flat = modulus.modulus_curve([0.1, 0.2], expert="linear", starts=0, quad_points=60)
    assert math.isnan(flat.exponent) and np.all(flat.m <= 1e-28)
