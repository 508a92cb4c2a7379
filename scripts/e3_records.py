"""Write the records of chapter 06's runs that are too slow for the chapter.

    python scripts/e3_records.py full-grid     # docs/records/e3_full_grid.json
    python scripts/e3_records.py budget2000    # docs/records/e3_budget2000.json
    python scripts/e3_records.py profile       # docs/records/e3_profile.json
    python scripts/e3_records.py profile-noise # docs/records/e3_profile_noise.json
    python scripts/e3_records.py profile-noise-heldout
    python scripts/e3_records.py profile-noise-seed101   # and 102, 103: calibration

``full-grid``: the chapter's ten sweeps (gate x expert x spread) on 17 noise levels instead
of 9; ``budget2000``: its spread-0.1 sweeps of linear and sigmoid experts with 2000
iterations instead of 500 (same seeds); ``profile``, ``profile-noise``,
``profile-noise-heldout`` and the calibration seeds ``profile-noise-seed101``-``103``: the
over-fitted pair's profile confidence sets under both gates
(:data:`gated_hmoe.experiments.e3_quadratic.PROFILE_RECORDS`, each sweep the ``profile``
command with ``--gate``). Each rates sweep is
:func:`gated_hmoe.experiments.e1_rates.run_sweep` of
:func:`gated_hmoe.experiments.e3_quadratic.record_configs` -- the same fits as the ``rates``
command with ``--gate``, e.g. for one sweep of ``full-grid``::

    python -m gated_hmoe rates --expert silu --gate quadratic-polynomial --k-fit 3 \\
        --init split --spread 0.1 --sweep noise --n 1000 --noise-min 1e-14 \\
        --noise-max 1e-4 --points 17 --replicates 12 --out results/e3-poly-silu

By default the sweeps run on a fresh temporary cache, so the recorded wall time is a
cold-cache time. The record holds the configuration of every sweep, the library versions,
the git commit (and whether the work tree had uncommitted changes), the date, the machine,
the wall times and the numbers (per-replicate losses, failures, slopes); chapter 06 reads
it with :func:`gated_hmoe.experiments.e3_quadratic.load_record`.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_run_time import machine  # noqa: E402  (the status page's machine description)

from gated_hmoe.experiments import e3_quadratic as qb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*sorted(qb.RECORDS), *qb.PROFILE_RECORDS],
                        help="which record to write")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: docs/records/<the record's file>")
    parser.add_argument("--cache-dir", default=None,
                        help="sweep cache (default: a fresh temporary folder: cold cache)")
    args = parser.parse_args(argv)
    profile = args.name in qb.PROFILE_RECORDS
    out = args.out or qb.RECORD_DIR / (qb.PROFILE_RECORDS if profile
                                       else qb.RECORDS)[args.name]["file"]
    make = functools.partial(qb.make_profile_record if profile else qb.make_record, args.name)
    with tempfile.TemporaryDirectory(prefix="e3-records-") as tmp:
        record = make(cache_dir=args.cache_dir or tmp, machine=machine(),
                      log=lambda line: print(line, flush=True))
    record["cache"] = "given folder" if args.cache_dir else "cold (fresh temporary folder)"
    qb.write_record(record, out)
    # the file reads back and matches its configuration
    (qb.load_profile_record if profile else qb.load_record)(args.name, out)
    print(f"wrote {out} ({record['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
