"""The issue-4 question "a maintained solver or our own loop?": the same fits as
``bench_lm.py`` by ``optimistix.LevenbergMarquardt`` (``jax.vmap`` over replicates, one
compile per n, the library's per-replicate model ``moe.mean_of_theta`` with forward-mode
Jacobians, QR linear solves -- optimistix's defaults) against ``gated_hmoe.estimation.moe_fit.fit``.

Run by hand (not in CI; optimistix is not a dependency of the book):
    .venv/bin/pip install optimistix==0.1.0
    .venv/bin/python benchmarks/bench_optimistix.py [--ns 1000,10000,30000] [--one-device]
Like ``bench_lm.py`` it uses one JAX host device per core unless ``--one-device``; ours
shards the replicates over them, the optimistix ``vmap`` runs on the default device (with
its inputs sharded over two CPU devices the optimistix solve hung, idle, for minutes), so
compare both at ``--one-device``.
Both get 200 steps (tolerances 1e-300 so that the budget binds); prints seconds per fit,
the mean final mse / nu, and optimistix's step count.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench_lm import NU, problem  # noqa: E402
from gated_hmoe.estimation import moe_fit as est  # noqa: E402
from gated_hmoe.models import moe  # noqa: E402


def optx_fits(spec, steps):
    import optimistix as optx

    solver = optx.LevenbergMarquardt(rtol=1e-300, atol=1e-300)

    def one(theta0, xi, yi):
        sol = optx.least_squares(lambda t, _: yi - moe.mean_of_theta(t, xi, spec), solver, theta0,
                                 max_steps=steps, throw=False)
        r = yi - moe.mean_of_theta(sol.value, xi, spec)
        return sol.value, jnp.mean(r ** 2), sol.stats["num_steps"]

    return jax.jit(jax.vmap(one))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1000,10000,30000")
    ap.add_argument("--replicates", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--one-device", action="store_true")
    args = ap.parse_args()
    if not args.one_device:
        from gated_hmoe.__main__ import one_device_per_core
        one_device_per_core()               # before the first computation initialises JAX
    for n in [int(v) for v in args.ns.split(",")]:
        spec, x, y, th0 = problem(n, args.replicates)
        f = optx_fits(spec, args.steps)
        xs, ys, ts = jnp.asarray(x), jnp.asarray(y), jnp.asarray(th0)
        t0 = time.perf_counter()
        jax.block_until_ready(f(ts, xs, ys))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, mse, steps = jax.block_until_ready(f(ts, xs, ys))
        optx_s = (time.perf_counter() - t0) / args.replicates
        est.fit(x, y, th0, spec=spec, max_iter=args.steps, rtol=1e-300)
        t0 = time.perf_counter()
        ours = est.fit(x, y, th0, spec=spec, max_iter=args.steps, rtol=1e-300)
        ours_s = (time.perf_counter() - t0) / args.replicates
        print(json.dumps({"n": n, "jax_devices": len(jax.devices()),
                          "optimistix_s_per_fit": optx_s,
                          "optimistix_compile_s": first - optx_s * args.replicates,
                          "optimistix_mse_over_nu": float(np.mean(mse) / NU),
                          "optimistix_steps_mean": float(np.mean(steps)),
                          "ours_s_per_fit": ours_s, "ours_mse_over_nu": float(np.mean(ours.mse) / NU),
                          "ratio": optx_s / ours_s}), flush=True)


if __name__ == "__main__":
    main()
