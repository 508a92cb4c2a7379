r"""Softmax-gated mixtures of experts: mixing measures, regression functions, default truths.

The model of SPEC §4. A mixing measure :class:`MixingMeasure` holds ``k`` atoms; the
regression function is

.. math::
    f_G(x) = \sum_{i=1}^{k} \operatorname{softmax}_i\big(z_i(x)\big)\, h(x; \eta_i),

with gate logits ``z_i`` of one of three classes (:data:`GATES`) and experts ``h`` of one
of four classes (:data:`EXPERTS`). Softmax is translation invariant, so the last atom's gate
is pinned to zero (:func:`pin_last`) in true and fitted measures alike.

Also here: the free-parameter vector of a pinned measure (:class:`ModelSpec`,
:func:`pack`, :func:`unpack`), the exact-fit valley (:func:`valley_measure`) and the
population distance :math:`\|f_G - f_{G'}\|^2_{L^2(\mu)}` (:func:`population_sq_distance`).

Shapes: ``x: (n, D)`` inputs; functions return ``(n,)``.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gated_hmoe import checks

#: Expert classes: ``linear`` a^T x + b, ``sigmoid`` σ(a^T x + b), ``silu`` SiLU(a^T x + b),
#: ``glu`` σ(θ^T x + θ_0)(a^T x + b) (the literal multiplicative gate of arXiv 2505.06708).
EXPERTS: tuple[str, ...] = ("linear", "sigmoid", "silu", "glu")

#: Gate classes: ``linear`` β1^T x + β0, ``quadratic-monomial`` x^T A x + β0,
#: ``quadratic-polynomial`` x^T A x + β1^T x + β0.
GATES: tuple[str, ...] = ("linear", "quadratic-monomial", "quadratic-polynomial")

#: Names of the classes in tables and legends.
EXPERT_LABELS: dict[str, str] = {"linear": "linear", "sigmoid": "sigmoid", "silu": "SiLU",
                                 "glu": "GLU"}
GATE_LABELS: dict[str, str] = {"linear": "linear gate", "quadratic-monomial": "monomial gate",
                               "quadratic-polynomial": "polynomial gate"}


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
      ``linear``/``sigmoid``/``silu``; ``(theta, theta0, a, b)`` with ``P = 2D + 2`` for ``glu``
      (leaf ``sigma(theta^T x + theta0) (a^T x + b)``, the book's notation);
    - ``quad: (k, D, D)`` or ``None``: the matrices ``A_i`` of a quadratic gate,
      ``z_i = x^T A_i x + beta0_i`` (monomial) or ``x^T A_i x + beta1_i^T x + beta0_i``
      (polynomial). ``None`` for the linear gate.

    The last atom's gate (``beta0[-1]``, ``beta1[-1]``, ``quad[-1]``) is zero in pinned
    form (:func:`pin_last`).
    """

    beta0: Float[ArrayLike, " k"]
    beta1: Float[ArrayLike, "k D"]
    expert: Float[ArrayLike, "k P"]
    quad: Float[ArrayLike, "k D D"] | None = None


def expert_dim(expert: str, D: int) -> int:
    """Number ``P`` of parameters of one expert of class ``expert`` on inputs of dimension ``D``.

    >>> expert_dim("linear", 1), expert_dim("glu", 1)
    (2, 4)
    """
    checks.choice(expert, "expert", EXPERTS)
    D = checks.positive_int(D, "D")
    return 2 * D + 2 if expert == "glu" else D + 1


