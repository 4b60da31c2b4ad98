"""An embedded Redis-compatible server: fakeredis' TCP server, in a thread of ``up`` itself.

Used only when no ``redis-server`` is on PATH, so ``connectome-sse up`` still runs
on a bare machine. The children connect to it over loopback TCP like to a real Redis.

Proven by ``tests/integration/test_cli_embedded_redis.py``: pub/sub (PSUBSCRIBE
included), MULTI, streams with consumer groups, SET NX PX and Lua all work
through it in fakeredis 2.40. Two fakeredis bugs are worked around here:

- an error reply (``BUSYGROUP`` from ``XGROUP CREATE``, ``NOSCRIPT``...) made the
  TCP handler close the client's connection after sending it, so a publisher
  that creates its consumer group on every (re)connect reconnected for ever;
- ``XREADGROUP COUNT n BLOCK ms`` on a stream with nothing new answered at once
  instead of blocking, which would turn a publisher's blocking read into a busy loop.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from connectome_sse.stack.local_redis import StackError

_patched = False


def _error_reply(err: Exception) -> Any:
    """The error as the server would send it, code first (``BUSYGROUP …``, ``ERR …``)."""
    from fakeredis._helpers import SimpleError
    from redis.connection import DefaultParser

    message = str(err)
    for code, cls in DefaultParser.EXCEPTION_CLASSES.items():
        if isinstance(cls, type) and type(err) is cls:
            return SimpleError(f"{code} {message}")
    first = message.split(" ", 1)[0]
    # redis-py strips "ERR " but keeps codes it does not know (BUSYGROUP, WRONGTYPE).
    has_code = len(first) > 1 and first.isalpha() and first.isupper()
    return SimpleError(message if has_code else f"ERR {message}")


def _handler_class() -> type:
    """fakeredis' request handler, answering error replies without closing the connection."""
    import redis
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class Handler(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            read = self.current_client.read_response

            def read_response(*args: Any, **kwargs: Any) -> Any:
                try:
                    return read(*args, **kwargs)
                except redis.ResponseError as err:  # an error reply, not a broken connection
                    return _error_reply(err)

            self.current_client.read_response = read_response  # type: ignore[method-assign]

    return Handler


def _patch_blocking_xreadgroup() -> None:
    """Make an empty ``>`` read keep blocking, as Redis does (fakeredis only did without COUNT)."""
    global _patched
    if _patched:
        return
    from fakeredis.commands_mixins.streams_mixin import StreamsCommandsMixin

    original: Callable[..., Any] | None = getattr(StreamsCommandsMixin, "_xreadgroup", None)
    if original is None:  # a fakeredis that reshaped its internals: leave it as it is
        _patched = True
        return

    @functools.wraps(original)
    def xreadgroup(self: Any, consumer: bytes, group_params: Any, *args: Any) -> Any:
        result = original(self, consumer, group_params, *args)
        if not result and all(start_id == b">" for _, _, start_id in group_params):
            return None  # nothing new yet: the caller keeps waiting until data or its timeout
        return result

    StreamsCommandsMixin._xreadgroup = xreadgroup  # type: ignore[method-assign,assignment]
    _patched = True


class EmbeddedRedis:
    """fakeredis' TCP server on a free loopback port, served by a thread of this process."""

    name = "embedded redis"

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def description(self) -> str:
        return f"embedded Redis (fakeredis) on 127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None

    def start(self) -> None:
        try:
            from fakeredis import TcpFakeServer
        except ImportError as exc:  # pragma: no cover - fakeredis is a dependency
            raise StackError(f"no redis-server on PATH and no embedded Redis: {exc}") from None
        _patch_blocking_xreadgroup()
        self._server = TcpFakeServer(("127.0.0.1", 0))
        self._server.RequestHandlerClass = _handler_class()
        # A handler parked in a blocking command would hold server_close() (and the
        # interpreter's exit) forever; handlers end on shutdown() anyway.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-redis", daemon=True
        )
        self._thread.start()

    def exit_code(self) -> int | None:
        if self._thread is None or self._thread.is_alive():
            return None
        return 1

    def tail(self, lines: int = 20) -> list[str]:
        return []

    def stop(self, hurry: Callable[[], bool] = lambda: False) -> None:
        if self._server is None:
            return
        # shutdown() stops the accept loop and tells every connection handler to end.
        self._server.shutdown()
        self._server.server_close()
        self._server = None
