r"""A small decoder-only transformer built on :mod:`gated_hmoe.attention`, and its training.

The model is pre-norm: token and position embeddings, then ``layers`` blocks of

.. math::
    h \leftarrow h + \operatorname{Attn}_\theta(\operatorname{LN}(h);\ \text{causal}),\qquad
    h \leftarrow h + W_2\,\operatorname{GELU}(W_1 \operatorname{LN}(h) + b_1) + b_2,

a final layer norm and an unembedding to next-token logits. ``Attn`` is exactly
:func:`gated_hmoe.attention.attention_unchecked` -- plain multi-head self-attention or one of
the gates G1-G5 of arXiv 2505.06708 -- so the gate reads the normalised hidden state of the
token that owns the gated tensor, as in that paper.

The data is the *Bigram-Backcopy* task of Guo et al. (2024): a fixed first token ``BOS``,
then tokens from a random bigram model, except that after a *trigger* token the next token
copies the token before the trigger (:func:`sample_task`, :func:`sample_sequences`).

Everything is a PyTree (``NamedTuple``), random keys are explicit, and the public entry
points validate their arguments with :mod:`gated_hmoe.checks` before tracing. The model
runs in float64 like the rest of the library (see :mod:`gated_hmoe`): results must be
bit-reproducible across machines for the book's strict output checks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gated_hmoe import attention as attn
from gated_hmoe import checks

Array = jax.Array

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
    - ``gate``, ``granularity``, ``activation``: passed to :func:`gated_hmoe.attention.init_params`.

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
    attn._check_settings(gate, granularity, activation)
    return ModelConfig(vocab, seq_len, d_model, heads, layers, d_mlp, gate, granularity,
                       activation)


class BlockParams(NamedTuple):
    r"""One pre-norm block: :math:`h \mapsto h + \mathrm{Attn}(\mathrm{LN}_1 h)`, then
    :math:`h \mapsto h + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}_2 h + b_1) + b_2`.

    ``ln1_scale, ln1_bias, ln2_scale, ln2_bias: (d,)``; ``attn``: an
    :class:`~gated_hmoe.attention.AttentionParams` with ``d_out = d``;
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


class TrainState(NamedTuple):
    """Training state: ``params`` (:class:`TransformerParams`), ``opt_state`` (optax AdamW
    state) and ``step`` (int scalar)."""

    params: TransformerParams
    opt_state: optax.OptState
    step: Array


class TrainConfig(NamedTuple):
    """Optimisation settings (hashable).

    AdamW (``b1, b2``, decoupled ``weight_decay``) with a learning rate that rises linearly
    from 0 to ``peak_lr`` over ``warmup`` steps and decays by a cosine to
    ``final_lr_frac * peak_lr`` at ``steps``; minibatches of ``batch`` sequences drawn with
    replacement from the training set; no gradient clipping (so that instabilities show).
    """

    steps: int = 400
    batch: int = 16
    peak_lr: float = 3e-3
    warmup: int = 40
    final_lr_frac: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98


