r"""Training of the small transformer by AdamW (optax), one run or many runs at once.

One step minimises the mean next-token cross-entropy
:func:`gated_hmoe.models.transformer.loss_unchecked` of a minibatch,

.. math::
    \theta_{t+1} = \theta_t - \eta_t\,\bigl(\mathrm{Adam}_t(\nabla_\theta \ell_t)
    + \lambda\,\theta_t\bigr),\qquad
    \eta_t = \eta_{\max}\cdot\mathrm{warmup\_cosine}(t),

(:func:`optimizer`, :func:`train_step`). :func:`train_runs` trains ``R`` independent models
on Bigram-Backcopy data (:mod:`gated_hmoe.models.tasks`) in one ``jax.vmap`` and reports
held-out losses and the attention-sink statistics (:class:`RunResult`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Bool, Float

from gated_hmoe import checks
from gated_hmoe.models import tasks
from gated_hmoe.models import transformer as tfm

Array = jax.Array


class TrainState(NamedTuple):
    """Training state: ``params`` (:class:`~gated_hmoe.models.transformer.TransformerParams`),
    ``opt_state`` (optax AdamW state) and ``step`` (int scalar)."""

    params: tfm.TransformerParams
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


class RunResult(NamedTuple):
    """What one training run reports (all arrays; a leading run axis when vmapped).

    ``train_loss: (steps,)`` minibatch loss at each step; on the held-out set:
    ``eval_loss`` (all positions), ``eval_copy_loss`` (copy positions only),
    ``eval_bigram_loss`` (other positions), ``copy_acc`` (argmax accuracy at copy
    positions), ``bayes_loss`` (the floor, :func:`gated_hmoe.models.tasks.bayes_loss`);
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


def _require(value, cls: type, name: str, hint: str = ""):
    """``value`` if it is a ``cls``, else a ``TypeError`` naming ``name``."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}{hint}, got {type(value).__name__}")
    return value


def _require_train_config(tc) -> TrainConfig:
    return _require(tc, TrainConfig, "tc", " (use make_train_config)")


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


def optimizer(tc: TrainConfig, peak_lr=None) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay (``peak_lr`` may be a traced scalar)."""
    peak = tc.peak_lr if peak_lr is None else peak_lr
    shape = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=tc.warmup, decay_steps=tc.steps,
        end_value=tc.final_lr_frac)
    return optax.adamw(lambda step: peak * shape(step), b1=tc.b1, b2=tc.b2,
                       weight_decay=tc.weight_decay)


def init_train_state(key: Array, config: tfm.ModelConfig, tc: TrainConfig) -> TrainState:
    """Fresh parameters (:func:`gated_hmoe.models.transformer.init_params`) and optimiser
    state, ``step = 0``."""
    params = tfm.init_params(key, config)
    _require_train_config(tc)
    return TrainState(params, optimizer(tc).init(params), jnp.zeros((), jnp.int32))


def _train_step(state: TrainState, tokens: Array, tx: optax.GradientTransformation
                ) -> tuple[TrainState, Array]:
    value, grads = jax.value_and_grad(tfm.loss_unchecked)(state.params, tokens)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), value


_train_step_jit = jax.jit(lambda s, t, tc: _train_step(s, t, optimizer(tc)), static_argnums=2)


def train_step(state: TrainState, tokens, tc: TrainConfig) -> tuple[TrainState, Array]:
    """One AdamW step on the minibatch ``tokens: (B, N)``; returns the new state and the
    minibatch loss before the step. Jitted (``tc`` is static)."""
    _require(state, TrainState, "state")
    _require_train_config(tc)
    return _train_step_jit(state, tfm.check_tokens(state.params, tokens, batch=True), tc)


# --------------------------------------------------------------------------------------
# Many runs at once
# --------------------------------------------------------------------------------------

class _Prepared(NamedTuple):
    params: tfm.TransformerParams
    pool: Array
    batches: Array
    held: Array
    is_copy: Array
    bayes: Array


