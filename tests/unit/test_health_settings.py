"""health-publisher settings: names and defaults, one-line errors, flags mirroring them."""

from __future__ import annotations

import pytest

from connectome_core.settings import SettingsError, load_settings
from health_publisher import cli
from health_publisher.settings import PublisherSettings


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings(PublisherSettings, {})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.health_interval, s.health_max_rate) == (1.0, 2.0)
    assert (s.health_window, s.health_stale_after) == (300.0, 10.0)
    assert s.publisher_lease_ms == 3000
    assert s.consumer_name  # hostname-pid when PUBLISHER_CONSUMER is empty


def test_environment_and_flags() -> None:
    env = {"HEALTH_INTERVAL": "0.1", "HEALTH_MAX_RATE": "5", "PUBLISHER_CONSUMER": "p1"}
    s = load_settings(PublisherSettings, env, {"health_window": "20"})
    assert (s.health_interval, s.health_max_rate, s.health_window) == (0.1, 5.0, 20.0)
    assert s.consumer_name == "p1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HEALTH_INTERVAL": "0"}, "HEALTH_INTERVAL"),
        ({"HEALTH_MAX_RATE": "fast"}, "HEALTH_MAX_RATE"),
        ({"HEALTH_WINDOW": "-1"}, "HEALTH_WINDOW"),
        ({"HEALTH_STALE_AFTER": "0"}, "HEALTH_STALE_AFTER"),
        ({"PUBLISHER_LEASE_MS": "10"}, "PUBLISHER_LEASE_MS"),
        ({"REDIS_URL": "http://example"}, "REDIS_URL"),
        ({"HEALTH_INTERVALL": "1"}, "HEALTH_INTERVALL"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(PublisherSettings, env)
    assert str(caught.value).startswith(named)
    assert "\n" not in str(caught.value)


def test_password_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(PublisherSettings, {"REDIS_URL": "http://u:hunter2@host/0"})
    assert "hunter2" not in str(caught.value)


def test_cli_exits_2_on_a_bad_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTH_MAX_RATE", "0")
    assert cli.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HEALTH_MAX_RATE" in err[0]


def test_cli_flags_mirror_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for flag in (
        "--redis-url",
        "--health-interval",
        "--health-max-rate",
        "--health-window",
        "--health-stale-after",
        "--publisher-lease-ms",
        "--publisher-consumer",
    ):
        assert flag in out
