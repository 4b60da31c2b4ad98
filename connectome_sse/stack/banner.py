"""What ``connectome-sse up`` prints once the gateway is ready: where to look, how to poke it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

EXAMPLE_PAYLOAD = '{"status":{"state":"WARN","score":0.7,"notes":["hello from redis-cli"]}}'


@dataclass(frozen=True)
class StackView:
    base_url: str  # http://127.0.0.1:8000
    redis: str  # "redis-server 7.0.15 on 127.0.0.1:6380"
    redis_cli: Sequence[str]  # ["redis-cli", "-p", "6380"]
    processes: Sequence[str]  # ["sse-gateway (1 worker, pid 12)", ...]
    log_dir: str
    auth: bool = False  # SSE_AUTH_SECRET set: streams need a token


def auth_line(view: StackView) -> str:
    if view.auth:
        return (
            "on: TOKEN=$(connectome-sse token) then "
            f'curl -N -H "Authorization: Bearer $TOKEN" {view.base_url}/api/sse'
        )
    return "off; to require tokens: export SSE_AUTH_SECRET=$(openssl rand -hex 32), run up again"


def render(view: StackView) -> str:
    publish = [*view.redis_cli, "publish", "sse:connectome_health", EXAMPLE_PAYLOAD]
    rows = [
        ("dashboard", f"{view.base_url}/"),
        ("stream", f"curl -N {view.base_url}/api/sse"),
        ("inject", shlex.join(publish)),
        ("auth", auth_line(view)),
        ("redis", view.redis),
        ("processes", ", ".join(view.processes)),
        ("logs", view.log_dir),
    ]
    width = max(len(label) for label, _ in rows)
    body = "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
    return f"\nconnectome-sse is up\n\n{body}\n\nPress Ctrl-C to stop everything.\n"
