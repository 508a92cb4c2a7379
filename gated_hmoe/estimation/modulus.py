r"""The modulus ``m(delta)``: how visible an over-fitted pair at offset ``delta`` is in the
population (SPEC §5; the population version of the profile excess loss).

For a true measure with one atom split into an over-fitted pair at half-separation
``delta``, :func:`modulus_values` minimises the population distance
``||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` over everything else; :func:`modulus_curve` adds the
fitted exponent ``m ~ C delta^exponent`` (exactly 0 for linear experts -- the valley --
``~ delta^4`` for ridge experts under the linear gate).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from gated_hmoe import checks
from gated_hmoe.estimation import rates
from gated_hmoe.models import moe


def pair_theta(psi, delta, G_true, spec, atom, center, split=0.5):
    r"""Free parameters ``theta`` of the measure whose over-fitted pair sits at
    ``omega*_atom (+ c) ± delta * v/|v|`` with weights in the ratio ``split : 1 - split``.

    ``psi = (c0, v, [c,] the other atoms' free parameters)``: the pair's intercepts are
    ``c0 + log(2 split)`` and ``c0 + log(2 (1 - split))`` (equal, ``c0``, for the default
    ``split = 1/2``), ``v`` its direction (any length), ``c`` its centre relative to the true
    atom's location ``omega*_atom``. The pair comes first, then the other true atoms in
    order (the last one pinned). Traceable in ``psi`` and ``delta``.
    """
    k_true = G_true.beta0.shape[0]
    tg = moe.gate_params(spec.gate, G_true)                      # (k*, F)
    te = G_true.expert
    w = spec.omega_dim
    c0, v, rest = psi[0], psi[1: 1 + w], psi[1 + w:]
    u = v / jnp.linalg.norm(v)
    om = jnp.concatenate([tg[atom, 1:], te[atom]])
    if center:
        om, rest = om + rest[:w], rest[w:]
    pair = jnp.stack([om + delta * u, om - delta * u])
    c0s = jnp.stack([c0 + jnp.log(2.0 * split), c0 + jnp.log(2.0 * (1.0 - split))])
    pair_g = jnp.concatenate([c0s[:, None], pair[:, : spec.F - 1]], 1)
    pair_e = pair[:, spec.F - 1:]
    others = [j for j in range(k_true) if j != atom]
    n_free_g = (len(others) - 1) * spec.F
    og = jnp.concatenate([rest[:n_free_g].reshape(len(others) - 1, spec.F),
                          jnp.zeros((1, spec.F))]) if others else jnp.zeros((0, spec.F))
    oe = rest[n_free_g:].reshape(len(others), spec.P)
    gates = jnp.concatenate([pair_g, og])
    experts = jnp.concatenate([pair_e, oe])
    theta = jnp.concatenate([gates[:-1].reshape(-1), experts.reshape(-1)])
    return theta


def modulus_values(deltas, **kwargs) -> np.ndarray:
    r""":func:`modulus_solutions` without the minimisers: ``m(delta)``, shape ``(d,)``."""
    return modulus_solutions(deltas, **kwargs)[0]


def modulus_solutions(deltas, *, expert: str, gate: str = "linear",
                      G_true: moe.MixingMeasure | None = None, atom: int = 0,
                      center: bool = True, split: float = 0.5, quad_points: int = 200,
                      starts: int = 4, seed: int = 0, max_nfev: int = 2000,
                      stop_below: float | None = None, continuation: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    r"""``m(delta) = min ||f_G - f_{G*}||^2_{L^2(Unif[-1,1])}`` for each ``delta`` in
    ``deltas: (d,)``, over fits with one extra atom whose over-fitted pair sits at
    ``omega*_atom + c ± delta u`` (``|u| = 1``, equal weights; ``omega`` = the atom's gate
    parameters without the intercept, then its expert; ``delta`` is half the pair's
    separation; the common centre ``c`` is free when ``center=True``, fixed at 0 otherwise;
    the weights are in the ratio ``split : 1 - split``, equal by default).

    Minimised (scipy's trust-region reflective least squares, which runs the same path on
    every run; tolerances 1e-15, at most ``max_nfev`` evaluations, on a Gauss-Legendre rule with ``quad_points`` nodes, ``D = 1``, any gate
    class) over the direction ``u``, the pair's common intercept and all other atoms, from
    the coordinate axes and ``starts`` random directions of ``Generator(seed)``; the
    smallest value is kept. With ``stop_below`` set, further directions are skipped once a
    value ``<= stop_below`` is reached (``m`` cannot be negative). The residual and its
    Jacobian are compiled once, with ``delta`` as an argument. Exactly 0 for linear experts
    (the valley), ``~ delta^4`` for ridge experts under the linear gate. With
    ``continuation=True`` each offset is also started from its neighbours' minimisers, in
    passes down and up the grid until none improves (at most three), so that a branch found
    at one offset is followed to the others. Returns ``m: (d,)`` and the minimisers
    ``psi: (d, q)`` (the layout of :func:`pair_theta`).
    """
    checks.choice(expert, "expert", moe.EXPERTS)
    checks.choice(gate, "gate", moe.GATES)
    deltas = checks.finite_array(deltas, "deltas", ndim=1).astype(float)
    if deltas.size < 1 or np.any(deltas <= 0):
        raise ValueError(f"deltas must be a non-empty 1-d array of numbers > 0, got {deltas}")
    G = moe.default_truth(expert, gate=gate) if G_true is None else moe.validate_measure(
        G_true, "G_true", expert=expert, gate=gate)
    G = moe.pin_last(G)
    if G.beta1.shape[1] != 1:
        raise ValueError(f"G_true must have D = 1 (quadrature on [-1, 1]), got D={G.beta1.shape[1]}")
    k_true = G.beta0.shape[0]
    atom = checks.positive_int(atom, "atom", minimum=0)
    if atom >= k_true - 1:
        raise ValueError(f"atom must index a non-pinned true atom (< {k_true - 1}), got {atom}")
    quad_points = checks.positive_int(quad_points, "quad_points")
    starts = checks.positive_int(starts, "starts", minimum=0)
    max_nfev = checks.positive_int(max_nfev, "max_nfev")
    if stop_below is not None:
        stop_below = checks.real(stop_below, "stop_below", positive=True)
    split = checks.real(split, "split")
    if not 0 < split < 1:
        raise ValueError(f"split must be in (0, 1), got {split!r}")
    spec = moe.make_spec(expert=expert, gate=gate, k=k_true + 1, D=1)
    Gj = jax.tree.map(lambda a: None if a is None else jnp.asarray(a), G)
    nodes, weights = np.polynomial.legendre.leggauss(quad_points)
    xq = jnp.asarray(nodes)[:, None]
    sw = jnp.sqrt(jnp.asarray(weights) / 2.0)
    f_true = moe.mean_unchecked(Gj, xq, expert, gate)

    def resid(psi, delta):
        theta = pair_theta(psi, delta, Gj, spec, atom, center, split)
        return sw * (moe.mean_of_theta(theta, xq, spec) - f_true)

    r_jit, j_jit = jax.jit(resid), jax.jit(jax.jacfwd(resid))
    w = spec.omega_dim
    tg = np.asarray(moe.gate_params(gate, Gj))
    others = [j for j in range(k_true) if j != atom]
    rest0 = np.concatenate([tg[others][:-1].ravel(), np.asarray(G.expert)[others].ravel()])
    rng = np.random.default_rng(seed)
    dirs = list(np.eye(w)) + list(rng.standard_normal((starts, w)))

    def solve(delta, psi0):
        d = jnp.asarray(float(delta))
        sol = scipy.optimize.least_squares(
            lambda p: np.asarray(r_jit(jnp.asarray(p), d)), psi0,
            jac=lambda p: np.asarray(j_jit(jnp.asarray(p), d)), method="trf",
            xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=max_nfev)
        return float(np.sum(sol.fun ** 2)), sol.x

    out, solutions = [], []
    for delta in deltas:
        best, best_psi = np.inf, None
        for v in dirs:
            value, psi = solve(delta, np.concatenate([[float(G.beta0[atom]) - math.log(2)], v,
                                                      np.zeros(w if center else 0), rest0]))
            if value < best or best_psi is None:
                best, best_psi = min(best, value), psi
            if stop_below is not None and best <= stop_below:
                break
        out.append(best)
        solutions.append(best_psi)
    out, solutions = np.array(out), np.array(solutions)
    for _ in range(3 if continuation else 0):
        improved = False
        for order in (range(1, deltas.size), range(deltas.size - 2, -1, -1)):
            for i in order:
                j = i - 1 if order.step == 1 else i + 1
                value, psi = solve(deltas[i], solutions[j])
                if value < out[i] * (1 - 1e-9):
                    out[i], solutions[i], improved = value, psi, True
        if not improved:
            break
    return out, solutions


@dataclasses.dataclass(frozen=True)
class ModulusCurve:
    """``m(delta)`` for one expert and gate class; ``exponent`` the log-log slope and
    ``coef`` the ``C`` of ``m ~ C delta^exponent`` (both ``nan`` for a single offset or when
    some ``m`` is at round-off, ``<= floor``)."""

    expert: str
    gate: str
    deltas: np.ndarray
    m: np.ndarray
    exponent: float
    coef: float


def modulus_curve(deltas, *, expert: str, gate: str = "linear", floor: float = 1e-28,
                  **kwargs) -> ModulusCurve:
    """:func:`modulus_values` on a grid of offsets with the fitted exponent; ``kwargs`` go
    to :func:`modulus_values` (``starts``, ``quad_points``, ``seed``, ``max_nfev``,
    ``stop_below``, ...). Values ``<= floor`` count as zero to machine precision."""
    floor = checks.real(floor, "floor", positive=True)
    m = modulus_values(deltas, expert=expert, gate=gate, **kwargs)
    d = np.asarray(deltas, float)
    if m.size >= 2 and np.all(m > floor):
        b, a = rates.loglog_slope(d, m)
        return ModulusCurve(expert, gate, d, m, float(b), float(math.exp(a)))
    return ModulusCurve(expert, gate, d, m, float("nan"), float("nan"))


__all__ = ["ModulusCurve", "modulus_curve", "modulus_solutions", "modulus_values", "pair_theta"]
