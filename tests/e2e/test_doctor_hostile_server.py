"""`connectome-sse doctor` against a server that answers with too much: its memory stays bounded.

A raw asyncio server on a loopback port, in the test, answers the probe with
a gzip bomb (a small body that decompresses to 128 MiB of comment lines) or
with one endless ``data:`` line. The doctor runs as the console script; its
peak RSS is that child's own high-water mark (``VmHWM``). It must stop reading,
say why in a failed check, and exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from connectome_sse.localrun.processes import console_script

pytestmark = pytest.mark.e2e

# What the bug reached was 457 MiB; a doctor that reads within its limits stays
# far below this (its own baseline is about 60 MiB).
PEAK_RSS_LIMIT_MIB = 150
BOMB_MIB = 128
# The endless line stops here in any case, so an unbounded doctor fails the test
# rather than the machine.
ENDLESS_LINE_CAP_MIB = 512
CHUNK = 64 * 1024
HEAD = (
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/event-stream; charset=utf-8\r\n"
    "Cache-Control: no-cache\r\n"
    "Connection: close\r\n"
)

Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


@cache
def gzip_bomb() -> bytes:
    """BOMB_MIB MiB of 1 KiB comment lines, gzipped (about a thousandth of that)."""
    line = b": " + b"x" * 1021 + b"\n"
    block = line * 1024  # 1 MiB
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(block) for _ in range(BOMB_MIB)]
    return b"".join(parts) + compressor.flush()


async def send_gzip_bomb(writer: asyncio.StreamWriter) -> None:
    bomb = gzip_bomb()
    head = HEAD + f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
    writer.write(head.encode() + bomb)
    await writer.drain()


async def send_endless_line(writer: asyncio.StreamWriter) -> None:
    writer.write((HEAD + "\r\n").encode() + b"retry: 3000\n\ndata: ")
    chunk = b"a" * CHUNK
    for _ in range(ENDLESS_LINE_CAP_MIB * 1024 * 1024 // CHUNK):
        writer.write(chunk)
        await writer.drain()


@dataclass
class HostileServer:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def hostile_server(answer: Handler) -> AsyncIterator[HostileServer]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer)
            await reader.read()  # until the doctor hangs up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield HostileServer(port)


@dataclass(frozen=True)
class MeasuredRun:
    status: int
    report: dict[str, Any]
    peak_rss_mib: float

    def failed(self) -> dict[str, str]:
        return {c["name"]: c["figure"] for c in self.report["checks"] if c["verdict"] == "FAIL"}


def doctor_measured(url: str, timeout: float = 60) -> MeasuredRun:
    """The doctor as a child of its own: exit status, JSON report, and peak RSS.

    The peak is the child's own ``VmHWM``, sampled while it runs: ``ru_maxrss`` of a
    child would count the memory of the test process it was forked from."""
    process = subprocess.Popen(
        console_script("connectome-sse", "doctor", url, "--json", "--idle", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    peak_kib = [0]
    sampler = threading.Thread(target=sample_peak, args=(process, peak_kib), daemon=True)
    sampler.start()
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        assert process.stdout is not None
        out = process.stdout.read()
        process.wait()
    finally:
        killer.cancel()
        if process.stdout is not None:
            process.stdout.close()
    sampler.join(timeout=5)
    assert out, f"doctor printed nothing (exit {process.returncode})"
    return MeasuredRun(process.returncode, json.loads(out), peak_kib[0] / 1024)


def sample_peak(process: subprocess.Popen[bytes], peak_kib: list[int]) -> None:
    """Keep ``peak_kib[0]`` at the highest ``VmHWM`` seen until ``process`` exits."""
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            text = status.read_text()
        except OSError:
            return
        found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
        if found:
            peak_kib[0] = max(peak_kib[0], int(found.group(1)))
        time.sleep(0.005)


async def test_a_gzip_bomb_is_cut_short_as_too_large_with_bounded_memory() -> None:
    async with hostile_server(send_gzip_bomb) as server:
        run = await asyncio.to_thread(doctor_measured, server.url)
    assert run.peak_rss_mib < PEAK_RSS_LIMIT_MIB, f"{run.peak_rss_mib:.0f} MiB"
    assert run.status == 1, run.report
    failed = run.failed()
    assert "too large" in failed.get("body", ""), failed
    assert "MiB" in failed["body"]


async def test_an_endless_line_is_cut_short_as_too_long_with_bounded_memory() -> None:
    async with hostile_server(send_endless_line) as server:
        run = await asyncio.to_thread(doctor_measured, server.url)
    assert run.peak_rss_mib < PEAK_RSS_LIMIT_MIB, f"{run.peak_rss_mib:.0f} MiB"
    assert run.status == 1, run.report
    failed = run.failed()
    assert "line too long" in failed.get("body", ""), failed