def _is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def validate_measure(G, name: str, *, expert: str | None = None, gate: str | None = None,
                     k: int | None = None, D: int | None = None) -> MixingMeasure:
    """The one validator of mixing measures: type, ranks, shapes, finiteness.

    ``expert`` fixes the expert width ``P`` (:func:`expert_dim`); ``gate`` fixes whether
    ``quad`` must be ``None`` (``"linear"``) or a ``(k, D, D)`` array; ``k`` and ``D`` pin
    the number of atoms and the input dimension. Arguments left ``None`` are read off
    ``G``. Raises ``ValueError``/``TypeError`` naming ``name`` and what was expected.
    Returns ``G`` as float numpy arrays; on traced input (inside ``jit``) only the shapes
    are checked and ``G`` is returned as it is.

    >>> validate_measure(default_truth("glu"), "G", expert="glu").expert.shape
    (2, 4)
    >>> validate_measure(default_truth("glu"), "G", expert="linear")
    Traceback (most recent call last):
    ...
    ValueError: G.expert must have shape (2, 2), got (2, 4)
    """
    if expert is not None:
        checks.choice(expert, "expert", EXPERTS)
    if gate is not None:
        checks.choice(gate, "gate", GATES)
    if not isinstance(G, MixingMeasure):
        raise TypeError(f"{name} must be a MixingMeasure, got {type(G).__name__}")
    traced = _is_traced(G.beta0, G.beta1, G.expert, G.quad)

    def array(value, field, shape):
        label = f"{name}.{field}"
        if value is None:
            raise ValueError(f"{label} must be an array of shape {checks.shape_text(shape)}, "
                             "got None")
        if traced:
            got = tuple(np.shape(value))
            if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
                raise ValueError(f"{label} must have shape {checks.shape_text(shape)}, got {got}")
            return value
        return checks.finite_array(value, label, shape=shape).astype(float)

    beta0 = array(G.beta0, "beta0", (k,))
    k_G = np.shape(beta0)[0]
    if k_G < 1:
        raise ValueError(f"{name} must have k >= 1 atoms, got k={k_G}")
    beta1 = array(G.beta1, "beta1", (k_G, D))
    D_G = np.shape(beta1)[1]
    if D_G < 1:
        raise ValueError(f"{name}.beta1 must have D >= 1 columns, got shape {np.shape(beta1)}")
    eta = array(G.expert, "expert", (k_G, None if expert is None else expert_dim(expert, D_G)))
    quad = None
    if gate == "linear" and G.quad is not None:
        raise ValueError(f"{name}.quad must be None for gate='linear'")
    if (gate is not None and gate != "linear") or (gate is None and G.quad is not None):
        quad = array(G.quad, "quad", (k_G, D_G, D_G))
    if traced:
        return G
    return MixingMeasure(beta0, beta1, eta, quad)


def pin_last(G: MixingMeasure) -> MixingMeasure:
    """The same regression function with the last atom's gate set to zero (softmax shift).

    >>> G = MixingMeasure(np.array([1.0, 0.5]), np.array([[2.0], [1.0]]), np.zeros((2, 2)))
    >>> pin_last(G).beta0.tolist(), pin_last(G).beta1.tolist()
    ([0.5, 0.0], [[1.0], [0.0]])
    """
    quad = None if G.quad is None else G.quad - G.quad[-1:]
    return MixingMeasure(G.beta0 - G.beta0[-1], G.beta1 - G.beta1[-1:], G.expert, quad)


# ---------------------------------------------------------------- traceable building blocks

def expert_values(expert: str, eta: Float[ArrayLike, "k P"], x: Float[ArrayLike, "n D"]
                  ) -> Float[Array, "n k"]:
    """Expert outputs ``h(x; eta_i)``: ``eta: (k, P)``, ``x: (n, D)`` -> ``(n, k)``. Unchecked."""
    return expert_values_and_grads(expert, eta, x)[0]


def expert_values_and_grads(expert: str, eta: Float[ArrayLike, "k P"], x: Float[ArrayLike, "n D"]
                            ) -> tuple[Float[Array, "n k"], Float[Array, "n k P"]]:
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


