"""Gateway settings: defaults, flags over environment, and one clear line per bad value."""

from __future__ import annotations

import pytest

from connectome_core.settings import SettingsError, load_settings
from sse_gateway.cli import main
from sse_gateway.settings import GatewaySettings


def test_defaults_match_the_contract() -> None:
    s = load_settings(GatewaySettings, {})
    assert (s.redis_url, s.host, s.port, s.workers) == (
        "redis://127.0.0.1:6379/0",
        "127.0.0.1",
        8000,
        1,
    )
    assert (s.ping_interval, s.retry_ms, s.max_event_bytes, s.shutdown_grace) == (
        15,
        3000,
        1048576,
        5,
    )
    assert s.cors_origins == []


def test_environment_and_flag_overrides() -> None:
    s = load_settings(
        GatewaySettings,
        {"SSE_PORT": "9001", "SSE_CORS_ORIGINS": "https://a.example, https://b.example"},
        {"port": "9002"},
    )
    assert s.port == 9002
    assert s.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SSE_PORT": "eighty"}, "SSE_PORT"),
        ({"SSE_PORT": "70000"}, "SSE_PORT"),
        ({"SSE_WORKERS": "0"}, "SSE_WORKERS"),
        ({"SSE_PING_INTERVAL": "-1"}, "SSE_PING_INTERVAL"),
        ({"SSE_CLIENT_BUFFER": "0"}, "SSE_CLIENT_BUFFER"),
        ({"SSE_CORS_ORIGINS": "example.org"}, "SSE_CORS_ORIGINS"),
        ({"REDIS_URL": "http://127.0.0.1"}, "REDIS_URL"),
        ({"SSE_PROT": "8000"}, "SSE_PROT"),
    ],
)
def test_bad_values_name_the_setting_in_one_line(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(GatewaySettings, env)
    message = str(err.value)
    assert message.startswith(named)
    assert "\n" not in message


def test_redis_password_never_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(GatewaySettings, {"REDIS_URL": "http://user:hunter2@host"})
    assert "hunter2" not in str(err.value)


def test_cli_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ping-interval", "soon"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "SSE_PING_INTERVAL" in err


def test_help_lists_flags_mirroring_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in (
        "--port",
        "--workers",
        "--ping-interval",
        "--retry-ms",
        "--max-connections",
        "--client-buffer",
        "--max-event-bytes",
        "--cors-origins",
        "--shutdown-grace",
        "--redis-url",
        "--host",
    ):
        assert flag in out


def test_connection_limits_default_and_follow_the_stream_cap() -> None:
    s = load_settings(GatewaySettings, {})
    assert (s.header_timeout, s.client_buffer_bytes) == (10.0, 1024 * 1024)
    assert s.connection_cap == s.max_connections + 1024
    s = load_settings(GatewaySettings, {"SSE_LIMIT_CONCURRENCY": "500", "SSE_MAX_CONNECTIONS": "9"})
    assert s.connection_cap == 500
    s = load_settings(
        GatewaySettings, {}, {"header_timeout": "2.5", "client_buffer_bytes": "65536"}
    )
    assert (s.header_timeout, s.client_buffer_bytes) == (2.5, 65536)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SSE_HEADER_TIMEOUT": "0"}, "SSE_HEADER_TIMEOUT"),
        ({"SSE_CLIENT_BUFFER_BYTES": "10"}, "SSE_CLIENT_BUFFER_BYTES"),
        ({"SSE_LIMIT_CONCURRENCY": "-1"}, "SSE_LIMIT_CONCURRENCY"),
    ],
)
def test_bad_connection_limits_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, env)
    assert named in str(caught.value)


@pytest.mark.parametrize("value", ["0", "1", "99"])
def test_a_history_below_100_is_refused(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, {"SSE_HISTORY": value})
    assert str(caught.value).startswith("SSE_HISTORY: ") and "100" in str(caught.value)


def test_a_history_of_100_is_the_least_accepted() -> None:
    assert load_settings(GatewaySettings, {"SSE_HISTORY": "100"}).history == 100


@pytest.mark.parametrize(
    "origin",
    [
        "https://a.example/",
        "https://a.example/app",
        "https://a.example?x=1",
        "https://a.example#top",
        "https://user:Zq7Vx9@a.example",
        "https://",
        "https://a.example:99999",
        "https://a.example:https",
        "https://A.Example",
        "https://a.example:443",
        "http://a.example:80",
        "a.example",
    ],
)
def test_an_origin_that_can_never_match_is_refused(origin: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, {"SSE_CORS_ORIGINS": f"https://ok.example, {origin}"})
    message = str(caught.value)
    assert message.startswith("SSE_CORS_ORIGINS: ") and "\n" not in message
    assert "Zq7Vx9" not in message


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("*", ["*"]),
        ("https://a.example", ["https://a.example"]),
        (
            "http://127.0.0.1:8080, https://[::1]:8443",
            ["http://127.0.0.1:8080", "https://[::1]:8443"],
        ),
        ("chrome-extension://abcdef", ["chrome-extension://abcdef"]),
    ],
)
def test_origins_as_browsers_send_them_are_kept(given: str, kept: list[str]) -> None:
    assert load_settings(GatewaySettings, {"SSE_CORS_ORIGINS": given}).cors_origins == kept
