"""Where one Levenberg-Marquardt iteration spends its time (run by hand, not in CI).

    taskset -c 1 .venv/bin/python benchmarks/bench_iteration.py [--n 30720] [--replicates 16]

Same problem as ``bench_lm.py`` (sigmoid experts, k* = 2 fitted with k = 3, split start).
On one JAX device it times, as process CPU time per fit and evaluation (minimum and median
over ``--rounds`` interleaved rounds; CPU time because this machine's wall-clock timings
vary by up to 2x):

- ``normal equations``: what the loop evaluates once per iteration (model, Jacobian and the
  augmented Gram matrix ``[J r]^T [J r]`` over all chunks);
- ``model + Jacobian``: the same without the Gram products (the ``(R, p+1, c)`` rows summed);
- ``model only``: the regression function alone;
- ``Gram only``: ``einsum("rpc,rqc->rpq")`` over stored rows;

and the cost of single elementwise operations (``exp``, division, ``jax.nn.sigmoid``) per
element, above that of an addition. It uses the library's internal chunk layout
(``moe_fit.chunks``, ``moe_fit.normal_equations``).
"""
import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from gated_hmoe.estimation import init as inits
from gated_hmoe.estimation import moe_fit as est
from gated_hmoe.models import data, moe

jax.config.update("jax_enable_x64", True)


def timings(fns: dict, rounds: int) -> dict:
    """``{name: (min, median)}`` process CPU seconds of ``fn()`` over interleaved rounds."""
    for fn in fns.values():
        jax.block_until_ready(fn())                      # compile
    runs = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.process_time()
            jax.block_until_ready(fn())
            runs[name].append(time.process_time() - t0)
    return {name: (min(v), float(np.median(v))) for name, v in runs.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30720, help="samples (a multiple of --chunk)")
    ap.add_argument("--replicates", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    if args.n % args.chunk:
        ap.error(f"--n ({args.n}) must be a multiple of --chunk ({args.chunk})")
    R, n, c = args.replicates, args.n, args.chunk
    m = n // c
    spec = moe.make_spec(expert="sigmoid", k=3, D=1)
    G = moe.default_truth("sigmoid")
    x, y = data.sample_batch(jax.random.split(jax.random.key(0), R), G, n=n, noise_var=1e-6,
                             expert="sigmoid")
    theta = inits.initial_thetas(jax.random.key(1), G, spec, inits.InitConfig("split", 0.1), R)
    xt = jnp.moveaxis(x, -1, 1)
    chunks = (est.chunks(xt, m, c), est.chunks(y, m, c), est.chunks(jnp.ones_like(y), m, c))
    p1 = spec.num_params + 1

    def rows(th, xc, yc, wc):                            # [J w, r]: (R, p+1, c)
        f, J = est.planar_mean_and_jacobian(th, xc, spec)
        return jnp.concatenate([J * wc[:, None], ((yc - f) * wc)[:, None]], 1)

    def over_chunks(body, init):
        return jax.lax.fori_loop(0, m, body, init)

    normal = jax.jit(lambda th, d: est.normal_equations(th, d, spec))
    model_jac = jax.jit(lambda th, d: over_chunks(
        lambda i, a: a + jnp.sum(rows(th, d[0][i], d[1][i], d[2][i]), -1), jnp.zeros((R, p1))))
    model = jax.jit(lambda th, d: over_chunks(
        lambda i, a: a + jnp.sum(est.planar_mean_and_jacobian(th, d[0][i], spec)[0], -1),
        jnp.zeros((R,))))
    stored = jax.jit(jax.vmap(lambda xc, yc, wc: rows(theta, xc, yc, wc)))(*chunks)
    gram = jax.jit(lambda J: over_chunks(
        lambda i, a: a + jnp.einsum("rpc,rqc->rpq", J[i], J[i]), jnp.zeros((R, p1, p1))))
    parts = timings({"normal equations": lambda: normal(theta, chunks),
                     "model + Jacobian": lambda: model_jac(theta, chunks),
                     "model only": lambda: model(theta, chunks),
                     "Gram only": lambda: gram(stored)}, args.rounds)
    print(f"sigmoid, k = 3, D = 1, p = {p1 - 1}; n = {n}, {R} replicates, chunks of {c}; "
          f"{jax.devices()[0].platform} x {len(jax.devices())}; CPU time per fit and evaluation")
    for name, (lo, med) in parts.items():
        line = f"  {name:17s} {lo / R * 1e3:7.3f} ms (median {med / R * 1e3:.3f})  " \
               f"{lo / (R * n) * 1e9:5.1f} ns per sample"
        if name == "Gram only":
            line += f"  {2 * p1 * p1 * n * R / lo / 1e9:.1f} GFLOP/s"
        print(line)

    u = jax.random.uniform(jax.random.key(2), (m, R, c), jnp.float64, -1.0, 1.0)
    ops = {"add": lambda v: v + 1.0, "exp": jnp.exp, "division": lambda v: 1.0 / (v + 3.0),
           "sigmoid": jax.nn.sigmoid}

    def elementwise(op):
        return jax.jit(lambda a: over_chunks(
            lambda i, s: s + jnp.sum(op(1.3 * a[i]) + op(0.7 * a[i] + 0.1) + op(0.2 * a[i] - 0.3), -1),
            jnp.zeros((R,))))

    compiled = {name: elementwise(op) for name, op in ops.items()}
    t = timings({name: functools.partial(f, u) for name, f in compiled.items()}, args.rounds)
    base = t["add"][0]
    print("elementwise, ns per element above an addition (min over rounds):")
    for name in ops:
        if name != "add":
            print(f"  {name:9s} {(t[name][0] - base) / (3 * m * R * c) * 1e9:.2f}")


if __name__ == "__main__":
    main()
