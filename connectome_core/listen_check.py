"""Whether a server can listen on ``host:port``, asked before it starts anything else.

A busy port or a host that does not resolve is then one line naming the address,
not a started server that dies with a traceback.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Literal

_REASONS = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "not an address of this machine",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


@dataclass(frozen=True)
class ListenProblem:
    address: str  # host:port as given
    reason: str
    setting: Literal["host", "port"]  # what to change

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self.reason}"


def listen_problem(host: str, port: int) -> ListenProblem | None:
    """Bind ``host:port`` as uvicorn will, and let go; None when that worked."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:
            return ListenProblem(
                shown, f"the host {host} does not resolve ({exc.strerror})", "host"
            )
        except OSError as exc:
            reason = _REASONS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
            setting: Literal["host", "port"] = (
                "port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
            )
            return ListenProblem(shown, reason, setting)
    return None