def make_train_config(*, steps: int = 400, batch: int = 16, peak_lr: float = 3e-3,
                      warmup: int | None = None, final_lr_frac: float = 0.1,
                      weight_decay: float = 0.01, b1: float = 0.9,
                      b2: float = 0.98) -> TrainConfig:
    """A validated :class:`TrainConfig`; ``warmup`` defaults to ``steps // 10``.

    >>> make_train_config(peak_lr=0.0)
    Traceback (most recent call last):
    ...
    ValueError: peak_lr must be a finite number > 0, got 0.0
    """
    steps = checks.positive_int(steps, "steps")
    batch = checks.positive_int(batch, "batch")
    warmup = checks.positive_int(max(1, steps // 10) if warmup is None else warmup, "warmup")
    if warmup > steps:
        raise ValueError(f"warmup must be <= steps, got warmup={warmup}, steps={steps}")
    peak_lr = checks.real(peak_lr, "peak_lr", positive=True)
    for name, v, lo, hi in (("final_lr_frac", final_lr_frac, 0.0, 1.0),
                            ("weight_decay", weight_decay, 0.0, math.inf),
                            ("b1", b1, 0.0, 1.0), ("b2", b2, 0.0, 1.0)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and lo <= v <= hi and not (hi == 1.0 and name.startswith("b") and v == 1.0)):
            raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {v!r}")
    return TrainConfig(steps, batch, float(peak_lr), warmup, float(final_lr_frac),
                       float(weight_decay), float(b1), float(b2))


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------

def init_params(key: Array, config: ModelConfig) -> TransformerParams:
    """Random weights: embeddings ``N(0, 1)``, dense weights (attention and gate weights
    included, as in :func:`gated_hmoe.attention.init_params`) ``N(0, 1/fan_in)``, zero
    biases, unit layer-norm scales. The weights that all variants share are drawn from the
    same key whatever the gate, so runs that differ only in the gate start alike.

    >>> import jax
    >>> p = init_params(jax.random.key(0), make_config(vocab=5, seq_len=4, d_model=8))
    >>> p.tok_emb.shape, p.unembed.shape, len(p.blocks)
    ((6, 8), (8, 5), 2)
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (use make_config), got {type(config).__name__}")
    return _init_params(key, config)


def _init_params(key: Array, c: ModelConfig) -> TransformerParams:
    """All weights from two draws: one standard-normal vector for the weights every variant
    shares (so that variants trained from the same key start from the same shared weights)
    and one for the gate weights; a single draw keeps compilation cheap."""
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
    gates = _gate_weights(k_gate, c)
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


def _gate_weights(k_gate: Array, c: ModelConfig) -> Array | None:
    """Gate weights of all layers ``(L, *wg.shape)``, ``N(0, 1/d)``; ``None`` without a gate."""
    dh = c.d_model // c.heads
    gshape = attn.gate_shape(c.gate, c.granularity, heads=c.heads, d=c.d_model, d_k=dh,
                             d_v=dh, d_out=c.d_model)
    if gshape is None:
        return None
    return jax.random.normal(k_gate, (c.layers, *gshape), jnp.float64) * (1.0 / math.sqrt(c.d_model))


def _layer_norm(x: Array, scale: Array, bias: Array, eps: float = 1e-5) -> Array:
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * scale + bias


def _forward(params: TransformerParams, tokens: Array) -> tuple[Array, Array]:
    """Logits ``(N, V)`` and attention weights ``(L, H, N, N)`` for one sequence ``tokens: (N,)``."""
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


def _check_tokens(params: TransformerParams, tokens, name: str = "tokens") -> Array:
    if not isinstance(params, TransformerParams):
        raise TypeError(f"params must be a TransformerParams, got {type(params).__name__}")
    arr = np.asarray(tokens)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {arr.dtype}")
    max_len = params.pos_emb.shape[0]
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= max_len:
        raise ValueError(f"{name} must have shape (N,) with 1 <= N <= {max_len}, got {arr.shape}")
    n_tok = params.tok_emb.shape[0]
    if arr.size and (arr.min() < 0 or arr.max() >= n_tok):
        raise ValueError(f"{name} must hold ids in [0, {n_tok - 1}], got range "
                         f"[{arr.min()}, {arr.max()}]")
    return jnp.asarray(arr)


_forward_jit = jax.jit(_forward)


def logits(params: TransformerParams, tokens) -> Array:
    """Next-token logits ``(N, V)`` for one sequence ``tokens: (N,)`` (causal: row ``i``
    depends on ``tokens[:i+1]`` only). Use ``jax.vmap`` for a batch.

    >>> import jax, jax.numpy as jnp
    >>> p = init_params(jax.random.key(0), make_config(vocab=5, seq_len=4, d_model=8))
    >>> logits(p, jnp.array([5, 0, 1])).shape
    (3, 5)
    """
    return _forward_jit(params, _check_tokens(params, tokens))[0]


def attention_maps(params: TransformerParams, tokens) -> Array:
    """Attention weights ``(L, H, N, N)`` of every layer and head for one sequence ``tokens: (N,)``."""
    return _forward_jit(params, _check_tokens(params, tokens))[1]


# --------------------------------------------------------------------------------------
# Bigram-Backcopy data (Guo et al. 2024)
# --------------------------------------------------------------------------------------

class BigramBackcopyTask(NamedTuple):
    r"""A Bigram-Backcopy task over ``V`` tokens (BOS ``= V``).

    ``transition: (V + 1, V)``: row ``a`` is the bigram distribution of the token after
    ``a`` (row ``V``: the first token after BOS); ``is_trigger: (V,)`` bool. Sequences are
    ``BOS, x_1, x_2, ...`` with ``x_{i+1} ~ transition[x_i]`` unless ``x_i`` is a trigger and
    ``i >= 2``, in which case ``x_{i+1} = x_{i-1}`` (copy the token before the trigger).
    The first token after BOS is never a trigger.
    """

    transition: Array
    is_trigger: Array


def sample_task(key: Array, *, vocab: int = 32, triggers: int = 3,
                concentration: float = 0.3) -> BigramBackcopyTask:
    """A random task: each bigram row ``~ Dirichlet(concentration)``, triggers chosen
    uniformly among the ``vocab`` tokens; no row puts mass on a trigger more than a uniform
    row would (so triggers stay rare: their column is set to ``1/vocab`` before
    renormalising), and the row after BOS excludes triggers.
    """
    vocab = checks.positive_int(vocab, "vocab", minimum=2)
    triggers = checks.positive_int(triggers, "triggers")
    if triggers >= vocab:
        raise ValueError(f"triggers must be < vocab, got triggers={triggers}, vocab={vocab}")
    concentration = checks.real(concentration, "concentration", positive=True)
    return _sample_task(key, vocab, triggers, concentration)


def _sample_task(key, vocab, triggers, concentration):
    k_rows, k_trig = jax.random.split(key)
    rows = jax.random.dirichlet(k_rows, jnp.full((vocab,), concentration, jnp.float64),
                                (vocab + 1,))
    trig = jax.random.permutation(k_trig, vocab)[:triggers]
    is_trigger = jnp.zeros(vocab, bool).at[trig].set(True)
    rows = jnp.where(is_trigger[None, :], jnp.minimum(rows, 1.0 / vocab), rows)
    rows = rows.at[vocab].set(jnp.where(is_trigger, 0.0, rows[vocab]))
    rows = rows / rows.sum(axis=1, keepdims=True)
    return BigramBackcopyTask(rows, is_trigger)


def _sample_sequences(key, task: BigramBackcopyTask, n_seq: int, seq_len: int) -> Array:
    vocab = task.transition.shape[1]
    logp = jnp.log(task.transition)
    keys = jax.random.split(key, seq_len - 1)
    bos = jnp.full((n_seq,), vocab, jnp.int32)

    def step(carry, k):
        prev, cur, pos = carry
        fresh = jax.random.categorical(k, logp[cur], axis=-1).astype(jnp.int32)
        copy = (pos >= 2) & task.is_trigger[jnp.minimum(cur, vocab - 1)] & (cur < vocab)
        nxt = jnp.where(copy, prev, fresh)
        return (cur, nxt, pos + 1), nxt

    _, toks = jax.lax.scan(step, (bos, bos, jnp.int32(0)), keys)
    return jnp.concatenate([bos[None, :], toks], axis=0).T


def sample_sequences(key: Array, task: BigramBackcopyTask, *, n_seq: int,
                     seq_len: int) -> Array:
    """``n_seq`` sequences ``(n_seq, seq_len)`` of token ids (column 0 is BOS ``= V``).

    >>> import jax
    >>> task = sample_task(jax.random.key(0), vocab=8, triggers=2)
    >>> sample_sequences(jax.random.key(1), task, n_seq=3, seq_len=6).shape
    (3, 6)
    """
    if not isinstance(task, BigramBackcopyTask):
        raise TypeError(f"task must be a BigramBackcopyTask, got {type(task).__name__}")
    n_seq = checks.positive_int(n_seq, "n_seq")
    seq_len = checks.positive_int(seq_len, "seq_len", minimum=3)
    return _sample_sequences(key, task, n_seq, seq_len)


def copy_positions(task: BigramBackcopyTask, tokens: Array) -> Array:
    """``(..., N)`` bool: query positions ``i >= 2`` whose token is a trigger, i.e. where the
    next token is a copy of ``tokens[i - 1]`` (the positions that need attention)."""
    vocab = task.transition.shape[1]
    pos = jnp.arange(tokens.shape[-1])
    return (pos >= 2) & (tokens < vocab) & task.is_trigger[jnp.minimum(tokens, vocab - 1)]


def bayes_loss(task: BigramBackcopyTask, tokens: Array) -> Array:
    """Mean cross-entropy (nats) of the true conditional law on ``tokens: (B, N)``: the
    bigram entropy at ordinary positions, 0 at copy positions -- the floor of any model."""
    p = task.transition[tokens[:, :-1]]
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    ent = jnp.where(copy_positions(task, tokens)[:, :-1], 0.0, ent)
    return jnp.mean(ent)


# --------------------------------------------------------------------------------------
# Loss, optimiser, training
# --------------------------------------------------------------------------------------

def _token_losses(params: TransformerParams, tokens: Array) -> Array:
    """Cross-entropy ``(N - 1,)`` of predicting ``tokens[i + 1]`` from ``tokens[:i+1]``."""
    lg, _ = _forward(params, tokens)
    lg = lg[:-1]
    return -jnp.take_along_axis(jax.nn.log_softmax(lg), tokens[1:, None], axis=-1)[:, 0]


def _batch_loss(params: TransformerParams, tokens: Array) -> Array:
    return jnp.mean(jax.vmap(_token_losses, (None, 0))(params, tokens))


def loss(params: TransformerParams, tokens) -> Array:
    """Mean next-token cross-entropy (nats) over a batch ``tokens: (B, N)``, all ``N - 1``
    predicted positions."""
    arr = np.asarray(tokens)
    if arr.ndim != 2:
        raise ValueError(f"tokens must have shape (B, N), got {arr.shape}")
    _check_tokens(params, arr[0])
    _check_tokens(params, arr.reshape(-1)[: params.pos_emb.shape[0]])
    return _loss_jit(params, jnp.asarray(arr))


_loss_jit = jax.jit(_batch_loss)


def optimizer(tc: TrainConfig, peak_lr=None) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay (``peak_lr`` may be a traced scalar)."""
    peak = tc.peak_lr if peak_lr is None else peak_lr
    shape = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=tc.warmup, decay_steps=tc.steps,
        end_value=tc.final_lr_frac)
    return optax.adamw(lambda step: peak * shape(step), b1=tc.b1, b2=tc.b2,
                       weight_decay=tc.weight_decay)


def init_train_state(key: Array, config: ModelConfig, tc: TrainConfig) -> TrainState:
    """Fresh parameters (:func:`init_params`) and optimiser state, ``step = 0``."""
    params = init_params(key, config)
    if not isinstance(tc, TrainConfig):
        raise TypeError(f"tc must be a TrainConfig (use make_train_config), got {type(tc).__name__}")
    return TrainState(params, optimizer(tc).init(params), jnp.zeros((), jnp.int32))


def _train_step(state: TrainState, tokens: Array, tx: optax.GradientTransformation
                ) -> tuple[TrainState, Array]:
    value, grads = jax.value_and_grad(_batch_loss)(state.params, tokens)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), value


