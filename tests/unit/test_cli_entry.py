"""The entry points: lazy subcommands, ``--version`` and the defaults ``--help`` shows."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from connectome_sse.cli import COMMANDS
from connectome_sse.localrun.processes import console_script

VERSION = importlib.metadata.version("connectome-sse")
SCRIPTS = ("sse-gateway", "health-publisher", "connectome-sse")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def imported_commands(argv: list[str]) -> tuple[str, list[str]]:
    """stdout of ``connectome-sse ARGV`` in a fresh interpreter, and the command modules loaded."""
    code = (
        "import sys\n"
        "from connectome_sse import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('connectome_sse.commands.')))\n"
    )
    done = run(sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    *out, modules = done.stdout.strip().splitlines()
    return "\n".join(out), eval(modules)


def test_help_lists_every_command_without_importing_one() -> None:
    out, modules = imported_commands(["--help"])
    for name in COMMANDS:
        assert name in out
    assert "print a stream token" in out
    assert modules == []


def test_a_command_imports_its_own_module_alone() -> None:
    out, modules = imported_commands(["schema", "--compact"])
    assert out.startswith("{")
    assert modules == ["connectome_sse.commands.schema"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_version(script: str) -> None:
    done = run(*console_script(script, "--version"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{script} {VERSION}"


@pytest.mark.parametrize("command", ["up", "token", "listen", "publish"])
def test_version_is_accepted_after_a_subcommand(command: str) -> None:
    done = run(*console_script("connectome-sse", command, "--version"))
    assert (done.returncode, done.stdout.strip()) == (0, f"connectome-sse {VERSION}"), done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["sse-gateway"],
        ["health-publisher"],
        *(["connectome-sse", name] for name in COMMANDS),
    ],
)
def test_help_shows_real_defaults(argv: list[str]) -> None:
    done = run(*console_script(*argv, "--help"))
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "PydanticUndefined" not in text
    assert "default None" not in text and "default: None" not in text
    assert "default ''" not in text and "default []" not in text


def test_gateway_help_shows_empty_and_list_defaults_plainly() -> None:
    text = " ".join(run(*console_script("sse-gateway", "--help")).stdout.split())
    assert "comma-separated allowed origins [env SSE_CORS_ORIGINS, default (empty)]" in text
    assert "[env SSE_PORT, default 8000]" in text
    assert "[env SSE_LATEST_ONLY, default connectome_health]" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["demo-engine", "--maxlen", "abc"],
        ["demo-engine", "--tick-rate", "abc"],
        ["demo-engine", "--violation-every", "nan"],
        ["token", "--ttl", "abc"],
        ["listen", "http://127.0.0.1:9", "--count", "abc"],
    ],
)
def test_a_flag_that_is_not_a_number_says_so(argv: list[str]) -> None:
    done = run(*console_script("connectome-sse", *argv))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert f"argument {argv[-2]}: " in last and "'" + argv[-1] + "'" in last, last
    assert " _" not in last and "invalid" not in last, last
