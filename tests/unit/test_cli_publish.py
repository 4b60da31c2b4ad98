"""`publish` validates the event name (reserved ones refused), the data (never empty) and, for
connectome_health, the payload before writing."""

from __future__ import annotations

import json

import pytest

from connectome_core.payload import example_health_payload, parse_health_payload
from connectome_sse.commands.publish import PublishError, prepare


def full(**status: object) -> dict[str, object]:
    payload: dict[str, object] = json.loads(example_health_payload(ts=5.0).to_json())
    payload["status"] = {"state": "ERROR", "score": 0.0, "notes": ["n"], **status}
    return payload


def test_valid_health_payload_is_published_as_canonical_json() -> None:
    text = prepare("connectome_health", json.dumps(full(), indent=2), raw=False)
    assert "\n" not in text
    assert parse_health_payload(text).status.notes == ["n"]


def test_missing_ts_is_set_to_now() -> None:
    payload = full()
    del payload["ts"]
    assert parse_health_payload(prepare("connectome_health", json.dumps(payload), False)).ts > 1e9


@pytest.mark.parametrize(
    ("event", "data", "message"),
    [
        ("bad name", "x", "invalid event name"),
        ("a" * 65, "x", "invalid event name"),
        ("ping", "x", "reserved"),
        ("health_stale", "{}", "reserved"),
        ("notice", "", "empty"),
        ("connectome_health", "{nope", "not JSON"),
        ("connectome_health", json.dumps(full(state="BAD")), r"status\.state"),
        ("connectome_health", json.dumps({**full(), "extra": 1}), "extra"),
    ],
)
def test_refused(event: str, data: str, message: str) -> None:
    with pytest.raises(PublishError, match=message) as info:
        prepare(event, data, raw=False)
    assert info.value.status == 2
    assert "\n" not in str(info.value)


def test_raw_skips_validation_and_other_events_are_free_text() -> None:
    assert prepare("connectome_health", '{"status":{"state":"WARN"}}', raw=True) == (
        '{"status":{"state":"WARN"}}'
    )
    assert prepare("notes.v1", "any text", raw=False) == "any text"


def test_oversized_data_is_refused() -> None:
    with pytest.raises(PublishError, match="SSE_MAX_EVENT_BYTES"):
        prepare("x", "é" * 6, raw=False, max_bytes=10)
