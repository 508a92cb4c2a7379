"""Least squares for mixtures of experts and the one LM loop: Jacobian, agreement with scipy,
determinism, sharding, starting points; the jacfwd builder gives the same fits."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from gated_hmoe.estimation import head_fit, lm, moe_fit
from gated_hmoe.estimation import init as inits
from gated_hmoe.models import data, moe


@pytest.mark.parametrize("expert", moe.EXPERTS)
@pytest.mark.parametrize("gate", moe.GATES)
def test_analytic_jacobian(expert, gate):
    spec = moe.make_spec(expert=expert, gate=gate, k=3, D=2)
    theta = jnp.asarray(np.random.default_rng(0).normal(size=spec.num_params))
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (11, 2)))
    f, J = moe_fit.mean_and_jacobian(theta, x, spec)
    np.testing.assert_allclose(f, moe.mean_of_theta(theta, x, spec), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(J, jax.jacfwd(moe.mean_of_theta)(theta, x, spec), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("expert", moe.EXPERTS)
@pytest.mark.parametrize("gate", moe.GATES)
def test_planar_normal_equations_match_dense(expert, gate):
    """The batched, chunked, padded normal equations equal J^T J, J^T r, r^T r per replicate."""
    spec = moe.make_spec(expert=expert, gate=gate, k=3, D=2)
    rng = np.random.default_rng(2)
    R, n, chunk = 3, 37, 16                       # 3 chunks, the last one padded with weight 0
    theta = rng.normal(size=(R, spec.num_params))
    x = rng.uniform(-1, 1, (R, n, 2))
    y = rng.normal(size=(R, n))
    xt, yp, w = (np.zeros((R, 2, 48)), np.zeros((R, 48)), np.zeros((R, 48)))
    xt[:, :, :n], yp[:, :n], w[:, :n] = np.swapaxes(x, 1, 2), y, 1.0
    data = tuple(moe_fit.chunks(jnp.asarray(a), 3, chunk) for a in (xt, yp, w))
    ssr, g, H = moe_fit.normal_equations(jnp.asarray(theta), data, spec)
    for i in range(R):
        f, J = moe_fit.mean_and_jacobian(jnp.asarray(theta[i]), jnp.asarray(x[i]), spec)
        r = y[i] - np.asarray(f)
        np.testing.assert_allclose(ssr[i], r @ r, rtol=1e-12)
        np.testing.assert_allclose(g[i], np.asarray(J).T @ r, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(H[i], np.asarray(J).T @ np.asarray(J), rtol=1e-10, atol=1e-12)


def test_chunking_covers_n():
    for limit in (moe_fit.CHUNK, 1024, 256):
        for n in (1, 7, 2048, 2049, 30000, 100000):
            c, n_pad = moe_fit.chunking(n, limit)
            assert c % 8 == 0 and c <= limit + 8 and n <= n_pad < n + 8 * (n_pad // c) + 8


def test_chunks_shorten_with_many_replicates_per_device():
    assert moe_fit.chunk_limit(1) == moe_fit.CHUNK == moe_fit.chunk_limit(16)
    assert moe_fit.chunk_limit(32) == 1024 and moe_fit.chunk_limit(10_000) == 256
    assert all(moe_fit.chunk_limit(r) % 8 == 0 for r in range(1, 200))


def test_normal_equations_read_only_active_chunks():
    """With ``active`` chunks, samples in later chunks do not enter the sums."""
    spec = moe.make_spec(expert="sigmoid", k=2, D=1)
    rng = np.random.default_rng(3)
    R, chunk, m = 2, 8, 3
    theta = jnp.asarray(rng.normal(size=(R, spec.num_params)))
    xt, yp = rng.uniform(-1, 1, (R, 1, m * chunk)), rng.normal(size=(R, m * chunk))
    w = np.ones((R, m * chunk))
    chunks = lambda arrs: tuple(moe_fit.chunks(jnp.asarray(a), arrs[0].shape[-1] // chunk, chunk)  # noqa: E731
                                for a in arrs)
    full = moe_fit.normal_equations(theta, chunks((xt, yp, w)), spec, jnp.asarray(2))
    two = moe_fit.normal_equations(theta, chunks((xt[..., :16], yp[..., :16], w[..., :16])), spec)
    for a, b in zip(full, two):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_capacity_shares_one_compiled_fit():
    """Fits at two sample sizes with one ``capacity`` compile once and agree with the
    per-``n`` layout (exactly specified fits: to optimiser tolerance)."""
    G = moe.default_truth("sigmoid")
    spec = moe.make_spec(expert="sigmoid", k=2, D=1)
    th0 = inits.initial_thetas(jax.random.key(1), G, spec, inits.InitConfig("near", 0.05), 2)
    problems = []
    for n in (300, 900):
        x, y = data.sample_batch(jax.random.split(jax.random.key(n), 2), G, n=n,
                                 noise_var=1e-6, expert="sigmoid")
        problems.append((np.asarray(x), np.asarray(y)))
    shared = []
    for x, y in problems:
        shared.append(moe_fit.fit(x, y, th0, spec=spec, capacity=5000))
        if len(shared) == 1:
            compiled = moe_fit.fit_batch._cache_size()
    assert moe_fit.fit_batch._cache_size() == compiled            # the second n re-used the program
    for (x, y), a in zip(problems, shared):
        b = moe_fit.fit(x, y, th0, spec=spec)
        assert a.converged.all() and b.converged.all()
        np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(a.mse, b.mse, rtol=1e-10)
    with pytest.raises(ValueError, match="capacity must be >= the number of samples"):
        moe_fit.fit(x, y, th0, spec=spec, capacity=10)
    with pytest.raises(TypeError, match="capacity"):
        moe_fit.fit(x, y, th0, spec=spec, capacity=1e4)


def test_pack_unpack_roundtrip():
    G = moe.pin_last(moe.default_truth("glu", gate="quadratic-polynomial"))
    spec = moe.make_spec(expert="glu", gate="quadratic-polynomial", k=2, D=1)
    back = moe.unpack(moe.pack(G, spec), spec)
    for a, b in zip(G, back):
        np.testing.assert_array_equal(a, b)


def _problem(expert="sigmoid", k=2, n=300, R=3, nu=1e-4, init="near"):
    G = moe.default_truth(expert)
    spec = moe.make_spec(expert=expert, k=k, D=1)
    x, y = data.sample_batch(jax.random.split(jax.random.key(0), R), G, n=n, noise_var=nu,
                             expert=expert)
    th0 = inits.initial_thetas(jax.random.key(1), G, spec, inits.InitConfig(init, 0.1), R)
    return G, spec, np.asarray(x), np.asarray(y), th0


@pytest.mark.parametrize("expert", ["sigmoid", "linear"])
def test_agrees_with_scipy_least_squares(expert):
    G, spec, x, y, th0 = _problem(expert)
    res = moe_fit.fit(x, y, th0, spec=spec, rtol=1e-8)
    assert res.converged.all() and not res.failed.any()
    for r in range(x.shape[0]):
        xr = jnp.asarray(x[r])
        sol = scipy.optimize.least_squares(
            lambda t: np.asarray(moe.mean_of_theta(jnp.asarray(t), xr, spec)) - y[r], th0[r],
            jac=lambda t: np.asarray(moe_fit.mean_and_jacobian(jnp.asarray(t), xr, spec)[1]),
            method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
        assert res.mse[r] <= np.mean(sol.fun ** 2) * (1 + 1e-10)
        np.testing.assert_allclose(res.theta[r], sol.x, rtol=1e-5, atol=1e-6)


def test_deterministic_and_diagnostics():
    G, spec, x, y, th0 = _problem(k=3, init="split")
    a = moe_fit.fit(x, y, th0, spec=spec, max_iter=50)
    b = moe_fit.fit(x, y, th0, spec=spec, max_iter=50)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.iterations.max() <= 50 and a.grad_norm.shape == (3,)
    np.testing.assert_array_equal(a.failed, ~a.converged)


def test_failures_flagged_not_dropped():
    G, spec, x, y, th0 = _problem(k=3, init="split", R=2)
    res = moe_fit.fit(x, y, th0, spec=spec, max_iter=1, rtol=1e-30)
    assert res.theta.shape[0] == 2 and res.failed.all()


def test_random_multistart_keeps_best():
    G, spec, x, y, _ = _problem(R=2)
    th0 = inits.initial_thetas(jax.random.key(3), G, spec, inits.InitConfig("random", starts=3), 2)
    assert th0.shape == (2, 3, spec.num_params)
    best = moe_fit.fit_with_init(x, y, th0, spec=spec, max_iter=30)
    each = moe_fit.fit(np.repeat(x, 3, 0), np.repeat(y, 3, 0), th0.reshape(6, -1), spec=spec,
                   max_iter=30)
    np.testing.assert_allclose(best.mse, np.nanmin(each.mse.reshape(2, 3), 1))


def test_split_init_equal_weights_and_not_at_truth():
    G = moe.default_truth("silu")
    spec = moe.make_spec(expert="silu", k=3, D=1)
    th0 = inits.initial_thetas(jax.random.key(0), G, spec, inits.InitConfig("split", 0.1), 4)
    truth = np.asarray(moe.pack(G, moe.make_spec(expert="silu", k=2, D=1)))
    for t in th0:
        Gi = moe.unpack(jnp.asarray(t), spec)
        assert float(Gi.beta0[0]) == pytest.approx(float(Gi.beta0[1]))
        assert float(Gi.beta0[0]) == pytest.approx(0.5 - np.log(2))
        om = np.concatenate([np.asarray(Gi.beta1[:2]), np.asarray(Gi.expert[:2])], 1)
        np.testing.assert_allclose(om.mean(0), [5.0, 4.0, -2.0], atol=1e-12)  # symmetric split
        assert np.linalg.norm(om[0] - om[1]) > 0
    near = inits.initial_thetas(jax.random.key(0), G, moe.make_spec(expert="silu", k=2, D=1),
                              inits.InitConfig("near", 0.1), 4)
    assert np.all(np.abs(near - truth).max(1) > 0)


@pytest.mark.user_input
def test_bad_input():
    G, spec, x, y, th0 = _problem(R=2)
    with pytest.raises(ValueError, match="x must have shape"):
        moe_fit.fit(x[..., [0, 0]], y, th0, spec=spec)
    with pytest.raises(ValueError, match="y must"):
        moe_fit.fit(x, y[:, :-1], th0, spec=spec)
    with pytest.raises(ValueError, match="theta0"):
        moe_fit.fit(x, y, th0[:, :-1], spec=spec)
    with pytest.raises(ValueError, match="y must contain only finite"):
        moe_fit.fit(x, np.where(y > 0.5, np.nan, y), th0, spec=spec)
    with pytest.raises(ValueError, match="k_fit must be >= k_true"):
        inits.initial_thetas(jax.random.key(0), G, moe.make_spec(expert="sigmoid", k=1, D=1),
                           inits.InitConfig("random"), 2)
    with pytest.raises(ValueError, match="init"):
        inits.InitConfig("zero").validate()
    with pytest.raises(ValueError, match="near"):
        inits.initial_thetas(jax.random.key(0), G, moe.make_spec(expert="sigmoid", k=3, D=1),
                           inits.InitConfig("near"), 2)
    with pytest.raises(ValueError, match="expert"):
        moe.make_spec(expert="relu", k=2, D=1)
    with pytest.raises(ValueError, match="k must"):
        moe.make_spec(expert="linear", k=0, D=1)


@pytest.mark.parametrize("call, exc, match", [
    (lambda G, spec: inits.initial_thetas(0, G, spec, inits.InitConfig("near"), 2), TypeError, "key must be a JAX random key"),
    (lambda G, spec: inits.initial_thetas(jax.random.key(0), G, spec, "near", 2), TypeError, "init must be an InitConfig"),
    (lambda G, spec: inits.initial_thetas(jax.random.key(0), G, None, inits.InitConfig("near"), 2), TypeError, "spec must be a ModelSpec"),
    (lambda G, spec: inits.initial_thetas(jax.random.key(0), G._replace(beta0=np.array([np.nan, 0.0])), spec,
                                        inits.InitConfig("near"), 2), ValueError, "G_true.beta0 must contain only finite"),
    (lambda G, spec: inits.initial_thetas(jax.random.key(0), G, moe.make_spec(expert="sigmoid", gate="quadratic-monomial", k=2, D=1),
                                        inits.InitConfig("near"), 2), ValueError, "G_true.quad"),
    (lambda G, spec: moe.pack(G, moe.make_spec(expert="sigmoid", k=3, D=1)), ValueError, r"G.beta0 must have shape \(3,\)"),
    (lambda G, spec: moe.pack(G, moe.make_spec(expert="glu", k=2, D=1)), ValueError, "G.expert must have shape"),
    (lambda G, spec: moe.pack(G, "spec"), TypeError, "spec must be a ModelSpec"),
])
@pytest.mark.user_input
def test_bad_input_in_helpers_names_the_argument(call, exc, match):
    G = moe.default_truth("sigmoid")
    with pytest.raises(exc, match=match):
        call(G, moe.make_spec(expert="sigmoid", k=2, D=1))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"devices": 0}, ValueError, "devices must be an integer >= 1"),
    ({"devices": "1"}, TypeError, "devices must be an integer"),
    ({"rtol": True}, TypeError, "rtol must be a finite number > 0, got bool"),
])
@pytest.mark.user_input
def test_fit_rejects_bad_devices_and_rtol(kwargs, exc, match):
    G, spec, x, y, th0 = _problem(R=2)
    with pytest.raises(exc, match=match):
        moe_fit.fit(x, y, th0, spec=spec, **kwargs)


@pytest.mark.user_input
def test_data_keys_are_checked():
    G = moe.default_truth("linear")
    with pytest.raises(ValueError, match=r"keys must be a 1-d array of JAX random keys"):
        data.sample_batch(jax.random.key(0), G, n=3, noise_var=1.0, expert="linear")
    with pytest.raises(TypeError, match="key must be a JAX random key"):
        data.standard_draws(0, n=3, D=1)
    with pytest.raises(TypeError, match="key must be a JAX random key"):
        data.sample(0, G, n=3, noise_var=1.0, expert="linear")
    # legacy raw uint32 keys are keys too
    x, _ = data.standard_draws(jax.random.PRNGKey(0), n=3, D=1)
    assert x.shape == (3, 1)


SHARD_SCRIPT = textwrap.dedent("""
    import json, jax, numpy as np
    from gated_hmoe.estimation import init as inits, moe_fit
    from gated_hmoe.models import data, moe
    assert len(jax.devices()) == 2, jax.devices()
    G = moe.default_truth("sigmoid")
    spec = moe.make_spec(expert="sigmoid", k=2, D=1)
    x, y = data.sample_batch(jax.random.split(jax.random.key(0), 3), G, n=200,
                             noise_var=1e-4, expert="sigmoid")
    th0 = inits.initial_thetas(jax.random.key(1), G, spec, inits.InitConfig("near", 0.1), 3)
    out = {}
    for d in (1, 2):
        r = moe_fit.fit(np.asarray(x), np.asarray(y), th0, spec=spec, devices=d)
        out[d] = r.theta.tolist()
    print(json.dumps(out))
