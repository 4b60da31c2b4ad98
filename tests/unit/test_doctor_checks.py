"""The doctor's checks and reports over hand-made observations: each verdict and what it names."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from connectome_sse.cli import main
from connectome_sse.doctor.checks import (
    check_body,
    check_cache,
    check_encoding,
    check_first_byte,
    check_http_version,
    check_idle,
    check_probes,
    check_retry,
    check_status,
    failed,
    run_checks,
)
from connectome_sse.doctor.observe import Arrival, Observation, UsageError, probe_url
from connectome_sse.doctor.report import json_report, text_report
from connectome_sse.sse_client import ServerEvent

STREAM_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


def probe(n: int, at: float) -> Arrival:
    return Arrival(at, ServerEvent("probe", json.dumps({"n": n, "ts": 1.0 + n}), ""))


def ping(at: float) -> Arrival:
    return Arrival(at, ServerEvent("ping", '{"ts": 1.0, "redis": "up"}', ""))


def healthy(**changes: object) -> Observation:
    """What the gateway itself gives over plain HTTP, watched 2 s past the probes."""
    o = Observation(
        url="http://127.0.0.1:8000/api/sse?probe=1",
        idle=2.0,
        status=200,
        headers=dict(STREAM_HEADERS),
        http_version="HTTP/1.1",
        head_at=0.01,
        first_byte_at=0.012,
        arrivals=[probe(0, 0.012), probe(1, 1.012), ping(1.5), probe(2, 2.012), ping(3.0)],
        retry_ms=3000,
        watched_until=4.01,
    )
    return replace(o, **changes)  # type: ignore[arg-type]


def test_a_healthy_stream_passes_everything() -> None:
    checks = run_checks(healthy())
    assert [c.verdict for c in checks] == ["PASS"] * 10, checks
    assert not failed(checks)


def test_the_text_report_lists_each_fix_once_under_the_checks() -> None:
    o = healthy(
        headers={**STREAM_HEADERS, "content-encoding": "gzip"},
        arrivals=[probe(0, 2.5), probe(1, 2.5), probe(2, 2.5), ping(3.5)],
    )
    text = text_report(o, run_checks(o))
    lines = text.splitlines()
    assert lines[0].startswith("doctor http://127.0.0.1:8000/api/sse?probe=1")
    assert "FAIL  encoding" in text and "FAIL  probes" in text
    fixes = [line for line in lines if line.startswith("[")]
    assert len(fixes) == 2 and "gzip off" in fixes[0] and "proxy_buffering off" in fixes[1]
    assert "10 checks: 8 pass, 2 fail" in lines


def test_the_json_report_says_ok_and_keeps_the_figures() -> None:
    report = json.loads(json_report(healthy(), run_checks(healthy())))
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == [
        "status",
        "content-type",
        "encoding",
        "body",
        "cache",
        "http",
        "first byte",
        "probes",
        "idle",
        "retry",
    ]
    assert report["checks"][-1] == {
        "name": "retry",
        "verdict": "PASS",
        "figure": "3000 ms",
        "value": 3000,
        "fixes": [],
    }


@pytest.mark.parametrize(
    ("times", "verdict", "words"),
    [
        ((0.0, 1.0, 2.0), "PASS", "1.00 s, 1.00 s apart"),
        ((2.5, 2.5, 2.51), "FAIL", "bunched"),
        ((0.0, 1.0, 3.2), "WARN", "uneven"),
        ((0.0,), "FAIL", "1 of 3 arrived"),
        ((), "FAIL", "0 of 3 arrived"),
    ],
)
def test_probes_one_second_apart_pass_bunched_or_missing_fail(
    times: tuple[float, ...], verdict: str, words: str
) -> None:
    o = healthy(arrivals=[probe(n, at) for n, at in enumerate(times)], first_byte_at=0.01)
    check = check_probes(o)
    assert check.verdict == verdict and words in check.figure, check
    if verdict == "FAIL":
        assert "proxy_buffering" in check.figure


def test_bunched_compressed_probes_name_gzip_and_buffering() -> None:
    o = healthy(
        headers={**STREAM_HEADERS, "content-encoding": "gzip"},
        arrivals=[probe(0, 2.5), probe(1, 2.5), probe(2, 2.5)],
    )
    check = check_probes(o)
    assert check.verdict == "FAIL"
    assert "gzip with proxy_buffering" in check.figure
    assert len(check.fixes) == 2
    assert check_encoding(o).verdict == "FAIL"


def test_a_held_response_is_blamed_on_gzip_when_identity_flows() -> None:
    held = Observation(url="http://x/api/sse?probe=1", idle=2.0, held=True, watched_until=4.0)
    assert check_status(held).verdict == "FAIL"
    assert "no response head" in check_status(held).figure
    assert check_encoding(held).verdict == "SKIP"  # no head, no comparison: cannot tell
    assert "proxy_buffering" in check_probes(held).figure
    assert check_first_byte(held).verdict == "FAIL"

    compared = replace(held, identity=healthy(headers=dict(STREAM_HEADERS)))
    encoding = check_encoding(compared)
    assert encoding.verdict == "FAIL" and "Accept-Encoding: identity" in encoding.figure
    assert "gzip with proxy_buffering" in check_probes(compared).figure


def test_a_stream_cut_after_silence_is_an_idle_failure_with_its_time() -> None:
    o = healthy(
        arrivals=[probe(0, 0.01), probe(1, 1.01), probe(2, 2.01)],
        ended_at=7.02,
        end_reason="connection closed mid-stream (no final chunk)",
        watched_until=7.02,
    )
    check = check_idle(o)
    assert check.verdict == "FAIL"
    assert check.figure.startswith("cut at 7.0 s, after 5.0 s of silence")
    assert check.value == 7.02
    assert "proxy_read_timeout" in check.fixes[0]


def test_a_stream_open_to_the_end_passes_idle_with_its_longest_silence() -> None:
    check = check_idle(healthy())
    assert check.verdict == "PASS"
    assert "longest silence 1.0 s" in check.figure


@pytest.mark.parametrize(
    ("headers", "verdict"),
    [
        ({"cache-control": "no-cache"}, "PASS"),
        ({"cache-control": "no-store, private"}, "PASS"),
        ({}, "WARN"),
        ({"cache-control": "public, max-age=60"}, "FAIL"),
        ({"cache-control": "no-cache", "age": "12"}, "FAIL"),
        ({"cache-control": "no-cache", "x-cache": "HIT from cdn"}, "FAIL"),
    ],
)
def test_cache(headers: dict[str, str], verdict: str) -> None:
    o = healthy(headers={"content-type": "text/event-stream", **headers})
    assert check_cache(o).verdict == verdict


@pytest.mark.parametrize(
    ("url", "version", "h2", "verdict"),
    [
        ("https://h/api/sse", "HTTP/2", True, "PASS"),
        ("https://h/api/sse", "HTTP/1.1", True, "WARN"),
        ("https://h/api/sse", "HTTP/1.1", False, "WARN"),
        ("http://h/api/sse", "HTTP/1.1", True, "PASS"),
    ],
)
def test_http_version(url: str, version: str, h2: bool, verdict: str) -> None:
    check = check_http_version(healthy(url=url, http_version=version, http2_available=h2))
    assert check.verdict == verdict
    if not h2:
        assert "httpx[http2]" in check.figure


@pytest.mark.parametrize(
    ("retry", "verdict"), [(3000, "PASS"), (None, "WARN"), (100, "WARN"), (120000, "WARN")]
)
def test_retry(retry: int | None, verdict: str) -> None:
    assert check_retry(healthy(retry_ms=retry)).verdict == verdict


@pytest.mark.parametrize(("at", "verdict"), [(0.05, "PASS"), (2.0, "WARN"), (5.0, "FAIL")])
def test_first_byte(at: float, verdict: str) -> None:
    assert check_first_byte(healthy(first_byte_at=at)).verdict == verdict


@pytest.mark.parametrize(("status", "hint"), [(401, "--token"), (503, "SSE_MAX_CONNECTIONS")])
def test_a_refused_stream_fails_status_and_skips_the_stream_checks(status: int, hint: str) -> None:
    o = healthy(
        status=status,
        headers={"content-type": "application/json"},
        arrivals=[],
        first_byte_at=None,
        excerpt='{"error": "nope"}',
    )
    checks = {c.name: c for c in run_checks(o)}
    assert checks["status"].verdict == "FAIL"
    assert hint in checks["status"].fixes[0]
    assert '{"error": "nope"}' in checks["status"].figure
    assert {checks[n].verdict for n in ("first byte", "probes", "idle", "retry")} == {"SKIP"}


def test_no_connection_fails_status_and_skips_the_rest() -> None:
    o = Observation(url="http://x/api/sse?probe=1", idle=2.0, error="cannot connect: refused")
    checks = run_checks(o)
    assert checks[0].verdict == "FAIL" and checks[0].figure == "cannot connect: refused"
    assert {c.verdict for c in checks[1:]} == {"SKIP"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8080", "http://h:8080/api/sse?probe=1"),
        ("h:8080/", "http://h:8080/api/sse?probe=1"),
        ("https://h/api/sse?events=a,b", "https://h/api/sse?events=a,b&probe=1"),
        ("https://h/api/sse?probe=0", "https://h/api/sse?probe=1"),
    ],
)
def test_probe_url(given: str, expected: str) -> None:
    assert probe_url(given) == expected


def test_probe_url_refuses_other_schemes() -> None:
    with pytest.raises(UsageError):
        probe_url("ftp://h/")


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor", "ftp://h/"],
        ["doctor", "http://127.0.0.1:1", "--cacert", "/no/such/ca.pem"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "connectome-sse doctor:" in capsys.readouterr().err


def test_idle_must_be_a_number_of_seconds() -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "http://h", "--idle", "soon"])


def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: refused at once.
    assert main(["doctor", "http://127.0.0.1:1", "--idle", "0"]) == 1
    assert "FAIL  status        cannot connect" in capsys.readouterr().out


def test_an_idle_wait_without_a_ping_is_not_proven_and_warns() -> None:
    # --idle 3 against pings every 15 s: open to the end, yet no silence was survived.
    o = healthy(
        idle=3.0,
        arrivals=[probe(0, 0.012), probe(1, 1.012), probe(2, 2.012)],
        watched_until=5.51,
    )
    check = check_idle(o)
    assert check.verdict == "WARN", check
    assert "not proven" in check.figure and "no ping" in check.figure
    assert "--idle" in check.fixes[0] and "SSE_PING_INTERVAL" in check.fixes[0]
    assert not failed(run_checks(o))
    # A ping before the last probe proves nothing about the wait after it.
    early = replace(o, arrivals=[probe(0, 0.012), ping(0.5), probe(1, 1.012), probe(2, 2.012)])
    assert check_idle(early).verdict == "WARN"


def test_a_path_that_is_not_a_stream_is_named_so_and_no_proxy_is_blamed() -> None:
    # `doctor http://host/healthz`: a 200 in JSON, without Cache-Control.
    o = healthy(
        url="http://127.0.0.1:8000/healthz?probe=1",
        headers={"content-type": "application/json"},
        arrivals=[],
        first_byte_at=None,
        retry_ms=None,
        excerpt='{"status": "ok"}',
    )
    checks = {c.name: c for c in run_checks(o)}
    assert checks["content-type"].verdict == "FAIL"
    assert "not an SSE stream" in checks["content-type"].figure
    assert "/api/sse" in checks["content-type"].fixes[0]
    assert checks["cache"].verdict == "SKIP"
    assert "not an SSE stream" in checks["cache"].figure
    assert not any("proxy" in c.figure for c in checks.values()), checks


@pytest.mark.parametrize(
    "why",
    [
        "response too large: over 4 MiB after decoding",
        "line too long: over 1 MiB without a line break",
    ],
)
def test_a_stream_cut_short_by_the_doctor_fails_the_body_check(why: str) -> None:
    o = healthy(arrivals=[probe(0, 0.012)], cut_short=why, watched_until=0.3)
    checks = {c.name: c for c in run_checks(o)}
    assert checks["body"].verdict == "FAIL"
    assert why in checks["body"].figure and "stopped reading" in checks["body"].figure
    # What was not read is not judged: no "held back" guess, no idle verdict.
    assert checks["probes"].verdict == "SKIP" and checks["idle"].verdict == "SKIP"
    assert failed(list(checks.values()))


def test_a_healthy_stream_passes_the_body_check_with_what_was_read() -> None:
    check = check_body(healthy(body_bytes=2048))
    assert check.verdict == "PASS" and check.figure == "2 KiB read"
    assert check.value == 2048
