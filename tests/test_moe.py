"""Mixture-of-experts models: regression function against a python loop, pinning, the free
parameters of a pinned measure, the exact-fit valley, the population distance, validation."""

import jax
import numpy as np
import pytest

from gated_hmoe.models import data, moe


def _loop_mean(G, x, expert, gate):
    sig = lambda u: 1.0 / (1.0 + np.exp(-u))
    out = np.zeros(len(x))
    D = x.shape[1]
    for t, xt in enumerate(x):
        z = []
        for i in range(len(G.beta0)):
            zi = G.beta0[i]
            if gate != "quadratic-monomial":
                zi += G.beta1[i] @ xt
            if gate != "linear":
                zi += xt @ G.quad[i] @ xt
            z.append(zi)
        z = np.array(z)
        pi = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        for i in range(len(z)):
            eta = G.expert[i]
            if expert == "glu":
                h = sig(eta[:D] @ xt + eta[D]) * (eta[D + 1:2 * D + 1] @ xt + eta[2 * D + 1])
            else:
                u = eta[:D] @ xt + eta[D]
                h = {"linear": u, "sigmoid": sig(u), "silu": u * sig(u)}[expert]
            out[t] += pi[i] * h
    return out


@pytest.mark.parametrize("expert", moe.EXPERTS)
@pytest.mark.parametrize("gate", moe.GATES)
def test_mean_matches_loop(expert, gate):
    rng = np.random.default_rng(0)
    k, D = 3, 2
    G = moe.MixingMeasure(rng.normal(size=k), rng.normal(size=(k, D)),
                          rng.normal(size=(k, moe.expert_dim(expert, D))),
                          None if gate == "linear" else rng.normal(size=(k, D, D)))
    x = rng.uniform(-1, 1, size=(7, D))
    np.testing.assert_allclose(moe.mean(G, x, expert=expert, gate=gate),
                               _loop_mean(G, x, expert, gate), rtol=1e-12, atol=1e-12)


def test_pin_last_keeps_function():
    rng = np.random.default_rng(1)
    G = moe.MixingMeasure(rng.normal(size=3), rng.normal(size=(3, 1)), rng.normal(size=(3, 2)))
    x = rng.uniform(-1, 1, size=(20, 1))
    Gp = moe.pin_last(G)
    assert Gp.beta0[-1] == 0 and np.all(Gp.beta1[-1] == 0)
    np.testing.assert_allclose(moe.mean(Gp, x, expert="silu"), moe.mean(G, x, expert="silu"),
                               rtol=1e-13)


def test_default_truths_are_pinned():
    for expert in moe.EXPERTS:
        G = moe.default_truth(expert)
        assert G.beta0.tolist() == [0.5, 0.0] and G.beta1[:, 0].tolist() == [5.0, 0.0]
        assert G.expert.shape == (2, moe.expert_dim(expert, 1))


@pytest.mark.user_input
def test_bad_input_names_argument():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        moe.make_spec(k=0, D=1, expert="linear")
    with pytest.raises(ValueError, match="gate must be one of"):
        moe.make_spec(k=2, D=1, expert="linear", gate="bogus")
    with pytest.raises(ValueError, match="D must be an integer >= 1"):
        moe.expert_dim("glu", -3)
    with pytest.raises(ValueError, match="gate must be one of"):
        moe.gate_features("bogus", np.zeros((2, 1)))
    G = moe.default_truth("linear")
    with pytest.raises(ValueError, match="expert"):
        moe.mean(G, np.zeros((2, 1)), expert="relu")
    with pytest.raises(ValueError, match="gate"):
        moe.mean(G, np.zeros((2, 1)), expert="linear", gate="cubic")
    with pytest.raises(ValueError, match="x must have shape"):
        moe.mean(G, np.zeros((2, 3)), expert="linear")
    with pytest.raises(ValueError, match="x must contain only finite"):
        moe.mean(G, np.array([[np.nan]]), expert="linear")
    with pytest.raises(ValueError, match="G.expert"):
        moe.mean(G, np.zeros((2, 1)), expert="glu")
    with pytest.raises(ValueError, match="G.quad"):
        moe.mean(G, np.zeros((2, 1)), expert="linear", gate="quadratic-monomial")
    with pytest.raises(TypeError, match="G must be a MixingMeasure"):
        moe.mean((1, 2, 3), np.zeros((2, 1)), expert="linear")
    with pytest.raises(ValueError, match="k >= 1"):
        moe.mean(moe.MixingMeasure(np.zeros(0), np.zeros((0, 1)), np.zeros((0, 2))),
                 np.zeros((2, 1)), expert="linear")


