r"""Least-squares estimation of mixing measures: batched Levenberg-Marquardt in float64.

The estimator of SPEC §4, ``G_n in argmin_G sum_t (Y_t - f_G(X_t))^2`` over pinned measures
with ``k`` atoms, computed for many replicate data sets at once: one
Levenberg-Marquardt loop over all replicates (each keeps its own damping and stops on its
own), ``jax.jit``-compiled once per data shape (``capacity`` lets a whole sweep over sample
sizes share one shape) and sharded over the available devices along the replicate axis.

The Jacobian is analytic (:func:`mean_and_jacobian`; the tests compare it with
``jax.jacfwd`` and the whole fit with ``scipy.optimize.least_squares``). Each step solves the
damped normal equations ``(J^T J + lambda diag(J^T J)) delta = J^T r`` (Marquardt scaling with
running-max diagonal, Nielsen's damping update). A fit is *converged* when the Gauss-Newton
decrement ``g^T (J^T J)^+ g`` (the sum-of-squares reduction a full Gauss-Newton step
predicts) is below ``rtol * SSR / n`` -- a fraction ``rtol`` of one unit of the estimated
noise variance, the scale on which least-squares fits are statistically distinguishable --
or the mean squared residual is below ``1e-26`` (noiseless data). It stops there, when the
damping exceeds ``1e16`` (stalled), or at ``max_iter``; fits that stop unconverged are
flagged as failures.

Initialisation is always declared (:class:`InitConfig`): ``near`` (truth + Gaussian
spread), ``split`` (over-specified fits: one true atom split into several with equal cell
weights, SPEC §5) or ``random`` (multi-start in a box, best training loss kept). No
strategy starts at the truth.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe import checks, moe

Array = jax.Array

INITS: tuple[str, ...] = ("near", "split", "random")


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
        return moe.expert_dim(self.expert, self.D)

    @property
    def num_params(self) -> int:
        """Free parameters (the last atom's gate is pinned at zero)."""
        return (self.k - 1) * self.F + self.k * self.P


def make_spec(*, expert: str, gate: str = "linear", k: int, D: int) -> ModelSpec:
    """Validated :class:`ModelSpec`."""
    checks.choice(expert, "expert", moe.EXPERTS)
    checks.choice(gate, "gate", moe.GATES)
    return ModelSpec(expert, gate, checks.positive_int(k, "k"), checks.positive_int(D, "D"))


# ------------------------------------------------------------------ packing

def pack(G: moe.MixingMeasure, spec: ModelSpec) -> Array:
    """Free parameter vector ``theta: (p,)`` of a measure (pinned first; gate of atom k ignored).
    Checks that ``G``'s shapes match ``spec`` (traceable: shapes only)."""
    _check_measure_shapes(G, spec, "G")
    G = moe.pin_last(jax.tree.map(jnp.asarray, G))
    theta_gate = moe.gate_params(spec.gate, G)[:-1]
    return jnp.concatenate([theta_gate.reshape(-1), jnp.asarray(G.expert).reshape(-1)])


def _check_spec(spec) -> None:
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (estimators.make_spec), got {type(spec).__name__}")


def _check_measure_shapes(G, spec: ModelSpec, name: str) -> None:
    """``G`` must be a MixingMeasure with ``spec.k`` atoms, ``spec.D`` inputs, ``spec.P``
    expert parameters and a ``quad`` block exactly when the gate is quadratic."""
    _check_spec(spec)
    if not isinstance(G, moe.MixingMeasure):
        raise TypeError(f"{name} must be a MixingMeasure, got {type(G).__name__}")
    want = {"beta0": (spec.k,), "beta1": (spec.k, spec.D), "expert": (spec.k, spec.P)}
    if spec.gate != "linear":
        want["quad"] = (spec.k, spec.D, spec.D)
    for field, shape in want.items():
        got = getattr(G, field)
        if got is None or tuple(np.shape(got)) != shape:
            raise ValueError(f"{name}.{field} must have shape {shape} for spec (expert={spec.expert!r}, "
                             f"gate={spec.gate!r}, k={spec.k}, D={spec.D}), got "
                             f"{None if got is None else tuple(np.shape(got))}")
    if spec.gate == "linear" and G.quad is not None:
        raise ValueError(f"{name}.quad must be None for gate='linear'")


def unpack(theta: Array, spec: ModelSpec) -> moe.MixingMeasure:
    """Inverse of :func:`pack`: a pinned :class:`~gated_hmoe.moe.MixingMeasure`. Traceable."""
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
    return moe.MixingMeasure(beta0, beta1, eta, quad)


def mean_and_jacobian(theta: Array, x: Array, spec: ModelSpec) -> tuple[Array, Array]:
    """``f(x): (n,)`` and its analytic Jacobian ``df/dtheta: (n, p)``. Unchecked, traceable.

    With ``pi = softmax(z)``: ``df/dtheta_gate_i = pi_i (h_i - f) phi(x)`` (atoms ``i < k``)
    and ``df/deta_i = pi_i dh_i/deta_i``.
    """
    k, F, P = spec.k, spec.F, spec.P
    phi = moe.gate_features(spec.gate, x)                               # (n, F)
    tg = theta[: (k - 1) * F].reshape(k - 1, F)
    eta = theta[(k - 1) * F:].reshape(k, P)
    z = jnp.concatenate([phi @ tg.T, jnp.zeros((x.shape[0], 1), x.dtype)], -1)
    pi = jax.nn.softmax(z, axis=-1)                                     # (n, k)
    h, dh = moe.expert_values_and_grads(spec.expert, eta, x)            # (n, k), (n, k, P)
    f = jnp.sum(pi * h, -1)
    jg = ((pi * (h - f[:, None]))[:, : k - 1, None] * phi[:, None, :]).reshape(x.shape[0], -1)
    je = (pi[..., None] * dh).reshape(x.shape[0], -1)
    return f, jnp.concatenate([jg, je], -1)


def _mean(theta, x, spec):
    return moe.mean_unchecked(unpack(theta, spec), x, spec.expert, spec.gate)


# ------------------------------------------------------------------ Levenberg-Marquardt
#
# The loop works on all replicates at once in a *planar* layout: data ``xt: (R, D, n)`` and
# ``y: (R, n)`` with the sample axis last, so every elementwise expression (gate logits,
# softmax, experts) vectorises over samples. The normal equations are accumulated over chunks
# of at most ``_CHUNK`` samples so that each chunk's Jacobian stays in cache; padded samples
# carry weight 0. The chunk loop is a ``jax.lax.fori_loop`` with a traced trip count, so a
# layout made for ``capacity`` samples serves every smaller ``n`` with the same program.
# Measured on 2 CPU cores (sigmoid, k = 3, D = 1, n = 3e4, 16 replicates, one device):
# 2.7 ms per fit and iteration for the earlier ``vmap`` over a per-replicate loop with
# ``(n, p)`` Jacobians, 1.2 ms for this layout with a ``scan`` over chunks, 0.9 ms with the
# ``fori_loop`` (chunks of 2048 were fastest among 512-32768; the whole sample at once took
# 6.7 ms per fit); two host devices: 0.6 ms.

_CHUNK = 2048
#: Samples x replicates that one chunk holds on one device at most: with many replicates per
#: device, chunks get shorter so that their Jacobians still fit in cache (measured at
#: n = 3e4 on 2 cores: 32 replicates per device took 1.09 ms per fit and iteration with
#: chunks of 2048, 0.63 ms with 1024; 8 per device: 0.65-0.68 ms for 512-2048).
_CHUNK_WORK = 32768


def _planar_gate_features(gate: str, xt: Array) -> Array:
    """``phi: (R, F, c)`` for ``xt: (R, D, c)`` (same order as :func:`moe.gate_features`)."""
    R, D, c = xt.shape
    ones = jnp.ones((R, 1, c), xt.dtype)
    if gate == "linear":
        return jnp.concatenate([ones, xt], 1)
    xx = (xt[:, :, None, :] * xt[:, None, :, :]).reshape(R, D * D, c)
    if gate == "quadratic-monomial":
        return jnp.concatenate([ones, xx], 1)
    return jnp.concatenate([ones, xt, xx], 1)


def _planar_experts(expert: str, eta: Array, xt: Array) -> tuple[Array, Array]:
    """``h: (R, k, c)`` and ``dh/deta: (R, k, P, c)`` for ``eta: (R, k, P)``, ``xt: (R, D, c)``."""
    R, D, c = xt.shape
    xb = jnp.concatenate([xt, jnp.ones((R, 1, c), xt.dtype)], 1)[:, None]     # (R, 1, D+1, c)

    def affine(w):                                                            # w: (R, k, D+1)
        return jnp.sum(w[..., None] * xb, axis=2)                             # (R, k, c)

    if expert == "glu":
        g = jax.nn.sigmoid(affine(eta[:, :, : D + 1]))
        v = affine(eta[:, :, D + 1:])
        dh = jnp.concatenate([(g * (1.0 - g) * v)[:, :, None] * xb, g[:, :, None] * xb], 2)
        return g * v, dh
    h, d = moe.ridge_values_and_slopes(expert, affine(eta))
    return h, d[:, :, None] * xb


def planar_mean_and_jacobian(theta: Array, xt: Array, spec: ModelSpec) -> tuple[Array, Array]:
    """Batched :func:`mean_and_jacobian`: ``theta: (R, p)``, ``xt: (R, D, c)`` (samples last)
    -> ``f: (R, c)`` and ``J: (R, p, c)``. Unchecked, traceable."""
    k, F, P = spec.k, spec.F, spec.P
    R, c = theta.shape[0], xt.shape[-1]
    phi = _planar_gate_features(spec.gate, xt)                                # (R, F, c)
    tg = theta[:, : (k - 1) * F].reshape(R, k - 1, F)
    eta = theta[:, (k - 1) * F:].reshape(R, k, P)
    z = jnp.sum(tg[..., None] * phi[:, None], axis=2)                        # (R, k-1, c)
    z = jnp.concatenate([z, jnp.zeros((R, 1, c), xt.dtype)], 1)
    pi = jax.nn.softmax(z, axis=1)                                            # (R, k, c)
    h, dh = _planar_experts(spec.expert, eta, xt)
    f = jnp.sum(pi * h, 1)
    jg = ((pi * (h - f[:, None]))[:, : k - 1, None] * phi[:, None]).reshape(R, (k - 1) * F, c)
    je = (pi[:, :, None] * dh).reshape(R, k * P, c)
    return f, jnp.concatenate([jg, je], 1)


def _chunks(a: Array, m: int, c: int) -> Array:
    """``(R, ..., m*c) -> (m, R, ..., c)``: the sample axis cut into ``m`` chunks."""
    return jnp.moveaxis(a.reshape(a.shape[:-1] + (m, c)), -2, 0)


def _normal_equations(theta: Array, data, spec: ModelSpec, active=None):
    """``SSR: (R,)``, ``J^T r: (R, p)``, ``J^T J: (R, p, p)`` summed over the data chunks.

    ``data = (xs, ys, ws)`` of shapes ``(m, R, D, c)``, ``(m, R, c)``, ``(m, R, c)``; only the
    first ``active`` chunks are read (a traced int; default all ``m``), so one compiled loop
    serves every sample size up to ``m * c``.
    """
    R, p = theta.shape

    def chunk(i, acc):
        xc, yc, wc = (jax.lax.dynamic_index_in_dim(a, i, keepdims=False) for a in data)
        f, J = planar_mean_and_jacobian(theta, xc, spec)
        r = (yc - f) * wc
        Ja = jnp.concatenate([J * wc[:, None], r[:, None]], 1)                    # (R, p+1, c)
        return acc + jnp.einsum("rpc,rqc->rpq", Ja, Ja)

    m = data[0].shape[0] if active is None else active
    A = jax.lax.fori_loop(0, m, chunk, jnp.zeros((R, p + 1, p + 1), theta.dtype))
    return A[:, p, p], A[:, :p, p], A[:, :p, :p]


class FitState(NamedTuple):
    theta: Array     # (R, p)
    ssr: Array       # (R,)
    grad: Array      # J^T r (minus half the gradient of the SSR), (R, p)
    hess: Array      # J^T J, (R, p, p)
    diag: Array      # running max of diag(J^T J) (Marquardt scaling), (R, p)
    lam: Array
    nu: Array
    it: Array
    nfev: Array
    done: Array


def _solve(A: Array, b: Array) -> Array:
    """``A^{-1} b`` for symmetric positive definite ``A: (R, p, p)``, ``b: (R, p)``."""
    c, low = jax.scipy.linalg.cho_factor(A)
    return jax.scipy.linalg.cho_solve((c, low), b[..., None])[..., 0]


def _decrement(grad: Array, hess: Array) -> Array:
    """Gauss-Newton decrement ``g^T H^+ g`` with a tiny ridge (rank-deficient H allowed)."""
    p = hess.shape[-1]
    scale = jnp.maximum(jnp.max(jnp.diagonal(hess, axis1=1, axis2=2), axis=1), 1e-300)
    A = hess + 1e-13 * scale[:, None, None] * jnp.eye(p, dtype=hess.dtype)
    return jnp.maximum(jnp.sum(grad * _solve(A, grad), -1), 0.0)


def _lm(theta0, xt, y, w, n, active, max_iter, rtol, spec: ModelSpec, chunk: int):
    """Batched Levenberg-Marquardt: ``theta0: (R, p)``, ``xt: (R, D, N)``, ``y, w: (R, N)``
    (``N`` a multiple of ``chunk``; ``w`` 1 on the ``n`` real samples, 0 on padding; only the
    first ``active`` chunks hold samples)."""
    m = xt.shape[-1] // chunk
    data = (_chunks(xt, m, chunk), _chunks(y, m, chunk), _chunks(w, m, chunk))

    def evaluate(theta):
        return _normal_equations(theta, data, spec, active)

    def bcast(mask, a):
        return mask.reshape(mask.shape + (1,) * (a.ndim - 1))

    def converged(s):
        return (_decrement(s.grad, s.hess) <= rtol * s.ssr / n) | (s.ssr <= 1e-26 * n)

    R, p = theta0.shape
    dtype = theta0.dtype
    ssr, g, H = evaluate(theta0)
    state = FitState(theta0, ssr, g, H, jnp.diagonal(H, axis1=1, axis2=2),
                     jnp.full((R,), 1e-3, dtype), jnp.full((R,), 2.0, dtype),
                     jnp.zeros((R,), jnp.int32), jnp.ones((R,), jnp.int32), jnp.zeros((R,), bool))
    state = state._replace(done=converged(state))

    def cond(s):
        return jnp.any(~s.done & (s.it < max_iter))

    def body(s):
        active = ~s.done & (s.it < max_iter)
        D = jnp.maximum(s.diag, 1e-300)
        A = s.hess + s.lam[:, None, None] * (D[:, :, None] * jnp.eye(p, dtype=dtype))
        delta = _solve(A, s.grad)
        theta_new = s.theta + delta
        ssr_new, g_new, H_new = evaluate(theta_new)
        pred = 2.0 * jnp.sum(delta * s.grad, -1) - jnp.einsum("rp,rpq,rq->r", delta, s.hess, delta)
        rho = (s.ssr - ssr_new) / jnp.where(pred > 0, pred, 1e-300)
        ok = jnp.isfinite(ssr_new) & (ssr_new < s.ssr) & jnp.all(jnp.isfinite(delta), -1)
        lam_ok = s.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        new = FitState(
            theta=jnp.where(ok[:, None], theta_new, s.theta),
            ssr=jnp.where(ok, ssr_new, s.ssr),
            grad=jnp.where(ok[:, None], g_new, s.grad),
            hess=jnp.where(ok[:, None, None], H_new, s.hess),
            diag=jnp.where(ok[:, None], jnp.maximum(s.diag, jnp.diagonal(H_new, axis1=1, axis2=2)),
                           s.diag),
            lam=jnp.where(ok, lam_ok, s.lam * s.nu),
            nu=jnp.where(ok, 2.0, 2.0 * s.nu),
            it=s.it + 1, nfev=s.nfev + 1, done=s.done)
        new = new._replace(done=converged(new) | (new.lam > 1e16))
        # replicates that are finished keep their state
        return jax.tree.map(lambda a, b: jnp.where(bcast(active, a), a, b), new, s)

    final = jax.lax.while_loop(cond, body, state)
    return {
        "theta": final.theta,
        "mse": final.ssr / n,
        "grad_norm": 2.0 * jnp.linalg.norm(final.grad, axis=-1) / n,  # ||grad of mean sq. residual||
        "decrement": _decrement(final.grad, final.hess),
        "iterations": final.it,
        "nfev": final.nfev,
        "converged": converged(final) & jnp.isfinite(final.ssr),
    }


_lm_batch = jax.jit(_lm, static_argnames=("spec", "chunk"))


def _chunk_limit(per_device: int) -> int:
    """Longest chunk for ``per_device`` replicates on one device (a multiple of 8, 256-2048)."""
    return max(256, min(_CHUNK, _CHUNK_WORK // max(per_device, 1) // 8 * 8))


def _chunking(n: int, limit: int = _CHUNK) -> tuple[int, int]:
    """``(chunk, padded n)``: fewest chunks of at most ``limit`` samples, chunk a multiple of 8."""
    m = -(-n // limit)
    c = -(-n // m)
    c = -(-c // 8) * 8
    return c, m * c


def _mesh(devices: int | None):
    devs = jax.devices()
    if devices is not None:
        devices = checks.positive_int(devices, "devices")
        if devices > len(devs):
            raise ValueError(f"devices must be <= the {len(devs)} available JAX devices, got {devices}")
        devs = devs[:devices]
    return jax.sharding.Mesh(np.array(devs), ("r",))


@dataclasses.dataclass
class FitResult:
    """Batched least-squares fits; every array has a leading replicate axis ``R``.

    ``theta (R, p)``, ``mse`` final mean squared residual, ``grad_norm`` (of the mean
    squared residual), ``decrement`` (Gauss-Newton decrement of the SSR), ``iterations``,
    ``nfev``, ``converged`` and ``failed`` (non-finite or not converged), all ``(R,)``.
    """

    spec: ModelSpec
    theta: np.ndarray
    mse: np.ndarray
    grad_norm: np.ndarray
    decrement: np.ndarray
    iterations: np.ndarray
    nfev: np.ndarray
    converged: np.ndarray
    failed: np.ndarray

    def measure(self, i: int) -> moe.MixingMeasure:
        """The fitted (pinned) measure of replicate ``i`` as numpy arrays."""
        return jax.tree.map(np.asarray, unpack(jnp.asarray(self.theta[i]), self.spec))


def fit(x, y, theta0, *, spec: ModelSpec, max_iter: int = 500, rtol: float = 1e-3,
        devices: int | None = None, capacity: int | None = None) -> FitResult:
    """Least-squares fits of ``R`` replicates at once.

    ``x: (R, n, D)``, ``y: (R, n)``, ``theta0: (R, p)`` starting points (from
    :func:`initial_thetas`); ``spec`` from :func:`make_spec`. The replicate axis is sharded
    over ``devices`` JAX devices (default all; ``R`` is padded to a multiple).
    ``capacity`` (``>= n``): lay the samples out in the chunks of a ``capacity``-sample
    problem, so that fits at every ``n <= capacity`` (same ``R``) share one compiled program;
    the sums then run over different chunk boundaries, so results can differ from
    ``capacity=None`` in the last bits.

    >>> G = moe.default_truth("linear")
    >>> spec = make_spec(expert="linear", k=2, D=1)
    >>> x = np.linspace(-1, 1, 50)[None, :, None]
    >>> y = np.asarray(moe.mean(G, x[0], expert="linear"))[None]
    >>> th0 = np.asarray(pack(G, spec))[None] + 0.05
    >>> res = fit(x, y, th0, spec=spec)
    >>> bool(res.converged[0]), bool(np.allclose(res.theta[0], pack(G, spec), atol=1e-6))
    (True, True)
    """
    _check_spec(spec)
    x = checks.finite_array(x, "x", ndim=3)
    R, n, D = x.shape
    if D != spec.D:
        raise ValueError(f"x must have shape (R, n, {spec.D}) to match spec.D, got {x.shape}")
    if n < 1 or R < 1:
        raise ValueError(f"x must have at least one replicate and n >= 1 samples, got shape {x.shape}")
    y = checks.finite_array(y, "y", shape=(R, n))
    theta0 = checks.finite_array(theta0, "theta0", shape=(R, spec.num_params))
    max_iter = checks.positive_int(max_iter, "max_iter")
    if capacity is not None:
        capacity = checks.positive_int(capacity, "capacity")
        if capacity < n:
            raise ValueError(f"capacity must be >= the number of samples n = {n}, got {capacity}")
    rtol = checks.real(rtol, "rtol", positive=True)
    mesh = _mesh(devices)
    ndev = mesh.devices.size
    pad = (-R) % ndev
    if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
        y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
        theta0 = np.concatenate([theta0, np.repeat(theta0[-1:], pad, 0)])
    chunk, n_pad = _chunking(n if capacity is None else capacity,
                             _chunk_limit((R + pad) // ndev))
    active = -(-n // chunk)
    xt = np.zeros((R + pad, D, n_pad))
    xt[:, :, :n] = np.swapaxes(x, 1, 2)
    yp = np.zeros((R + pad, n_pad))
    yp[:, :n] = y
    w = np.zeros((R + pad, n_pad))
    w[:, :n] = 1.0
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("r"))
    args = [jax.device_put(jnp.asarray(a, jnp.float64), shard) for a in (theta0, xt, yp, w)]
    out = _lm_batch(*args, jnp.asarray(float(n)), jnp.asarray(active, jnp.int32),
                    jnp.asarray(max_iter), jnp.asarray(rtol, jnp.float64), spec=spec, chunk=chunk)
    out = {key: np.asarray(v)[:R] for key, v in out.items()}
    finite = np.isfinite(out["mse"]) & np.all(np.isfinite(out["theta"]), 1)
    conv = out["converged"] & finite
    return FitResult(spec, out["theta"], out["mse"], out["grad_norm"], out["decrement"],
                     out["iterations"], out["nfev"], conv, ~conv)


# ------------------------------------------------------------------ initialisation

@dataclasses.dataclass(frozen=True)
class InitConfig:
    """A declared initialisation strategy (recorded with every result).

    - ``near``: ``k == k*``; every free parameter = truth + ``N(0, spread^2)``.
    - ``split``: ``k > k*``; true atom ``split_atom`` (not the pinned last one) becomes
      ``m = k - k* + 1`` fitted atoms at ``omega* + spread * z_c`` with centred Gaussian
      offsets ``z_c`` (``±z`` for ``m = 2``; ``omega = (gate slopes, expert)``) and equal
      cell weights ``beta0* - log m``; the other atoms start at truth + ``N(0, spread^2)``.
    - ``random``: ``starts`` uniform draws in ``[-box, box]^p``; the fit with the smallest
      training loss is kept.
    """

    kind: str = "near"
    spread: float = 0.1
    split_atom: int = 0
    starts: int = 8
    box: float = 6.0

    def validate(self) -> InitConfig:
        checks.choice(self.kind, "init", INITS)
        for name in ("spread", "box"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        checks.positive_int(self.starts, "starts")
        checks.positive_int(self.split_atom, "split_atom", minimum=0)
        return self


def _true_blocks(G_true: moe.MixingMeasure, spec: ModelSpec):
    Gp = moe.pin_last(G_true)
    return np.asarray(moe.gate_params(spec.gate, jax.tree.map(jnp.asarray, Gp))), np.asarray(Gp.expert)


def initial_thetas(key: Array, G_true: moe.MixingMeasure, spec: ModelSpec, init: InitConfig,
                   replicates: int) -> np.ndarray:
    """Starting points ``(R, p)`` for ``near``/``split``, ``(R, starts, p)`` for ``random``."""
    checks.prng_key(key, "key")
    _check_spec(spec)
    if not isinstance(init, InitConfig):
        raise TypeError(f"init must be an InitConfig, got {type(init).__name__}")
    init = init.validate()
    R = checks.positive_int(replicates, "replicates")
    G_true = moe.validate_measure(G_true, "G_true", expert=spec.expert, gate=spec.gate)
    if G_true.beta1.shape[1] != spec.D:
        raise ValueError(f"G_true must have input dimension D = {spec.D} to match spec, got "
                         f"{G_true.beta1.shape[1]}")
    tg, te = _true_blocks(G_true, spec)                     # (k*, F), (k*, P)
    k_true, k = tg.shape[0], spec.k
    if k < k_true:
        raise ValueError(f"k_fit must be >= k_true, got k_fit={k} < k_true={k_true}")
    rng_key = np.asarray(jax.random.key_data(key)).ravel()
    rng = np.random.default_rng([int(v) for v in rng_key])
    p = spec.num_params
    if init.kind == "random":
        return rng.uniform(-init.box, init.box, size=(R, init.starts, p))
    if init.kind == "near":
        if k != k_true:
            raise ValueError(f"init='near' needs k_fit == k_true (got k_fit={k}, k_true={k_true}); "
                             f"use init='split' for over-specified fits")
        base = np.concatenate([tg[:-1].ravel(), te.ravel()])
        return base + init.spread * rng.standard_normal((R, p))
    # split
    if k == k_true:
        raise ValueError("init='split' needs k_fit > k_true; use init='near' for exact fits")
    j = init.split_atom
    if j >= k_true - 1:
        raise ValueError(f"split_atom must index a non-pinned true atom (< k_true - 1 = "
                         f"{k_true - 1}), got {j}")
    m = k - k_true + 1
    out = np.empty((R, p))
    for r in range(R):
        order = list(range(j)) + [j] * m + list(range(j + 1, k_true))     # fitted -> true atom
        g = tg[order].copy()
        e = te[order].copy()
        noise_g = init.spread * rng.standard_normal(g.shape)
        noise_e = init.spread * rng.standard_normal(e.shape)
        z = rng.standard_normal((m, spec.F - 1 + spec.P))
        z = (z - z.mean(0)) * math.sqrt(m / (m - 1))
        cell = slice(j, j + m)
        noise_g[cell, 0] = 0.0
        g[cell, 0] -= math.log(m)
        noise_g[cell, 1:] = init.spread * z[:, : spec.F - 1]
        noise_e[cell] = init.spread * z[:, spec.F - 1:]
        g, e = g + noise_g, e + noise_e
        out[r] = np.concatenate([g[:-1].ravel(), e.ravel()])
    return out


def fit_with_init(x, y, theta0, *, spec: ModelSpec, max_iter: int = 500, rtol: float = 1e-3,
                  devices: int | None = None, capacity: int | None = None) -> FitResult:
    """:func:`fit` for ``theta0: (R, p)``, or multi-start for ``theta0: (R, S, p)`` keeping,
    per replicate, the start with the smallest final training loss."""
    theta0 = np.asarray(theta0)
    if theta0.ndim == 2:
        return fit(x, y, theta0, spec=spec, max_iter=max_iter, rtol=rtol, devices=devices,
                   capacity=capacity)
    if theta0.ndim != 3:
        raise ValueError(f"theta0 must have shape (R, p) or (R, starts, p), got {theta0.shape}")
    x, y = np.asarray(x), np.asarray(y)
    R, S, p = theta0.shape
    res = fit(np.repeat(x, S, 0), np.repeat(y, S, 0), theta0.reshape(R * S, p), spec=spec,
              max_iter=max_iter, rtol=rtol, devices=devices, capacity=capacity)
    mse = np.where(np.isfinite(res.mse), res.mse, np.inf).reshape(R, S)
    best = np.argmin(mse, 1) + S * np.arange(R)
    fields = {f.name: getattr(res, f.name)[best] for f in dataclasses.fields(FitResult)
              if f.name != "spec"}
    return FitResult(spec, **fields)
