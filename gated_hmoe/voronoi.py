r"""Voronoi losses between a fitted and a true mixing measure (SPEC §4-§5).

Atoms are ``omega_i = (beta_1i, eta_i)`` (plus ``vec(A_i)`` for quadratic gates) with masses
``w_i = exp(beta_0i)``. Fitted atom ``i`` belongs to the Voronoi cell ``V_j`` of the nearest
true atom ``j`` (ties go to the lower index). With ``Δ`` the difference to the cell's true atom,

.. math::
    D_1(G, G_*) = \sum_j \Big|\sum_{i\in V_j} w_i - w^*_j\Big|
      + \sum_{j:|V_j|=1} \sum_{i\in V_j} w_i (\|\Delta\beta_{1ij}\| + \|\Delta\eta_{ij}\|)
      + \sum_{j:|V_j|>1} \sum_{i\in V_j} w_i (\|\Delta\beta_{1ij}\|^2 + \|\Delta\eta_{ij}\|^2),

    D_{2,r}(G, G_*) = \sum_j \Big|\sum_{i\in V_j} w_i - w^*_j\Big|
      + \sum_j \sum_{i\in V_j} w_i (\|\Delta\beta_{1ij}\|^r + \|\Delta a_{ij}\|^r + |\Delta b_{ij}|^r).

All functions take concrete (numpy-convertible) measures and return Python floats / numpy
arrays; they are cheap and run outside ``jit``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gated_hmoe import checks
from gated_hmoe.moe import MixingMeasure


def _arrays(G, name: str):
    if not isinstance(G, MixingMeasure):
        raise TypeError(f"{name} must be a MixingMeasure, got {type(G).__name__}")
    beta0 = checks.finite_array(G.beta0, f"{name}.beta0", ndim=1).astype(float)
    k = beta0.shape[0]
    if k < 1:
        raise ValueError(f"{name} must have k >= 1 atoms, got k={k}")
    beta1 = checks.finite_array(G.beta1, f"{name}.beta1", ndim=2).astype(float)
    if beta1.shape[0] != k:
        raise ValueError(f"{name}.beta1 must have shape ({k}, D), got {beta1.shape}")
    eta = checks.finite_array(G.expert, f"{name}.expert", ndim=2).astype(float)
    if eta.shape[0] != k:
        raise ValueError(f"{name}.expert must have shape ({k}, P), got {eta.shape}")
    slope = beta1
    if G.quad is not None:
        quad = checks.finite_array(G.quad, f"{name}.quad", ndim=3).astype(float)
        if quad.shape[0] != k:
            raise ValueError(f"{name}.quad must have shape ({k}, D, D), got {quad.shape}")
        slope = np.concatenate([beta1, quad.reshape(k, -1)], 1)
    return np.exp(beta0), slope, eta


def _pair(G, G_true):
    w, s, e = _arrays(G, "G")
    ws, ss, es = _arrays(G_true, "G_true")
    if s.shape[1] != ss.shape[1]:
        raise ValueError(f"G and G_true must have the same gate dimensions: G has {s.shape[1]} "
                         f"gate slope parameters per atom, G_true has {ss.shape[1]}")
    if e.shape[1] != es.shape[1]:
        raise ValueError(f"G.expert and G_true.expert must have the same number of expert "
                         f"parameters P, got {e.shape[1]} and {es.shape[1]}")
    return w, s, e, ws, ss, es


def _cells(s, e, ss, es):
    omega = np.concatenate([s, e], 1)
    omega_true = np.concatenate([ss, es], 1)
    dist = np.linalg.norm(omega[:, None, :] - omega_true[None, :, :], axis=-1)   # (k, k*)
    assign = np.argmin(dist, axis=1)
    sizes = np.bincount(assign, minlength=omega_true.shape[0])
    return assign, sizes


def cells(G: MixingMeasure, G_true: MixingMeasure) -> np.ndarray:
    """Index ``(k,)`` of the Voronoi cell (nearest true atom) of each fitted atom."""
    w, s, e, ws, ss, es = _pair(G, G_true)
    return _cells(s, e, ss, es)[0]


def _mass_term(w, ws, assign):
    cell_mass = np.bincount(assign, weights=w, minlength=ws.shape[0])
    return float(np.sum(np.abs(cell_mass - ws)))


def d1(G: MixingMeasure, G_true: MixingMeasure) -> float:
    """``D_1(G, G_true)`` (strongly identifiable experts; SPEC §4).

    >>> G = MixingMeasure(np.zeros(1), np.zeros((1, 1)), np.array([[1.0, 0.0]]))
    >>> d1(G, G)
    0.0
    """
    w, s, e, ws, ss, es = _pair(G, G_true)
    assign, sizes = _cells(s, e, ss, es)
    ds = np.linalg.norm(s - ss[assign], axis=1)
    de = np.linalg.norm(e - es[assign], axis=1)
    over = sizes[assign] > 1
    atom = np.where(over, ds ** 2 + de ** 2, ds + de)
    return _mass_term(w, ws, assign) + float(np.sum(w * atom))


def _r(r) -> float:
    if isinstance(r, bool) or not isinstance(r, numbers.Real):
        raise TypeError(f"r must be a real number >= 1, got {type(r).__name__}")
    if not (math.isfinite(r) and r >= 1):
        raise ValueError(f"r must be a finite number >= 1, got {r!r}")
    return float(r)


def d2(G: MixingMeasure, G_true: MixingMeasure, *, r: float = 1) -> float:
    """``D_{2,r}(G, G_true)`` (linear experts, ``r >= 1``; SPEC §4).

    The expert vector is split as ``(a, b) = (eta[:D], eta[D])`` when ``P = D + 1``;
    for other expert layouts the whole ``||Δeta||^r`` is used.

    >>> G = MixingMeasure(np.zeros(1), np.zeros((1, 1)), np.array([[1.0, 0.0]]))
    >>> H = MixingMeasure(np.zeros(1), np.zeros((1, 1)), np.array([[2.0, 0.5]]))
    >>> d2(H, G, r=2)
    1.25
    """
    r = _r(r)
    w, s, e, ws, ss, es = _pair(G, G_true)
    assign, _ = _cells(s, e, ss, es)
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
    w, s, e, ws, ss, es = _pair(G, G_true)
    assign, sizes = _cells(s, e, ss, es)
    err = np.sqrt(np.sum((s - ss[assign]) ** 2, 1) + np.sum((e - es[assign]) ** 2, 1))
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
    w, s, e, ws, ss, es = _pair(G, G_true)
    assign, sizes = _cells(s, e, ss, es)
    total = 0.0
    for j in np.flatnonzero(sizes > 1):
        m = assign == j
        W = w[m].sum()
        total += (abs(W - ws[j]) + np.linalg.norm(w[m] @ e[m] / W - es[j])
                  + np.linalg.norm(w[m] @ s[m] / W - ss[j]))
    return float(total)


def losses(G: MixingMeasure, G_true: MixingMeasure) -> dict:
    """All scalar losses at once: ``d1``, ``d2`` (r=1), ``d2_r2`` (r=2), ``V``, ``worst_overfitted``,
    ``worst_singleton``, and the per-atom ``error`` list."""
    ae = atom_errors(G, G_true)
    return {"d1": d1(G, G_true), "d2": d2(G, G_true, r=1), "d2_r2": d2(G, G_true, r=2),
            "V": identifiable_part(G, G_true), "worst_overfitted": ae["worst_overfitted"],
            "worst_singleton": ae["worst_singleton"], "atom_error": ae["error"].tolist(),
            "atom_overfitted": ae["overfitted"].tolist()}
