"""`connectome-sse schema`: print the JSON Schema of the connectome_health payload (version 1)."""

from __future__ import annotations

import argparse
import json

from connectome_core.payload import health_json_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compact", action="store_true", help="one line instead of indented JSON")


def run(args: argparse.Namespace) -> int:
    schema = health_json_schema()
    if args.compact:
        print(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    else:
        print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
