"""Free ports for the local servers (``up``, ``chaos``, the bench, the tests), each handed out once.

Binding port 0 and letting go may hand two callers the same number; these come
from below the ephemeral range and are never handed out twice in a session.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_FIRST = 20_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


_LAST = _ephemeral_start() - 1
_handed_out: set[int] = set()
_cursor = _FIRST + (os.getpid() * 7919) % 8_000


def _bindable(host: str, port: int) -> bool:
    # No SO_REUSEADDR: a port with connections still in TIME_WAIT is skipped too.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nothing listens on, never returned before in this process."""
    global _cursor
    if _LAST <= _FIRST:
        raise RuntimeError(f"ephemeral port range starts at {_LAST + 1}: no room for local ports")
    span = _LAST - _FIRST + 1
    for _ in range(span):
        port = _FIRST + (_cursor - _FIRST) % span
        _cursor = port + 1
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port left on {host} in {_FIRST}..{_LAST}")
