"""Asking the local processes over HTTP: a status, a metric's samples, open streams, leaders."""

from __future__ import annotations

from collections.abc import Iterable

import httpx


def samples(text: str, name: str) -> list[float]:
    """Every sample of ``name`` (with or without labels) in Prometheus text ``text``."""
    values = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values


def status_of(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET ``url``, None when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def scrape(url: str, timeout: float = 2.0) -> str | None:
    """The text at ``url`` (a /metrics), or None when nothing answers it with 200."""
    try:
        response = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def open_streams(text: str) -> int:
    """``sse_open_streams`` from a gateway's Prometheus text."""
    found = samples(text, "sse_open_streams")
    if not found:
        raise AssertionError("no sse_open_streams in /metrics")
    return int(found[0])


def publisher_leaders(metrics_ports: Iterable[int]) -> int:
    """How many of the publishers whose metrics are on ``metrics_ports`` say they lead."""
    total = 0
    for port in metrics_ports:
        text = scrape(f"http://127.0.0.1:{port}/metrics")
        total += sum(int(value) for value in samples(text or "", "health_publisher_leader"))
    return total
