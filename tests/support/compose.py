"""The compose deployment for real: an engine, the images, one compose project per test run.

Everything goes through the ordinary command-line clients (scripts/docker-engine,
``docker build``, ``docker-compose``/``docker compose``, ``docker exec``), so a
failure shows the same message a user would see. Nothing is skipped: no engine,
no build or a broken compose file fails the test that needs it.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connectome_sse.localrun.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SENTINEL_COMPOSE_FILE = REPO / "docker-compose.sentinel.yml"  # on top of COMPOSE_FILE
ENGINE_SCRIPT = REPO / "scripts" / "docker-engine"
# Debian's docker.io CLI: BuildKit built in, where a newer CLI needs the buildx plugin.
DEBIAN_DOCKER_CLI = "/usr/bin/docker"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def run(
    command: Sequence[str],
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; fail with its output when it fails."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        input=stdin,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


_engine_lock = threading.Lock()
_engine_tag: str | None = None


def provision_engine() -> str:
    """scripts/docker-engine: packages, a running dockerd, the base image. Returns its tag.

    Once per test session, whoever asks first (the background preparation below or a
    test); a caller that comes while it runs waits for it: two apt-gets would fight.
    """
    global _engine_tag
    with _engine_lock:
        if _engine_tag is None:
            _engine_tag = run([str(ENGINE_SCRIPT)], timeout=600).stdout.strip().splitlines()[-1]
        return _engine_tag


@dataclass
class Prepared:
    """What ``prepare`` made: the base image's tag, and how long each step took."""

    base_image: str
    engine_s: float
    built: dict[str, float] = field(default_factory=dict)


_prepared: Future[Prepared] | None = None


# Test processes (pytest-xdist workers) prepare one at a time: the first does the work,
# the next finds it done (every step is idempotent and cached) in a second or two.
PREPARE_LOCK = Path("/tmp/connectome-sse-compose-prepare.lock")


def prepare() -> Prepared:
    """Provision the engine and build the images; timed."""
    with PREPARE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        base_image = provision_engine()
        prepared = Prepared(base_image, time.monotonic() - started)
        prepared.built = build_images(base_image)
        return prepared


def prepare_in_background() -> None:
    """Start ``prepare`` in a thread, so the engine's packages, its base image and the
    builds (minutes on a new machine, mostly waiting on downloads) overlap with the
    rest of the suite. The deployment's fixture then takes the result
    (``prepared``). Only once per session."""
    global _prepared
    if _prepared is not None:
        return
    future: Future[Prepared] = Future()
    _prepared = future

    def work() -> None:
        try:
            future.set_result(prepare())
        except BaseException as exc:  # handed to the fixture, which fails with it
            future.set_exception(exc)

    threading.Thread(target=work, name="compose-prepare", daemon=True).start()


def prepared() -> Prepared:
    """The background preparation's result (or a preparation now, if none was started);
    raises what it raised."""
    if _prepared is None:
        return prepare()
    return _prepared.result(timeout=1800)


