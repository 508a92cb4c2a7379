"""E2, the attention students: the layers against dense loops (models.heads), the exact-fit
valley, Voronoi head losses, the split start, the batched fit, the sweep cache and the CLI."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gated_hmoe import cli
from gated_hmoe.estimation import head_fit, voronoi
from gated_hmoe.estimation import init as inits
from gated_hmoe.experiments import e2_attention as e2
from gated_hmoe.experiments import runner
from gated_hmoe.models import heads as af


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _reference(p, x, position):
    """Dense loop over heads, query and key tokens (independent of attention.py)."""
    N, d = x.shape
    H = p["wk"].shape[0]
    out = np.zeros(N)
    for h in range(H):
        wk = p["wk"][h]
        for i in range(N):
            q = x[i].copy()
            if position == "G4":
                q = q * _sig(x[i] @ p["wg"][h])
            scores = []
            for j in range(N):
                k = x[j] @ wk
                if position == "G3":
                    k = k * _sig(x[j] @ p["wg"][h])
                scores.append(q @ k / math.sqrt(d))
            pi = np.exp(scores - np.max(scores))
            pi /= pi.sum()
            for j in range(N):
                if position == "ridge":
                    z = x[j] @ p["wv"][h] + p["b"][h]
                    leaf = p["wo"][h] * z * _sig(z)
                else:
                    leaf = x[j] @ p["wv"][h]
                    if position == "G1":
                        leaf *= _sig(x[i] @ p["t"][h])
                    if position == "G2":
                        leaf *= _sig(x[j] @ p["t"][h])
                out[i] += pi[j] * leaf
    if position == "G5":
        out = out * _sig(x @ p["g5"])
    return out[:, None]


@pytest.mark.parametrize("position", af.POSITIONS)
def test_layer_matches_dense_loop(position):
    rng = np.random.default_rng(3)
    p = inits.split_heads(position, teacher_heads=2, student_heads=3, spread=0.3, rng=rng)
    for s in range(3):
        x = rng.uniform(-1, 1, (2, 2))
        got = np.asarray(af.layer_output({k: jnp.asarray(v) for k, v in p.items()},
                                         jnp.asarray(x), position))
        np.testing.assert_allclose(got, _reference(p, x, position), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("position", af.POSITIONS)
def test_exact_fit_valley(position):
    x, _ = af.sample_inputs(jax.random.key(0), n=200)
    t = af.teacher_params(position, 1)
    gaps = [af.max_output_gap(af.valley_student(position, p, u=u), t, position, x)
            for p in (0.2, 0.5, 0.9) for u in (None, np.array([0.4, -0.3]))]
    if af.LEAF_CLASS[position] in ("linear", "GLU"):
        assert max(gaps) <= 1e-12
    else:  # ridge: the value map sits inside the activation
        assert min(gaps) > 1e-3


def test_valley_student_has_nonzero_leaf_error_but_zero_V():
    t = af.teacher_params("MHSA", 1)
    s = af.valley_student("MHSA", 0.5, u=np.array([0.4, -0.3]))
    L = voronoi.head_losses(s, t, "MHSA")
    assert L["cells"] == [0, 0]
    assert L["worst_overfitted"] > 0.1
    assert L["V"] <= 1e-12
    # a deliberately wrong student (value maps that do not add up) has V > 0
    s["wv"][1] += 0.2
    assert voronoi.head_losses(s, t, "MHSA")["V"] > 0.1


def test_leaf_losses_singleton_and_overfitted_cells():
    t = af.teacher_params("ridge", 2)
    s = inits.split_heads("ridge", teacher_heads=2, student_heads=3, spread=0.05,
                         rng=np.random.default_rng(0))
    L = voronoi.head_losses(s, t, "ridge")
    assert L["cells"] == [0, 0, 1]
    assert 0 < L["worst_singleton"] < 0.5 and 0 < L["worst_overfitted"] < 0.5
    assert not math.isnan(L["V"])


@pytest.mark.parametrize("position", ["MHSA", "ridge", "G3"])
def test_split_init_is_declared_and_not_at_truth(position):
    t = af.teacher_params(position, 1)
    s = inits.split_heads(position, teacher_heads=1, student_heads=2, spread=0.1,
                          rng=np.random.default_rng(1))
    share = "wo" if position == "ridge" else "wv"
    np.testing.assert_allclose(s[share].sum(0), t[share][0], atol=1e-12)   # weight shared
    A = af.head_atoms(s, position)["atom"]
    T = af.head_atoms(t, position)["atom"]
    assert np.all(np.linalg.norm(A - T, axis=1) > 1e-3)                     # never at the truth


def test_fit_recovers_exact_specified_layer():
    t = af.teacher_params("G2", 1)
    rng = np.random.default_rng(0)
    start = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in t.items()}
    th0, unravel = ravel_pytree({k: jnp.asarray(v) for k, v in start.items()})
    x, _ = af.sample_inputs(jax.random.key(2), n=150)
    y = af.batched_output({k: jnp.asarray(v) for k, v in t.items()}, x, "G2")
    out = head_fit.fit_students(x[None], y[None], np.asarray(th0)[None], unravel=unravel,
                                position="G2", max_iter=200)
    assert out["converged"][0]
    truth = np.asarray(ravel_pytree({k: jnp.asarray(v) for k, v in t.items()})[0])
    np.testing.assert_allclose(out["theta"][0], truth, atol=1e-6)


def test_sweep_is_cached_and_counts_failures(tmp_path):
    cfg = e2.FitSweepConfig(position="MHSA", n=40, log10_x_min=10.0, log10_x_max=12.0,
                            points=2, replicates=2, max_iter=30)
    r1 = e2.run_sweep(cfg, cache_dir=tmp_path)
    files = list((tmp_path / "attention_fit").glob("MHSA-*.json"))
    assert len(files) == 1
    r2 = e2.run_sweep(cfg, cache_dir=tmp_path)
    np.testing.assert_array_equal(r1.losses("V"), r2.losses("V"))
    assert r1.failures() == sum(not q["converged"] for p in r1.points for q in p["replicates"])
    # a fit the loop does not certify keeps the losses of where it stopped, flagged and
    # counted (as in every experiment); it is never dropped nor replaced by a number
    L = r1.losses("worst_overfitted")
    conv = np.array([[q["converged"] for q in p["replicates"]] for p in r1.points])
    assert (~conv).any() and np.all(np.isfinite(L))
    assert r1.failure_count() == (int((~conv).sum()), conv.size)
    # a corrupt cache entry is reported with its path and recomputed
    files[0].write_text("{")
    with pytest.warns(runner.CacheWarning, match=files[0].name):
        r3 = e2.run_sweep(cfg, cache_dir=tmp_path)
    assert not r3.cached
    np.testing.assert_array_equal(r1.losses("V"), r3.losses("V"))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="position"):
        af.teacher_params("G7")
    with pytest.raises(ValueError, match="student_heads"):
        e2.FitSweepConfig(teacher_heads=2, student_heads=2).validate()
    with pytest.raises(ValueError, match="spread"):
        e2.FitSweepConfig(spread=-1.0).validate()
    with pytest.raises(TypeError, match="config"):
        e2.run_sweep({"position": "MHSA"})


def test_cli_writes_results_and_resumes_from_cache(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["attention-fit", "--positions", "MHSA,ridge", "--n", "30", "--points", "3",
            "--log10-x-min", "11", "--log10-x-max", "13", "--replicates", "2", "--max-iter", "20",
            "--cache-dir", str(cache), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.load(open(out / "results.json"))
    assert (out / "attention_fit.png").exists()
    assert set(res["positions"]) == {"MHSA", "ridge"}
    for q in res["positions"].values():
        assert np.allclose(q["x"], [1e11, 1e12, 1e13]) and len(q["points"][0]["replicates"]) == 2
        assert set(q["slopes"]) == {"worst_overfitted", "V"} and q["seconds"] > 0
    # second run: every position comes from the cache, same numbers
    assert cli.main(argv) == 0
    again = json.load(open(out / "results.json"))
    assert again["positions"]["MHSA"]["points"] == res["positions"]["MHSA"]["points"]
    assert capsys.readouterr().out.count("cached") == 2
    assert cli.main(argv[:2] + ["G7"] + argv[3:]) == 2
    assert "position" in capsys.readouterr().err
