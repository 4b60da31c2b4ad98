"""docker-compose.yml checked against the code it deploys: commands, settings, health paths, nginx.

There is no Docker engine where the tests run, so the file is read as data and
every name in it is checked against its source of truth: the console scripts
in pyproject.toml, the settings classes, the gateway's routes, the nginx
template. ``docker compose config`` validates it too where that is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from connectome_sse import cli as connectome_cli
from connectome_sse.settings import ProcessSettings, load_settings
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings
from tests.support.nginx import TEMPLATE, TEMPLATE_PREFIX, render, template_variables

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

# Which settings class reads the environment of each process the compose file runs.
SETTINGS_BY_COMMAND: dict[str, type[ProcessSettings]] = {
    "sse-gateway": GatewaySettings,
    "health-publisher": PublisherSettings,
}
# `connectome-sse demo-engine` reads only where its Redis is.
DEMO_ENGINE_ENV = {"REDIS_URL"}
# Read by uvicorn itself, under the gateway (which proxy may set X-Forwarded-For).
SERVER_ENV = {"sse-gateway": {"FORWARDED_ALLOW_IPS"}}

# Paths the gateway serves that a health check may ask.
HEALTH_PATHS = {"/healthz", "/readyz"}


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
    """The services that run the project's own image."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def gateway_service(services: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    [(name, svc)] = [(n, s) for n, s in services.items() if command(s)[:1] == ["sse-gateway"]]
    return name, svc


def upstream_servers(lb_gateways: str) -> list[list[str]]:
    """``server`` directives of the LB_GATEWAYS value, as their words."""
    directives = [part.split() for part in lb_gateways.split(";") if part.strip()]
    return [words[1:] for words in directives if words[0] == "server"]


def test_the_topology_of_the_issue(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "publisher", "demo-engine", "gateway", "nginx"} <= set(services)
    assert services["publisher"]["deploy"]["replicas"] == 2  # leader and standby
    assert services["gateway"]["deploy"]["replicas"] == 3
    assert services["demo-engine"]["profiles"] == ["demo"]
    assert "profiles" not in services["gateway"]
    assert "8080:8080" in services["nginx"]["ports"]


def test_project_services_run_one_image_built_from_services(
    services: dict[str, dict[str, Any]],
) -> None:
    ours = project_services(services)
    assert set(ours) == {"publisher", "demo-engine", "gateway"}
    for name, svc in ours.items():
        assert svc["build"]["dockerfile"] == "services/Dockerfile", name
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    assert len({svc["image"] for svc in ours.values()}) == 1


