"""Rate experiments (E1): CLI run, cache/resume (also of a corrupt entry), slope signs, bad input."""

import json
import math
import os

import numpy as np
import pytest

from gated_hmoe import cli
from gated_hmoe.experiments import e1_rates as ex
from gated_hmoe.experiments import runner


def _numbers(path):
    d = json.load(open(path))
    for p in d["points"]:
        p.pop("seconds")
    d.pop("seconds")
    return d["points"], d["slopes"]


def test_cli_reduced_run_and_resume(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["rates", "--expert", "sigmoid", "--k-true", "2", "--k-fit", "2", "--init", "near",
            "--n-min", "100", "--n-max", "400", "--points", "3", "--replicates", "3",
            "--seed", "1", "--cache-dir", str(cache), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.load(open(out / "results.json"))
    assert (out / "rates.png").exists()
    assert res["grid"]["n"] == [100, 200, 400]
    assert set(ex.REPLICATE_FIELDS) <= set(res["points"][0]["replicates"][0])
    assert res["config"]["init"] == "near" and res["init"]["spread"] == 0.1
    assert {"jax", "numpy", "gated_hmoe"} <= set(res["versions"])
    for p in res["points"]:
        for r in p["replicates"]:
            assert math.isfinite(r["d1"]) and math.isfinite(r["worst_singleton"])
            assert {"iterations", "grad_norm", "excess_loss", "converged", "failed"} <= set(r)
    assert "d1" in res["slopes"] and "worst_overfitted" not in res["slopes"]
    first = _numbers(out / "results.json")
    # interrupt: drop one finished point, rerun -> recomputed, identical numbers
    folder = cache / "rates" / res["cache_key"]
    pts = sorted(folder.glob("point_*.json"))
    assert len(pts) == 3
    pts[1].unlink()
    assert cli.main(argv) == 0
    assert _numbers(out / "results.json") == first
    assert len(list(folder.glob("*.tmp"))) == 0
    # a truncated point (a crash mid-write by another tool) is reported and recomputed
    text = pts[0].read_text()
    pts[0].write_text(text[: len(text) // 2])
    with pytest.warns(runner.CacheWarning, match=str(pts[0].name)):
        assert cli.main(argv) == 0
    assert _numbers(out / "results.json") == first


def test_noise_sweep_overfitted_slower_than_singletons(tmp_path):
    cfg = ex.SweepConfig(expert="silu", k_true=2, k_fit=3, sweep="noise", n=200,
                         noise_min=1e-14, noise_max=1e-6, points=5, replicates=6,
                         init="split", spread=0.1, seed=0, fit_min=1e8)
    res = ex.run_sweep(cfg, cache_dir=tmp_path, progress=False)
    s = res.slopes
    assert s["d1"].slope < 0 and s["worst_singleton"].slope < 0
    assert s["worst_overfitted"].slope < 0
    assert s["worst_overfitted"].slope > s["worst_singleton"].slope  # over-fitted atoms slower
    again = ex.run_sweep(cfg, cache_dir=tmp_path, progress=False)
    assert again.points == res.points


def test_sweep_layer_bad_input():
    # a slope range asked for without two grid points is an error, not an empty slope table
    # (the default range runs and reports no slope: tests/test_cli.py)
    with pytest.raises(ValueError, match="slope range"):
        ex.SweepConfig(fit_min=1e30).validate()
    with pytest.raises(ValueError, match="slope range"):
        ex.SweepConfig(points=1, fit_max=1e12).validate()
    with pytest.raises(ValueError, match="slope range"):
        ex.SweepConfig(sweep="noise", n=100, noise_min=1e-8, noise_max=1e-4, points=4,
                       fit_min=ex.NOISE_FIT_MIN).validate()
    cfg = ex.SweepConfig(expert="linear", n_min=100, n_max=200, points=2, replicates=2)
    with pytest.raises(ValueError, match="nu must be a finite number > 0"):
        ex.run_point(cfg, 100, 0.0)
    with pytest.raises(TypeError, match="config must be a SweepConfig"):
        ex.run_point({"expert": "linear"}, 100, 1e-6)
    res = ex.SweepResult(cfg, [], {}, 0.0, {})
    assert res.losses("excess_loss").shape == (0,)       # every stored number is a metric
    with pytest.raises(ValueError, match="metric must be one of"):
        res.losses("worst_overfited")
    with pytest.raises(ValueError, match="metric must be one of"):
        ex.upper_slopes({"a": res}, metric="worst_overfited")


def test_bad_input_exits_2(tmp_path, capsys):
    base = ["rates", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    bad = [["--n-min", "0"], ["--k-fit", "1"], ["--expert", "relu"], ["--gate", "cubic"],
           ["--init", "zero"], ["--k-fit", "3", "--init", "near"], ["--noise", "nan"],
           ["--sweep", "noise", "--noise-min", "-1"], ["--replicates", "0"]]
    true = tmp_path / "true.json"
    true.write_text(json.dumps({"beta0": [0.5, 0], "beta1": [[5.0], [0.0]],
                                "expert": [[4.0, -2.0, 1.0], [5.0, 2.0]]}))
    bad.append(["--true", str(true)])
    bad.append(["--true", str(tmp_path / "missing.json")])
    for extra in bad:
        capsys.readouterr()
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (extra, err)
        if extra[0] in ("--n-min", "--expert", "--gate", "--init", "--noise", "--replicates"):
            assert err[0].startswith(f"error: {extra[0]} "), err    # the flag as typed
    with pytest.raises(TypeError, match="config"):
        ex.run_sweep({"expert": "linear"})
    assert not os.path.exists(tmp_path / "o")


def test_slope_range_is_not_part_of_the_cache_key():
    """Changing only the slope range re-uses the cached fits; changing a fit setting does not."""
    SweepConfig = ex.SweepConfig
    base = SweepConfig()
    assert SweepConfig(fit_min=1e3, fit_max=1e5).key() == base.key()
    assert SweepConfig(replicates=base.replicates + 1).key() != base.key()
    assert SweepConfig(spread=0.3, init="near").key() != base.key()


def test_cli_asks_for_one_host_device_per_core(monkeypatch):
    """``python -m gated_hmoe`` adds the XLA host-device flag, and leaves a user's alone."""
    import gated_hmoe.__main__ as entry
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    entry.one_device_per_core()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_cpu_enable_fast_math=false"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert flags[1] == f"--xla_force_host_platform_device_count={cores}"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    entry.one_device_per_core()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