""")


def test_sharded_over_two_cpu_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["1"], out["2"], rtol=1e-9, atol=1e-11)


def test_lm_solves_a_linear_problem_like_lstsq():
    """On a linear model the loop's answer is the least-squares solution (numpy's lstsq)."""
    rng = np.random.default_rng(11)
    R, n, p = 3, 40, 4
    A = rng.normal(size=(R, n, p))
    y = rng.normal(size=(R, n))

    def ne(theta):
        r = y - jnp.einsum("rnp,rp->rn", A, theta)
        return (jnp.sum(r * r, -1), jnp.einsum("rnp,rn->rp", A, r),
                jnp.einsum("rnp,rnq->rpq", A, A))

    out = lm.levenberg_marquardt(ne, jnp.zeros((R, p)), n_obs=n, max_iter=50, rtol=1e-20)
    assert bool(np.all(out["converged"]))
    for r in range(R):
        np.testing.assert_allclose(out["theta"][r], np.linalg.lstsq(A[r], y[r], rcond=None)[0],
                                   rtol=1e-9, atol=1e-12)


def test_jacfwd_builder_matches_planar_normal_equations():
    """The attention students' builder (forward-mode Jacobian) and the MoE's planar normal
    equations feed the same loop to the same fit."""
    G, spec, x, y, th0 = _problem(R=2)
    planar = moe_fit.fit(x, y, th0, spec=spec, rtol=1e-8)

    def residual(theta, xx, yy):
        return yy - moe.mean_of_theta(theta, xx, spec)

    ne = head_fit.jacfwd_normal_equations(residual)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    out = lm.levenberg_marquardt(lambda t: ne(t, xj, yj), jnp.asarray(th0), n_obs=x.shape[1],
                                 max_iter=500, rtol=1e-8)
    assert bool(np.all(out["converged"])) and planar.converged.all()
    np.testing.assert_allclose(out["theta"], planar.theta, rtol=1e-6, atol=1e-8)
