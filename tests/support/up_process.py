"""`connectome-sse up` as a real process, and the process tree it grows.

``up`` starts each child in a session of its own (so Ctrl-C reaches ``up``
alone), which means killing ``up``'s process group does not reach them. The
finaliser therefore first asks ``up`` to stop (SIGTERM), then kills the process
group of every descendant it has seen, checking each one's start time so a
recycled pid is never touched. ``up``'s temp dir is made under the test's own
folder (TMPDIR), so even a SIGKILLed ``up`` leaves nothing in /tmp.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.wait import wait_for


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, start time) of ``pid``, or None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            children.setdefault(info[0], []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    return _stat(pid) is not None


@dataclass(frozen=True)
class Banner:
    url: str
    redis_port: int
    redis: str
    log_dir: str
    stream: str  # the stream row: a curl command
    listen: str
    shell: list[str]  # the commands to try from another shell, in order


class UpProcess(ManagedProcess):
    def __init__(self, workdir: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(console_script("connectome-sse", "up", *args), workdir / "up.log")
        # `up` reads REDIS_URL: a test decides whether there is one.
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.env.update({"TMPDIR": str(self.tmpdir), **(env or {})})
        self.seen: dict[int, tuple[int, int]] = {}  # pid -> (pgid, start time)

    def banner(self, timeout: float = 120.0) -> Banner:
        def printed() -> str:
            if not self.alive():
                raise AssertionError(
                    f"up exited with {self.proc and self.proc.poll()}:\n{self.log()}"
                )
            return self.log() if "Press Ctrl-C" in self.log() else ""

        text = wait_for(printed, timeout=timeout, what="up's banner")
        self.tree()

        def row(label: str) -> str:
            match = re.search(rf"^  {label} +(.+)$", text, re.MULTILINE)
            assert match, f"no {label} row in:\n{text}"
            return match.group(1)

        port = re.search(r"127\.0\.0\.1:(\d+)", row("redis"))
        assert port, text
        block = re.search(r"^Try it from another shell.*\n\n((?:    .+\n)+)", text, re.MULTILINE)
        assert block, f"no commands to try in:\n{text}"
        return Banner(
            url=row("dashboard").rstrip("/"),
            redis_port=int(port.group(1)),
            redis=row("redis"),
            log_dir=row("logs").split(" (")[0],
            stream=row("stream"),
            listen=row("listen"),
            shell=[line.strip() for line in block.group(1).splitlines()],
        )

    def tree(self) -> list[int]:
        """Descendants of ``up`` now; each is remembered for the finaliser."""
        pids = descendants(self.pid)
        for pid in pids:
            info = _stat(pid)
            if info is not None:
                self.seen.setdefault(pid, (info[1], info[2]))
        return pids

    def find(self, needle: str) -> int:
        pids = [pid for pid in self.tree() if needle in cmdline(pid)]
        assert pids, f"no descendant of up runs {needle!r}"
        return pids[0]

    def kill_everything(self) -> None:
        """The finaliser: SIGTERM ``up``, then SIGKILL it and the group of every descendant seen."""
        if self.proc is not None and self.alive():
            self.tree()
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        for pid, (pgid, started) in self.seen.items():
            info = _stat(pid)
            if info is not None and info[2] == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.kill_group()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
