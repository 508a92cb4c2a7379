r"""Teacher-student training of attention layers by Adam, as practitioners train them (E5).

**Layers.** One attention layer per gate position of
:data:`gated_hmoe.models.heads.LAYER_POSITIONS`, every one evaluated by the library's layer
(:func:`gated_hmoe.models.attention.attention_unchecked` on an
:class:`~gated_hmoe.models.attention.AttentionParams`) with free ``W_Q, W_K, W_V, W_O``
(:class:`LayerParams`, :func:`layer_output`):

- ``"MHSA"``: no gate; ``"G1"``, ``"G2"``: the literal sigmoid gate, elementwise;
  ``"G1-headwise"``: G1 with one gate per head; ``"G3"``, ``"G4"``, ``"G5"``: gated keys,
  queries, layer output (elementwise, sigmoid);
- ``"G2-tied"``: the G2 gate tied to the values, ``W_theta = W_V`` (stored as a plain layer;
  the gate is built at every call), so ``V_h ⊙ sigma(V_h) = SiLU(X W_V^h)``;
- ``"ridge"``: a value activation, head output ``pi_h SiLU(X W_V^h + b_h) W_O^h`` with a
  bias ``b: (H, d_v)`` -- the attention weights of the library's layer
  (:func:`gated_hmoe.models.attention.attention_weights_unchecked`) on a ridge value map.

**Data** (:func:`sample_inputs`). A sequence is ``N`` tokens drawn i.i.d. ``N(0, I_d)``;
``Y = f_teacher(X) + sqrt(nu_abs) xi`` with ``xi`` standard normal per output entry and
``nu_abs = nu * Var(f_teacher)``, the pooled variance of the teacher's output entries over
4096 sequences drawn with the fixed key 12345 (:func:`output_variance`).

**Training** (:func:`train_runs`). Random initialisation by
:func:`gated_hmoe.models.attention.init_params` (entries ``N(0, 1/fan_in)``; the ridge bias
at zero); full-batch Adam (optax, ``b1 = 0.9``, ``b2 = 0.999``) on the mean squared error
over all ``n N d_out`` output entries, learning rate ``lr`` decayed by a cosine to
``final_lr_frac * lr`` at the step budget (:class:`TrainSettings`). Stopping rule
(declared): an *anchor* starts at the first loss; a step whose (pre-update) training loss is
below ``(1 - rel_tol) * anchor`` improves, and becomes the anchor; training stops at the
first step with no improvement in the last ``window`` steps (a plateau), else at the step
budget, which is then reported (``budget_hit``).

**Shapes and compilation.** :func:`train_runs` trains ``S`` data sets times ``I``
initialisations in one ``jax.vmap`` over data sets and, inside, over initialisations; it
compiles once per ``(position, n, S, I, settings)``: a sweep over seeds reuses it and
compiles once per ``n``-point (no padding to the largest ``n``, so small ``n`` cost little).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from gated_hmoe import checks
from gated_hmoe.estimation import head_voronoi
from gated_hmoe.models import heads
from gated_hmoe.models.attention import (AttentionParams, attention_unchecked,
                                         attention_weights_unchecked, init_params)

#: Gate positions (the layer classes of :data:`gated_hmoe.models.heads.LAYER_POSITIONS`).
POSITIONS: tuple[str, ...] = heads.LAYER_POSITIONS
#: ``position -> (gate, granularity)`` of the stored :class:`AttentionParams`.
SETTINGS: dict[str, tuple[str | None, str]] = {
    "MHSA": (None, "elementwise"), "G1": ("G1", "elementwise"),
    "G1-headwise": ("G1", "headwise"), "G2": ("G2", "elementwise"),
    "G2-tied": (None, "elementwise"), "ridge": (None, "elementwise"),
    "G3": ("G3", "elementwise"), "G4": ("G4", "elementwise"), "G5": ("G5", "elementwise")}
#: Key of the fixed draw that sets the output variance.
VARIANCE_KEY: int = 12345


class LayerParams(NamedTuple):
    """Weights of one layer (a PyTree): ``attn`` (:class:`AttentionParams`; for ``"G2-tied"``
    and ``"ridge"`` stored without a gate) and ``bias: (H, d_v)`` (``"ridge"`` only, else
    ``None``)."""

    attn: AttentionParams
    bias: Array | None = None


class TrainSettings(NamedTuple):
    """Adam and the stopping rule (hashable; see the module docstring): ``steps`` (budget),
    ``lr``, ``final_lr_frac``, ``window``, ``rel_tol``."""

    steps: int = 2000
    lr: float = 3e-2
    final_lr_frac: float = 0.01
    window: int = 100
    rel_tol: float = 1e-4


def check_settings(ts) -> TrainSettings:
    """``ts`` if it is a valid :class:`TrainSettings`, else an error naming the field."""
    if not isinstance(ts, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(ts).__name__}")
    checks.positive_int(ts.steps, "steps")
    checks.positive_int(ts.window, "window")
    checks.real(ts.lr, "lr", positive=True)
    for name in ("final_lr_frac", "rel_tol"):
        v = checks.real(getattr(ts, name), name, positive=True)
        if v >= 1:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    return ts


def check_position(position) -> str:
    """``position`` if it is one of :data:`POSITIONS`, else ``ValueError``."""
    return checks.choice(position, "position", POSITIONS)


def init_layer(key: Array, position: str, *, d: int, heads: int, d_k: int, d_v: int,
               d_out: int, scale: float = 1.0) -> LayerParams:
    """Random weights of a layer at ``position`` (:func:`init_params`, entries
    ``N(0, scale^2/fan_in)``; ridge bias zero).

    >>> import jax
    >>> p = init_layer(jax.random.key(0), "ridge", d=4, heads=3, d_k=4, d_v=2, d_out=4)
    >>> p.attn.wv.shape, p.bias.shape
    ((3, 4, 2), (3, 2))
    """
    check_position(position)
    gate, granularity = SETTINGS[position]
    attn = init_params(key, d=d, heads=heads, d_k=d_k, d_v=d_v, d_out=d_out, gate=gate,
                       granularity=granularity, scale=scale)
    bias = jnp.zeros((heads, d_v), attn.wv.dtype) if position == "ridge" else None
    return LayerParams(attn, bias)


def check_layer(params, position: str, name: str = "params") -> LayerParams:
    """``params`` if it is a :class:`LayerParams` of ``position`` (settings, shapes,
    finiteness), else an error naming ``name``."""
    check_position(position)
    if not isinstance(params, LayerParams):
        raise TypeError(f"{name} must be a LayerParams, got {type(params).__name__}")
    gate, granularity = SETTINGS[position]
    attn = params.attn
    if not isinstance(attn, AttentionParams):
        raise TypeError(f"{name}.attn must be an AttentionParams, got {type(attn).__name__}")
    if (attn.gate, attn.granularity, attn.activation) != (gate, granularity, "sigmoid"):
        raise ValueError(f"{name}.attn must have gate={gate!r}, granularity={granularity!r}, "
                         f"activation='sigmoid' for position {position!r}, got gate="
                         f"{attn.gate!r}, granularity={attn.granularity!r}, activation="
                         f"{attn.activation!r}")
    head_voronoi.head_maps(attn, name=f"{name}.attn")          # shapes and finiteness
    H, d_v = np.shape(attn.wv)[0], np.shape(attn.wv)[2]
    if position == "ridge":
        checks.finite_array(params.bias, f"{name}.bias", shape=(H, d_v))
    elif params.bias is not None:
        raise ValueError(f"{name}.bias must be None for position {position!r}")
    return params


def layer_attention(params: LayerParams, position: str) -> AttentionParams:
    """The :class:`AttentionParams` the layer evaluates (``"G2-tied"``: ``W_theta = W_V``)."""
    if position == "G2-tied":
        return dataclasses.replace(params.attn, gate="G2", wg=params.attn.wv)
    return params.attn


def layer_output(params: LayerParams, x: Float[Array, "N d"], position: str
                 ) -> Float[Array, "N d_out"]:
    """Output ``(N, d_out)`` of the layer on one sequence ``x: (N, d)``. Traceable."""
    if position != "ridge":
        return attention_unchecked(layer_attention(params, position), x, None)
    pi = attention_weights_unchecked(params.attn, x, None)                         # (H, N, N)
    leaf = jax.nn.silu(jnp.einsum("nd,hdv->hnv", x, params.attn.wv) + params.bias[:, None])
    return jnp.einsum("hij,hjv,hvo->io", pi, leaf, params.attn.wo)


def batched_output(params: LayerParams, x: Float[Array, "n N d"], position: str
                   ) -> Float[Array, "n N d_out"]:
    """:func:`layer_output` over a leading sample axis. Traceable."""
    return jax.vmap(lambda xx: layer_output(params, xx, position))(x)


def sample_inputs(key: Array, *, n: int, n_tokens: int, d: int) -> Float[Array, "n N d"]:
    """``n`` sequences of ``n_tokens`` tokens, each token i.i.d. ``N(0, I_d)``."""
    return jax.random.normal(key, (n, n_tokens, d), jnp.float64)


def output_variance(teacher: LayerParams, position: str, *, n_tokens: int) -> float:
    """Pooled variance of the teacher's output entries over 4096 sequences (key
    :data:`VARIANCE_KEY`): the scale of the noise ``nu_abs = nu * Var``."""
    check_layer(teacher, position, "teacher")
    d = teacher.attn.sizes["d"]
    x = sample_inputs(jax.random.key(VARIANCE_KEY), n=4096, n_tokens=n_tokens, d=d)
    return float(jnp.var(batched_output(teacher, x, position)))


def optimizer(ts: TrainSettings) -> optax.GradientTransformation:
    """Adam with the cosine-decayed learning rate of ``ts``."""
    return optax.adam(optax.cosine_decay_schedule(ts.lr, ts.steps, alpha=ts.final_lr_frac))


def _train_one(params0: LayerParams, x, y, position: str, ts: TrainSettings):
    tx = optimizer(ts)

    def loss(p):
        return jnp.mean((batched_output(p, x, position) - y) ** 2)

    def cond(c):
        return (c["step"] < ts.steps) & (c["step"] - c["last"] < ts.window)

    def body(c):
        value, grads = jax.value_and_grad(loss)(c["params"])
        updates, opt_state = tx.update(grads, c["opt"], c["params"])
        improved = (value < (1.0 - ts.rel_tol) * c["anchor"]) | (c["step"] == 0)
        return {"params": optax.apply_updates(c["params"], updates), "opt": opt_state,
                "step": c["step"] + 1, "anchor": jnp.where(improved, value, c["anchor"]),
                "last": jnp.where(improved, c["step"], c["last"])}

    init = {"params": params0, "opt": tx.init(params0), "step": jnp.zeros((), jnp.int32),
            "anchor": jnp.asarray(jnp.inf, x.dtype), "last": jnp.zeros((), jnp.int32)}
    out = jax.lax.while_loop(cond, body, init)
    plateau = out["step"] - out["last"] >= ts.window
    return out["params"], loss(out["params"]), out["step"], ~plateau


def _excess(params: LayerParams, teacher: LayerParams, x_test, position: str):
    return jnp.mean((batched_output(params, x_test, position)
                     - batched_output(teacher, x_test, position)) ** 2)


def _train_and_test(params0, x, y, x_test, teacher, position, ts):
    params, train_loss, steps, budget = _train_one(params0, x, y, position, ts)
    return params, train_loss, _excess(params, teacher, x_test, position), steps, budget


_per_init = jax.vmap(_train_and_test, in_axes=(0, None, None, None, None, None, None))
_train_many = jax.jit(jax.vmap(_per_init, in_axes=(0, 0, 0, 0, None, None, None)),
                      static_argnums=(5, 6))


class Runs(NamedTuple):
    """Trained runs, leading axes ``(S, I)`` (data sets, initialisations): ``params``
    (:class:`LayerParams`), ``train_loss``, ``excess_risk`` (mean squared gap to the teacher
    on the test sequences), ``steps``, ``budget_hit`` (numpy)."""

    params: LayerParams
    train_loss: np.ndarray
    excess_risk: np.ndarray
    steps: np.ndarray
    budget_hit: np.ndarray


def train_runs(params0: LayerParams, x: Float[Array, "S n N d"], y: Float[Array, "S n N o"],
               x_test: Float[Array, "S m N d"], teacher: LayerParams, position: str,
               settings: TrainSettings = TrainSettings()) -> Runs:
    """Train ``I`` initialisations ``params0`` (leaves with leading axes ``(S, I)``) on each of
    ``S`` data sets ``x, y`` and measure each fit's excess risk on ``x_test`` (noiseless
    teacher outputs). One compilation per shapes, position and settings."""
    check_position(position)
    check_settings(settings)
    check_layer(teacher, position, "teacher")
    x = checks.finite_array(x, "x", ndim=4)
    S, n, N, d = x.shape
    y = checks.finite_array(y, "y", shape=(S, n, N, teacher.attn.sizes["d_out"]))
    x_test = checks.finite_array(x_test, "x_test", shape=(S, None, N, d))
    lead = {np.shape(a)[:2] for a in jax.tree.leaves(params0)}
    if len(lead) != 1 or next(iter(lead))[0] != S:
        raise ValueError(f"params0 must have leaves with leading axes (S, I) = ({S}, I), got "
                         f"{sorted(lead)}")
    out = _train_many(params0, jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_test),
                      teacher, position, settings)
    params, rest = out[0], [np.asarray(v) for v in out[1:]]
    finite = np.isfinite(rest[0]) & np.isfinite(rest[1])
    loss, excess = (np.where(finite, v, np.nan) for v in rest[:2])
    return Runs(params, loss, excess, rest[2].astype(int), rest[3].astype(bool))


def run_params(runs: Runs, s: int, i: int) -> LayerParams:
    """The weights of run ``(s, i)``."""
    return jax.tree.map(lambda a: a[s, i], runs.params)


def pick(train_loss: Float[np.ndarray, "S I"]) -> np.ndarray:
    """The practitioner's pick: per data set, the initialisation with the lowest training
    loss (a non-finite loss ranks as ``+inf``).

    >>> pick(np.array([[0.3, 0.1], [np.nan, 0.2]])).tolist()
    [1, 1]
    """
    L = np.asarray(train_loss, float)
    return np.argmin(np.where(np.isfinite(L), L, np.inf), axis=1)


__all__ = ["LayerParams", "POSITIONS", "Runs", "SETTINGS", "TrainSettings", "VARIANCE_KEY",
           "batched_output", "check_layer", "check_position", "check_settings", "init_layer",
           "layer_attention", "layer_output", "optimizer", "output_variance", "pick",
           "run_params", "sample_inputs", "train_runs"]
