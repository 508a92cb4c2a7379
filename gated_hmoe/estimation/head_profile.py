r"""Profile confidence sets for attention layers: the over-fitted pair is a surplus head.

A student with one head more than its teacher (:mod:`gated_hmoe.models.heads`) can split a
teacher head ``h*`` into two heads ``a, b``. Each head is an atom of the hierarchical MoE:
its *router* (key map ``W_K^h`` and, where the position has one, the gate weights) and
its *leaf* (value map ``W_V^h`` and, for the value activation, the biases ``b^h``). The
profile pins the separation of the pair's **value maps** and leaves every other weight
free:

.. math::
    V^a = \bar V + c + \delta\,u, \qquad V^b = \bar V + c - \delta\,u, \qquad \|u\| = 1,

with ``V = (W_V, b)`` flattened, ``c`` the pair's free centre, ``u = v/\|v\|`` its free
direction, ``delta`` half the separation (as for mixtures of experts,
:func:`gated_hmoe.estimation.modulus.pair_theta`), and the two routers free separately.
Where the output row ``W_O^h`` is the head's mass (:data:`~gated_hmoe.models.heads.MASSFUL`:
the value activation and the G2 gate tied to the values) the masses stay in a fixed split,
``W_O^a = 2 s M`` and ``W_O^b = 2 (1 - s) M`` with ``M`` free (so the surplus head cannot
switch itself off), and ``\bar V = V^*_{h^*}``; elsewhere ``W_O^h = 1`` and the value scale
is the mass, so ``\bar V = V^*_{h^*}/2`` (the two halves of the teacher head).

For leaves linear in ``W_V`` (MHSA, literal G1/G2 gates, G3-G5) the student with equal
routers reproduces the teacher exactly at every ``delta``: the profile excess is ``O(nu)``
along the whole valley. For ridge leaves (value activation, tied G2) it grows like
``n delta^4`` near the split and the resolvable radius shrinks like ``n^{-1/4}``; but at
``delta = ||V*||/2`` (:meth:`PairLayout.dead_head_offset`) one head of the pair can carry
the whole teacher head while the other has a zero leaf and outputs nothing -- a second
branch of exact fits, on which a head is switched off by its value map (the fixed split
of the masses does not prevent it). Radii are therefore taken on the profile set's first
component (``connected=True`` in :func:`gated_hmoe.estimation.profile.radius`): a *local*
radius. The dead-head branch gets its own verdict (:func:`dead_head_fits`): a surplus head
with a zero value map outputs nothing whatever its router, so the least-squares minimum
over that branch is the least-squares fit of the exactly specified student (``H*`` heads),
and its excess over the profile's reference minimum, in units of ``nu``, is compared with
the same threshold ``c``.

:class:`AttentionPairProblem` supplies the constrained fits and the unconstrained polish
that :func:`gated_hmoe.estimation.profile.profile` turns into the profile excess loss and
the resolvable radius. The fits run the one loop (:mod:`gated_hmoe.estimation.lm`) on normal equations formed by forward-mode Jacobians
(:func:`~gated_hmoe.estimation.head_fit.jacfwd_normal_equations`).

``psi = (v, c, router_a, router_b, [M], the other heads' (router, leaf, [mass]), [g5])``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float

from gated_hmoe import checks
from gated_hmoe.estimation import head_fit, lm, profile, thresholds
from gated_hmoe.estimation.profile import PairFits
from gated_hmoe.models import heads

#: Per-head weights of a router and of a leaf, in the order they are flattened.
ROUTER_KEYS: tuple[str, ...] = ("wk", "t", "wg")
LEAF_KEYS: tuple[str, ...] = ("wv", "b")


class PairLayout:
    """The map ``(psi, delta) -> student weights`` for a teacher with ``H*`` heads whose head
    ``atom`` is split; student heads: the pair ``a, b`` first, then the other teacher heads.

    ``teacher``: weights of :func:`gated_hmoe.models.heads.layer_teacher` (value-channel
    axis present). Attributes: ``q`` (length of ``psi``), ``leaf_dim`` (length of ``V``),
    ``router_dim``, ``massful``.
    """

    def __init__(self, position: str, teacher: dict, *, atom: int = 0, split: float = 0.5):
        self.position = heads.check_layer_position(position)
        self.teacher = {k: np.asarray(v, np.float64) for k, v in teacher.items()}
        if self.teacher["wv"].ndim != 3:
            raise ValueError("teacher['wv'] must have shape (H, d, d_v) (heads.layer_teacher)")
        self.H = self.teacher["wv"].shape[0]
        if not 0 <= atom < self.H:
            raise ValueError(f"atom must be in [0, {self.H}), got {atom!r}")
        split = checks.real(split, "split")
        if not 0 < split < 1:
            raise ValueError(f"split must be in (0, 1), got {split!r}")
        self.atom, self.split = atom, split
        self.router_keys = tuple((k, self.teacher[k].shape[1:]) for k in ROUTER_KEYS
                                 if k in self.teacher)
        self.leaf_keys = tuple((k, self.teacher[k].shape[1:]) for k in LEAF_KEYS
                               if k in self.teacher)
        self.router_dim = sum(math.prod(s) for _, s in self.router_keys)
        self.leaf_dim = sum(math.prod(s) for _, s in self.leaf_keys)
        self.massful = self.position in heads.MASSFUL
        self.mass_dim = self.teacher["wo"].shape[1] if self.massful else 0
        self.g5_dim = self.teacher["g5"].size if "g5" in self.teacher else 0
        self.others = [h for h in range(self.H) if h != atom]
        per_head = self.router_dim + self.leaf_dim + self.mass_dim
        self.q = 2 * self.leaf_dim + 2 * self.router_dim + self.mass_dim \
            + len(self.others) * per_head + self.g5_dim
        leaf_star = self.flat(self.teacher, atom, self.leaf_keys)
        self.centre_star = jnp.asarray(leaf_star if self.massful else leaf_star / 2.0)

    def dead_head_offset(self) -> float:
        """``||V*||/2`` for massful positions: the offset at which the pair can be the split
        head itself (``V^a = V*``, mass ``W_O*``) plus a head with a zero leaf, which outputs
        nothing -- an exact fit on a second branch of the profile. ``nan`` elsewhere (there
        the whole valley is exact)."""
        if not self.massful:
            return float("nan")
        return float(np.linalg.norm(self.flat(self.teacher, self.atom, self.leaf_keys)) / 2.0)

    @staticmethod
    def flat(p: dict, h: int, keys) -> np.ndarray:
        """Head ``h``'s weights named in ``keys`` (router or leaf), flattened."""
        return np.concatenate([np.ravel(np.asarray(p[k])[h]) for k, _ in keys])

    @staticmethod
    def _unflatten(vec, keys) -> dict:
        out, i = {}, 0
        for k, shape in keys:
            size = math.prod(shape)
            out[k] = vec[i: i + size].reshape(shape)
            i += size
        return out

    def student(self, psi: Float[Array, " q"], delta) -> dict:
        """Student weights (dict of arrays with a leading head axis: pair, then the others),
        :func:`gated_hmoe.models.heads.layer_output` layout. Traceable."""
        L, Rd, md = self.leaf_dim, self.router_dim, self.mass_dim
        v, c = psi[:L], psi[L: 2 * L]
        i = 2 * L
        u = v / jnp.linalg.norm(v)
        centre = self.centre_star + c
        leaves = [centre + delta * u, centre - delta * u]
        routers = [psi[i: i + Rd], psi[i + Rd: i + 2 * Rd]]
        i += 2 * Rd
        masses = []
        if self.massful:
            M = psi[i: i + md]
            i += md
            masses = [2.0 * self.split * M, 2.0 * (1.0 - self.split) * M]
        for _ in self.others:
            routers.append(psi[i: i + Rd])
            leaves.append(psi[i + Rd: i + Rd + L])
            i += Rd + L
            if self.massful:
                masses.append(psi[i: i + md])
                i += md
        parts = [{**self._unflatten(r, self.router_keys), **self._unflatten(lf, self.leaf_keys)}
                 for r, lf in zip(routers, leaves)]
        p = {k: jnp.stack([pt[k] for pt in parts]) for k in parts[0]}
        if self.massful:
            p["wo"] = jnp.stack(masses)
        if self.g5_dim:
            p["g5"] = psi[i: i + self.g5_dim]
        return p

    def declared_start(self, direction: ArrayLike | None = None) -> np.ndarray:
        """A declared ``psi`` at the teacher: direction ``direction`` in leaf space (default
        the first value weight), centre ``c = 0``, both routers at the split head's, mass
        ``M = W_O^*/2`` (the halves of the teacher head's), the other heads and ``g5`` at
        the teacher's values."""
        if direction is None:
            direction = np.eye(self.leaf_dim)[0]
        direction = checks.finite_array(direction, "direction", shape=(self.leaf_dim,))
        if not np.any(direction):
            raise ValueError("direction must be non-zero")
        router = self.flat(self.teacher, self.atom, self.router_keys)
        parts = [direction, np.zeros(self.leaf_dim), router, router]
        if self.massful:
            parts.append(self.teacher["wo"][self.atom] / 2.0)
        for h in self.others:
            parts += [self.flat(self.teacher, h, self.router_keys),
                      self.flat(self.teacher, h, self.leaf_keys)]
            if self.massful:
                parts.append(self.teacher["wo"][h])
        if self.g5_dim:
            parts.append(np.ravel(self.teacher["g5"]))
        return np.concatenate(parts)


