"""One supervised child process: its own process group, its output in a log file.

Each child leads a new session, so a Ctrl-C typed into ``up``'s terminal reaches
``up`` alone and ``up`` decides the order in which children stop. Where
util-linux's ``setpriv`` is installed (every Debian), a child also gets SIGTERM
from the kernel should ``up`` itself die without stopping it (``kill -9``,
OOM): nothing is left running behind a dead ``up``. (Not via ``preexec_fn``,
which Python documents as unsafe in a process with threads.) Children must be
started from the main thread, since the kernel sends the signal when the thread
that started them ends. Stopping sends
SIGTERM to the child, waits until a deadline, then SIGKILLs its whole group, and
finally sweeps the group for processes the child left behind (uvicorn workers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_SETPRIV = shutil.which("setpriv")
# setpriv sets the parent-death signal, then execs the child in place (same pid).
_EXIT_WITH_PARENT = [_SETPRIV, "--pdeathsig", "TERM", "--"] if _SETPRIV else []


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name sits in parentheses and may itself hold spaces or parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


class Child:
    """A process ``up`` started and will stop; ``name`` is what the newcomer reads in messages."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env)
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_EXIT_WITH_PARENT, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exit_code(self) -> int | None:
        """None while running (or not started), else the exit status (negative: a signal)."""
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 20) -> list[str]:
        try:
            with self.log_path.open(errors="replace") as log:
                return [line.rstrip("\n") for line in deque(log, maxlen=lines)]
        except OSError:
            return []

    def stop(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM; SIGKILL of the whole group after ``stop_timeout``, or at once on ``hurry``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self.proc.poll() is None and time.monotonic() < deadline and not hurry():
            time.sleep(0.02)
        # The leader may be gone while processes it started are still draining.
        while group_members(self.proc.pid) and time.monotonic() < deadline and not hurry():
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
