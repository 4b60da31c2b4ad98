"""The status rules of the ``connectome_health`` payload, as one pure function.

ERROR while a query write or DMZ violation was seen within ``window``; else WARN while an
epoch mismatch was seen or signals are stale; else OK. :func:`next_change_at` says when time
alone changes the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectome_core.payload import State, Status

SCORES: dict[State, float] = {"OK": 1.0, "WARN": 0.7, "ERROR": 0.0}


@dataclass(frozen=True)
class Evidence:
    """What the rules look at; ``None`` means never seen (since the publisher started)."""

    now: float
    window: float
    stale_after: float
    started_at: float
    last_signal_at: float | None = None
    last_query_write_at: float | None = None
    last_dmz_violation_at: float | None = None
    last_epoch_mismatch_at: float | None = None
    query_writes_in_window: int = 0
    dmz_violations_in_window: int = 0
    epoch_mismatches_in_window: int = 0


def _within(evidence: Evidence, at: float | None) -> bool:
    return at is not None and evidence.now - at < evidence.window


def _silent_for(evidence: Evidence) -> float:
    since = evidence.last_signal_at if evidence.last_signal_at is not None else evidence.started_at
    return max(0.0, evidence.now - since)


def _ago(evidence: Evidence, at: float) -> str:
    return f"{max(0.0, evidence.now - at):.0f}s ago"


def evaluate(evidence: Evidence) -> Status:
    errors: list[str] = []
    warnings: list[str] = []
    w = f"{evidence.window:g}s"
    if _within(evidence, evidence.last_query_write_at):
        assert evidence.last_query_write_at is not None
        errors.append(
            f"query write attempt: {evidence.query_writes_in_window} in the last {w}, "
            f"latest {_ago(evidence, evidence.last_query_write_at)}"
        )
    if _within(evidence, evidence.last_dmz_violation_at):
        assert evidence.last_dmz_violation_at is not None
        errors.append(
            f"DMZ violation attempt: {evidence.dmz_violations_in_window} in the last {w}, "
            f"latest {_ago(evidence, evidence.last_dmz_violation_at)}"
        )
    if _within(evidence, evidence.last_epoch_mismatch_at):
        assert evidence.last_epoch_mismatch_at is not None
        warnings.append(
            f"async epoch mismatch: {evidence.epoch_mismatches_in_window} in the last {w}, "
            f"latest {_ago(evidence, evidence.last_epoch_mismatch_at)}"
        )
    silent = _silent_for(evidence)
    if silent >= evidence.stale_after:
        what = "no signals yet" if evidence.last_signal_at is None else "no signals"
        warnings.append(f"stale: {what} for {silent:.0f}s (limit {evidence.stale_after:g}s)")
    state: State = "ERROR" if errors else "WARN" if warnings else "OK"
    return Status(state=state, score=SCORES[state], notes=errors + warnings)


def next_change_at(evidence: Evidence) -> float | None:
    """When the passage of time alone (no new signal) may next change what :func:`evaluate` says."""
    candidates = [
        at + evidence.window
        for at in (
            evidence.last_query_write_at,
            evidence.last_dmz_violation_at,
            evidence.last_epoch_mismatch_at,
        )
        if _within(evidence, at) and at is not None
    ]
    since = evidence.last_signal_at if evidence.last_signal_at is not None else evidence.started_at
    if _silent_for(evidence) < evidence.stale_after:
        candidates.append(since + evidence.stale_after)
    future = [t for t in candidates if t > evidence.now]
    return min(future) if future else None