def test_sample_batch_matches_sample_per_key():
    G = moe.default_truth("silu", gate="quadratic-monomial")
    keys = jax.random.split(jax.random.key(5), 3)
    xb, yb = data.sample_batch(keys, G, n=40, noise_var=1e-4, expert="silu",
                               gate="quadratic-monomial")
    assert xb.shape == (3, 40, 1) and yb.shape == (3, 40)
    for i, k in enumerate(keys):
        x, y = data.sample(k, G, n=40, noise_var=1e-4, expert="silu", gate="quadratic-monomial")
        np.testing.assert_array_equal(xb[i], x)
        np.testing.assert_allclose(yb[i], y, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="noise_var"):
        data.sample_batch(keys, G, n=40, noise_var=-1.0, expert="silu", gate="quadratic-monomial")


@pytest.mark.parametrize("expert, gate, k, D, p", [
    ("sigmoid", "linear", 3, 1, 10), ("glu", "linear", 2, 1, 10),
    ("linear", "quadratic-monomial", 3, 2, 2 * 5 + 3 * 3), ("silu", "quadratic-polynomial", 2, 2, 7 + 6)])
def test_model_spec_counts_free_parameters(expert, gate, k, D, p):
    spec = moe.make_spec(expert=expert, gate=gate, k=k, D=D)
    assert spec.num_params == p
    assert spec.omega_dim == spec.F - 1 + spec.P


def test_validate_measure_checks_against_what_is_given():
    G = moe.default_truth("sigmoid")
    assert moe.validate_measure(G, "G").expert.shape == (2, 2)        # everything read off G
    with pytest.raises(ValueError, match=r"G.beta0 must have shape \(3,\), got \(2,\)"):
        moe.validate_measure(G, "G", k=3)
    with pytest.raises(ValueError, match=r"G.beta1 must have shape \(2, 2\)"):
        moe.validate_measure(G, "G", D=2)
    with pytest.raises(ValueError, match="G.quad must be None for gate='linear'"):
        moe.validate_measure(moe.default_truth("sigmoid", gate="quadratic-monomial"), "G",
                             gate="linear")
    # traced values: shapes only (no finiteness check on tracers)
    shapes = jax.jit(lambda b: moe.validate_measure(G._replace(beta0=b), "G", k=2).beta0)
    assert shapes(np.zeros(2)).shape == (2,)


def test_population_distance_of_the_valley():
    """Zero along the exact valley of linear experts; ~t^4 for ridge experts."""
    G = moe.default_truth("silu")
    d = [moe.population_sq_distance(moe.valley_measure(t, expert="silu"), G, expert="silu")
         for t in (0.05, 0.1)]
    assert 3.8 < np.log(d[1] / d[0]) / np.log(2) < 4.2
    assert moe.population_sq_distance(moe.valley_measure(1.0, expert="linear"),
                                      moe.default_truth("linear"), expert="linear") < 1e-28


@pytest.mark.parametrize("expert", ["linear", "glu"])
def test_valley_is_exact(expert):
    G = moe.default_truth(expert)
    x = np.linspace(-1, 1, 201)[:, None]
    for t in (0.3, 2.0):
        Gt = moe.valley_measure(t, expert=expert, p=0.3)
        diff = np.asarray(moe.mean(Gt, x, expert=expert)) - np.asarray(moe.mean(G, x, expert=expert))
        assert np.max(np.abs(diff)) <= 1e-12


@pytest.mark.parametrize("expert", ["sigmoid", "silu"])
def test_valley_not_exact_for_ridge(expert):
    G = moe.default_truth(expert)
    x = np.linspace(-1, 1, 201)[:, None]
    Gt = moe.valley_measure(1.0, expert=expert)
    diff = np.asarray(moe.mean(Gt, x, expert=expert)) - np.asarray(moe.mean(G, x, expert=expert))
    assert np.max(np.abs(diff)) > 1e-4


@pytest.mark.user_input
def test_valley_measure_bad_input():
    with pytest.raises(ValueError, match="direction must be a non-zero vector"):
        moe.valley_measure(0.5, expert="linear", direction=[0.0, 0.0])
    with pytest.raises(TypeError, match="atom must be an integer"):
        moe.valley_measure(0.5, expert="linear", atom="0")
    with pytest.raises(TypeError, match="p must be a finite real number"):
        moe.valley_measure(0.5, expert="linear", p="0.5")
    with pytest.raises(ValueError, match="t must be a finite real number"):
        moe.valley_measure(float("inf"), expert="linear")
    a = moe.valley_measure(np.float32(0.5), expert="linear")   # numpy scalars are numbers
    b = moe.valley_measure(0.5, expert="linear")
    assert np.array_equal(a.expert, b.expert)


