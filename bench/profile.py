"""Sampling the gateway's workers with py-spy while a scenario publishes (`--profile`).

py-spy runs `--nonblocking` and writes collapsed stacks to `bench/results/`;
`hot_spots` turns them into self and inclusive time per function, and self time per
module of the project (a sample counts for the innermost of its frames in the project;
one with none, for the library frame it was in: `asyncio/runners.py` is the event
loop's own C code, which py-spy does not see into).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procstats import cmdline, descendants
from bench.systems import RunningSystem

_LINE_NUMBER = re.compile(r":\d+\)")
# Threads that only wait: with --native py-spy cannot tell their blocking read from work.
IDLE_THREADS = ("Process.always_pong (uvicorn/",)
LOOP_FRAME = "(asyncio/runners.py)"  # asyncio.run's frame: the loop's callbacks run under it


def python_workers(pid: int) -> list[int]:
    """The processes of a server tree that serve requests: leaves, minus helper processes."""
    tree = descendants(pid)
    parents = set()
    for p in tree:
        try:
            with open(f"/proc/{p}/stat") as f:
                parents.add(int(f.read().rsplit(")", 1)[1].split()[1]))
        except (OSError, ValueError, IndexError):
            continue
    return [p for p in tree if p not in parents and "resource_tracker" not in cmdline(p)]


def py_spy_command() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else None


def hot_spots(raw: str, top: int = 12, own: tuple[str, ...] = ("sse_gateway/",)) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's collapsed stacks ("a;b;c 42" lines).

    Inclusive shares are listed for the project's own functions only (`own`): the
    frames of the interpreter and uvicorn's start-up are on every stack and say nothing.
    """
    selfs: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    modules: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # "func (path.py:123)" -> "func (path.py)": one entry per function, not per line
        frames = _LINE_NUMBER.sub(")", stack).split(";")
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or any(idle in stack for idle in IDLE_THREADS):
            continue
        total += count
        selfs[frames[-1]] = selfs.get(frames[-1], 0) + count
        # What the event loop called: the frames above it (uvicorn's start-up, the
        # gateway's serve()) are on every stack.
        called = frames[_after_loop(frames) :]
        module = _module(next((f for f in reversed(called) if _owns(f, own)), frames[-1]))
        modules[module] = modules.get(module, 0) + count
        for frame in set(frames):
            if _owns(frame, own):
                inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [(name, round(100 * n / total, 1)) for name, n in best] if total else []

    return {
        "samples": total,
        "self_pct": ranked(selfs),
        "inclusive_pct": ranked(inclusive),
        "module_pct": ranked(modules),
    }


def _after_loop(frames: list[str]) -> int:
    """The index of the first frame the event loop called (0 when it is not on the stack)."""
    for index in range(len(frames) - 1, -1, -1):
        if LOOP_FRAME in frames[index]:
            return index + 1
    return 0


def _owns(frame: str, own: tuple[str, ...]) -> bool:
    return any(mark in frame for mark in own)


def _module(frame: str) -> str:
    """ "func (pkg/mod.py)" -> "pkg/mod.py"."""
    return frame.rpartition(" (")[2].rstrip(")") or frame


def start_profile(
    out_dir: Path, label: str, rate_hz: int = 100, native: bool = False
) -> Callable[[RunningSystem, float], Callable[[], dict[str, Any]]]:
    """A `measure(..., profile=...)` hook: sample every worker of the system for `duration_s`.

    `native` adds C frames (uvloop, the interpreter, libc); py-spy must then pause
    the target for each sample, which slows it down: use it to see where, not how fast.
    """

    def start(system: RunningSystem, duration_s: float) -> Callable[[], dict[str, Any]]:
        exe = py_spy_command()
        if exe is None:
            return lambda: {"error": "py-spy not found (pip install py-spy)"}
        out_dir.mkdir(parents=True, exist_ok=True)
        runs: list[tuple[int, Path, subprocess.Popen[bytes]]] = []
        for pid in python_workers(system.pid):
            out = out_dir / f"profile-{label}-{system.name}-{pid}.txt"
            log = out.with_suffix(".log").open("wb")
            args = [
                exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))),
                "--rate", str(rate_hz), "--format", "raw", "--output", str(out),
                *(["--native"] if native else ["--nonblocking"]),
            ]  # fmt: skip
            runs.append((pid, out, subprocess.Popen(args, stdout=log, stderr=log)))
            log.close()

        def finish() -> dict[str, Any]:
            deadline = time.monotonic() + duration_s + 30
            report: dict[str, Any] = {}
            for pid, out, proc in runs:
                try:
                    proc.wait(max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                try:
                    spots = hot_spots(out.read_text())
                except OSError:
                    spots = {"error": f"no profile written (see {out.with_suffix('.log')})"}
                report[str(pid)] = {"file": str(out), **spots}
            return report

        return finish

    return start


def format_hot_spots(profile: dict[str, Any], top: int = 10) -> str:
    lines = []
    for pid, spots in profile.items():
        if "error" in spots:
            lines.append(f"pid {pid}: {spots['error']}")
            continue
        lines.append(f"pid {pid}: {spots['samples']} samples ({spots['file']})")
        lines.append("  self %   function")
        lines += [f"  {pct:6.1f}   {name}" for name, pct in spots["self_pct"][:top]]
        lines.append("  incl %   function (the gateway's own)")
        lines += [f"  {pct:6.1f}   {name}" for name, pct in spots["inclusive_pct"][:top]]
        lines.append("  self %   module (the innermost of the gateway's, else the library's)")
        lines += [f"  {pct:6.1f}   {name}" for name, pct in spots.get("module_pct", [])[:top]]
    return "\n".join(lines)
