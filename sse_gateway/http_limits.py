"""What a connection may cost before it is served: the limits every protocol here enforces."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connectome_core.logs import RateLimitedLog

MAX_HEADER_BYTES = 16 * 1024
# Bytes a client may send after its stream request before it is dropped: pipelined
# requests are ignored, a client that keeps sending is abusive.
MAX_IGNORED_BYTES = 64 * 1024

# Lines a hostile client can repeat at will: one per interval, with a count of the rest.
limited_log = RateLimitedLog(logging.getLogger("sse_gateway.http"))


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process connection limits (picklable: uvicorn hands it to each worker)."""

    header_timeout: float = 10.0
    max_open: int | None = None
