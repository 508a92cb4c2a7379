r"""A small decoder-only transformer built on :mod:`gated_hmoe.models.attention`.

The model is pre-norm: token and position embeddings, then ``layers`` blocks of

.. math::
    h \leftarrow h + \operatorname{Attn}_\theta(\operatorname{LN}(h);\ \text{causal}),\qquad
    h \leftarrow h + W_2\,\operatorname{GELU}(W_1 \operatorname{LN}(h) + b_1) + b_2,

a final layer norm and an unembedding to next-token logits. ``Attn`` is exactly
:func:`gated_hmoe.models.attention.attention_unchecked` -- plain multi-head self-attention
or one of the gates G1-G5 of arXiv 2505.06708 -- so the gate reads the normalised hidden
state of the token that owns the gated tensor, as in that paper.

Its data task lives in :mod:`gated_hmoe.models.tasks`, its training in
:mod:`gated_hmoe.estimation.training`. Everything is a PyTree (``NamedTuple``), random keys
are explicit, and the public entry points validate their arguments with
:mod:`gated_hmoe.checks` before tracing; the ``*_unchecked`` functions and :func:`forward`
are their traceable cores for code that is already inside ``jit``. The model runs in
float64 like the rest of the library (see :mod:`gated_hmoe`): results must be
bit-reproducible across machines for the book's strict output checks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from gated_hmoe import checks
from gated_hmoe.models import attention as attn

#: Attention variants by name: ``name -> (gate, granularity)``. "MHSA" is ungated.
VARIANTS: dict[str, tuple[str | None, str]] = {
    "MHSA": (None, "elementwise"),
    "G1": ("G1", "elementwise"),
    "G1-headwise": ("G1", "headwise"),
    "G2": ("G2", "elementwise"),
    "G3": ("G3", "elementwise"),
    "G4": ("G4", "elementwise"),
    "G5": ("G5", "elementwise"),
}


# --------------------------------------------------------------------------------------
# Configuration (static, hashable) and parameters (PyTrees)
# --------------------------------------------------------------------------------------

class ModelConfig(NamedTuple):
    """Static sizes and gate settings of the transformer (hashable: a ``jit`` static argument).

    - ``vocab``: number of ordinary tokens ``V``; the model's vocabulary is ``V + 1`` with
      ``BOS = V`` (BOS is only ever an input, never a target).
    - ``seq_len``: sequence length ``N`` including BOS.
    - ``d_model``, ``heads`` (``d_k = d_v = d_model / heads``), ``layers``, ``d_mlp``.
    - ``gate``, ``granularity``, ``activation``: passed to
      :func:`gated_hmoe.models.attention.init_params`.

    Build it with :func:`make_config`, which validates.
    """

    vocab: int = 32
    seq_len: int = 32
    d_model: int = 32
    heads: int = 2
    layers: int = 2
    d_mlp: int = 128
    gate: str | None = None
    granularity: str = "elementwise"
    activation: str = "sigmoid"

    @property
    def variant(self) -> str:
        """The variant name in :data:`VARIANTS` (``"MHSA"``, ``"G1"``, ``"G1-headwise"``, ...)."""
        for name, (g, gran) in VARIANTS.items():
            if g == self.gate and (g not in ("G1", "G2") or gran == self.granularity):
                return name
        return f"{self.gate}-{self.granularity}"  # pragma: no cover - G2 headwise


def make_config(*, vocab: int = 32, seq_len: int = 32, d_model: int = 32, heads: int = 2,
                layers: int = 2, d_mlp: int | None = None, variant: str | None = None,
                gate: str | None = None, granularity: str = "elementwise",
                activation: str = "sigmoid") -> ModelConfig:
    """A validated :class:`ModelConfig`; ``variant`` (a key of :data:`VARIANTS`) overrides
    ``gate``/``granularity``; ``d_mlp`` defaults to ``4 * d_model``.

    >>> make_config(variant="G1-headwise").gate
    'G1'
    >>> make_config(d_model=30, heads=4)
    Traceback (most recent call last):
    ...
    ValueError: d_model must be divisible by heads, got d_model=30, heads=4
    """
    if variant is not None:
        checks.choice(variant, "variant", VARIANTS)
        gate, granularity = VARIANTS[variant]
    vocab = checks.positive_int(vocab, "vocab", minimum=2)
    seq_len = checks.positive_int(seq_len, "seq_len", minimum=3)
    d_model = checks.positive_int(d_model, "d_model")
    heads = checks.positive_int(heads, "heads")
    layers = checks.positive_int(layers, "layers")
    d_mlp = checks.positive_int(4 * d_model if d_mlp is None else d_mlp, "d_mlp")
    if d_model % heads:
        raise ValueError(f"d_model must be divisible by heads, got d_model={d_model}, heads={heads}")
    attn.check_settings(gate, granularity, activation)
    return ModelConfig(vocab, seq_len, d_model, heads, layers, d_mlp, gate, granularity,
                       activation)


class BlockParams(NamedTuple):
    r"""One pre-norm block: :math:`h \mapsto h + \mathrm{Attn}(\mathrm{LN}_1 h)`, then
    :math:`h \mapsto h + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}_2 h + b_1) + b_2`.

    ``ln1_scale, ln1_bias, ln2_scale, ln2_bias: (d,)``; ``attn``: an
    :class:`~gated_hmoe.models.attention.AttentionParams` with ``d_out = d``;
    ``w1: (d, d_mlp)``, ``b1: (d_mlp,)``, ``w2: (d_mlp, d)``, ``b2: (d,)``.
    """

    ln1_scale: Array
    ln1_bias: Array
    attn: attn.AttentionParams
    ln2_scale: Array
    ln2_bias: Array
    w1: Array
    b1: Array
    w2: Array
    b2: Array


class TransformerParams(NamedTuple):
    r"""All weights of the model; logits for tokens ``t: (N,)`` are

    .. math::
        h^{(0)}_i = E_{t_i} + P_i,\quad h^{(\ell)} = \mathrm{Block}_\ell(h^{(\ell-1)}),\quad
        \mathrm{logits} = \mathrm{LN}_f(h^{(L)})\, U.

    ``tok_emb: (V + 1, d)`` (row ``V`` is BOS), ``pos_emb: (N, d)``, ``blocks``: a tuple of
    :class:`BlockParams`, ``lnf_scale, lnf_bias: (d,)``, ``unembed: (d, V)``.
    """

    tok_emb: Array
    pos_emb: Array
    blocks: tuple
    lnf_scale: Array
    lnf_bias: Array
    unembed: Array


# --------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------

def check_config(config) -> ModelConfig:
    """Return ``config`` if it is a :class:`ModelConfig`, else raise ``TypeError``."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (use make_config), got {type(config).__name__}")
    return config


