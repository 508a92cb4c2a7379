"""Symbolic identities (sympy): every gate-table row, the collapse, and a check that fails."""

import jax
import numpy as np
import pytest
import sympy as sp

from gated_hmoe.models import attention as A
from gated_hmoe.theory import symbolic as S

from test_attention import VARIANTS


@pytest.mark.parametrize("gate,granularity", VARIANTS)
def test_gate_table_identity(gate, granularity):
    layer = S.symbolic_layer(n_tokens=2, heads=2, d=2, d_k=2, d_v=2, d_out=1, gate=gate,
                             granularity=granularity)
    assert S.identity_holds(layer)


def test_silu_gate_identity():
    layer = S.symbolic_layer(gate="G2", activation="silu")
    assert S.identity_holds(layer)


def test_collapse_identity():
    assert S.identity_holds(S.symbolic_layer(), entry=S.collapsed_entry)


def test_checker_can_fail():
    """A deliberately wrong identity (a sign flipped in one weight) is rejected."""
    layer = S.symbolic_layer()
    w = layer.wv[0][0, 0]
    wrong = lambda l, i, m: S.hmoe_entry(l, i, m).subs(w, -w)  # noqa: E731
    assert not S.identity_holds(layer, entry=wrong)
    assert not S.vanishes(sp.exp(sp.Symbol("a")) - 1)
    assert S.vanishes(sp.exp(2 * sp.Symbol("a")) - sp.exp(sp.Symbol("a")) ** 2)


def test_score_is_quadratic_form():
    layer = S.symbolic_layer(n_tokens=2, heads=1, d=2, d_k=2)
    q = layer.x * layer.wq[0]
    k = layer.x * layer.wk[0]
    xbar = S.stacked_input(layer)
    for i in range(2):
        for j in range(2):
            lhs = (q.row(i) * k.row(j).T)[0, 0] / sp.sqrt(2)
            rhs = (xbar.T * S.score_matrix(layer, 0, i, j) * xbar)[0, 0]
            assert sp.simplify(lhs - rhs) == 0


@pytest.mark.parametrize("gate,granularity", VARIANTS)
def test_symbolic_matches_jax_numerically(gate, granularity):
    """The sympy matrix form evaluated at numbers equals the JAX layer (float64)."""
    layer = S.symbolic_layer(n_tokens=3, heads=2, d=2, d_k=2, d_v=2, d_out=2, gate=gate,
                             granularity=granularity)
    p = A.init_params(jax.random.key(11), d=2, heads=2, d_k=2, d_v=2, d_out=2, gate=gate,
                      granularity=granularity)
    x = np.asarray(jax.random.normal(jax.random.key(12), (3, 2)))
    got = S.evaluate(layer, S.attention_matrix(layer), p, x)
    np.testing.assert_allclose(got, A.attention(p, x), rtol=1e-12)


@pytest.mark.user_input
def test_bad_arguments():
    with pytest.raises(ValueError, match="gate must be one of"):
        S.symbolic_layer(gate="G0")
    with pytest.raises(ValueError, match="headwise"):
        S.symbolic_layer(gate="G4", granularity="headwise")
    with pytest.raises(ValueError, match="n_tokens must be an integer >= 1"):
        S.symbolic_layer(n_tokens=0)
    layer = S.symbolic_layer()
    p = A.init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=2, d_out=1, gate="G1")
    with pytest.raises(ValueError, match="do not match layer"):
        S.substitutions(layer, p, np.ones((2, 2)))
    p0 = A.init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=2, d_out=1)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 2\)"):
        S.substitutions(layer, p0, np.ones((3, 2)))
    one_head = A.init_params(jax.random.key(0), d=2, heads=1, d_k=2, d_v=2, d_out=1)
    with pytest.raises(ValueError, match=r"params.wq must have shape \(2, 2, 2\)"):
        S.evaluate(layer, S.attention_matrix(layer), one_head, np.ones((2, 2)))
    silu = A.init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=2, d_out=1, gate="G1",
                         activation="silu")
    with pytest.raises(ValueError, match="activation='silu'"):
        S.substitutions(S.symbolic_layer(gate="G1"), silu, np.ones((2, 2)))
    with pytest.raises(TypeError, match="params must be an AttentionParams"):
        S.substitutions(layer, None, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"i must be in \[0, 2\)"):
        S.score_matrix(layer, 0, 2, 0)
    with pytest.raises(ValueError, match="j must be an integer >= 0"):
        S.router_weight(layer, 0, 0, -1)
    with pytest.raises(ValueError, match=r"h must be in \[0, 2\)"):
        S.head_weight(layer, 99, 0, 0)
    with pytest.raises(ValueError, match=r"m must be in \[0, 1\)"):
        S.hmoe_entry(layer, 0, 1)
