r"""Declared starting points of least-squares fits (never the truth).

Every fit of the book starts from an initialisation recorded with its results:

- mixtures of experts (:class:`InitConfig`, :func:`initial_thetas`): ``near`` (truth plus
  Gaussian spread; exact fits), ``split`` (over-specified fits: one true atom split into
  several with centred offsets and equal cell weights, SPEC §5) or ``random`` (multi-start
  in a box);
- attention students (:func:`split_heads`): the same split applied to one teacher head.

Both splits draw their offsets with :func:`centred_offsets`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from gated_hmoe import checks
from gated_hmoe.models import heads, moe
from gated_hmoe.models.moe import ModelSpec

Array = jax.Array

INITS: tuple[str, ...] = ("near", "split", "random")


def centred_offsets(rng: np.random.Generator, m: int, shape: tuple[int, ...]
                    ) -> Float[np.ndarray, "m *shape"]:
    """``m`` standard normal offsets of ``shape``, centred over the ``m`` copies and rescaled
    by ``sqrt(m / (m - 1))`` so each keeps unit variance (``±z`` for ``m = 2``); returned
    uncentred for ``m = 1``. Draws ``rng.standard_normal((m,) + shape)``."""
    z = rng.standard_normal((m,) + tuple(shape))
    return (z - z.mean(0)) * math.sqrt(m / (m - 1)) if m > 1 else z


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
                   replicates: int) -> Float[np.ndarray, "R p"] | Float[np.ndarray, "R S p"]:
    """Starting points ``(R, p)`` for ``near``/``split``, ``(R, starts, p)`` for ``random``."""
    checks.prng_key(key, "key")
    moe.check_spec(spec)
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
        z = centred_offsets(rng, m, (spec.omega_dim,))
        cell = slice(j, j + m)
        noise_g[cell, 0] = 0.0
        g[cell, 0] -= math.log(m)
        noise_g[cell, 1:] = init.spread * z[:, : spec.F - 1]
        noise_e[cell] = init.spread * z[:, spec.F - 1:]
        g, e = g + noise_g, e + noise_e
        out[r] = np.concatenate([g[:-1].ravel(), e.ravel()])
    return out


def split_heads(position: str, *, teacher_heads: int, student_heads: int, spread: float,
                rng: np.random.Generator) -> dict:
    """Declared split start of an attention student with a surplus head (never the truth).

    Teacher head 0 becomes ``m = H - H* + 1`` student heads: router and leaf shape at the
    teacher's plus ``spread * z_c`` (centred Gaussian offsets, ``+-z`` for ``m = 2``), the
    head's weight shared equally (``w_V / m`` for linear and GLU leaves, ``w_O / m`` for the
    ridge form). Other teacher heads, and G5's shared gate, start at the teacher's plus
    ``N(0, spread^2)`` noise.
    """
    t = heads.teacher_params(position, teacher_heads)
    m = student_heads - teacher_heads + 1
    order = [0] * m + list(range(1, teacher_heads))
    s = {k: (v[order].copy() if k != "g5" else v.copy()) for k, v in t.items()}
    for k in s:
        shape = s[k].shape
        if k == "g5":
            s[k] = s[k] + spread * rng.standard_normal(shape)
            continue
        noise = spread * rng.standard_normal(shape)
        noise[:m] = spread * centred_offsets(rng, m, shape[1:])
        s[k] = s[k] + noise
    share = "wo" if position == "ridge" else "wv"
    if position != "ridge":
        # share the weight exactly, then perturb the direction: w_V/m + spread * z
        base = t["wv"][0] / m
        s["wv"][:m] = base + (s["wv"][:m] - t["wv"][0])
    else:
        s[share][:m] = t[share][0] / m
    return s
