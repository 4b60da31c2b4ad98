"""Results -> markdown tables: every figure, ratios to Nchan, the ceiling (g), before/after.

Repeats of a (scenario, system) pair: the median, except `lost` and `dups` (the
worst) and `connected` (the fewest). The reference is the scenario's Nchan system.
A run fed through the event log (`--through-log`) is its own system, `<system>-log`,
set beside the same system fed by a bare PUBLISH when both were measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.publisher import PUBLISH_PATHS
from bench.stats import median, ratio

SYSTEM_ORDER = (
    "nchan", "nchan-4w", "gateway-1w", "gateway-2w", "gateway-2w-auth", "gateway-2w-before",
    "gateway-4w",
    "gateway-4w-before", "naive-1w", "naive-2w", "floor-2w", "granian-2w",
)  # fmt: skip
NUMERIC_MEDIAN = (
    "connect_ms_p50", "connect_ms_p99", "delivered_per_s",
    "lat_ms_p50", "lat_ms_p90", "lat_ms_p99", "lat_ms_max", "app_lat_ms_p99",
    "server_rss_mb", "kb_per_conn", "server_cpu_pct", "client_cpu_pct", "redis_cpu_pct",
    "redis_connected_clients", "storm_s", "storm_p50_s", "storm_cpu_us_per_stream",
    "storm_sys_us_per_stream",
    "watch_quiet_p99_ms", "watch_storm_p99_ms", "watch_storm_x_quiet",
    "ceiling_events_per_s", "deliveries_per_cpu_s",
)  # fmt: skip
WORST = ("lost", "dups", "dropped_streams", "clients_with_loss")


LOG_SUFFIX = "-log"  # a system fed through the event log


def _key(name: str) -> tuple[int, str]:
    base = name.removesuffix(LOG_SUFFIX)  # right after the same system fed by PUBLISH
    return (SYSTEM_ORDER.index(base) if base in SYSTEM_ORDER else len(SYSTEM_ORDER), name)


def system_label(result: dict[str, Any]) -> str:
    """The system a result is shown as: `<system>-log` when fed through the event log."""
    return str(result["system"]) + (LOG_SUFFIX if result.get("publish") == "log" else "")


def publishing(results: Iterable[dict[str, Any]]) -> str:
    """One line: how the measured events entered each kind of system in these results."""
    paths: dict[str, set[str]] = {}
    for r in results:
        # Runs from before the results said: a bare PUBLISH, or Nchan's HTTP.
        path = r.get("publish") or ("http" if r["system"].startswith("nchan") else "raw")
        paths.setdefault(PUBLISH_PATHS.get(path, path), set()).add(system_label(r))
    described = [f"{how} ({', '.join(sorted(names, key=_key))})" for how, names in paths.items()]
    return "Events published by: " + "; ".join(described) + "."


def aggregate(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, system), in scenario then system order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["scenario"], system_label(r)), []).append(r)
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
        row["ceiling_stops"] = [r["ceiling_stop"] for r in ok if "ceiling_stop" in r]
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


def _by_scenario(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    by_scen: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if "error" not in r:
            by_scen.setdefault(r["scenario"], {})[r["system"]] = r
    return by_scen


def reference(systems: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The scenario's Nchan row: `nchan`, else the first `nchan-<N>w`."""
    names = sorted((n for n in systems if n.startswith("nchan")), key=_key)
    return systems[names[0]] if names else None


RATIOS = (
    ("p99", "lat_ms_p99"),
    ("CPU", "server_cpu_pct"),
    ("KB/conn", "kb_per_conn"),
    ("connect p99", "connect_ms_p99"),
    ("storm", "storm_s"),
    ("storm CPU/stream", "storm_cpu_us_per_stream"),
    ("deliv per CPU-s", "deliveries_per_cpu_s"),
)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    head = " | ".join(f"{label} x Nchan" for label, _ in RATIOS)
    lines = [
        f"| scen | system | {head} | client CPU % |",
        "|---|---|" + "---:|" * (len(RATIOS) + 1),
    ]
    for scen, systems in sorted(_by_scenario(rows).items()):
        ref = reference(systems)
        for name in sorted(systems, key=_key):
            r = systems[name]
            cells = [
                None if ref is None or r is ref else ratio(r.get(key), ref.get(key))
                for _, key in RATIOS
            ]
            lines.append(
                f"| {scen} | {name} | "
                + " | ".join(_f(c, 2) for c in cells)
                + f" | {_f(r['client_cpu_pct'], 0)} |"
            )
    return "\n".join(lines)


