"""Log setup shared by every process: one line per record, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
        force=True,
    )