_train_step_jit = jax.jit(lambda s, t, tc: _train_step(s, t, optimizer(tc)), static_argnums=2)


def train_step(state: TrainState, tokens, tc: TrainConfig) -> tuple[TrainState, Array]:
    """One AdamW step on the minibatch ``tokens: (B, N)``; returns the new state and the
    minibatch loss before the step. Jitted (``tc`` is static)."""
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    if not isinstance(tc, TrainConfig):
        raise TypeError(f"tc must be a TrainConfig (use make_train_config), got {type(tc).__name__}")
    arr = np.asarray(tokens)
    if arr.ndim != 2:
        raise ValueError(f"tokens must have shape (B, N), got {arr.shape}")
    _check_tokens(state.params, arr[0])
    return _train_step_jit(state, jnp.asarray(arr), tc)


class RunResult(NamedTuple):
    """What one training run reports (all arrays; a leading run axis when vmapped).

    ``train_loss: (steps,)`` minibatch loss at each step; on the held-out set:
    ``eval_loss`` (all positions), ``eval_copy_loss`` (copy positions only),
    ``eval_bigram_loss`` (other positions), ``copy_acc`` (argmax accuracy at copy
    positions), ``bayes_loss`` (the floor, :func:`bayes_loss`);
    ``sink: (L, H)`` mean attention weight on position 0 (BOS) over held-out query
    positions ``1..N-1`` (query 0 can only see itself and is excluded);
    ``sink_copy``, ``sink_other: (L, H)`` the same over copy / ordinary queries only;
    ``sink_trace: (steps / trace_every + 1, L, H)`` ``sink_other`` on the first
    ``dc.n_trace`` held-out sequences every ``dc.trace_every`` steps (step 0 to ``steps``);
    ``maps: (L, H, N, N)`` attention weights on held-out sequence 0, ``tokens: (N,)`` it.
    """

    train_loss: Array
    eval_loss: Array
    eval_copy_loss: Array
    eval_bigram_loss: Array
    copy_acc: Array
    bayes_loss: Array
    sink: Array
    sink_copy: Array
    sink_other: Array
    sink_trace: Array
    maps: Array
    tokens: Array


