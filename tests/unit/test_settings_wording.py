"""The one line a bad setting prints: plain words, the flag when a flag was used, finite numbers.

pydantic's ``Value error, `` prefix is dropped; a value given as ``--port`` is
named ``--port`` (with its environment name); ``nan`` and ``inf`` are refused
for every float setting (``nan`` compares false with every bound, so a range
alone lets it through or calls it out of range); a Redis that wants a password
says so instead of quoting the server's HELLO/NOAUTH text.
"""

from __future__ import annotations

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from connectome_core.redis_connect import describe_error
from connectome_core.redis_target import parse_redis_url
from connectome_core.settings import ProcessSettings, SettingsError, load_settings
from health_publisher.settings import PublisherSettings
from sse_gateway import cli as gateway_cli
from sse_gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_URL": "redis://h:1/x"}, "REDIS_URL"),
        ({"SSE_CORS_ORIGINS": "example.org"}, "SSE_CORS_ORIGINS"),
        ({"SSE_AUTH_SECRET": "short"}, "SSE_AUTH_SECRET"),
        ({"SSE_LATEST_ONLY": "a b"}, "SSE_LATEST_ONLY"),
        ({"SSE_LOG_LEVEL": "loud"}, "SSE_LOG_LEVEL"),
        ({"REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "REDIS_TLS_CA_FILE"),
    ],
)
def test_no_pydantic_prefix_in_the_line(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, env)
    message = str(caught.value)
    assert message.startswith(f"{named}: ") and "Value error" not in message, message


def test_a_flag_is_named_as_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert gateway_cli.main(["--port", "99999"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("sse-gateway: bad setting: --port (SSE_PORT): "), line
    with pytest.raises(SettingsError, match=r"^SSE_PORT: "):
        load_settings(GatewaySettings, {"SSE_PORT": "99999"})


def float_settings(cls: type[ProcessSettings]) -> list[str]:
    return [
        str(field.validation_alias)
        for field in cls.model_fields.values()
        if field.annotation is float
    ]


@pytest.mark.parametrize(
    ("cls", "env"),
    [(GatewaySettings, env) for env in float_settings(GatewaySettings)]
    + [(PublisherSettings, env) for env in float_settings(PublisherSettings)],
)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_nan_and_inf_are_refused_for_every_float(
    cls: type[ProcessSettings], env: str, value: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(cls, {env: value})
    message = str(caught.value)
    assert message.startswith(f"{env}: ")
    expected = "not a number" if value.lower() == "nan" else "finite"
    assert expected in message, message


def test_the_float_settings_are_found() -> None:
    assert "SSE_PING_INTERVAL" in float_settings(GatewaySettings)
    assert "HEALTH_WINDOW" in float_settings(PublisherSettings)


HELLO = (
    "HELLO must be called with the client already authenticated, otherwise the HELLO "
    "AUTH <user> <pass> option can be used to authenticate the client and select the "
    "RESP protocol version at the same time"
)


@pytest.mark.parametrize("text", [HELLO, "Authentication required."])
def test_a_redis_that_needs_a_password_says_so(text: str) -> None:
    target = parse_redis_url("redis://h:1/0")
    line = describe_error(AuthenticationError(text), target)
    assert "Redis needs a password (set it in REDIS_URL or REDIS_PASSWORD_FILE)" in line
    assert "HELLO" not in line
    wrapped = RedisConnectionError(text)
    wrapped.__cause__ = AuthenticationError(text)
    assert "needs a password" in describe_error(wrapped, target)


def test_a_password_redis_does_not_want_says_so() -> None:
    target = parse_redis_url("redis://:pw@h:1/0")
    text = (
        "AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?"
    )
    line = describe_error(AuthenticationError(text), target)
    assert "has no password" in line and "pw" not in line.replace("password", "")
