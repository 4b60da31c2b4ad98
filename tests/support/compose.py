"""One compose project per test run, and a ``redis-cli`` inside its Redis container.

Everything goes through the ordinary command-line clients (``docker-compose``/
``docker compose``, ``docker exec``), so a failure shows the same message a user
would see. Nothing is skipped: no engine or a broken compose file fails the test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from connectome_sse.localrun.wait import wait_for
from tests.support.docker_engine import COMPOSE_FILE, REPO, run

SENTINEL_COMPOSE_FILE = REPO / "docker-compose.sentinel.yml"  # on top of COMPOSE_FILE
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


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
