"""Starting the members of the stack in order, watching them, and stopping them in reverse.

SIGINT, SIGTERM and SIGHUP ask for a stop; a second one hurries it (every member
still running is SIGKILLed at once).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Member(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def exit_code(self) -> int | None: ...

    def tail(self, lines: int = 20) -> list[str]: ...

    def stop(self, hurry: Callable[[], bool] = ...) -> None: ...


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def death_report(member: Member, code: int, lines: int = 20) -> str:
    tail = member.tail(lines)
    head = f"{member.name} {describe_exit(code)}"
    if not tail:
        return head + " (its log is empty)"
    return head + "; the end of its log:\n" + "\n".join(f"    {line}" for line in tail)


class Supervisor:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.members: list[Member] = []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()
        self._previous: dict[int, Any] = {}

    def install_signal_handlers(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()
        self.stop_requested.set()

    def add(self, member: Member) -> None:
        self.members.append(member)

    def first_dead(self) -> tuple[Member, int] | None:
        for member in self.members:
            code = member.exit_code()
            if code is not None:
                return member, code
        return None

    def wait_for_stop(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop was asked for."""
        return self.stop_requested.wait(seconds)

    def stop_all(self) -> None:
        while self.members:
            member = self.members.pop()
            if member.exit_code() is not None:
                continue
            pid = f" (pid {member.pid})" if member.pid is not None else ""
            self.log(f"stopping {member.name}{pid}")
            member.stop(self.hurry.is_set)
