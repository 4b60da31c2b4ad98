"""``LOG_FORMAT=json``: one strict JSON object per line, the same fields as text, plus extras."""

from __future__ import annotations

import json
import logging

import pytest

from connectome_core.logs import JsonFormatter


def strict(line: str) -> dict[str, object]:
    def refuse(name: str) -> object:  # NaN, Infinity: what browsers' JSON.parse rejects
        raise ValueError(f"not JSON: {name}")

    parsed = json.loads(line, parse_constant=refuse)
    assert isinstance(parsed, dict)
    return parsed


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("sse_gateway.stream", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_record_is_one_json_object_with_its_fields_and_extras() -> None:
    line = JsonFormatter().format(record("stream opened %s", "1.2.3.4", peer="1.2.3.4", sub=None))
    assert "\n" not in line
    entry = strict(line)
    assert entry["message"] == "stream opened 1.2.3.4"
    assert entry["level"] == "info"
    assert entry["logger"] == "sse_gateway.stream"
    assert isinstance(entry["pid"], int)
    assert str(entry["ts"]).endswith("+00:00")
    assert entry["peer"] == "1.2.3.4" and entry["sub"] is None


@pytest.mark.parametrize("odd", [float("nan"), object(), b"\xff"])
def test_an_odd_extra_never_costs_the_line_and_the_output_stays_strict(odd: object) -> None:
    line = JsonFormatter().format(record("x", value=odd))
    strict(line)


def test_a_traceback_stays_inside_the_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "RuntimeError: boom" in str(strict(line)["exc"])


def test_uvicorns_coloured_copy_of_the_message_is_left_out() -> None:
    """uvicorn passes ``color_message`` (ANSI escapes) for its own formatter: noise in JSON."""
    entry = strict(
        JsonFormatter().format(record("Started", color_message="\x1b[36mStarted\x1b[0m"))
    )
    assert entry["message"] == "Started" and "color_message" not in entry
