"""`connectome-sse chaos` for real: its topology of processes, its faults, its JSON rows.

Three runs start together (they share nothing but the machine): the fast
scenarios with the default settings, which must all PASS with plausible
figures; the Sentinel failover on its own topology (master, replica, three
sentinels), which must PASS too; and a gateway kill with ``SSE_RETRY_MS`` far
above what that scenario allows, which must FAIL on recovery, proving the
checks can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_sentinel import DOWN_AFTER_MS

pytestmark = pytest.mark.e2e

FAST = ("client-kill", "redis-kill", "publisher-kill", "publisher-freeze")
SENTINEL = "sentinel-failover"
CLIENTS = 8
BROKEN_RETRY_MS = 25_000
RUN_TIMEOUT_S = 140


@dataclass
class ChaosRun:
    proc: subprocess.Popen[str]
    json_path: Path

    def finish(self) -> tuple[int, str, str, dict[str, Any]]:
        out, err = self.proc.communicate(timeout=RUN_TIMEOUT_S)
        assert self.json_path.exists(), f"no JSON written\nstdout:\n{out}\nstderr:\n{err}"
        return self.proc.returncode, out, err, json.loads(self.json_path.read_text())


def start(tmp: Path, name: str, args: list[str], env: dict[str, str]) -> ChaosRun:
    # Only the settings this run gives: none of the caller's SSE_*/HEALTH_*/... leak in.
    owned = ("SSE_", "HEALTH_", "PUBLISHER_", "REDIS_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(owned)}
    json_path = tmp / f"{name}.json"
    proc = subprocess.Popen(
        console_script("connectome-sse", "chaos", *args, "--json", str(json_path)),
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return ChaosRun(proc, json_path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ChaosRun]]:
    tmp = tmp_path_factory.mktemp("chaos")
    started = {
        "fast": start(tmp, "fast", [*FAST, "--clients", str(CLIENTS)], {}),
        "sentinel": start(tmp, "sentinel", [SENTINEL, "--clients", str(CLIENTS)], {}),
        "broken": start(
            tmp,
            "broken",
            ["gateway-kill", "--clients", "6"],
            {"SSE_RETRY_MS": str(BROKEN_RETRY_MS)},
        ),
    }
    yield started
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.terminate()  # chaos stops its topology on SIGTERM's KeyboardInterrupt path
            try:
                run.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait(timeout=10)


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_fast_scenarios_pass_with_plausible_figures(runs: dict[str, ChaosRun]) -> None:
    status, out, err, report = runs["fast"].finish()
    rows = {row["scenario"]: row for row in report["rows"]}
    assert list(rows) == list(FAST), err
    for row in rows.values():
        plausible(row, err)
    # Each fault really happened: every subscription cut, the leader's process replaced.
    assert rows["client-kill"]["figures"]["extra"]["subscriptions_killed"] >= 2
    assert rows["publisher-kill"]["figures"]["extra"]["killed"].startswith("publisher-")
    assert rows["publisher-freeze"]["figures"]["extra"]["frozen"].startswith("publisher-")
    # Redis came back from its kill with its data: every logged number it answered is
    # still in the log, for the gateways to fill from.
    assert rows["redis-kill"]["figures"]["extra"]["log_dropped"] == 0, rows["redis-kill"]
    assert "| log lost / silent / dups / reord | raw lost | resync |" in out
    assert status == 0, err
    for name in FAST:
        assert f"| {name} |" in out and "| PASS |" in out


def plausible(row: dict[str, Any], err: str) -> None:
    """PASS, and figures a real run gives: a recovery within the limit, nothing lost."""
    figures, limits = row["figures"], row["limits"]
    assert row["result"] == "PASS", f"{row['scenario']}: {row['reasons']}\n{err}"
    assert figures["clients"] == CLIENTS
    # Recovery is at least the time to the next health event, and within its limit.
    assert 0 < figures["recovery_s"] <= limits["recovery_s"], row
    for figure in ("lost", "duplicates", "reordered", "never_back", "stale", "cut"):
        assert figures[figure] == 0, (figure, row)
    assert 10 < figures["peak_rss_mib"] < 2000, row  # a Python gateway, measured
    # The logged and raw sequences were measured beside it (their values: docs/chaos.md).
    logged = ("log_lost", "log_silent", "log_duplicates", "log_reordered", "raw_lost")
    assert all(isinstance(figures[name], int) and figures[name] >= 0 for name in logged), row
    assert figures["log_silent"] <= figures["log_lost"], row
    # Nothing lost across the cuts of Redis's own making: every logged number, once, in order.
    if row["scenario"] in ("client-kill", "redis-kill"):
        assert figures["log_lost"] == 0, row
    assert figures["log_duplicates"] == figures["log_reordered"] == 0, row
    assert isinstance(figures["extra"]["log_dropped"], int), row
    assert row["limit"].startswith("recovery <= "), row


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_a_sentinel_failover_passes_and_the_old_master_rejoins(
    runs: dict[str, ChaosRun],
) -> None:
    status, out, err, report = runs["sentinel"].finish()
    (row,) = report["rows"]
    assert row["scenario"] == SENTINEL
    plausible(row, err)
    extra = row["figures"]["extra"]
    # The logged sequence lost nothing the new master still holds: a loss is a write the
    # old master took and never replicated (log_dropped), which no gateway can bring back.
    assert row["figures"]["log_lost"] == 0 or extra["log_dropped"] > 0, row
    # The master really died and the other node took over; the sentinels cannot even call
    # the master down before down-after-milliseconds, so no client can have fresh health
    # sooner (less a PING in flight at the kill); the old master came back after the switch.
    down_after_s = DOWN_AFTER_MS / 1000 - 0.1
    assert extra["killed"] != extra["new_master"], row
    assert row["figures"]["recovery_s"] >= down_after_s, row
    assert down_after_s <= extra["switch_s"] <= extra["rejoined_s"], row
    # The feed published through the failover: while no master took writes, it failed.
    assert extra["publish_failed"] >= 1, row
    assert status == 0, err
    assert f"| {SENTINEL} |" in out and "| PASS |" in out


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_a_retry_far_above_the_limit_fails_the_gateway_kill(runs: dict[str, ChaosRun]) -> None:
    status, out, err, report = runs["broken"].finish()
    (row,) = report["rows"]
    assert row["scenario"] == "gateway-kill"
    assert row["result"] == "FAIL", row
    assert status == 1, err
    assert report["settings"]["SSE_RETRY_MS"] == BROKEN_RETRY_MS
    # The limit did not stretch with the setting; the clients waited out the retry.
    assert row["limits"]["recovery_s"] == pytest.approx(15 + 1 + 2)
    recovery = row["figures"]["recovery_s"]
    assert recovery is None or recovery >= BROKEN_RETRY_MS / 1000, row
    assert any(reason.startswith("recovery ") for reason in row["reasons"]), row
    assert "| gateway-kill |" in out and "| FAIL |" in out
