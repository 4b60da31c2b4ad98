"""Parsing connectome:signals entries: every kind accepted, every kind of bad entry refused."""

from __future__ import annotations

import json

import pytest

from health_publisher.signals import (
    BadSignal,
    CounterSignal,
    InterruptSignal,
    PressureSignal,
    TickSignal,
    parse_signal,
)

EDGE = {"from": "a", "to": "b", "polarity": -1, "strength": 0.5, "confidence": 0.9, "contrib": 0.2}

VALID = {
    "tick": {"tick": "7", "speed": "x2", "playthrough_id": "p1", "place_id": "hall"},
    "sink_size": {"value": "12"},
    "focus_change": {"changed": "1"},
    "interrupt": {"reason": "spoken", "moment_id": "m1", "age_ticks": "3"},
    "counter": {"name": "dmz_violation_attempts", "by": "2"},
    "neighborhood": {"nodes": "10", "edges": "25"},
    "pressure": {"contradiction": "0.4", "top_edges": json.dumps([EDGE])},
    "plateau": {"seconds": "12.5"},
}


def entry(kind: str, **fields: str) -> dict[bytes, bytes]:
    data = {"kind": kind, **fields}
    return {k.encode(): v.encode() for k, v in data.items()}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_kind_parses(kind: str) -> None:
    signal = parse_signal(entry(kind, **VALID[kind]))
    assert signal.kind == kind


def test_values_are_typed() -> None:
    tick = parse_signal(entry("tick", **VALID["tick"]))
    assert isinstance(tick, TickSignal) and tick.tick == 7 and tick.speed == "x2"
    pressure = parse_signal(entry("pressure", **VALID["pressure"]))
    assert isinstance(pressure, PressureSignal)
    assert pressure.top_edges[0].from_ == "a" and pressure.contradiction == 0.4


def test_optional_fields_have_defaults() -> None:
    counter = parse_signal(entry("counter", name="query_write_attempts"))
    assert isinstance(counter, CounterSignal) and counter.by == 1
    interrupt = parse_signal(entry("interrupt", reason="none"))
    assert isinstance(interrupt, InterruptSignal)
    assert interrupt.moment_id is None and interrupt.age_ticks is None
    assert parse_signal(entry("pressure", contradiction="0")).top_edges == []  # type: ignore[union-attr]


def test_unknown_fields_are_ignored() -> None:
    assert parse_signal(entry("sink_size", value="3", engine="v2")).value == 3  # type: ignore[union-attr]


def test_str_fields_work_as_well_as_bytes() -> None:
    assert parse_signal({"kind": "plateau", "seconds": "1"}).seconds == 1.0  # type: ignore[union-attr]


BAD = [
    # (entry, reason)
    (entry("wormhole", value="1"), "unknown_kind"),
    ({b"value": b"1"}, "missing_field"),
    (entry("tick", speed="x1", playthrough_id="p", place_id="q"), "missing_field"),
    (entry("sink_size"), "missing_field"),
    (entry("neighborhood", nodes="3"), "missing_field"),
    (entry("counter"), "missing_field"),
    (entry("sink_size", value="many"), "bad_value"),
    (entry("sink_size", value="2.5"), "bad_value"),
    (entry("tick", tick="x", speed="x1", playthrough_id="p", place_id="q"), "bad_value"),
    (entry("plateau", seconds="soon"), "bad_value"),
    (entry("plateau", seconds="nan"), "bad_value"),
    (entry("pressure", contradiction="inf"), "bad_value"),
    (entry("sink_size", value="-1"), "bad_value"),
    (entry("focus_change", changed="2"), "bad_value"),
    (entry("pressure", contradiction="1.5"), "bad_value"),
    (entry("plateau", seconds="-3"), "bad_value"),
    (entry("counter", name="query_write_attempts", by="0"), "bad_value"),
    (entry("counter", name="coffee_breaks"), "bad_value"),
    (entry("tick", tick="1", speed="x9", playthrough_id="p", place_id="q"), "bad_value"),
    (entry("interrupt", reason="sneezed"), "bad_value"),
    (entry("interrupt", reason="spoken", age_ticks="-1"), "bad_value"),
    (entry("pressure", contradiction="0.5", top_edges="[{"), "bad_value"),
    (entry("pressure", contradiction="0.5", top_edges='{"from": "a"}'), "bad_value"),
    (entry("pressure", contradiction="0.5", top_edges='[{"from": "a"}]'), "missing_field"),
    (
        entry("pressure", contradiction="0.5", top_edges=json.dumps([{**EDGE, "polarity": 3}])),
        "bad_value",
    ),
    ({b"kind": b"\xff\xfe"}, "bad_encoding"),
    ({b"kind": b"sink_size", b"value": b"\xc3"}, "bad_encoding"),
]


@pytest.mark.parametrize(
    ("fields", "reason"), BAD, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD)]
)
def test_bad_entries_are_refused_with_a_reason(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(BadSignal) as caught:
        parse_signal(fields)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_too_many_edges_are_refused() -> None:
    edges = json.dumps([EDGE] * 101)
    with pytest.raises(BadSignal):
        parse_signal(entry("pressure", contradiction="0.5", top_edges=edges))


def test_top_edges_nested_100000_levels_deep_is_a_bad_value_not_a_crash() -> None:
    # Regression: json.loads raised RecursionError, counted as "internal".
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(BadSignal) as caught:
        parse_signal({b"kind": b"pressure", b"contradiction": b"0.5", b"top_edges": deep.encode()})
    assert caught.value.reason == "bad_value"
    assert "top_edges" in str(caught.value)


def test_an_oversized_top_edges_field_is_refused_before_parsing() -> None:
    huge = json.dumps([{"from": "a", "to": "b"}] * 20_000)
    with pytest.raises(BadSignal) as caught:
        parse_signal({b"kind": b"pressure", b"contradiction": b"0.5", b"top_edges": huge.encode()})
    assert caught.value.reason == "bad_value"
