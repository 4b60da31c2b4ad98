"""The one runner of real OS processes (``up``, ``chaos``, the bench, the tests).

Every child leads a session (process group) of its own, so a caller stops it
and everything it spawned (uvicorn workers) in one signal, and a Ctrl-C typed
into the caller's terminal reaches the caller alone. Output goes to a log file.
Stopping is SIGTERM, a deadline, then SIGKILL of the whole group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from signal import SIGKILL  # the method `signal` below shadows the module in the class body
from typing import Self

from connectome_sse.localrun.wait import wait_for

_SETPRIV = shutil.which("setpriv")
# util-linux's setpriv sets the parent-death signal, then execs the child in place (same
# pid). Not preexec_fn, which Python documents as unsafe in a process with threads.
_EXIT_WITH_PARENT = [_SETPRIV, "--pdeathsig", "TERM", "--"] if _SETPRIV else []
# How long the processes a SIGKILLed group leaves behind may take to disappear.
_GROUP_GONE_S = 5.0


def never() -> bool:
    return False


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


class ManagedProcess:
    """One child process, its output appended to ``log_path``.

    ``env`` is added to this process's environment, or is the whole of it with
    ``inherit_env=False``. With ``exit_with_parent`` the kernel sends the child
    SIGTERM should the thread that started it end (the caller killed, OOM),
    where ``setpriv`` is installed: start such children from the main thread.
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        *,
        inherit_env: bool = True,
        exit_with_parent: bool = False,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
        self.cwd = cwd
        self.exit_with_parent = exit_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        prefix = _EXIT_WITH_PARENT if self.exit_with_parent else []
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def started(self) -> bool:
        return self.proc is not None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """None while running (or not started), else the exit status (negative: a signal)."""
        return None if self.proc is None else self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the log."""
        try:
            with self.log_path.open(errors="replace") as log:
                return [line.rstrip("\n") for line in deque(log, maxlen=lines)]
        except OSError:
            return []

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill_group(self, sig: int = SIGKILL) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL of the group, and the child reaped: a crash, as abrupt as it gets."""
        if self.alive():
            self.kill_group(signal.SIGKILL)
            self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout=timeout)

    def stop(
        self, timeout: float = 10.0, hurry: Callable[[], bool] = never, drain_group: bool = False
    ) -> None:
        """SIGTERM; SIGKILL of the whole group after ``timeout``, or at once on ``hurry()``.

        With ``drain_group`` the processes the child started (uvicorn workers) get the
        rest of the deadline to exit too, should the child exit before them.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline and not hurry():
            time.sleep(0.02)
        while (
            drain_group
            and group_members(self.proc.pid)
            and time.monotonic() < deadline
            and not hurry()
        ):
            time.sleep(0.02)
        self.kill_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        gone = time.monotonic() + _GROUP_GONE_S
        while group_members(self.proc.pid) and time.monotonic() < gone:
            time.sleep(0.02)


def console_script(name: str, *args: str) -> list[str]:
    """The installed console script next to this interpreter (the package is pip-installed)."""
    candidate = Path(sys.executable).parent / name
    return [str(candidate) if candidate.exists() else name, *args]


def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=timeout, what=f"pid {pid} to exit")
