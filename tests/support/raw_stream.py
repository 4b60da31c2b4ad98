"""A stream request over a plain socket from a chosen loopback source address.

For what httpx makes awkward: a client at ``127.0.0.2`` (per-address limits),
holding many streams open without a thread each, and reading the status and
head of a refusal as well as the body of a stream as it arrives.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Sequence


class RawStream:
    def __init__(
        self,
        port: int,
        path: str = "/api/sse",
        headers: Sequence[tuple[str, str]] = (),
        source: str = "127.0.0.1",
        host: str = "127.0.0.1",
        method: str = "GET",
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.data = b""
        self.closed = False
        self.read_until(lambda s: b"\r\n\r\n" in s.data, timeout=10, what="response head")
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        self.status = int(head[0].split(" ")[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in head[1:])
        }

    @property
    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""

    def json(self) -> object:
        """The whole (finite) body as JSON, read to the end and de-chunked if need be."""
        declared = self.headers.get("content-length")

        def complete(stream: RawStream) -> bool:
            if declared is not None:
                return len(stream.body) >= int(declared)
            return stream.closed or stream.body.endswith(b"0\r\n\r\n")

        self.read_until(complete, what="the body")
        body = self.body
        if self.headers.get("transfer-encoding") == "chunked":
            parts, rest = [], body
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                length = int(size, 16)
                if length == 0:
                    break
                parts.append(rest[:length])
                rest = rest[length + 2 :]
            body = b"".join(parts)
        return json.loads(body)

    def read_until(
        self, done: Callable[[RawStream], bool], timeout: float = 10.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or done}")
            if self.closed:
                raise AssertionError(f"connection closed while waiting for {what or done}")
            chunk = self._read_some(min(left, 0.5))
            if chunk is None:
                continue
            if not chunk:
                self.closed = True
            self.data += chunk

    def _read_some(self, timeout: float) -> bytes | None:
        """What came within ``timeout`` (b"" once the peer is gone); None if nothing did."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def wait_closed(self, timeout: float = 10.0) -> float:
        """Read until the server ends the connection; returns the time.time() it did."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError(f"the stream stayed open for {timeout}s")
            chunk = self._read_some(0.2)
            if chunk is None:
                continue
            if not chunk or chunk.endswith(b"0\r\n\r\n"):
                # A chunked response's end: the stream is over even if the socket stays.
                self.closed = True
            self.data += chunk
        return time.time()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
