"""The hand-run benchmark scripts still run against the library (tiny sizes; timings unchecked)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_iteration_runs_and_reports_every_part():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_iteration.py"),
                          "--n", "512", "--chunk", "256", "--replicates", "2", "--rounds", "1"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=True)
    for part in ("normal equations", "model + Jacobian", "model only", "Gram only", "exp",
                 "division", "sigmoid"):
        assert part in out.stdout, out.stdout


def test_bench_iteration_rejects_a_ragged_sample_size():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_iteration.py"),
                          "--n", "500", "--chunk", "256"], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=ROOT, timeout=600)
    assert out.returncode == 2 and "--n (500) must be a multiple of --chunk (256)" in out.stderr
