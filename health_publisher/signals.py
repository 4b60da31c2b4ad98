"""Connectome signals: one pydantic model per ``kind``, and parsing of raw stream entries.

:func:`parse_signal` turns a ``connectome:signals`` entry (``kind`` plus the fields of its kind)
into a typed signal, or raises :class:`BadSignal` whose ``reason`` is one of
:data:`BAD_REASONS` (a metrics label). Unknown fields are ignored; missing, non-numeric,
non-finite or out-of-range values are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from connectome_core.payload import InterruptReason, Speed, TopEdge

# An engine may report any number of edges; the payload keeps the strongest few.
MAX_TOP_EDGES_IN = 100
# Generous for MAX_TOP_EDGES_IN edges; bounds what one entry can make us parse.
MAX_TOP_EDGES_TEXT = 64 * 1024
MAX_TEXT = 200
MAX_COUNT = 1_000_000_000

CounterName = Literal["query_write_attempts", "dmz_violation_attempts", "async_epoch_mismatch"]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]

BAD_REASONS = ("bad_encoding", "unknown_kind", "missing_field", "bad_value")


class BadSignal(ValueError):
    """A stream entry that cannot be applied; ``reason`` is one of ``BAD_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Signal(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class TickSignal(_Signal):
    kind: Literal["tick"] = "tick"
    tick: Count
    speed: Speed
    playthrough_id: Text
    place_id: Text


class SinkSizeSignal(_Signal):
    kind: Literal["sink_size"] = "sink_size"
    value: Count


class FocusChangeSignal(_Signal):
    kind: Literal["focus_change"] = "focus_change"
    changed: int = Field(ge=0, le=1)


class InterruptSignal(_Signal):
    kind: Literal["interrupt"] = "interrupt"
    reason: InterruptReason
    moment_id: Text | None = None
    age_ticks: Count | None = None


class CounterSignal(_Signal):
    kind: Literal["counter"] = "counter"
    name: CounterName
    by: int = Field(default=1, ge=1, le=MAX_COUNT)


class NeighborhoodSignal(_Signal):
    kind: Literal["neighborhood"] = "neighborhood"
    nodes: Count
    edges: Count


class PressureSignal(_Signal):
    kind: Literal["pressure"] = "pressure"
    contradiction: float = Field(ge=0.0, le=1.0)
    top_edges: list[TopEdge] = Field(default_factory=list, max_length=MAX_TOP_EDGES_IN)

    @field_validator("top_edges", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        # On the wire the list is a JSON string; in process it may already be a list.
        if isinstance(value, str):
            if len(value) > MAX_TOP_EDGES_TEXT:
                raise ValueError(f"top_edges is longer than {MAX_TOP_EDGES_TEXT} characters")
            try:
                return json.loads(value)
            except RecursionError:
                # JSON nested deeper than the interpreter's stack: bad input, not our bug.
                raise ValueError("top_edges is nested too deeply") from None
            except ValueError as exc:
                raise ValueError(f"top_edges is not JSON: {exc}") from None
        return value


class PlateauSignal(_Signal):
    kind: Literal["plateau"] = "plateau"
    seconds: float = Field(ge=0.0, le=1e9)


Signal = (
    TickSignal
    | SinkSizeSignal
    | FocusChangeSignal
    | InterruptSignal
    | CounterSignal
    | NeighborhoodSignal
    | PressureSignal
    | PlateauSignal
)

SIGNAL_MODELS: dict[str, type[_Signal]] = {
    "tick": TickSignal,
    "sink_size": SinkSizeSignal,
    "focus_change": FocusChangeSignal,
    "interrupt": InterruptSignal,
    "counter": CounterSignal,
    "neighborhood": NeighborhoodSignal,
    "pressure": PressureSignal,
    "plateau": PlateauSignal,
}
KINDS: tuple[str, ...] = tuple(SIGNAL_MODELS)

_ADAPTER: TypeAdapter[Signal] = TypeAdapter(Annotated[Signal, Field(discriminator="kind")])


def _text(value: bytes | str, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSignal("bad_encoding", f"{what} is not valid UTF-8") from None


def decode_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """Stream entry fields as text (``BadSignal`` when a name or value is not UTF-8)."""
    decoded: dict[str, str] = {}
    for key, value in fields.items():
        name = _text(key, "a field name")
        if not isinstance(value, bytes | str):
            raise BadSignal("bad_value", f"field {name!r} is not a string")
        decoded[name] = _text(value, f"field {name!r}")
    return decoded


def parse_signal(fields: Mapping[Any, Any]) -> Signal:
    """A typed signal from one stream entry, or ``BadSignal`` saying why not."""
    data = decode_fields(fields)
    kind = data.get("kind")
    if kind is None:
        raise BadSignal("missing_field", "no 'kind' field")
    if kind not in SIGNAL_MODELS:
        raise BadSignal("unknown_kind", f"unknown kind {kind[:40]!r}")
    return validate_signal(data)


def validate_signal(data: Mapping[str, Any]) -> Signal:
    """Validate an already-decoded mapping (``kind`` included); used in process too."""
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise _bad(exc) from None


def _bad(exc: ValidationError) -> BadSignal:
    errors = exc.errors(include_url=False)
    missing = [e for e in errors if e["type"] == "missing"]
    first = (missing or errors)[0]
    # loc is (kind, field, ...) for a tagged union; drop the tag.
    loc = [str(part) for part in first["loc"][1:]] or [str(p) for p in first["loc"]]
    where = ".".join(loc) or "entry"
    if missing:
        return BadSignal("missing_field", f"missing field {where!r}")
    if first["type"] == "union_tag_invalid":
        return BadSignal("unknown_kind", first["msg"])
    return BadSignal("bad_value", f"{where}: {first['msg']}")
