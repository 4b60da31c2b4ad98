"""What ``connectome-sse up`` prints once the gateway is ready: where to look, how to poke it.

Every command in it works when pasted as printed: no masked password, a token
minted in place when streams need one, and the export that points the tools at
the Redis ``up`` started.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NOTE = "hello from the first hour"


@dataclass(frozen=True)
class StackView:
    base_url: str  # http://127.0.0.1:8000
    redis: str  # "redis-server 7.0.15 on 127.0.0.1:6380, started by up"
    processes: Sequence[str]  # ["sse-gateway (1 worker, pid 12)", ...]
    log_dir: str
    # What another shell must export to reach this Redis; None: the user's REDIS_URL.
    exports: Mapping[str, str] | None = None
    # The setting holding the token secret (SSE_AUTH_SECRET or its _FILE); None: auth off.
    auth: str | None = None
    tool: str = "connectome-sse"  # how to run the CLI from a shell (a path when not on PATH)


def _token(view: StackView) -> str:
    return f"$({view.tool} token --sub me)"


def stream_line(view: StackView) -> str:
    url = f"{view.base_url}/api/sse"
    if view.auth:
        return f'curl -N -H "Authorization: Bearer {_token(view)}" {url}'
    return f"curl -N {url}"


def listen_line(view: StackView) -> str:
    line = f"{view.tool} listen {view.base_url}"
    return f'{line} --token "{_token(view)}"' if view.auth else line


def auth_line(view: StackView) -> str:
    if view.auth:
        return (
            f"on: the stream and listen lines mint a token ({view.tool} token), which needs "
            f"{view.auth} in that shell too; the dashboard takes one as {view.base_url}/#token=T"
        )
    return "off; to require tokens: export SSE_AUTH_SECRET=$(openssl rand -hex 32), run up again"


def shell_lines(view: StackView) -> list[str]:
    """What to paste into another shell: point the tools at this Redis, then publish a note."""
    lines = []
    if view.exports is not None:
        lines.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in view.exports.items()))
    lines.append(f"{view.tool} publish note {shlex.quote(NOTE)}")
    return lines


def render(view: StackView) -> str:
    rows = [
        ("dashboard", f"{view.base_url}/"),
        ("stream", stream_line(view)),
        ("listen", listen_line(view)),
        ("redis", view.redis),
        ("processes", ", ".join(view.processes)),
        ("logs", view.log_dir),
        ("auth", auth_line(view)),
    ]
    width = max(len(label) for label, _ in rows)
    body = "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
    where = (
        "(the tools read REDIS_URL; unset, they use 127.0.0.1:6379)"
        if view.exports is not None
        else "(with the same REDIS_URL in its environment)"
    )
    shell = "\n".join(f"    {line}" for line in shell_lines(view))
    return (
        f"\nconnectome-sse is up\n\n{body}\n\n"
        f"Try it from another shell {where}:\n\n{shell}\n\n"
        "The note shows in the stream and in listen; the dashboard draws connectome_health\n"
        "alone, which the publisher rewrites every second.\n\n"
        "Press Ctrl-C to stop everything.\n"
    )
