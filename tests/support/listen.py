"""``connectome-sse listen`` as real processes, each stopped with the test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.wait import wait_for


@contextmanager
def stopped_at_exit() -> Iterator[list[ManagedProcess]]:
    """A list to put started listeners in; each is stopped when the block ends."""
    started: list[ManagedProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def listen(tmp_path: Path, started: list[ManagedProcess], *args: str) -> ManagedProcess:
    """``connectome-sse listen <args>``, started and connected."""
    name = f"listen-{len(started)}.log"
    proc = ManagedProcess(console_script("connectome-sse", "listen", *args), tmp_path / name)
    started.append(proc.start())
    wait_for(lambda: "connected to" in proc.log(), timeout=30, what=f"listen to connect\n{name}")
    return proc
