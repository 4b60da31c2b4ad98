"""One supervised child of ``up``: a :class:`ManagedProcess` as the supervisor sees it.

Each leads its own session (a Ctrl-C reaches ``up`` alone) and, where ``setpriv``
exists, gets SIGTERM from the kernel should ``up`` die: start children from the
main thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from connectome_sse.localrun.processes import ManagedProcess, never


class Child:
    """A process ``up`` started and will stop; ``name`` is what the newcomer reads in messages.

    ``process`` replaces the plain process made of ``argv``, ``log_path`` and ``env``
    (the local Redis is one).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        stop_timeout: float = 5.0,
        *,
        process: ManagedProcess | None = None,
    ) -> None:
        self.name = name
        self.stop_timeout = stop_timeout
        self.process = process or ManagedProcess(
            argv, log_path, env, inherit_env=False, exit_with_parent=True
        )

    def start(self) -> None:
        self.process.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process.started else None

    def exit_code(self) -> int | None:
        """None while running (or not started), else the exit status (negative: a signal)."""
        return self.process.exit_code()

    def tail(self, lines: int = 20) -> list[str]:
        return self.process.tail(lines)

    def stop(self, hurry: Callable[[], bool] = never) -> None:
        """SIGTERM; SIGKILL of the whole group after ``stop_timeout``, or at once on ``hurry``."""
        self.process.stop(self.stop_timeout, hurry, drain_group=True)
