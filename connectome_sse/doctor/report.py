"""The doctor's verdicts as text for people or JSON for machines.

Text: one line per check (verdict, name, figure); a line short of PASS ends
with the numbers of its fixes, and each fix is printed once, below, however
many checks point at it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict

from connectome_sse.doctor.checks import Check
from connectome_sse.doctor.observe import Observation

NAME_WIDTH = 13
VERDICTS = ("PASS", "WARN", "FAIL", "SKIP")


def text_report(observation: Observation, checks: list[Check]) -> str:
    lines = [f"doctor {observation.url} (watched {observation.watched_until:.1f} s)"]
    fixes: list[str] = []
    for check in checks:
        line = f"{check.verdict:<4}  {check.name:<{NAME_WIDTH}} {check.figure}"
        if check.verdict in ("WARN", "FAIL") and check.fixes:
            for fix in check.fixes:
                if fix not in fixes:
                    fixes.append(fix)
            line += " " + "".join(f"[{fixes.index(fix) + 1}]" for fix in check.fixes)
        lines.append(line)
    counts: Counter[str] = Counter(check.verdict for check in checks)
    summary = ", ".join(f"{counts[v]} {v.lower()}" for v in VERDICTS if counts[v])
    lines.append(f"{len(checks)} checks: {summary}")
    lines.extend(f"[{number}] {fix}" for number, fix in enumerate(fixes, start=1))
    return "\n".join(lines)


def json_report(observation: Observation, checks: list[Check]) -> str:
    return json.dumps(
        {
            "url": observation.url,
            "ok": not any(check.verdict == "FAIL" for check in checks),
            "watched_s": round(observation.watched_until, 3),
            "idle_s": observation.idle,
            "checks": [{**asdict(check), "fixes": list(check.fixes)} for check in checks],
        },
        indent=2,
    )
