r"""Simulated regression data from a mixture of experts: ``X ~ Unif[-1,1]^D``, ``Y = f_G(X) + N(0, nu)``.

Randomness comes only from explicit ``jax.random`` keys. :func:`standard_draws` returns the
inputs and *standard* normal noise, so a noise sweep can reuse the same draws for every
noise level (common random numbers): ``y = f_G(x) + sqrt(nu) * eps``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gated_hmoe import checks
from gated_hmoe.models import moe


def standard_draws(key: Array, *, n: int, D: int) -> tuple[Float[Array, "n D"], Float[Array, " n"]]:
    """Inputs ``x: (n, D)`` uniform on ``[-1, 1]^D`` and standard normal noise ``eps: (n,)``.

    >>> x, eps = standard_draws(jax.random.key(0), n=4, D=2)
    >>> x.shape, eps.shape, str(x.dtype)
    ((4, 2), (4,), 'float64')
    """
    checks.prng_key(key, "key")
    n = checks.positive_int(n, "n")
    D = checks.positive_int(D, "D")
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (n, D), dtype=jnp.float64, minval=-1.0, maxval=1.0)
    eps = jax.random.normal(ke, (n,), dtype=jnp.float64)
    return x, eps


def sample(key: Array, G: moe.MixingMeasure, *, n: int, noise_var: float, expert: str,
           gate: str = "linear") -> tuple[Float[Array, "n D"], Float[Array, " n"]]:
    """Draw ``n`` pairs ``(x: (n, D), y: (n,))`` with ``y = f_G(x) + N(0, noise_var)``.

    >>> G = moe.default_truth("sigmoid")
    >>> x, y = sample(jax.random.key(1), G, n=100, noise_var=1e-6, expert="sigmoid")
    >>> x.shape, y.shape
    ((100, 1), (100,))
    """
    G = moe.validate_measure(G, "G", expert=expert, gate=gate)
    nu = checks.real(noise_var, "noise_var", positive=True)
    x, eps = standard_draws(key, n=n, D=G.beta1.shape[1])
    f = moe.mean_unchecked(jax.tree.map(jnp.asarray, G), x, expert, gate)
    return x, f + math.sqrt(nu) * eps


def draws_and_means(keys: Array, G: moe.MixingMeasure, n: int, D: int, expert: str,
                    gate: str = "linear"
                    ) -> tuple[Float[Array, "R n D"], Float[Array, "R n"], Float[Array, "R n"]]:
    """Per key: inputs ``x: (R, n, D)``, standard normal noise ``eps: (R, n)`` and the
    regression function ``f: (R, n)`` of ``G`` (arrays) at ``x``, for ``keys: (R,)``.
    Unchecked, traceable (``n``, ``D``, ``expert``, ``gate`` static)."""
    x, eps = jax.vmap(lambda k: standard_draws(k, n=n, D=D))(keys)
    f = jax.vmap(lambda xx: moe.mean_unchecked(G, xx, expert, gate))(x)
    return x, eps, f


#: :func:`draws_and_means` compiled once per shape (``n``, ``D``, ``expert``, ``gate`` static).
draws_and_means_jit = jax.jit(draws_and_means, static_argnums=(2, 3, 4, 5))


def sample_batch(keys: Array, G: moe.MixingMeasure, *, n: int, noise_var: float, expert: str,
                 gate: str = "linear") -> tuple[Float[Array, "R n D"], Float[Array, "R n"]]:
    """One data set per key: ``keys: (R,)`` -> ``x: (R, n, D)``, ``y: (R, n)`` (one compiled
    program per shape; the same inputs and noise draws as :func:`sample` with each key)."""
    checks.prng_key(keys, "keys", batch=True)
    G = moe.validate_measure(G, "G", expert=expert, gate=gate)
    nu = checks.real(noise_var, "noise_var", positive=True)
    n = checks.positive_int(n, "n")
    x, eps, f = draws_and_means_jit(keys, jax.tree.map(jnp.asarray, G), n, G.beta1.shape[1],
                                     expert, gate)
    return x, f + math.sqrt(nu) * eps
