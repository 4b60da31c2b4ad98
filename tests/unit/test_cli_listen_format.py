"""`listen` prints one readable line per event and builds its stream URL."""

from __future__ import annotations

import argparse
import json

import pytest

from connectome_core.payload import example_health_payload
from connectome_sse.commands.listen import UsageError, add_arguments, stream_url
from connectome_sse.listen_format import format_event, json_line
from connectome_sse.sse_client import ServerEvent

T = 1_700_000_000.25


def health(state: str = "ERROR", notes: list[str] | None = None) -> ServerEvent:
    payload = json.loads(example_health_payload(ts=T, state="OK").to_json())
    payload["status"] = {"state": state, "score": 0.0, "notes": notes or []}
    return ServerEvent("connectome_health", json.dumps(payload), "")


def test_health_line_has_state_score_and_notes() -> None:
    line = format_event(health(notes=["query write seen"]), T, colour=False)
    assert "connectome_health" in line
    assert "ERROR" in line and "score=0.00" in line and '"query write seen"' in line
    assert "tick=0" in line and "pressure=0.00" in line
    assert "\x1b[" not in line


def test_health_state_is_coloured_when_asked() -> None:
    assert "\x1b[1m\x1b[31mERROR" in format_event(health(), T, colour=True)
    assert "\x1b[1m\x1b[32mOK" in format_event(health("OK"), T, colour=True)


def test_partial_health_payload_still_prints() -> None:
    event = ServerEvent("connectome_health", '{"status":{"state":"WARN"}}', "")
    line = format_event(event, T, colour=False)
    assert "WARN" in line
    assert "score" not in line


def test_ping_and_other_events() -> None:
    assert "redis=down" in format_event(
        ServerEvent("ping", '{"ts":1,"redis":"down"}', ""), T, False
    )
    line = format_event(ServerEvent("other", '{ "a" : [1, 2] }', ""), T, False)
    assert line.endswith('{"a":[1,2]}')
    assert format_event(ServerEvent("text", "a\nb", ""), T, False).endswith("a\\nb")


def test_json_line_keeps_data_verbatim() -> None:
    record = json.loads(json_line(ServerEvent("x", 'a\n{"b":1}', "9"), T))
    assert record == {"event": "x", "id": "9", "data": 'a\n{"b":1}', "received": T}


@pytest.mark.parametrize(
    ("url", "events", "expected"),
    [
        ("http://h:8000", None, "http://h:8000/api/sse"),
        ("http://h:8000/", "a,b", "http://h:8000/api/sse?events=a,b"),
        ("h:8000", None, "http://h:8000/api/sse"),
        ("https://h/sse/x?events=z", " a , b ", "https://h/sse/x?events=a,b"),
    ],
)
def test_stream_url(url: str, events: str | None, expected: str) -> None:
    assert stream_url(url, events) == expected


@pytest.mark.parametrize(
    ("url", "events"), [("ftp://h", None), ("http://h", "a b"), ("http://h", ",")]
)
def test_stream_url_refuses(url: str, events: str | None) -> None:
    with pytest.raises(UsageError):
        stream_url(url, events)


def test_json_line_is_one_line_for_line_based_readers() -> None:
    line = json_line(ServerEvent("x", "a\u2028b\u2029c\né", ""), T)
    assert len(line.splitlines()) == 1
    assert json.loads(line)["data"] == "a\u2028b\u2029c\né"


@pytest.mark.parametrize("argv", [["--count", "0"], ["--count", "x"], ["--idle-timeout", "nan"]])
def test_listen_refuses_bad_numbers(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["http://h", *argv])
