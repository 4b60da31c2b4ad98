"""`up`'s pure parts: its settings, the banner and the words for a child's death."""

from __future__ import annotations

import argparse
import signal

import pytest

from connectome_core.settings import SettingsError, settings_from_args
from connectome_sse.commands import up
from connectome_sse.stack.banner import StackView, render
from connectome_sse.stack.supervisor import death_report, describe_exit


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_win_over_environment() -> None:
    args = parse(["--port", "9001", "--workers", "2", "--no-demo"])
    settings = settings_from_args(up.UpSettings, args, {"SSE_PORT": "8100", "REDIS_URL": ""})
    assert (settings.port, settings.workers, settings.redis_url) == (9001, 2, None)
    assert args.no_demo and not args.embedded_redis


@pytest.mark.parametrize(
    ("env", "setting"),
    [({"SSE_PORT": "eighty"}, "SSE_PORT"), ({"REDIS_URL": "http://x"}, "REDIS_URL")],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        settings_from_args(up.UpSettings, parse([]), env)


def test_banner_shows_url_curl_and_redis_cli() -> None:
    text = render(
        StackView(
            base_url="http://127.0.0.1:8000",
            redis="redis-server 7.0.15 on 127.0.0.1:6380",
            redis_cli=["redis-cli", "-p", "6380"],
            processes=["sse-gateway (1 worker, pid 3)"],
            log_dir="/tmp/x",
        )
    )
    assert "http://127.0.0.1:8000/\n" in text
    assert "curl -N http://127.0.0.1:8000/api/sse" in text
    assert 'redis-cli -p 6380 publish sse:connectome_health \'{"status":' in text
    assert "Ctrl-C" in text


class FakeMember:
    name = "health-publisher"
    pid = 7

    def __init__(self, tail: list[str]) -> None:
        self._tail = tail

    def tail(self, lines: int = 20) -> list[str]:
        return self._tail[-lines:]


def test_death_report_names_child_status_and_log_tail() -> None:
    report = death_report(FakeMember(["boot", "Traceback", "ValueError: x"]), 1)  # type: ignore[arg-type]
    assert report.startswith("health-publisher exited with status 1; the end of its log:")
    assert report.endswith("    ValueError: x")
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
