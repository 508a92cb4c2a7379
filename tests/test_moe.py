"""Mixture-of-experts models: regression function against a python loop, pinning, validation."""

import numpy as np
import pytest

from gated_hmoe import moe


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


def test_hierarchical_matches_loop_and_leaf_masses():
    rng = np.random.default_rng(2)
    k1, k2, D = 2, 3, 1
    H = moe.HierarchicalMeasure(rng.normal(size=k1), rng.normal(size=(k1, D)),
                                rng.normal(size=(k1, k2)), rng.normal(size=(k1, k2, D)),
                                rng.normal(size=(k1, k2, 2)))
    x = rng.uniform(-1, 1, size=(9, D))
    ref = np.zeros(9)
    for i in range(k1):
        go = np.exp(x @ H.outer_beta1.T + H.outer_beta0)
        go = go[:, i] / go.sum(1)
        for j in range(k2):
            gi = np.exp(np.einsum("nd,jd->nj", x, H.beta1[i]) + H.beta0[i])
            gi = gi[:, j] / gi.sum(1)
            ref += go * gi * (1 / (1 + np.exp(-(x @ H.expert[i, j, :D] + H.expert[i, j, D]))))
    np.testing.assert_allclose(moe.hierarchical_mean(H, x, expert="sigmoid"), ref, rtol=1e-12)
    mass, slopes, eta = moe.leaf_atoms(H)
    assert mass.shape == (6,) and slopes.shape == (6, 2) and eta.shape == (6, 2)
    np.testing.assert_allclose(mass[4], np.exp(H.outer_beta0[1]) * np.exp(H.beta0[1, 1]))


def test_bad_input_names_argument():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        moe.num_params(0, 1, expert="linear")
    with pytest.raises(ValueError, match="gate must be one of"):
        moe.num_params(2, 1, expert="linear", gate="bogus")
    with pytest.raises(ValueError, match="D must be an integer >= 1"):
        moe.expert_dim("glu", -3)
    with pytest.raises(ValueError, match="gate must be one of"):
        moe.gate_features("bogus", np.zeros((2, 1)))
    empty = moe.HierarchicalMeasure(np.zeros(0), np.zeros((0, 1)), np.zeros((0, 2)),
                                    np.zeros((0, 2, 1)), np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match="k1 >= 1"):
        moe.hierarchical_mean(empty, np.zeros((2, 1)), expert="linear")
    with pytest.raises(TypeError, match="H must be a HierarchicalMeasure"):
        moe.leaf_atoms(moe.default_truth("linear"))
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
    import jax

    from gated_hmoe import data
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