class AttentionPairProblem:
    """The constrained fits of a profile for attention layers (the interface of
    :func:`gated_hmoe.estimation.profile.profile`).

    ``x (R, n, N, d)``, ``y (R, n, N, 1)``: ``R`` data sets of ``n`` sequences, each fitted
    twice per offset (two starts). The reference minimum is over the same family with the
    offset free (:meth:`polish`): the split of the pair's masses stays fixed, so the
    excess is the likelihood-ratio statistic of the one constraint ``delta``.
    """

    def __init__(self, x: Float[ArrayLike, "R n N d"], y: Float[ArrayLike, "R n N 1"], *,
                 position: str, teacher: dict, atom: int = 0, split: float = 0.5,
                 max_iter: int = 200, rtol: float = 1e-2, polish_iter: int = 200):
        self.x = checks.finite_array(x, "x", ndim=4)
        self.y = checks.finite_array(y, "y", ndim=4)
        if self.y.shape != self.x.shape[:3] + (1,):
            raise ValueError(f"y must have shape {self.x.shape[:3] + (1,)}, got {self.y.shape}")
        self.layout = PairLayout(position, teacher, atom=atom, split=split)
        self.position, self.split = self.layout.position, self.layout.split
        self.R, self.n = self.x.shape[:2]
        self.q = self.layout.q
        self.p = self.q + 1
        self.max_iter = checks.positive_int(max_iter, "max_iter")
        self.rtol = checks.real(rtol, "rtol", positive=True)
        self.polish_iter = checks.positive_int(polish_iter, "polish_iter")
        self._fit = jax.jit(self._fit_batch)
        self._polish = jax.jit(self._polish_batch)

    def residual(self, psi: Float[Array, " q"], delta, x: Float[Array, "n N d"],
                 y: Float[Array, "n N 1"]) -> Float[Array, " m"]:
        """``y - f(x)`` flattened, for the student ``layout.student(psi, delta)``. Traceable."""
        return (y - heads.batched_output(self.layout.student(psi, delta), x,
                                         self.position)).reshape(-1)

    def _fit_batch(self, psi0, delta, x, y):
        ne = head_fit.jacfwd_normal_equations(self.residual)
        out = lm.levenberg_marquardt(lambda psi: ne(psi, delta, x, y), psi0,
                                     n_obs=y[0].size, max_iter=self.max_iter, rtol=self.rtol)
        out["full_theta"] = jnp.concatenate([out["theta"], delta[:, None]], 1)
        return out

    def _polish_batch(self, theta0, x, y):
        ne = head_fit.jacfwd_normal_equations(
            lambda th, xx, yy: self.residual(th[:-1], th[-1], xx, yy))
        return lm.levenberg_marquardt(lambda th: ne(th, x, y), theta0, n_obs=y[0].size,
                                      max_iter=self.polish_iter, rtol=self.rtol)

    def fit(self, psi0: Float[ArrayLike, "R2 q"], delta: float) -> PairFits:
        """Constrained fits at offset ``delta``; rows ``[0, R)`` and ``[R, 2R)`` are the two
        starts of the ``R`` data sets. ``theta`` of the result is ``(psi, delta)``."""
        psi0 = checks.finite_array(psi0, "psi0", shape=(2 * self.R, self.q))
        delta = checks.real(delta, "delta")
        if delta < 0:
            raise ValueError(f"delta must be >= 0 (half the pair's separation), got {delta}")
        twice = [jnp.asarray(np.concatenate([a, a])) for a in (self.x, self.y)]
        out = self._fit(jnp.asarray(psi0), jnp.full(2 * self.R, delta), *twice)
        out = {k: np.asarray(v) for k, v in out.items()}
        finite = np.isfinite(out["ssr"]) & np.all(np.isfinite(out["theta"]), 1)
        return PairFits(out["theta"], out["full_theta"], out["ssr"], out["decrement"],
                        out["converged"] & finite)

    def polish(self, theta: Float[ArrayLike, "R p"]) -> Float[np.ndarray, " R"]:
        """Residual sums of squares of fits over ``(psi, delta)`` -- the pair's offset free,
        its split kept -- from ``theta`` (upper bounds on the minimum over the split family;
        ``inf`` where not finite)."""
        theta = checks.finite_array(theta, "theta", shape=(self.R, self.p))
        out = self._polish(jnp.asarray(theta), jnp.asarray(self.x), jnp.asarray(self.y))
        ssr = np.asarray(out["ssr"])
        return np.where(np.isfinite(ssr), ssr, np.inf)


