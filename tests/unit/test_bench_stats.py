"""The benchmark's arithmetic: percentiles, delivery counts, payloads, the report's verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from bench.payload import make_payload, read_payload
from bench.report import aggregate, render, targets
from bench.stats import (
    delivered_per_second,
    delivery_summary,
    latency_summary,
    median,
    percentile,
    ratio,
)


@pytest.mark.parametrize(("q", "want"), [(0.0, 1), (0.5, 50), (0.9, 90), (0.99, 99), (1.0, 100)])
def test_percentile_is_nearest_rank(q: float, want: int) -> None:
    assert percentile(list(range(1, 101)), q) == want


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 0.5) is None
    assert latency_summary([], "lat_ms") == {
        "lat_ms_p50": None,
        "lat_ms_p90": None,
        "lat_ms_p99": None,
        "lat_ms_max": None,
    }


def test_latency_summary_in_milliseconds_from_unsorted_seconds() -> None:
    summary = latency_summary([0.003, 0.001, 0.002, 0.010], "lat_ms")
    assert summary == {
        "lat_ms_p50": 2.0,
        "lat_ms_p90": 10.0,
        "lat_ms_p99": 10.0,
        "lat_ms_max": 10.0,
    }


def test_delivery_counts_every_missing_event_per_client() -> None:
    assert delivery_summary([10, 10, 7, 0], 10) == {"lost": 13, "clients_with_loss": 2}


def test_delivered_per_second_scores_a_perfect_system_clients_times_rate() -> None:
    # 100 clients, 10 events at 5/s: first publish t=0, last receive t=1.8 (event 9 at 1.8 s)
    assert delivered_per_second(1000, 0.0, 1.8, 5.0) == 500.0
    assert delivered_per_second(0, 0.0, 0.0, 5.0) is None


def test_median_and_ratio() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([1.0, 4.0]) == 2.5
    assert median([None]) is None
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(3.0, 0.0) is None


@pytest.mark.parametrize("size", [60, 128, 1024])
def test_payload_has_the_exact_size_and_reads_back(size: int) -> None:
    body = make_payload("ab12cd34", 7, 1732500000.123456, size)
    assert len(body) == max(size, len(make_payload("ab12cd34", 7, 1732500000.123456, 0)))
    assert read_payload(body.decode(), "ab12cd34") == (7, 1732500000.123456)


@pytest.mark.parametrize(
    "data",
    [
        '{"run": "x", "seq": 1, "sent": 1.0}',
        "not json",
        "[1]",
        '{"run": "r", "seq": true, "sent": 1}',
    ],
)
def test_foreign_payloads_are_not_measured(data: str) -> None:
    assert read_payload(data, "r") is None


def result(scenario: str, system: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": scenario, "system": system, "clients": 5000, "connected": 5000,
        "connect_ms_p50": 10.0, "connect_ms_p99": 40.0, "delivered_per_s": 50000.0,
        "lost": 0, "dups": 0, "lat_ms_p50": 20.0, "lat_ms_p90": 40.0, "lat_ms_p99": 60.0,
        "lat_ms_max": 80.0, "server_rss_mb": 100.0, "kb_per_conn": 10.0, "server_cpu_pct": 40.0,
        "client_cpu_pct": 25.0, "redis_connected_clients": 1,
    }  # fmt: skip
    return {**base, **over}


def test_report_takes_medians_over_repeats_and_the_worst_loss() -> None:
    rows = aggregate(
        [
            result("b", "gateway-2w", lat_ms_p99=100.0, lost=0),
            result("b", "gateway-2w", lat_ms_p99=300.0, lost=5),
            result("b", "gateway-2w", lat_ms_p99=200.0, lost=0),
        ]
    )
    assert len(rows) == 1
    assert rows[0]["lat_ms_p99"] == 200.0
    assert rows[0]["lost"] == 5
    assert rows[0]["repeats"] == 3


def test_targets_compare_with_nchan_of_the_same_run() -> None:
    rows = aggregate(
        [
            result("b", "nchan", lat_ms_p99=60.0, server_cpu_pct=40.0),
            result("b", "gateway-2w", lat_ms_p99=55.0, server_cpu_pct=35.0, connect_ms_p99=80.0),
            result("a", "nchan"),
            result("a", "gateway-2w", lat_ms_p99=70.0),
            result("d", "nchan", kb_per_conn=10.0),
            result("d", "gateway-2w", kb_per_conn=7.0),
            result("f", "nchan-4w", clients=50000, connected=50000),
            result("f", "gateway-4w", clients=50000, connected=49000),
        ]
    )
    verdicts = targets(rows)
    assert any(v.startswith("b: fan-out p99 and CPU PASS") for v in verdicts)
    assert any("connect p99 FAIL: 80.0 ms = 2.00x" in v for v in verdicts)
    assert any(v.startswith("a: fan-out p99 and CPU FAIL") for v in verdicts)  # 70 > 60 ms
    assert any(v.startswith("KB per held connection (d): PASS") for v in verdicts)
    assert any(v.startswith("f (gateway-4w): FAIL: 49,000/50,000") for v in verdicts)


def test_render_shows_failed_runs_instead_of_dropping_them() -> None:
    text = render(
        [result("a", "nchan"), {"scenario": "a", "system": "gateway-2w", "error": "boom"}]
    )
    assert "| a | gateway-2w | failed: boom |" in text
    assert "| a | nchan | 5,000/5,000 |" in text


def test_system_names_of_f_and_before_runs() -> None:
    from bench.systems import canonical_name, parse_system

    assert canonical_name("nchan-2w") == "nchan"
    assert parse_system("nchan-4w") == ("nchan", 4)
    assert parse_system("gateway-2w-before") == ("gateway-before", 2)
    assert canonical_name("gateway-4w-before") == "gateway-4w-before"
    assert parse_system("gateway-2w-auth") == ("gateway-auth", 2)
    assert canonical_name("gateway-2w-auth") == "gateway-2w-auth"
    with pytest.raises(ValueError, match="only the gateway"):
        parse_system("nchan-2w-auth")


def test_the_auth_table_sets_each_gateway_beside_its_auth_run() -> None:
    text = render(
        [
            result("e", "nchan", storm_s=1.0),
            result("e", "gateway-2w", connect_ms_p50=20.0, connect_ms_p99=50.0, storm_s=2.0),
            result("e", "gateway-2w-auth", connect_ms_p50=22.0, connect_ms_p99=60.0, storm_s=2.2),
        ]
    )
    assert "| e | gateway-2w | 20.0 -> 22.0 (1.10x) | 50.0 -> 60.0 (1.20x) | 2.00 -> 2.20" in text


def test_the_before_after_table_sets_the_before_run_first() -> None:
    text = render(
        [
            result("e", "nchan"),
            result("e", "gateway-2w", kb_per_conn=6.0),
            result("e", "gateway-2w-before", kb_per_conn=9.0),
        ]
    )
    assert "| e | gateway-2w | 9.0 -> 6.0 | 40.0 -> 40.0 | - -> - |" in text


def test_a_bearer_token_goes_into_every_stream_request() -> None:
    from bench.client import WorkerConfig, WorkerState

    cfg = WorkerConfig(
        host="127.0.0.1", port=1, path="/api/sse", clients=1, expected=1, run_id="r",
        event_type="connectome_health", ramp_concurrency=1, connect_timeout_s=1.0,
        storm_timeout_s=1.0, max_life_s=1.0, headers=(("Authorization", "Bearer t"),),
    )  # fmt: skip
    request = WorkerState(cfg).request
    assert request.endswith(b"Cache-Control: no-cache\r\nAuthorization: Bearer t\r\n\r\n")


def test_a_ceiling_step_fails_on_p99_loss_or_a_late_publisher() -> None:
    from bench.ceiling import step_failure

    step = {"rate": 100, "lost": 0, "dropped_streams": 0, "lat_ms_p99": 80.0, "publish_rate": 99.0}
    assert step_failure(step, 100.0) is None
    assert step_failure({**step, "lat_ms_p99": 120.0}, 100.0) == "p99 120.0 ms > 100 ms"
    assert "lost" in (step_failure({**step, "lost": 3}, 100.0) or "")
    assert "publisher" in (step_failure({**step, "publish_rate": 70.0}, 100.0) or "")


def test_runs_through_the_log_are_their_own_system_beside_the_publish_ones() -> None:
    results = [
        result("b", "nchan", publish="http", lat_ms_p99=50.0),
        result("b", "gateway-2w", publish="raw", lat_ms_p99=40.0, server_cpu_pct=30.0),
        result("b", "gateway-2w", publish="log", lat_ms_p99=44.0, server_cpu_pct=36.0),
        result("b", "gateway-2w", lat_ms_p99=42.0),  # a run from before the field: PUBLISH
    ]
    rows = aggregate(results)
    assert [(r["system"], r["repeats"]) for r in rows] == [
        ("nchan", 1), ("gateway-2w", 2), ("gateway-2w-log", 1),
    ]  # fmt: skip
    text = render(results)
    assert text.startswith(
        "Events published by: HTTP POST (nchan); Redis PUBLISH (gateway-2w); "
        "through the event log (gateway-2w-log)."
    )
    assert "| b | gateway-2w-log | 5,000/5,000 |" in text
    # The cost of the log, set beside the same system fed by PUBLISH (medians: 41 -> 44).
    assert "| b | gateway-2w | 40.0 -> 40.0 (1.00x) | 20.0 -> 20.0 (1.00x) | 41.0 -> 44.0" in text
    assert "Targets against Nchan for gateway-2w:" in text
    assert "Targets against Nchan for gateway-2w-log:" in text


def test_targets_of_a_run_through_the_log_look_for_its_own_wide_system() -> None:
    rows = aggregate(
        [
            result("f", "nchan-4w", clients=50000, connected=50000),
            result("f", "gateway-4w", publish="log", clients=50000, connected=50000),
        ]
    )
    verdicts = targets(rows, "gateway-2w-log")
    assert any(v.startswith("f (gateway-4w-log): PASS: 50,000/50,000") for v in verdicts)
