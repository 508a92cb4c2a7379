r"""Softmax-gated mixtures of experts: mixing measures, regression functions, default truths.

The model of SPEC §4. A mixing measure :class:`MixingMeasure` holds ``k`` atoms; the
regression function is

.. math::
    f_G(x) = \sum_{i=1}^{k} \operatorname{softmax}_i\big(z_i(x)\big)\, h(x; \eta_i),

with gate logits ``z_i`` of one of three classes (:data:`GATES`) and experts ``h`` of one
of four classes (:data:`EXPERTS`). Softmax is translation invariant, so the last atom's gate
is pinned to zero (:func:`pin_last`) in true and fitted measures alike.

A two-level hierarchical variant (:class:`HierarchicalMeasure`) multiplies conditional
softmax routers along a path; :func:`leaf_atoms` returns its leaves as atoms with mass
``exp(outer intercept) * exp(inner intercept)``.

Shapes: ``x: (n, D)`` inputs; functions return ``(n,)``.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks

Array = jax.Array

#: Expert classes: ``linear`` a^T x + b, ``sigmoid`` σ(a^T x + b), ``silu`` SiLU(a^T x + b),
#: ``glu`` σ(t^T x + s)(c^T x + e) (the literal multiplicative gate of arXiv 2505.06708).
EXPERTS: tuple[str, ...] = ("linear", "sigmoid", "silu", "glu")

#: Gate classes: ``linear`` β1^T x + β0, ``quadratic-monomial`` x^T A x + β0,
#: ``quadratic-polynomial`` x^T A x + β1^T x + β0.
GATES: tuple[str, ...] = ("linear", "quadratic-monomial", "quadratic-polynomial")


class MixingMeasure(NamedTuple):
    r"""A softmax-gated MoE with ``k`` atoms; a JAX PyTree (``NamedTuple``).

    .. math::
        f_G(x) = \sum_{i=1}^{k} \operatorname{softmax}_i\!\big(\beta_{1i}^\top x
        + \beta_{0i}\big)\, h(x; \eta_i), \qquad
        G = \sum_{i=1}^{k} e^{\beta_{0i}}\, \delta_{(\beta_{1i}, \eta_i)}.

    Fields:

    - ``beta0: (k,)`` gate intercepts (``exp(beta0)`` are the atom masses);
    - ``beta1: (k, D)`` gate slopes (zeros and unused for the ``quadratic-monomial`` gate);
    - ``expert: (k, P)`` expert parameters ``eta_i``: ``(a, b)`` with ``P = D + 1`` for
      ``linear``/``sigmoid``/``silu``; ``(t, s, c, e)`` with ``P = 2D + 2`` for ``glu``;
    - ``quad: (k, D, D)`` or ``None``: the matrices ``A_i`` of a quadratic gate,
      ``z_i = x^T A_i x + beta0_i`` (monomial) or ``x^T A_i x + beta1_i^T x + beta0_i``
      (polynomial). ``None`` for the linear gate.

    The last atom's gate (``beta0[-1]``, ``beta1[-1]``, ``quad[-1]``) is zero in pinned
    form (:func:`pin_last`).
    """

    beta0: Array
    beta1: Array
    expert: Array
    quad: Array | None = None


def expert_dim(expert: str, D: int) -> int:
    """Number ``P`` of parameters of one expert of class ``expert`` on inputs of dimension ``D``.

    >>> expert_dim("linear", 1), expert_dim("glu", 1)
    (2, 4)
    """
    checks.choice(expert, "expert", EXPERTS)
    D = checks.positive_int(D, "D")
    return 2 * D + 2 if expert == "glu" else D + 1


def validate_measure(G, name: str, *, expert: str, gate: str = "linear") -> MixingMeasure:
    """Check ``G`` (type, shapes, finiteness, expert/gate consistency); return it as numpy.

    Raises ``ValueError``/``TypeError`` naming ``name`` and what was expected.
    """
    checks.choice(expert, "expert", EXPERTS)
    checks.choice(gate, "gate", GATES)
    if not isinstance(G, MixingMeasure):
        raise TypeError(f"{name} must be a MixingMeasure, got {type(G).__name__}")
    beta0 = checks.finite_array(G.beta0, f"{name}.beta0", ndim=1)
    k = beta0.shape[0]
    if k < 1:
        raise ValueError(f"{name} must have k >= 1 atoms, got k={k}")
    beta1 = checks.finite_array(G.beta1, f"{name}.beta1", ndim=2)
    if beta1.shape[0] != k:
        raise ValueError(f"{name}.beta1 must have shape ({k}, D) to match {name}.beta0 (k={k}), "
                         f"got {beta1.shape}")
    D = beta1.shape[1]
    if D < 1:
        raise ValueError(f"{name}.beta1 must have D >= 1 columns, got shape {beta1.shape}")
    P = expert_dim(expert, D)
    eta = checks.finite_array(G.expert, f"{name}.expert", shape=(k, P))
    quad = None
    if gate == "linear":
        if G.quad is not None:
            raise ValueError(f"{name}.quad must be None for gate='linear'")
    else:
        if G.quad is None:
            raise ValueError(f"{name}.quad must be an array of shape ({k}, {D}, {D}) for gate={gate!r}")
        quad = checks.finite_array(G.quad, f"{name}.quad", shape=(k, D, D))
    return MixingMeasure(beta0.astype(float), beta1.astype(float), eta.astype(float),
                         None if quad is None else quad.astype(float))


def pin_last(G: MixingMeasure) -> MixingMeasure:
    """The same regression function with the last atom's gate set to zero (softmax shift).

    >>> G = MixingMeasure(np.array([1.0, 0.5]), np.array([[2.0], [1.0]]), np.zeros((2, 2)))
    >>> pin_last(G).beta0.tolist(), pin_last(G).beta1.tolist()
    ([0.5, 0.0], [[1.0], [0.0]])
    """
    quad = None if G.quad is None else G.quad - G.quad[-1:]
    return MixingMeasure(G.beta0 - G.beta0[-1], G.beta1 - G.beta1[-1:], G.expert, quad)


# ---------------------------------------------------------------- traceable building blocks

def expert_values(expert: str, eta: Array, x: Array) -> Array:
    """Expert outputs ``h(x; eta_i)``: ``eta: (k, P)``, ``x: (n, D)`` -> ``(n, k)``. Unchecked."""
    return expert_values_and_grads(expert, eta, x)[0]


def expert_values_and_grads(expert: str, eta: Array, x: Array) -> tuple[Array, Array]:
    """``h: (n, k)`` and its analytic gradient in ``eta``, ``dh: (n, k, P)``. Unchecked."""
    D = x.shape[-1]
    ones = jnp.ones(x.shape[:-1] + (1,), x.dtype)
    xb = jnp.concatenate([x, ones], axis=-1)                          # (n, D+1)
    if expert == "glu":
        g = jax.nn.sigmoid(xb @ eta[:, : D + 1].T)                    # (n, k)
        v = xb @ eta[:, D + 1:].T
        dg = g * (1.0 - g) * v
        dh = jnp.concatenate([dg[..., None] * xb[:, None, :], g[..., None] * xb[:, None, :]], -1)
        return g * v, dh
    h, d = ridge_values_and_slopes(expert, xb @ eta.T)               # (n, k)
    return h, d[..., None] * xb[:, None, :]


def ridge_values_and_slopes(expert: str, u: Array) -> tuple[Array, Array]:
    """``h = phi(u)`` and ``phi'(u)`` of a ridge expert (``linear``/``sigmoid``/``silu``),
    elementwise on pre-activations ``u`` of any shape. Unchecked."""
    if expert == "linear":
        return u, jnp.ones_like(u)
    if expert == "sigmoid":
        h = jax.nn.sigmoid(u)
        return h, h * (1.0 - h)
    s = jax.nn.sigmoid(u)                                             # silu
    return u * s, s * (1.0 + u * (1.0 - s))


def gate_features(gate: str, x: Array) -> Array:
    """Features ``phi(x)`` with ``z_i = theta_i^T phi(x)``: ``x: (n, D)`` -> ``(n, F)``.

    ``linear``: ``[1, x]``; ``quadratic-monomial``: ``[1, vec(x x^T)]``;
    ``quadratic-polynomial``: ``[1, x, vec(x x^T)]``.
    """
    checks.choice(gate, "gate", GATES)
    ones = jnp.ones(x.shape[:-1] + (1,), x.dtype)
    if gate == "linear":
        return jnp.concatenate([ones, x], -1)
    xx = (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)
    if gate == "quadratic-monomial":
        return jnp.concatenate([ones, xx], -1)
    return jnp.concatenate([ones, x, xx], -1)


def gate_params(gate: str, G: MixingMeasure) -> Array:
    """Gate parameters ``theta: (k, F)`` matching :func:`gate_features` (same order)."""
    k = G.beta0.shape[0]
    parts = [G.beta0[:, None]]
    if gate != "quadratic-monomial":
        parts.append(G.beta1)
    if gate != "linear":
        parts.append(G.quad.reshape(k, -1))
    return jnp.concatenate(parts, -1)


def gate_logits(G: MixingMeasure, x: Array, *, gate: str = "linear") -> Array:
    """Gate logits ``z: (n, k)``. Unchecked."""
    return gate_features(gate, x) @ gate_params(gate, G).T


def mean_unchecked(G: MixingMeasure, x: Array, expert: str, gate: str = "linear") -> Array:
    """:func:`mean` without validation, for code inside ``jit``."""
    pi = jax.nn.softmax(gate_logits(G, x, gate=gate), axis=-1)
    return jnp.sum(pi * expert_values(expert, G.expert, x), axis=-1)


_mean_jit = jax.jit(mean_unchecked, static_argnums=(2, 3))


def mean(G: MixingMeasure, x, *, expert: str, gate: str = "linear") -> Array:
    """Regression function ``f_G(x): (n,)`` for inputs ``x: (n, D)``.

    >>> G = default_truth("linear")
    >>> round(float(mean(G, np.zeros((1, 1)), expert="linear")[0]), 6)
    -0.489837
    """
    G = validate_measure(G, "G", expert=expert, gate=gate)
    D = G.beta1.shape[1]
    x = checks.finite_array(x, "x", ndim=2)
    if x.shape[1] != D:
        raise ValueError(f"x must have shape (n, {D}) to match G (D={D}), got {x.shape}")
    return _mean_jit(jax.tree.map(jnp.asarray, G), jnp.asarray(x, float), expert, gate)


# ---------------------------------------------------------------- default truths (SPEC §7)

def default_truth(expert: str, *, gate: str = "linear") -> MixingMeasure:
    """The default truth of SPEC §7: ``D = 1``, ``k* = 2``, last gate pinned.

    Gate slopes ``(5, 0)``, intercepts ``(0.5, 0)``. Experts ``(a, b) = (4, -2), (5, 2)``
    for ``linear``/``sigmoid``/``silu``. For ``glu`` (our own analogous choice) the value
    weights are the same ``(c, e) = (4, -2), (5, 2)`` and the multiplicative gates are
    ``(t, s) = (3, -1), (-2, 1)``. The monomial gate moves the slope into ``A``:
    ``A = (5, 0)``, ``beta1 = 0``; the polynomial gate keeps ``beta1 = (5, 0)`` and adds
    ``A = (2, 0)``.

    >>> default_truth("sigmoid").expert.tolist()
    [[4.0, -2.0], [5.0, 2.0]]
    """
    checks.choice(expert, "expert", EXPERTS)
    checks.choice(gate, "gate", GATES)
    beta0 = np.array([0.5, 0.0])
    beta1 = np.array([[5.0], [0.0]])
    eta = np.array([[4.0, -2.0], [5.0, 2.0]])
    if expert == "glu":
        eta = np.array([[3.0, -1.0, 4.0, -2.0], [-2.0, 1.0, 5.0, 2.0]])
    quad = None
    if gate == "quadratic-monomial":
        quad, beta1 = np.array([[[5.0]], [[0.0]]]), np.zeros((2, 1))
    elif gate == "quadratic-polynomial":
        quad = np.array([[[2.0]], [[0.0]]])
    return MixingMeasure(beta0, beta1, eta, quad)


def measure_to_dict(G: MixingMeasure) -> dict:
    """JSON-ready dict of a measure (lists of floats); inverse of :func:`measure_from_dict`."""
    out = {"beta0": np.asarray(G.beta0).tolist(), "beta1": np.asarray(G.beta1).tolist(),
           "expert": np.asarray(G.expert).tolist()}
    if G.quad is not None:
        out["quad"] = np.asarray(G.quad).tolist()
    return out


def measure_from_dict(d, name: str = "true", *, expert: str, gate: str = "linear") -> MixingMeasure:
    """Build and validate a measure from a dict with keys ``beta0, beta1, expert[, quad]``."""
    if not isinstance(d, dict):
        raise TypeError(f"{name} must be a JSON object with keys beta0, beta1, expert, got "
                        f"{type(d).__name__}")
    missing = [key for key in ("beta0", "beta1", "expert") if key not in d]
    if missing:
        raise ValueError(f"{name} is missing keys {missing}")
    try:
        G = MixingMeasure(np.asarray(d["beta0"], float), np.asarray(d["beta1"], float),
                          np.asarray(d["expert"], float),
                          None if d.get("quad") is None else np.asarray(d["quad"], float))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold rectangular arrays of numbers ({exc})") from exc
    return validate_measure(G, name, expert=expert, gate=gate)


def load_measure(path: str, *, expert: str, gate: str = "linear") -> MixingMeasure:
    """Read a measure from a JSON file (see :func:`measure_from_dict`)."""
    try:
        with open(path) as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"true must be a readable JSON file, could not read {path!r}: {exc}") from exc
    return measure_from_dict(d, "true", expert=expert, gate=gate)


# ---------------------------------------------------------------- two-level hierarchical MoE

class HierarchicalMeasure(NamedTuple):
    r"""A two-level hierarchical MoE (linear gates at both levels); a JAX PyTree.

    .. math::
        f(x) = \sum_{i=1}^{k_1} \operatorname{softmax}_i\big(\gamma_{1i}^\top x + \gamma_{0i}\big)
               \sum_{j=1}^{k_2} \operatorname{softmax}_j\big(\beta_{1ij}^\top x + \beta_{0ij}\big)
               \, h(x; \eta_{ij}).

    Fields: ``outer_beta0: (k1,)``, ``outer_beta1: (k1, D)`` (router over groups),
    ``beta0: (k1, k2)``, ``beta1: (k1, k2, D)`` (router inside each group),
    ``expert: (k1, k2, P)``. Pinned form: the last group's outer gate and the last expert's
    inner gate in every group are zero. Leaf ``(i, j)`` has mass
    ``exp(gamma_0i) * exp(beta_0ij)`` and carries the path's slopes ``(gamma_1i, beta_1ij)``.
    """

    outer_beta0: Array
    outer_beta1: Array
    beta0: Array
    beta1: Array
    expert: Array


def hierarchical_mean_unchecked(H: HierarchicalMeasure, x: Array, expert: str) -> Array:
    """:func:`hierarchical_mean` without validation."""
    outer = jax.nn.softmax(x @ H.outer_beta1.T + H.outer_beta0, axis=-1)        # (n, k1)
    inner = jax.nn.softmax(jnp.einsum("nd,ijd->nij", x, H.beta1) + H.beta0, axis=-1)
    k1, k2, P = H.expert.shape
    h = expert_values(expert, H.expert.reshape(k1 * k2, P), x).reshape(-1, k1, k2)
    return jnp.einsum("ni,nij,nij->n", outer, inner, h)


def _hierarchical_shape(H, expert: str | None) -> tuple[int, int, int]:
    """Check a :class:`HierarchicalMeasure` (types, shapes, finiteness, at least one group and
    one atom per group; expert dimension when ``expert`` is given); return ``(k1, k2, D)``."""
    if not isinstance(H, HierarchicalMeasure):
        raise TypeError(f"H must be a HierarchicalMeasure, got {type(H).__name__}")
    ob0 = checks.finite_array(H.outer_beta0, "H.outer_beta0", ndim=1)
    k1 = ob0.shape[0]
    if k1 < 1:
        raise ValueError("H must have k1 >= 1 groups, got H.outer_beta0 of shape (0,)")
    ob1 = checks.finite_array(H.outer_beta1, "H.outer_beta1", ndim=2)
    D = ob1.shape[1]
    if ob1.shape[0] != k1 or D < 1:
        raise ValueError(f"H.outer_beta1 must have shape ({k1}, D) with D >= 1, got {ob1.shape}")
    b0 = checks.finite_array(H.beta0, "H.beta0", ndim=2)
    if b0.shape[0] != k1 or b0.shape[1] < 1:
        raise ValueError(f"H.beta0 must have shape ({k1}, k2) with k2 >= 1, got {b0.shape}")
    k2 = b0.shape[1]
    checks.finite_array(H.beta1, "H.beta1", shape=(k1, k2, D))
    P = None if expert is None else expert_dim(expert, D)
    checks.finite_array(H.expert, "H.expert", shape=(k1, k2, P))
    return k1, k2, D


def hierarchical_mean(H: HierarchicalMeasure, x, *, expert: str) -> Array:
    """Regression function ``(n,)`` of a two-level hierarchical MoE at ``x: (n, D)``.

    With one group it is the flat MoE of the inner router:

    >>> G = default_truth("silu")
    >>> H = HierarchicalMeasure(np.zeros(1), np.zeros((1, 1)), G.beta0[None], G.beta1[None],
    ...                         G.expert[None])
    >>> x = np.linspace(-1, 1, 5)[:, None]
    >>> bool(np.allclose(hierarchical_mean(H, x, expert="silu"), mean(G, x, expert="silu")))
    True
    """
    checks.choice(expert, "expert", EXPERTS)
    D = _hierarchical_shape(H, expert)[2]
    x = checks.finite_array(x, "x", ndim=2)
    if x.shape[1] != D:
        raise ValueError(f"x must have shape (n, {D}) to match H (D={D}), got {x.shape}")
    Hj = jax.tree.map(lambda a: jnp.asarray(a, float), H)
    return hierarchical_mean_unchecked(Hj, jnp.asarray(x, float), expert)


def leaf_atoms(H: HierarchicalMeasure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaves of a two-level HMoE as atoms: ``(mass (L,), slopes (L, 2D), expert (L, P))``.

    ``mass = exp(outer_beta0_i + beta0_ij)`` (product of ``exp(intercept)`` along the path);
    slopes concatenate the outer and inner gate slopes of the path; ``L = k1 * k2``.
    """
    k1, k2, D = _hierarchical_shape(H, None)
    P = np.shape(H.expert)[2]
    mass = np.exp(np.asarray(H.outer_beta0)[:, None] + np.asarray(H.beta0)).reshape(-1)
    outer = np.broadcast_to(np.asarray(H.outer_beta1)[:, None, :], (k1, k2, D))
    slopes = np.concatenate([outer, np.asarray(H.beta1)], -1).reshape(k1 * k2, 2 * D)
    return mass, slopes, np.asarray(H.expert).reshape(k1 * k2, P)


def num_params(k: int, D: int, *, expert: str, gate: str = "linear") -> int:
    """Number of free parameters of a pinned ``k``-atom measure (last gate fixed at zero).

    >>> num_params(3, 1, expert="sigmoid")
    10
    """
    k = checks.positive_int(k, "k")
    P = expert_dim(expert, D)
    checks.choice(gate, "gate", GATES)
    F = 1 + (0 if gate == "quadratic-monomial" else D) + (0 if gate == "linear" else D * D)
    return (k - 1) * F + k * P


__all__ = ["EXPERTS", "GATES", "MixingMeasure", "HierarchicalMeasure", "expert_dim",
           "validate_measure", "pin_last", "mean", "mean_unchecked", "expert_values",
           "expert_values_and_grads", "ridge_values_and_slopes", "gate_features", "gate_params",
           "gate_logits",
           "default_truth", "measure_to_dict", "measure_from_dict", "load_measure",
           "hierarchical_mean", "leaf_atoms", "num_params"]
