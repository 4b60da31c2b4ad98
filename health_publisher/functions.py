"""Loading the event log's function library (``FCALL sse_publish``) for other publishers."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ReadOnlyError, ResponseError

from connectome_core.event_log import FUNCTION_LIBRARY, FUNCTION_NAME, LogCaps, function_library
from connectome_core.redis_connect import short_error

log = logging.getLogger("health_publisher")


class FunctionLoader:
    """``FUNCTION LOAD REPLACE`` with this publisher's caps; a refusal is logged once and is
    not fatal (the publisher's own publish does not need the library)."""

    def __init__(self, client: aioredis.Redis, caps: LogCaps) -> None:
        self.client = client
        self.source = function_library(caps)
        self.warned = False

    async def load(self) -> bool:
        try:
            await self.client.function_load(self.source, replace=True)
        except ReadOnlyError:
            raise  # a demoted master: the step reconnects, as for any other write
        except ResponseError as exc:  # no permission, or a server without functions
            if self.warned:
                log.debug("function library %s still not loaded: %s", FUNCTION_LIBRARY, exc)
            else:
                self.warned = True
                log.warning(
                    "could not load the function library %s (%s): FCALL %s is unavailable "
                    "until it is loaded; publishing goes on",
                    FUNCTION_LIBRARY,
                    short_error(exc),
                    FUNCTION_NAME,
                )
            return False
        log.debug("function library %s loaded (FCALL %s)", FUNCTION_LIBRARY, FUNCTION_NAME)
        return True
