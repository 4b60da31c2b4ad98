"""A loopback TCP proxy whose open connections can be frozen: half-open sockets on demand.

``freeze()`` stops forwarding on every connection open at that moment, in both
directions, without closing anything: to the client that connection looks
alive and silent, exactly like one whose peer vanished behind a NAT or a cut
cable. Connections made afterwards are forwarded normally, so the server
itself stays reachable.
"""

from __future__ import annotations

import asyncio
import contextlib


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._frozen: list[asyncio.Event] = []  # one "frozen" flag per open connection
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def freeze(self) -> None:
        """Every connection open now stops forwarding, for good, without closing."""
        for flag in self._frozen:
            flag.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        frozen = asyncio.Event()
        self._frozen.append(frozen)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, frozen)),
            asyncio.create_task(self._pump(up_reader, writer, frozen)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                with contextlib.suppress(OSError):
                    w.close()

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        while data := await source.read(65536):
            if frozen.is_set():
                await asyncio.Event().wait()  # swallow for ever: the peer "vanished"
            sink.write(data)
            await sink.drain()
