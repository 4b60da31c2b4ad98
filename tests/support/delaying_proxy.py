"""A loopback TCP proxy to Redis that holds back the reply to one chosen command.

``delay_reply_to(b"GETDEL", 3.0)`` arms it: the next request carrying that
command is forwarded at once (Redis executes it), but the reply after it is
held for the given seconds, so the client's read times out on a command that
did reach Redis. Everything else is forwarded as it comes. The proxy runs its
own event loop in a thread, so blocking test code and real processes can use
it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType


class DelayingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.delayed = 0  # replies held back so far
        self._armed: tuple[bytes, float] | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def delay_reply_to(self, command: bytes, seconds: float) -> None:
        """Hold the reply to the next ``command`` (its RESP bulk name, e.g. ``b"SET"``)."""
        with self._lock:
            self._armed = (b"$%d\r\n%s\r\n" % (len(command), command.upper()), seconds)

    def __enter__(self) -> DelayingProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _take_delay(self, request: bytes) -> float:
        with self._lock:
            if self._armed is None or self._armed[0] not in request.upper():
                return 0.0
            seconds = self._armed[1]
            self._armed = None
            self.delayed += 1
            return seconds

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        hold = [0.0]  # seconds to hold the next reply on this connection

        async def requests() -> None:
            while data := await reader.read(65536):
                hold[0] = hold[0] or self._take_delay(data)
                up_writer.write(data)
                await up_writer.drain()

        async def replies() -> None:
            while data := await up_reader.read(65536):
                if hold[0]:
                    await asyncio.sleep(hold[0])
                    hold[0] = 0.0
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()
