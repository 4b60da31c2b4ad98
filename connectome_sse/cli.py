"""The ``connectome-sse`` command: one entry point for the tools around the two services.

Each subcommand is a module in ``connectome_sse/commands/`` with
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen one is
imported: ``--help`` lists them from the table below.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast

from connectome_core.cli_help import add_version_flag
from connectome_core.redaction import RedactingParser

PROG = "connectome-sse"
CLI_EXTRA = "cli"


class Command(NamedTuple):
    module: str  # under connectome_sse.commands
    help: str
    needs: tuple[str, ...] = ()  # modules of the cli extra it imports


COMMANDS: dict[str, Command] = {
    "up": Command(
        "up",
        "run the whole stack on this machine (Redis, publisher, demo engine, gateway)",
        ("httpx",),
    ),
    "demo-engine": Command(
        "demo_engine", "a simulated connectome engine: writes realistic signals into Redis"
    ),
    "publish": Command("publish", "publish one event: snapshot, event log and channel at once"),
    "listen": Command(
        "listen", "print a live SSE stream in the terminal, one line per event", ("httpx",)
    ),
    "schema": Command(
        "schema", "print the JSON Schema of the connectome_health payload (schema version 1)"
    ),
    "token": Command("token", "print a stream token signed with SSE_AUTH_SECRET"),
    "doctor": Command(
        "doctor",
        "check an SSE endpoint as a browser sees it, through every proxy in between; "
        "exit 1 when a check fails",
        ("httpx", "h2"),
    ),
    "chaos": Command(
        "chaos",
        "run fault scenarios against a local topology of real processes; exit 1 when one fails",
        ("httpx",),
    ),
}


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the arguments of the subcommand ``argv`` names (and no other)."""
    parser = RedactingParser(
        prog=PROG,
        description="Tools around the connectome-sse services (Redis-backed SSE broadcaster).",
    )
    add_version_flag(parser, PROG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        add_version_flag(child, PROG)
        if name == chosen:
            _module(name).add_arguments(child)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser(argv).parse_args(argv)


def missing_extra(name: str) -> str | None:
    """One line when a module ``name`` needs is not installed, else None."""
    for module in COMMANDS[name].needs:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (
                f"{PROG} {name} needs the {CLI_EXTRA} extra ({module} is missing): "
                f"pip install 'connectome-sse[{CLI_EXTRA}]'"
            )
    return None


class CommandModule(Protocol):
    """What a module in ``connectome_sse.commands`` offers."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _module(name: str) -> CommandModule:
    module = importlib.import_module(f"connectome_sse.commands.{COMMANDS[name].module}")
    return cast(CommandModule, module)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen(argv)
    problem = missing_extra(chosen) if chosen is not None else None
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    args = parse(argv)
    try:
        return int(_module(args.command).run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