def init_params(key: Array, config: ModelConfig) -> TransformerParams:
    """Random weights: embeddings ``N(0, 1)``, dense weights (attention and gate weights
    included, as in :func:`gated_hmoe.models.attention.init_params`) ``N(0, 1/fan_in)``, zero
    biases, unit layer-norm scales. The weights that all variants share are drawn from the
    same key whatever the gate, so runs that differ only in the gate start alike.

    >>> import jax
    >>> p = init_params(jax.random.key(0), make_config(vocab=5, seq_len=4, d_model=8))
    >>> p.tok_emb.shape, p.unembed.shape, len(p.blocks)
    ((6, 8), (8, 5), 2)
    """
    return init_params_unchecked(key, check_config(config))


def init_params_unchecked(key: Array, c: ModelConfig) -> TransformerParams:
    """:func:`init_params` without validation (traceable). All weights come from two draws:
    one standard-normal vector for the weights every variant shares (so that variants
    trained from the same key start from the same shared weights) and
    :func:`gate_weights` from the second half of ``jax.random.split(key)``; a single draw
    keeps compilation cheap."""
    d, m, nh, f64 = c.d_model, c.d_mlp, c.heads, jnp.float64
    dh = d // nh
    shapes = [((c.vocab + 1, d), 1), ((c.seq_len, d), 1), ((d, c.vocab), d)]
    for _ in range(c.layers):
        shapes += [((nh, d, dh), d), ((nh, d, dh), d), ((nh, d, dh), d), ((nh, dh, d), d),
                   ((d, m), d), ((m, d), m)]
    k_shared, k_gate = jax.random.split(key)
    flat = jax.random.normal(k_shared, (sum(math.prod(s) for s, _ in shapes),), f64)
    arrays, start = [], 0
    for shape, fan_in in shapes:
        size = math.prod(shape)
        arrays.append(flat[start:start + size].reshape(shape) * (1.0 / math.sqrt(fan_in)))
        start += size
    gates = gate_weights(k_gate, c)
    tok, pos, unembed, rest = arrays[0], arrays[1], arrays[2], arrays[3:]
    blocks = []
    for layer in range(c.layers):
        wq, wk, wv, wo, w1, w2 = rest[6 * layer: 6 * layer + 6]
        blocks.append(BlockParams(
            ln1_scale=jnp.ones(d, f64), ln1_bias=jnp.zeros(d, f64),
            attn=attn.AttentionParams(wq=wq, wk=wk, wv=wv, wo=wo,
                                      wg=None if gates is None else gates[layer],
                                      gate=c.gate, granularity=c.granularity,
                                      activation=c.activation),
            ln2_scale=jnp.ones(d, f64), ln2_bias=jnp.zeros(d, f64),
            w1=w1, b1=jnp.zeros(m, f64), w2=w2, b2=jnp.zeros(d, f64)))
    return TransformerParams(tok_emb=tok, pos_emb=pos, blocks=tuple(blocks),
                             lnf_scale=jnp.ones(d, f64), lnf_bias=jnp.zeros(d, f64),
                             unembed=unembed)


