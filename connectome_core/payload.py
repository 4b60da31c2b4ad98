"""The ``connectome_health`` payload, schema version 1: the one model every process agrees on.

Strict on purpose: unknown keys refused, every key required, no NaN or
Infinity. ``schema`` and ``from`` are held as ``schema_``/``from_`` and always
serialized by alias.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Speed = Literal["pause", "x1", "x2", "x3"]
InterruptReason = Literal[
    "spoken", "active_changed", "active_deactivated", "contradicts_visible", "none"
]
State = Literal["OK", "WARN", "ERROR"]

SPEEDS: tuple[str, ...] = ("pause", "x1", "x2", "x3")
INTERRUPT_REASONS: tuple[str, ...] = (
    "spoken",
    "active_changed",
    "active_deactivated",
    "contradicts_visible",
    "none",
)
STATES: tuple[str, ...] = ("OK", "WARN", "ERROR")
COUNTER_NAMES: tuple[str, ...] = (
    "query_write_attempts",
    "dmz_violation_attempts",
    "async_epoch_mismatch",
)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        populate_by_name=True,
        serialize_by_alias=True,
    )


class LastInterrupt(_Model):
    reason: InterruptReason
    moment_id: str | None
    age_ticks: int | None = Field(ge=0)


class Runner(_Model):
    speed: Speed
    tick: int = Field(ge=0)
    last_interrupt: LastInterrupt


class Status(_Model):
    state: State
    score: float = Field(ge=0.0, le=1.0)
    notes: list[str]


class Counters(_Model):
    query_write_attempts: int = Field(ge=0)
    dmz_violation_attempts: int = Field(ge=0)
    async_epoch_mismatch: int = Field(ge=0)


class SinkSetSize(_Model):
    p50: float = Field(ge=0.0)
    p95: float = Field(ge=0.0)


class NeighborhoodSize(_Model):
    nodes: int = Field(ge=0)
    edges: int = Field(ge=0)


class Attention(_Model):
    sink_set_size: SinkSetSize
    neighborhood_size: NeighborhoodSize
    focus_reconfig_rate_per_min: float = Field(ge=0.0)
    plateau_seconds: float = Field(ge=0.0)


class TopEdge(_Model):
    from_: str = Field(alias="from")
    to: str
    polarity: float = Field(ge=-1.0, le=1.0)
    strength: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)
    contrib: float = Field(ge=0.0, le=1.0)


class Pressure(_Model):
    contradiction: float = Field(ge=0.0, le=1.0)
    top_edges: list[TopEdge]


class HealthPayload(_Model):
    """One ``connectome_health`` event (the ``data`` of the SSE event and the snapshot)."""

    schema_: Literal[1] = Field(alias="schema")
    ts: float = Field(ge=0.0, description="unix seconds when the payload was built")
    playthrough_id: str
    place_id: str
    runner: Runner
    status: Status
    counters: Counters
    attention: Attention
    pressure: Pressure

    def to_json(self) -> str:
        """Compact JSON, keys by their wire names (``schema``, ``from``)."""
        return self.model_dump_json(by_alias=True)


def parse_health_payload(data: str | bytes) -> HealthPayload:
    """Validate a JSON document as a schema-1 payload (raises ``pydantic.ValidationError``)."""
    return HealthPayload.model_validate_json(data)


def health_json_schema() -> dict[str, Any]:
    """The JSON Schema of the payload, with wire names (what ``connectome-sse schema`` prints)."""
    schema = HealthPayload.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "connectome_health/v1"
    return schema


def health_json_schema_text() -> str:
    return json.dumps(health_json_schema(), indent=2, sort_keys=True)


def example_health_payload(ts: float = 0.0, state: State = "OK") -> HealthPayload:
    """A complete, valid payload (for docs, tests and hand-made ``publish`` calls)."""
    score = {"OK": 1.0, "WARN": 0.7, "ERROR": 0.0}[state]
    return HealthPayload(
        schema_=SCHEMA_VERSION,
        ts=ts,
        playthrough_id="demo",
        place_id="atrium",
        runner=Runner(
            speed="x1",
            tick=0,
            last_interrupt=LastInterrupt(reason="none", moment_id=None, age_ticks=None),
        ),
        status=Status(state=state, score=score, notes=[]),
        counters=Counters(query_write_attempts=0, dmz_violation_attempts=0, async_epoch_mismatch=0),
        attention=Attention(
            sink_set_size=SinkSetSize(p50=0.0, p95=0.0),
            neighborhood_size=NeighborhoodSize(nodes=0, edges=0),
            focus_reconfig_rate_per_min=0.0,
            plateau_seconds=0.0,
        ),
        pressure=Pressure(contradiction=0.0, top_edges=[]),
    )
