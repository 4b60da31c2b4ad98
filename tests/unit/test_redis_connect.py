"""Clients for every target kind (no network needed to build them) and the one-line errors."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import MasterNotFoundError

from connectome_core.redis_connect import (
    RedisUnavailable,
    SentinelAsyncRedis,
    SentinelSyncRedis,
    async_client,
    describe_error,
    is_configuration_error,
    server_version,
    sync_client,
    tls_options,
    too_old,
)
from connectome_core.redis_target import parse_redis_url

TLS = {"tls_ca_file": "/ca.pem", "tls_cert_file": "/c.pem", "tls_key_file": "/k.pem"}


def test_tls_always_verifies_certificate_and_host_name() -> None:
    options = tls_options(parse_redis_url("rediss://h:1", **TLS))
    assert options == {
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }
    assert tls_options(parse_redis_url("redis://h:1", **TLS)) == {}


async def test_async_client_per_kind() -> None:
    tcp = async_client(parse_redis_url("rediss://u:pw@h:7/2", **TLS), socket_timeout=None)
    kwargs = tcp.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 7, 2)
    assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == ("u", "pw", None)
    assert kwargs["ssl_ca_certs"] == "/ca.pem"
    unix = async_client(parse_redis_url("unix:///s.sock?db=3&password=pw"))
    assert unix.connection_pool.connection_kwargs["path"] == "/s.sock"
    sentinel = async_client(
        parse_redis_url("redis+sentinel://:pw@a:1,b:2/m/1", sentinel_password="spw"),
        client_name="x",
    )
    assert isinstance(sentinel, SentinelAsyncRedis) and sentinel.owned_sentinel is not None
    nodes = sentinel.owned_sentinel.sentinels
    assert [n.connection_pool.connection_kwargs["password"] for n in nodes] == ["spw", "spw"]
    assert sentinel.connection_pool.connection_kwargs["password"] == "pw"
    assert sentinel.connection_pool.connection_kwargs["client_name"] == "x"
    for client in (tcp, unix, sentinel):
        await client.aclose()
    assert sentinel.owned_sentinel is None


def test_sync_sentinel_client_closes_its_sentinels() -> None:
    client = sync_client(parse_redis_url("rediss+sentinel://a:1/m", **TLS))
    assert isinstance(client, SentinelSyncRedis) and client.owned_sentinel is not None
    assert client.owned_sentinel.sentinels[0].connection_pool.connection_kwargs["ssl_ca_certs"]
    client.close()
    assert client.owned_sentinel is None


async def test_no_connection_asks_for_maintenance_notifications() -> None:
    """Every pool, the sentinels' own included, has them off (the wire test is in integration)."""
    sentinel = async_client(parse_redis_url("redis+sentinel://a:1,b:2/m"))
    assert isinstance(sentinel, SentinelAsyncRedis) and sentinel.owned_sentinel is not None
    pools: list[Any] = [sentinel.connection_pool]
    pools += [node.connection_pool for node in sentinel.owned_sentinel.sentinels]
    pools.append(async_client(parse_redis_url("redis://h:1")).connection_pool)
    pools.append(sync_client(parse_redis_url("rediss://h:1", **TLS)).connection_pool)
    for pool in pools:
        assert not pool.maint_notifications_enabled()
    await sentinel.aclose()


TARGET = parse_redis_url("redis://app:hunter2@h:1/0", tls_ca_file=Path("/ca.pem"))


def cert_failure() -> RedisConnectionError:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
    cause.verify_message = "unable to get local issuer certificate"
    error = RedisConnectionError("Error 1 connecting to h:1. certificate verify failed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "starts"),
    [
        (cert_failure(), "REDIS_TLS_CA_FILE: the TLS certificate of redis://app:***@h:1/0"),
        (
            NoPermissionError("this user has no permissions to run the 'publish' command"),
            "REDIS_URL: the ACL user 'app' lacks a permission",
        ),
        (AuthenticationError("invalid username-password pair"), "REDIS_URL: redis://app:***@h"),
        (RedisConnectionError("Error 111 connecting"), "cannot reach Redis at redis://app:***@"),
        (ConnectionRefusedError(111, "refused"), "cannot reach Redis at"),
        (MasterNotFoundError("No master found for 'm' : <...>"), "REDIS_URL: the sentinels of"),
        (ResponseError("ERR odd\nsecond line"), "REDIS_URL: redis://app:***@h:1/0 answered"),
        (RedisUnavailable("REDIS_URL: precise"), "REDIS_URL: precise"),
    ],
)
def test_describe_error_is_one_password_free_line(exc: BaseException, starts: str) -> None:
    line = describe_error(exc, TARGET)
    assert line.startswith(starts), line
    assert "\n" not in line and "hunter2" not in line


def test_certificate_failure_names_the_ca_file_and_reason() -> None:
    line = describe_error(cert_failure(), TARGET)
    assert "/ca.pem" in line and "unable to get local issuer certificate" in line


def test_configuration_errors_are_the_ones_retrying_cannot_fix() -> None:
    assert is_configuration_error(cert_failure())
    assert is_configuration_error(NoPermissionError("no permissions"))
    assert is_configuration_error(AuthenticationError("WRONGPASS"))
    assert not is_configuration_error(RedisConnectionError("Error 111 connecting"))
    assert not is_configuration_error(MasterNotFoundError("No master found for 'm'"))
    assert not is_configuration_error(TimeoutError())


def test_a_refusal_wrapped_in_a_connection_error_is_still_a_refusal() -> None:
    wrapped = RedisConnectionError("invalid username-password pair")
    wrapped.__cause__ = AuthenticationError("invalid username-password pair")
    assert describe_error(wrapped, TARGET).startswith("REDIS_URL: redis://app:***@h:1/0 refused")
    assert is_configuration_error(wrapped)


class HelloReplies:
    """What ``HELLO 2`` answers, for the version parsing alone (every other test of the
    start-up check runs a real redis-server, 7.0; Debian ships no 6.2 to run)."""

    def __init__(self, reply: object) -> None:
        self.reply = reply

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        assert args == ("HELLO", "2")
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


@pytest.mark.parametrize(
    ("reply", "version"),
    [
        ([b"server", b"redis", b"version", b"6.2.14", b"proto", 2], (6, 2)),
        ({b"server": b"valkey", b"version": b"8.1.1"}, (8, 1)),
        (ResponseError("unknown command 'HELLO'"), (0,)),
        (ResponseError("NOPERM something else"), None),
        ([b"server", b"odd"], None),
    ],
)
async def test_the_server_version_comes_from_hello(reply: object, version: object) -> None:
    assert await server_version(HelloReplies(reply)) == version


def test_a_redis_older_than_7_stops_the_process_with_one_line_naming_redis_url() -> None:
    target = parse_redis_url("redis://:secret@h:6379/0")
    line = too_old((6, 2), target)
    assert line is not None and line.startswith("REDIS_URL: ") and "6.2" in line
    assert "needs 7.0 or later" in line and "secret" not in line
    assert "older than 6.0" in (too_old((0,), target) or "")
    assert too_old((7, 0), target) is None and too_old(None, target) is None
