"""SPEC §7 benchmark: batched LM (gated_hmoe.estimation.moe_fit) vs scipy.optimize.least_squares(lm).

Run by hand (not in CI):  .venv/bin/python benchmarks/bench_lm.py [--baseline-replicates 16]
[--one-device]. Ours uses one JAX host device per core (as the command line does) unless
``--one-device``.
The baseline's model and Jacobian are plain numpy (checked against the library's analytic
Jacobian at start-up); MINPACK's LM re-uses the residual of the point it differentiates.
Problem: sigmoid experts, k*=2 fitted with k=3, split init spread 0.1, nu=1e-6, float64,
n in {1e3, 1e4, 3e4, 1e5}, 16 replicates. Baseline: one fit at a time, analytic Jacobian,
max_nfev=200, xtol=ftol=gtol=1e-14. Ours: batched fit, 200-iteration budget (rtol tiny so the
budget binds) and, separately, the library's own stopping rule (rtol=1e-3).
"""
import argparse
import json
import os
import subprocess
import sys
import time

T_START = time.perf_counter()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from gated_hmoe.estimation import init as inits
from gated_hmoe.estimation import moe_fit as est
from gated_hmoe.models import data, moe  # noqa: E402

T_IMPORT = time.perf_counter() - T_START
NU = 1e-6


def problem(n, R, seed=0):
    G = moe.default_truth("sigmoid")
    spec = moe.make_spec(expert="sigmoid", k=3, D=1)
    keys = jax.random.split(jax.random.key(seed), R)
    x, y = data.sample_batch(keys, G, n=n, noise_var=NU, expert="sigmoid")
    th0 = inits.initial_thetas(jax.random.key(seed + 1), G, spec, inits.InitConfig("split", 0.1), R)
    return spec, np.asarray(x), np.asarray(y), th0


def numpy_mean_and_jacobian(theta, x, k):
    """Baseline model in plain numpy (linear gate, sigmoid experts, D = 1): f (n,), J (n, p)."""
    x = x[:, 0]
    tg = theta[: 2 * (k - 1)].reshape(k - 1, 2)
    eta = theta[2 * (k - 1):].reshape(k, 2)
    z = np.zeros((x.size, k))
    z[:, : k - 1] = tg[:, 0] + np.outer(x, tg[:, 1])
    z -= z.max(1, keepdims=True)
    pi = np.exp(z)
    pi /= pi.sum(1, keepdims=True)
    h = 1.0 / (1.0 + np.exp(-(np.outer(x, eta[:, 0]) + eta[:, 1])))
    f = np.einsum("nk,nk->n", pi, h)
    J = np.empty((x.size, theta.size))
    c = pi[:, : k - 1] * (h[:, : k - 1] - f[:, None])
    J[:, 0: 2 * (k - 1): 2] = c
    J[:, 1: 2 * (k - 1): 2] = c * x[:, None]
    u = pi * h * (1.0 - h)
    J[:, 2 * (k - 1)::2] = u * x[:, None]
    J[:, 2 * (k - 1) + 1::2] = u
    return f, J


