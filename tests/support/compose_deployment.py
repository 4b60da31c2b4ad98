"""The compose file's demo deployment, up for a test module: its ports, timings and figures.

``deployed`` starts it under a project name of its own with nginx published on
free loopback ports, and on the way out takes it down, prints the figures the
tests measured (also when output is captured) and fails if anything is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from connectome_sse.localrun.metrics import open_streams
from connectome_sse.localrun.ports import free_port
from tests.support.compose import ComposeProject, Container
from tests.support.docker_engine import prepared

GATEWAYS = 3  # the compose file's replicas


@dataclass
class Deployment:
    project: ComposeProject
    port: int
    tls_port: int
    timings: dict[str, float] = field(default_factory=dict)
    # Figures measured by the tests, printed when the deployment goes down.
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def redis(self) -> Container:
        [redis] = self.project.containers("redis")
        return redis


@contextlib.contextmanager
def deployed(request: pytest.FixtureRequest, wait_s: float) -> Iterator[Deployment]:
    """``--profile demo up`` on the prepared images, healthy; down and checked after."""
    started = time.monotonic()
    ready = prepared()  # usually made in the background meanwhile (tests/conftest.py)
    built_at = time.monotonic()
    port, tls_port = free_port(), free_port()
    project = ComposeProject(
        {
            "BASE_IMAGE": ready.base_image,
            "NGINX_ADDRESS": "127.0.0.1",
            "NGINX_PORT": str(port),
            "NGINX_TLS_PORT": str(tls_port),
        },
        profiles=["demo"],
    )
    deployment = Deployment(project, port, tls_port)
    try:
        project.up()
        project.wait_healthy("gateway", GATEWAYS, timeout=wait_s)
        project.wait_healthy("nginx", 1, timeout=wait_s)
        deployment.timings = {
            "engine (in the background)": ready.engine_s,
            "build (in the background)": sum(ready.built.values()),
            "waited for engine and build": built_at - started,
            "up until healthy": time.monotonic() - built_at,
        }
        yield deployment
    finally:
        logs = project.logs()
        project.down()
        leftovers = project.leftovers()
        report(request, deployment, ready.built, time.monotonic() - started)
        if any(leftovers.values()):
            print(logs)
        assert leftovers == {"containers": [], "networks": [], "volumes": []}, leftovers


def report(
    request: pytest.FixtureRequest, deployment: Deployment, built: dict[str, float], total: float
) -> None:
    """The figures, on the terminal even when output is captured."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = [f"compose test: {total:.1f}s in all"]
    lines += [f"  {name}: {seconds:.1f}s" for name, seconds in deployment.timings.items()]
    lines += [f"  build {tag}: {seconds:.1f}s" for tag, seconds in built.items()]
    lines += [f"  {name}: {value}" for name, value in deployment.figures.items()]
    if capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


def gateway_streams(project: ComposeProject, gateway: Container) -> int:
    """``sse_open_streams`` of one gateway, asked inside its container (it publishes no port)."""
    metrics = project.exec(
        gateway.name,
        "python",
        "-c",
        "import urllib.request as u; "
        "print(u.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())",
    )
    return open_streams(metrics)


async def streams_by_gateway(deployment: Deployment) -> dict[str, int]:
    """Open streams of each running gateway container, by container id."""
    gateways = [g for g in deployment.project.containers("gateway") if g.running]
    counts = await asyncio.gather(
        *(asyncio.to_thread(gateway_streams, deployment.project, g) for g in gateways)
    )
    return {g.id: n for g, n in zip(gateways, counts, strict=True)}
