"""``redis+sentinel://`` against real processes: one master, one replica, three sentinels.

The CLI ``publish`` and long-lived sync/async clients built by
``connectome_core.redis_connect`` reach the current master, and after a
``kill -9`` of it and the sentinels' failover, the new one, with no restart.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectome_core.redis_connect import (
    MasterLocator,
    RedisUnavailable,
    async_client,
    current_master,
    sync_client,
)
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_sentinel import MASTER_NAME, SentinelCluster
from connectome_sse.localrun.wait import async_wait_for, wait_for
from tests.support.redis_tls import TlsFiles


def publish(
    url: str, data: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script("connectome-sse", "publish", "sentinel_check", data),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": url, **(env or {})},
    )


async def wait_until_both_write(aclient: aioredis.Redis, sclient: redis.Redis, value: str) -> None:
    """The same client objects, never rebuilt: a command may fail while the old connection
    dies, then the pool asks the sentinels and lands on the new master."""

    async def async_write() -> bool:
        try:
            await aclient.set("async", value)
        except (RedisError, OSError):
            return False
        return True

    def sync_write() -> bool:
        try:
            sclient.set("sync", value)
        except (RedisError, OSError):
            return False
        return True

    await async_wait_for(async_write, timeout=20, what="the async client on the new master")
    wait_for(sync_write, timeout=20, what="the sync client on the new master")


async def test_clients_and_publish_follow_a_failover(cluster: SentinelCluster) -> None:
    target = parse_redis_url(cluster.url)
    first = cluster.master()
    assert await current_master(target) == ("127.0.0.1", cluster.service_port(first))

    done = publish(cluster.url, "before")
    assert done.returncode == 0, done.stderr
    with first.client() as node:
        assert node.get("sse:last:sentinel_check") == b"before"

    aclient = async_client(target)
    sclient = sync_client(target)
    locator = MasterLocator(target)
    try:
        await aclient.set("async", "1")
        sclient.set("sync", "1")
        with first.client() as node:
            assert node.get("async") == b"1" and node.get("sync") == b"1"

        cluster.kill_master()
        new = cluster.wait_failover()
        assert new.port != first.port
        assert await locator.master() == ("127.0.0.1", cluster.service_port(new))

        await wait_until_both_write(aclient, sclient, "2")
        with new.client() as node:
            assert node.get("async") == b"2" and node.get("sync") == b"2"

        done = publish(cluster.url, "after")
        assert done.returncode == 0, done.stderr
        with new.client() as node:
            assert node.get("sse:last:sentinel_check") == b"after"

        old = cluster.restart_old_master()
        assert await locator.master() == ("127.0.0.1", cluster.service_port(new))
        wait_for(
            lambda: old.client().get("sse:last:sentinel_check") == b"after",
            timeout=20,
            what="the old master to replicate from the new one",
        )
    finally:
        await aclient.aclose()
        sclient.close()
        await locator.aclose()


async def test_unknown_master_name_is_one_line(cluster: SentinelCluster) -> None:
    url = cluster.url_for("no-such-master")
    with pytest.raises(RedisUnavailable, match="know no master named 'no-such-master'"):
        await current_master(parse_redis_url(url))
    done = publish(url, "x")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "no-such-master" in done.stderr and "Traceback" not in done.stderr


async def test_unreachable_sentinels_are_one_line() -> None:
    url = f"redis+sentinel://:pw@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/{MASTER_NAME}"
    with pytest.raises(RedisUnavailable, match=r"none of the sentinels .* answered"):
        await current_master(parse_redis_url(url))
    done = publish(url, "x")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "none of the sentinels" in done.stderr and "Traceback" not in done.stderr
    assert ":pw@" not in done.stderr


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    tls = TlsFiles.make(tmp_path / "tls")
    cluster = SentinelCluster(tmp_path / "sentinel", tls=tls, sentinel_password="sentinel-pw")
    cluster.start()
    yield cluster
    cluster.stop()


async def test_rediss_sentinel_with_a_sentinel_password_follows_a_failover(
    tls_cluster: SentinelCluster,
) -> None:
    tls = tls_cluster.tls
    assert isinstance(tls, TlsFiles)
    env = {
        "REDIS_URL": tls_cluster.url,
        "REDIS_TLS_CA_FILE": str(tls.ca),
        "REDIS_TLS_CERT_FILE": str(tls.client_cert),
        "REDIS_TLS_KEY_FILE": str(tls.client_key),
        "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
    }
    done = publish(tls_cluster.url, "tls-before", env)
    assert done.returncode == 0, done.stderr
    with tls_cluster.master().client() as node:
        assert node.get("sse:last:sentinel_check") == b"tls-before"

    wrong = publish(tls_cluster.url, "x", {**env, "REDIS_SENTINEL_PASSWORD": "nope"})
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1 and "REDIS_SENTINEL_PASSWORD" in wrong.stderr
    assert "nope" not in wrong.stderr

    bad_ca = publish(tls_cluster.url, "x", {**env, "REDIS_TLS_CA_FILE": str(tls.other_ca)})
    assert bad_ca.returncode == 1
    assert bad_ca.stderr.count("\n") == 1, bad_ca.stderr

    tls_cluster.kill_master()
    new = tls_cluster.wait_failover()
    done = publish(tls_cluster.url, "tls-after", env)
    assert done.returncode == 0, done.stderr
    with new.client() as node:
        assert node.get("sse:last:sentinel_check") == b"tls-after"


async def test_a_subscription_left_on_a_cut_off_master_is_seen_by_comparing_peers(
    cluster: SentinelCluster,
) -> None:
    """The trap the gateway must handle (Centrifugo #1189): the sentinels fail over while
    a subscriber's socket stays open to the old master (frozen here, as behind a
    partition). It hears nothing published on the new master and nothing moves it;
    only its peer, compared with ``MasterLocator.master()``, tells."""
    target = parse_redis_url(cluster.url)
    subscriber = async_client(target, socket_timeout=None)
    publisher = async_client(target)
    pubsub = subscriber.pubsub()
    locator = MasterLocator(target)
    try:
        await pubsub.psubscribe("sse:*")
        assert pubsub.connection is not None
        peer = (pubsub.connection.host, pubsub.connection.port)
        assert peer == await locator.master()

        cluster.freeze_master()
        new = cluster.wait_failover()
        assert await locator.master() == ("127.0.0.1", cluster.service_port(new))
        assert (pubsub.connection.host, pubsub.connection.port) == peer  # never moved
        assert peer != await locator.master()

        async def published() -> bool:
            try:
                await publisher.publish("sse:deaf", "x")
            except (RedisError, OSError):
                return False
            return True

        await async_wait_for(published, timeout=20, what="a publish on the new master")
        heard = [await pubsub.get_message(timeout=0.5) for _ in range(4)]
        assert not any(m and m.get("type") == "pmessage" for m in heard)  # deaf
    finally:
        cluster.thaw()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        for client in (subscriber, publisher):
            await client.aclose()
        await locator.aclose()
