r"""Fitted attention layers (experiment E2): teacher/student least squares and HMoE-leaf rates.

A *teacher* attention layer with ``H*`` heads generates ``Y = f_teacher(X) + N(0, nu)`` on
``X ~ Unif[-1, 1]^{N x d}`` (every one of the ``N x d_out`` outputs observed); a *student*
of the same class with ``H > H*`` heads is fitted by float64 least squares (a batched
Levenberg-Marquardt loop, ``jax.vmap`` over replicates and noise levels). The fitted heads
are read as atoms of the hierarchical mixture of experts of :mod:`gated_hmoe.hmoe`, matched
to the teacher's heads by Voronoi cells, and their errors are swept against the effective
sample size ``n / nu`` (the noise-sweep protocol of SPEC §5).

Layer classes (``POSITIONS``), all with ``d_k = d``, ``d_v = d_out = 1`` and the query map
pinned at ``W_Q = I`` (it removes the ``GL(d)`` redundancy of ``W_Q W_K^T``; for G4 this
is a restriction of the class, stated in the book):

- ``"MHSA"``: ``O_i = sum_h sum_j pi^h_ij (w_V^h)^T x_j`` -- linear leaves;
- ``"G1"``, ``"G2"``: the literal gate of arXiv 2505.06708 (sigmoid, elementwise), leaves
  ``sigma(x_i^T t_h) (w_V^h)^T x_j`` (G1) or ``sigma(x_j^T t_h) (w_V^h)^T x_j`` (G2):
  GLU type, linear in the value weights;
- ``"G3"``, ``"G4"``, ``"G5"``: gated keys, queries, output; leaves stay linear;
- ``"ridge"``: a value activation ("active attention"), leaves
  ``w_O^h SiLU((w_V^h)^T x_j + b_h)`` -- the ridge form of G1/G2 (SPEC §4), built here from
  :func:`gated_hmoe.attention.attention_weights_unchecked` and a ridge value map.

``W_O^h`` is pinned at 1 where it is redundant with ``w_V^h`` (every class but
``"ridge"``, where it is the head's mass).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gated_hmoe import cache, checks, rates
from gated_hmoe.attention import AttentionParams, attention_unchecked, attention_weights_unchecked

Array = jax.Array

POSITIONS: tuple[str, ...] = ("MHSA", "G1", "G2", "ridge", "G3", "G4", "G5")
#: Leaf class of each position (SPEC §4).
LEAF_CLASS: dict[str, str] = {"MHSA": "linear", "G1": "GLU", "G2": "GLU", "ridge": "ridge (SiLU)",
                              "G3": "linear", "G4": "linear", "G5": "linear"}
#: Lower end of the slope fit against ``n / nu`` (as for E1, SPEC §5).
FIT_MIN: float = 5.6e10
METRICS: tuple[str, ...] = ("worst_overfitted", "V")

# Fixed teacher heads (declared values; head 0 is the one the student splits).
_TEACHER = [
    {"wk": [[1.6, -0.9], [1.1, 1.9]], "wv": [1.0, -0.8], "b": 0.3, "wo": 1.5,
     "t": [1.2, -0.7], "wg": [[1.0, -0.5], [0.4, 1.1]]},
    {"wk": [[-1.2, 0.7], [0.5, -1.5]], "wv": [-0.6, 1.1], "b": -0.4, "wo": -1.2,
     "t": [-0.9, 1.0], "wg": [[-0.6, 0.8], [1.0, 0.3]]},
]
_TEACHER_G5 = [0.8, -1.0]


# ------------------------------------------------------------------ the layer


def _check_position(position) -> str:
    return checks.choice(position, "position", POSITIONS)


def teacher_params(position: str, heads: int = 1) -> dict:
    """Weights of the teacher layer: a dict of float64 arrays (``heads`` in 1..2).

    Keys: ``wk (H, d, d)``, ``wv (H, d)``, and per position ``t (H, d)`` (G1/G2 gate),
    ``wg (H, d, d)`` (G3/G4), ``g5 (d,)`` (G5), ``b (H,)`` and ``wo (H,)`` (ridge).
    """
    _check_position(position)
    heads = checks.positive_int(heads, "heads")
    if heads > len(_TEACHER):
        raise ValueError(f"heads must be <= {len(_TEACHER)} for the declared teacher, got {heads}")
    hs = _TEACHER[:heads]
    p = {"wk": np.array([h["wk"] for h in hs]), "wv": np.array([h["wv"] for h in hs])}
    if position in ("G1", "G2"):
        p["t"] = np.array([h["t"] for h in hs])
    if position in ("G3", "G4"):
        p["wg"] = np.array([h["wg"] for h in hs])
    if position == "G5":
        p["g5"] = np.array(_TEACHER_G5)
    if position == "ridge":
        p["b"] = np.array([h["b"] for h in hs])
        p["wo"] = np.array([h["wo"] for h in hs])
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def to_attention_params(p: dict, position: str) -> AttentionParams:
    """The :class:`~gated_hmoe.attention.AttentionParams` of a non-ridge layer (``W_Q = I``, ``W_O = 1``)."""
    wk = jnp.asarray(p["wk"])
    H, d, _ = wk.shape
    wq = jnp.broadcast_to(jnp.eye(d, dtype=wk.dtype), (H, d, d))
    wo = jnp.ones((H, 1, 1), wk.dtype)
    wv = jnp.asarray(p["wv"])[..., None]
    gate, wg = None, None
    if position in ("G1", "G2"):
        gate, wg = position, jnp.asarray(p["t"])[..., None]
    elif position in ("G3", "G4"):
        gate, wg = position, jnp.asarray(p["wg"])
    elif position == "G5":
        gate, wg = "G5", jnp.asarray(p["g5"])[:, None]
    return AttentionParams(wq=wq, wk=wk, wv=wv, wo=wo, wg=wg, gate=gate)


def layer_output(p: dict, x: Array, position: str) -> Array:
    """Output ``(N, 1)`` of the layer with weights ``p`` on one sequence ``x: (N, d)``. Traceable."""
    if position != "ridge":
        return attention_unchecked(to_attention_params(p, position), x, None)
    plain = to_attention_params({"wk": p["wk"], "wv": p["wv"]}, "MHSA")
    pi = attention_weights_unchecked(plain, x, None)                         # (H, N, N)
    leaf = jax.nn.silu(jnp.einsum("nd,hd->hn", x, p["wv"]) + p["b"][:, None])  # (H, N)
    return jnp.einsum("hij,hj,h->i", pi, leaf, p["wo"])[:, None]


def batched_output(p: dict, x: Array, position: str) -> Array:
    """``layer_output`` over a leading sample axis: ``x: (n, N, d) -> (n, N, 1)``."""
    return jax.vmap(lambda xx: layer_output(p, xx, position))(x)


# ------------------------------------------------------------------ exact-fit valley


def valley_student(position: str, p: float, *, u=None) -> dict:
    """Teacher head 0 duplicated, value maps split as ``p w_V`` and ``(1-p) w_V``.

    ``u`` (optional, ``(d,)``): add ``+u`` to the first copy's and ``-u`` to the second
    copy's value map (a valley direction that is not a mere rescaling). Every other weight
    is copied. For linear and GLU leaves this student reproduces the teacher exactly; for
    the ridge form it does not (its value map sits inside the activation).
    """
    _check_position(position)
    t = teacher_params(position, 1)
    s = {k: (np.concatenate([v, v]) if k != "g5" else v.copy()) for k, v in t.items()}
    u = np.zeros(t["wv"].shape[1]) if u is None else np.asarray(u, float)
    s["wv"] = np.stack([p * t["wv"][0] + u, (1 - p) * t["wv"][0] - u])
    return s


def max_output_gap(pa: dict, pb: dict, position: str, x) -> float:
    """``max |f_a(X) - f_b(X)|`` over the sequences ``x: (n, N, d)``."""
    xa = jnp.asarray(x)
    return float(jnp.max(jnp.abs(batched_output(pa, xa, position) - batched_output(pb, xa, position))))


# ------------------------------------------------------------------ HMoE atoms and Voronoi matching


def head_atoms(p: dict, position: str) -> dict:
    """Each head read as an HMoE atom (numpy; ``H`` heads).

    - ``mass (H,)``: the head's weight -- ``w_O^h`` (ridge) or ``||w_V^h||`` (linear, GLU);
    - ``router (H, r)``: level-2 score weights ``vec(W_K^h)``, plus the gate weights of
      G3/G4 (scores) and G1/G2 (``t_h``, the leaf's gate), averaged with weights ``mass``
      in a cell;
    - ``leaf (H, l)``: the leaf's shape -- ``w_V^h / ||w_V^h||`` (linear, GLU) or
      ``(w_V^h, b_h)`` (ridge);
    - ``summed (H, s)``: the part that adds up over a cell -- ``w_V^h`` (linear, GLU) or
      ``w_O^h (1, w_V^h, b_h)`` (ridge);
    - ``atom (H, r + l)``: ``(router, leaf)``, the point matched by Voronoi cells.
    """
    wk = np.asarray(p["wk"])
    H = wk.shape[0]
    wv = np.asarray(p["wv"])
    router = [wk.reshape(H, -1)]
    if position in ("G1", "G2"):
        router.append(np.asarray(p["t"]))
    if position in ("G3", "G4"):
        router.append(np.asarray(p["wg"]).reshape(H, -1))
    router = np.concatenate(router, 1)
    if position == "ridge":
        wo, b = np.asarray(p["wo"]), np.asarray(p["b"])
        mass = wo
        leaf = np.concatenate([wv, b[:, None]], 1)
        summed = wo[:, None] * np.concatenate([np.ones((H, 1)), leaf], 1)
    else:
        mass = np.linalg.norm(wv, axis=1)
        leaf = wv / np.maximum(mass, 1e-300)[:, None]
        summed = wv
    return {"mass": mass, "router": router, "leaf": leaf, "summed": summed,
            "atom": np.concatenate([router, leaf], 1)}


def leaf_losses(p_fit: dict, p_true: dict, position: str) -> dict:
    """Voronoi-matched errors of the fitted heads against the teacher's.

    Cells ``V_j = {h : ||omega_h - omega*_j|| minimal}`` on atoms ``omega = (router, leaf)``.
    Returns ``atom_error`` (per fitted head, ``||omega_h - omega*_j||``), ``cells``,
    ``worst_overfitted`` (largest atom error in cells with more than one head; ``nan`` if
    none), ``worst_singleton`` and ``V`` (sum over over-fitted cells of
    ``||sum_h summed_h - summed*_j|| + ||mass-weighted mean router - router*_j||``: the
    part that a valley leaves identified).
    """
    A, T = head_atoms(p_fit, position), head_atoms(p_true, position)
    dist = np.linalg.norm(A["atom"][:, None, :] - T["atom"][None, :, :], axis=-1)
    cell = np.argmin(dist, axis=1)
    err = dist[np.arange(len(cell)), cell]
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


# ------------------------------------------------------------------ initialisation


def split_init(position: str, *, teacher_heads: int, student_heads: int, spread: float,
               rng: np.random.Generator) -> dict:
    """Declared split initialisation (never at the truth).

    Teacher head 0 becomes ``m = H - H* + 1`` student heads: router and leaf shape at the
    teacher's plus ``spread * z_c`` (centred Gaussian offsets, ``+-z`` for ``m = 2``), the
    head's weight shared equally (``w_V / m`` for linear and GLU leaves, ``w_O / m`` for the
    ridge form). Other teacher heads, and G5's shared gate, start at the teacher's plus
    ``N(0, spread^2)`` noise.
    """
    t = teacher_params(position, teacher_heads)
    m = student_heads - teacher_heads + 1
    order = [0] * m + list(range(1, teacher_heads))
    s = {k: (v[order].copy() if k != "g5" else v.copy()) for k, v in t.items()}
    for k in s:
        shape = s[k].shape
        if k == "g5":
            s[k] = s[k] + spread * rng.standard_normal(shape)
            continue
        noise = spread * rng.standard_normal(shape)
        z = rng.standard_normal((m,) + shape[1:])
        z = (z - z.mean(0)) * math.sqrt(m / (m - 1)) if m > 1 else z
        noise[:m] = spread * z
        s[k] = s[k] + noise
    share = "wo" if position == "ridge" else "wv"
    if position != "ridge":
        # share the weight exactly, then perturb the direction: w_V/m + spread * z
        base = t["wv"][0] / m
        s["wv"][:m] = base + (s["wv"][:m] - t["wv"][0])
    else:
        s[share][:m] = t[share][0] / m
    return s


# ------------------------------------------------------------------ batched Levenberg-Marquardt


def _lm_single(theta0, x, y, unravel, position, max_iter, rtol):
    """One LM fit of ``sum (y - f_theta(x))^2``; Marquardt scaling, Nielsen damping."""
    n_obs = y.size

    def resid(theta):
        return (y - batched_output(unravel(theta), x, position)).reshape(-1)

    def evaluate(theta):
        r = resid(theta)
        J = -jax.jacfwd(resid)(theta)
        return r @ r, J.T @ r, J.T @ J

    def decrement(g, Hm):
        scale = jnp.maximum(jnp.max(jnp.diag(Hm)), 1e-300)
        A = Hm + 1e-13 * scale * jnp.eye(Hm.shape[0], dtype=Hm.dtype)
        c = jax.scipy.linalg.cho_factor(A)
        return jnp.maximum(g @ jax.scipy.linalg.cho_solve(c, g), 0.0)

    def converged(ssr, g, Hm):
        return (decrement(g, Hm) <= rtol * ssr / n_obs) | (ssr <= 1e-26 * n_obs)

    ssr, g, Hm = evaluate(theta0)
    dt = theta0.dtype
    init = (theta0, ssr, g, Hm, jnp.diag(Hm), jnp.asarray(1e-3, dt), jnp.asarray(2.0, dt),
            jnp.asarray(0), converged(ssr, g, Hm), jnp.asarray(False))

    def cond(s):
        return (~s[8]) & (~s[9]) & (s[7] < max_iter)

    def body(s):
        theta, ssr, g, Hm, dg, lam, nu, it, _, _ = s
        A = Hm + lam * jnp.diag(jnp.maximum(dg, 1e-300))
        delta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), g)
        tn = theta + delta
        ssr_n, g_n, H_n = evaluate(tn)
        pred = 2.0 * delta @ g - delta @ Hm @ delta
        rho = (ssr - ssr_n) / jnp.where(pred > 0, pred, 1e-300)
        ok = jnp.isfinite(ssr_n) & (ssr_n < ssr) & jnp.all(jnp.isfinite(delta))
        theta = jnp.where(ok, tn, theta)
        g = jnp.where(ok, g_n, g)
        Hm = jnp.where(ok, H_n, Hm)
        ssr = jnp.where(ok, ssr_n, ssr)
        dg = jnp.where(ok, jnp.maximum(dg, jnp.diag(H_n)), dg)
        lam = jnp.where(ok, lam * jnp.maximum(1 / 3, 1 - (2 * rho - 1) ** 3), lam * nu)
        nu = jnp.where(ok, 2.0, 2.0 * nu)
        return (theta, ssr, g, Hm, dg, lam, nu, it + 1, converged(ssr, g, Hm), lam > 1e16)

    out = jax.lax.while_loop(cond, body, init)
    return {"theta": out[0], "ssr": out[1], "iterations": out[7],
            "converged": out[8] & jnp.isfinite(out[1])}


def fit_students(x, y, theta0, *, unravel, position: str, max_iter: int = 400,
                 rtol: float = 1e-3) -> dict:
    """Batched least-squares fits: ``x: (B, n, N, d)``, ``y: (B, n, N, 1)``, ``theta0: (B, p)``.

    Converged: the Gauss-Newton decrement is below ``rtol`` times one unit of the estimated
    noise variance (or the residual is at round-off). Returns numpy arrays ``theta (B, p)``,
    ``ssr``, ``iterations``, ``converged``.
    """
    _check_position(position)
    fn = jax.jit(jax.vmap(lambda t, xx, yy: _lm_single(t, xx, yy, unravel, position,
                                                       max_iter, rtol)))
    out = fn(jnp.asarray(theta0), jnp.asarray(x), jnp.asarray(y))
    return {k: np.asarray(v) for k, v in out.items()}


# ------------------------------------------------------------------ the noise sweep


@dataclasses.dataclass(frozen=True)
class FitSweepConfig:
    """Everything that determines E2's numbers for one gate position (hashed for the cache).

    Noise sweep: ``n`` fixed, ``nu = n / x`` for effective sample sizes
    ``x = logspace(log10_x_min, log10_x_max, points)``; ``replicates`` data sets (the same
    ``X`` and standardised noise at every ``nu``), split initialisation with ``spread``.
    """

    position: str = "MHSA"
    teacher_heads: int = 1
    student_heads: int = 2
    n: int = 1000
    log10_x_min: float = 7.0
    log10_x_max: float = 17.0
    points: int = 11
    replicates: int = 12
    spread: float = 0.1
    seed: int = 0
    max_iter: int = 400
    rtol: float = 1e-3

    def validate(self) -> "FitSweepConfig":
        _check_position(self.position)
        th = checks.positive_int(self.teacher_heads, "teacher_heads")
        if th > len(_TEACHER):
            raise ValueError(f"teacher_heads must be <= {len(_TEACHER)}, got {th}")
        sh = checks.positive_int(self.student_heads, "student_heads")
        if sh <= th:
            raise ValueError(f"student_heads must exceed teacher_heads (a surplus head), got {sh} <= {th}")
        for name in ("n", "points", "replicates", "max_iter"):
            checks.positive_int(getattr(self, name), name)
        checks.positive_int(self.points, "points", minimum=2)
        checks.positive_int(self.seed, "seed", minimum=0)
        if not (isinstance(self.spread, (int, float)) and math.isfinite(self.spread) and self.spread > 0):
            raise ValueError(f"spread must be a finite number > 0, got {self.spread!r}")
        if not self.log10_x_min < self.log10_x_max:
            raise ValueError("log10_x_min must be < log10_x_max")
        return self

    @property
    def x(self) -> np.ndarray:
        """Effective sample sizes ``n / nu``."""
        return np.logspace(self.log10_x_min, self.log10_x_max, self.points)

    @property
    def noise(self) -> np.ndarray:
        return self.n / self.x

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_cache_root = cache.cache_root
_atomic_write_json = cache.write_json_atomic


def sample(key, *, n: int, n_tokens: int = 2, d: int = 2):
    """``X ~ Unif[-1,1]^{n x N x d}`` and standard normal noise ``(n, N, 1)``."""
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (n, n_tokens, d), jnp.float64, -1.0, 1.0)
    return x, jax.random.normal(ke, (n, n_tokens, 1), jnp.float64)


def _compute(cfg: FitSweepConfig) -> dict:
    t_start = time.perf_counter()
    pos, R = cfg.position, cfg.replicates
    truth = teacher_params(pos, cfg.teacher_heads)
    rng = np.random.default_rng([cfg.seed, 7])
    inits = [split_init(pos, teacher_heads=cfg.teacher_heads, student_heads=cfg.student_heads,
                        spread=cfg.spread, rng=rng) for _ in range(R)]
    _, unravel = ravel_pytree({k: jnp.asarray(v) for k, v in inits[0].items()})
    th0 = np.stack([np.asarray(ravel_pytree({k: jnp.asarray(v) for k, v in s.items()})[0])
                    for s in inits])
    keys = jax.random.split(jax.random.key(cfg.seed), R)
    xs, eps = jax.vmap(lambda k: sample(k, n=cfg.n))(keys)                  # (R, n, 2, 2)
    f = jax.vmap(lambda xx: batched_output({k: jnp.asarray(v) for k, v in truth.items()},
                                           xx, pos))(xs)
    nus = cfg.noise
    P = len(nus)
    sd = jnp.sqrt(jnp.asarray(nus))[:, None, None, None, None]
    y = (f[None] + sd * eps[None]).reshape((P * R,) + f.shape[1:])
    xb = jnp.broadcast_to(xs[None], (P,) + xs.shape).reshape((P * R,) + xs.shape[1:])
    t0 = np.broadcast_to(th0[None], (P,) + th0.shape).reshape(P * R, -1)
    out = fit_students(xb, y, t0, unravel=unravel, position=pos, max_iter=cfg.max_iter,
                       rtol=cfg.rtol)
    ssr_true = np.asarray(jnp.sum(eps ** 2, axis=(1, 2, 3)))                # in units of nu
    points = []
    for a, nu in enumerate(nus):
        reps = []
        for r in range(R):
            b = a * R + r
            theta = out["theta"][b]
            finite = bool(np.all(np.isfinite(theta)) and np.isfinite(out["ssr"][b]))
            if finite:
                pf = {k: np.asarray(v) for k, v in unravel(jnp.asarray(theta)).items()}
                L = leaf_losses(pf, truth, pos)
            else:
                L = {"atom_error": [], "cells": [], "worst_overfitted": float("nan"),
                     "worst_singleton": float("nan"), "V": float("nan")}
            conv = bool(out["converged"][b]) and finite
            if not conv:   # a failed fit counts as an infinite loss (never dropped)
                L = {**L, "worst_overfitted": float("inf"), "V": float("inf")}
            reps.append({**L, "converged": conv, "iterations": int(out["iterations"][b]),
                         "excess_loss": float(out["ssr"][b] / nu - ssr_true[r])})
        points.append({"noise": float(nu), "x": float(cfg.n / nu), "replicates": reps,
                       "failures": int(sum(not q["converged"] for q in reps))})
    return {"config": dataclasses.asdict(cfg), "cache_key": cfg.key(),
            "teacher": {k: v.tolist() for k, v in truth.items()}, "points": points,
            "seconds": time.perf_counter() - t_start}


@dataclasses.dataclass
class FitSweepResult:
    """E2 sweep for one position: ``points[i]["replicates"][r]`` per replicate, slopes per metric."""

    config: FitSweepConfig
    points: list
    seconds: float | None = None   # compute time when it was computed (None: older cache file)
    cached: bool = False           # loaded from the cache rather than computed now

    @property
    def x(self) -> np.ndarray:
        return np.array([p["x"] for p in self.points])

    def losses(self, metric: str) -> np.ndarray:
        """``(points, replicates)``; ``inf`` where a fit failed."""
        return np.array([[r[metric] for r in p["replicates"]] for p in self.points], float)

    def failures(self) -> int:
        return int(sum(p["failures"] for p in self.points))

    def slope(self, metric: str) -> rates.Slope:
        """Log-log slope of the median ``metric`` against ``n/nu`` over ``[FIT_MIN, max]``."""
        return rates.slope(self.x, self.losses(metric), x_min=FIT_MIN, seed=self.config.seed)


def run_sweep(config: FitSweepConfig, *, cache_dir=None) -> FitSweepResult:
    """Run (or load from ``$GATED_HMOE_CACHE/attention_fit/<key>.json``) one position's sweep."""
    if not isinstance(config, FitSweepConfig):
        raise TypeError(f"config must be a FitSweepConfig, got {type(config).__name__}")
    config.validate()
    path = _cache_root(cache_dir) / "attention_fit" / f"{config.position}-{config.key()}.json"
    cached = path.exists()
    if cached:
        with open(path) as fh:
            data = json.load(fh)
    else:
        data = _compute(config)
        _atomic_write_json(path, data)
    return FitSweepResult(config, data["points"], data.get("seconds"), cached)


