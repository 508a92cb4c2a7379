r"""Least-squares fits of mixtures of experts: the planar normal equations, batched and sharded.

The estimator of SPEC §4, ``G_n in argmin_G sum_t (Y_t - f_G(X_t))^2`` over pinned measures
with ``k`` atoms (:class:`gated_hmoe.models.moe.ModelSpec`), for many replicate data sets at
once: the normal equations of all replicates are accumulated in a *planar* layout (samples
last, in cache-sized chunks) and handed to the one Levenberg-Marquardt loop of
:mod:`gated_hmoe.estimation.lm`, ``jax.jit``-compiled once per data shape (``capacity`` lets a
whole sweep over sample sizes share one shape) and sharded over the available devices along
the replicate axis.

The Jacobian is analytic (:func:`mean_and_jacobian`; the tests compare it with
``jax.jacfwd`` and the whole fit with ``scipy.optimize.least_squares``). A fit is *converged*
when the loop certifies it (Gauss-Newton decrement below ``rtol`` units of the estimated
noise variance, see :mod:`gated_hmoe.estimation.lm`); every other fit is flagged as a
failure.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from gated_hmoe import checks
from gated_hmoe.estimation import lm
from gated_hmoe.models import moe
from gated_hmoe.models.moe import ModelSpec, unpack


def mean_and_jacobian(theta: Float[ArrayLike, " p"], x: Float[ArrayLike, "n D"], spec: ModelSpec
                      ) -> tuple[Float[Array, " n"], Float[Array, "n p"]]:
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


# ------------------------------------------------------------------ the planar normal equations
#
# The loop works on all replicates at once in a *planar* layout: data ``xt: (R, D, n)`` and
# ``y: (R, n)`` with the sample axis last, so every elementwise expression (gate logits,
# softmax, experts) vectorises over samples. The normal equations are accumulated over chunks
# of at most ``CHUNK`` samples so that each chunk's Jacobian stays in cache; padded samples
# carry weight 0. The chunk loop is a ``jax.lax.fori_loop`` with a traced trip count, so a
# layout made for ``capacity`` samples serves every smaller ``n`` with the same program.
# Measured on 2 CPU cores (sigmoid, k = 3, D = 1, n = 3e4, 16 replicates, one device):
# 2.7 ms per fit and iteration for the earlier ``vmap`` over a per-replicate loop with
# ``(n, p)`` Jacobians, 1.2 ms for this layout with a ``scan`` over chunks, 0.9 ms with the
# ``fori_loop`` (chunks of 2048 were fastest among 512-32768; the whole sample at once took
# 6.7 ms per fit); two host devices: 0.6 ms.

CHUNK = 2048
#: Samples x replicates that one chunk holds on one device at most: with many replicates per
#: device, chunks get shorter so that their Jacobians still fit in cache (measured at
#: n = 3e4 on 2 cores: 32 replicates per device took 1.09 ms per fit and iteration with
#: chunks of 2048, 0.63 ms with 1024; 8 per device: 0.65-0.68 ms for 512-2048).
CHUNK_WORK = 32768


def _planar_gate_features(gate: str, xt: Float[Array, "R D c"]) -> Float[Array, "R F c"]:
    """``phi: (R, F, c)`` for ``xt: (R, D, c)`` (same order as :func:`moe.gate_features`)."""
    R, D, c = xt.shape
    ones = jnp.ones((R, 1, c), xt.dtype)
    if gate == "linear":
        return jnp.concatenate([ones, xt], 1)
    xx = (xt[:, :, None, :] * xt[:, None, :, :]).reshape(R, D * D, c)
    if gate == "quadratic-monomial":
        return jnp.concatenate([ones, xx], 1)
    return jnp.concatenate([ones, xt, xx], 1)


def _planar_experts(expert: str, eta: Float[Array, "R k P"], xt: Float[Array, "R D c"]
                    ) -> tuple[Float[Array, "R k c"], Float[Array, "R k P c"]]:
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


def planar_mean_and_jacobian(theta: Float[Array, "R p"], xt: Float[Array, "R D c"], spec: ModelSpec
                             ) -> tuple[Float[Array, "R c"], Float[Array, "R p c"]]:
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


def chunks(a: Float[Array, "R *rest n"], m: int, c: int) -> Float[Array, "m R *rest c"]:
    """``(R, ..., m*c) -> (m, R, ..., c)``: the sample axis cut into ``m`` chunks."""
    return jnp.moveaxis(a.reshape(a.shape[:-1] + (m, c)), -2, 0)


def normal_equations(theta: Float[Array, "R p"], data, spec: ModelSpec, active=None
                     ) -> tuple[Float[Array, " R"], Float[Array, "R p"], Float[Array, "R p p"]]:
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


def _fit_batch(theta0, xt, y, w, n, active, max_iter, rtol, spec: ModelSpec, chunk: int):
    """:func:`gated_hmoe.estimation.lm.levenberg_marquardt` on the planar normal equations:
    ``theta0: (R, p)``, ``xt: (R, D, N)``, ``y, w: (R, N)`` (``N`` a multiple of ``chunk``;
    ``w`` 1 on the ``n`` real samples, 0 on padding; only the first ``active`` chunks hold
    samples)."""
    m = xt.shape[-1] // chunk
    data = (chunks(xt, m, chunk), chunks(y, m, chunk), chunks(w, m, chunk))
    return lm.levenberg_marquardt(lambda theta: normal_equations(theta, data, spec, active),
                                  theta0, n_obs=n, max_iter=max_iter, rtol=rtol)


fit_batch = jax.jit(_fit_batch, static_argnames=("spec", "chunk"))


def chunk_limit(per_device: int) -> int:
    """Longest chunk for ``per_device`` replicates on one device (a multiple of 8, 256-2048)."""
    return max(256, min(CHUNK, CHUNK_WORK // max(per_device, 1) // 8 * 8))


def chunking(n: int, limit: int = CHUNK) -> tuple[int, int]:
    """``(chunk, padded n)``: fewest chunks of at most ``limit`` samples, chunk a multiple of 8."""
    m = -(-n // limit)
    c = -(-n // m)
    c = -(-c // 8) * 8
    return c, m * c


def device_mesh(devices: int | None):
    """A one-axis mesh ``("r",)`` over the first ``devices`` JAX devices (default all)."""
    devs = jax.devices()
    if devices is not None:
        devices = checks.positive_int(devices, "devices")
        if devices > len(devs):
            raise ValueError(f"devices must be <= the {len(devs)} available JAX devices, got {devices}")
        devs = devs[:devices]
    return jax.sharding.Mesh(np.array(devs), ("r",))


@dataclasses.dataclass(frozen=True)
class PlanarData:
    """``R`` replicate data sets in the planar, chunked, sharded layout of the loop.

    ``arrays = (xt (R', D, N), y (R', N), w (R', N))`` on the devices (``R' >= R`` padded to
    a multiple of the device count by repeating the last replicate; ``w`` is 1 on the ``n``
    real samples, 0 on padding); ``sizes = (n, active chunks)`` as traced scalars.
    """

    R: int
    n: int
    chunk: int
    active: int
    pad: int
    sharding: jax.sharding.NamedSharding
    arrays: tuple

    @property
    def sizes(self) -> tuple:
        return jnp.asarray(float(self.n)), jnp.asarray(self.active, jnp.int32)

    def rows(self, a) -> Array:
        """A per-replicate array ``(R, ...)`` padded like the data and put on the devices."""
        a = np.asarray(a, np.float64)
        if self.pad:
            a = np.concatenate([a, np.repeat(a[-1:], self.pad, 0)])
        return jax.device_put(jnp.asarray(a), self.sharding)


def planar_data(x: Float[ArrayLike, "R n D"], y: Float[ArrayLike, "R n"], *, D: int,
                devices: int | None = None, capacity: int | None = None) -> PlanarData:
    """Validate ``x: (R, n, D)``, ``y: (R, n)`` and lay them out for the loop (see :func:`fit`
    for ``devices`` and ``capacity``)."""
    x = checks.finite_array(x, "x", ndim=3)
    R, n, Dx = x.shape
    if Dx != D:
        raise ValueError(f"x must have shape (R, n, {D}) to match spec.D, got {x.shape}")
    if n < 1 or R < 1:
        raise ValueError(f"x must have at least one replicate and n >= 1 samples, got shape {x.shape}")
    y = checks.finite_array(y, "y", shape=(R, n))
    if capacity is not None:
        capacity = checks.positive_int(capacity, "capacity")
        if capacity < n:
            raise ValueError(f"capacity must be >= the number of samples n = {n}, got {capacity}")
    mesh = device_mesh(devices)
    ndev = mesh.devices.size
    pad = (-R) % ndev
    if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
        y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
    chunk, n_pad = chunking(n if capacity is None else capacity,
                            chunk_limit((R + pad) // ndev))
    xt = np.zeros((R + pad, D, n_pad))
    xt[:, :, :n] = np.swapaxes(x, 1, 2)
    yp = np.zeros((R + pad, n_pad))
    yp[:, :n] = y
    w = np.zeros((R + pad, n_pad))
    w[:, :n] = 1.0
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("r"))
    arrays = tuple(jax.device_put(jnp.asarray(a, jnp.float64), shard) for a in (xt, yp, w))
    return PlanarData(R, n, chunk, -(-n // chunk), pad, shard, arrays)


@dataclasses.dataclass
class FitResult:
    """Batched least-squares fits; every array has a leading replicate axis ``R``.

    ``theta (R, p)``, ``mse`` final mean squared residual, ``grad_norm`` (of the mean
    squared residual), ``decrement`` (Gauss-Newton decrement of the SSR), ``iterations``,
    ``nfev``, ``converged`` and ``failed`` (non-finite or not converged), all ``(R,)``.
    """

    spec: ModelSpec
    theta: Float[np.ndarray, "R p"]
    mse: Float[np.ndarray, " R"]
    grad_norm: Float[np.ndarray, " R"]
    decrement: Float[np.ndarray, " R"]
    iterations: Int[np.ndarray, " R"]
    nfev: Int[np.ndarray, " R"]
    converged: Bool[np.ndarray, " R"]
    failed: Bool[np.ndarray, " R"]

    def measure(self, i: int) -> moe.MixingMeasure:
        """The fitted (pinned) measure of replicate ``i`` as numpy arrays."""
        return jax.tree.map(np.asarray, unpack(jnp.asarray(self.theta[i]), self.spec))


def fit(x: Float[ArrayLike, "R n D"], y: Float[ArrayLike, "R n"], theta0: Float[ArrayLike, "R p"],
        *, spec: ModelSpec, max_iter: int = 500, rtol: float = 1e-3,
        devices: int | None = None, capacity: int | None = None) -> FitResult:
    """Least-squares fits of ``R`` replicates at once.

    ``x: (R, n, D)``, ``y: (R, n)``, ``theta0: (R, p)`` starting points (from
    :func:`gated_hmoe.estimation.init.initial_thetas`); ``spec`` from
    :func:`gated_hmoe.models.moe.make_spec`. The replicate axis is sharded
    over ``devices`` JAX devices (default all; ``R`` is padded to a multiple).
    ``capacity`` (``>= n``): lay the samples out in the chunks of a ``capacity``-sample
    problem, so that fits at every ``n <= capacity`` (same ``R``) share one compiled program;
    the sums then run over different chunk boundaries, so results can differ from
    ``capacity=None`` in the last bits.

    >>> G = moe.default_truth("linear")
    >>> spec = moe.make_spec(expert="linear", k=2, D=1)
    >>> x = np.linspace(-1, 1, 50)[None, :, None]
    >>> y = np.asarray(moe.mean(G, x[0], expert="linear"))[None]
    >>> th0 = np.asarray(moe.pack(G, spec))[None] + 0.05
    >>> res = fit(x, y, th0, spec=spec)
    >>> bool(res.converged[0]), bool(np.allclose(res.theta[0], moe.pack(G, spec), atol=1e-6))
    (True, True)
    """
    moe.check_spec(spec)
    data = planar_data(x, y, D=spec.D, devices=devices, capacity=capacity)
    theta0 = checks.finite_array(theta0, "theta0", shape=(data.R, spec.num_params))
    max_iter = checks.positive_int(max_iter, "max_iter")
    rtol = checks.real(rtol, "rtol", positive=True)
    out = fit_batch(data.rows(theta0), *data.arrays, *data.sizes, jnp.asarray(max_iter),
                    jnp.asarray(rtol, jnp.float64), spec=spec, chunk=data.chunk)
    out = {key: np.asarray(v)[:data.R] for key, v in out.items()}
    finite = np.isfinite(out["mse"]) & np.all(np.isfinite(out["theta"]), 1)
    conv = out["converged"] & finite
    return FitResult(spec, out["theta"], out["mse"], out["grad_norm"], out["decrement"],
                     out["iterations"], out["nfev"], conv, ~conv)


def fit_with_init(x: Float[ArrayLike, "R n D"], y: Float[ArrayLike, "R n"],
                  theta0: Float[ArrayLike, "R p"] | Float[ArrayLike, "R S p"], *, spec: ModelSpec,
                  max_iter: int = 500, rtol: float = 1e-3,
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