def storm_table(rows: list[dict[str, Any]]) -> str:
    """Scenario e: the bare storm's time and CPU per reopened stream, and the fan-out of
    the streams kept open during the second storm beside theirs just before it."""
    lines = [
        "| system | reopened | storm s | server CPU µs per reopened stream | of which kernel "
        "| x Nchan | bystanders' fan-out p99 ms: quiet / during storm | storm x quiet |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    systems = _by_scenario(rows).get("e", {})
    ref = reference(systems)
    for name in sorted(systems, key=_key):
        r = systems[name]
        if not r.get("storm_closed"):
            continue
        cpu = r.get("storm_cpu_us_per_stream")
        x = None if ref is None or r is ref else ratio(cpu, ref.get("storm_cpu_us_per_stream"))
        lines.append(
            f"| {name} | {r['storm_reconnected']:,}/{r['storm_closed']:,} "
            f"| {_f(r['storm_s'], 2)} | {_f(cpu, 0)} | {_f(r.get('storm_sys_us_per_stream'), 0)} "
            f"| {_f(x, 2)} "
            f"| {_f(r.get('watch_quiet_p99_ms'), 1)} / {_f(r.get('watch_storm_p99_ms'), 1)} "
            f"| {_f(r.get('watch_storm_x_quiet'), 2)} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def ceiling_table(rows: list[dict[str, Any]]) -> str:
    """Scenario g: the fastest step each system kept up with, and where it stopped."""
    lines = [
        "| system | streams | ceiling events/s | deliveries/s | deliveries per CPU-s "
        "| server CPU % | fan-out p99 ms | stopped at |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["scenario"] != "g" or "error" in r:
            continue
        stops = "; ".join(r.get("ceiling_stops") or []) or "-"
        lines.append(
            f"| {r['system']} | {r['connected']:,} | {_f(r['ceiling_events_per_s'], 0)} "
            f"| {_f(r['delivered_per_s'], 0)} | {_f(r['deliveries_per_cpu_s'], 0)} "
            f"| {_f(r['server_cpu_pct'], 0)} | {_f(r['lat_ms_p99'], 1)} | {stops} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


BEFORE_AFTER = (
    ("KB/conn", "kb_per_conn", 1),
    ("connect p99 ms", "connect_ms_p99", 1),
    ("storm s", "storm_s", 2),
    ("storm CPU µs/stream", "storm_cpu_us_per_stream", 0),
    ("fan-out p99 ms", "lat_ms_p99", 1),
    ("server CPU %", "server_cpu_pct", 0),
    ("ceiling events/s", "ceiling_events_per_s", 0),
    ("deliv per CPU-s", "deliveries_per_cpu_s", 0),
)


def paired_table(
    rows: list[dict[str, Any]],
    suffix: str,
    columns: tuple[tuple[str, str, int], ...],
    reference_first: bool,
) -> str:
    """Each system beside its ``<system><suffix>`` run in the same scenario, a cell per
    column: ``first -> second``; ``reference_first`` puts the suffixed run first (a
    before -> after), else second, with the ratio second / first (without -> with)."""
    head = " | ".join(label for label, _, _ in columns)
    lines = [f"| scen | system | {head} |", "|---|---|" + "---:|" * len(columns)]
    for scen, systems in sorted(_by_scenario(rows).items()):
        for name in sorted(systems, key=_key):
            paired = systems.get(f"{name}{suffix}")
            if paired is None:
                continue
            first, second = (paired, systems[name]) if reference_first else (systems[name], paired)
            cells = []
            for _, key, d in columns:
                cell = f"{_f(first.get(key), d)} -> {_f(second.get(key), d)}"
                if not reference_first:
                    cell += f" ({_f(ratio(second.get(key), first.get(key)), 2)}x)"
                cells.append(cell)
            lines.append(f"| {scen} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def before_after_table(rows: list[dict[str, Any]]) -> str:
    """Each gateway beside its `-before` run in the same scenarios: before -> after."""
    return paired_table(rows, "-before", BEFORE_AFTER, reference_first=True)


AUTH_COST = (
    ("connect p50 ms", "connect_ms_p50", 1),
    ("connect p99 ms", "connect_ms_p99", 1),
    ("storm s", "storm_s", 2),
    ("server CPU %", "server_cpu_pct", 0),
    ("fan-out p99 ms", "lat_ms_p99", 1),
)


def auth_table(rows: list[dict[str, Any]]) -> str:
    """Each gateway beside its `-auth` run in the same scenario: without -> with (ratio)."""
    return paired_table(rows, "-auth", AUTH_COST, reference_first=False)


LOG_COST = (
    ("connect p99 ms", "connect_ms_p99", 1),
    ("fan-out p50 ms", "lat_ms_p50", 1),
    ("fan-out p99 ms", "lat_ms_p99", 1),
    ("server CPU %", "server_cpu_pct", 0),
    ("Redis CPU %", "redis_cpu_pct", 0),
    ("ceiling events/s", "ceiling_events_per_s", 0),
)


def log_table(rows: list[dict[str, Any]]) -> str:
    """Each system beside its `-log` run: fed by a bare PUBLISH -> through the log (ratio)."""
    return paired_table(rows, LOG_SUFFIX, LOG_COST, reference_first=False)


Row = dict[str, Any]
Pair = tuple[Row | None, Row | None]


def _verdict(good: bool | None) -> str:
    return "not measured" if good is None else ("PASS" if good else "FAIL")


def targets(rows: list[Row], system: str = "gateway-2w") -> list[str]:
    """The targets against Nchan for `system` (f: its 4-worker form): PASS / FAIL / not measured."""
    by_scen = _by_scenario(rows)

    def pair(scen: str, name: str = system) -> Pair:
        systems = by_scen.get(scen, {})
        return systems.get(name), reference(systems)

    out = [_scenario_target(scen, system, pair(scen)) for scen in ("a", "b", "c", "d", "e")]
    out += _memory_target(pair("d"))
    out += _storm_targets(pair("e"))
    base = system.removesuffix(LOG_SUFFIX)
    wide = base.rsplit("-", 1)[0] + "-4w" + system[len(base) :]
    out += _held_target(wide, pair("f", wide))
    for name, r in sorted(by_scen.get("g", {}).items(), key=lambda kv: _key(kv[0])):
        out.append(
            f"g ({name}): ceiling {_f(r.get('ceiling_events_per_s'), 0)} events/s, "
            f"{_f(r.get('delivered_per_s'), 0)} deliveries/s, "
            f"{_f(r.get('deliveries_per_cpu_s'), 0)} per CPU-second"
        )
    return out


def _scenario_target(scen: str, system: str, found: Pair) -> str:
    r, n = found
    if r is None or n is None:
        return f"{scen}: not measured (needs {system} and Nchan)"
    p99 = ratio(r["lat_ms_p99"], n["lat_ms_p99"])
    cpu = ratio(r["server_cpu_pct"], n["server_cpu_pct"])
    conn = ratio(r["connect_ms_p99"], n["connect_ms_p99"])
    good = p99 is not None and p99 <= 1 and cpu is not None and cpu <= 1 and not r["lost"]
    return (
        f"{scen}: fan-out p99 and CPU {_verdict(good)}: p99 {_f(p99, 2)}x, CPU {_f(cpu, 2)}x "
        f"Nchan, lost {r['lost']}, dups {r['dups']}; connect p99 "
        f"{_verdict(conn is not None and conn <= 1)}: {_f(r['connect_ms_p99'], 1)} ms = "
        f"{_f(conn, 2)}x Nchan"
    )


def _memory_target(found: Pair) -> list[str]:
    r, n = found
    if r is None or n is None or r["kb_per_conn"] is None:
        return []
    good = n["kb_per_conn"] is not None and r["kb_per_conn"] <= n["kb_per_conn"]
    return [
        f"KB per held connection (d): {_verdict(good)}: {r['kb_per_conn']:.1f} KB, "
        f"Nchan {_f(n['kb_per_conn'], 1)}"
    ]


def _storm_targets(found: Pair) -> list[str]:
    r, n = found
    if r is None or n is None:
        return []
    storm: bool | None = None
    if r["storm_s"] is not None and n["storm_s"] is not None:
        storm = r["storm_s"] <= n["storm_s"]
    cpu = ratio(r.get("storm_cpu_us_per_stream"), n.get("storm_cpu_us_per_stream"))
    watch = r.get("watch_storm_x_quiet")
    return [
        f"storm recovery (e): {_verdict(storm)}: {_f(r['storm_s'], 2)} s, "
        f"Nchan {_f(n['storm_s'], 2)} s",
        f"storm CPU per reopened stream (e): {_verdict(None if cpu is None else cpu <= 1)}: "
        f"{_f(r.get('storm_cpu_us_per_stream'), 0)} µs, Nchan "
        f"{_f(n.get('storm_cpu_us_per_stream'), 0)} µs; open streams' fan-out p99 during "
        f"the storm {_verdict(None if watch is None else watch <= 2)}: {_f(watch, 2)}x quiet",
    ]


def _held_target(wide: str, found: Pair) -> list[str]:
    r, n = found
    if r is None:
        return []
    good = r["connected"] >= r["clients"] and r["lost"] == 0
    beside = f"; Nchan {n['connected']:,} held, lost {n['lost']}" if n else ""
    return [
        f"f ({wide}): {_verdict(good)}: {r['connected']:,}/{r['clients']:,} held, "
        f"lost {r['lost']}{beside}"
    ]


def render(results: list[dict[str, Any]], system: str = "gateway-2w") -> str:
    rows = aggregate(results)
    parts = [publishing(results), "", main_table(rows), "", ratio_table(rows)]
    extras = (
        storm_table(rows),
        ceiling_table(rows),
        before_after_table(rows),
        auth_table(rows),
        log_table(rows),
    )
    for extra in extras:
        if extra:
            parts += ["", extra]
    for name in (system, system + LOG_SUFFIX):
        if any(r["system"] == name for r in rows):
            parts += ["", f"Targets against Nchan for {name}:"]
            parts += [f"- {t}" for t in targets(rows, name)]
    return "\n".join(parts)
