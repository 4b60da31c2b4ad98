"""The connectome_health payload model (schema 1): wire names, strictness, JSON Schema."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from connectome_core.payload import (
    HealthPayload,
    example_health_payload,
    health_json_schema,
    parse_health_payload,
)

PAYLOAD_KEYS = {
    "schema",
    "ts",
    "playthrough_id",
    "place_id",
    "runner",
    "status",
    "counters",
    "attention",
    "pressure",
}


def wire(**changes: object) -> dict[str, object]:
    data: dict[str, object] = json.loads(example_health_payload(ts=1.0).to_json())
    data.update(changes)
    return data


def test_serializes_with_the_spec_keys_and_round_trips() -> None:
    payload = example_health_payload(ts=12.5, state="WARN")
    data = json.loads(payload.to_json())
    assert set(data) == PAYLOAD_KEYS
    assert data["schema"] == 1
    assert data["status"] == {"state": "WARN", "score": 0.7, "notes": []}
    assert set(data["runner"]["last_interrupt"]) == {"reason", "moment_id", "age_ticks"}
    assert parse_health_payload(payload.to_json()) == payload


def test_top_edge_uses_from_on_the_wire() -> None:
    edge = {
        "from": "a",
        "to": "b",
        "polarity": -0.5,
        "strength": 1,
        "confidence": 0.5,
        "contrib": 0,
    }
    data = wire(pressure={"contradiction": 0.4, "top_edges": [edge]})
    payload = HealthPayload.model_validate(data)
    assert payload.pressure.top_edges[0].from_ == "a"
    assert json.loads(payload.to_json())["pressure"]["top_edges"][0]["from"] == "a"


@pytest.mark.parametrize(
    "changes",
    [
        {"schema": 2},
        {"status": {"state": "FINE", "score": 1, "notes": []}},
        {"status": {"state": "OK", "score": 1.5, "notes": []}},
        {"pressure": {"contradiction": -0.1, "top_edges": []}},
        {"extra": 1},
        {"ts": float("nan")},
    ],
    ids=["schema-2", "state", "score", "contradiction", "extra-key", "nan"],
)
def test_refuses_what_is_not_schema_1(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HealthPayload.model_validate(wire(**changes))


def test_refuses_a_missing_key() -> None:
    data = wire()
    del data["counters"]
    with pytest.raises(ValidationError):
        HealthPayload.model_validate(data)


def test_json_schema_names_every_key_as_required() -> None:
    schema = health_json_schema()
    assert set(schema["required"]) == PAYLOAD_KEYS
    assert schema["properties"]["schema"]["const"] == 1
    assert "from" in schema["$defs"]["TopEdge"]["properties"]
    assert schema["$defs"]["Status"]["properties"]["state"]["enum"] == ["OK", "WARN", "ERROR"]
    json.dumps(schema)  # serializable as is
