r"""Voronoi cells and losses between fitted and true atoms (SPEC §4-§5).

One cell computation (:func:`cells`) serves every model: fitted atom ``i`` with location
``omega_i`` belongs to the cell ``V_j`` of the nearest true atom ``j`` (ties go to the lower
index). For mixtures of experts the locations are ``omega_i = (beta_1i, [vec A_i,] eta_i)``
and the masses ``w_i = exp(beta_0i)``; with ``Δ`` the difference to the cell's true atom,

.. math::
    D_1(G, G_*) = \sum_j \Big|\sum_{i\in V_j} w_i - w^*_j\Big|
      + \sum_{j:|V_j|=1} \sum_{i\in V_j} w_i (\|\Delta\beta_{1ij}\| + \|\Delta\eta_{ij}\|)
      + \sum_{j:|V_j|>1} \sum_{i\in V_j} w_i (\|\Delta\beta_{1ij}\|^2 + \|\Delta\eta_{ij}\|^2),

    D_{2,r}(G, G_*) = \sum_j \Big|\sum_{i\in V_j} w_i - w^*_j\Big|
      + \sum_j \sum_{i\in V_j} w_i (\|\Delta\beta_{1ij}\|^r + \|\Delta a_{ij}\|^r + |\Delta b_{ij}|^r).

For attention students the atoms are the heads read by
:func:`gated_hmoe.models.heads.head_atoms` (:func:`head_losses`).

All functions take concrete (numpy-convertible) values and return Python floats / numpy
arrays; they are cheap and run outside ``jit``.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

from gated_hmoe import checks
from gated_hmoe.models import heads
from gated_hmoe.models.moe import MixingMeasure, validate_measure


def cells(atoms: Float[np.ndarray, "k m"], true_atoms: Float[np.ndarray, "ks m"]
          ) -> tuple[Int[np.ndarray, " k"], Int[np.ndarray, " ks"], Float[np.ndarray, " k"]]:
    """The Voronoi cells: ``(assign (k,), sizes (k*,), error (k,))`` -- each fitted atom's
    nearest true atom, the number of fitted atoms per cell, and each fitted atom's distance
    ``||omega_i - omega*_{assign_i}||`` to its cell's true atom.

    >>> cells(np.array([[0.1], [-0.1], [2.0]]), np.array([[0.0], [2.0]]))[1].tolist()
    [2, 1]
    """
    dist = np.linalg.norm(atoms[:, None, :] - true_atoms[None, :, :], axis=-1)   # (k, k*)
    assign = np.argmin(dist, axis=1)
    sizes = np.bincount(assign, minlength=true_atoms.shape[0])
    return assign, sizes, dist[np.arange(len(assign)), assign]


# ------------------------------------------------------------------ mixtures of experts

def _moe_atoms(G, name: str):
    """Masses ``(k,)``, gate-slope block ``(k, s)`` (``beta_1`` then ``vec A``) and experts."""
    G = validate_measure(G, name)
    k = G.beta0.shape[0]
    slope = G.beta1 if G.quad is None else np.concatenate([G.beta1, G.quad.reshape(k, -1)], 1)
    return np.exp(G.beta0), slope, G.expert


def _pair(G, G_true):
    w, s, e = _moe_atoms(G, "G")
    ws, ss, es = _moe_atoms(G_true, "G_true")
    if s.shape[1] != ss.shape[1]:
        raise ValueError(f"G and G_true must have the same gate dimensions: G has {s.shape[1]} "
                         f"gate slope parameters per atom, G_true has {ss.shape[1]}")
    if e.shape[1] != es.shape[1]:
        raise ValueError(f"G.expert and G_true.expert must have the same number of expert "
                         f"parameters P, got {e.shape[1]} and {es.shape[1]}")
    assign, sizes, err = cells(np.concatenate([s, e], 1), np.concatenate([ss, es], 1))
    return w, s, e, ws, ss, es, assign, sizes, err


def measure_cells(G: MixingMeasure, G_true: MixingMeasure) -> np.ndarray:
    """Index ``(k,)`` of the Voronoi cell (nearest true atom) of each fitted atom."""
    return _pair(G, G_true)[6]


def _mass_term(w, ws, assign):
    cell_mass = np.bincount(assign, weights=w, minlength=ws.shape[0])
    return float(np.sum(np.abs(cell_mass - ws)))


def d1(G: MixingMeasure, G_true: MixingMeasure) -> float:
    """``D_1(G, G_true)`` (strongly identifiable experts; SPEC §4).

    >>> G = MixingMeasure(np.zeros(1), np.zeros((1, 1)), np.array([[1.0, 0.0]]))
    >>> d1(G, G)
    0.0
    """
    w, s, e, ws, ss, es, assign, sizes, _ = _pair(G, G_true)
    ds = np.linalg.norm(s - ss[assign], axis=1)
    de = np.linalg.norm(e - es[assign], axis=1)
    over = sizes[assign] > 1
    atom = np.where(over, ds ** 2 + de ** 2, ds + de)
    return _mass_term(w, ws, assign) + float(np.sum(w * atom))


def d2(G: MixingMeasure, G_true: MixingMeasure, *, r: float = 1) -> float:
    """``D_{2,r}(G, G_true)`` (linear experts, ``r >= 1``; SPEC §4).

    The expert vector is split as ``(a, b) = (eta[:D], eta[D])`` when ``P = D + 1``;
    for other expert layouts the whole ``||Δeta||^r`` is used.

    >>> G = MixingMeasure(np.zeros(1), np.zeros((1, 1)), np.array([[1.0, 0.0]]))
    >>> H = MixingMeasure(np.zeros(1), np.zeros((1, 1)), np.array([[2.0, 0.5]]))
    >>> d2(H, G, r=2)
    1.25
    """
    r = checks.real(r, "r")
    if r < 1:
        raise ValueError(f"r must be a finite number >= 1, got {r!r}")
    w, s, e, ws, ss, es, assign, _, _ = _pair(G, G_true)
    D = np.shape(G.beta1)[1]
    diff = e - es[assign]
    ds = np.linalg.norm(s - ss[assign], axis=1) ** r
    if e.shape[1] == D + 1:
        de = np.linalg.norm(diff[:, :D], axis=1) ** r + np.abs(diff[:, D]) ** r
    else:
        de = np.linalg.norm(diff, axis=1) ** r
    return _mass_term(w, ws, assign) + float(np.sum(w * (ds + de)))


def atom_errors(G: MixingMeasure, G_true: MixingMeasure) -> dict:
    """Per-atom parameter errors ``||omega_i - omega*_{j(i)}||`` split by cell type.

    Returns a dict: ``cell (k,)`` cell index of each fitted atom, ``error (k,)``,
    ``overfitted (k,)`` bool (atom shares its cell), ``cell_sizes (k*,)``,
    ``worst_overfitted`` (max error over atoms in over-fitted cells; ``nan`` if none),
    ``worst_singleton`` (max over atoms alone in their cell; ``nan`` if none).
    """
    *_, assign, sizes, err = _pair(G, G_true)
    over = sizes[assign] > 1
    return {
        "cell": assign, "error": err, "overfitted": over, "cell_sizes": sizes,
        "worst_overfitted": float(np.max(err[over])) if over.any() else float("nan"),
        "worst_singleton": float(np.max(err[~over])) if (~over).any() else float("nan"),
    }


def identifiable_part(G: MixingMeasure, G_true: MixingMeasure) -> float:
    """``V``: summed over over-fitted cells, ``|Σw - w*| + ||wmean(eta) - eta*|| + ||wmean(beta1) - beta1*||``.

    What a mixture of linear experts *does* identify (SPEC §5); ``0.0`` when no cell is
    over-fitted.
    """
    w, s, e, ws, ss, es, assign, sizes, _ = _pair(G, G_true)
    total = 0.0
    for j in np.flatnonzero(sizes > 1):
        m = assign == j
        W = w[m].sum()
        total += (abs(W - ws[j]) + np.linalg.norm(w[m] @ e[m] / W - es[j])
                  + np.linalg.norm(w[m] @ s[m] / W - ss[j]))
    return float(total)


def losses(G: MixingMeasure, G_true: MixingMeasure) -> dict:
    """All scalar losses at once: ``d1``, ``d2`` (r=1), ``d2_r2`` (r=2), ``V``, ``worst_overfitted``,
    ``worst_singleton``, and the per-atom ``atom_error`` and ``atom_overfitted`` lists."""
    ae = atom_errors(G, G_true)
    return {"d1": d1(G, G_true), "d2": d2(G, G_true, r=1), "d2_r2": d2(G, G_true, r=2),
            "V": identifiable_part(G, G_true), "worst_overfitted": ae["worst_overfitted"],
            "worst_singleton": ae["worst_singleton"], "atom_error": ae["error"].tolist(),
            "atom_overfitted": ae["overfitted"].tolist()}


#: The losses :func:`losses` reports for a non-finite fit (every one ``nan``).
LOSS_NAMES: tuple[str, ...] = ("d1", "d2", "d2_r2", "V", "worst_overfitted", "worst_singleton")


# ------------------------------------------------------------------ attention students

def head_losses(p_fit: dict, p_true: dict, position: str) -> dict:
    """Voronoi-matched errors of a student's heads against the teacher's.

    Cells on the atoms ``omega = (router, leaf)`` of :func:`gated_hmoe.models.heads.head_atoms`.
    Returns ``atom_error`` (per fitted head, ``||omega_h - omega*_j||``), ``cells``,
    ``worst_overfitted`` (largest atom error in cells with more than one head; ``nan`` if
    none), ``worst_singleton`` and ``V`` (sum over over-fitted cells of
    ``||sum_h summed_h - summed*_j|| + ||mass-weighted mean router - router*_j||``: the
    part that a valley leaves identified).
    """
    A, T = heads.head_atoms(p_fit, position), heads.head_atoms(p_true, position)
    cell, _, err = cells(A["atom"], T["atom"])
    worst_over, worst_single, V = -np.inf, -np.inf, 0.0
    any_over = any_single = False
    for j in range(T["atom"].shape[0]):
        members = np.flatnonzero(cell == j)
        if len(members) > 1:
            any_over = True
            worst_over = max(worst_over, float(err[members].max()))
            m = A["mass"][members]
            w = m / m.sum() if abs(m.sum()) > 1e-300 else np.full(len(m), 1 / len(m))
            V += float(np.linalg.norm(A["summed"][members].sum(0) - T["summed"][j])
                       + np.linalg.norm(w @ A["router"][members] - T["router"][j]))
        elif len(members) == 1:
            any_single = True
            worst_single = max(worst_single, float(err[members[0]]))
    return {"atom_error": [float(e) for e in err], "cells": [int(c) for c in cell],
            "worst_overfitted": worst_over if any_over else float("nan"),
            "worst_singleton": worst_single if any_single else float("nan"),
            "V": V if any_over else float("nan")}


__all__ = ["cells", "measure_cells", "d1", "d2", "atom_errors", "identifiable_part", "losses",
           "LOSS_NAMES", "head_losses"]
