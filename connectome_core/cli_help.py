"""What every command line shows: ``--version`` (package metadata) and defaults in ``--help``."""

from __future__ import annotations

import argparse
import importlib.metadata

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

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


def env_and_default(env: str, field: FieldInfo) -> str:
    """``[env SSE_PORT, default 8000]``; an empty default reads ``(empty)``, none is left out."""
    if field.default_factory is not None:
        value: object = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return f"[env {env}]"
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return f"[env {env}, default {text or '(empty)'}]"
