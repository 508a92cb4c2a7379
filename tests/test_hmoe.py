"""The attention <-> three-level HMoE identity: property tests over shapes and gates."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gated_hmoe.models import attention as A
from gated_hmoe.models import hmoe as H

from test_attention import VARIANTS, dense_loop_reference


@given(
    n=st.integers(1, 5), heads=st.integers(1, 3), d=st.integers(1, 4), d_k=st.integers(1, 4),
    d_v=st.integers(1, 4), d_out=st.integers(1, 3), variant=st.sampled_from(VARIANTS),
    activation=st.sampled_from(A.ACTIVATIONS), causal=st.booleans(), seed=st.integers(0, 2**16),
)
def test_identity_property(n, heads, d, d_k, d_v, d_out, variant, activation, causal, seed):
    gate, granularity = variant
    k1, k2 = jax.random.split(jax.random.key(seed))
    p = A.init_params(k1, d=d, heads=heads, d_k=d_k, d_v=d_v, d_out=d_out, gate=gate,
                      granularity=granularity, activation=activation, scale=1.5)
    x = jax.random.normal(k2, (n, d))
    mask = jnp.tril(jnp.ones((n, n), bool)) if causal else None
    want = A.attention(p, x, mask=mask)
    got = H.entries(H.attention_as_hmoe(p, x, mask=mask))
    scale = float(jnp.abs(want).max()) + 1e-300
    assert float(jnp.abs(got - want).max()) <= 1e-12 * scale


@pytest.mark.parametrize("gate,granularity", VARIANTS)
def test_levels_have_the_documented_structure(gate, granularity):
    p = A.init_params(jax.random.key(1), d=3, heads=2, d_k=2, d_v=3, d_out=2, gate=gate,
                      granularity=granularity)
    x = jax.random.normal(jax.random.key(2), (4, 3))
    t = H.attention_as_hmoe(p, x)
    assert t.head_router.shape == (4, 2, 2)
    assert t.token_router.shape == (2, 4, 4)
    assert t.channel_router.shape == (2, 4, 3, 2)
    assert t.experts.shape == (2, 4, 3)
    np.testing.assert_allclose(t.token_router.sum(-1), 1.0, rtol=1e-14)
    # Level 1 is constant unless the gate is G1 headwise or G5.
    assert bool(jnp.all(t.head_router == 1.0)) == (gate not in ("G5",) and
                                                   not (gate == "G1" and granularity == "headwise"))
    # Level 3 is the plain output projection unless the gate is G1 elementwise.
    plain3 = bool(jnp.all(t.channel_router == p.wo[:, None]))
    assert plain3 == (not (gate == "G1" and granularity == "elementwise"))
    # Leaves are linear in x (E(2x) = 2 E(x)) unless the gate is G2.
    t2 = H.attention_as_hmoe(p, 2 * x)
    linear = bool(jnp.allclose(t2.experts, 2 * t.experts, rtol=1e-13))
    assert linear == (gate != "G2")


def test_matches_dense_reference_directly():
    """Independent of attention.py: the HMoE sum equals a python loop over the formula."""
    p = A.init_params(jax.random.key(3), d=2, heads=2, d_k=3, d_v=2, d_out=2, gate="G1")
    x = np.asarray(jax.random.normal(jax.random.key(4), (3, 2)))
    np.testing.assert_allclose(H.entries(H.attention_as_hmoe(p, x)), dense_loop_reference(p, x),
                               rtol=1e-12)


@pytest.mark.parametrize("gate,granularity", [(None, "elementwise"), ("G1", "headwise"),
                                              ("G3", "elementwise"), ("G4", "elementwise"),
                                              ("G5", "elementwise")])
def test_collapsed_level_three(gate, granularity):
    """Level 3 collapses into one linear expert (c^h_m)^T x_j with c = W_V W_O."""
    p = A.init_params(jax.random.key(5), d=3, heads=2, d_k=2, d_v=4, d_out=2, gate=gate,
                      granularity=granularity)
    x = jax.random.normal(jax.random.key(6), (4, 3))
    t = H.attention_as_hmoe(p, x)
    c = H.collapsed_experts(p, x)                                   # (H, N, d_out)
    got = jnp.einsum("ihm,hij,hjm->im", t.head_router, t.token_router, c)
    np.testing.assert_allclose(got, A.attention(p, x), rtol=1e-12)


@pytest.mark.parametrize("gate,granularity", [("G1", "elementwise"), ("G2", "elementwise"),
                                              ("G2", "headwise")])
def test_collapse_refused_when_level_three_depends_on_input(gate, granularity):
    p = A.init_params(jax.random.key(5), d=3, heads=2, d_k=2, d_v=4, d_out=2, gate=gate,
                      granularity=granularity)
    with pytest.raises(ValueError, match="input-independent level 3"):
        H.collapsed_experts(p, jnp.ones((2, 3)))


@pytest.mark.user_input
def test_entries_rejects_inconsistent_terms():
    p = A.init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=2, d_out=1)
    t = H.attention_as_hmoe(p, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="terms.token_router has shape"):
        H.entries(t._replace(token_router=t.token_router[:, :2]))
    with pytest.raises(TypeError, match="terms must be an HMoETerms"):
        H.entries(tuple(t))


@pytest.mark.user_input
def test_bad_input_is_rejected_before_tracing():
    p = A.init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=2, d_out=1)
    with pytest.raises(ValueError, match="x must have rank 2"):
        H.attention_as_hmoe(p, jnp.ones(2))


@pytest.mark.parametrize("where", ["token_router", "channel_router", "experts", "head_router"])
def test_a_wrong_factor_breaks_the_identity(where):
    """The identity check can fail: negating one factor changes the sum."""
    p = A.init_params(jax.random.key(1), d=2, heads=2, d_k=2, d_v=2, d_out=2, gate="G5")
    x = jax.random.normal(jax.random.key(2), (3, 2))
    t = H.attention_as_hmoe(p, x)
    wrong = t._replace(**{where: -getattr(t, where)})
    assert not np.allclose(H.entries(wrong), A.attention(p, x), rtol=1e-6)
