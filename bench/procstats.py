"""Memory and CPU of a server and all its descendants, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class TreeStats:
    pids: tuple[int, ...]
    rss_kb: int  # VmRSS summed: shared pages count once per process
    pss_kb: int  # proportional set size summed: shared pages split between processes
    cpu_s: float  # user + system CPU seconds
    sys_s: float = 0.0  # of which in the kernel (system calls, the TCP stack)


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        # the command name may contain spaces and parentheses; fields follow the last ')'
        return f.read().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, i = [pid], 0
    while i < len(tree):
        tree.extend(children.get(tree[i], []))
        i += 1
    return tree


def _kb(text: str, field: str) -> int:
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def tree_stats(pid: int | None) -> TreeStats:
    if pid is None:
        return TreeStats((), 0, 0, 0.0)
    pids = descendants(pid)
    rss = pss = 0
    cpu = sys_ = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                rss += _kb(f.read(), "VmRSS:")
            with open(f"/proc/{p}/smaps_rollup") as f:
                pss += _kb(f.read(), "Pss:")
            fields = _stat_fields(p)
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            sys_ += int(fields[12]) / CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            continue  # the process ended between listing and reading
    return TreeStats(tuple(pids), rss, pss, cpu, sys_)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            fields = _stat_fields(p)
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
