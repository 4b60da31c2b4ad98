"""``sse-gateway``: flags mirror the settings; a bad value exits 2 with one line naming it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from connectome_core.listen_check import listen_problem
from connectome_core.logs import setup_logging
from connectome_core.settings import settings_from_cli
from sse_gateway.server import serve
from sse_gateway.settings import GatewaySettings

DESCRIPTION = (
    "Relay Redis pub/sub channels sse:* to browsers as Server-Sent Events at GET /api/sse."
)


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from_cli("sse-gateway", DESCRIPTION, GatewaySettings, argv)
    if settings is None:
        return 2
    # uvicorn binds only after the app has started: a busy port would be 8 lines, exit 3.
    problem = listen_problem(settings.host, settings.port)
    if problem is not None:
        flag = f"--{problem.setting} or SSE_{problem.setting.upper()}"
        advice = f"choose another {flag}" if problem.setting == "port" else f"check {flag}"
        print(f"sse-gateway: {problem} ({advice})", file=sys.stderr)
        return 1
    setup_logging(settings.log_level, settings.log_format)
    logging.getLogger("sse_gateway").info(
        "starting on %s:%d with %d worker(s), redis %s",
        settings.host,
        settings.port,
        settings.workers,
        settings.redis_target().display(),
    )
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