# ------------------------------------------------------------------ figures and widgets


def position_color(position: str) -> str:
    """The book's colour of a position (``"ridge"`` takes ``GATE_COLORS["G1-ridge"]``)."""
    from gated_hmoe import plots
    return plots.GATE_COLORS["G1-ridge" if position == "ridge" else position]


def slope_label(s: rates.Slope) -> str:
    """``"slope -0.49 [-0.53, -0.45]"``, or a note when a median in range is a failed fit."""
    if not np.isfinite(s.slope):
        return "slope undefined (a median in range is a failed fit)"
    return s.label()


def sweep_axes(ax, results: dict, *, metric: str = "worst_overfitted", colors=None):
    """Draw medians (interquartile band) of ``metric`` for several results on ``ax``.

    ``results``: label -> :class:`FitSweepResult`; the legend states each slope with its
    bootstrap 95% interval and the number of failed fits.
    """
    colors = colors or {}
    for label, res in results.items():
        L = res.losses(metric)
        with np.errstate(invalid="ignore"):      # failed fits are +inf: quantiles may be inf
            med = np.median(L, 1)
            q1, q3 = np.quantile(L, 0.25, 1), np.quantile(L, 0.75, 1)
        s = res.slope(metric)
        c = colors.get(label, position_color(res.config.position))
        ax.plot(res.x, med, marker="o", color=c,
                label=f"{label}: {slope_label(s)}, fail {res.failures()}")
        ax.fill_between(res.x, q1, q3, color=c, alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("effective sample size n / ν")
    ax.set_ylabel({"worst_overfitted": "worst over-fitted head error",
                   "V": "identifiable part V"}.get(metric, metric))
    ax.legend(loc="lower left")
    return ax


def explore_widget(results: dict):
    """ipywidgets explorer: ``results[(position, spread)] -> FitSweepResult`` (from the cache).

    Controls: gate position, spread, metric (redraw the log-log plot), and a button that
    runs one small live fit (``n = 200``, 4 replicates, ``n/nu = 1e12``) and prints the
    Voronoi-matched errors.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display
    from gated_hmoe import plots

    positions = sorted({k[0] for k in results}, key=POSITIONS.index)
    spreads = sorted({k[1] for k in results})
    pos_w = w.Dropdown(options=positions, description="position")
    spr_w = w.Dropdown(options=spreads, description="spread")
    met_w = w.Dropdown(options=list(METRICS), description="metric")
    out = w.Output()
    live = w.Button(description="run one live fit")
    live_out = w.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            key = (pos_w.value, spr_w.value)
            if key not in results:
                print("not in the cache: run the sweep for", key)
                return
            fig, ax = plots.new_figure()
            sweep_axes(ax, {f"{key[0]} (s={key[1]})": results[key]}, metric=met_w.value)
            ax.set_title(f"{key[0]}: {LEAF_CLASS[key[0]]} leaves")
            plt.show()

    def run_live(*_):
        with live_out:
            live_out.clear_output(wait=True)
            cfg = FitSweepConfig(position=pos_w.value, n=200, log10_x_min=12.0,
                                 log10_x_max=13.0, points=2, replicates=4,
                                 spread=float(spr_w.value), max_iter=200)
            data = _compute(cfg)
            for r in data["points"][0]["replicates"]:
                print(f"converged={r['converged']}  worst over-fitted error="
                      f"{r['worst_overfitted']:.3e}  V={r['V']:.3e}")

    for c in (pos_w, spr_w, met_w):
        c.observe(redraw, names="value")
    live.on_click(run_live)
    box = w.VBox([w.HBox([pos_w, spr_w, met_w]), out, live, live_out])
    box.live_button = live          # for tests and scripted use: box.live_button.click()
    redraw()
    display(box)
    return box


# ------------------------------------------------------------------ command line


def _slope_record(res: FitSweepResult, metric: str) -> dict | None:
    """Slope and CI for the results file; ``None`` when fewer than 2 points reach ``FIT_MIN``."""
    if np.sum(res.x >= FIT_MIN) < 2:
        return None
    s = res.slope(metric)
    return {"slope": s.slope, "ci": list(s.ci), "x_min": FIT_MIN}


def _cli(args) -> int:
    """``python -m gated_hmoe attention-fit``: the E2 noise sweep for several positions."""
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from gated_hmoe import experiments

    positions = [q.strip() for q in args.positions.split(",") if q.strip()]
    for q in positions:
        _check_position(q)
    configs = [FitSweepConfig(position=q, teacher_heads=args.teacher_heads,
                              student_heads=args.student_heads, n=args.n,
                              log10_x_min=args.log10_x_min, log10_x_max=args.log10_x_max,
                              points=args.points, replicates=args.replicates, spread=args.spread,
                              seed=args.seed, max_iter=args.max_iter, rtol=args.rtol).validate()
               for q in positions]
    out_dir = Path(args.out)
    results = {}
    bar = tqdm(configs, desc="attention-fit", unit="position", disable=args.no_progress)
    for cfg in bar:
        bar.set_postfix(position=cfg.position)
        results[cfg.position] = run_sweep(cfg, cache_dir=args.cache_dir)
    payload = {"versions": experiments.versions(), "positions": {}}
    for q, res in results.items():
        payload["positions"][q] = {
            "config": dataclasses.asdict(res.config), "leaf_class": LEAF_CLASS[q],
            "x": res.x.tolist(), "seconds": res.seconds, "failures": res.failures(),
            "slopes": {m: _slope_record(res, m) for m in METRICS},
            "points": res.points}
    cache.write_json_atomic(out_dir / "results.json", payload)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(6.4 * len(METRICS), 4.8))
    for ax, m in zip(np.atleast_1d(axes), METRICS):
        if all(payload["positions"][q]["slopes"][m] is not None for q in results):
            sweep_axes(ax, dict(results), metric=m)
        ax.set_title(f"E2, n = {args.n}: {m}")
    fig.tight_layout()
    fig.savefig(out_dir / "attention_fit.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'attention_fit.png'}")
    for q, res in results.items():
        secs = "no time recorded" if res.seconds is None else f"{res.seconds:.0f} s"
        secs += " (cached)" if res.cached else ""
        slopes = payload["positions"][q]["slopes"]
        text = "; ".join(f"{m} " + ("no slope (< 2 points with n/nu >= FIT_MIN)" if slopes[m] is None
                                    else slope_label(res.slope(m))) for m in METRICS)
        print(f"  {q:6s} ({LEAF_CLASS[q]}) {text}; failures {res.failures()}; {secs}")
    return 0


def register_cli(subparsers) -> None:
    """Add the ``attention-fit`` sub-command (E2)."""
    p = subparsers.add_parser(
        "attention-fit", help="E2: fitted attention layers, leaf-expert errors vs n/nu",
        description="E2 noise sweep per gate position (cached per position; an interrupted "
                    "run resumes at the first unfinished position).")
    p.add_argument("--positions", default=",".join(POSITIONS),
                   help=f"comma-separated subset of {POSITIONS}")
    p.add_argument("--teacher-heads", type=int, default=1)
    p.add_argument("--student-heads", type=int, default=2)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--log10-x-min", type=float, default=7.0, help="log10 of the smallest n/nu")
    p.add_argument("--log10-x-max", type=float, default=17.0, help="log10 of the largest n/nu")
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--replicates", type=int, default=12)
    p.add_argument("--spread", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--rtol", type=float, default=1.0,
                   help="stop when the Gauss-Newton decrement is <= rtol * nu (chapter 05: 1.0)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=_cli)


__all__ = ["POSITIONS", "LEAF_CLASS", "teacher_params", "layer_output", "batched_output",
           "valley_student", "max_output_gap", "head_atoms", "leaf_losses", "split_init",
           "fit_students", "position_color", "slope_label", "FitSweepConfig", "FitSweepResult", "run_sweep", "sweep_axes",
           "explore_widget"]
