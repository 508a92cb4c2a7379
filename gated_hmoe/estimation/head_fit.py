r"""Least-squares fits of attention students: normal equations by ``jax.jacfwd``, one loop.

Any model whose residual vector ``r(theta) = y - f_theta(x)`` is a traceable function of a
flat parameter vector is fitted by :func:`gated_hmoe.estimation.lm.levenberg_marquardt`
through :func:`jacfwd_normal_equations`, which forms ``(r^T r, J^T r, J^T J)`` with a
forward-mode Jacobian for every replicate (``jax.vmap``). :func:`fit_students` applies it to
the attention students of :mod:`gated_hmoe.models.heads`, whose weights are a dict of arrays
flattened with ``jax.flatten_util.ravel_pytree``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gated_hmoe import checks
from gated_hmoe.estimation import lm
from gated_hmoe.models import heads


def jacfwd_normal_equations(residual: Callable[..., Float[Array, " m"]]):
    """Batched normal equations of ``residual(theta (p,), *data) -> (m,)``.

    Returns ``ne(theta (R, p), *data (R, ...)) -> (SSR (R,), J^T r (R, p), J^T J (R, p, p))``
    with ``J = d f / d theta = -d r / d theta`` (forward mode), for the loop of
    :mod:`gated_hmoe.estimation.lm`. Traceable.
    """
    def one(theta, *data):
        r = residual(theta, *data)
        J = -jax.jacfwd(residual)(theta, *data)
        return r @ r, J.T @ r, J.T @ J

    return jax.vmap(one)


def fit_students(x: Float[ArrayLike, "R n N d"], y: Float[ArrayLike, "R n N 1"],
                 theta0: Float[ArrayLike, "R p"], *, unravel, position: str, max_iter: int = 400,
                 rtol: float = 1e-3) -> dict[str, np.ndarray]:
    """Batched least-squares fits of attention students: ``theta0`` flat starting weights
    (``unravel(theta) -> dict`` of :mod:`gated_hmoe.models.heads` weights).

    Converged (certified): the Gauss-Newton decrement is below ``rtol`` units of the
    estimated noise variance, or the residual is at round-off. Returns the loop's arrays
    (:func:`gated_hmoe.estimation.lm.levenberg_marquardt`) as numpy: ``theta (R, p)``,
    ``ssr``, ``mse``, ``grad_norm``, ``decrement``, ``iterations``, ``nfev``, ``converged``.
    """
    heads.check_layer_position(position)
    max_iter = checks.positive_int(max_iter, "max_iter")
    rtol = checks.real(rtol, "rtol", positive=True)

    def residual(theta, xx, yy):
        return (yy - heads.batched_output(unravel(theta), xx, position)).reshape(-1)

    ne = jacfwd_normal_equations(residual)

    def run(theta0, x, y):
        return lm.levenberg_marquardt(lambda theta: ne(theta, x, y), theta0,
                                      n_obs=y[0].size, max_iter=max_iter, rtol=rtol)

    out = jax.jit(run)(jnp.asarray(theta0), jnp.asarray(x), jnp.asarray(y))
    return {k: np.asarray(v) for k, v in out.items()}


__all__ = ["fit_students", "jacfwd_normal_equations"]