def dead_head_fits(x: Float[ArrayLike, "R n N d"], y: Float[ArrayLike, "R n N 1"], *,
                   position: str, teacher: dict, max_iter: int = 200,
                   rtol: float = 1e-2) -> dict[str, np.ndarray]:
    r"""The dead-head branch's minimum per data set: least-squares fits of the exactly
    specified student (the teacher's ``H*`` heads, every weight of the class free) to
    ``x (R, n, N, d)``, ``y (R, n, N, 1)``, each started from the teacher ``teacher``
    (:func:`gated_hmoe.models.heads.layer_teacher` layout).

    A student with one head more whose surplus head has a zero leaf (value map, and biases
    where the leaf has them) outputs what its other ``H*`` heads output, for every router of
    the surplus head: ``min{L_n(G) : surplus leaf = 0}`` over the over-fitted class is the
    least-squares minimum of the exactly specified class. The fit here is that branch's
    minimum *near the teacher* (a local minimum, started from the teacher, certified like
    every fit of the book by the loop's Gauss-Newton decrement,
    :func:`gated_hmoe.estimation.head_fit.fit_students`); a lower minimum elsewhere on the
    branch would only lower the excess.

    Returns ``ssr (R,)`` (``nan`` where not finite), ``certified (R,)`` (converged and
    finite), ``decrement (R,)``, ``iterations (R,)`` and the fitted weights ``theta (R, p)``
    (flattened as ``jax.flatten_util.ravel_pytree`` flattens ``teacher``).
    """
    position = heads.check_layer_position(position)
    x = checks.finite_array(x, "x", ndim=4)
    y = checks.finite_array(y, "y", ndim=4)
    if y.shape != x.shape[:3] + (1,):
        raise ValueError(f"y must have shape {x.shape[:3] + (1,)}, got {y.shape}")
    theta0, unravel = ravel_pytree({k: jnp.asarray(v, jnp.float64) for k, v in teacher.items()})
    out = head_fit.fit_students(x, y, np.tile(np.asarray(theta0), (x.shape[0], 1)),
                                unravel=unravel, position=position, max_iter=max_iter,
                                rtol=rtol)
    finite = np.isfinite(out["ssr"]) & np.all(np.isfinite(out["theta"]), 1)
    return {"ssr": np.where(finite, out["ssr"], np.nan), "certified": out["converged"] & finite,
            "decrement": out["decrement"], "iterations": out["iterations"],
            "theta": out["theta"]}