def ridge_values_and_slopes(expert: str, u: Float[Array, "*shape"]
                            ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
    """``h = phi(u)`` and ``phi'(u)`` of a ridge expert (``linear``/``sigmoid``/``silu``),
    elementwise on pre-activations ``u`` of any shape. Unchecked."""
    if expert == "linear":
        return u, jnp.ones_like(u)
    if expert == "sigmoid":
        h = jax.nn.sigmoid(u)
        return h, h * (1.0 - h)
    s = jax.nn.sigmoid(u)                                             # silu
    return u * s, s * (1.0 + u * (1.0 - s))


def gate_features(gate: str, x: Float[ArrayLike, "n D"]) -> Float[Array, "n F"]:
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


def gate_params(gate: str, G: MixingMeasure) -> Float[Array, "k F"]:
    """Gate parameters ``theta: (k, F)`` matching :func:`gate_features` (same order)."""
    k = G.beta0.shape[0]
    parts = [G.beta0[:, None]]
    if gate != "quadratic-monomial":
        parts.append(G.beta1)
    if gate != "linear":
        parts.append(G.quad.reshape(k, -1))
    return jnp.concatenate(parts, -1)


def gate_logits(G: MixingMeasure, x: Float[ArrayLike, "n D"], *, gate: str = "linear"
                ) -> Float[Array, "n k"]:
    """Gate logits ``z: (n, k)``. Unchecked."""
    return gate_features(gate, x) @ gate_params(gate, G).T


def mean_unchecked(G: MixingMeasure, x: Float[ArrayLike, "n D"], expert: str,
                   gate: str = "linear") -> Float[Array, " n"]:
    """:func:`mean` without validation, for code inside ``jit``."""
    pi = jax.nn.softmax(gate_logits(G, x, gate=gate), axis=-1)
    return jnp.sum(pi * expert_values(expert, G.expert, x), axis=-1)


_mean_jit = jax.jit(mean_unchecked, static_argnums=(2, 3))


def mean(G: MixingMeasure, x: Float[ArrayLike, "n D"], *, expert: str,
         gate: str = "linear") -> Float[Array, " n"]:
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
    def field(key):
        try:
            return np.asarray(d[key], float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} field {key!r} must be a rectangular array of numbers, "
                             f"got {d[key]!r}") from exc

    G = MixingMeasure(field("beta0"), field("beta1"), field("expert"),
                      None if d.get("quad") is None else field("quad"))
    return validate_measure(G, name, expert=expert, gate=gate)


def load_measure(path: str, *, expert: str, gate: str = "linear") -> MixingMeasure:
    """Read a measure from a JSON file (see :func:`measure_from_dict`)."""
    try:
        with open(path) as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"true must be a readable JSON file, could not read {path!r}: {exc}") from exc
    return measure_from_dict(d, "true", expert=expert, gate=gate)


# ---------------------------------------------------------------- free parameters of a pinned measure

class ModelSpec(NamedTuple):
    """Static description of a fitted model: expert and gate class, atoms ``k``, input dim ``D``."""

    expert: str
    gate: str
    k: int
    D: int

    @property
    def F(self) -> int:
        """Gate parameters per atom (intercept, slopes, quadratic entries)."""
        return (1 + (0 if self.gate == "quadratic-monomial" else self.D)
                + (0 if self.gate == "linear" else self.D * self.D))

    @property
    def P(self) -> int:
        """Expert parameters per atom."""
        return expert_dim(self.expert, self.D)

    @property
    def num_params(self) -> int:
        """Free parameters (the last atom's gate is pinned at zero).

        >>> make_spec(expert="sigmoid", k=3, D=1).num_params
        10
        """
        return (self.k - 1) * self.F + self.k * self.P

    @property
    def omega_dim(self) -> int:
        """Length of one atom's location ``omega`` (gate parameters without the intercept,
        then the expert's)."""
        return self.F - 1 + self.P


def make_spec(*, expert: str, gate: str = "linear", k: int, D: int) -> ModelSpec:
    """Validated :class:`ModelSpec`."""
    checks.choice(expert, "expert", EXPERTS)
    checks.choice(gate, "gate", GATES)
    return ModelSpec(expert, gate, checks.positive_int(k, "k"), checks.positive_int(D, "D"))


