"""The installed version of connectome-sse, and the ``--version`` flag every command has."""

from __future__ import annotations

import argparse
import importlib.metadata

DISTRIBUTION = "connectome-sse"


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def add_version_flag(parser: argparse.ArgumentParser, prog: str) -> None:
    parser.add_argument(
        "--version",
        action="version",
        version=f"{prog} {package_version()}",
        help="print the version and exit",
    )
