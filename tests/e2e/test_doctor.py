"""`connectome-sse doctor` against real paths: the gateway, the project's nginx, broken nginx.

Real processes throughout: redis-server, sse-gateway, Debian's nginx (the
project's template via tests.support.nginx, or a variant with one known
mistake via tests.support.nginx_variants), and the doctor itself run as the
console script, read through ``--json``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from connectome_core.tokens import TokenVerifier
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer
from tests.conftest import StartGateway
from tests.support.nginx import NginxServer
from tests.support.nginx_variants import BUFFERING_AND_GZIP, SHORT_READ_TIMEOUT, NginxVariant

pytestmark = pytest.mark.e2e

# Long enough past the probes for a few of the test gateway's pings (0.5 s apart).
IDLE = "2"
SECRET = "doctor-test-secret-0123456789abcdef0123"


@dataclass(frozen=True)
class DoctorRun:
    status: int
    report: dict[str, Any]
    stderr: str

    def check(self, name: str) -> dict[str, Any]:
        return next(c for c in self.report["checks"] if c["name"] == name)

    def verdicts(self) -> dict[str, str]:
        return {c["name"]: c["verdict"] for c in self.report["checks"]}


def doctor(url: str, *args: str, timeout: float = 90) -> DoctorRun:
    done = subprocess.run(
        console_script("connectome-sse", "doctor", url, "--json", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.stdout, done.stderr
    return DoctorRun(done.returncode, json.loads(done.stdout), done.stderr)


def all_pass(run: DoctorRun) -> bool:
    return set(run.verdicts().values()) == {"PASS"}


@pytest.fixture
def gateway(redis_server: RedisServer, start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway(redis_server.url).wait_ready()


@pytest.fixture
def project_nginx(gateway: GatewayProcess) -> Iterator[NginxServer]:
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"])
    try:
        yield nginx.start()
    finally:
        nginx.stop()


def test_the_gateway_directly_passes_every_check(gateway: GatewayProcess) -> None:
    run = doctor(gateway.url, "--idle", IDLE)
    assert run.status == 0, run.report
    assert all_pass(run), run.verdicts()
    assert run.report["ok"] is True
    assert run.check("http")["value"] == "HTTP/1.1"
    assert run.check("retry")["value"] == 3000
    assert run.check("probes")["value"] >= 0.5  # the smallest gap between probes


def test_the_text_report_has_one_line_per_check_and_exit_0(gateway: GatewayProcess) -> None:
    done = subprocess.run(
        console_script("connectome-sse", "doctor", f"{gateway.url}/api/sse", "--idle", "1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    checks = [line for line in lines if re.match(r"^(PASS|WARN|FAIL|SKIP) ", line)]
    assert [line.split()[0] for line in checks] == ["PASS"] * 10, done.stdout
    assert lines[-1] == "10 checks: 10 pass"


def test_the_project_nginx_passes_every_check_over_http(project_nginx: NginxServer) -> None:
    run = doctor(project_nginx.url, "--idle", IDLE)
    assert run.status == 0, run.report
    assert all_pass(run), run.verdicts()


def test_the_project_nginx_passes_every_check_over_https_speaking_http2(
    project_nginx: NginxServer,
) -> None:
    run = doctor(project_nginx.tls_url, "--idle", IDLE, "--cacert", str(project_nginx.tls.ca))
    assert run.status == 0, run.report
    assert all_pass(run), run.verdicts()
    assert run.check("http")["value"] == "HTTP/2"


def test_a_certificate_that_does_not_verify_fails_and_says_how_to_trust_it(
    project_nginx: NginxServer,
) -> None:
    run = doctor(project_nginx.tls_url, "--idle", "0")
    assert run.status == 1
    status = run.check("status")
    assert status["verdict"] == "FAIL"
    assert "certificate" in status["figure"].lower()
    assert any("--cacert" in fix for fix in status["fixes"])
    # --insecure skips verification: the path itself is fine.
    assert all_pass(doctor(project_nginx.tls_url, "--idle", "1", "--insecure"))


def test_buffering_and_gzip_fail_the_buffering_and_encoding_checks_naming_them(
    gateway: GatewayProcess,
) -> None:
    nginx = NginxVariant([f"127.0.0.1:{gateway.port}"], BUFFERING_AND_GZIP)
    try:
        nginx.start()
        run = doctor(nginx.url, "--idle", IDLE)
    finally:
        nginx.stop()
    assert run.status == 1
    verdicts = run.verdicts()
    assert verdicts["encoding"] == "FAIL" and verdicts["probes"] == "FAIL", verdicts
    assert "gzip" in run.check("encoding")["figure"]
    probes = run.check("probes")["figure"]
    assert "proxy_buffering" in probes and "gzip" in probes, probes
    fixes = " ".join(run.check("probes")["fixes"])
    assert "proxy_buffering off" in fixes and "gzip off" in fixes


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_short_proxy_read_timeout_is_reported_as_an_idle_cut_with_its_time(
    redis_server: RedisServer, start_gateway: StartGateway, scheme: str
) -> None:
    quiet = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "30"}).wait_ready()
    nginx = NginxVariant([f"127.0.0.1:{quiet.port}"], SHORT_READ_TIMEOUT)
    try:
        nginx.start()
        if scheme == "https":
            run = doctor(nginx.tls_url, "--idle", "8", "--cacert", str(nginx.tls.ca))
        else:
            run = doctor(nginx.url, "--idle", "8")
    finally:
        nginx.stop()
    assert run.status == 1
    idle = run.check("idle")
    assert idle["verdict"] == "FAIL", idle
    # Silent after the last probe (2 s); nginx gives up 5 s later (proxy_read_timeout 5s).
    match = re.search(r"cut at (\d+\.\d) s, after (\d+\.\d) s of silence", idle["figure"])
    assert match is not None, idle["figure"]
    cut_at, silence = float(match.group(1)), float(match.group(2))
    assert 4.5 <= silence <= 7.0, idle["figure"]
    assert cut_at == pytest.approx(idle["value"], abs=0.1)
    assert cut_at < 2 + 8  # before the watch was over
    assert "proxy_read_timeout" in " ".join(idle["fixes"])
    # Everything before the cut was fine.
    assert {name for name, v in run.verdicts().items() if v != "PASS"} == {"idle"}


def test_credentials_are_sent_as_bearer_token_or_cookie(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_AUTH_SECRET": SECRET}).wait_ready()
    refused = doctor(gateway.url, "--idle", "0")
    assert refused.status == 1
    status = refused.check("status")
    assert status["value"] == 401
    assert any("--token" in fix for fix in status["fixes"])

    token = TokenVerifier(SECRET.encode()).mint(ttl=60)
    assert all_pass(doctor(gateway.url, "--idle", "1", "--token", token))
    assert all_pass(doctor(gateway.url, "--idle", "1", "--cookie", token))


def test_an_idle_wait_that_no_ping_crossed_warns_that_it_proves_nothing(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    # Pings every 30 s, a wait of 1 s: the stream stays open, yet no silence as long
    # as a real one (a ping interval) was survived.
    quiet = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "30"}).wait_ready()
    run = doctor(quiet.url, "--idle", "1")
    idle = run.check("idle")
    assert idle["verdict"] == "WARN", idle
    assert "no ping arrived after the probes: not proven" in idle["figure"]
    assert "SSE_PING_INTERVAL" in idle["fixes"][0]
    assert run.status == 0  # a warning, not a failure
    assert {name for name, v in run.verdicts().items() if v != "PASS"} == {"idle"}


def test_a_path_that_is_not_a_stream_is_named_so_and_no_proxy_is_blamed(
    gateway: GatewayProcess,
) -> None:
    run = doctor(gateway.url + "/healthz", "--idle", "0")
    assert run.status == 1
    content_type = run.check("content-type")
    assert content_type["verdict"] == "FAIL"
    assert "not an SSE stream" in content_type["figure"]
    assert "/api/sse" in content_type["fixes"][0]
    cache = run.check("cache")
    assert cache["verdict"] == "SKIP" and "not an SSE stream" in cache["figure"], cache
    assert not any("proxy" in c["figure"] for c in run.report["checks"]), run.report