class DataConfig(NamedTuple):
    """Task and data sizes (hashable): ``triggers`` (number of trigger tokens), Dirichlet
    ``concentration`` of the bigram rows, ``pool``: training sequences generated per key (a
    run uses the first ``n_train``), ``n_eval`` held-out sequences, ``trace_every`` /
    ``n_trace``: how often and on how many held-out sequences the sink is traced during
    training."""

    triggers: int = 3
    concentration: float = 0.3
    pool: int = 4096
    n_eval: int = 256
    trace_every: int = 50
    n_trace: int = 32


class _Prepared(NamedTuple):
    params: TransformerParams
    pool: Array
    batches: Array
    held: Array
    is_copy: Array
    bayes: Array


def _prepare(key: Array, n_train: Array, config: ModelConfig, tc: TrainConfig,
             dc: DataConfig) -> _Prepared:
    """Task, data, minibatch indices and initial weights of one run (all random draws)."""
    k_task, k_pool, k_eval, k_init, k_batch = jax.random.split(key, 5)
    task = _sample_task(k_task, config.vocab, dc.triggers, dc.concentration)
    pool = _sample_sequences(k_pool, task, dc.pool, config.seq_len)
    held = _sample_sequences(k_eval, task, dc.n_eval, config.seq_len)
    batches = jax.random.randint(k_batch, (tc.steps, tc.batch), 0, n_train)
    return _Prepared(_init_params(k_init, config), pool, batches, held,
                     copy_positions(task, held), bayes_loss(task, held))


