r"""Sympy versions of the attention ↔ HMoE identities, with every weight a symbol.

Two independent constructions of the same layer output:

- :func:`attention_matrix` -- the *matrix* form ``softmax(Q_h K_h^T / sqrt(d_k)) V_h W_O^h``
  with the gate applied to the tensor it gates (2505.06708);
- :func:`hmoe_entry` -- the *mixture* form, one entry ``O_im`` written as the sum over
  heads, key tokens and value channels of SPEC §2's gate table, with the score of every
  pair written as the quadratic form ``vec(X)^T M^h_ij vec(X)``.

:func:`vanishes` decides ``simplify(lhs - rhs) == 0``. The chapters assert it for every
row of the gate table; the tests also feed it a wrong identity to show it can fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import sympy as sp

from gated_hmoe import checks
from gated_hmoe.models import attention
from gated_hmoe.models.attention import ACTIVATIONS, GATES, GRANULARITIES, AttentionParams


def sigmoid(z: sp.Expr) -> sp.Expr:
    """Logistic sigmoid ``1 / (1 + exp(-z))``."""
    return 1 / (1 + sp.exp(-z))


def silu(z: sp.Expr) -> sp.Expr:
    """``SiLU(z) = z * sigmoid(z)``."""
    return z * sigmoid(z)


def activation(name: str) -> Callable[[sp.Expr], sp.Expr]:
    """The symbolic gate nonlinearity for ``"sigmoid"`` or ``"silu"``."""
    checks.choice(name, "activation", ACTIVATIONS)
    return sigmoid if name == "sigmoid" else silu


@dataclasses.dataclass(frozen=True)
class SymbolicLayer:
    """An attention layer whose input and weights are sympy symbols.

    ``x: N x d``; per head ``h``: ``wq[h], wk[h]: d x d_k``, ``wv[h]: d x d_v``,
    ``wo[h]: d_v x d_out``; ``wg``: per-head ``d x d_v`` (G1/G2 elementwise), ``d x 1``
    (G1/G2 headwise), ``d x d_k`` (G3/G4), or one ``d x d_out`` matrix (G5).
    """

    x: sp.Matrix
    wq: tuple[sp.Matrix, ...]
    wk: tuple[sp.Matrix, ...]
    wv: tuple[sp.Matrix, ...]
    wo: tuple[sp.Matrix, ...]
    wg: tuple[sp.Matrix, ...] | sp.Matrix | None
    gate: str | None
    granularity: str
    activation: str

    @property
    def heads(self) -> int:
        return len(self.wq)

    @property
    def n_tokens(self) -> int:
        return self.x.shape[0]

    def symbols(self) -> list[sp.Symbol]:
        """Every symbol of the layer, in a fixed order (input first, then weights)."""
        mats = [self.x, *self.wq, *self.wk, *self.wv, *self.wo]
        if isinstance(self.wg, sp.Matrix):
            mats.append(self.wg)
        elif self.wg is not None:
            mats.extend(self.wg)
        return [s for m in mats for s in m]


def symbolic_layer(*, n_tokens: int = 2, heads: int = 2, d: int = 2, d_k: int = 2,
                   d_v: int = 2, d_out: int = 1, gate: str | None = None,
                   granularity: str = "elementwise",
                   activation: str = "sigmoid") -> SymbolicLayer:
    """A layer with all-symbol input and weights (real symbols named like ``wq1_ab``)."""
    n_tokens, heads = checks.positive_int(n_tokens, "n_tokens"), checks.positive_int(heads, "heads")
    d, d_k = checks.positive_int(d, "d"), checks.positive_int(d_k, "d_k")
    d_v, d_out = checks.positive_int(d_v, "d_v"), checks.positive_int(d_out, "d_out")
    checks.choice(gate, "gate", GATES)
    checks.choice(granularity, "granularity", GRANULARITIES)
    checks.choice(activation, "activation", ACTIVATIONS)
    if granularity == "headwise" and gate not in ("G1", "G2"):
        raise ValueError(f"granularity='headwise' is defined for gate 'G1' or 'G2' only, got gate={gate!r}")

    def mat(name: str, rows: int, cols: int) -> sp.Matrix:
        return sp.Matrix(rows, cols, lambda a, b: sp.Symbol(f"{name}_{a + 1}{b + 1}", real=True))

    per_head = lambda name, rows, cols: tuple(mat(f"{name}{h + 1}", rows, cols) for h in range(heads))  # noqa: E731
    wg: tuple[sp.Matrix, ...] | sp.Matrix | None = None
    if gate in ("G1", "G2"):
        wg = per_head("wg", d, d_v if granularity == "elementwise" else 1)
    elif gate in ("G3", "G4"):
        wg = per_head("wg", d, d_k)
    elif gate == "G5":
        wg = mat("wg", d, d_out)
    return SymbolicLayer(x=mat("x", n_tokens, d), wq=per_head("wq", d, d_k),
                         wk=per_head("wk", d, d_k), wv=per_head("wv", d, d_v),
                         wo=per_head("wo", d_v, d_out), wg=wg, gate=gate,
                         granularity=granularity, activation=activation)


def _softmax_rows(scores: sp.Matrix) -> sp.Matrix:
    e = scores.applyfunc(sp.exp)
    return sp.Matrix(e.shape[0], e.shape[1], lambda i, j: e[i, j] / sum(e.row(i)))


def _gate_matrix(layer: SymbolicLayer, w: sp.Matrix) -> sp.Matrix:
    """``act(X W)`` elementwise (``N x cols``)."""
    act = activation(layer.activation)
    return (layer.x * w).applyfunc(act)


def attention_matrix(layer: SymbolicLayer) -> sp.Matrix:
    """The layer output ``O`` (``N x d_out``) in matrix form, gate applied to its tensor."""
    out = sp.zeros(layer.n_tokens, layer.wo[0].shape[1])
    gate = layer.gate
    for h in range(layer.heads):
        q, k, v = layer.x * layer.wq[h], layer.x * layer.wk[h], layer.x * layer.wv[h]
        g = None if gate in (None, "G5") else _gate_matrix(layer, layer.wg[h])
        if g is not None and g.shape[1] == 1:          # headwise: one scalar per token
            g = g * sp.ones(1, v.shape[1])
        if gate == "G2":
            v = v.multiply_elementwise(g)
        elif gate == "G3":
            k = k.multiply_elementwise(g)
        elif gate == "G4":
            q = q.multiply_elementwise(g)
        head = _softmax_rows(q * k.T / sp.sqrt(q.shape[1])) * v
        if gate == "G1":
            head = head.multiply_elementwise(g)
        out += head * layer.wo[h]
    if gate == "G5":
        out = out.multiply_elementwise(_gate_matrix(layer, layer.wg))
    return out


def stacked_input(layer: SymbolicLayer) -> sp.Matrix:
    """``vec(X)``: the ``N d`` column of all tokens, token by token."""
    return layer.x.reshape(layer.x.shape[0] * layer.x.shape[1], 1)


def _indices(layer: SymbolicLayer, **idx: int) -> None:
    """Each index must be an integer in its range: ``h`` heads, ``i``/``j`` tokens, ``l`` value
    channels, ``m`` output channels (no negative indices: they would wrap silently)."""
    size = {"h": layer.heads, "i": layer.n_tokens, "j": layer.n_tokens,
            "l": layer.wv[0].shape[1], "m": layer.wo[0].shape[1]}
    for name, v in idx.items():
        v = checks.positive_int(v, name, minimum=0)
        if v >= size[name]:
            raise ValueError(f"{name} must be in [0, {size[name]}), got {v}")


def score_matrix(layer: SymbolicLayer, h: int, i: int, j: int) -> sp.Matrix:
    """``M^h_ij`` (``Nd x Nd``) with ``s^h_ij = vec(X)^T M^h_ij vec(X)``: block ``(i, j)``
    holds ``W_Q^h W_K^{h T} / sqrt(d_k)``, every other block is zero."""
    _indices(layer, h=h, i=i, j=j)
    n, d = layer.x.shape
    core = layer.wq[h] * layer.wk[h].T / sp.sqrt(layer.wq[h].shape[1])
    m = sp.zeros(n * d, n * d)
    m[i * d:(i + 1) * d, j * d:(j + 1) * d] = core
    return m


def _row(layer: SymbolicLayer, t: int) -> sp.Matrix:
    return layer.x.row(t).T                           # x_t as a d x 1 column


def _score(layer: SymbolicLayer, h: int, i: int, j: int) -> sp.Expr:
    """``s^h_ij``: a quadratic form in ``vec(X)`` (MHSA, G1, G2, G5) or with gated queries
    (G4) / keys (G3): ``sum_c q_ic k_jc / sqrt(d_k)``."""
    act = activation(layer.activation)
    if layer.gate not in ("G3", "G4"):
        xbar = stacked_input(layer)
        return (xbar.T * score_matrix(layer, h, i, j) * xbar)[0, 0]
    d_k = layer.wq[h].shape[1]
    total = sp.Integer(0)
    for c in range(d_k):
        q = (_row(layer, i).T * layer.wq[h][:, c])[0, 0]
        k = (_row(layer, j).T * layer.wk[h][:, c])[0, 0]
        if layer.gate == "G4":
            q = q * act((_row(layer, i).T * layer.wg[h][:, c])[0, 0])
        else:
            k = k * act((_row(layer, j).T * layer.wg[h][:, c])[0, 0])
        total += q * k
    return total / sp.sqrt(d_k)


def router_weight(layer: SymbolicLayer, h: int, i: int, j: int) -> sp.Expr:
    """Level-2 router ``pi^h_ij = exp(s^h_ij) / sum_j' exp(s^h_ij')``."""
    _indices(layer, h=h, i=i, j=j)
    scores = [sp.expand(_score(layer, h, i, jj)) for jj in range(layer.n_tokens)]
    return sp.exp(scores[j]) / sum(sp.exp(s) for s in scores)


def leaf_expert(layer: SymbolicLayer, h: int, j: int, l: int) -> sp.Expr:
    """Leaf expert of head ``h``, key token ``j``, value channel ``l``: ``(w^h_{V,l})^T x_j``,
    times ``act(x_j^T w^h_{theta,l})`` under G2 (elementwise) or ``act(x_j^T w^h_theta)`` (headwise)."""
    _indices(layer, h=h, j=j, l=l)
    act = activation(layer.activation)
    e = (_row(layer, j).T * layer.wv[h][:, l])[0, 0]
    if layer.gate == "G2":
        col = l if layer.granularity == "elementwise" else 0
        e = e * act((_row(layer, j).T * layer.wg[h][:, col])[0, 0])
    return e


def channel_weight(layer: SymbolicLayer, h: int, i: int, l: int, m: int) -> sp.Expr:
    """Level-3 router ``(W_O^h)_lm``, times ``act(x_i^T w^h_{theta,l})`` under G1 elementwise."""
    _indices(layer, h=h, i=i, l=l, m=m)
    w = layer.wo[h][l, m]
    if layer.gate == "G1" and layer.granularity == "elementwise":
        w = w * activation(layer.activation)((_row(layer, i).T * layer.wg[h][:, l])[0, 0])
    return w


def head_weight(layer: SymbolicLayer, h: int, i: int, m: int) -> sp.Expr:
    """Level-1 router: 1 for MHSA; ``act(x_i^T w^h_theta)`` for G1 headwise;
    ``act(x_i^T w_{theta,m})`` for G5 (the same for every head)."""
    _indices(layer, h=h, i=i, m=m)
    act = activation(layer.activation)
    if layer.gate == "G1" and layer.granularity == "headwise":
        return act((_row(layer, i).T * layer.wg[h][:, 0])[0, 0])
    if layer.gate == "G5":
        return act((_row(layer, i).T * layer.wg[:, m])[0, 0])
    return sp.Integer(1)


def hmoe_entry(layer: SymbolicLayer, i: int, m: int) -> sp.Expr:
    """``O_im = sum_h g1 sum_j pi^h_ij sum_l g3 E_hjl``: SPEC §2's gate table, entry by entry."""
    _indices(layer, i=i, m=m)
    d_v = layer.wv[0].shape[1]
    return sum(
        head_weight(layer, h, i, m) * sum(
            router_weight(layer, h, i, j) * sum(
                channel_weight(layer, h, i, l, m) * leaf_expert(layer, h, j, l)
                for l in range(d_v))
            for j in range(layer.n_tokens))
        for h in range(layer.heads))


