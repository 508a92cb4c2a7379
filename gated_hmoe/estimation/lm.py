r"""The one Levenberg-Marquardt loop of the book: batched, float64, with a certified stop.

Every least-squares fit of the library -- mixtures of experts (:mod:`.moe_fit`), attention
students (:mod:`.head_fit`), and the constrained fits of the profile confidence sets --
runs this loop. A problem enters only through its *normal equations*

.. math::
    \theta \mapsto \big(\mathrm{SSR}(\theta),\; J^\top r,\; J^\top J\big),
    \qquad r = y - f_\theta(x),\; J = \partial f_\theta / \partial\theta,

evaluated for ``R`` replicates at once (``theta: (R, p)``). Each step solves the damped
system ``(J^T J + lambda diag(J^T J)) delta = J^T r`` (Marquardt scaling with a running
maximum of the diagonal, Nielsen's damping update); a replicate whose step does not lower
its SSR keeps its state and raises its damping. Every replicate stops on its own:

- *converged* (certified): the Gauss-Newton decrement ``g^T (J^T J)^+ g`` -- the
  sum-of-squares reduction a full Gauss-Newton step predicts -- is at most
  ``rtol * SSR / n``, a fraction ``rtol`` of one unit of the estimated noise variance (the
  scale on which least-squares fits are statistically distinguishable), or the mean
  squared residual is below ``1e-26`` (noiseless data);
- *stalled*: the damping exceeds ``1e16``;
- *out of budget*: ``max_iter`` steps.

Only the first counts as converged. The loop is traceable; callers ``jit`` it together
with their normal equations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

#: ``theta (R, p) -> (SSR (R,), J^T r (R, p), J^T J (R, p, p))``.
NormalEquations = Callable[[Float[Array, "R p"]],
                           tuple[Float[Array, " R"], Float[Array, "R p"], Float[Array, "R p p"]]]


class LMState(NamedTuple):
    """The loop's state, one row per replicate."""

    theta: Float[Array, "R p"]
    ssr: Float[Array, " R"]
    grad: Float[Array, "R p"]     # J^T r (minus half the gradient of the SSR)
    hess: Float[Array, "R p p"]   # J^T J
    diag: Float[Array, "R p"]     # running max of diag(J^T J) (Marquardt scaling)
    lam: Float[Array, " R"]
    nu: Float[Array, " R"]
    it: Int[Array, " R"]
    nfev: Int[Array, " R"]
    done: Bool[Array, " R"]


def solve_spd(A: Float[Array, "R p p"], b: Float[Array, "R p"]) -> Float[Array, "R p"]:
    """``A^{-1} b`` for symmetric positive definite ``A`` (Cholesky)."""
    c, low = jax.scipy.linalg.cho_factor(A)
    return jax.scipy.linalg.cho_solve((c, low), b[..., None])[..., 0]


def decrement(grad: Float[Array, "R p"], hess: Float[Array, "R p p"]) -> Float[Array, " R"]:
    """Gauss-Newton decrement ``g^T H^+ g`` with a tiny ridge (rank-deficient H allowed)."""
    p = hess.shape[-1]
    scale = jnp.maximum(jnp.max(jnp.diagonal(hess, axis1=1, axis2=2), axis=1), 1e-300)
    A = hess + 1e-13 * scale[:, None, None] * jnp.eye(p, dtype=hess.dtype)
    return jnp.maximum(jnp.sum(grad * solve_spd(A, grad), -1), 0.0)


def levenberg_marquardt(normal_equations: NormalEquations, theta0: Float[Array, "R p"], *,
                        n_obs, max_iter, rtol) -> dict[str, Array]:
    """Run the loop from ``theta0`` until every replicate has stopped. Traceable.

    ``n_obs``: observations per replicate (the ``n`` of ``SSR / n``); ``max_iter``,
    ``rtol``: budget and stopping rule (scalars, may be traced). Returns ``theta (R, p)``,
    ``ssr``, ``mse = ssr / n_obs``, ``grad_norm`` (of the mean squared residual),
    ``decrement``, ``iterations``, ``nfev`` and ``converged`` (certified and finite), all
    with a leading replicate axis.
    """
    def bcast(mask, a):
        return mask.reshape(mask.shape + (1,) * (a.ndim - 1))

    def converged(s):
        return (decrement(s.grad, s.hess) <= rtol * s.ssr / n_obs) | (s.ssr <= 1e-26 * n_obs)

    R, p = theta0.shape
    dtype = theta0.dtype
    ssr, g, H = normal_equations(theta0)
    state = LMState(theta0, ssr, g, H, jnp.diagonal(H, axis1=1, axis2=2),
                    jnp.full((R,), 1e-3, dtype), jnp.full((R,), 2.0, dtype),
                    jnp.zeros((R,), jnp.int32), jnp.ones((R,), jnp.int32), jnp.zeros((R,), bool))
    state = state._replace(done=converged(state))

    def cond(s):
        return jnp.any(~s.done & (s.it < max_iter))

    def body(s):
        active = ~s.done & (s.it < max_iter)
        D = jnp.maximum(s.diag, 1e-300)
        A = s.hess + s.lam[:, None, None] * (D[:, :, None] * jnp.eye(p, dtype=dtype))
        delta = solve_spd(A, s.grad)
        theta_new = s.theta + delta
        ssr_new, g_new, H_new = normal_equations(theta_new)
        pred = 2.0 * jnp.sum(delta * s.grad, -1) - jnp.einsum("rp,rpq,rq->r", delta, s.hess, delta)
        rho = (s.ssr - ssr_new) / jnp.where(pred > 0, pred, 1e-300)
        ok = jnp.isfinite(ssr_new) & (ssr_new < s.ssr) & jnp.all(jnp.isfinite(delta), -1)
        lam_ok = s.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        new = LMState(
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
        "ssr": final.ssr,
        "mse": final.ssr / n_obs,
        "grad_norm": 2.0 * jnp.linalg.norm(final.grad, axis=-1) / n_obs,
        "decrement": decrement(final.grad, final.hess),
        "iterations": final.it,
        "nfev": final.nfev,
        "converged": converged(final) & jnp.isfinite(final.ssr),
    }


__all__ = ["LMState", "NormalEquations", "decrement", "levenberg_marquardt", "solve_spd"]
