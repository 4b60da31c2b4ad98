"""What a new leader needs to continue the totals of the one before it, exactly.

Stored in ``connectome:publisher:checkpoint`` by the same fenced script that
publishes a payload: the counters of that payload and the id of the last
stream entry applied before it was built. A new leader takes the counters
and counts only entries after ``last_id``; entries up to it are replayed to
rebuild the windows but are already in the totals.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectome_core.payload import Counters

ID_PATTERN = r"^\d+-\d+$"


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    last_id: str | None = Field(pattern=ID_PATTERN)
    counters: Counters


def encode(checkpoint: Checkpoint) -> str:
    return checkpoint.model_dump_json()


def decode(raw: bytes | str | None) -> Checkpoint | None:
    """The stored checkpoint, or None when there is none or it is unreadable."""
    if raw is None:
        return None
    try:
        return Checkpoint.model_validate_json(raw)
    except ValidationError:
        return None
