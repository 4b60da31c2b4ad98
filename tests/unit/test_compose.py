"""What a real ``docker-compose up`` cannot show about docker-compose.yml.

tests/e2e/test_compose.py runs the file for real (health, events, failover,
scale-out, the Redis options, ports and users). What remains here are the
properties a short real run cannot observe: a misspelled setting is silently
ignored by the process, a drain longer than compose's stop grace is cut by
SIGKILL, the demo engine must stay out of the default profile, and the stream
timeouts of nginx only matter after minutes.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectome_core.settings import ProcessSettings, load_settings
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings
from tests.support.nginx import TEMPLATE

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

# Which settings class reads the environment of each process the compose file runs.
SETTINGS_BY_COMMAND: dict[str, type[ProcessSettings]] = {
    "sse-gateway": GatewaySettings,
    "health-publisher": PublisherSettings,
}
# `connectome-sse demo-engine` reads only where its Redis is.
DEMO_ENGINE_ENV = {"REDIS_URL"}
# Read by uvicorn itself, under the gateway (which proxy may set X-Forwarded-For).
SERVER_ENV = {"sse-gateway": {"FORWARDED_ALLOW_IPS"}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd or []]


def project_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the project's own image (services/Dockerfile)."""
    return {
        name: svc
        for name, svc in services.items()
        if svc.get("build", {}).get("dockerfile") == "services/Dockerfile"
    }


def gateway_service(services: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    [(name, svc)] = [(n, s) for n, s in services.items() if command(s)[:1] == ["sse-gateway"]]
    return name, svc


def test_every_setting_passed_exists_and_is_valid(services: dict[str, dict[str, Any]]) -> None:
    assert set(project_services(services)) == {"publisher", "demo-engine", "gateway"}
    for name, svc in project_services(services).items():
        cmd = command(svc)
        env = environment(svc)
        settings_cls = SETTINGS_BY_COMMAND.get(cmd[0])
        if settings_cls is None:
            assert set(env) <= DEMO_ENGINE_ENV, (
                f"{name}: unknown settings {set(env) - DEMO_ENGINE_ENV}"
            )
            continue
        unknown = set(env) - set(settings_cls.env_names()) - SERVER_ENV.get(cmd[0], set())
        assert not unknown, f"{name}: {sorted(unknown)} are not settings of {cmd[0]}"
        load_settings(settings_cls, env)  # the values themselves pass the process's own checks


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def test_the_gateway_drains_before_compose_kills_it(services: dict[str, dict[str, Any]]) -> None:
    _, gateway = gateway_service(services)
    settings = load_settings(GatewaySettings, environment(gateway))
    assert settings.shutdown_grace < _seconds(gateway["stop_grace_period"])


def test_the_demo_engine_runs_only_in_the_demo_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["demo-engine"]["profiles"] == ["demo"]
    assert all("profiles" not in svc for name, svc in services.items() if name != "demo-engine")


def test_nginx_keeps_quiet_streams_and_never_compresses_them() -> None:
    template = TEMPLATE.read_text()
    stream = re.search(r"location /api/sse \{(.*?)\n        \}", template, re.S)
    assert stream is not None
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", stream.group(1))
    assert read_timeout is not None
    # A stream is cut only when it has been silent for several pings.
    assert int(read_timeout.group(1)) >= 4 * GatewaySettings().ping_interval
    assert re.search(r"^\s*gzip off;", template, re.M)
    # A draining gateway answers 503: the request moves on to another.
    assert re.search(r"proxy_next_upstream [^;]*\bhttp_503\b", template)


def with_defaults(value: str) -> str:
    """``value`` with each ``${NAME:-default}`` replaced by its default, as compose would."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_no_client_written_forwarded_address_survives_nginx_or_the_gateway(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    template = TEMPLATE.read_text()
    # nginx sets X-Forwarded-For to the address it saw, never appending to the client's.
    assert "$proxy_add_x_forwarded_for" not in template
    forwarded = re.findall(r"proxy_set_header X-Forwarded-For (\S+);", template)
    assert forwarded == ["$remote_addr"], forwarded
    # Set once, at server level: a location with a proxy_set_header of its own would
    # drop every one set above it.
    directives = re.findall(r"^( *)proxy_set_header ", template, re.M)
    assert directives and set(directives) == {" " * 8}, directives
    # The gateways believe X-Forwarded-For only from nginx's own fixed address.
    _, gateway = gateway_service(services)
    trusted = environment(gateway)["FORWARDED_ALLOW_IPS"]
    assert "*" not in trusted
    [nginx_network] = services["nginx"]["networks"].values()
    nginx_address = with_defaults(nginx_network["ipv4_address"])
    assert with_defaults(trusted) == nginx_address
    [pool] = compose["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.ip_network(with_defaults(pool["subnet"]))
    dynamic = ipaddress.ip_network(with_defaults(pool["ip_range"]))
    # In the network, and never handed to a container started before nginx.
    assert ipaddress.ip_address(nginx_address) in subnet
    assert ipaddress.ip_address(nginx_address) not in dynamic
    assert dynamic.subnet_of(subnet)  # type: ignore[arg-type]
