"""What a real build and run cannot show about services/Dockerfile and .dockerignore.

tests/e2e/test_compose.py builds the image and runs it (as a non-root user,
healthy, relaying); tests/e2e/test_nginx_topology.py runs its HEALTHCHECK
against a live gateway and a killed one. Left here: that the check is
readiness, and that nothing but the sources reaches the build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "services" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


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


def test_the_health_check_asks_readiness_not_liveness() -> None:
    # While Redis is up both answer 200, so the real run cannot tell them apart;
    # only /readyz turns 503 when the gateway's subscription is lost.
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
