"""The chaos table (one row per scenario) and its JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from connectome_sse.chaos.runner import Row
from connectome_sse.chaos.scenario_kit import Limits

HEADER = (
    "scenario",
    "fault",
    "limit",
    "recovery",
    "lost",
    "dups",
    "log lost / silent / dups / reord",
    "raw lost",
    "resync",
    "never back",
    "cut",
    "stale",
    "peak RSS",
    "result",
)
NOTE = (
    "limit: recovery = time until every client has fresh health again; lost, dups, "
    "never back, stale and cut must be 0 unless the limit says otherwise. "
    "log: the numbered events published through the event log, each one Redis accepted "
    "owed to every stream once and in order (silent: lost with no resync after it); its "
    "silent, dups and reord must be 0 unless the limit says otherwise, its lost only where "
    "the limit names it; raw lost: the same numbers as a bare PUBLISH, for comparison."
)
LOG_LIMITS = ("log_lost", "log_silent", "log_duplicates", "log_reordered")
LOG_DEFAULTS = {name: getattr(Limits(), name) for name in LOG_LIMITS}


def limit_text(row: Row) -> str:
    limits = row.limits
    parts = []
    if limits.recovery_s is not None:
        parts.append(f"recovery <= {limits.recovery_s:g} s")
    if limits.cut is None:
        parts.append("cut any")
    if limits.lost is None:
        parts.append("lost any")
    for name in LOG_LIMITS:
        held, usual = getattr(limits, name), LOG_DEFAULTS[name]
        if held != usual:  # like the others, only what differs from the legend
            shown = "any" if held is None else f"<= {held}"
            parts.append(f"{name.replace('_', ' ')} {shown}")
    if limits.peak_rss_mib is not None:
        parts.append(f"RSS <= {limits.peak_rss_mib:.0f} MiB")
    if limits.rss_growth_mib is not None:
        parts.append(f"RSS growth <= {limits.rss_growth_mib:g} MiB")
    return "; ".join(parts)


def cells(row: Row) -> list[str]:
    f = row.figures
    recovery = "never" if f.recovery_s is None else f"{f.recovery_s:.2f} s"
    figures = [
        recovery,
        str(f.lost),
        str(f.duplicates + f.reordered),
        f"{f.log_lost} / {f.log_silent} / {f.log_duplicates} / {f.log_reordered}",
        str(f.raw_lost),
        str(f.resyncs),
        f"{f.never_back}/{f.clients}",
        str(f.cut),
        str(f.stale),
        f"{f.peak_rss_mib:.0f} MiB",
    ]
    return [row.name, row.fault, limit_text(row), *figures, row.verdict]


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    reasons = [
        f"- {row.name}: {'; '.join(row.reasons + row.figures.examples)}"
        for row in rows
        if row.reasons
    ]
    extras = [
        f"- {row.name}: " + ", ".join(f"{k}={v}" for k, v in row.figures.extra.items())
        for row in rows
        if row.figures.extra
    ]
    out = "\n".join(lines) + "\n\n" + NOTE
    if extras:
        out += "\n\n" + "\n".join(extras)
    if reasons:
        out += "\n\n" + "\n".join(reasons)
    return out + "\n"


def as_json(rows: Sequence[Row], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "rows": [
            {
                "scenario": row.name,
                "fault": row.fault,
                "limit": limit_text(row),
                "limits": asdict(row.limits),
                "figures": asdict(row.figures),
                "result": row.verdict,
                "reasons": row.reasons,
            }
            for row in rows
        ],
    }


def write_json(path: Path, rows: Sequence[Row], meta: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(as_json(rows, meta), indent=2) + "\n")