def gate_weights(k_gate: Array, c: ModelConfig) -> Array | None:
    """Gate weights of all layers ``(L, *wg.shape)``, ``N(0, 1/d)``; ``None`` without a gate."""
    dh = c.d_model // c.heads
    gshape = attn.gate_shape(c.gate, c.granularity, heads=c.heads, d=c.d_model, d_k=dh,
                             d_v=dh, d_out=c.d_model)
    if gshape is None:
        return None
    return jax.random.normal(k_gate, (c.layers, *gshape), jnp.float64) * (1.0 / math.sqrt(c.d_model))


# --------------------------------------------------------------------------------------
# Forward pass and loss
# --------------------------------------------------------------------------------------

def _layer_norm(x: Float[Array, "*batch d"], scale: Float[Array, " d"], bias: Float[Array, " d"],
                eps: float = 1e-5) -> Float[Array, "*batch d"]:
    r""":math:`(x - \bar x) / \sqrt{\operatorname{var}(x) + \epsilon} \cdot s + b` over the
    last axis."""
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * scale + bias


def forward(params: TransformerParams, tokens: Int[Array, " N"]
            ) -> tuple[Float[Array, "N V"], Float[Array, "L H N N"]]:
    """Logits ``(N, V)`` and attention weights ``(L, H, N, N)`` for one sequence
    ``tokens: (N,)`` (traceable, unvalidated: the core of :func:`logits`)."""
    n = tokens.shape[0]
    mask = jnp.tril(jnp.ones((n, n), dtype=bool))
    h = params.tok_emb[tokens] + params.pos_emb[:n]
    weights = []
    for b in params.blocks:
        z = _layer_norm(h, b.ln1_scale, b.ln1_bias)
        weights.append(attn.attention_weights_unchecked(b.attn, z, mask))
        h = h + attn.attention_unchecked(b.attn, z, mask)
        z = _layer_norm(h, b.ln2_scale, b.ln2_bias)
        h = h + jax.nn.gelu(z @ b.w1 + b.b1) @ b.w2 + b.b2
    h = _layer_norm(h, params.lnf_scale, params.lnf_bias)
    return h @ params.unembed, jnp.stack(weights)