def collapsed_entry(layer: SymbolicLayer, i: int, m: int) -> sp.Expr:
    """Level 3 collapsed: ``sum_h g1 sum_j pi^h_ij (c^h_m)^T x_j`` with ``c^h_m = W_V^h W_O^h e_m``."""
    _indices(layer, i=i, m=m)
    return sum(
        head_weight(layer, h, i, m) * sum(
            router_weight(layer, h, i, j) * ((_row(layer, j).T * layer.wv[h] * layer.wo[h][:, m])[0, 0])
            for j in range(layer.n_tokens))
        for h in range(layer.heads))


def _numerically_nonzero(expr: sp.Expr, *, trials: int = 3, seed: int = 0) -> bool:
    """``True`` if ``expr`` is clearly non-zero at a random point (a disproof of ``expr == 0``).

    The top-level terms of ``expr`` are evaluated in float64 at points drawn from
    ``[-1, 1]``; "clearly" means ``|sum| > 1e-8 * sum(|term|)``, far above rounding error.
    """
    free = sorted(expr.free_symbols, key=str)
    terms = list(sp.Add.make_args(expr))
    fn = sp.lambdify(free, terms, modules="numpy")
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        with np.errstate(all="ignore"):
            values = np.asarray(fn(*rng.uniform(-1, 1, len(free))), dtype=complex)
        if not np.all(np.isfinite(values)):
            continue
        if abs(values.sum()) > 1e-8 * max(np.abs(values).sum(), 1e-300):
            return True
    return False


