"""Write the E5 record that chapter 08 renders: every declared teacher-student sweep of the
CPU grid (``gated_hmoe.experiments.e5_record``), through the library's cached, resumable
runner.

    .venv/bin/python scripts/record_e5_teacher_student.py --out docs/records/e5_teacher_student.json

Each sweep is ``python -m gated_hmoe teacher-student --position P --heads H --n-min 100
--n-max 3162 --points 5 --noise 0.01 --seed S --seeds K --inits 4 --steps 2000`` for the
positions, student sizes and seed sets of the declaration; sweeps already run by that command
(with the same ``--cache-dir``) are read from the cache. ``--only`` restricts the record to
the sweeps named (``POSITION/HH/SET``, comma-separated), e.g. those that finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gated_hmoe.experiments import e5_record, runner  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(e5_record.RECORD))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--only", default=None, help="comma-separated sweep names")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    only = None if args.only is None else [s for s in args.only.split(",") if s]
    try:
        record = e5_record.build(cache_dir=args.cache_dir, progress=not args.no_progress,
                                 only=only)
    except (TypeError, ValueError) as err:
        parser.error(str(err).replace("only ", "--only ", 1))
    runner.write_json_atomic(Path(args.out), record, indent=None)
    print(f"wrote {args.out}: {len(record['sweeps'])} sweeps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