def scipy_fit(spec, x, y, th0):
    """One fit by scipy's MINPACK LM with the numpy model and analytic Jacobian."""
    cache = {}

    def both(t):
        key = t.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = numpy_mean_and_jacobian(t, x, spec.k)
        return cache[key]

    t0 = time.perf_counter()
    sol = scipy.optimize.least_squares(lambda t: both(t)[0] - y, th0, jac=lambda t: both(t)[1],
                                       method="lm", max_nfev=200, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    return time.perf_counter() - t0, float(np.mean(sol.fun ** 2) / NU), sol.nfev


def flops_per_rep_iter(n, p, k=3):
    # augmented Gram [J r]^T [J r] (2 n (p+1)^2) + residual/Jacobian elementwise (~40 n k)
    return n * (2 * (p + 1) ** 2 + 40 * k)


def timed_fits(x, y, th0, spec, args, *, rtol):
    """The last of ``args.repeats`` batched fits (200-iteration cap) and seconds per fit of each."""
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = est.fit(x, y, th0, spec=spec, max_iter=200, rtol=rtol)
        times.append((time.perf_counter() - t0) / args.replicates)
    return res, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-replicates", type=int, default=16)
    ap.add_argument("--replicates", type=int, default=16)
    ap.add_argument("--ns", default="1000,10000,30000,100000")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of our batched fit")
    ap.add_argument("--whole-process", action="store_true", help="internal: 64 reps at n=3e4")
    ap.add_argument("--one-device", action="store_true",
                    help="keep JAX's single CPU device (default: one host device per core, as "
                         "`python -m gated_hmoe` does)")
    args = ap.parse_args()
    if not args.one_device:
        from gated_hmoe.__main__ import one_device_per_core
        one_device_per_core()               # before the first computation initialises JAX
    if args.whole_process:       # the library's work only: data, compilation, 64 fits
        spec, x, y, th0 = problem(30000, 64)
        r = est.fit(x, y, th0, spec=spec, max_iter=200, rtol=1e-3)
        print(json.dumps({"mse_over_nu": float(np.mean(r.mse) / NU)}))
        return
    # the baseline's numpy model and Jacobian must be the library's
    spec, x, y, th0 = problem(100, 1)
    f_np, J_np = numpy_mean_and_jacobian(th0[0], x[0], spec.k)
    f_jx, J_jx = est.mean_and_jacobian(jnp.asarray(th0[0]), jnp.asarray(x[0]), spec)
    assert np.allclose(f_np, f_jx, rtol=1e-12, atol=1e-14) and np.allclose(J_np, J_jx, rtol=1e-10, atol=1e-13)
    rows = []
    for n in [int(v) for v in args.ns.split(",")]:
        spec, x, y, th0 = problem(n, args.replicates)
        t0 = time.perf_counter()
        r1 = est.fit(x, y, th0, spec=spec, max_iter=200, rtol=1e-300)
        first = time.perf_counter() - t0
        # steady state: median of --repeats timed calls (this VM's timings vary by up to 2x)
        r1, times = timed_fits(x, y, th0, spec, args, rtol=1e-300)
        r2, times_stop = timed_fits(x, y, th0, spec, args, rtol=1e-3)
        steady, own = float(np.median(times)), float(np.median(times_stop))
        base = [scipy_fit(spec, x[i], y[i], th0[i]) for i in range(args.baseline_replicates)]
        bt = float(np.mean([b[0] for b in base]))
        it = float(np.mean(r1.iterations))
        row = {"n": n, "scipy_s_per_fit": bt, "scipy_mse_over_nu": float(np.mean([b[1] for b in base])),
               "scipy_nfev": float(np.mean([b[2] for b in base])),
               "ours200_s_per_fit": steady, "ours200_s_per_fit_all": times, "ours200_mse_over_nu": float(np.mean(r1.mse[:args.baseline_replicates]) / NU),
               "ours200_iterations": it, "compile_s": first - steady * args.replicates,
               "ours_stop_s_per_fit": own, "ours_stop_mse_over_nu": float(np.mean(r2.mse[:args.baseline_replicates]) / NU),
               "ours_stop_iterations_mean": float(np.mean(r2.iterations)),
               "ours_stop_iterations_max": int(np.max(r2.iterations)),
               "ratio_200": bt / steady, "ratio_stop": bt / own,
               "gflops_200": flops_per_rep_iter(n, spec.num_params) * it / steady / 1e9}
        rows.append(row)
        print(json.dumps(row), flush=True)
    wholes = []
    for _ in range(args.repeats):                 # whole process: median of --repeats runs
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--whole-process"]
                              + (["--one-device"] if args.one_device else []),
                              capture_output=True, text=True, check=True)
        wholes.append(time.perf_counter() - t0)
    whole = float(np.median(wholes))
    n3 = [r for r in rows if r["n"] == 30000]
    out = {"import_s": T_IMPORT, "whole_process_64_at_3e4_s": whole,
           "whole_process_all_s": wholes,
           "whole_process_out": proc.stdout.strip()[-200:],
           "scipy_64_fits_estimate_s": 64 * n3[0]["scipy_s_per_fit"] if n3 else None,
           "cpu_count": os.cpu_count(), "jax_devices": len(jax.devices()), "load_avg": os.getloadavg(),
           "rows": rows}
    if n3:
        out["whole_process_ratio"] = out["scipy_64_fits_estimate_s"] / whole
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
