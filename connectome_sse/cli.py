"""The ``connectome-sse`` command: one entry point for the tools around the two services.

Each subcommand is a module in ``connectome_sse/commands/`` exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status). Modules
are imported only when their subcommand runs, so ``connectome-sse publish``
does not pay for the embedded Redis of ``up``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from connectome_core.redaction import RedactingParser

# subcommand -> module under connectome_sse.commands
COMMANDS = {
    "up": "up",
    "demo-engine": "demo_engine",
    "publish": "publish",
    "listen": "listen",
    "schema": "schema",
    "token": "token",
    "doctor": "doctor",
    "chaos": "chaos",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"connectome_sse.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = RedactingParser(
        prog="connectome-sse",
        description="Tools around the connectome-sse services (Redis-backed SSE broadcaster).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_load(args.command).run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