def _prepare(key: Array, n_train: Array, config: tfm.ModelConfig, tc: TrainConfig,
             dc: DataConfig) -> _Prepared:
    """Task, data, minibatch indices and initial weights of one run (all random draws)."""
    k_task, k_pool, k_eval, k_init, k_batch = jax.random.split(key, 5)
    task = tasks.sample_task_unchecked(k_task, config.vocab, dc.triggers, dc.concentration)
    pool = tasks.sample_sequences_unchecked(k_pool, task, dc.pool, config.seq_len)
    held = tasks.sample_sequences_unchecked(k_eval, task, dc.n_eval, config.seq_len)
    batches = jax.random.randint(k_batch, (tc.steps, tc.batch), 0, n_train)
    return _Prepared(tfm.init_params_unchecked(k_init, config), pool, batches, held,
                     tasks.copy_positions(task, held), tasks.bayes_loss(task, held))


def _add_gates(key: Array, params: tfm.TransformerParams,
               config: tfm.ModelConfig) -> tfm.TransformerParams:
    """``params`` of the ungated model with the gate weights of ``config`` added: the same
    weights as ``init_params_unchecked(k_init, config)`` in :func:`_prepare`."""
    k_init = jax.random.split(key, 5)[3]
    gates = tfm.gate_weights(jax.random.split(k_init)[1], config)
    blocks = tuple(b._replace(attn=dataclasses.replace(
        b.attn, wg=None if gates is None else gates[i], gate=config.gate,
        granularity=config.granularity, activation=config.activation))
        for i, b in enumerate(params.blocks))
    return params._replace(blocks=blocks)


def _sink_share(w: Float[Array, "B L H N N"], query_mask: Bool[Array, "B N"]) -> Float[Array, "L H"]:
    """Mean of ``w[..., i, 0]`` over sequences and queries ``i >= 1`` where ``query_mask``;
    ``w: (B, L, H, N, N)``, ``query_mask: (B, N)`` -> ``(L, H)``."""
    first = w[..., 1:, 0]
    m = jnp.broadcast_to(query_mask[:, None, None, 1:], first.shape)
    return jnp.sum(jnp.where(m, first, 0.0), axis=(0, -1)) / jnp.sum(m, axis=(0, -1))


def _train_eval(prep: _Prepared, peak_lr: Array, tc: TrainConfig, dc: DataConfig) -> RunResult:
    """Train from ``prep`` (no random draws here) and evaluate on its held-out set."""
    tx = optimizer(tc, peak_lr)
    state = TrainState(prep.params, tx.init(prep.params), jnp.zeros((), jnp.int32))
    fwd = jax.vmap(tfm.forward, (None, 0))
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


def train_runs(keys: Array, n_train, peak_lr, config: tfm.ModelConfig, tc: TrainConfig,
               dc: DataConfig = DataConfig()) -> RunResult:
    """Train ``R`` independent models at once (``jax.vmap`` over runs; one compilation per
    ``(config, tc, dc)`` and run count).

    ``keys: (R,)`` ``jax.random`` keys (each fixes task, data, initial weights and batch
    order of its run; runs with equal keys and sizes share all of these whatever the gate);
    ``n_train: (R,)`` training-set sizes ``1 <= n <= dc.pool``; ``peak_lr: (R,)`` peak
    learning rates ``> 0`` (``tc.peak_lr`` is not used here).
    Returns a :class:`RunResult` with a leading axis ``R``.
    """
    tfm.check_config(config)
    _require_train_config(tc)
    _require(dc, DataConfig, "dc")
    if dc.triggers >= config.vocab:
        raise ValueError(f"dc.triggers must be < vocab, got {dc.triggers} >= {config.vocab}")
    for name in ("pool", "n_eval", "trace_every", "n_trace"):
        checks.positive_int(getattr(dc, name), f"dc.{name}")
    checks.real(dc.concentration, "dc.concentration", positive=True)
    if tc.steps % dc.trace_every:
        raise ValueError(f"dc.trace_every must divide tc.steps, got trace_every="
                         f"{dc.trace_every}, steps={tc.steps}")
    r = checks.prng_key(keys, "keys", batch=True).shape[0]
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


__all__ = ["DataConfig", "RunResult", "TrainConfig", "TrainState", "init_train_state",
           "make_train_config", "optimizer", "train_runs", "train_step"]
