"""`up`'s pure parts: its settings, the banner and the words for a child's death."""

from __future__ import annotations

import argparse
import dataclasses
import signal

import pytest

from connectome_core.settings import SettingsError
from connectome_sse.commands import up
from connectome_sse.stack.banner import StackView, render, shell_lines
from connectome_sse.stack.settings import UpSettings, load_stack_settings
from connectome_sse.stack.supervisor import death_report, describe_exit


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_win_over_environment() -> None:
    args = parse(["--port", "9001", "--workers", "2", "--no-demo", "--log-format", "json"])
    settings = load_stack_settings(args, {"SSE_PORT": "8100", "REDIS_URL": ""})
    assert (settings.gateway.port, settings.gateway.workers) == (9001, 2)
    assert settings.up.redis_url is None and settings.own_redis
    assert settings.child_environ["LOG_FORMAT"] == "json"
    assert settings.child_environ["REDIS_PASSWORD_FILE"] == ""
    assert "REDIS_URL" not in settings.child_environ
    assert args.no_demo and not args.embedded_redis


def test_the_gateway_flags_are_the_gateways_own() -> None:
    """No second copy of a default: up's --port is the gateway's SSE_PORT."""
    settings = load_stack_settings(parse([]), {})
    assert (settings.gateway.host, settings.gateway.port, settings.gateway.workers) == (
        "127.0.0.1",
        8000,
        1,
    )
    assert not {"host", "port", "workers"} & set(UpSettings.model_fields)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"SSE_PORT": "eighty"}, "SSE_PORT"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"SSE_PING_INTERVAL": "0"}, "SSE_PING_INTERVAL"),
        ({"PUBLISHER_LEASE_MS": "nan"}, "PUBLISHER_LEASE_MS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_values_of_any_child_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        load_stack_settings(parse([]), env)


VIEW = StackView(
    base_url="http://127.0.0.1:8000",
    redis="redis-server 7.0.15 on 127.0.0.1:6380, started by up",
    processes=["sse-gateway (1 worker, pid 3)"],
    log_dir="/tmp/x",
    exports={"REDIS_URL": "redis://127.0.0.1:6380/0"},
)


def test_banner_shows_url_curl_and_what_to_paste() -> None:
    text = render(VIEW)
    assert "http://127.0.0.1:8000/\n" in text
    assert "  stream     curl -N http://127.0.0.1:8000/api/sse\n" in text
    assert shell_lines(VIEW) == [
        "export REDIS_URL=redis://127.0.0.1:6380/0",
        "connectome-sse publish note 'hello from the first hour'",
    ]
    assert "    export REDIS_URL=redis://127.0.0.1:6380/0\n" in text
    assert "Ctrl-C" in text


def test_banner_with_the_users_redis_and_auth() -> None:
    view = dataclasses.replace(VIEW, exports=None, auth="SSE_AUTH_SECRET_FILE", tool="/v/bin/cs")
    text = render(view)
    assert shell_lines(view) == ["/v/bin/cs publish note 'hello from the first hour'"]
    assert (
        'curl -N -H "Authorization: Bearer $(/v/bin/cs token --sub me)" '
        "http://127.0.0.1:8000/api/sse" in text
    )
    assert "needs SSE_AUTH_SECRET_FILE in that shell" in text
    assert "export" not in text.split("Try it")[1]


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
