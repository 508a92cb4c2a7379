"""Time a command and record its wall time in ``docs/run_times.json`` (the status page).

The book's status page (``status.md``) shows these measured run times with the date and
the machine they were measured on. Either run the command through this script::

    python scripts/record_run_time.py --name "CI: ..." -- bash .ci/run

which records the time only if the command succeeds, or record a time measured elsewhere
(e.g. read off a CI log)::

    python scripts/record_run_time.py --name "CI: ..." --command "bash .ci/run" --seconds 1440

An entry with the same ``--name`` is replaced; the others are kept in order.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RUN_TIMES = Path(__file__).resolve().parents[1] / "docs" / "run_times.json"


def machine() -> str:
    """This machine in a few words: cores, CPU model where known, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores, {cpu}, {platform.system()}"


def record(path: Path, entry: dict) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    runs = [run for run in data["runs"] if run["name"] != entry["name"]]
    index = next((i for i, run in enumerate(data["runs"]) if run["name"] == entry["name"]),
                 len(runs))
    runs.insert(index, entry)
    path.write_text(json.dumps({"runs": runs}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="what was run, as the status page shows it")
    parser.add_argument("--seconds", type=float, help="a wall time measured elsewhere")
    parser.add_argument("--command", help="with --seconds: the command that was timed")
    parser.add_argument("--machine", default=None, help="default: this machine")
    parser.add_argument("--note", default="", help="a short remark shown after the name")
    parser.add_argument("--file", type=Path, default=RUN_TIMES, help="default: %(default)s")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: run and time it")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if (args.seconds is None) == (not cmd):
        parser.error("give either --seconds (with --command) or a command after --")
    if args.seconds is not None:
        if not args.command:
            parser.error("--command: required with --seconds (the command that was timed)")
        if not args.seconds > 0:
            parser.error(f"--seconds: expected a positive time, got {args.seconds}")
        seconds, command = args.seconds, args.command
    else:
        start = time.perf_counter()
        rc = subprocess.run(cmd, check=False).returncode
        seconds, command = time.perf_counter() - start, shlex.join(cmd)
        if rc != 0:
            print(f"record_run_time: {command} exited {rc}; nothing recorded", file=sys.stderr)
            return rc
    entry = {"name": args.name, "command": command, "seconds": round(seconds, 1),
             "date": datetime.date.today().isoformat(), "machine": args.machine or machine()}
    if args.note:
        entry["note"] = args.note
    record(args.file, entry)
    print(f"record_run_time: {args.name}: {seconds:.1f} s -> {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
