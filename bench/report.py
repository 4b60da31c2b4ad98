"""Results -> one markdown table, the ratios to Nchan of the same run, and the issue's targets.

With several repeats of a (scenario, system) pair a cell is the median of the
repeats, except `lost` and `dups` (the worst repeat) and `connected` (the
fewest).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.stats import median, ratio

SYSTEM_ORDER = ("nchan", "gateway-1w", "gateway-2w", "naive-1w", "naive-2w")
NUMERIC_MEDIAN = (
    "connect_ms_p50", "connect_ms_p99", "delivered_per_s",
    "lat_ms_p50", "lat_ms_p90", "lat_ms_p99", "lat_ms_max", "app_lat_ms_p99",
    "server_rss_mb", "kb_per_conn", "server_cpu_pct", "client_cpu_pct", "redis_cpu_pct",
    "redis_connected_clients", "storm_s", "storm_p50_s",
)  # fmt: skip
WORST = ("lost", "dups", "dropped_streams", "clients_with_loss")


def _key(name: str) -> tuple[int, str]:
    return (SYSTEM_ORDER.index(name) if name in SYSTEM_ORDER else len(SYSTEM_ORDER), name)


def aggregate(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, system), in scenario then system order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["scenario"], r["system"]), []).append(r)
    rows = []
    for (scen, system), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], *_key(kv[0][1]))):
        ok = [r for r in runs if "error" not in r]
        row: dict[str, Any] = {"scenario": scen, "system": system, "repeats": len(ok)}
        if not ok:
            row["error"] = runs[-1]["error"]
            rows.append(row)
            continue
        row["clients"] = ok[0]["clients"]
        row["connected"] = min(r["connected"] for r in ok)
        for key in NUMERIC_MEDIAN:
            row[key] = median(r.get(key) for r in ok)
        for key in WORST:
            row[key] = max(r.get(key) or 0 for r in ok)
        row["storm_closed"] = ok[0].get("storm_closed")
        row["storm_reconnected"] = min(r.get("storm_reconnected") or 0 for r in ok)
        rows.append(row)
    return rows


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scen | system | streams | connect p50 / p99 ms | deliv/s | lost | dups "
        "| fan-out p50 / p90 / p99 / max ms | RSS MB | KB/conn | server CPU % "
        "| Redis conns | storm s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['scenario']} | {r['system']} | failed: {r['error'][:80]} |")
            continue
        storm = "-"
        if r.get("storm_closed"):
            storm = (
                _f(r["storm_s"], 2)
                if r["storm_s"] is not None
                else (f"{r['storm_reconnected']:,}/{r['storm_closed']:,} back")
            )
        lines.append(
            f"| {r['scenario']} | {r['system']} | {r['connected']:,}/{r['clients']:,} "
            f"| {_f(r['connect_ms_p50'], 1)} / {_f(r['connect_ms_p99'], 1)} "
            f"| {_f(r['delivered_per_s'])} | {r['lost']:,} | {r['dups']:,} "
            f"| {_f(r['lat_ms_p50'], 1)} / {_f(r['lat_ms_p90'], 1)} / {_f(r['lat_ms_p99'], 1)}"
            f" / {_f(r['lat_ms_max'], 0)} "
            f"| {_f(r['server_rss_mb'], 0)} | {_f(r['kb_per_conn'], 1)} "
            f"| {_f(r['server_cpu_pct'], 0)} | {_f(r['redis_connected_clients'], 0)} | {storm} |"
        )
    return "\n".join(lines)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    by_scen: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if "error" not in r:
            by_scen.setdefault(r["scenario"], {})[r["system"]] = r
    lines = [
        "| scen | system | p99 x Nchan | CPU x Nchan | KB/conn x Nchan | client CPU % |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for scen, systems in sorted(by_scen.items()):
        ref = systems.get("nchan")
        for name in sorted(systems, key=_key):
            r = systems[name]
            if ref is None or name == "nchan":
                p99 = cpu = kb = None
            else:
                p99 = ratio(r["lat_ms_p99"], ref["lat_ms_p99"])
                cpu = ratio(r["server_cpu_pct"], ref["server_cpu_pct"])
                kb = ratio(r["kb_per_conn"], ref["kb_per_conn"])
            lines.append(
                f"| {scen} | {name} | {_f(p99, 2)} | {_f(cpu, 2)} | {_f(kb, 2)} "
                f"| {_f(r['client_cpu_pct'], 0)} |"
            )
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], system: str = "gateway-2w") -> list[str]:
    """The issue's targets for `system`, each PASS / FAIL / not measured, with its figures."""
    mine = {r["scenario"]: r for r in rows if r["system"] == system and "error" not in r}
    ref = {r["scenario"]: r for r in rows if r["system"] == "nchan" and "error" not in r}
    out = []

    def verdict(good: bool | None) -> str:
        return "not measured" if good is None else ("PASS" if good else "FAIL")

    for scen in ("a", "b", "c"):
        r, n = mine.get(scen), ref.get(scen)
        if r is None or n is None:
            out.append(f"{scen}: not measured (needs {system} and nchan)")
            continue
        p99 = ratio(r["lat_ms_p99"], n["lat_ms_p99"])
        cpu = ratio(r["server_cpu_pct"], n["server_cpu_pct"])
        good = (
            p99 is not None and p99 <= 2.0 and cpu is not None and cpu <= 1.5
            and r["lost"] == 0 and r["dups"] == 0
        )  # fmt: skip
        out.append(
            f"{scen}: {verdict(good)}: p99 {_f(r['lat_ms_p99'], 1)} ms "
            f"= {_f(p99, 2)}x Nchan (≤ 2), "
            f"CPU {_f(r['server_cpu_pct'], 0)} % = {_f(cpu, 2)}x Nchan (≤ 1.5), "
            f"lost {r['lost']}, dups {r['dups']}"
        )
    # idle connections are best seen in d (20,000 held, little traffic); else the largest run
    held = mine.get("d") or max(mine.values(), key=lambda r: r["clients"], default=None)
    if held is not None and held["kb_per_conn"] is not None:
        kb = held["kb_per_conn"]
        out.append(
            f"KB per idle connection: {verdict(kb <= 15)}: {kb:.1f} KB "
            f"(scenario {held['scenario']}; ≤ 15)"
        )
    else:
        out.append("KB per idle connection: not measured")
    d = mine.get("d")
    if d is None:
        out.append("d: not measured")
    else:
        good = d["connected"] >= d["clients"] and d["lost"] == 0
        out.append(
            f"d: {verdict(good)}: {d['connected']:,}/{d['clients']:,} held, lost {d['lost']}"
        )
    conns = {s: r["redis_connected_clients"] for s, r in mine.items()}
    if len(conns) >= 2:
        flat = max(conns.values()) - min(conns.values()) <= 1
        listed = ", ".join(f"{s} {_f(v, 0)}" for s, v in sorted(conns.items()))
        out.append(f"Redis connections flat with clients: {verdict(flat)}: {listed}")
    e = mine.get("e")
    if e is not None:
        out.append(
            f"e (no target): all {e['storm_closed']:,} streaming again after "
            f"{_f(e['storm_s'], 2)} s, lost {e['lost']} afterwards"
        )
    return out


def render(results: list[dict[str, Any]], system: str = "gateway-2w") -> str:
    rows = aggregate(results)
    parts = [main_table(rows), "", ratio_table(rows)]
    if any(r["system"] == system for r in rows):
        parts += ["", f"Targets of issue 6 for {system}:"]
        parts += [f"- {t}" for t in targets(rows, system)]
    return "\n".join(parts)
