r"""The Bigram-Backcopy task of Guo et al. (2024): the data of the small transformer.

A fixed first token ``BOS``, then tokens from a random bigram model, except that after a
*trigger* token the next token copies the token before the trigger:

.. math::
    x_0 = \mathrm{BOS},\qquad
    x_{i+1} = \begin{cases} x_{i-1} & x_i \text{ a trigger and } i \ge 2,\\
    \sim P(\cdot \mid x_i) & \text{otherwise.}\end{cases}

:func:`sample_task` draws ``P`` and the triggers, :func:`sample_sequences` draws sequences,
:func:`copy_positions` marks where the copy rule applies and :func:`bayes_loss` is the
cross-entropy of the true law (the floor of any model). The ``*_unchecked`` functions are
the traceable cores for code inside ``jit``/``vmap`` (:mod:`gated_hmoe.estimation.training`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from gated_hmoe import checks


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

    >>> import jax
    >>> sample_task(jax.random.key(0), vocab=8, triggers=2).transition.shape
    (9, 8)
    """
    vocab = checks.positive_int(vocab, "vocab", minimum=2)
    triggers = checks.positive_int(triggers, "triggers")
    if triggers >= vocab:
        raise ValueError(f"triggers must be < vocab, got triggers={triggers}, vocab={vocab}")
    concentration = checks.real(concentration, "concentration", positive=True)
    return sample_task_unchecked(key, vocab, triggers, concentration)


def sample_task_unchecked(key: Array, vocab: int, triggers: int,
                          concentration: float) -> BigramBackcopyTask:
    """:func:`sample_task` without validation (traceable in ``key``; the sizes are static)."""
    k_rows, k_trig = jax.random.split(key)
    rows = jax.random.dirichlet(k_rows, jnp.full((vocab,), concentration, jnp.float64),
                                (vocab + 1,))
    trig = jax.random.permutation(k_trig, vocab)[:triggers]
    is_trigger = jnp.zeros(vocab, bool).at[trig].set(True)
    rows = jnp.where(is_trigger[None, :], jnp.minimum(rows, 1.0 / vocab), rows)
    rows = rows.at[vocab].set(jnp.where(is_trigger, 0.0, rows[vocab]))
    rows = rows / rows.sum(axis=1, keepdims=True)
    return BigramBackcopyTask(rows, is_trigger)


def sample_sequences_unchecked(key: Array, task: BigramBackcopyTask, n_seq: int,
                               seq_len: int) -> Int[Array, "n_seq seq_len"]:
    """:func:`sample_sequences` without validation (traceable; the sizes are static): one
    ``jax.lax.scan`` over positions, all sequences at once."""
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
                     seq_len: int) -> Int[Array, "n_seq seq_len"]:
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
    return sample_sequences_unchecked(key, task, n_seq, seq_len)


def copy_positions(task: BigramBackcopyTask, tokens: Int[Array, "*batch N"]) -> Bool[Array, "*batch N"]:
    """``(..., N)`` bool: query positions ``i >= 2`` whose token is a trigger, i.e. where the
    next token is a copy of ``tokens[i - 1]`` (the positions that need attention)."""
    vocab = task.transition.shape[1]
    pos = jnp.arange(tokens.shape[-1])
    return (pos >= 2) & (tokens < vocab) & task.is_trigger[jnp.minimum(tokens, vocab - 1)]


def bayes_loss(task: BigramBackcopyTask, tokens: Int[Array, "B N"]) -> Float[Array, ""]:
    r"""Mean cross-entropy (nats) of the true conditional law on ``tokens: (B, N)``: the
    bigram entropy :math:`-\sum_b P(b \mid x_i)\log P(b \mid x_i)` at ordinary positions, 0
    at copy positions -- the floor of any model."""
    p = task.transition[tokens[:, :-1]]
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    ent = jnp.where(copy_positions(task, tokens)[:, :-1], 0.0, ent)
    return jnp.mean(ent)


__all__ = ["BigramBackcopyTask", "bayes_loss", "copy_positions", "sample_sequences",
           "sample_sequences_unchecked", "sample_task", "sample_task_unchecked"]
