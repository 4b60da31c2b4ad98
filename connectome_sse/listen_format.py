"""One readable terminal line per SSE event, for ``connectome-sse listen``.

Health gets its status coloured and key figures; ``ping``, ``resync`` and
``health_stale`` stand out; anything else shows its data as compact JSON.
Health fields are all optional here: hand-published payloads may be partial.
"""

from __future__ import annotations

import json
import time
from typing import Any

from connectome_core.contract import (
    HEALTH_EVENT,
    HEALTH_STALE_EVENT,
    PING_EVENT,
    RESERVED_EVENTS,
    RESYNC_EVENT,
)
from connectome_sse.sse_client import ServerEvent

RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"
COLOURS = {"OK": "\x1b[32m", "WARN": "\x1b[33m", "ERROR": "\x1b[31m", "up": "\x1b[32m"}
DEFAULT_COLOUR = "\x1b[31m"
WARN_COLOUR = "\x1b[33m"
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
    line = _describe(event, received, colour)
    # The parser repeats the last id on every later event; gateway-made ones have none.
    if event.id and event.event not in RESERVED_EVENTS:
        line += " " + _paint(f"id={event.id}", DIM, colour)
    return line


def _describe(event: ServerEvent, received: float, colour: bool) -> str:
    head = f"{_paint(_clock(received), DIM, colour)} {event.event:<17}"
    try:
        payload = json.loads(event.data)
    except ValueError:
        payload = None
    if event.event == HEALTH_EVENT and isinstance(payload, dict):
        return f"{head} {health_summary(payload, colour)}"
    if event.event == PING_EVENT and isinstance(payload, dict) and "redis" in payload:
        seen = str(payload["redis"])
        line = f"{head} redis={_paint(seen, COLOURS.get(seen, DEFAULT_COLOUR), colour)}"
        if "health_age" in payload:
            age = payload["health_age"]
            line += " health_age=" + ("none yet" if age is None else f"{_num(age, 1)}s")
        return line
    if event.event == RESYNC_EVENT and isinstance(payload, dict):
        why = str(payload.get("reason", "?"))
        text = f"resync ({why}): the gateway could not resume; snapshots follow"
        return f"{head} {_paint(text, BOLD + WARN_COLOUR, colour)}"
    if event.event == HEALTH_STALE_EVENT and isinstance(payload, dict):
        text = f"publisher silent for {_num(payload.get('age'), 1)}s"
        if payload.get("last_ts") is not None:
            text += f" (last health ts {_num(payload.get('last_ts'), 3)})"
        return f"{head} {_paint(text, BOLD + DEFAULT_COLOUR, colour)}"
    return f"{head} {compact_data(event.data)}"


def json_line(event: ServerEvent, received: float) -> str:
    """The event as one JSON object: type, id, the data exactly as received, receive time.

    U+2028 and U+2029 are escaped: valid raw in JSON, but line-based readers cut lines there.
    """
    record = {"event": event.event, "id": event.id, "data": event.data, "received": received}
    text = json.dumps(record, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