def dead_head_excess(ssr_dead: Float[ArrayLike, " R"], certified: ArrayLike,
                     ssr_min: Float[ArrayLike, " R"], nu: float) -> np.ndarray:
    r"""``Delta L_dead = (min over the dead-head branch - min_G L_n) / nu`` per data set, with
    ``min_G L_n`` the smaller of the profile's reference ``ssr_min`` and the branch's own
    minimum ``ssr_dead`` (both are upper bounds on the over-fitted class's minimum, so the
    excess is ``>= 0``); ``nan`` where the branch's fit is not certified or the reference is
    not finite.

    >>> dead_head_excess(np.array([10.0, 4.0, 7.0]), np.array([True, True, False]),
    ...                  np.array([6.0, 5.0, 5.0]), 0.5).tolist()
    [8.0, 0.0, nan]
    """
    nu = checks.real(nu, "nu", positive=True)
    ssr_dead = np.asarray(ssr_dead, float)
    ssr_min = np.asarray(ssr_min, float)
    ok = np.asarray(certified, bool) & np.isfinite(ssr_dead) & np.isfinite(ssr_min)
    with np.errstate(invalid="ignore"):
        excess = (ssr_dead - np.minimum(ssr_min, ssr_dead)) / nu
    return np.where(ok, excess, np.nan)


