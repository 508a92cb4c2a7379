r"""Head-level Voronoi loss between a student and a teacher attention layer (SPEC §4, E5).

A head ``h`` of an attention layer (:class:`gated_hmoe.models.attention.AttentionParams`) is
read through what the layer's output identifies about it:

- its **score matrix** ``S_h = W_Q^h W_K^{h T} / sqrt(d_k)``, ``(d, d)`` (invariant to any
  invertible change of the ``d_k`` query/key channels);
- its **value-output map** ``M_h = W_V^h W_O^h``, ``(d, d_out)`` (invariant to any invertible
  change of the ``d_v`` value channels);
- its **mass** ``m_h = ||M_h||_F``: a head whose value-output map vanishes outputs nothing,
  and costs nothing, as a fading atom costs nothing in ``D_1``;
- its **router** ``r_h = vec S_h``, extended by the head's gate vector ``t_h: (d,)`` for the
  *headwise* G1/G2 gate (one scalar ``act(x^T t_h)`` per head and token, identified as a
  head-level vector). Gate weights are left out elsewhere, by choice: elementwise G1/G2 and
  G3/G4 gates act per value or key channel, so their weights are identified only together
  with a matching of channels (a permutation and rescaling inside the head) that ``S_h`` and
  ``M_h`` have already summed out; the G5 gate belongs to the layer, not to a head. ``S_h``
  and ``M_h`` are sums of identified per-channel quantities at every position, so the loss
  below is a valid (coarser) loss for every gate position.

**Cells.** Student head ``i`` belongs to the cell ``V_j`` of the nearest teacher head ``j``
(:func:`gated_hmoe.estimation.voronoi.cells`, ties to the lower index) in the normalised atom

.. math::
    \omega_h = \big(r_h / \bar\rho,\; M_h / m_h\big), \qquad
    \bar\rho = \tfrac{1}{H^*}\textstyle\sum_j \|r^*_j\|,

the router in units of the teacher's mean router norm and the value map by its direction
(``0`` for an exactly dead head), so that both parts are of order one and a head's scale --
its mass, which a split divides -- does not decide its cell.

**Loss** (the analogue of ``D_1``, :func:`gated_hmoe.estimation.voronoi.d1`), with
``\bar M_j = \sum_{i \in V_j} M_i`` the cell's summed value map:

.. math::
    \mathcal D(\hat G, G^*) = \sum_j \Big|\sum_{i\in V_j} m_i - m^*_j\Big|
      + \sum_{j:|V_j|=1} m_i\big(\|r_i - r^*_j\| + \|M_i - M^*_j\|\big)
      + \sum_{j:|V_j|>1} \sum_{i\in V_j} m_i\big(\|r_i - r^*_j\|^2 + \|\bar M_j - M^*_j\|^2\big).

In a cell with several heads only the *summed* value map is compared with the teacher's:
a pair sharing a teacher head's role (``S_a = S_b = S^*``) reproduces it for every split
``M_a + M_b = M^*``, so the individual maps are not what the data identify. What is left
of the split shows in the mass term: ``m_a + m_b - m^* >= 0`` by the triangle inequality,
zero exactly when both maps point along ``M^*`` (the weight split ``p M^*, (1-p) M^*`` is
unidentified for every class, as ``beta_0``'s split in ``D_1``). Norms are Frobenius, on
the raw (unnormalised) ``r`` and ``M``. Every sum runs over heads and cells, so the loss is
invariant to permuting the student's heads and the teacher's (up to ties of the cells).

All functions take concrete values and run in numpy, outside ``jit``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from jaxtyping import Float

from gated_hmoe import checks
from gated_hmoe.estimation import voronoi
from gated_hmoe.models.attention import AttentionParams, validate

#: The fates :func:`surplus_fate` reports.
FATES: tuple[str, ...] = ("none", "dead", "split", "other")


class HeadMaps(NamedTuple):
    """What a layer's heads identify: ``score (H, d, d)``, ``value (H, d, d_out)``,
    ``mass (H,)`` (``||value||_F``), ``router (H, r)`` (``vec score``, then the headwise
    gate vector where the layer has one)."""

    score: np.ndarray
    value: np.ndarray
    mass: np.ndarray
    router: np.ndarray


def _check_params(params, name: str) -> AttentionParams:
    if not isinstance(params, AttentionParams):
        raise TypeError(f"{name} must be an AttentionParams, got {type(params).__name__}")
    d = np.shape(params.wq)[1] if np.ndim(params.wq) == 3 else 1
    try:
        validate(params, np.zeros((1, d)))
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {exc}") from None
    return params


def head_maps(params: AttentionParams, *, name: str = "params") -> HeadMaps:
    """The heads of ``params`` read as in the module docstring (validated; ``name`` is used
    in error messages).

    >>> import jax
    >>> from gated_hmoe.models.attention import init_params
    >>> p = init_params(jax.random.key(0), d=3, heads=2, d_k=2, d_v=2, d_out=1)
    >>> h = head_maps(p)
    >>> h.score.shape, h.value.shape, h.router.shape
    ((2, 3, 3), (2, 3, 1), (2, 9))
    """
    _check_params(params, name)
    wq, wk = np.asarray(params.wq, float), np.asarray(params.wk, float)
    wv, wo = np.asarray(params.wv, float), np.asarray(params.wo, float)
    score = np.einsum("hdk,hek->hde", wq, wk) / math.sqrt(wq.shape[2])
    value = np.einsum("hdv,hvo->hdo", wv, wo)
    mass = np.linalg.norm(value.reshape(value.shape[0], -1), axis=1)
    router = [score.reshape(score.shape[0], -1)]
    if params.granularity == "headwise":
        router.append(np.asarray(params.wg, float))
    return HeadMaps(score, value, mass, np.concatenate(router, 1))


def _pair(student, teacher) -> tuple[HeadMaps, HeadMaps]:
    s, t = head_maps(student, name="student"), head_maps(teacher, name="teacher")
    for what in ("gate", "granularity"):
        if getattr(student, what) != getattr(teacher, what):
            raise ValueError(f"student.{what} must equal teacher.{what}, got "
                             f"{getattr(student, what)!r} and {getattr(teacher, what)!r}")
    if s.score.shape[1] != t.score.shape[1] or s.value.shape[2] != t.value.shape[2]:
        raise ValueError(f"student and teacher must have the same d and d_out, got "
                         f"{student.sizes} and {teacher.sizes}")
    if not np.all(t.mass > 0):
        raise ValueError("teacher must have no dead head (every W_V^h W_O^h non-zero)")
    return s, t


def _atoms(h: HeadMaps, scale: float) -> Float[np.ndarray, "H a"]:
    direction = h.value.reshape(h.value.shape[0], -1)
    direction = direction / np.where(h.mass > 0, h.mass, 1.0)[:, None]
    return np.concatenate([h.router / scale, direction], 1)


def head_cells(student: AttentionParams, teacher: AttentionParams) -> dict:
    """The Voronoi cells: ``assign (H,)`` (each student head's teacher head), ``sizes (H*,)``
    and the two layers' :class:`HeadMaps` (``student``, ``teacher``)."""
    s, t = _pair(student, teacher)
    scale = float(np.mean(np.linalg.norm(t.router, axis=1)))
    assign, sizes, _ = voronoi.cells(_atoms(s, scale if scale > 0 else 1.0),
                                     _atoms(t, scale if scale > 0 else 1.0))
    return {"assign": assign, "sizes": sizes, "student": s, "teacher": t}


def head_loss(student: AttentionParams, teacher: AttentionParams) -> float:
    """The head-level Voronoi loss ``D(student, teacher)`` of the module docstring.

    >>> import jax
    >>> from gated_hmoe.models.attention import init_params
    >>> p = init_params(jax.random.key(0), d=3, heads=2, d_k=2, d_v=2, d_out=1)
    >>> head_loss(p, p)
    0.0
    """
    c = head_cells(student, teacher)
    s, t, assign, sizes = c["student"], c["teacher"], c["assign"], c["sizes"]
    cell_mass = np.bincount(assign, weights=s.mass, minlength=t.mass.shape[0])
    total = float(np.sum(np.abs(cell_mass - t.mass)))
    summed = np.zeros_like(t.value)
    np.add.at(summed, assign, s.value)
    for i, j in enumerate(assign):
        dr = np.linalg.norm(s.router[i] - t.router[j])
        if sizes[j] == 1:
            total += s.mass[i] * (dr + np.linalg.norm(s.value[i] - t.value[j]))
        else:
            total += s.mass[i] * (dr ** 2 + np.linalg.norm(summed[j] - t.value[j]) ** 2)
    return float(total)


def _alive(c: dict, dead_tol) -> np.ndarray:
    dead_tol = checks.real(dead_tol, "dead_tol", positive=True)
    return c["student"].mass >= dead_tol * float(np.min(c["teacher"].mass))


def surplus_fate(student: AttentionParams, teacher: AttentionParams, *,
                 dead_tol: float = 0.05) -> str:
    """What the student did with its heads beyond the teacher's (one of :data:`FATES`).

    A student head is *dead* when its mass is below ``dead_tol`` times the smallest teacher
    mass, *alive* otherwise. Then:

    - ``"none"``: no more heads than the teacher, and each teacher cell holds one alive head;
    - ``"dead"``: every teacher cell holds exactly one alive head, and the surplus heads are
      dead;
    - ``"split"``: every teacher cell holds an alive head, and some cell holds two or more
      (sharing that teacher head's role);
    - ``"other"``: anything else (a teacher head without an alive student head).

    >>> import jax
    >>> from gated_hmoe.models.attention import init_params
    >>> p = init_params(jax.random.key(0), d=3, heads=2, d_k=2, d_v=2, d_out=1)
    >>> surplus_fate(p, p)
    'none'
    """
    c = head_cells(student, teacher)
    alive = _alive(c, dead_tol)
    per_cell = np.bincount(c["assign"][alive], minlength=c["sizes"].shape[0])
    if np.any(per_cell == 0):
        return "other"
    if np.all(per_cell == 1):
        return "none" if alive.all() else "dead"
    return "split"


def split_error(student: AttentionParams, teacher: AttentionParams, *,
                dead_tol: float = 0.05) -> float:
    """The largest parameter error of an alive head in a cell with two or more alive heads,
    ``max ||r_i - r*_j|| + ||M_i/m_i - M*_j/m*_j||`` (router and value direction): what a
    split pair pins individually (``nan`` when no cell holds two alive heads)."""
    c = head_cells(student, teacher)
    s, t, assign = c["student"], c["teacher"], c["assign"]
    alive = _alive(c, dead_tol)
    per_cell = np.bincount(assign[alive], minlength=t.mass.shape[0])
    errors = [np.linalg.norm(s.router[i] - t.router[j])
              + np.linalg.norm(s.value[i] / s.mass[i] - t.value[j] / t.mass[j])
              for i, j in enumerate(assign) if alive[i] and per_cell[j] > 1]
    return float(max(errors)) if errors else float("nan")


def head_report(student: AttentionParams, teacher: AttentionParams, *,
                dead_tol: float = 0.05) -> dict:
    """Everything at once: ``head_loss``, ``fate``, ``split_error``, ``cells`` (list) and the
    student's ``masses`` (list)."""
    c = head_cells(student, teacher)
    return {"head_loss": head_loss(student, teacher),
            "fate": surplus_fate(student, teacher, dead_tol=dead_tol),
            "split_error": split_error(student, teacher, dead_tol=dead_tol),
            "cells": [int(v) for v in c["assign"]],
            "masses": [float(v) for v in c["student"].mass]}


__all__ = ["FATES", "HeadMaps", "head_cells", "head_loss", "head_maps", "head_report",
           "split_error", "surplus_fate"]
