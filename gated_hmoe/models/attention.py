r"""Multi-head self-attention, plain and gated at positions G1-G5 (arXiv 2505.06708).

One sequence ``x: (N, d)``; a batch is handled with ``jax.vmap`` by the caller.
The computation here is the *matrix* form (queries, keys, values, softmax, output
projection); :mod:`gated_hmoe.hmoe` rewrites the same numbers as a hierarchical mixture of
experts, and the tests compare both with ``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from gated_hmoe import checks
Gate = Literal["G1", "G2", "G3", "G4", "G5"] | None

GATES: tuple[str | None, ...] = (None, "G1", "G2", "G3", "G4", "G5")
GRANULARITIES: tuple[str, ...] = ("elementwise", "headwise")
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "silu")


@dataclasses.dataclass(frozen=True)
class AttentionParams:
    r"""Weights of one (gated) multi-head self-attention layer; a JAX PyTree.

    Plain MHSA (``gate=None``):

    .. math::
        O = \sum_{h=1}^{H} \operatorname{softmax}\!\Big(\frac{Q_h K_h^\top}{\sqrt{d_k}}\Big)
            V_h W_O^h, \qquad Q_h = X W_Q^h,\; K_h = X W_K^h,\; V_h = X W_V^h,

    the softmax taken over key tokens (rows sum to one). A gate multiplies one tensor by
    ``act(X_own W_theta)``, where ``X_own`` holds the hidden state of the token that owns
    each row and ``act`` is the logistic sigmoid or SiLU:

    - ``G1``: the head output ``softmax(.) V_h`` (before ``W_O``), gate of query token ``i``;
    - ``G2``: the values ``V_h``, gate of key token ``j``;
    - ``G3``: the keys ``K_h``; ``G4``: the queries ``Q_h``;
    - ``G5``: the layer output ``O``.

    Fields (arrays are traced, the three settings are static):

    - ``wq, wk: (H, d, d_k)``, ``wv: (H, d, d_v)``, ``wo: (H, d_v, d_out)`` (the rows of
      the output projection that belong to head ``h``);
    - ``wg``: ``None`` without a gate; ``(H, d, d_v)`` for G1/G2 elementwise, ``(H, d)``
      for G1/G2 headwise (one scalar per head and token), ``(H, d, d_k)`` for G3/G4,
      ``(d, d_out)`` for G5;
    - ``gate``: ``None`` or ``"G1"`` .. ``"G5"``; ``granularity``: ``"elementwise"`` or
      ``"headwise"`` (G1/G2 only); ``activation``: ``"sigmoid"`` or ``"silu"``.

    Build it with :func:`init_params`, or directly; :func:`attention` validates shapes.
    """

    wq: Array
    wk: Array
    wv: Array
    wo: Array
    wg: Array | None = None
    gate: str | None = None
    granularity: str = "elementwise"
    activation: str = "sigmoid"

    @property
    def sizes(self) -> dict[str, int]:
        """``{"heads", "d", "d_k", "d_v", "d_out"}`` read off the weight shapes."""
        heads, d, d_k = np.shape(self.wq)
        d_v, d_out = np.shape(self.wo)[1:]
        return {"heads": heads, "d": d, "d_k": d_k, "d_v": d_v, "d_out": d_out}


jax.tree_util.register_dataclass(
    AttentionParams,
    data_fields=["wq", "wk", "wv", "wo", "wg"],
    meta_fields=["gate", "granularity", "activation"],
)


def activation_fn(name: str):
    """The gate nonlinearity: ``"sigmoid"`` -> logistic sigmoid, ``"silu"`` -> z*sigmoid(z)."""
    checks.choice(name, "activation", ACTIVATIONS)
    return jax.nn.sigmoid if name == "sigmoid" else jax.nn.silu


def gate_shape(gate: str | None, granularity: str, *, heads: int, d: int, d_k: int,
               d_v: int, d_out: int) -> tuple[int, ...] | None:
    """The shape that ``wg`` must have for a gate position and granularity (``None``: no gate)."""
    check_settings(gate, granularity, "sigmoid")
    heads, d, d_k, d_v, d_out = (checks.positive_int(v, name) for v, name in
                                 ((heads, "heads"), (d, "d"), (d_k, "d_k"), (d_v, "d_v"),
                                  (d_out, "d_out")))
    if gate is None:
        return None
    if gate in ("G1", "G2"):
        return (heads, d, d_v) if granularity == "elementwise" else (heads, d)
    if gate in ("G3", "G4"):
        return (heads, d, d_k)
    return (d, d_out)


def check_settings(gate, granularity, activation) -> None:
    checks.choice(gate, "gate", GATES)
    checks.choice(granularity, "granularity", GRANULARITIES)
    checks.choice(activation, "activation", ACTIVATIONS)
    if granularity == "headwise" and gate not in ("G1", "G2"):
        raise ValueError(f"granularity='headwise' is defined for gate 'G1' or 'G2' only, "
                         f"got gate={gate!r}")


def init_params(key: Array, *, d: int, heads: int, d_k: int, d_v: int, d_out: int,
                gate: str | None = None, granularity: str = "elementwise",
                activation: str = "sigmoid", scale: float = 1.0,
                dtype=jnp.float64) -> AttentionParams:
    """Random weights with entries ``N(0, scale^2 / fan_in)``; ``key`` is a ``jax.random`` key.

    >>> import jax
    >>> p = init_params(jax.random.key(0), d=3, heads=2, d_k=4, d_v=5, d_out=3, gate="G1")
    >>> p.wq.shape, p.wo.shape, p.wg.shape
    ((2, 3, 4), (2, 5, 3), (2, 3, 5))
    """
    d = checks.positive_int(d, "d")
    heads = checks.positive_int(heads, "heads")
    d_k = checks.positive_int(d_k, "d_k")
    d_v = checks.positive_int(d_v, "d_v")
    d_out = checks.positive_int(d_out, "d_out")
    check_settings(gate, granularity, activation)
    checks.real(scale, "scale", positive=True)
    checks.prng_key(key, "key")
    kq, kk, kv, ko, kg = jax.random.split(key, 5)

    def normal(k, shape, fan_in):
        return (scale / math.sqrt(fan_in)) * jax.random.normal(k, shape, dtype=dtype)

    gshape = gate_shape(gate, granularity, heads=heads, d=d, d_k=d_k, d_v=d_v, d_out=d_out)
    return AttentionParams(
        wq=normal(kq, (heads, d, d_k), d),
        wk=normal(kk, (heads, d, d_k), d),
        wv=normal(kv, (heads, d, d_v), d),
        wo=normal(ko, (heads, d_v, d_out), heads * d_v),
        wg=None if gshape is None else normal(kg, gshape, d),
        gate=gate, granularity=granularity, activation=activation,
    )


def validate(params: AttentionParams, x, mask=None) -> None:
    """Check ``params`` (shapes, settings, finiteness), ``x: (N, d)`` and ``mask: (N, N)``.

    Raises ``ValueError``/``TypeError`` naming the argument; called by the public
    functions before tracing. Inside ``jit`` (traced inputs) only static checks run.
    """
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams, got {type(params).__name__}")
    check_settings(params.gate, params.granularity, params.activation)
    concrete = not any(isinstance(a, jax.core.Tracer)
                       for a in (params.wq, params.wk, params.wv, params.wo, params.wg, x))
    shapes = {n: np.shape(getattr(params, n)) for n in ("wq", "wk", "wv", "wo")}
    for n, s in shapes.items():
        if len(s) != 3:
            raise ValueError(f"params.{n} must have rank 3, got shape {s}")
    heads, d, d_k = shapes["wq"]
    if shapes["wk"] != (heads, d, d_k):
        raise ValueError(f"params.wk must have shape {(heads, d, d_k)} like params.wq, got {shapes['wk']}")
    if shapes["wv"][:2] != (heads, d):
        raise ValueError(f"params.wv must have shape ({heads}, {d}, d_v), got {shapes['wv']}")
    d_v = shapes["wv"][2]
    if shapes["wo"][:2] != (heads, d_v):
        raise ValueError(f"params.wo must have shape ({heads}, {d_v}, d_out), got {shapes['wo']}")
    d_out = shapes["wo"][2]
    want = gate_shape(params.gate, params.granularity, heads=heads, d=d, d_k=d_k, d_v=d_v,
                      d_out=d_out)
    got = None if params.wg is None else np.shape(params.wg)
    if want != got:
        raise ValueError(f"params.wg must be {'None' if want is None else 'of shape ' + str(want)} "
                         f"for gate={params.gate!r}, granularity={params.granularity!r}; got "
                         f"{'None' if got is None else 'shape ' + str(got)}")
    if np.ndim(x) != 2:
        raise ValueError(f"x must have rank 2 (N, d) -- one sequence; use jax.vmap for a batch; "
                         f"got shape {np.shape(x)}")
    if np.shape(x)[1] != d:
        raise ValueError(f"x must have shape (N, {d}) to match params (d={d}), got {np.shape(x)}")
    if mask is not None:
        n_tok = np.shape(x)[0]
        if np.shape(mask) != (n_tok, n_tok):
            raise ValueError(f"mask must have shape ({n_tok}, {n_tok}), got {np.shape(mask)}")
    if concrete:
        checks.finite_array(x, "x")
        for n in ("wq", "wk", "wv", "wo", "wg"):
            if getattr(params, n) is not None:
                checks.finite_array(getattr(params, n), f"params.{n}")
        if mask is not None and not isinstance(mask, jax.core.Tracer):
            m = np.asarray(mask)
            if m.dtype != bool and not np.issubdtype(m.dtype, np.number):
                raise TypeError(f"mask must be boolean (True: the query may attend to the key), "
                                f"got dtype {m.dtype}")
            if m.dtype != bool and not np.all(np.isin(m, (0, 1))):
                raise ValueError("mask must be boolean or hold only 0 and 1, got other values")
            if not np.all(np.any(m.astype(bool), axis=1)):
                raise ValueError("mask must allow at least one key token in every row")


def _gate_values(params: AttentionParams, x: Float[Array, "N d"]) -> Float[Array, "..."]:
    """``act(x W_theta)``: ``(H, N, d_v|d_k)`` elementwise, ``(H, N)`` headwise, ``(N, d_out)`` G5."""
    act = activation_fn(params.activation)
    if params.gate == "G5" or params.granularity == "elementwise":
        return act(jnp.einsum("nd,...de->...ne", x, params.wg))
    return act(jnp.einsum("nd,hd->hn", x, params.wg))


def _qkv(params: AttentionParams, x: Float[Array, "N d"]
         ) -> tuple[Float[Array, "H N d_k"], Float[Array, "H N d_k"], Float[Array, "H N d_v"]]:
    """Per-head queries ``(H, N, d_k)``, keys ``(H, N, d_k)`` and values ``(H, N, d_v)``,
    with a G2/G3/G4 gate applied."""
    q = jnp.einsum("nd,hdk->hnk", x, params.wq)
    k = jnp.einsum("nd,hdk->hnk", x, params.wk)
    v = jnp.einsum("nd,hdv->hnv", x, params.wv)
    if params.gate in ("G2", "G3", "G4"):
        g = _gate_values(params, x)
        if params.gate == "G2":
            v = v * (g if g.ndim == 3 else g[..., None])
        elif params.gate == "G3":
            k = k * g
        else:
            q = q * g
    return q, k, v


def _weights(q: Float[Array, "H N d_k"], k: Float[Array, "H N d_k"],
             mask: Bool[Array, "N N"] | None) -> Float[Array, "H N N"]:
    """Softmax attention weights ``(H, N, N)`` from queries and keys (``mask[i, j]``: i may see j)."""
    scores = q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    if mask is not None:
        scores = jnp.where(mask, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def _attention(params: AttentionParams, x: Float[Array, "N d"],
               mask: Bool[Array, "N N"] | None) -> Float[Array, "N d_out"]:
    q, k, v = _qkv(params, x)
    heads = _weights(q, k, mask) @ v                      # (H, N, d_v)
    if params.gate == "G1":
        g = _gate_values(params, x)
        heads = heads * (g if g.ndim == 3 else g[..., None])
    out = jnp.einsum("hnv,hvo->no", heads, params.wo)     # concat(heads) @ W_O
    if params.gate == "G5":
        out = out * _gate_values(params, x)
    return out


def _attention_weights(params: AttentionParams, x: Float[Array, "N d"],
                       mask: Bool[Array, "N N"] | None) -> Float[Array, "H N N"]:
    q, k, _ = _qkv(params, x)
    return _weights(q, k, mask)


# Un-validated, traceable versions for code that is already inside jit (e.g. a model).
attention_unchecked = _attention
attention_weights_unchecked = _attention_weights

_attention_jit = jax.jit(_attention)
_attention_weights_jit = jax.jit(_attention_weights)


def attention(params: AttentionParams, x: Float[ArrayLike, "N d"], *,
              mask: ArrayLike | None = None) -> Float[Array, "N d_out"]:
    """Output ``O: (N, d_out)`` of the (gated) attention layer for one sequence ``x: (N, d)``.

    ``mask: (N, N)`` boolean, ``mask[i, j]`` true where query ``i`` may attend to key ``j``
    (``None``: all pairs; a causal mask is ``jnp.tril(jnp.ones((N, N), bool))``).

    >>> import jax, jax.numpy as jnp
    >>> p = init_params(jax.random.key(1), d=2, heads=2, d_k=2, d_v=2, d_out=1)
    >>> attention(p, jnp.ones((3, 2))).shape
    (3, 1)
    """
    validate(params, x, mask)
    return _attention_jit(params, jnp.asarray(x), None if mask is None else jnp.asarray(mask, bool))


def attention_weights(params: AttentionParams, x: Float[ArrayLike, "N d"], *,
                      mask: ArrayLike | None = None) -> Float[Array, "H N N"]:
    """Attention weights ``pi: (H, N, N)``, ``pi[h, i, j] = softmax_j(s^h_ij)`` (gated scores for G3/G4)."""
    validate(params, x, mask)
    return _attention_weights_jit(params, jnp.asarray(x),
                                  None if mask is None else jnp.asarray(mask, bool))