class AttentionProfileProblem:
    r"""The surplus head's profile excess at one grid offset as a bootstrap problem (the
    hooks of :class:`gated_hmoe.estimation.thresholds.BootstrapProblem`).

    ``observe(x, y)`` runs :func:`gated_hmoe.estimation.profile.profile` on ``R`` data sets
    ``x (R, n, N, d)``, ``y (R, n, N, 1)`` (:class:`AttentionPairProblem`, offsets
    ``deltas``, shared ``starts (K, q)`` plus continuation, the local component
    ``connected``), identically on observed and simulated data; ``excess`` is
    ``Delta L_n(deltas[at]) / nu``. The null fitted to a data set is the truth's own offset,
    ``delta = 0``: the exactly specified student (``H*`` heads, every weight free), fitted by
    least squares from the teacher (:func:`dead_head_fits`); ``deltas[at]``
    is the stand-in offset nearest 0, and its population part is in the statistic.
    """

    def __init__(self, *, position: str, teacher: dict, deltas: ArrayLike, starts: ArrayLike,
                 nu: float, at: int = 0, split: float = 0.5, max_iter: int = 200,
                 rtol: float = 1e-2, connected: bool = True, backward: bool = False):
        self.position = heads.check_layer_position(position)
        self.teacher = teacher
        self.layout = PairLayout(self.position, teacher, split=split)
        self.deltas = checks.finite_array(deltas, "deltas", ndim=1)
        self.starts = checks.finite_array(starts, "starts", shape=(self.deltas.size, self.layout.q))
        self.nu = checks.real(nu, "nu", positive=True)
        self.at = checks.positive_int(at, "at", minimum=0)
        if self.at >= self.deltas.size:
            raise ValueError(f"at must index deltas (< {self.deltas.size}), got {at}")
        self.split = split
        self.max_iter = checks.positive_int(max_iter, "max_iter")
        self.rtol = checks.real(rtol, "rtol", positive=True)
        self.connected, self.backward = bool(connected), bool(backward)
        self._theta0, self._unravel = ravel_pytree(
            {k: jnp.asarray(v, jnp.float64) for k, v in teacher.items()})

    def observe(self, x, y, parent=None, rows=None) -> profile.Profile:
        pp = AttentionPairProblem(x, y, position=self.position, teacher=self.teacher,
                                  split=self.split, max_iter=self.max_iter, rtol=self.rtol,
                                  polish_iter=self.max_iter)
        return profile.profile(pp, deltas=self.deltas, starts=self.starts, nu=self.nu,
                               connected=self.connected, backward=self.backward)

    def excess(self, prof: profile.Profile) -> np.ndarray:
        return prof.excess[:, self.at]

    def null_mean(self, x, y, prof: profile.Profile) -> tuple[np.ndarray, np.ndarray]:
        fits = dead_head_fits(x, y, position=self.position, teacher=self.teacher,
                              max_iter=self.max_iter, rtol=self.rtol)
        ok = fits["certified"]
        theta = np.where(ok[:, None], fits["theta"], np.asarray(self._theta0)[None])
        f = jax.vmap(lambda t, xx: heads.batched_output(self._unravel(t), xx, self.position))(
            jnp.asarray(theta), jnp.asarray(x))
        return np.asarray(f), ok