def vanishes(expr: sp.Expr) -> bool:
    """``True`` iff ``simplify(expr) == 0``.

    A random-point evaluation first rules out expressions that are visibly non-zero (a
    valid disproof); the proof of zero is symbolic: ``expand``, then ``cancel``, then
    ``simplify``.
    """
    expr = sp.sympify(expr)
    if _numerically_nonzero(expr):
        return False
    if sp.expand(expr) == 0:
        return True
    if sp.cancel(sp.together(expr)) == 0:
        return True
    return sp.simplify(expr) == 0


def identity_holds(layer: SymbolicLayer, *, entry: Callable[[SymbolicLayer, int, int], sp.Expr] = hmoe_entry) -> bool:
    """Check ``attention_matrix(layer)[i, m] == entry(layer, i, m)`` for every ``i, m``."""
    lhs = attention_matrix(layer)
    return all(vanishes(lhs[i, m] - entry(layer, i, m))
               for i in range(lhs.shape[0]) for m in range(lhs.shape[1]))


def substitutions(layer: SymbolicLayer, params: AttentionParams, x) -> dict[sp.Symbol, float]:
    """Map every symbol of ``layer`` to the matching number of ``params`` and ``x: (N, d)``.
    ``params`` must match the layer: gate, granularity, activation and every weight shape."""
    x = checks.finite_array(x, "x", shape=layer.x.shape)
    attention.validate(params, x)
    if (params.gate, params.granularity, params.activation) != (
            layer.gate, layer.granularity, layer.activation):
        raise ValueError(f"params (gate={params.gate!r}, granularity={params.granularity!r}, "
                         f"activation={params.activation!r}) do not match layer (gate={layer.gate!r}, "
                         f"granularity={layer.granularity!r}, activation={layer.activation!r})")
    for name in ("wq", "wk", "wv", "wo"):
        want = (layer.heads, *getattr(layer, name)[0].shape)
        if np.shape(getattr(params, name)) != want:
            raise ValueError(f"params.{name} must have shape {want} to match the layer, got "
                             f"{np.shape(getattr(params, name))}")
    subs: dict[sp.Symbol, float] = {}

    def put(mat: sp.Matrix, values) -> None:
        values = np.asarray(values, dtype=float).reshape(mat.shape)
        for a in range(mat.shape[0]):
            for b in range(mat.shape[1]):
                subs[mat[a, b]] = float(values[a, b])

    put(layer.x, x)
    for h in range(layer.heads):
        put(layer.wq[h], params.wq[h])
        put(layer.wk[h], params.wk[h])
        put(layer.wv[h], params.wv[h])
        put(layer.wo[h], params.wo[h])
        if layer.gate in ("G1", "G2", "G3", "G4"):
            put(layer.wg[h], params.wg[h])
    if layer.gate == "G5":
        put(layer.wg, params.wg)
    return subs


def evaluate(layer: SymbolicLayer, expr: sp.Matrix | sp.Expr, params: AttentionParams, x) -> np.ndarray:
    """Evaluate a symbolic expression (or matrix) of ``layer`` at numeric weights, in float64."""
    subs = substitutions(layer, params, x)
    syms = list(subs)
    fn = sp.lambdify(syms, expr, modules="numpy")
    return np.asarray(fn(*[subs[s] for s in syms]), dtype=float)
