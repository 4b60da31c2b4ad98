"""Resident memory of a process and its children, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _own_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mib(pid: int) -> float:
    """RSS of ``pid`` plus its descendants (uvicorn workers), in MiB; 0 when it is gone."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _own_rss_kib(current)
        todo.extend(_children(current))
    return total / 1024