def test_every_command_is_a_console_script_of_the_project(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in project_services(services).items():
        cmd = command(svc)
        assert cmd and cmd[0] in SCRIPTS, f"{name}: {cmd} is not one of {sorted(SCRIPTS)}"
        if cmd[0] == "connectome-sse":
            assert cmd[1] in connectome_cli.COMMANDS, f"{name}: no subcommand {cmd[1]!r}"
    assert command(services["demo-engine"]) == ["connectome-sse", "demo-engine"]
    assert command(services["publisher"]) == ["health-publisher"]


def test_every_setting_passed_exists_and_is_valid(services: dict[str, dict[str, Any]]) -> None:
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


def test_processes_reach_redis_by_its_service_name(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in project_services(services).items():
        url = urlsplit(environment(svc)["REDIS_URL"])
        assert url.hostname in services, f"{name}: Redis host {url.hostname!r} is no service"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_gateways_listen_on_all_interfaces_without_host_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    _, gateway = gateway_service(services)
    settings = load_settings(GatewaySettings, environment(gateway))
    assert settings.host == "0.0.0.0"
    # Replicas cannot share a host port; clients come through nginx.
    assert "ports" not in gateway
    assert str(settings.port) in [str(port) for port in gateway.get("expose", [])]
    assert settings.shutdown_grace < _seconds(gateway["stop_grace_period"])


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def _health_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    [url] = re.findall(r"http://[^\s'\"]+", text)
    return str(url)


def test_gateway_health_check_asks_readyz_on_its_own_port(
    services: dict[str, dict[str, Any]],
) -> None:
    _, gateway = gateway_service(services)
    url = urlsplit(_health_url(gateway))
    assert url.path == "/readyz"
    assert url.port == load_settings(GatewaySettings, environment(gateway)).port
    # Slim images have no curl: the check is the image's own Python.
    assert gateway["healthcheck"]["test"][:2] == ["CMD", "python"]


async def _status_of(path: str) -> int:
    """The status the gateway's app answers ``GET path`` with (not started: Redis is not needed)."""
    from sse_gateway.app import create_app

    app = create_app(GatewaySettings())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return int(sent[0]["status"])


async def test_health_paths_are_paths_the_gateway_serves(
    services: dict[str, dict[str, Any]],
) -> None:
    assert await _status_of("/no-such-path") == 404
    assert await _status_of("/healthz") == 200
    assert await _status_of("/readyz") == 503  # not ready: its Redis subscription is not live
    for name in ("gateway", "nginx"):
        assert urlsplit(_health_url(services[name])).path in HEALTH_PATHS, name


def test_start_order_follows_health(services: dict[str, dict[str, Any]]) -> None:
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    gateway_name, _ = gateway_service(services)
    assert services["nginx"]["depends_on"][gateway_name]["condition"] == "service_healthy"
    # Processes without an HTTP endpoint turn off the image's gateway health check.
    for name in ("publisher", "demo-engine"):
        assert services[name]["healthcheck"] == {"disable": True}


def test_redis_keeps_nothing_on_disk_and_bounds_its_memory(
    services: dict[str, dict[str, Any]],
) -> None:
    args = command(services["redis"])
    assert args[0] == "redis-server"
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--save"] == ""
    assert options["--appendonly"] == "no"
    assert re.fullmatch(r"\d+(mb|gb)", options["--maxmemory"])
    assert options["--maxmemory-policy"] == "allkeys-lru"


def test_nginx_renders_the_project_template(services: dict[str, dict[str, Any]]) -> None:
    nginx = services["nginx"]
    env = environment(nginx)
    [mount] = [v for v in nginx["volumes"] if v.split(":")[1].startswith("/etc/nginx/templates/")]
    source, target = mount.split(":")[:2]
    assert (REPO / source).resolve() == TEMPLATE
    # The image renders templates/<name>.template into NGINX_ENVSUBST_OUTPUT_DIR/<name>.
    rendered_to = Path(env["NGINX_ENVSUBST_OUTPUT_DIR"]) / Path(target).name.removesuffix(
        ".template"
    )
    assert rendered_to == Path("/etc/nginx/nginx.conf")
    lb_vars = {name for name in env if name.startswith(TEMPLATE_PREFIX)}
    assert lb_vars == template_variables()
    assert all(re.search(env["NGINX_ENVSUBST_FILTER"], name) for name in lb_vars)
    rendered = render(env)
    assert "${" not in rendered
    assert f"listen {env['LB_LISTEN']};" in rendered
    assert f"{env['LB_LISTEN']}:{env['LB_LISTEN']}" in nginx["ports"]


def test_nginx_upstream_is_the_gateway_service(services: dict[str, dict[str, Any]]) -> None:
    gateway_name, gateway = gateway_service(services)
    port = load_settings(GatewaySettings, environment(gateway)).port
    env = environment(services["nginx"])
    servers = upstream_servers(env["LB_GATEWAYS"])
    assert servers == [[f"{gateway_name}:{port}", "resolve"]]
    # `resolve` needs a resolver (Docker's embedded DNS) and a shared zone.
    assert "resolver 127.0.0.11" in env["LB_GATEWAYS"]
    template = TEMPLATE.read_text()
    upstream = re.search(r"upstream (\w+) \{(.*?)\n    \}", template, re.S)
    assert upstream is not None
    assert re.search(r"^\s*zone \w+", upstream.group(2), re.M)
    # Every proxied location goes to that one upstream.
    assert set(re.findall(r"proxy_pass http://(\w+);", template)) == {upstream.group(1)}


def test_nginx_is_configured_for_sse(services: dict[str, dict[str, Any]]) -> None:
    template = TEMPLATE.read_text()
    stream = re.search(r"location /api/sse \{(.*?)\n        \}", template, re.S)
    assert stream is not None
    for directive in ("proxy_buffering off;", "proxy_cache off;"):
        assert directive in stream.group(1)
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", stream.group(1))
    assert read_timeout is not None
    assert int(read_timeout.group(1)) >= 4 * GatewaySettings().ping_interval
    assert "proxy_http_version 1.1;" in template
    assert 'proxy_set_header Connection "";' in template
    assert re.search(r"proxy_next_upstream error timeout http_502 http_503", template)
    assert re.search(r"^\s*gzip off;", template, re.M)


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("profile", [None, "demo"])
def test_docker_compose_accepts_the_file(profile: str | None) -> None:
    compose_cmd = _compose_command()
    # scripts/test installs Debian's docker-compose: a missing one is a failure, not a skip.
    assert compose_cmd is not None, "neither `docker compose` nor `docker-compose` is installed"
    profile_args = ["--profile", profile] if profile else []
    result = subprocess.run(
        [*compose_cmd, "-f", str(COMPOSE_FILE), *profile_args, "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    # docker-compose v1 lists profiled services even when their profile is off.
    assert {"redis", "publisher", "gateway", "nginx"} <= listed
    assert listed <= {"redis", "publisher", "gateway", "nginx", "demo-engine"}
    if profile == "demo":
        assert "demo-engine" in listed