def split_lrt_excess(x: Float[ArrayLike, "R n N d"], y: Float[ArrayLike, "R n N 1"], *,
                     position: str, teacher: dict, deltas: ArrayLike, starts: ArrayLike,
                     nu: float, alpha: float = 0.05, split: float = 0.5, max_iter: int = 200,
                     rtol: float = 1e-2, connected: bool = True,
                     backward: bool = False) -> thresholds.SplitLRT:
    r"""The split-LRT set of the surplus head's offset for ``R`` data sets of sequences (the
    attention form of :func:`gated_hmoe.estimation.thresholds.split_lrt_excess`).

    ``D1`` (:func:`~gated_hmoe.estimation.thresholds.split_halves` of the sequences): the
    profile on ``D1``; ``theta_1`` is its best certified constrained fit (any function of
    ``D1`` keeps the guarantee). ``D0``: the profile's constrained minima at ``deltas``;
    ``S(delta) = (min_{pair at delta} L_{D0} - L_{D0}(theta_1)) / nu``
    (:func:`~gated_hmoe.estimation.thresholds.split_lrt_statistic`), and the radius of
    ``{delta : S(delta) <= 2 log(1/alpha)}`` on the component ``connected`` chooses.
    """
    x = checks.finite_array(x, "x", ndim=4)
    y = checks.finite_array(y, "y", shape=x.shape[:3] + (1,))
    kw = dict(position=position, teacher=teacher, split=split, max_iter=max_iter, rtol=rtol,
              polish_iter=max_iter)
    layout = PairLayout(position, teacher, split=split)

    def predict(theta, x0):
        return jax.vmap(lambda th, xx: heads.batched_output(
            layout.student(th[:-1], th[-1]), xx, position))(jnp.asarray(theta), jnp.asarray(x0))

    return thresholds.split_lrt(x, y, make_problem=lambda xx, yy: AttentionPairProblem(xx, yy, **kw),
                                predict=predict, deltas=deltas, starts=starts, nu=nu,
                                alpha=alpha, connected=connected, backward=backward)


__all__ = ["AttentionPairProblem", "AttentionProfileProblem", "split_lrt_excess", "LEAF_KEYS", "PairLayout", "ROUTER_KEYS", "dead_head_excess",
           "dead_head_fits"]
