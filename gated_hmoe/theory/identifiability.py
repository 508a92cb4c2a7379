r"""Strong identifiability of gate-times-expert terms: why linear experts are slow.

One term of a softmax-gated mixture of experts is

.. math::
    u(x) = \exp(\beta^\top x)\, h(x; \eta),

(the gate intercept is the atom's mass; :math:`\partial u/\partial\beta_0 = u`). This module
holds the computations behind the chapter "Why linear experts are slow":

- sympy builders for the partial-differential-equation-type (PDE-type) interactions
  **P1** (every ridge expert), **P2** (linear experts only) and **P3** (quadratic polynomial
  gate), returning residuals that are zero when the identity holds;
- the rank test **P4**: all partial derivatives of ``u`` in its parameters up to a given
  order, evaluated on a grid, numerical rank by SVD (float64, or mpmath at high precision),
  and an *exact* rank over the rationals (each derivative is ``exp(gate) * P(x, S)`` with
  ``S`` the sigmoid, and ``x``, ``S`` are algebraically independent);
- the exact-fit valley along :func:`gated_hmoe.models.moe.valley_measure`: the distance
  :math:`\|f_{G_\delta} - f_{G^*}\|_{L^2(\mu)}`, :math:`\mu = \mathrm{Unif}[-1, 1]`, for
  each split size :math:`\delta` (its Voronoi loss is the estimation layer's
  :func:`gated_hmoe.estimation.voronoi.d1`, computed by the caller);
- the Gaussian Kullback-Leibler identity behind Le Cam's two-point method,
  :math:`\mathrm{KL}(P_G, P_{G'}) = \|f_G - f_{G'}\|^2_{L^2(\mu)}/(2\nu)` per observation,
  and its Monte-Carlo check.

The chapter's figures and explorer are in :mod:`gated_hmoe.viz.theory`.

Expert classes (one input dimension in the rank test, parameters in brackets):

- ``"linear"``: :math:`a x + b` (``a, b``);
- ``"sigmoid"``: :math:`\sigma(a x + b)`; ``"silu"``: :math:`(a x + b)\,\sigma(a x + b)`;
- ``"glu"``: :math:`\sigma(\theta x + \theta_0)\,(a x + b)` -- the literal multiplicative gate
  of arXiv 2505.06708 applied to one linear value channel (``theta, theta0, a, b``);
- ``"generic"`` (exact rank only): :math:`s(a x + b)` for an undefined smooth ``s`` whose
  derivatives are treated as algebraically independent -- the largest rank any ridge
  expert can reach.

Gates (the logit, one input dimension): ``"affine"`` :math:`\beta x`, ``"quadratic"``
:math:`\alpha x^2 + \beta x` (quadratic polynomial gate), ``"monomial"`` :math:`\alpha x^2`
(quadratic monomial gate).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, NamedTuple

import numpy as np
import sympy as sp

from gated_hmoe import checks
from gated_hmoe.models import heads, moe
from gated_hmoe.theory import symbolic

#: Expert classes of the numerical rank test (the model's: :data:`gated_hmoe.models.moe.EXPERTS`).
EXPERTS: tuple[str, ...] = moe.EXPERTS
#: Expert classes of the exact rank (adds the generic ridge expert).
EXACT_EXPERTS: tuple[str, ...] = EXPERTS + ("generic",)
#: Gate logits of the rank test.
GATES: tuple[str, ...] = ("affine", "quadratic", "monomial")
#: Expert classes accepted by the sympy builders of P1-P3.
SYMBOLIC_EXPERTS: tuple[str, ...] = ("linear", "sigmoid", "silu", "generic")

#: Generic parameter values of the rank test (spec: beta=0.7, a=1.3, b=-0.4).
DEFAULT_VALUES: dict[str, float] = {
    "alpha": 0.3, "beta": 0.7, "a": 1.3, "b": -0.4,
    "t": 1.3, "s": -0.4, "c": -0.8, "e": 0.5,
}
#: Exact rational versions of :data:`DEFAULT_VALUES` (used by :func:`exact_rank`).
_RATIONAL_VALUES: dict[str, sp.Rational] = {
    k: sp.Rational(v).limit_denominator(1000) for k, v in DEFAULT_VALUES.items()}

_EXPERT_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("a", "b"), "sigmoid": ("a", "b"), "silu": ("a", "b"),
    "glu": ("t", "s", "c", "e"), "generic": ("a", "b"),
}
_GATE_PARAMS: dict[str, tuple[str, ...]] = {
    "affine": ("beta",), "quadratic": ("alpha", "beta"), "monomial": ("alpha",),
}


def _activation(expert: str, z: sp.Expr) -> sp.Expr:
    if expert == "linear":
        return z
    if expert == "sigmoid":
        return symbolic.sigmoid(z)
    if expert == "silu":
        return symbolic.silu(z)
    return sp.Function("varphi")(z)  # "generic": an undefined smooth function


def is_zero(expr: sp.Expr) -> bool:
    """True when ``sympy.simplify`` reduces ``expr`` (or every entry of a matrix) to 0."""
    if isinstance(expr, sp.MatrixBase):
        return all(sp.simplify(v) == 0 for v in expr)
    return sp.simplify(expr) == 0


# ---------------------------------------------------------------------------------------
# P1 and P2: gate exp(beta^T x) times a ridge expert h(a^T x + b)
# ---------------------------------------------------------------------------------------

class RidgeTerm(NamedTuple):
    r"""One gate-times-expert term :math:`u = \exp(\beta^\top x)\, h(a^\top x + b)`.

    ``x, beta, a`` are tuples of ``d`` real sympy symbols, ``b`` one symbol; ``expert``
    names ``h`` (``"generic"``: an undefined function ``s``).
    """

    u: sp.Expr
    x: tuple[sp.Symbol, ...]
    beta: tuple[sp.Symbol, ...]
    a: tuple[sp.Symbol, ...]
    b: sp.Symbol
    expert: str


def ridge_term(expert: str = "linear", *, d: int = 1) -> RidgeTerm:
    r"""Build :math:`u = \exp(\beta^\top x)\, h(a^\top x + b)` with symbolic parameters.

    >>> term = ridge_term("linear", d=1)
    >>> term.u
    (a*x + b)*exp(beta*x)
    """
    checks.choice(expert, "expert", SYMBOLIC_EXPERTS)
    d = checks.positive_int(d, "d")
    if d == 1:
        x, beta, a = (sp.Symbol("x", real=True),), (sp.Symbol("beta", real=True),), \
            (sp.Symbol("a", real=True),)
    else:
        x = sp.symbols(f"x1:{d + 1}", real=True)
        beta = sp.symbols(f"beta1:{d + 1}", real=True)
        a = sp.symbols(f"a1:{d + 1}", real=True)
    b = sp.Symbol("b", real=True)
    z = sum(ak * xk for ak, xk in zip(a, x)) + b
    u = sp.exp(sum(bk * xk for bk, xk in zip(beta, x))) * _activation(expert, z)
    return RidgeTerm(u, tuple(x), tuple(beta), tuple(a), b, expert)


def _check_term(term: Any, name: str = "term") -> None:
    if not isinstance(term, RidgeTerm):
        raise TypeError(f"{name} must be a RidgeTerm from ridge_term(), got {type(term).__name__}")


def p1_residuals(term: RidgeTerm) -> tuple[sp.Expr, ...]:
    r"""P1: :math:`\partial^2 u/\partial\beta_k\partial b - \partial u/\partial a_k`, one per k.

    All zero for every ridge expert (linear or not).
    """
    _check_term(term)
    u = term.u
    return tuple(sp.simplify(sp.diff(u, bk, term.b) - sp.diff(u, ak))
                 for bk, ak in zip(term.beta, term.a))


def p2_residuals(term: RidgeTerm) -> dict[str, sp.Expr]:
    r"""P2, the linear-expert relations, as residuals (zero iff the relation holds).

    - ``"euler"``: :math:`u - a^\top \partial u/\partial a - b\, \partial u/\partial b`;
    - ``"aa"``: the matrix :math:`\partial^2 u/\partial a\,\partial a^\top`;
    - ``"ab"``: the vector :math:`\partial^2 u/\partial a\,\partial b`;
    - ``"bb"``: :math:`\partial^2 u/\partial b^2`;
    - ``"beta"`` (``d = 1`` only): :math:`\partial u/\partial\beta - a\,\partial^2
      u/\partial\beta\partial a - b\,\partial u/\partial a`.
    """
    _check_term(term)
    u, a, b = term.u, term.a, term.b
    out: dict[str, sp.Expr] = {
        "euler": sp.simplify(u - sum(ak * sp.diff(u, ak) for ak in a) - b * sp.diff(u, b)),
        "aa": sp.simplify(sp.Matrix(len(a), len(a), lambda i, j: sp.diff(u, a[i], a[j]))),
        "ab": sp.simplify(sp.Matrix([sp.diff(u, ak, b) for ak in a])),
        "bb": sp.simplify(sp.diff(u, b, 2)),
    }
    if len(a) == 1:
        beta, a1 = term.beta[0], a[0]
        out["beta"] = sp.simplify(sp.diff(u, beta) - a1 * sp.diff(u, beta, a1)
                                  - b * sp.diff(u, a1))
    return out


def evaluate_at(expr: sp.Expr, point: dict[str, float]) -> float | np.ndarray:
    """Evaluate a residual at named values (symbol names as keys): a float, or a float
    array for a matrix residual."""
    subs = {sym: point[sym.name] for sym in expr.free_symbols if sym.name in point}
    missing = sorted(sym.name for sym in expr.free_symbols if sym.name not in point)
    if missing:
        raise ValueError(f"point must give a value for every symbol; missing {missing}")
    if isinstance(expr, sp.MatrixBase):
        return np.array(sp.N(expr.subs(subs)), dtype=np.float64)
    return float(sp.N(expr.subs(subs)))


# ---------------------------------------------------------------------------------------
# P3: quadratic gates exp(x^T A x + b^T x + c)
# ---------------------------------------------------------------------------------------

class QuadraticGateTerm(NamedTuple):
    r""":math:`u = \exp(x^\top A x + b^\top x + c)\, h(x)` (``b = ()`` for the monomial gate).

    ``A`` is a sympy Matrix; with ``symmetric=False`` its ``d*d`` entries are independent
    symbols ``A_kl`` (only the symmetric part enters :math:`x^\top A x`), with
    ``symmetric=True`` ``A_kl`` and ``A_lk`` are the same symbol (``k <= l``).
    """

    u: sp.Expr
    x: tuple[sp.Symbol, ...]
    A: sp.Matrix
    b: tuple[sp.Symbol, ...]
    c: sp.Symbol
    symmetric: bool
    expert: str


def quadratic_gate_term(expert: str = "generic", *, d: int = 2, monomial: bool = False,
                        symmetric: bool = False) -> QuadraticGateTerm:
    r"""Build a quadratic-gated term with symbolic ``A, b, c``.

    ``expert="generic"`` uses an undefined function ``h(x_1, ..., x_d)`` (any expert whose
    parameters are not the gate's); ``"linear"``, ``"sigmoid"``, ``"silu"`` use the ridge
    :math:`h(w^\top x + w_0)` with symbols ``w1.., w0``.
    """
    checks.choice(expert, "expert", SYMBOLIC_EXPERTS)
    d = checks.positive_int(d, "d")
    for flag, name in ((monomial, "monomial"), (symmetric, "symmetric")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    x = sp.symbols(f"x1:{d + 1}", real=True)
    if symmetric:
        A = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"A{min(i, j) + 1}{max(i, j) + 1}", real=True))
    else:
        A = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"A{i + 1}{j + 1}", real=True))
    b = () if monomial else sp.symbols(f"b1:{d + 1}", real=True)
    c = sp.Symbol("c", real=True)
    xv = sp.Matrix(x)
    logit = (xv.T * A * xv)[0, 0] + sum(bk * xk for bk, xk in zip(b, x)) + c
    if expert == "generic":
        h = sp.Function("h")(*x)
    else:
        w = sp.symbols(f"w1:{d + 1}", real=True)
        h = _activation(expert, sum(wk * xk for wk, xk in zip(w, x)) + sp.Symbol("w0", real=True))
    return QuadraticGateTerm(sp.exp(logit) * h, tuple(x), A, tuple(b), c, symmetric, expert)


def p3_residuals(term: QuadraticGateTerm) -> dict[tuple[int, int], sp.Expr]:
    r"""P3: :math:`\partial u/\partial A_{kl} - m_{kl}\,\partial^2 u/\partial b_k\partial b_l`.

    ``m_kl = 1``, except ``m_kl = 2`` for ``k != l`` when ``A`` is parametrised
    symmetrically (one symbol for ``A_kl = A_lk``, which enters :math:`x^\top A x` twice).
    Keys ``(k, l)`` are 0-based; all pairs for a general ``A``, ``k <= l`` for a symmetric
    one. Raises ``ValueError`` for the monomial gate, which has no ``b``.
    """
    if not isinstance(term, QuadraticGateTerm):
        raise TypeError(f"term must be a QuadraticGateTerm, got {type(term).__name__}")
    if not term.b:
        raise ValueError("term has a monomial gate (no linear gate term b): P3 does not exist")
    d = len(term.x)
    pairs = [(k, l) for k in range(d) for l in range(d) if not term.symmetric or k <= l]
    out = {}
    for k, l in pairs:
        m = 2 if (term.symmetric and k != l) else 1
        out[(k, l)] = sp.simplify(sp.diff(term.u, term.A[k, l])
                                  - m * sp.diff(term.u, term.b[k], term.b[l]))
    return out


def gate_first_derivatives(term: QuadraticGateTerm) -> dict[str, sp.Expr]:
    r"""First derivatives of ``u`` in the gate parameters, divided by ``u``.

    For the quadratic gate they are :math:`x_k x_l` (``A_kl``), :math:`x_k` (``b_k``) and 1
    (``c``) for every expert, so the only second-order gate derivatives are
    :math:`\partial^2 u/\partial b_k\partial b_l = x_k x_l u` -- which is why P3 exists --
    and, for the monomial gate, nothing of order one in ``x`` is left to pair with
    :math:`x_k x_l u`.
    """
    if not isinstance(term, QuadraticGateTerm):
        raise TypeError(f"term must be a QuadraticGateTerm, got {type(term).__name__}")
    params = sorted(term.A.free_symbols, key=lambda s: s.name) + list(term.b) + [term.c]
    return {p.name: sp.simplify(sp.diff(term.u, p) / term.u) for p in params}


# ---------------------------------------------------------------------------------------
# P4: the rank test
# ---------------------------------------------------------------------------------------

class DerivativeFamily(NamedTuple):
    """All partial derivatives of ``u`` in ``params`` up to ``order`` (``u`` itself first).

    ``labels[i]`` names ``functions[i]``, e.g. ``"d2/dbeta db"``; ``x`` is the input
    symbol and ``params`` the parameter symbols in differentiation order.
    """

    functions: tuple[sp.Expr, ...]
    labels: tuple[str, ...]
    x: sp.Symbol
    params: tuple[sp.Symbol, ...]


def _label(combo: tuple[sp.Symbol, ...]) -> str:
    if not combo:
        return "u"
    return f"d{len(combo)}u/" + " ".join(f"d{p.name}" for p in combo)


def n_functions(order: int, n_params: int) -> int:
    """Number of partial derivatives of order ``0..order`` in ``n_params`` parameters."""
    order = checks.positive_int(order, "order", minimum=0)
    n_params = checks.positive_int(n_params, "n_params")
    return math.comb(order + n_params, n_params)


def _validate(expert: str, order: Any, gate: str, experts=EXPERTS) -> int:
    checks.choice(expert, "expert", experts)
    checks.choice(gate, "gate", GATES)
    return checks.positive_int(order, "order", minimum=0)


@functools.lru_cache(maxsize=64)
def _family(expert: str, order: int, gate: str) -> DerivativeFamily:
    x = sp.Symbol("x", real=True)
    sym = {n: sp.Symbol(n, real=True) for n in DEFAULT_VALUES}
    if expert == "glu":
        h = symbolic.sigmoid(sym["t"] * x + sym["s"]) * (sym["c"] * x + sym["e"])
    else:
        h = _activation(expert, sym["a"] * x + sym["b"])
    logit = {"affine": sym["beta"] * x,
             "quadratic": sym["alpha"] * x**2 + sym["beta"] * x,
             "monomial": sym["alpha"] * x**2}[gate]
    u = sp.exp(logit) * h
    params = tuple(sym[n] for n in _GATE_PARAMS[gate] + _EXPERT_PARAMS[expert])
    return _taylor_family(u, params, x, order)


def _taylor_family(u: sp.Expr, params: tuple, x: sp.Symbol, order: int) -> DerivativeFamily:
    """Every partial derivative of ``u`` in ``params`` of total order ``<= order`` (each
    computed once from its parent), labelled, in graded order."""
    funcs, labels = [], []
    cache: dict[tuple[sp.Symbol, ...], sp.Expr] = {(): u}
    for k in range(order + 1):
        for combo in itertools.combinations_with_replacement(params, k):
            if combo not in cache:
                cache[combo] = sp.diff(cache[combo[:-1]], combo[-1])
            funcs.append(cache[combo])
            labels.append(_label(combo))
    return DerivativeFamily(tuple(funcs), tuple(labels), x, params)


def derivative_family(expert: str, order: int, *, gate: str = "affine") -> DerivativeFamily:
    r"""Partial derivatives of :math:`u = \exp(\text{gate logit})\, h(x;\eta)` up to ``order``.

    Parameters are the gate's (``beta``; ``alpha, beta``; ``alpha``) then the expert's.
    With the affine gate and a two-parameter expert there are 10 functions at order 2.

    >>> len(derivative_family("linear", 2).functions)
    10
    """
    order = _validate(expert, order, gate)
    return _family(expert, order, gate)


def _check_grid(grid: Any) -> np.ndarray:
    arr = checks.finite_array(grid, "grid", ndim=1)
    if arr.shape[0] < 2:
        raise ValueError(f"grid must have at least 2 points, got {arr.shape[0]}")
    return arr.astype(np.float64)


def default_grid(n: int = 201) -> np.ndarray:
    """``n`` equally spaced points on ``[-2, 2]`` (the rank test's default: 201)."""
    n = checks.positive_int(n, "n", minimum=2)
    return np.linspace(-2.0, 2.0, n)


def evaluate_family(family: DerivativeFamily, grid: Any, *,
                    values: dict[str, float] | None = None) -> np.ndarray:
    """The matrix ``M[i, j] = functions[j](grid[i])`` in float64, shape ``(len(grid), n)``."""
    grid = _check_grid(grid)
    vals = dict(DEFAULT_VALUES, **(values or {}))
    subs = {p: vals[p.name] for p in family.params}
    cols = []
    for f in family.functions:
        fn = sp.lambdify(family.x, f.subs(subs), "numpy")
        cols.append(np.broadcast_to(np.asarray(fn(grid), dtype=np.float64), grid.shape))
    return np.stack(cols, axis=1)


def _check_rtol(rtol: Any) -> float:
    rtol = checks.real(rtol, "rtol")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    return rtol


def numerical_rank(matrix: Any, *, rtol: float = 1e-10) -> int:
    """Number of singular values above ``rtol`` times the largest (0 for a zero matrix).

    >>> x = np.linspace(-2, 2, 201)
    >>> numerical_rank(np.stack([x**0, x, x**2], axis=1))
    3
    """
    m = checks.finite_array(matrix, "matrix", ndim=2)
    rtol = _check_rtol(rtol)
    sv = np.linalg.svd(m.astype(np.float64), compute_uv=False)
    if sv.size == 0 or sv[0] == 0:
        return 0
    return int(np.count_nonzero(sv > rtol * sv[0]))


def _log10_spectrum(sv: np.ndarray) -> np.ndarray:
    sv = np.sort(np.abs(sv))[::-1]
    with np.errstate(divide="ignore"):
        return np.log10(sv / sv[0]) if sv[0] > 0 else np.full(sv.shape, -np.inf)


class RankResult(NamedTuple):
    """Outcome of the rank test for one expert class, gate and order.

    ``log10_spectrum``: ``log10(s_i / s_1)`` of all singular values, descending (``-inf``
    for exact zeros); ``dps``: decimal digits of the arithmetic (``None`` = float64).
    """

    expert: str
    gate: str
    order: int
    n_functions: int
    rank: int
    log10_spectrum: np.ndarray
    rtol: float
    dps: int | None


def family_rank(expert: str, order: int, *, gate: str = "affine", grid: Any = None,
                rtol: float = 1e-10, dps: int | None = None) -> RankResult:
    """Numerical rank of :func:`derivative_family` on ``grid`` (default 201 points in [-2, 2]).

    ``dps=None``: float64 and numpy's SVD (the spec's test, ``rtol = 1e-10``).
    ``dps=60`` (say): the same matrix in mpmath with that many digits; pick ``rtol`` well
    above ``10**-dps`` (e.g. ``1e-30``) and a grid of at least as many points as functions.
    """
    order = _validate(expert, order, gate)
    rtol = _check_rtol(rtol)
    grid = default_grid() if grid is None else _check_grid(grid)
    fam = _family(expert, order, gate)
    if dps is None:
        sv = np.linalg.svd(evaluate_family(fam, grid), compute_uv=False)
        spec = _log10_spectrum(sv)
    else:
        dps = checks.positive_int(dps, "dps", minimum=16)
        spec = _mp_log10_spectrum(fam, grid, dps)
    rank = int(np.count_nonzero(spec > np.log10(rtol)))
    return RankResult(expert, gate, order, len(fam.functions), rank, spec, rtol, dps)


def _mp_log10_spectrum(fam: DerivativeFamily, grid: np.ndarray, dps: int) -> np.ndarray:
    import mpmath

    with mpmath.workdps(dps):
        pts = [mpmath.mpf(sp.Rational(float(g)).limit_denominator(10**6).p)
               / sp.Rational(float(g)).limit_denominator(10**6).q for g in grid]
        subs = {p: _RATIONAL_VALUES[p.name] for p in fam.params}
        M = mpmath.matrix(len(pts), len(fam.functions))
        for j, f in enumerate(fam.functions):
            fn = sp.lambdify(fam.x, f.subs(subs), "mpmath")
            for i, xi in enumerate(pts):
                M[i, j] = fn(xi)
        sv = sorted((abs(v) for v in mpmath.svd_r(M, compute_uv=False)), reverse=True)
        top = sv[0]
        return np.array([float(mpmath.log10(v / top)) if v > 0 else -np.inf for v in sv])


# --- exact rank over the rationals --------------------------------------------------------

def exact_rank(expert: str, order: int, *, gate: str = "affine") -> int:
    r"""Exact dimension of the span of :func:`derivative_family`, at the default values.

    Every derivative equals :math:`\exp(\text{gate logit})\, P(x, S)` with ``P`` a
    polynomial with rational coefficients and ``S = sigma(z)`` the expert's sigmoid
    (``z = a x + b``, or ``t x + s`` for GLU); derivatives of ``S`` follow
    :math:`S' = S(1 - S)`. Because :math:`\sigma(z)` is transcendental over
    :math:`\mathbb{R}(z)`, ``x`` and ``S`` are algebraically independent, so the functions
    are linearly dependent exactly when their coefficient vectors over the monomials
    :math:`x^i S^j` are. For ``"generic"`` the derivatives :math:`s^{(k)}(z)` are
    independent symbols ``S0, S1, ...`` (the largest rank a ridge expert can have).
    The rank is computed by sympy over the rationals -- no grid, no tolerance.
    """
    order = _validate(expert, order, gate, EXACT_EXPERTS)
    return _exact_rank(expert, order, gate)


@functools.lru_cache(maxsize=64)
def _exact_rank(expert: str, order: int, gate: str) -> int:
    x = sp.Symbol("x")
    v = _RATIONAL_VALUES
    gate_mult = {"alpha": x**2, "beta": x}
    S = sp.Symbol("S")
    jets = sp.symbols(f"S0:{order + 2}")
    if expert == "glu":
        p0 = S * (sp.Symbol("c") * x + sp.Symbol("e"))
    elif expert == "linear":
        p0 = sp.Symbol("a") * x + sp.Symbol("b")
    elif expert == "sigmoid":
        p0 = S
    elif expert == "silu":
        p0 = (sp.Symbol("a") * x + sp.Symbol("b")) * S
    else:
        p0 = jets[0]
    # d S / d(param): the chain rule through z
    dz = {"a": x, "b": sp.Integer(1), "t": x, "s": sp.Integer(1)}

    def deriv(p: sp.Expr, name: str) -> sp.Expr:
        if name in gate_mult:                      # the gate factor is exp(logit)
            return sp.expand(gate_mult[name] * p)
        out = sp.diff(p, sp.Symbol(name))
        if name in dz:
            out += sp.diff(p, S) * S * (1 - S) * dz[name]
            for k in range(len(jets) - 1):
                out += sp.diff(p, jets[k]) * jets[k + 1] * dz[name]
        return sp.expand(out)

    names = _GATE_PARAMS[gate] + _EXPERT_PARAMS[expert]
    cache: dict[tuple[str, ...], sp.Expr] = {(): p0}
    polys = []
    for k in range(order + 1):
        for combo in itertools.combinations_with_replacement(names, k):
            if combo not in cache:
                cache[combo] = deriv(cache[combo[:-1]], combo[-1])
            polys.append(cache[combo].subs({sp.Symbol(n): v[n] for n in v}))
    gens = (x, S) + tuple(jets)
    dicts = [sp.Poly(p, *gens).as_dict() if p != 0 else {} for p in polys]
    monos = sorted(set().union(*dicts))
    mat = sp.Matrix([[dct.get(m, 0) for dct in dicts] for m in monos]) if monos \
        else sp.zeros(1, len(dicts))
    return int(mat.rank())


def predicted_rank(expert: str, order: int) -> int:
    r"""Closed form of the exact rank with the affine gate, derived in the chapter.

    Every derivative is :math:`x^{i+j} s^{(j+k)}(z)\, e^{\beta x}` for
    :math:`\partial_\beta^i\partial_a^j\partial_b^k`; the distinct pairs
    :math:`(m, n) = (i+j, j+k)` are those with :math:`\max(m, n) \le r`, hence
    :math:`(r+1)^2` for a generic ridge (sigmoid, SiLU reach it); for the linear expert
    :math:`s'' = 0` leaves :math:`x^m(ax+b)` and :math:`x^m`, spanning :math:`x^0..x^{r+1}`:
    :math:`r + 2` (1 at order 0).
    """
    order = _validate(expert, order, "affine", ("linear", "sigmoid", "silu", "generic"))
    if expert == "linear":
        return 1 if order == 0 else order + 2
    return (order + 1) ** 2


# ---------------------------------------------------------------------------------------
# The exact-fit valley of a softmax MoE (d = 1) and the Gaussian KL identity
# ---------------------------------------------------------------------------------------

#: Gauss-Legendre nodes of the :math:`L^2(\mu)` distances of this module.
QUAD_POINTS = 96


class ValleyCurve(NamedTuple):
    r"""The split family :math:`G_\delta` of one expert class and its distance to the truth.

    ``measures[i]`` is :func:`gated_hmoe.models.moe.valley_measure` at ``deltas[i]``,
    ``truth`` the measure it splits and
    ``l2[i]`` :math:`= \|f_{G_\delta} - f_{G^*}\|_{L^2(\mu)}`. The Voronoi loss of the
    family, :math:`D_1(G_\delta, G^*) = e^{\beta^*_0} p(1-p)\delta^2\|v\|^2`, is an
    estimation quantity: ``voronoi.d1(G, truth) for G in measures``.
    """

    expert: str
    deltas: np.ndarray
    measures: tuple[moe.MixingMeasure, ...]
    truth: moe.MixingMeasure
    l2: np.ndarray


def valley_curve(expert: str, deltas: Any, *, p: float = 0.3,
                 direction: Any = (1.0, -0.5)) -> ValleyCurve:
    r"""Split the first atom of ``moe.default_truth(expert)`` by each ``delta`` and measure
    :math:`\|f_{G_\delta} - f_{G^*}\|_{L^2(\mu)}`, :math:`\mu = \mathrm{Unif}[-1, 1]`
    (:data:`QUAD_POINTS`-node Gauss-Legendre).

    Masses :math:`p e^{\beta^*_0}`, :math:`(1-p) e^{\beta^*_0}`; value parameters
    :math:`\eta^* + (1-p)\delta v` and :math:`\eta^* - p\delta v` with ``v = direction``
    on ``(a, b)`` (ridge classes) or on the value weights ``(c, e)`` (GLU). Zero up to
    round-off for linear and GLU experts, :math:`\asymp \delta^2` for sigmoid and SiLU.

    >>> cv = valley_curve("linear", [0.01, 0.1])
    >>> bool(cv.l2.max() < 1e-14), len(cv.measures)
    (True, 2)
    """
    truth = moe.default_truth(expert)
    ds = checks.finite_array(deltas, "deltas", ndim=1)
    measures = tuple(moe.valley_measure(checks.real(d, "deltas"), expert=expert, G_true=truth,
                                        p=p, direction=direction) for d in ds)
    l2 = [math.sqrt(moe.population_sq_distance(G, truth, expert=expert,
                                               quad_points=QUAD_POINTS)) for G in measures]
    return ValleyCurve(expert, ds.astype(np.float64), measures, truth, np.array(l2))


def gaussian_kl_one() -> tuple[sp.Expr, tuple[sp.Symbol, sp.Symbol, sp.Symbol]]:
    r"""KL between :math:`N(m_1, \nu)` and :math:`N(m_2, \nu)`, by symbolic integration.

    Returns ``(kl, (m1, m2, nu))``; ``kl`` simplifies to :math:`(m_1 - m_2)^2 / (2\nu)`.
    """
    y, m1, m2 = sp.symbols("y m1 m2", real=True)
    nu = sp.Symbol("nu", positive=True)
    dens = lambda m: sp.exp(-(y - m) ** 2 / (2 * nu)) / sp.sqrt(2 * sp.pi * nu)
    log_ratio = sp.expand(sp.expand_log(sp.log(dens(m1)) - sp.log(dens(m2)), force=True))
    kl = sp.integrate(dens(m1) * log_ratio, (y, -sp.oo, sp.oo))
    return sp.simplify(kl), (m1, m2, nu)


def gaussian_kl_iid(n: int) -> tuple[sp.Expr, tuple[sp.Symbol, ...], tuple[sp.Symbol, ...],
                                     sp.Symbol]:
    r"""KL between the laws of ``n`` independent :math:`Y_t \sim N(m_t, \nu)` and
    :math:`N(m'_t, \nu)`, as the expectation of the log-likelihood ratio under the first
    (sympy.stats). Returns ``(kl, m, m_prime, nu)``; it equals
    :math:`\sum_t (m_t - m'_t)^2/(2\nu)`.
    """
    from sympy.stats import E, Normal

    n = checks.positive_int(n, "n")
    m = sp.symbols(f"m1:{n + 1}", real=True)
    mp_ = sp.symbols(f"mp1:{n + 1}", real=True)
    nu = sp.Symbol("nu", positive=True)
    ys = [Normal(f"Y{t + 1}", m[t], sp.sqrt(nu)) for t in range(n)]
    llr = sum(((yt - mpt) ** 2 - (yt - mt) ** 2) / (2 * nu) for yt, mt, mpt in zip(ys, m, mp_))
    return sp.simplify(E(sp.expand(llr))), m, mp_, nu


class MonteCarloKL(NamedTuple):
    """Monte-Carlo estimate of one observation's KL and its standard error."""

    estimate: float
    std_error: float
    exact: float


def kl_monte_carlo(expert: str, G: moe.MixingMeasure, G_prime: moe.MixingMeasure, nu: float,
                   *, samples: int = 200_000, seed: int = 0) -> MonteCarloKL:
    r"""Estimate :math:`\mathrm{KL}(P_G, P_{G'})` for one pair :math:`(X, Y)`,
    :math:`X \sim \mathrm{Unif}[-1,1]`, :math:`Y = f_G(X) + N(0, \nu)`, as the sample mean
    of the log-likelihood ratio :math:`((Y - f_{G'})^2 - (Y - f_G)^2)/(2\nu)`; ``exact`` is
    :math:`\|f_G - f_{G'}\|^2_{L^2(\mu)}/(2\nu)`. ``G``, ``G_prime``: one-dimensional
    (``D = 1``) measures with experts of class ``expert``; numpy ``default_rng(seed)``
    draws ``X`` first, then the noise.
    """
    G = moe.validate_measure(G, "G", expert=expert, gate="linear", D=1)
    G_prime = moe.validate_measure(G_prime, "G_prime", expert=expert, gate="linear", D=1)
    nu = checks.real(nu, "nu", positive=True)
    samples = checks.positive_int(samples, "samples", minimum=2)
    seed = checks.positive_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, samples)[:, None]
    f = np.asarray(moe.mean(G, x, expert=expert))
    g = np.asarray(moe.mean(G_prime, x, expert=expert))
    y = f + math.sqrt(nu) * rng.standard_normal(samples)
    llr = ((y - g) ** 2 - (y - f) ** 2) / (2 * nu)
    exact = moe.population_sq_distance(G, G_prime, expert=expert,
                                       quad_points=QUAD_POINTS) / (2 * nu)
    return MonteCarloKL(float(llr.mean()), float(llr.std(ddof=1) / math.sqrt(samples)), exact)


# ---------------------------------------------------------------------------------------
# The rank test for any leaf, and for the leaf of every attention gate position
# ---------------------------------------------------------------------------------------

def expression_rank(h: sp.Expr, x: sp.Symbol, params: Any, values: dict[str, float], *,
                    order: int = 2, grid: Any = None, rtol: float = 1e-10,
                    dps: int | None = None) -> RankResult:
    r"""Rank test P4 for an arbitrary leaf ``h(x; params)`` under the gate :math:`e^{\beta x}`.

    Builds :math:`u = e^{\beta x} h`, all partial derivatives of ``u`` in
    ``(beta, *params)`` up to ``order`` (``u`` included), evaluates them at ``values``
    (a number for every parameter name, and for ``beta``; default
    ``beta = DEFAULT_VALUES["beta"]``) on ``grid`` and returns their numerical rank as
    :func:`family_rank` does (``dps=None``: float64; else mpmath with ``dps`` digits,
    values rounded to rationals with denominators up to 1000). The result's ``expert`` is
    ``str(h)`` and its ``gate`` is ``"affine"``.

    >>> x, t, c = sp.symbols("x t c", real=True)
    >>> expression_rank(c * x, x, (c,), {"c": 1.3}, order=2).rank   # a linear leaf
    3
    """
    if not isinstance(h, sp.Expr):
        raise TypeError(f"h must be a sympy expression, got {type(h).__name__}")
    if not isinstance(x, sp.Symbol):
        raise TypeError(f"x must be a sympy Symbol, got {type(x).__name__}")
    params = tuple(params)
    if not params or not all(isinstance(p, sp.Symbol) for p in params):
        raise TypeError("params must be a non-empty sequence of sympy Symbols")
    beta = sp.Symbol("beta", real=True)
    if beta in params or x in params:
        raise ValueError("params must not contain x or the gate slope 'beta'")
    if not isinstance(values, dict):
        raise TypeError(f"values must be a dict of parameter name -> number, got {type(values).__name__}")
    vals = {"beta": DEFAULT_VALUES["beta"], **{k: checks.real(v, f"values[{k!r}]")
                                                for k, v in values.items()}}
    missing = [p.name for p in params if p.name not in vals]
    if missing:
        raise ValueError(f"values must give a number for every parameter; missing {missing}")
    order = checks.positive_int(order, "order", minimum=0)
    rtol = _check_rtol(rtol)
    grid = default_grid() if grid is None else _check_grid(grid)
    u = sp.exp(beta * x) * h
    all_params = (beta,) + params
    fam = _taylor_family(u, all_params, x, order)
    subs = {p: vals[p.name] for p in all_params}
    if dps is None:
        cols = [np.broadcast_to(np.asarray(sp.lambdify(x, f.subs(subs), "numpy")(grid),
                                           dtype=np.float64), grid.shape) for f in fam.functions]
        spec = _log10_spectrum(np.linalg.svd(np.stack(cols, axis=1), compute_uv=False))
    else:
        import mpmath

        dps = checks.positive_int(dps, "dps", minimum=16)
        rational = {p: sp.Rational(vals[p.name]).limit_denominator(1000) for p in all_params}
        with mpmath.workdps(dps):
            pts = [mpmath.mpf(sp.Rational(float(g)).limit_denominator(10**6).p)
                   / sp.Rational(float(g)).limit_denominator(10**6).q for g in grid]
            M = mpmath.matrix(len(pts), len(fam.functions))
            for j, f in enumerate(fam.functions):
                fn = sp.lambdify(x, f.subs(rational), "mpmath")
                for i, xi in enumerate(pts):
                    M[i, j] = fn(xi)
            sv = sorted((abs(v) for v in mpmath.svd_r(M, compute_uv=False)), reverse=True)
            spec = np.array([float(mpmath.log10(v / sv[0])) if v > 0 else -np.inf for v in sv])
    rank = int(np.count_nonzero(spec > np.log10(rtol)))
    return RankResult(str(h), "affine", order, len(fam.functions), rank, spec, rtol, dps)


#: Rank-test expert class of the leaf of each attention layer class of
#: :data:`gated_hmoe.models.heads.LAYER_POSITIONS` (read from ``heads.LEAF_CLASS``).
LEAF_EXPERT: dict[str, str] = {"linear": "linear", "GLU": "glu", "ridge (SiLU)": "silu"}


def position_rank(position: str, order: int = 2) -> RankResult:
    r"""Rank test P4 for the leaf of one attention layer class (one input dimension).

    The leaf class is :data:`gated_hmoe.models.heads.LEAF_CLASS` ``[position]``: linear
    :math:`a x + b` (MHSA, G3, G4, G5), GLU :math:`\sigma(t x + t_0)(c x + c_0)` (literal
    G1, G1 headwise, G2: linear in the value weights) or the SiLU ridge
    :math:`\mathrm{SiLU}(a x + b)` (G2 tied to the values, value activation); the family
    is :func:`family_rank` of that class.

    >>> position_rank("MHSA").rank, position_rank("G2-tied").rank
    (4, 9)
    """
    heads.check_layer_position(position)
    return family_rank(LEAF_EXPERT[heads.LEAF_CLASS[position]], order)


# ---------------------------------------------------------------------------------------
# Le Cam's two-point bound along the split family, computed
# ---------------------------------------------------------------------------------------

class LeCamTwoPoint(NamedTuple):
    r"""Le Cam's two-point lower bound for the half-separation of an over-fitted pair.

    The two points are :math:`G_0` (the true atom split with no offset: the truth itself)
    and :math:`G_\delta` (:func:`gated_hmoe.models.moe.valley_measure` at offset
    :math:`\delta`); the functional is :math:`T(G) = \|\eta_1 - \eta_2\|/2`, half the
    separation of the pair, so :math:`T(G_0) = 0`, :math:`T(G_\delta) = \delta\|v\|/2`.
    ``deltas``: the grid of offsets searched; ``l2[i]`` :math:`= \|f_{G_{\delta_i}} -
    f_{G^*}\|_{L^2(\mu)}`. Per sample size ``ns[k]``: the best offset ``best_delta[k]``,
    its ``kl[k]`` :math:`= n\,\|f_{G_\delta} - f_{G^*}\|^2/(2\nu)`, and
    ``bound[k]`` :math:`= \max_\delta \tfrac12 T(G_\delta)\,(1 - \min(1, \sqrt{\mathrm{KL}/2}))`.
    """

    expert: str
    nu: float
    ns: np.ndarray
    deltas: np.ndarray
    l2: np.ndarray
    half_separation: np.ndarray
    best_delta: np.ndarray
    kl: np.ndarray
    bound: np.ndarray


def le_cam_two_point(expert: str, ns: Any, *, nu: float = 1e-6, delta_max: float = 1.0,
                     n_deltas: int = 161, p: float = 0.3,
                     direction: Any = (1.0, -0.5)) -> LeCamTwoPoint:
    r"""Le Cam's two-point bound along the split family of ``moe.default_truth(expert)``.

    For every estimator :math:`\hat T` of :math:`T(G) = \|\eta_1 - \eta_2\|/2` (the
    over-fitted pair's half-separation) and each :math:`n` in ``ns``,
    :math:`\max_{G \in \{G_0, G_\delta\}} \mathbb{E}_G|\hat T - T(G)| \ge
    \tfrac12 T(G_\delta)\,(1 - \mathrm{TV}(P^n_{G_0}, P^n_{G_\delta}))`, with
    :math:`\mathrm{TV} \le \sqrt{\mathrm{KL}/2}` (Pinsker) and the Gaussian identity
    :math:`\mathrm{KL} = n\|f_{G_\delta} - f_{G^*}\|^2_{L^2(\mu)}/(2\nu)`. The bound is
    maximised over ``n_deltas`` log-spaced offsets in :math:`[10^{-4}\delta_{\max},
    \delta_{\max}]` (the parameter set is compact: offsets up to ``delta_max``).

    Linear and GLU leaves: the KL is zero (round-off) at every offset, so the bound is
    :math:`\delta_{\max}\|v\|/4` at every ``n``. Ridge leaves:
    :math:`\|f_{G_\delta} - f_{G^*}\| \approx C\delta^2`, so the best offset is
    :math:`\asymp (\nu/n)^{1/4}` and so is the bound.

    >>> lc = le_cam_two_point("linear", [1e3, 1e6])
    >>> bool(np.allclose(lc.bound, lc.bound[0])), bool(lc.kl.max() < 1e-9)
    (True, True)
    """
    checks.choice(expert, "expert", EXPERTS)
    ns = checks.finite_array(ns, "ns", ndim=1).astype(np.float64)
    if ns.size == 0 or np.any(ns < 1):
        raise ValueError("ns must be a non-empty 1-d array of sample sizes >= 1")
    nu = checks.real(nu, "nu", positive=True)
    delta_max = checks.real(delta_max, "delta_max", positive=True)
    n_deltas = checks.positive_int(n_deltas, "n_deltas", minimum=2)
    v = checks.finite_array(direction, "direction", shape=(2,)).astype(float)
    deltas = np.logspace(np.log10(delta_max) - 4.0, np.log10(delta_max), n_deltas)
    l2 = valley_curve(expert, deltas, p=p, direction=v).l2
    half_sep = deltas * float(np.linalg.norm(v)) / 2.0
    kl = ns[:, None] * l2[None, :] ** 2 / (2.0 * nu)                 # (len(ns), n_deltas)
    tv = np.minimum(1.0, np.sqrt(kl / 2.0))
    value = 0.5 * half_sep[None, :] * (1.0 - tv)
    best = np.argmax(value, axis=1)
    rows = np.arange(ns.size)
    return LeCamTwoPoint(expert, nu, ns, deltas, l2, half_sep, deltas[best], kl[rows, best],
                         value[rows, best])


def valley_contact_constant(expert: str, *, p: float = 0.3,
                            direction: Any = (1.0, -0.5)) -> float:
    r"""The constant :math:`C` of :math:`\|f_{G_\delta} - f_{G^*}\|_{L^2(\mu)} = C\delta^2 + O(\delta^3)`.

    Derived by Taylor expansion: the denominator of the softmax does not move along the
    split family, so :math:`f_{G_\delta} - f_{G^*} = \pi^*_1(x)\,[p\,h(\eta^* + (1-p)\delta
    v) + (1-p)\,h(\eta^* - p\delta v) - h(\eta^*)]` and the bracket is
    :math:`\tfrac12 p(1-p)\delta^2 (v^\top\nabla_\eta)^2 h(x;\eta^*) + O(\delta^3)`. Hence
    :math:`C = \tfrac12 p(1-p)\,\|\pi^*_1\,(v^\top\nabla_\eta)^2 h(\cdot;\eta^*)\|_{L^2(\mu)}`,
    computed here with sympy (the second directional derivative) and Gauss-Legendre
    quadrature. Zero for linear and GLU leaves (linear in the value parameters).
    """
    checks.choice(expert, "expert", EXPERTS)
    p = checks.real(p, "p")
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    v = checks.finite_array(direction, "direction", shape=(2,)).astype(float)
    truth = moe.default_truth(expert)
    x, s = sp.Symbol("x", real=True), sp.Symbol("s", real=True)
    eta = [float(e) for e in np.asarray(truth.expert)[0]]
    if expert == "glu":
        t, t0, c, c0 = eta
        h = symbolic.sigmoid(t * x + t0) * ((c + s * v[0]) * x + (c0 + s * v[1]))
    else:
        a, b = eta
        h = _activation(expert, (a + s * v[0]) * x + (b + s * v[1]))
    h2 = sp.diff(h, s, 2).subs(s, 0)
    nodes, weights = np.polynomial.legendre.leggauss(QUAD_POINTS)
    vals = np.broadcast_to(np.asarray(sp.lambdify(x, h2, "numpy")(nodes), dtype=float),
                           nodes.shape)
    logits = np.asarray(truth.beta1)[:, 0][None, :] * nodes[:, None] + np.asarray(truth.beta0)
    pi1 = np.exp(logits[:, 0] - np.logaddexp.reduce(logits, axis=1))
    return 0.5 * p * (1 - p) * float(np.sqrt(np.sum(weights / 2.0 * (pi1 * vals) ** 2)))
