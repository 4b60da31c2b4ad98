"""One readable terminal line per SSE event, for ``connectome-sse listen``.

``connectome_health`` gets its status coloured and its key figures picked out;
``ping`` shows whether the gateway sees Redis; any other event shows its data
as compact JSON (or the text itself, line breaks escaped). Every field of a
health payload is optional here: hand-published payloads may be partial.
"""

from __future__ import annotations

import json
import time
from typing import Any

from connectome_sse.contract import HEALTH_EVENT, PING_EVENT
from connectome_sse.sse_client import ServerEvent

RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"
COLOURS = {"OK": "\x1b[32m", "WARN": "\x1b[33m", "ERROR": "\x1b[31m", "up": "\x1b[32m"}
DEFAULT_COLOUR = "\x1b[31m"
MAX_DATA_CHARS = 400


def _paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{RESET}" if colour else text


def _clock(received: float) -> str:
    local = time.localtime(received)
    return time.strftime("%H:%M:%S", local) + f".{int(received % 1 * 1000):03d}"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _num(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def compact_data(data: str) -> str:
    try:
        text = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        text = data.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= MAX_DATA_CHARS else text[: MAX_DATA_CHARS - 1] + "…"


def health_summary(payload: Any, colour: bool) -> str:
    parts = []
    state = _get(payload, "status", "state")
    if isinstance(state, str):
        parts.append(_paint(f"{state:<5}", BOLD + COLOURS.get(state, DEFAULT_COLOUR), colour))
    fields = [
        ("score", ("status", "score")),
        ("tick", ("runner", "tick")),
        ("speed", ("runner", "speed")),
        ("interrupt", ("runner", "last_interrupt", "reason")),
        ("sink_p50", ("attention", "sink_set_size", "p50")),
        ("sink_p95", ("attention", "sink_set_size", "p95")),
        ("reconfig/min", ("attention", "focus_reconfig_rate_per_min")),
        ("plateau_s", ("attention", "plateau_seconds")),
        ("pressure", ("pressure", "contradiction")),
        ("query_writes", ("counters", "query_write_attempts")),
        ("dmz", ("counters", "dmz_violation_attempts")),
        ("epoch_mismatch", ("counters", "async_epoch_mismatch")),
    ]
    for label, path in fields:
        value = _get(payload, *path)
        if value is not None:
            parts.append(f"{label}={_num(value)}")
    notes = _get(payload, "status", "notes")
    if isinstance(notes, list) and notes:
        parts.append(json.dumps("; ".join(str(n) for n in notes), ensure_ascii=False))
    return " ".join(parts)


def format_event(event: ServerEvent, received: float, colour: bool) -> str:
    head = f"{_paint(_clock(received), DIM, colour)} {event.event:<17}"
    try:
        payload = json.loads(event.data)
    except ValueError:
        payload = None
    if event.event == HEALTH_EVENT and isinstance(payload, dict):
        return f"{head} {health_summary(payload, colour)}"
    if event.event == PING_EVENT and isinstance(payload, dict) and "redis" in payload:
        seen = str(payload["redis"])
        return f"{head} redis={_paint(seen, COLOURS.get(seen, DEFAULT_COLOUR), colour)}"
    return f"{head} {compact_data(event.data)}"


def json_line(event: ServerEvent, received: float) -> str:
    """The event as one JSON object: type, id, the data exactly as received, receive time.

    U+2028 and U+2029 are escaped: valid raw in JSON, but line-based readers cut lines there.
    """
    record = {"event": event.event, "id": event.id, "data": event.data, "received": received}
    text = json.dumps(record, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
