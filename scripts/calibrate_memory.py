"""Calibrate the peak-memory models of the command line's sweeps (``peak_bytes``).

Runs ``python -m gated_hmoe <command>`` at three small sizes per command (few iterations:
memory does not depend on them), reads each run's peak resident memory (``ru_maxrss`` of
the child process) and solves ``peak = base + per_sample * samples + per_record * records``
for the three coefficients of the experiment's model, where ``samples`` and ``records`` are
the model's size terms (see ``MEMORY_PER_SAMPLE`` in each experiment module). Prints the
measurements and the coefficients; the modules hold the values, rounded up.

    PYTHONPATH=. python scripts/calibrate_memory.py [rates|profile|attention-profile|attention-fit]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile

import numpy as np

#: Per command: three runs as ``(extra flags, samples, records)``, ``samples`` and
#: ``records`` being the size terms of the command's memory model.
RUNS = {
    "rates": [
        (["--n-min", "100", "--n-max", "100", "--points", "1", "--replicates", "4"], 4 * 100, 4),
        (["--n-min", "200000", "--n-max", "200000", "--points", "1", "--replicates", "16"],
         16 * 200_000, 16),
        (["--n-min", "20", "--n-max", "100", "--points", "4", "--replicates", "4000"],
         4000 * 100, 4000 * 4),
    ],
    "profile": [
        (["--n-min", "100", "--n-max", "100", "--points", "1", "--replicates", "2",
          "--offsets", "0.1,1,2"], 2 * 100, 2),
        (["--n-min", "100000", "--n-max", "100000", "--points", "1", "--replicates", "16",
          "--offsets", "0.1,1,2"], 16 * 100_000, 16),
        (["--n-min", "50", "--n-max", "100", "--points", "2", "--replicates", "1000",
          "--offsets", "0.1,1,8"], 1000 * 100, 1000 * 2),
    ],
    "attention-profile": [
        (["--sweep", "noise", "--n", "50", "--points", "1", "--replicates", "1",
          "--offsets", "0.1,1,2"], 1 * 50 * 3, 1),
        (["--sweep", "noise", "--n", "10000", "--points", "1", "--replicates", "4",
          "--offsets", "0.1,1,2"], 4 * 10_000 * 3, 4),
        (["--sweep", "noise", "--n", "50", "--points", "2", "--replicates", "200",
          "--offsets", "0.1,1,8"], 200 * 50 * 3, 200 * 2),
    ],
    "attention-fit": [
        (["--positions", "MHSA", "--n", "30", "--points", "1", "--replicates", "2"], 2 * 30, 2),
        (["--positions", "MHSA", "--n", "50000", "--points", "2", "--replicates", "8"],
         16 * 50_000, 16),
        (["--positions", "MHSA", "--n", "20", "--points", "8", "--replicates", "500"],
         4000 * 20, 4000),
    ],
}


def peak_rss(argv: list[str]) -> int:
    """Peak resident memory (bytes) of ``python -m gated_hmoe *argv`` in a fresh process."""
    code = ("import resource, subprocess, sys; "
            "r = subprocess.run([sys.executable, '-m', 'gated_hmoe', *sys.argv[1:]]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) if r.returncode == 0 "
            "else sys.exit(r.returncode)")
    out = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024      # ru_maxrss: KiB on Linux


def calibrate(command: str) -> np.ndarray:
    rows, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (flags, samples, records) in enumerate(RUNS[command]):
            iters = ["--max-iter", "3"]
            argv = [command, *flags, *iters, "--no-progress", "--out", f"{tmp}/o{i}",
                    "--cache-dir", f"{tmp}/c{i}"]
            peak = peak_rss(argv)
            print(f"{command}: samples {samples:>9d}, records {records:>7d}: "
                  f"peak {peak / 2**20:8.1f} MiB", flush=True)
            rows.append([1.0, samples, records])
            peaks.append(peak)
    coef = np.linalg.solve(np.array(rows, float), np.array(peaks, float))
    print(f"{command}: base {coef[0] / 2**20:.0f} MiB, per sample {coef[1]:.1f} B, "
          f"per record {coef[2]:.1f} B", flush=True)
    return coef


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    for name in sys.argv[1:] or list(RUNS):
        calibrate(name)
