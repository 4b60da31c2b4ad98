"""`python3 -m bench --through-log`: parsed, handed to each system's start, and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import cli
from bench.publisher import LoggedPublisher, RedisPublisher
from bench.scenarios import SCENARIOS
from bench.systems import publish_path, redis_publisher


def test_the_flag_is_off_by_default() -> None:
    assert cli.build_parser().parse_args([]).through_log is False
    assert cli.build_parser().parse_args(["--through-log"]).through_log is True


@pytest.mark.parametrize(
    ("system", "through_log", "path"),
    [
        ("gateway-2w", False, "raw"),
        ("gateway-2w", True, "log"),
        ("gateway-2w-before", True, "log"),
        ("naive-2w", True, "log"),
        ("nchan", True, "http"),  # Nchan has no Redis: its publisher is HTTP either way
        ("nchan-4w", False, "http"),
    ],
)
def test_each_system_is_fed_by_its_path(system: str, through_log: bool, path: str) -> None:
    assert publish_path(system, through_log) == path


async def test_the_redis_fed_systems_get_the_logged_publisher_with_the_flag() -> None:
    # Made, not used: no connection is opened until an event is sent.
    logged = redis_publisher("redis://127.0.0.1:1/0", through_log=True)()
    plain = redis_publisher("redis://127.0.0.1:1/0", through_log=False)()
    try:
        assert isinstance(logged, LoggedPublisher) and isinstance(plain, RedisPublisher)
    finally:
        await logged.aclose()
        await plain.aclose()


@pytest.mark.parametrize(("argv", "want"), [([], False), (["--through-log"], True)])
def test_the_flag_reaches_every_run_and_its_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], want: bool
) -> None:
    out = tmp_path / "results.jsonl"
    args = cli.build_parser().parse_args([*argv, "--out", str(out)])
    seen: list[tuple[str, bool]] = []

    def run_one(scen: Any, system_name: str, *rest: Any) -> dict[str, Any]:
        seen.append((system_name, rest[-1]))  # the last argument: through_log
        return {"scenario": scen.name, "system": system_name, "error": "not run"}

    monkeypatch.setattr(cli, "run_one", run_one)
    run = cli.BenchRun(args, None)
    for system in ("gateway-2w", "nchan"):
        run.one(SCENARIOS["b"], system, 0, redis_server=None, opts=None)  # type: ignore[arg-type]
    assert seen == [("gateway-2w", want), ("nchan", want)]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["publish"] for r in written] == ["log" if want else "raw", "http"]
