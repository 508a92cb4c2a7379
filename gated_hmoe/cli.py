"""Command line: ``python -m gated_hmoe <command> ...``.

Each experiment module contributes one sub-command through a ``register_cli(subparsers)``
function that adds its parser and sets ``func``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that provide a sub-command (each defines ``register_cli``).
COMMAND_MODULES: tuple[str, ...] = (
    "gated_hmoe.experiments",
    "gated_hmoe.attention_fit",
    "gated_hmoe.transformer_experiments",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per experiment module."""
    parser = argparse.ArgumentParser(
        prog="python -m gated_hmoe",
        description="Run the book's experiments from the command line (cached, resumable).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError) as exc:  # bad input: one clear line, no trace
        print(f"error: {exc}", file=sys.stderr)
        return 2
