"""Write the full-size E2 profile record that chapter 05 renders: every gate position's
surplus-head profile on one noise sweep, through the library's cached, resumable runner.

    .venv/bin/python scripts/record_e2_profile.py --out docs/records/e2_profile_noise.json

Each position is ``python -m gated_hmoe attention-profile --position P --sweep noise --n 256
--noise-min 1e-10 --noise-max 1e-6 --points 3 --replicates 4 --offsets 0.02,2,7`` (the
defaults below); the record holds that configuration, per position the sweep's results (as
``attention-profile`` writes them to ``results.json``, with the seconds its fits took), the
library versions, the git commit (and whether the library or scripts had uncommitted
changes), the date, the machine's core count and its load average at the start and the end.
Rerunning resumes from the cache.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gated_hmoe.experiments import e2_profile, runner  # noqa: E402
from gated_hmoe.models import heads  # noqa: E402

#: The record's sweep (the README's first E2 profile table).
CONFIG = dict(sweep="noise", n=256, noise_min=1e-10, noise_max=1e-6, points=3, replicates=4,
              offsets=(0.02, 2.0, 7), seed=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/records/e2_profile_noise.json")
    parser.add_argument("--positions", default=",".join(heads.LAYER_POSITIONS),
                        help="comma-separated gate positions (default: all nine)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    positions = [p.strip() for p in args.positions.split(",") if p.strip()]
    for p in positions:
        try:
            heads.check_layer_position(p)
        except ValueError as err:
            parser.error(f"argument --positions: {err}")
    record = {"description": "E2 surplus-head profiles, every gate position, one noise sweep",
              "command": "python -m gated_hmoe attention-profile --position P --sweep noise "
                         "--n 256 --noise-min 1e-10 --noise-max 1e-6 --points 3 "
                         "--replicates 4 --offsets 0.02,2,7",
              "script": "scripts/record_e2_profile.py",
              **runner.source_commit(), "date": datetime.date.today().isoformat(),
              "machine": f"{os.cpu_count()} CPU cores",
              "load_average": [round(os.getloadavg()[0], 1)], "versions": runner.versions(),
              "positions": {}}
    for p in positions:
        config = e2_profile.AttentionProfileConfig(position=p, **CONFIG)
        sweep = e2_profile.run_profiles(config, cache_dir=args.cache_dir)
        out = record["positions"][p] = sweep.to_dict()
        print(f"{p}: {out['certified']}/{out['fits']} certified, fits {out['seconds']:.0f} s",
              flush=True)
    record["load_average"].append(round(os.getloadavg()[0], 1))
    runner.write_json_atomic(args.out, record, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