def _token_losses(params: TransformerParams, tokens: Int[Array, " N"]) -> Float[Array, " N-1"]:
    """Cross-entropy ``(N - 1,)`` of predicting ``tokens[i + 1]`` from ``tokens[:i+1]``."""
    lg, _ = forward(params, tokens)
    lg = lg[:-1]
    return -jnp.take_along_axis(jax.nn.log_softmax(lg), tokens[1:, None], axis=-1)[:, 0]


def loss_unchecked(params: TransformerParams, tokens: Int[Array, "B N"]) -> Float[Array, ""]:
    r""":func:`loss` without validation (traceable): for ``tokens: (B, N)``,

    .. math::
        -\frac{1}{B(N-1)}\sum_{b=1}^{B}\sum_{i=0}^{N-2}
        \log\operatorname{softmax}(\mathrm{logits}(t_b)_i)_{t_{b,i+1}}.
    """
    return jnp.mean(jax.vmap(_token_losses, (None, 0))(params, tokens))


def check_tokens(params: TransformerParams, tokens, name: str = "tokens", *,
                 batch: bool = False) -> Array:
    """``tokens`` as a JAX array once checked against ``params``: integer token ids in
    ``[0, V]`` of one sequence ``(N,)`` (with ``batch``: of ``B >= 1`` sequences ``(B, N)``),
    ``1 <= N <=`` the model's ``seq_len``.

    >>> import jax
    >>> p = init_params(jax.random.key(0), make_config(vocab=5, seq_len=4, d_model=8))
    >>> check_tokens(p, [[5, 0, 7]], batch=True)
    Traceback (most recent call last):
    ...
    ValueError: tokens must hold ids in [0, 5], got range [0, 7]
    """
    if not isinstance(params, TransformerParams):
        raise TypeError(f"params must be a TransformerParams, got {type(params).__name__}")
    arr = np.asarray(tokens)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {arr.dtype}")
    max_len = params.pos_emb.shape[0]
    want = "(B, N) with B >= 1 and" if batch else "(N,) with"
    if arr.ndim != (2 if batch else 1) or 0 in arr.shape or arr.shape[-1] > max_len:
        raise ValueError(f"{name} must have shape {want} 1 <= N <= {max_len}, got {arr.shape}")
    n_tok = params.tok_emb.shape[0]
    if arr.min() < 0 or arr.max() >= n_tok:
        raise ValueError(f"{name} must hold ids in [0, {n_tok - 1}], got range "
                         f"[{arr.min()}, {arr.max()}]")
    return jnp.asarray(arr)


_forward_jit = jax.jit(forward)
_loss_jit = jax.jit(loss_unchecked)


def logits(params: TransformerParams, tokens: ArrayLike) -> Float[Array, "N V"]:
    """Next-token logits ``(N, V)`` for one sequence ``tokens: (N,)`` (causal: row ``i``
    depends on ``tokens[:i+1]`` only). Use ``jax.vmap`` over :func:`forward` for a batch.

    >>> import jax, jax.numpy as jnp
    >>> p = init_params(jax.random.key(0), make_config(vocab=5, seq_len=4, d_model=8))
    >>> logits(p, jnp.array([5, 0, 1])).shape
    (3, 5)
    """
    return _forward_jit(params, check_tokens(params, tokens))[0]


def attention_maps(params: TransformerParams, tokens: ArrayLike) -> Float[Array, "L H N N"]:
    """Attention weights ``(L, H, N, N)`` of every layer and head for one sequence ``tokens: (N,)``."""
    return _forward_jit(params, check_tokens(params, tokens))[1]


def loss(params: TransformerParams, tokens: ArrayLike) -> Float[Array, ""]:
    """Mean next-token cross-entropy (nats) over a batch ``tokens: (B, N)``, all ``N - 1``
    predicted positions (see :func:`loss_unchecked`)."""
    return _loss_jit(params, check_tokens(params, tokens, batch=True))


__all__ = ["VARIANTS", "BlockParams", "ModelConfig", "TransformerParams", "attention_maps",
           "check_config", "check_tokens", "forward", "gate_weights", "init_params",
           "init_params_unchecked", "logits", "loss", "loss_unchecked", "make_config"]
