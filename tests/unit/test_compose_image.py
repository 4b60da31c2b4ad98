"""services/Dockerfile and .dockerignore checked against the project they package.

No Docker engine runs here, so the image is checked by construction: the
sources it copies are the packages pyproject.toml builds, it installs the
project and runs as a non-root user, its default command is a console script,
its settings are real ones. (The e2e layer runs its HEALTHCHECK command
against a live gateway and a killed one.)
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from connectome_sse.settings import load_settings
from sse_gateway.settings import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "services" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per line of the Dockerfile, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def build_args() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in rest.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_base_is_a_slim_python_the_project_supports() -> None:
    [(_, base)] = [step for step in final_stage() if step[0] == "FROM"]
    image = build_args().get(base.strip("${}"), base)
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
    assert match, image
    required = re.match(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert required is not None
    assert (int(match[1]), int(match[2])) >= (int(required[1]), int(required[2]))


def test_it_copies_what_pip_needs_to_build_the_project() -> None:
    copied = {
        PurePosixPath(source).name
        for keyword, rest in instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages | {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    install = " ".join(rest for keyword, rest in final_stage() if keyword == "RUN")
    assert re.search(rf"pip install .*\b{PYPROJECT['project']['name']}\b", install)


def test_it_runs_as_a_non_root_user() -> None:
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert re.search(rf"useradd .*\b{user}\b", " ".join(r for k, r in final_stage() if k == "RUN"))


def test_the_default_command_is_the_gateway_with_valid_settings() -> None:
    [cmd] = [json.loads(rest) for keyword, rest in final_stage() if keyword == "CMD"]
    assert cmd[0] in PYPROJECT["project"]["scripts"]
    assert cmd == ["sse-gateway"]
    env = {k: v for k, v in env_of(final_stage()).items() if k.startswith("SSE_")}
    settings = load_settings(GatewaySettings, env)
    assert settings.host == "0.0.0.0"
    exposed = [rest for keyword, rest in final_stage() if keyword == "EXPOSE"]
    assert exposed == [str(settings.port)]


def test_the_health_check_asks_readyz_with_python_not_curl() -> None:
    [check] = [rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"]
    assert "/readyz" in command[2] and "SSE_PORT" in command[2]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our file: the last matching pattern wins, ``!`` re-includes."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").rstrip("/")
        candidates = (
            [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        )
        names = prefixes + ([parts[-1]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(name, c) for name in names for c in candidates):
            verdict = not negate
    return verdict


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_build_context_holds_the_sources_and_nothing_else(ignore_patterns: list[str]) -> None:
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert not ignored(source, ignore_patterns), source
                assert (REPO / source).exists(), source
    assert not ignored("sse_gateway/static/dashboard.html", ignore_patterns)
    for path in (".git/config", "tests/conftest.py", "bench/run/x", ".venv/bin/python",
                 "sse_gateway/__pycache__/app.cpython-311.pyc", "docker-compose.yml"):  # fmt: skip
        assert ignored(path, ignore_patterns), path
