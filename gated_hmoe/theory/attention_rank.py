r"""Attention's own router in the rank test, and the set of exact fits of a surplus head.

**Rank test P4 with attention's router.** One term of head :math:`h` for query token
:math:`i` and key token :math:`j`, with one input dimension per token (query
:math:`x = x_i`, key :math:`y = x_j`, both kept as separate variables), is

.. math::
    u(x, y) = \exp(\alpha\, x\, y)\; E(x, y; \eta),

the numerator of the attention weight :math:`\pi_{ij}` (a quadratic *monomial* gate: no
slope term, no router bias; :math:`\alpha = W_K` with :math:`W_Q = 1`) times the head's
weighted leaf. The normalisation over keys (the softmax denominator) is not part of one
term, as the gate intercept's normaliser is not part of one term in the 1-D mixture
analogue (:func:`gated_hmoe.theory.identifiability.position_rank`). Terms per position
(:math:`\sigma` the sigmoid), differentiated parameters in brackets
(:data:`POSITION_PARAMS`):

- ``"MHSA"``: :math:`e^{\alpha xy}\, v y` (``alpha, v``);
- ``"G1"``: :math:`e^{\alpha xy}\,\sigma(t x)\, v y` -- the gate reads the query token, the
  value the key token (``alpha, t, v``); ``"G1-headwise"`` is the same term (with one value
  channel a per-head gate and a per-channel gate coincide);
- ``"G2"``: :math:`e^{\alpha xy}\,\sigma(t y)\, v y` (``alpha, t, v``);
- ``"G2-tied"``: :math:`w_O\, e^{\alpha xy}\,\mathrm{SiLU}(v y)` (``alpha, v``);
- ``"ridge"`` (value activation): :math:`w_O\, e^{\alpha xy}\,\mathrm{SiLU}(v y + b)`
  (``alpha, v, b``);
- ``"G3"``: :math:`e^{\alpha x y \sigma(g y)}\, v y`; ``"G4"``:
  :math:`e^{\alpha x \sigma(g x) y}\, v y` (``alpha, g, v``);
- ``"G5"``: :math:`\sigma(g_5 x)\, e^{\alpha xy}\, v y` (``alpha, v``).

Fixed factors, not differentiated: the output row :math:`w_O` of a massful head
(:data:`gated_hmoe.models.heads.MASSFUL`) is the head's mass -- its derivative is
:math:`u/w_O`, as the gate intercept's is :math:`u` in the mixture test -- and the G5 gate
:math:`g_5` belongs to the layer, shared by all heads, so it is no parameter of one head.
No term has a bias on the value except the value activation (as in the layers of
:mod:`gated_hmoe.models.heads`).

**Exact fits of a surplus head.** :func:`branch_dimensions` takes the declared two-head
teacher of :func:`gated_hmoe.models.heads.layer_teacher` (``d = 2``, ``d_v = 2``), a
three-head student of the same class, and ``N = 3`` tokens, and measures the set of student
weights whose output equals the teacher's near a point of each branch of exact fits
(:func:`branch_student`; ``M`` is the value map :math:`W_V`, or, where the output row is
the head's mass, :math:`w_O`):

- ``"split"``: the surplus head copies teacher head 0's router and leaf, and the pair
  shares ``M``: :math:`pM^* + U` and :math:`(1-p)M^* - U`. For leaves linear in
  :math:`W_V` this is the valley (the value maps trade freely); for the ridge leaves the
  value maps stay pinned at the teacher's and only the masses trade;
- ``"channel"`` (where channels separate: elementwise gates or free output rows): the
  same for value channel 0 only, the surplus head's channel 1 zero with its gate (or, massful,
  its leaf) free;
- ``"dead"``: the surplus head's ``M`` is zero, so it outputs nothing, and its router (and,
  massful, its leaf) is free;
- ``"meet"``: the split at ``U = (1-p)M^*`` (surplus ``M`` zero, router the teacher's),
  where the split and the dead-head branch pass;
- ``"generic"`` (reference, not an exact fit): a random student, whose Jacobian kernel is
  the layer's continuous symmetry (:func:`column_sum_symmetric`).

Dimension near a point :math:`\theta` of the exact-fit set :math:`F` (the outputs of
``J: (3 n_sequences, n_params)`` stacked): ``F`` contains the affine family of the
branch, of dimension ``family`` (the rank of its tangent vectors, symmetries included). If
``family = n_params - rank J``, ``F`` *is* that family near :math:`\theta` (a manifold):
the ``rank J`` outputs with independent gradients cut out a manifold ``G`` of that
dimension by the implicit function theorem, and ``family`` :math:`\subset F \subset G`.
Otherwise the kernel has extra directions ``c`` (beyond the family's tangent space ``T``),
and the *second-order test* applies. With the rank of ``J`` constant along the branch
(true at a generic point of it), the Lyapunov-Schmidt reduction of :math:`f_\theta = f^*`
to the kernel reads :math:`\tfrac12 q(c) + O(\|c\|^3) = 0` in coordinates adapted to the
branch, with :math:`q(c) = \Pi\, D^2 f[c, c]` (:math:`\Pi` removes
:math:`\operatorname{range} J` and the mixed terms :math:`D^2 f[t, c]`, :math:`t \in T`,
which vanish there up to the accuracy of the differences). If :math:`q(c) \ne 0` for every
:math:`c \ne 0`, only :math:`c = 0` solves it: the set is the family near :math:`\theta`, and
the extra directions are flat to first order only. The test certifies this with one unit
functional :math:`w` for which the quadratic form :math:`w \cdot q` is positive definite:
``margin`` is its smallest eigenvalue, with :math:`q` scaled so that
:math:`\max_k \|q(c_k)\| = 1` (a lower bound on :math:`\|q(c)\|` on the unit sphere).
:math:`D^2 f` is taken by central differences (step ``1e-4``) of the forward-mode
Jacobian, accurate to about ``1e-8``; a margin above :data:`SECOND_ORDER_TOL` certifies.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jax.flatten_util import ravel_pytree
from scipy import optimize

from gated_hmoe import checks
from gated_hmoe.models import heads
from gated_hmoe.theory import identifiability as idf
from gated_hmoe.theory import symbolic

#: Differentiated parameters of one attention term, per position of
#: :data:`gated_hmoe.models.heads.LAYER_POSITIONS` (``alpha``: score weight :math:`W_K`;
#: ``v``: value weight; ``t``: G1/G2 gate weight; ``g``: G3/G4 gate weight; ``b``: value bias).
POSITION_PARAMS: dict[str, tuple[str, ...]] = {
    "MHSA": ("alpha", "v"), "G1": ("alpha", "t", "v"), "G1-headwise": ("alpha", "t", "v"),
    "G2": ("alpha", "t", "v"), "G2-tied": ("alpha", "v"), "ridge": ("alpha", "v", "b"),
    "G3": ("alpha", "g", "v"), "G4": ("alpha", "g", "v"), "G5": ("alpha", "v"),
}
#: Generic values of the term's parameters and fixed factors (``wo``: mass; ``g5``: G5 gate).
TERM_VALUES: dict[str, float] = {"alpha": 0.7, "v": 1.3, "t": -0.8, "g": 0.9, "b": -0.4,
                                 "wo": 1.5, "g5": 0.8}
#: Name of the router in the results (the ``gate`` field of the rank results).
ROUTER = "attention score (quadratic monomial)"
#: Branches measured by :func:`branch_dimensions`, in order.
BRANCHES: tuple[str, ...] = ("generic", "split", "channel", "dead", "meet")
#: Smallest second-order margin (:class:`BranchDimension`) that certifies a dimension
#: (four decades above the accuracy of the differenced second derivatives).
SECOND_ORDER_TOL = 1e-4


def _term_expr(position: str, x: sp.Symbol, y: sp.Symbol, s: dict[str, sp.Symbol]) -> sp.Expr:
    sig, silu = symbolic.sigmoid, symbolic.silu
    score = {"G3": s["alpha"] * x * y * sig(s["g"] * y),
             "G4": s["alpha"] * x * sig(s["g"] * x) * y}.get(position, s["alpha"] * x * y)
    leaf = {"G1": sig(s["t"] * x) * s["v"] * y, "G1-headwise": sig(s["t"] * x) * s["v"] * y,
            "G2": sig(s["t"] * y) * s["v"] * y, "G2-tied": s["wo"] * silu(s["v"] * y),
            "ridge": s["wo"] * silu(s["v"] * y + s["b"]),
            "G5": sig(s["g5"] * x) * s["v"] * y}.get(position, s["v"] * y)
    return sp.exp(score) * leaf


class AttentionFamily(NamedTuple):
    """All partial derivatives of one attention term in its parameters up to ``order``.

    ``functions[k]`` (labelled ``labels[k]``, e.g. ``"d2u/dalpha dv"``) is a sympy expression
    in the query symbol ``query`` and the key symbol ``key``; ``params`` are the
    differentiated symbols, ``fixed`` the symbols of fixed factors (``wo``, ``g5``).
    """

    position: str
    functions: tuple[sp.Expr, ...]
    labels: tuple[str, ...]
    query: sp.Symbol
    key: sp.Symbol
    params: tuple[sp.Symbol, ...]
    fixed: tuple[sp.Symbol, ...]


@functools.lru_cache(maxsize=32)
def _family(position: str, order: int) -> AttentionFamily:
    x, y = sp.Symbol("x_q", real=True), sp.Symbol("x_k", real=True)
    sym = {n: sp.Symbol(n, real=True) for n in TERM_VALUES}
    u = _term_expr(position, x, y, sym)
    params = tuple(sym[n] for n in POSITION_PARAMS[position])
    derivs: dict[tuple[sp.Symbol, ...], sp.Expr] = {(): u}
    for k in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(params, k):
            derivs[combo] = sp.diff(derivs[combo[:-1]], combo[-1])
    labels = tuple(f"d{len(c)}u/" + " ".join(f"d{p.name}" for p in c) if c else "u"
                   for c in derivs)
    fixed = tuple(sorted((s for s in u.free_symbols if s.name in ("wo", "g5")), key=str))
    return AttentionFamily(position, tuple(derivs.values()), labels, x, y, params, fixed)


def attention_family(position: str, order: int = 2) -> AttentionFamily:
    r"""The Taylor family of one attention term of ``position`` (module docstring), up to
    ``order``: :math:`\binom{\text{order} + P}{P}` functions for ``P`` parameters.

    >>> fam = attention_family("MHSA", 1)
    >>> fam.labels, fam.functions[0]
    (('u', 'd1u/dalpha', 'd1u/dv'), v*x_k*exp(alpha*x_k*x_q))
    """
    heads.check_layer_position(position)
    order = checks.positive_int(order, "order", minimum=0)
    return _family(position, order)


def query_key_grid(n: int = 11) -> np.ndarray:
    """The ``n * n`` points ``(x_q, x_k)`` of an ``n``-point equally spaced grid of
    ``[-2, 2]`` in each token: ``(n*n, 2)``, query first."""
    g = idf.default_grid(checks.positive_int(n, "n", minimum=2))
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def _spectrum(sv) -> np.ndarray:
    sv = sorted((abs(v) for v in sv), reverse=True)
    top = sv[0]
    return np.array([math.log10(v / top) if v > 0 else -np.inf for v in sv], dtype=float)


def attention_rank(position: str, order: int = 2, *, n_grid: int = 11, rtol: float = 1e-10,
                   dps: int | None = None) -> idf.RankResult:
    r"""Rank test P4 for one attention term (:func:`attention_family`) on the
    ``n_grid x n_grid`` (query, key) grid of :func:`query_key_grid`, parameters at
    :data:`TERM_VALUES`.

    ``dps=None``: float64 SVD; ``dps=40`` (say): the same matrix in mpmath with that many
    digits, values rounded to rationals with denominators up to 1000 and the grid exact
    (pick ``rtol`` well above ``10**-dps``). Returns a
    :class:`~gated_hmoe.theory.identifiability.RankResult` whose ``expert`` is the position
    and ``gate`` is :data:`ROUTER`.

    >>> attention_rank("MHSA").rank, attention_rank("G2-tied").rank
    (3, 6)
    """
    fam = attention_family(position, order)
    n_grid = checks.positive_int(n_grid, "n_grid", minimum=2)
    rtol = checks.real(rtol, "rtol", positive=True)
    if rtol >= 1:
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    if dps is None:
        pts = query_key_grid(n_grid)
        subs = {s: TERM_VALUES[s.name] for s in fam.params + fam.fixed}
        cols = [np.broadcast_to(np.asarray(sp.lambdify((fam.query, fam.key), f.subs(subs),
                                                        "numpy")(pts[:, 0], pts[:, 1]),
                                           dtype=np.float64), pts.shape[:1])
                for f in fam.functions]
        spec = _spectrum(np.linalg.svd(np.stack(cols, 1), compute_uv=False))
    else:
        import mpmath

        dps = checks.positive_int(dps, "dps", minimum=16)
        subs = {s: sp.Rational(TERM_VALUES[s.name]).limit_denominator(1000)
                for s in fam.params + fam.fixed}
        ticks = [sp.Rational(-2) + sp.Rational(4 * k, n_grid - 1) for k in range(n_grid)]
        with mpmath.workdps(dps):
            fns = [sp.lambdify((fam.query, fam.key), f.subs(subs), "mpmath") for f in fam.functions]
            M = mpmath.matrix([[fn(mpmath.mpf(a.p) / a.q, mpmath.mpf(b.p) / b.q) for fn in fns]
                               for a, b in itertools.product(ticks, ticks)])
            spec = _spectrum(mpmath.svd_r(M, compute_uv=False))
    rank = int(np.count_nonzero(spec > math.log10(rtol)))
    return idf.RankResult(position, ROUTER, order, len(fam.functions), rank, spec, rtol, dps)


class RankRow(NamedTuple):
    """One row of :func:`rank_table`: the attention term's rank and verdict, and the 1-D
    mixture analogue's (:func:`gated_hmoe.theory.identifiability.position_rank`: affine gate
    :math:`e^{\\beta x}`, leaves with a bias).

    ``verdict``: ``"full rank"`` or ``"deficient"``; ``analogue_verdict``: ``"deficient"``
    when the analogue loses more than the one function P1 merges, else
    ``"ridge maximum"``; ``changed``: the two verdicts disagree on deficiency.
    """

    position: str
    params: tuple[str, ...]
    n_functions: int
    rank: int
    verdict: str
    analogue_functions: int
    analogue_rank: int
    analogue_verdict: str
    changed: bool


def rank_table(order: int = 2) -> tuple[RankRow, ...]:
    """:func:`attention_rank` (float64) and the 1-D mixture analogue for every position of
    :data:`gated_hmoe.models.heads.LAYER_POSITIONS`."""
    rows = []
    for pos in heads.LAYER_POSITIONS:
        res, ana = attention_rank(pos, order), idf.position_rank(pos, order)
        deficient = res.rank < res.n_functions
        ana_deficient = ana.rank < ana.n_functions - 1
        rows.append(RankRow(pos, POSITION_PARAMS[pos], res.n_functions, res.rank,
                            "deficient" if deficient else "full rank", ana.n_functions,
                            ana.rank, "deficient" if ana_deficient else "ridge maximum",
                            deficient != ana_deficient))
    return tuple(rows)


# ---------------------------------------------------------------------------------------
# The set of exact fits of a student with one surplus head
# ---------------------------------------------------------------------------------------

def column_sum_symmetric(position: str) -> bool:
    """True where a head's output reads only the column sum of its ``W_V`` (``W_O`` pinned
    at ones and one gate for all channels: MHSA, G1-headwise, G3, G4, G5), so that
    ``W_V -> W_V + [e, -e]`` leaves every output unchanged: ``d`` symmetry directions per head.
    """
    heads.check_layer_position(position)
    return position in ("MHSA", "G1-headwise", "G3", "G4", "G5")


def branches(position: str) -> tuple[str, ...]:
    """The branches :func:`branch_dimensions` measures for ``position``: :data:`BRANCHES`,
    without ``"channel"`` where the channels do not separate (:func:`column_sum_symmetric`)."""
    sym = column_sum_symmetric(position)
    return tuple(b for b in BRANCHES if not (sym and b == "channel"))


def _mass_key(position: str) -> str:
    return "wo" if position in heads.MASSFUL else "wv"


def _free_in_dead_channel(position: str) -> tuple[str, ...]:
    return ("wv", "b") if position in heads.MASSFUL else ("t",)


def branch_student(position: str, branch: str, *, p: float = 0.3, seed: int = 0) -> dict:
    """Weights of a three-head student (heads: teacher head 0's slot, teacher head 1,
    surplus head) at a point of ``branch`` (:func:`branches`), in the layout of
    :func:`gated_hmoe.models.heads.layer_teacher`; ``p`` the share of the split, ``seed``
    draws the generic offsets and free weights (``numpy.random.default_rng``).

    ``"split"``: surplus head = head 0's router and leaf, value maps (or, massful, output
    rows) ``p M* + U`` and ``(1 - p) M* - U``; ``"channel"``: the same for value channel 0
    only, the surplus head's channel 1 zero with its other weights (gate, or massful leaf)
    free; ``"dead"``: the surplus head's value map (massful: output row) zero, the rest free;
    ``"meet"``: the split at ``M = (M*, 0)``; ``"generic"``: a random student.

    >>> s = branch_student("MHSA", "dead")
    >>> s["wv"].shape, bool(np.all(s["wv"][2] == 0))
    ((3, 2, 2), True)
    """
    checks.choice(branch, "branch", branches(position))
    p = checks.real(p, "p")
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    rng = np.random.default_rng(checks.positive_int(seed, "seed", minimum=0))
    t = heads.layer_teacher(position, 2)
    s = {k: (v.copy() if k == "g5" else np.concatenate([v, v[:1]])) for k, v in t.items()}
    mass = _mass_key(position)
    star = t[mass][0]
    U = 0.3 * rng.standard_normal(star.shape)
    if branch == "generic":
        return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in s.items()}
    if branch == "split":
        s[mass][0], s[mass][2] = p * star + U, (1 - p) * star - U
    elif branch == "channel":
        s[mass][0][..., 0] = p * star[..., 0] + U[..., 0]
        s[mass][2][..., 0] = (1 - p) * star[..., 0] - U[..., 0]
        s[mass][2][..., 1] = 0.0
        for k in set(_free_in_dead_channel(position)) & set(s):
            s[k][2][..., 1] += 0.5 * rng.standard_normal(s[k][2][..., 1].shape)
    elif branch == "meet":
        s[mass][0], s[mass][2] = star, np.zeros_like(star)
    else:
        for k in set(s) - {"g5"}:
            s[k][2] = s[k][0] + 0.5 * rng.standard_normal(s[k][0].shape)
        s[mass][2] = 0.0
    return s


def _tangents(position: str, branch: str, student: dict) -> np.ndarray:
    """Tangent vectors ``(m, n_params)`` of the explicit family through ``student``: the
    branch's own directions and the layer's column-sum symmetry."""
    out = []

    def direction(*entries):
        d = {k: np.zeros_like(v) for k, v in student.items()}
        for key, index, value in entries:
            d[key][index] = value
        out.append(_flat(d))

    mass = _mass_key(position)
    shape = student[mass].shape[1:]
    if branch in ("split", "meet"):
        for idx in np.ndindex(shape):
            direction((mass, (0,) + idx, 1.0), (mass, (2,) + idx, -1.0))
    if branch == "channel":
        for idx in np.ndindex(shape[:-1]):
            direction((mass, (0,) + idx + (0,), 1.0), (mass, (2,) + idx + (0,), -1.0))
        for k in set(_free_in_dead_channel(position)) & set(student):
            for idx in np.ndindex(student[k].shape[1:-1]):
                direction((k, (2,) + idx + (1,), 1.0))
    if branch in ("dead", "meet"):
        for k in sorted(set(student) - {"g5", mass}):
            for idx in np.ndindex(student[k].shape[1:]):
                direction((k, (2,) + idx, 1.0))
    if column_sum_symmetric(position):
        H, d, _ = student["wv"].shape
        for h, r in itertools.product(range(H), range(d)):
            direction(("wv", (h, r, 0), 1.0), ("wv", (h, r, 1), -1.0))
    return np.array(out) if out else np.zeros((0, _flat(student).size))


class BranchDimension(NamedTuple):
    """The exact-fit set of a three-head student near one point (:func:`branch_dimensions`).

    ``n_params``: all student weights; ``rank``: rank of the output Jacobian ``J`` (float64,
    singular values above ``rtol`` times the largest); ``gap``: decades between the last
    kept and the first dropped singular value; ``kernel``: ``n_params - rank``;
    ``family``: dimension of the explicit affine family of exact fits through the point
    (rank of its tangent vectors, the layer's symmetries included); ``second_order``:
    whether the second-order test (module docstring) passed, ``None`` where it is not
    needed (``kernel == family``) or not applicable (``"meet"``); ``margin``: its
    certificate, the smallest eigenvalue of a positive combination of the scaled second
    derivatives (``nan`` where not run); ``dimension``: the set's local dimension where established,
    else ``None`` (``"meet"``, a crossing of branches, is described by ``kernel``);
    ``residual``: ``max |f - f*|`` at the point (``nan`` for ``"generic"``).
    """

    position: str
    branch: str
    n_params: int
    rank: int
    gap: float
    kernel: int
    family: int
    second_order: bool | None
    margin: float
    dimension: int | None
    residual: float


@functools.lru_cache(maxsize=16)
def _output_map(position: str, n_sequences: int, seed: int):
    """Jitted ``theta -> (J, f, f_teacher)`` for the three-head student's stacked outputs
    ``f: (m,)``, ``m = 3 n_sequences``: its Jacobian ``J: (m, n)`` (forward mode) and the
    teacher's outputs ``(m,)``."""
    x, _ = heads.sample_inputs(jax.random.key(seed), n=n_sequences, n_tokens=3, d=2)
    unravel = ravel_pytree({k: jnp.asarray(v) for k, v in
                            branch_student(position, "generic").items()})[1]
    teacher = heads.layer_teacher(position, 2)

    def f(theta):
        return heads.batched_output(unravel(theta), x, position).reshape(-1)

    def derivatives(theta):
        J, out = jax.jacfwd(lambda th: (f(th),) * 2, has_aux=True)(theta)
        return J, out, heads.batched_output(teacher, x, position).reshape(-1)

    return jax.jit(derivatives)


def _flat(d: dict) -> np.ndarray:
    """The weights of ``d`` in the order of ``jax.flatten_util.ravel_pytree`` (sorted keys)."""
    return np.concatenate([np.ravel(d[k]) for k in sorted(d)])


def _rank_gap(sv: np.ndarray, rtol: float) -> tuple[int, float]:
    r = int(np.count_nonzero(sv > rtol * sv[0]))
    lo = sv[r] if r < sv.size else 0.0
    return r, float(np.log10(sv[r - 1] / lo)) if lo > 0 else math.inf


def branch_dimensions(position: str, *, p: float = 0.3, seed: int = 0, n_sequences: int = 24,
                      rtol: float = 1e-9) -> tuple[BranchDimension, ...]:
    r"""Local dimension of the exact-fit set of a three-head student of ``position`` fitted
    to the declared two-head teacher, near a point of each branch (:data:`BRANCHES`; module
    docstring), from the Jacobian ``J: (3 n_sequences, n_params)`` of the outputs on
    ``n_sequences`` sequences ``X ~ Unif[-1, 1]^{3 x 2}``
    (:func:`gated_hmoe.models.heads.sample_inputs` with key ``seed``). ``p``, ``seed``: the
    point on each branch (:func:`branch_student`); ``rtol``: singular values of ``J`` above
    ``rtol`` times the largest count in its rank. One :class:`BranchDimension` per branch of
    :func:`branches`.

    >>> rows = branch_dimensions("MHSA")
    >>> [(r.branch, r.dimension) for r in rows]
    [('generic', 6), ('split', 8), ('dead', 10), ('meet', None)]
    """
    heads.check_layer_position(position)
    n_sequences = checks.positive_int(n_sequences, "n_sequences", minimum=2)
    seed = checks.positive_int(seed, "seed", minimum=0)
    rtol = checks.real(rtol, "rtol", positive=True)
    if rtol >= 1:
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    derivatives = _output_map(position, n_sequences, seed)
    rows = []
    for branch in branches(position):
        st = branch_student(position, branch, p=p, seed=seed)
        theta = _flat(st)
        J, out, target = (np.asarray(v) for v in derivatives(theta))
        residual = float(np.max(np.abs(out - target))) if branch != "generic" else math.nan
        U, sv, Vt = np.linalg.svd(J, full_matrices=True)
        rank, gap = _rank_gap(sv, rtol)
        kernel = J.shape[1] - rank
        T = _tangents(position, branch, st)
        fam = int(np.linalg.matrix_rank(T, tol=1e-8)) if T.size else 0
        certified, dim, margin = None, None, math.nan
        if branch == "meet" or kernel < fam:       # a crossing; or not a family of exact fits
            pass
        elif kernel == fam:
            dim = fam
        else:
            def d2(c, h=1e-4):                         # D2f[., c] by central differences of J
                return (np.asarray(derivatives(theta + h * c)[0])
                        - np.asarray(derivatives(theta - h * c)[0])) / (2 * h)

            margin = _second_order(d2, U[:, :rank], Vt[rank:].T, T, fam)
            certified = margin > SECOND_ORDER_TOL
            dim = fam if certified else None
        rows.append(BranchDimension(position, branch, J.shape[1], rank, gap, kernel, fam,
                                    certified, margin, dim, residual))
    return tuple(rows)


def _second_order(d2, range_basis: np.ndarray, kernel_basis: np.ndarray,
                  tangents: np.ndarray, fam: int) -> float:
    """Certificate of the second-order test: the largest ``lam`` with ``w . q(c) >= lam`` for
    every unit ``c`` and one unit functional ``w`` (so ``||q(c)|| >= lam``): the smallest
    eigenvalue of the form ``w . q`` at the ``w`` that maximises a smoothed smallest
    eigenvalue (BFGS on the sphere; the maximum of the concave ``w -> lambda_min(w . q)``
    over the ball lies on it). Any ``w`` gives a valid bound; a positive one certifies.

    ``q(c) = Pi D2f[c, c]`` for ``c`` in the kernel beyond the family's tangent space
    (orthonormal basis ``c_k``), ``Pi`` removing ``range J`` and the mixed terms
    ``D2f[t_m, c_k]`` that are not zero (above ``1e-6`` of ``max_k ||q(c_k)||``), ``q``
    scaled so that ``max_k ||q(c_k)|| = 1``; ``d2(c)`` returns ``D2f[., c]: (rows, n)``.
    """
    Q = np.linalg.svd(kernel_basis.T @ tangents.T, full_matrices=True)[0]
    T, C = kernel_basis @ Q[:, :fam], kernel_basis @ Q[:, fam:]
    m = C.shape[1]
    D = np.stack([d2(C[:, k]) for k in range(m)])                  # D2f[., c_k]: (m, rows, n)
    A = np.einsum("lri,ik->klr", D, C)                             # D2f[c_k, c_l]
    B = np.einsum("kri,it->tkr", D, T).reshape(-1, D.shape[1])     # D2f[t_m, c_k]
    A = A - (A @ range_basis) @ range_basis.T
    B = B - (B @ range_basis) @ range_basis.T
    scale = max(np.linalg.norm(A[k, k]) for k in range(m))
    if scale == 0:
        return 0.0
    if B.size:
        ub, sb, _ = np.linalg.svd(B.T, full_matrices=False)
        ub = ub[:, sb > 1e-6 * scale]
        A = A - (A @ ub) @ ub.T
    A = (A + A.transpose(1, 0, 2)) / (2 * scale)
    _, sv, vt = np.linalg.svd(A.reshape(m * m, -1), full_matrices=False)
    S = np.einsum("kr,ijr->kij", vt[sv > 1e-12 * sv[0]], A)         # forms in an orthonormal basis
    w = np.einsum("kii->k", S)                                     # start: the trace functional
    for beta in (30.0, 300.0, 3000.0):         # smooth -log tr exp(-beta M)/beta, sharpened
        w = optimize.minimize(_soft_min, w, args=(S, beta), jac=True, method="BFGS").x
    w = w / np.linalg.norm(w)
    return float(np.linalg.eigvalsh(np.einsum("k,kij->ij", w, S))[0])


def _soft_min(z: np.ndarray, S: np.ndarray, beta: float) -> tuple[float, np.ndarray]:
    """Minus the soft minimum eigenvalue of ``sum_k w_k S_k`` at ``w = z/||z||``, and its
    gradient in ``z``."""
    n = np.linalg.norm(z)
    w = z / n
    ev, vec = np.linalg.eigh(np.einsum("k,kij->ij", w, S))
    e = np.exp(-beta * (ev - ev[0]))
    weights = e / e.sum()
    value = ev[0] - math.log(e.sum()) / beta
    grad_w = np.einsum("i,kab,ai,bi->k", weights, S, vec, vec)
    return -value, -(grad_w - w * (w @ grad_w)) / n


__all__ = ["AttentionFamily", "BRANCHES", "BranchDimension", "POSITION_PARAMS", "ROUTER",
           "RankRow", "TERM_VALUES", "attention_family", "attention_rank", "branch_dimensions",
           "branch_student", "branches", "column_sum_symmetric", "query_key_grid", "rank_table"]