def _add_gates(key: Array, params: TransformerParams, config: ModelConfig) -> TransformerParams:
    """``params`` of the ungated model with the gate weights of ``config`` added: the same
    weights as ``_init_params(k_init, config)`` in :func:`_prepare`."""
    k_init = jax.random.split(key, 5)[3]
    gates = _gate_weights(jax.random.split(k_init)[1], config)
    blocks = tuple(b._replace(attn=dataclasses.replace(
        b.attn, wg=None if gates is None else gates[i], gate=config.gate,
        granularity=config.granularity, activation=config.activation))
        for i, b in enumerate(params.blocks))
    return params._replace(blocks=blocks)


def _sink_share(w: Array, query_mask: Array) -> Array:
    """Mean of ``w[..., i, 0]`` over sequences and queries ``i >= 1`` where ``query_mask``;
    ``w: (B, L, H, N, N)``, ``query_mask: (B, N)`` -> ``(L, H)``."""
    first = w[..., 1:, 0]
    m = jnp.broadcast_to(query_mask[:, None, None, 1:], first.shape)
    return jnp.sum(jnp.where(m, first, 0.0), axis=(0, -1)) / jnp.sum(m, axis=(0, -1))


def _train_eval(prep: _Prepared, peak_lr: Array, tc: TrainConfig, dc: DataConfig) -> RunResult:
    """Train from ``prep`` (no random draws here) and evaluate on its held-out set."""
    tx = optimizer(tc, peak_lr)
    state = TrainState(prep.params, tx.init(prep.params), jnp.zeros((), jnp.int32))
    fwd = jax.vmap(_forward, (None, 0))
    trace_held, trace_copy = prep.held[:dc.n_trace], prep.is_copy[:dc.n_trace]

    def trace(params):
        return _sink_share(fwd(params, trace_held)[1], ~trace_copy)

    def step(s, idx):
        return _train_step(s, prep.pool[idx], tx)

    def chunk(s, idx_chunk):
        sink = trace(s.params)
        s, losses = jax.lax.scan(step, s, idx_chunk)
        return s, (losses, sink)

    n_chunks = tc.steps // dc.trace_every          # train_runs checks divisibility
    state, (losses, sinks) = jax.lax.scan(
        chunk, state, prep.batches.reshape(n_chunks, dc.trace_every, tc.batch))
    train_loss = losses.reshape(-1)
    sink_trace = jnp.concatenate([sinks, trace(state.params)[None]])

    p, held, is_copy = state.params, prep.held, prep.is_copy
    lg, w = fwd(p, held)                                                    # (B,N,V), (B,L,H,N,N)
    logp = jax.nn.log_softmax(lg[:, :-1])
    ce = -jnp.take_along_axis(logp, held[:, 1:, None], axis=-1)[..., 0]   # (B, N-1)
    cq = is_copy[:, :-1]
    correct = jnp.argmax(logp, axis=-1) == held[:, 1:]
    return RunResult(
        train_loss=train_loss,
        eval_loss=jnp.mean(ce),
        eval_copy_loss=jnp.sum(jnp.where(cq, ce, 0.0)) / jnp.sum(cq),
        eval_bigram_loss=jnp.sum(jnp.where(cq, 0.0, ce)) / jnp.sum(~cq),
        copy_acc=jnp.sum(jnp.where(cq, correct, False)) / jnp.sum(cq),
        bayes_loss=prep.bayes,
        sink=_sink_share(w, jnp.ones_like(is_copy)),
        sink_copy=_sink_share(w, is_copy),
        sink_other=_sink_share(w, ~is_copy),
        sink_trace=sink_trace,
        maps=w[0], tokens=held[0])


