"""The Docker engine and the compose file's images, made once per test session.

``scripts/docker-engine`` provisions the engine and the base image; the images
are built with ``docker build`` (BuildKit), layers cached. ``prepare_in_background``
overlaps all of it with the rest of the suite; ``prepared`` hands over the result.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENGINE_SCRIPT = REPO / "scripts" / "docker-engine"
# Debian's docker.io CLI: BuildKit built in, where a newer CLI needs the buildx plugin.
DEBIAN_DOCKER_CLI = "/usr/bin/docker"


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
