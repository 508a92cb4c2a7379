"""gated_hmoe.attention against independent references, plus shapes, dtypes and bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_hmoe.models import attention as A

VARIANTS = [(g, gr) for g in A.GATES for gr in A.GRANULARITIES
            if gr == "elementwise" or g in ("G1", "G2")]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def dense_loop_reference(p: A.AttentionParams, x: np.ndarray, mask=None) -> np.ndarray:
    """A plain-python loop over heads, queries, keys and channels (no shared code)."""
    wq, wk, wv, wo = (np.asarray(w) for w in (p.wq, p.wk, p.wv, p.wo))
    wg = None if p.wg is None else np.asarray(p.wg)
    act = _sigmoid if p.activation == "sigmoid" else (lambda z: z * _sigmoid(z))
    heads, d, d_k = wq.shape
    d_v, d_out = wo.shape[1:]
    n = x.shape[0]
    out = np.zeros((n, d_out))
    for h in range(heads):
        q = x @ wq[h]
        k = x @ wk[h]
        v = x @ wv[h]
        for t in range(n):
            if p.gate == "G4":
                q[t] = q[t] * act(x[t] @ wg[h])
            if p.gate == "G3":
                k[t] = k[t] * act(x[t] @ wg[h])
            if p.gate == "G2":
                v[t] = v[t] * act(x[t] @ wg[h])     # (d_v,) or (1,): both granularities broadcast
        for i in range(n):
            s = np.array([sum(q[i, c] * k[j, c] for c in range(d_k)) / np.sqrt(d_k) for j in range(n)])
            allowed = np.ones(n, bool) if mask is None else np.asarray(mask[i], bool)
            e = np.where(allowed, np.exp(s - s[allowed].max()), 0.0)
            pi = e / e.sum()
            head = sum(pi[j] * v[j] for j in range(n))
            if p.gate == "G1":
                head = head * act(x[i] @ wg[h])
            out[i] += head @ wo[h]
    if p.gate == "G5":
        out = out * act(x @ wg)
    return out


@pytest.mark.parametrize("gate,granularity", VARIANTS)
@pytest.mark.parametrize("activation", A.ACTIVATIONS)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_loop(gate, granularity, activation, causal):
    p = A.init_params(jax.random.key(3), d=3, heads=2, d_k=2, d_v=4, d_out=3, gate=gate,
                      granularity=granularity, activation=activation)
    x = np.asarray(jax.random.normal(jax.random.key(4), (5, 3)))
    mask = np.tril(np.ones((5, 5), bool)) if causal else None
    got = np.asarray(A.attention(p, x, mask=mask))
    want = dense_loop_reference(p, x, mask)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("causal", [False, True])
def test_matches_jax_dot_product_attention(causal):
    """Plain MHSA equals jax.nn.dot_product_attention followed by the output projection.

    jax.nn.dot_product_attention computes its softmax in float32 even for float64 inputs,
    hence the 1e-6 tolerance here; the float64 comparison at 1e-12 is the dense loop above.
    """
    p = A.init_params(jax.random.key(0), d=4, heads=3, d_k=5, d_v=5, d_out=2)
    x = jax.random.normal(jax.random.key(1), (6, 4))
    q, k, v = (jnp.einsum("nd,hde->nhe", x, w) for w in (p.wq, p.wk, p.wv))
    heads = jax.nn.dot_product_attention(q[None], k[None], v[None], is_causal=causal)[0]
    want = jnp.einsum("nhv,hvo->no", heads, p.wo)
    mask = jnp.tril(jnp.ones((6, 6), bool)) if causal else None
    np.testing.assert_allclose(A.attention(p, x, mask=mask), want, rtol=1e-6, atol=1e-9)


def test_attention_weights_rows_sum_to_one_and_respect_mask():
    p = A.init_params(jax.random.key(2), d=3, heads=2, d_k=2, d_v=2, d_out=1, gate="G3")
    x = jax.random.normal(jax.random.key(5), (4, 3))
    mask = jnp.tril(jnp.ones((4, 4), bool))
    w = A.attention_weights(p, x, mask=mask)
    assert w.shape == (2, 4, 4)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-14)
    assert float(jnp.abs(jnp.where(mask, 0.0, w)).max()) == 0.0


@pytest.mark.parametrize("gate,granularity", VARIANTS)
def test_shapes_and_dtype(gate, granularity):
    p = A.init_params(jax.random.key(0), d=3, heads=2, d_k=4, d_v=5, d_out=6, gate=gate,
                      granularity=granularity)
    for leaf in jax.tree_util.tree_leaves(p):
        assert leaf.dtype == jnp.float64
    assert p.wg is None if gate is None else p.wg.shape == A.gate_shape(
        gate, granularity, heads=2, d=3, d_k=4, d_v=5, d_out=6)
    out = A.attention(p, jnp.ones((7, 3)))
    assert out.shape == (7, 6) and out.dtype == jnp.float64
    assert p.sizes == {"heads": 2, "d": 3, "d_k": 4, "d_v": 5, "d_out": 6}


def test_params_are_a_pytree_with_static_settings():
    p = A.init_params(jax.random.key(0), d=2, heads=1, d_k=2, d_v=2, d_out=1, gate="G2",
                      granularity="headwise", activation="silu")
    leaves, treedef = jax.tree_util.tree_flatten(p)
    assert len(leaves) == 5
    q = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (q.gate, q.granularity, q.activation) == ("G2", "headwise", "silu")
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, p)
    np.testing.assert_allclose(doubled.wq, 2 * p.wq)
    # Gradients flow through every weight.
    xr = jax.random.normal(jax.random.key(1), (3, 2))
    g = jax.grad(lambda prm: A.attention_unchecked(prm, xr, None).sum())(p)
    assert all(bool(jnp.any(leaf != 0)) for leaf in jax.tree_util.tree_leaves(g))


def test_determinism_same_key_same_arrays():
    kw = dict(d=3, heads=2, d_k=2, d_v=2, d_out=1, gate="G1")
    a, b = A.init_params(jax.random.key(7), **kw), A.init_params(jax.random.key(7), **kw)
    c = A.init_params(jax.random.key(8), **kw)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.array_equal(u, v)
    assert not np.array_equal(a.wq, c.wq)
    x = jax.random.normal(jax.random.key(9), (4, 3))
    assert np.array_equal(A.attention(a, x), A.attention(b, x))


def test_vmap_over_a_batch_matches_loop():
    p = A.init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=2, d_out=2, gate="G5")
    xs = jax.random.normal(jax.random.key(1), (3, 4, 2))
    batched = jax.vmap(A.attention_unchecked, in_axes=(None, 0, None))(p, xs, None)
    for b in range(3):
        np.testing.assert_allclose(batched[b], A.attention(p, xs[b]), rtol=1e-14)


# ---- bad input ---------------------------------------------------------------------------

@pytest.fixture
def params():
    return A.init_params(jax.random.key(0), d=3, heads=2, d_k=2, d_v=2, d_out=1)


@pytest.mark.parametrize("x,match", [
    (np.ones(3), "x must have rank 2"),
    (np.ones((2, 3, 3)), "x must have rank 2"),
    (np.ones((4, 2)), r"x must have shape \(N, 3\)"),
    (np.array([[1.0, np.nan, 0.0]]), "x must contain only finite"),
    (np.array([[1.0, np.inf, 0.0]]), "x must contain only finite"),
])
@pytest.mark.user_input
def test_bad_x(params, x, match):
    with pytest.raises(ValueError, match=match):
        A.attention(params, x)


@pytest.mark.user_input
def test_bad_x_dtype(params):
    with pytest.raises(TypeError, match="x must be an array of real numbers"):
        A.attention(params, np.array([["a", "b", "c"]]))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(gate="G6"), ValueError, "gate must be one of"),
    (dict(granularity="channelwise"), ValueError, "granularity must be one of"),
    (dict(activation="tanh"), ValueError, "activation must be one of"),
    (dict(heads=0), ValueError, "heads must be an integer >= 1"),
    (dict(heads=2.0), TypeError, "heads must be an integer"),
    (dict(d="3"), TypeError, "d must be an integer"),
    (dict(d_k=True), TypeError, "d_k must be an integer"),
    (dict(gate="G3", granularity="headwise"), ValueError, "headwise"),
    (dict(gate="G5", granularity="headwise"), ValueError, "headwise"),
])
@pytest.mark.user_input
def test_bad_init_arguments(kwargs, exc, match):
    base = dict(d=3, heads=2, d_k=2, d_v=2, d_out=1)
    with pytest.raises(exc, match=match):
        A.init_params(jax.random.key(0), **{**base, **kwargs})


@pytest.mark.user_input
def test_init_params_key_scale_and_gate_shape_checks():
    base = dict(d=3, heads=2, d_k=2, d_v=2, d_out=1)
    with pytest.raises(TypeError, match="key must be a JAX random key"):
        A.init_params(0, **base)
    with pytest.raises(TypeError, match="scale must be a finite number > 0, got bool"):
        A.init_params(jax.random.key(0), scale=True, **base)
    p = A.init_params(jax.random.key(0), scale=np.float32(0.5), **base)   # numpy scalars are numbers
    assert p.wq.shape == (2, 3, 2)
    with pytest.raises(ValueError, match="gate must be one of"):
        A.gate_shape("G7", "elementwise", **base)
    with pytest.raises(ValueError, match="granularity must be one of"):
        A.gate_shape("G1", "bogus", **base)
    with pytest.raises(ValueError, match="heads must be an integer >= 1"):
        A.gate_shape("G1", "elementwise", **{**base, "heads": 0})


def test_wrong_gate_weight_shape(params):
    bad = A.AttentionParams(params.wq, params.wk, params.wv, params.wo,
                            wg=jnp.ones((2, 3)), gate="G1", granularity="elementwise")
    with pytest.raises(ValueError, match=r"params.wg must be of shape \(2, 3, 2\)"):
        A.attention(bad, jnp.ones((2, 3)))
    missing = A.AttentionParams(params.wq, params.wk, params.wv, params.wo, wg=None, gate="G5")
    with pytest.raises(ValueError, match="params.wg must be of shape"):
        A.attention(missing, jnp.ones((2, 3)))


def test_inconsistent_weights(params):
    bad = A.AttentionParams(params.wq, params.wk[:, :2, :1], params.wv, params.wo)
    with pytest.raises(ValueError, match="params.wk must have shape"):
        A.attention(bad, jnp.ones((2, 3)))
    nan = A.AttentionParams(params.wq.at[0, 0, 0].set(jnp.nan), params.wk, params.wv, params.wo)
    with pytest.raises(ValueError, match="params.wq must contain only finite"):
        A.attention(nan, jnp.ones((2, 3)))


def test_mask_values_are_checked(params):
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        A.attention(params, x, mask=np.full((2, 2), np.nan))
    with pytest.raises(TypeError, match="mask must be boolean"):
        A.attention(params, x, mask=np.full((2, 2), "yes"))
    np.testing.assert_array_equal(A.attention(params, x, mask=np.tril(np.ones((2, 2)))),
                                  A.attention(params, x, mask=np.tril(np.ones((2, 2), bool))))


def test_bad_mask(params):
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 2\)"):
        A.attention(params, jnp.ones((2, 3)), mask=jnp.ones((3, 3), bool))
    with pytest.raises(ValueError, match="mask must allow at least one key"):
        A.attention(params, jnp.ones((2, 3)), mask=jnp.zeros((2, 2), bool))


@pytest.mark.user_input
def test_not_params():
    with pytest.raises(TypeError, match="params must be an AttentionParams"):
        A.attention({"wq": 1}, jnp.ones((2, 3)))


def test_sign_flip_is_detected():
    """The dense reference is sensitive: flipping the sign of one score changes the output."""
    p = A.init_params(jax.random.key(0), d=2, heads=1, d_k=2, d_v=2, d_out=1)
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 2)))
    flipped = A.AttentionParams(-p.wq, p.wk, p.wv, p.wo)
    assert not np.allclose(A.attention(flipped, x), dense_loop_reference(p, x), rtol=1e-6)


def test_all_variants_enumerated():
    assert len(VARIANTS) == 8
    assert set(itertools.chain.from_iterable([VARIANTS])) >= {(None, "elementwise"), ("G1", "headwise")}