def buildkit_command() -> tuple[list[str], dict[str, str]]:
    """A ``docker build`` that speaks BuildKit (for ``--secret``), and the env it needs."""
    docker = shutil.which("docker") or DEBIAN_DOCKER_CLI
    if subprocess.run([docker, "buildx", "version"], capture_output=True, check=False).returncode:
        docker = DEBIAN_DOCKER_CLI
    else:
        return [docker, "buildx", "build", "--load"], {}
    env = {"DOCKER_BUILDKIT": "1"}
    probe = subprocess.run(
        [docker, "build", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    if probe.returncode != 0 or "--secret" not in probe.stdout:
        raise AssertionError(
            "no docker CLI here builds with BuildKit: install the buildx plugin, "
            f"or Debian's docker.io ({DEBIAN_DOCKER_CLI})\n{probe.stderr[-2000:]}"
        )
    return [docker, "build"], env


@dataclass(frozen=True)
class ImageBuild:
    """One ``build:`` section of the compose file."""

    tag: str
    context: Path
    dockerfile: Path


def image_builds(compose_file: Path = COMPOSE_FILE) -> list[ImageBuild]:
    """The images the compose file builds, from the file itself (one per tag)."""
    data: dict[str, Any] = yaml.safe_load(compose_file.read_text())
    builds: dict[str, ImageBuild] = {}
    for service in data["services"].values():
        if "build" in service:
            context = (compose_file.parent / service["build"]["context"]).resolve()
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            builds[service["image"]] = ImageBuild(service["image"], context, dockerfile)
    return list(builds.values())


def build_images(base_image: str) -> dict[str, float]:
    """Build every image of the compose file on ``base_image``; seconds per image.

    Layers are cached by the engine, so an unchanged image builds in about a
    second. The proxy's CA bundle (``SSL_CERT_FILE``), when there is one, goes
    in as a build secret: mounted for the RUN that downloads, kept in no layer.
    """
    command, env = buildkit_command()
    secret: list[str] = []
    ca_bundle = os.environ.get("SSL_CERT_FILE", "")
    if ca_bundle and Path(ca_bundle).is_file():
        secret = ["--secret", f"id=ca_bundle,src={ca_bundle}"]
    took: dict[str, float] = {}
    for build in image_builds():
        started = time.monotonic()
        run(
            [
                *command, "--quiet", *secret,
                "--build-arg", f"BASE_IMAGE={base_image}",
                "--file", str(build.dockerfile),
                "--tag", build.tag,
                str(build.context),
            ],
            timeout=900,
            env=env,
        )  # fmt: skip
        took[build.tag] = time.monotonic() - started
    return took


def compose_command() -> list[str]:
    """Debian's docker-compose (v1) or the compose v2 plugin, whichever is installed."""
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    docker = shutil.which("docker")
    if (
        docker
        and not subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        return [docker, "compose"]
    raise AssertionError("neither docker-compose nor `docker compose` is installed")


# NETWORK_PREFIX of the test's projects: 10.183.N, N picked so that no network of
# the engine overlaps (another project of the file may run on the same engine).
TEST_NETWORKS = "10.183"
SUBNETS = "{{range .IPAM.Config}}{{.Subnet}} {{end}}"


def free_network_prefix() -> str:
    """A ``NETWORK_PREFIX`` whose /24 overlaps no network the engine has now."""
    ids = run(["docker", "network", "ls", "-q"]).stdout.split()
    # Not run(): a network removed since `ls` makes inspect fail for that one alone.
    listed = subprocess.run(
        ["docker", "network", "inspect", "--format", SUBNETS, *ids],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    used = [ipaddress.ip_network(subnet, strict=False) for subnet in listed]
    candidates = [f"{TEST_NETWORKS}.{n}" for n in range(256)]
    random.shuffle(candidates)
    for prefix in candidates:
        network = ipaddress.ip_network(f"{prefix}.0/24")
        if not any(network.overlaps(other) for other in used):
            return prefix
    raise AssertionError(f"every {TEST_NETWORKS}.N.0/24 is taken on this engine")


@dataclass
class Container:
    id: str
    name: str
    service: str
    started_at: str
    running: bool
    health: str
    ip: str


class ComposeProject:
    """One compose project of this test run, under a name of its own."""

    def __init__(
        self,
        env: Mapping[str, str],
        profiles: Sequence[str] = (),
        files: Sequence[Path] = (COMPOSE_FILE,),
    ) -> None:
        self.name = f"connectome-e2e-{uuid.uuid4().hex[:8]}"
        self.env = dict(env)
        if "NETWORK_PREFIX" not in self.env:
            self.env["NETWORK_PREFIX"] = free_network_prefix()
        self.profiles = list(profiles)
        self.files = list(files)
        self.command = compose_command()

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        profile_args = [arg for p in self.profiles for arg in ("--profile", p)]
        file_args = [arg for f in self.files for arg in ("-f", str(f))]
        return run(
            [*self.command, *file_args, "-p", self.name, *profile_args, *args],
            timeout=timeout,
            env=self.env,
        )

    def up(self, *args: str) -> None:
        self.compose("up", "-d", "--no-build", *args)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")

    def container_ids(self, service: str | None = None, all_states: bool = False) -> list[str]:
        filters = ["--filter", f"label={PROJECT_LABEL}={self.name}"]
        if service:
            filters += ["--filter", f"label={SERVICE_LABEL}={service}"]
        flags = ["-a"] if all_states else []
        return run(["docker", "ps", "-q", "--no-trunc", *flags, *filters]).stdout.split()

    def containers(self, service: str) -> list[Container]:
        ids = self.container_ids(service)
        if not ids:
            return []
        out = []
        for info in json.loads(run(["docker", "inspect", *ids]).stdout):
            state = info["State"]
            networks = info["NetworkSettings"]["Networks"].values()
            out.append(
                Container(
                    id=info["Id"],
                    name=info["Name"].lstrip("/"),
                    service=info["Config"]["Labels"][SERVICE_LABEL],
                    started_at=state["StartedAt"],
                    running=state["Running"],
                    health=state.get("Health", {}).get("Status", "none"),
                    ip=next((n["IPAddress"] for n in networks if n["IPAddress"]), ""),
                )
            )
        return out

    def wait_healthy(self, service: str, count: int, timeout: float = 120) -> list[Container]:
        def healthy() -> list[Container]:
            found = [c for c in self.containers(service) if c.running and c.health == "healthy"]
            return found if len(found) == count else []

        return wait_for(healthy, timeout=timeout, interval=0.5, what=f"{count} healthy {service}")

    def run_docker(self, *args: str) -> str:
        """``docker <args>``: for kill, inspect and the like on this project's containers."""
        return run(["docker", *args], timeout=60).stdout

    def exec(self, container: str, *command: str) -> str:
        return run(["docker", "exec", container, *command], timeout=60).stdout

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = ["--filter", f"label={PROJECT_LABEL}={self.name}"]
        return {
            "containers": run(["docker", "ps", "-aq", *label]).stdout.split(),
            "networks": run(["docker", "network", "ls", "-q", *label]).stdout.split(),
            "volumes": run(["docker", "volume", "ls", "-q", *label]).stdout.split(),
        }

    def logs(self, tail: int = 40) -> str:
        try:
            return self.compose("logs", "--no-color", f"--tail={tail}", timeout=60).stdout
        except AssertionError as exc:
            return str(exc)


class RedisCliPipe:
    """One ``docker exec -i <redis> redis-cli``, fed a command per line, one reply each.

    The compose Redis publishes no port: the test talks to it the way an
    operator would, through ``docker exec``, without a process per command.
    """

    # SET the snapshot and PUBLISH in one step, as connectome_core.publishing does.
    PUBLISH_SCRIPT = (
        "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('PUBLISH', KEYS[2], ARGV[1])"
    )

    def __init__(self, container: str) -> None:
        self.container = container
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> RedisCliPipe:
        self.process = await asyncio.create_subprocess_exec(
            "docker", "exec", "-i", self.container, "redis-cli",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self

    async def command(self, line: str) -> str:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        reply = await asyncio.wait_for(self.process.stdout.readline(), timeout=10)
        if not reply:
            raise AssertionError(f"redis-cli in {self.container} ended")
        return reply.decode().strip()

    async def publish_event(self, event: str, data: str) -> int:
        """Snapshot ``sse:last:<event>`` and channel ``sse:<event>``; the receiver count."""
        quoted = "'" + data.replace("\\", "\\\\").replace("'", "\\'") + "'"
        reply = await self.command(
            f'EVAL "{self.PUBLISH_SCRIPT}" 2 sse:last:{event} sse:{event} {quoted}'
        )
        return int(reply)

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