_prepare_many = jax.jit(jax.vmap(_prepare, in_axes=(0, 0, None, None, None)),
                        static_argnums=(2, 3, 4))
_add_gates_many = jax.jit(jax.vmap(_add_gates, in_axes=(0, 0, None)), static_argnums=2)
_train_eval_many = jax.jit(jax.vmap(_train_eval, in_axes=(0, 0, None, None)),
                           static_argnums=(2, 3))


def train_runs(keys: Array, n_train, peak_lr, config: ModelConfig, tc: TrainConfig,
               dc: DataConfig = DataConfig()) -> RunResult:
    """Train ``R`` independent models at once (``jax.vmap`` over runs; one compilation per
    ``(config, tc, dc)`` and run count).

    ``keys: (R,)`` ``jax.random`` keys (each fixes task, data, initial weights and batch
    order of its run; runs with equal keys and sizes share all of these whatever the gate);
    ``n_train: (R,)`` training-set sizes ``1 <= n <= dc.pool``; ``peak_lr: (R,)`` peak
    learning rates ``> 0`` (``tc.peak_lr`` is not used here).
    Returns a :class:`RunResult` with a leading axis ``R``.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (use make_config), got {type(config).__name__}")
    if not isinstance(tc, TrainConfig):
        raise TypeError(f"tc must be a TrainConfig (use make_train_config), got {type(tc).__name__}")
    if not isinstance(dc, DataConfig):
        raise TypeError(f"dc must be a DataConfig, got {type(dc).__name__}")
    if dc.triggers >= config.vocab:
        raise ValueError(f"dc.triggers must be < vocab, got {dc.triggers} >= {config.vocab}")
    for name in ("pool", "n_eval", "trace_every", "n_trace"):
        checks.positive_int(getattr(dc, name), f"dc.{name}")
    checks.real(dc.concentration, "dc.concentration", positive=True)
    if tc.steps % dc.trace_every:
        raise ValueError(f"dc.trace_every must divide tc.steps, got trace_every="
                         f"{dc.trace_every}, steps={tc.steps}")
    if not (isinstance(keys, jax.Array) and jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
            and keys.ndim == 1):
        raise TypeError("keys must be a 1-d array of jax.random keys (jax.random.split(key, R))")
    r = keys.shape[0]
    n_arr = np.asarray(n_train)
    if n_arr.shape != (r,) or not np.issubdtype(n_arr.dtype, np.integer):
        raise ValueError(f"n_train must be an integer array of shape ({r},), got shape "
                         f"{n_arr.shape} and dtype {n_arr.dtype}")
    if n_arr.min() < 1 or n_arr.max() > dc.pool:
        raise ValueError(f"n_train must lie in [1, {dc.pool}] (dc.pool), got range "
                         f"[{n_arr.min()}, {n_arr.max()}]")
    lr = checks.finite_array(peak_lr, "peak_lr", shape=(r,)).astype(np.float64)
    if np.any(lr <= 0):
        raise ValueError(f"peak_lr must be > 0, got min {lr.min()!r}")
    plain = config._replace(gate=None, granularity="elementwise", activation="sigmoid")
    prep = _prepare_many(keys, jnp.asarray(n_arr, jnp.int32), plain, tc, dc)
    if config.gate is not None:
        prep = prep._replace(params=_add_gates_many(keys, prep.params, config))
    return _train_eval_many(prep, jnp.asarray(lr), tc, dc)
