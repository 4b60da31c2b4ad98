"""Secrets come from the environment or a file, never from a command-line flag.

A command line is readable by every user of the host (``ps``, ``/proc/*/cmdline``),
so ``--auth-secret``, ``--redis-sentinel-password`` and a ``--redis-url`` holding a
password are refused in one line (exit 2). ``SSE_AUTH_SECRET_FILE`` and
``REDIS_PASSWORD_FILE`` name files holding them (one trailing newline dropped);
both a secret and its file set, or a file that cannot be read, is one line naming
the setting and nothing of the content.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from connectome_core.settings import (
    RedisSettings,
    SettingsError,
    load_settings,
    to_environ,
)
from connectome_core.tokens import TokenVerifier
from connectome_sse.chaos.topology import Settings
from connectome_sse.commands import demo_engine, publish, token, up
from health_publisher import cli as publisher_cli
from health_publisher.settings import PublisherSettings
from sse_gateway import cli as gateway_cli
from sse_gateway.settings import GatewaySettings

SECRET = "s" * 20 + "-0123456789-abcdef"  # 38 bytes
REDIS_PW = "Zq7/Vx9?Wk#Jy@Qp+w0"


def secret_file(tmp_path: Path, text: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- SSE_AUTH_SECRET_FILE ------------------------------------------------------------------


def test_auth_secret_from_a_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET + "\n")
    settings = load_settings(GatewaySettings, {"SSE_AUTH_SECRET_FILE": path})
    assert settings.auth_secret == SECRET
    kept = load_settings(
        GatewaySettings, {"SSE_AUTH_SECRET_FILE": secret_file(tmp_path, SECRET + "\n\n", "two")}
    )
    assert kept.auth_secret == SECRET + "\n"
    assert SECRET not in repr(settings)


def test_auth_secret_and_its_file_both_set_is_one_line(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, {"SSE_AUTH_SECRET": SECRET, "SSE_AUTH_SECRET_FILE": path})
    message = str(caught.value)
    assert "SSE_AUTH_SECRET" in message and "SSE_AUTH_SECRET_FILE" in message
    assert "\n" not in message and SECRET[:8] not in message


@pytest.mark.parametrize("content", [None, "", "\n"], ids=["missing", "empty", "newline"])
def test_an_unusable_auth_secret_file_names_the_setting(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, {"SSE_AUTH_SECRET_FILE": str(path)})
    assert str(caught.value).startswith("SSE_AUTH_SECRET_FILE: ")
    assert "\n" not in str(caught.value)


def test_a_short_secret_in_a_file_names_the_file_setting_not_the_content(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "short-Zq7Vx9")
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, {"SSE_AUTH_SECRET_FILE": path})
    assert str(caught.value).startswith("SSE_AUTH_SECRET_FILE: ")
    assert "at least 32 bytes" in str(caught.value) and "Zq7Vx9" not in str(caught.value)


def test_workers_reload_the_secret_from_the_file_not_from_the_environment(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        GatewaySettings, {"SSE_AUTH_SECRET_FILE": secret_file(tmp_path, SECRET)}
    )
    environ = to_environ(settings)
    assert "SSE_AUTH_SECRET" not in environ
    assert load_settings(GatewaySettings, environ) == settings


# -- REDIS_PASSWORD_FILE ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://h:1/0", "redis://app@h:1/0", "redis://app:other@h:1/0"])
def test_redis_password_file_fills_or_replaces_the_urls_password(tmp_path: Path, url: str) -> None:
    path = secret_file(tmp_path, REDIS_PW + "\n")
    settings = load_settings(RedisSettings, {"REDIS_URL": url, "REDIS_PASSWORD_FILE": path})
    target = settings.redis_target()
    assert target.password is not None and target.password.get_secret_value() == REDIS_PW
    assert REDIS_PW not in repr(settings) and REDIS_PW not in target.display()
    assert ":***@" in target.display()
    environ = to_environ(settings)
    assert REDIS_PW not in "".join(environ.values())
    assert load_settings(RedisSettings, environ).redis_target() == target


def test_redis_password_file_serves_sentinel_urls_too(tmp_path: Path) -> None:
    path = secret_file(tmp_path, REDIS_PW)
    settings = load_settings(
        PublisherSettings,
        {"REDIS_URL": "redis+sentinel://a:1,b:2/m", "REDIS_PASSWORD_FILE": path},
    )
    password = settings.redis_target().password
    assert password is not None and password.get_secret_value() == REDIS_PW


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_an_unusable_redis_password_file_names_the_setting(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings(RedisSettings, {"REDIS_PASSWORD_FILE": str(path)})
    assert str(caught.value).startswith("REDIS_PASSWORD_FILE: ")


# -- flags ----------------------------------------------------------------------------------


class Started(Exception):
    """A command went past its settings: it accepted what it should have refused."""


@pytest.fixture(autouse=True)
def never_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise Started

    monkeypatch.setattr(gateway_cli, "serve", started)
    monkeypatch.setattr(publisher_cli, "startup_problem", started)
    monkeypatch.setattr(publish, "_publish", started)
    monkeypatch.setattr(up, "_run", started)
    monkeypatch.setattr(demo_engine, "_main", started)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "flag", "instead"),
    [
        (["--auth-secret", SECRET], "--auth-secret", "SSE_AUTH_SECRET_FILE"),
        ([f"--auth-secret={SECRET}"], "--auth-secret", "SSE_AUTH_SECRET_FILE"),
        (["--redis-sentinel-password", SECRET], "--redis-sentinel-password", "REDIS_SENTINEL_"),
        (["--redis-url", f"redis://u:{REDIS_PW}@h:1/0"], "--redis-url", "REDIS_PASSWORD_FILE"),
        (["--redis-url", f"unix:///s.sock?password={SECRET}"], "--redis-url", "REDIS_URL"),
    ],
)
def test_the_gateway_refuses_secrets_as_flags(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, instead: str
) -> None:
    assert gateway_cli.main(argv) == 2
    line = one_line_error(capsys)
    assert flag in line and instead in line
    assert SECRET[:8] not in line and "Vx9" not in line


def test_the_publisher_refuses_secrets_as_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert publisher_cli.main(["--redis-url", f"redis://:{REDIS_PW}@h:1/0"]) == 2
    line = one_line_error(capsys)
    assert "--redis-url" in line and "Vx9" not in line
    assert publisher_cli.main(["--redis-sentinel-password", SECRET]) == 2
    assert "--redis-sentinel-password" in one_line_error(capsys)


def parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (publish, ["e", "d", "--redis-url", f"redis://u:{REDIS_PW}@h:1/0"]),
        (publish, ["e", "d", "--redis-sentinel-password", SECRET]),
        (up, ["--redis-url", f"redis://u:{REDIS_PW}@h:1/0"]),
        (up, ["--redis-sentinel-password", SECRET]),
        (demo_engine, ["--redis-url", f"redis://u:{REDIS_PW}@h:1/0"]),
    ],
    ids=["publish-url", "publish-sentinel", "up-url", "up-sentinel", "demo-engine-url"],
)
def test_cli_commands_refuse_secrets_as_flags(
    capsys: pytest.CaptureFixture[str], module: object, argv: list[str]
) -> None:
    assert module.run(parse(module, argv)) == 2  # type: ignore[attr-defined]
    line = one_line_error(capsys)
    assert "--redis-" in line and "Vx9" not in line and SECRET[:8] not in line


def test_a_redis_url_flag_without_a_password_is_still_fine() -> None:
    args = argparse.Namespace(redis_url="redis://app@h:1/0")
    settings = load_settings(RedisSettings, {}, {"redis_url": args.redis_url})
    assert settings.redis_target().username == "app"


def test_the_help_offers_no_secret_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gateway_cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--auth-secret " not in out and "--redis-sentinel-password" not in out
    assert "--auth-secret-file" in out and "--redis-password-file" in out


# -- the token command --------------------------------------------------------------------


def test_token_reads_the_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SSE_AUTH_SECRET", raising=False)
    monkeypatch.setenv("SSE_AUTH_SECRET_FILE", secret_file(tmp_path, SECRET + "\n"))
    assert token.run(parse(token, [])) == 0
    minted = capsys.readouterr().out.strip()
    assert TokenVerifier(SECRET.encode()).verify(minted) is not None
    monkeypatch.setenv("SSE_AUTH_SECRET", SECRET)
    assert token.run(parse(token, [])) == 2
    assert "SSE_AUTH_SECRET_FILE" in one_line_error(capsys)


def test_chaos_ignores_a_password_file_meant_for_another_redis(tmp_path: Path) -> None:
    # chaos runs its own Redis, without a password; a user's file (even a missing one)
    # must neither stop it nor reach its processes.
    settings = Settings.from_environ({"REDIS_PASSWORD_FILE": str(tmp_path / "nope")})
    assert settings.gateway.redis_target().password is None
