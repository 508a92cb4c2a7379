r"""Attention entries rewritten as a three-level hierarchical mixture of experts (HMoE).

For every query row ``i`` and output column ``m`` of a (gated) attention layer

.. math::
    O_{im} = \sum_{h=1}^{H} \underbrace{g^{(1)}_{ihm}}_{\text{level 1: head}}
             \sum_{j=1}^{N} \underbrace{\pi^h_{ij}(X)}_{\text{level 2: key token}}
             \sum_{l=1}^{d_v} \underbrace{g^{(3)}_{hilm}}_{\text{level 3: value channel}}
             \; \underbrace{E_{hjl}(x_j)}_{\text{leaf expert}}

Plain MHSA: ``g1 = 1``, ``pi^h_ij = softmax_j(x_i^T W_Q^h W_K^h^T x_j / sqrt(d_k))``,
``g3 = (W_O^h)_{lm}`` and ``E_hjl = (w^h_{V,l})^T x_j`` (linear, no bias). The gates of
arXiv 2505.06708 change exactly one factor each (SPEC §2):

====================  ==========================================================
G1 elementwise        ``g3 = (W_O^h)_lm * act(x_i^T w^h_{theta,l})``  (input dependent)
G1 headwise           ``g1 = act(x_i^T w^h_theta)``
G2                    ``E_hjl = act(x_j^T w^h_{theta,l}) * (w^h_{V,l})^T x_j``  (non-linear)
G3 / G4               ``pi`` uses gated keys / queries; leaves stay linear
G5                    ``g1 = act(x_i^T w_{theta,m})``, common to all heads
====================  ==========================================================

This module computes the factors level by level, from the weights, without forming the
matrix products of :mod:`gated_hmoe.attention`; :func:`entries` sums them back.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from gated_hmoe import checks
from gated_hmoe.models.attention import AttentionParams, activation_fn, validate


class HMoETerms(NamedTuple):
    r"""The factors of :math:`O_{im} = \sum_h g^{(1)}_{ihm} \sum_j \pi^h_{ij}
    \sum_l g^{(3)}_{hilm} E_{hjl}`.

    - ``head_router: (N, H, d_out)`` -- level-1 weight of head ``h`` for query ``i`` and
      output ``m`` (all ones for plain MHSA);
    - ``token_router: (H, N, N)`` -- level-2 softmax weight ``pi^h_ij`` of key token ``j``;
    - ``channel_router: (H, N, d_v, d_out)`` -- level-3 weight of value channel ``l``;
    - ``experts: (H, N, d_v)`` -- leaf expert ``E_hjl`` evaluated at key token ``j``.
    """

    head_router: Float[Array, "N H d_out"]
    token_router: Float[Array, "H N N"]
    channel_router: Float[Array, "H N d_v d_out"]
    experts: Float[Array, "H N d_v"]


def _dot(x: Float[Array, "N d"], w: Float[Array, "H d c"]) -> Float[Array, "H N c"]:
    """``x_n^T w^h_{:, c}`` for every head and token: ``w: (H, d, c)`` -> ``(H, N, c)``."""
    return jnp.einsum("nd,hdc->hnc", x, w)


def _dot_heads(x: Float[Array, "N d"], w: Float[Array, "H d"]) -> Float[Array, "H N"]:
    """``x_n^T w^h`` for one vector per head: ``w: (H, d)`` -> ``(H, N)``."""
    return jnp.einsum("nd,hd->hn", x, w)


def _terms(params: AttentionParams, x: Float[Array, "N d"], mask) -> HMoETerms:
    act = activation_fn(params.activation)
    gate, gran = params.gate, params.granularity
    heads, d_v, d_out = params.wo.shape
    n_tok = x.shape[0]
    # Level 2: scores s^h_ij = (x_i^T W_Q^h) . (x_j^T W_K^h) / sqrt(d_k), gated for G3/G4.
    qi = _dot(x, params.wq)                                    # (H, N, d_k)
    kj = _dot(x, params.wk)
    if gate == "G4":
        qi = qi * act(_dot(x, params.wg))
    if gate == "G3":
        kj = kj * act(_dot(x, params.wg))
    scores = jnp.einsum("hik,hjk->hij", qi, kj) / jnp.sqrt(jnp.asarray(qi.shape[-1], x.dtype))
    if mask is not None:
        scores = jnp.where(mask[None], scores, -jnp.inf)
    token_router = jax.nn.softmax(scores, axis=-1)
    # Leaves: E_hjl = (w^h_{V,l})^T x_j, times the value gate for G2.
    experts = _dot(x, params.wv)                               # (H, N, d_v)
    if gate == "G2":
        experts = experts * (act(_dot(x, params.wg)) if gran == "elementwise"
                             else act(_dot_heads(x, params.wg))[..., None])
    # Level 3: (W_O^h)_lm, times the query-token gate for G1 elementwise.
    channel_router = jnp.broadcast_to(params.wo[:, None], (heads, n_tok, d_v, d_out))
    if gate == "G1" and gran == "elementwise":
        channel_router = channel_router * act(_dot(x, params.wg))[..., None]
    # Level 1: one weight per (query, head, output column).
    head_router = jnp.ones((n_tok, heads, d_out), x.dtype)
    if gate == "G1" and gran == "headwise":
        head_router = head_router * act(_dot_heads(x, params.wg)).T[..., None]
    if gate == "G5":
        head_router = head_router * act(x @ params.wg)[:, None, :]
    return HMoETerms(head_router, token_router, channel_router, experts)


def _entries(terms: HMoETerms) -> Float[Array, "N d_out"]:
    return jnp.einsum("ihm,hij,hilm,hjl->im", terms.head_router, terms.token_router,
                      terms.channel_router, terms.experts)


_terms_jit = jax.jit(_terms)
_entries_jit = jax.jit(_entries)


def attention_as_hmoe(params: AttentionParams, x: Float[ArrayLike, "N d"], *,
                      mask: ArrayLike | None = None) -> HMoETerms:
    """Router weights of the three levels and the leaf experts for one sequence ``x: (N, d)``.

    ``mask: (N, N)`` boolean as in :func:`gated_hmoe.attention.attention`.

    >>> import jax, jax.numpy as jnp
    >>> from gated_hmoe.models.attention import init_params, attention
    >>> p = init_params(jax.random.key(0), d=2, heads=2, d_k=2, d_v=3, d_out=1, gate="G2")
    >>> x = jax.random.normal(jax.random.key(1), (4, 2))
    >>> t = attention_as_hmoe(p, x)
    >>> t.token_router.shape, t.experts.shape
    ((2, 4, 4), (2, 4, 3))
    >>> bool(jnp.allclose(entries(t), attention(p, x), rtol=1e-12, atol=0))
    True
    """
    validate(params, x, mask)
    return _terms_jit(params, jnp.asarray(x), None if mask is None else jnp.asarray(mask, bool))


def _check_terms(terms: HMoETerms) -> None:
    if not isinstance(terms, HMoETerms):
        raise TypeError(f"terms must be an HMoETerms, got {type(terms).__name__}")
    n_tok, heads, d_out = jnp.shape(terms.head_router)
    want = {"token_router": (heads, n_tok, n_tok),
            "channel_router": (heads, n_tok, None, d_out),
            "experts": (heads, n_tok, None)}
    for name, shape in want.items():
        got = jnp.shape(getattr(terms, name))
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            raise ValueError(f"terms.{name} has shape {got}, inconsistent with "
                             f"terms.head_router of shape {(n_tok, heads, d_out)}")
    if jnp.shape(terms.channel_router)[2] != jnp.shape(terms.experts)[2]:
        raise ValueError("terms.channel_router and terms.experts disagree on d_v: "
                         f"{jnp.shape(terms.channel_router)} vs {jnp.shape(terms.experts)}")


def entries(terms: HMoETerms) -> Float[Array, "N d_out"]:
    """Sum the hierarchy back: ``O: (N, d_out)``; equals ``attention(params, x)``."""
    _check_terms(terms)
    return _entries_jit(terms)


def collapsed_experts(params: AttentionParams, x: Float[ArrayLike, "N d"]) -> Float[Array, "H N d_out"]:
    """Level 3 collapsed into one linear expert per head: ``(c^h_m)^T x_j`` of shape ``(H, N, d_out)``.

    ``c^h_m = W_V^h W_O^h e_m`` (the low-rank map ``W_V W_O``). Valid when the level-3
    router and the leaves do not depend on the input: MHSA, G1 headwise, G3, G4, G5.
    """
    validate(params, x)
    if params.gate == "G2" or (params.gate == "G1" and params.granularity == "elementwise"):
        raise ValueError(f"collapsed_experts needs an input-independent level 3; gate="
                         f"{params.gate!r} with granularity={params.granularity!r} makes it "
                         "input dependent")
    c = jnp.einsum("hdv,hvm->hdm", params.wv, params.wo)        # (H, d, d_out)
    return jnp.einsum("nd,hdm->hnm", jnp.asarray(x), c)


def weighted_leaves(terms: HMoETerms) -> Float[Array, "H N N d_v d_out"]:
    """Level-3 weight times leaf, ``g3_hilm * E_hjl``: shape ``(H, N_query, N_key, d_v, d_out)``.

    As a function of the input this is the expert that the level-2 router mixes; it is
    linear in ``vec(X)`` for MHSA, G1 headwise, G3, G4 and G5, and non-linear for G1
    elementwise and G2.
    """
    _check_terms(terms)
    return jnp.einsum("hilm,hjl->hijlm", terms.channel_router, terms.experts)


def leaves_along_line(params: AttentionParams, x0: Float[ArrayLike, "N d"],
                      direction: Float[ArrayLike, "N d"], ts: Float[ArrayLike, " T"]
                      ) -> Float[Array, "T H N N d_v d_out"]:
    """:func:`weighted_leaves` at ``x0 + t * direction`` for each ``t`` in ``ts: (T,)``.

    ``x0, direction: (N, d)``; returns ``(T, H, N, N, d_v, d_out)``.
    """
    validate(params, x0)
    direction = checks.finite_array(direction, "direction", shape=jnp.shape(x0))
    ts = checks.finite_array(ts, "ts", ndim=1)
    x0, direction, ts = jnp.asarray(x0), jnp.asarray(direction), jnp.asarray(ts)

    def at(t):
        return weighted_leaves(_terms(params, x0 + t * direction, None))

    return jax.jit(jax.vmap(at))(ts)