def check_spec(spec) -> ModelSpec:
    """``spec`` if it is a :class:`ModelSpec`, else ``TypeError``."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (moe.make_spec), got {type(spec).__name__}")
    return spec


def pack(G: MixingMeasure, spec: ModelSpec) -> Float[Array, " p"]:
    """Free parameter vector ``theta: (p,)`` of a measure (pinned first; gate of atom k ignored).
    Checks ``G`` against ``spec`` (:func:`validate_measure`; traceable: shapes only)."""
    check_spec(spec)
    validate_measure(G, "G", expert=spec.expert, gate=spec.gate, k=spec.k, D=spec.D)
    G = pin_last(jax.tree.map(jnp.asarray, G))
    theta_gate = gate_params(spec.gate, G)[:-1]
    return jnp.concatenate([theta_gate.reshape(-1), jnp.asarray(G.expert).reshape(-1)])


def unpack(theta: Float[ArrayLike, " p"], spec: ModelSpec) -> MixingMeasure:
    """Inverse of :func:`pack`: a pinned :class:`MixingMeasure`. Traceable."""
    k, D, F, P = spec.k, spec.D, spec.F, spec.P
    tg = jnp.concatenate([theta[: (k - 1) * F].reshape(k - 1, F), jnp.zeros((1, F), theta.dtype)])
    eta = theta[(k - 1) * F:].reshape(k, P)
    beta0 = tg[:, 0]
    col = 1
    if spec.gate == "quadratic-monomial":
        beta1 = jnp.zeros((k, D), theta.dtype)
    else:
        beta1 = tg[:, col: col + D]
        col += D
    quad = None if spec.gate == "linear" else tg[:, col: col + D * D].reshape(k, D, D)
    return MixingMeasure(beta0, beta1, eta, quad)


def mean_of_theta(theta: Float[ArrayLike, " p"], x: Float[ArrayLike, "n D"], spec: ModelSpec
                  ) -> Float[Array, " n"]:
    """``f_G(x): (n,)`` for the measure ``unpack(theta, spec)``. Unchecked, traceable."""
    return mean_unchecked(unpack(theta, spec), x, spec.expert, spec.gate)


# ---------------------------------------------------------------- the exact-fit valley (SPEC §4)

def valley_measure(t: float, *, expert: str, G_true: MixingMeasure | None = None,
                   atom: int = 0, p: float = 0.5, direction=None) -> MixingMeasure:
    r"""The exact-fit valley ``G_t`` (SPEC §4): true atom ``atom`` split into two atoms with
    the true gate slope and weights ``p w*``, ``(1-p) w*``, value weights
    ``eta* + (1-p) t u`` and ``eta* - p t u`` (``p``-weighted mean = ``eta*``).

    ``u`` acts on the *value* weights: the whole ``(a, b)`` for ``linear``/``sigmoid``/
    ``silu``, only ``(c, e)`` for ``glu`` (its gate ``(t, s)`` is kept). ``direction``
    gives ``u`` as it is (not normalised); the default is the unit vector of equal entries.
    ``f_{G_t} = f_{G*}`` exactly for ``linear`` and ``glu``; not for ridge experts. The
    truth defaults to :func:`default_truth`; the result has atoms ``(split, split,
    others...)`` in pinned form.

    >>> G = default_truth("linear")
    >>> Gt = valley_measure(0.7, expert="linear")
    >>> x = np.linspace(-1, 1, 101)[:, None]
    >>> diff = mean(Gt, x, expert="linear") - mean(G, x, expert="linear")
    >>> bool(np.max(np.abs(diff)) < 1e-12)
    True
    """
    checks.choice(expert, "expert", EXPERTS)
    t = checks.real(t, "t")
    p = checks.real(p, "p")
    if not (0 < p < 1):
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    atom = checks.positive_int(atom, "atom", minimum=0)
    G = default_truth(expert) if G_true is None else validate_measure(
        G_true, "G_true", expert=expert)
    G = jax.tree.map(lambda a: None if a is None else np.asarray(a, float), pin_last(G))
    k_true, D = G.beta1.shape
    if not (0 <= atom < k_true - 1):
        raise ValueError(f"atom must index a non-pinned true atom (< {k_true - 1}), got {atom}")
    P = G.expert.shape[1]
    value = slice(D + 1, P) if expert == "glu" else slice(0, P)
    nv = value.stop - value.start
    if direction is None:
        u = np.ones(nv) / np.sqrt(nv)
    else:
        u = checks.finite_array(direction, "direction", shape=(nv,)).astype(float)
        if not np.any(u != 0):
            raise ValueError("direction must be a non-zero vector")
    e1, e2 = G.expert[atom].copy(), G.expert[atom].copy()
    e1[value] += (1 - p) * t * u
    e2[value] -= p * t * u
    idx = [atom, atom] + [j for j in range(k_true) if j != atom]
    beta0 = G.beta0[idx].copy()
    beta0[0] += math.log(p)
    beta0[1] += math.log(1 - p)
    expert_arr = np.concatenate([e1[None], e2[None], G.expert[idx[2:]]])
    quad = None if G.quad is None else G.quad[idx]
    return MixingMeasure(beta0, G.beta1[idx], expert_arr, quad)


def population_sq_distance(G: MixingMeasure, G_ref: MixingMeasure, *, expert: str,
                           gate: str = "linear", quad_points: int = 200) -> float:
    r""":math:`\|f_G - f_{G'}\|^2_{L^2(\mu)}` for :math:`\mu = \mathrm{Unif}[-1, 1]` (``D = 1``),
    by Gauss-Legendre quadrature with ``quad_points`` nodes (exact to round-off for these
    smooth integrands at the book's sizes).

    >>> G = default_truth("linear")
    >>> population_sq_distance(valley_measure(0.5, expert="linear"), G, expert="linear") < 1e-28
    True
    """
    quad_points = checks.positive_int(quad_points, "quad_points", minimum=2)
    G = validate_measure(G, "G", expert=expert, gate=gate, D=1)
    G_ref = validate_measure(G_ref, "G_ref", expert=expert, gate=gate, D=1)
    nodes, weights = np.polynomial.legendre.leggauss(quad_points)
    x = nodes[:, None]
    diff = np.asarray(mean(G, x, expert=expert, gate=gate)) - np.asarray(
        mean(G_ref, x, expert=expert, gate=gate))
    return float(np.sum(weights / 2.0 * diff ** 2))


def population_variance(G: MixingMeasure, *, expert: str, gate: str = "linear",
                        quad_points: int = 200) -> float:
    r""":math:`\mathrm{Var}\, f_G(X)`, :math:`X \sim \mathrm{Unif}[-1, 1]` (``D = 1``), by the
    quadrature of :func:`population_sq_distance`: the scale a noise level "of the output
    variance" refers to.

    >>> round(population_variance(default_truth("silu"), expert="silu"), 4)
    0.2226
    """
    quad_points = checks.positive_int(quad_points, "quad_points", minimum=2)
    G = validate_measure(G, "G", expert=expert, gate=gate, D=1)
    nodes, weights = np.polynomial.legendre.leggauss(quad_points)
    f = np.asarray(mean(G, nodes[:, None], expert=expert, gate=gate))
    w = weights / 2.0
    return float(np.sum(w * (f - np.sum(w * f)) ** 2))


__all__ = ["EXPERTS", "GATES", "EXPERT_LABELS", "GATE_LABELS", "MixingMeasure", "ModelSpec", "expert_dim", "validate_measure",
           "pin_last", "mean", "mean_unchecked", "mean_of_theta", "expert_values",
           "expert_values_and_grads", "ridge_values_and_slopes", "gate_features", "gate_params",
           "gate_logits", "default_truth", "measure_to_dict", "measure_from_dict",
           "load_measure", "make_spec", "check_spec", "pack", "unpack", "valley_measure",
           "population_sq_distance", "population_variance"]
