"""Tickets in (fake) Redis: once, hashed keys, expiry; per-address stream slots.

fakeredis stands in for Redis here only to check the store's own logic; the
same store against real redis-server processes and two gateways is in
tests/integration/test_auth_processes.py.
"""

from __future__ import annotations

import time

import fakeredis
import pytest

from sse_gateway.auth import Grant
from sse_gateway.client_limits import ClientLimits, TooManyStreams, client_address
from sse_gateway.tickets import KEY_PREFIX, TicketStore, ticket_key


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
def store(redis: fakeredis.FakeAsyncRedis) -> TicketStore:
    return TicketStore(redis, ttl=30)


def grant(**changes: object) -> Grant:
    values: dict[str, object] = {"sub": "ada", "events": frozenset({"a"}), "exp": time.time() + 60}
    values.update(changes)
    return Grant(**values)  # type: ignore[arg-type]


async def test_a_ticket_is_taken_once(store: TicketStore) -> None:
    original = grant()
    ticket = await store.mint(original)
    assert await store.take(ticket) == original
    assert await store.take(ticket) is None


async def test_a_ticket_read_with_keep_stays_for_the_one_take(store: TicketStore) -> None:
    original = grant()
    ticket = await store.mint(original)
    assert await store.take(ticket, keep=True) == original
    assert await store.take(ticket, keep=True) == original
    assert await store.take(ticket) == original
    assert await store.take(ticket, keep=True) is None


async def test_tickets_are_random_long_and_not_kept_as_key_names(
    store: TicketStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    tickets = {await store.mint(grant()) for _ in range(50)}
    assert len(tickets) == 50
    assert all(len(t) >= 43 for t in tickets)  # 256 bits in URL-safe base64
    keys = [k.decode() if isinstance(k, bytes) else k for k in await redis.keys("*")]
    assert sorted(keys) == sorted(ticket_key(t) for t in tickets)
    assert all(key.startswith(KEY_PREFIX) for key in keys)
    assert not any(t in key for t in tickets for key in keys)


async def test_a_ticket_expires_with_the_ttl_or_the_token(
    store: TicketStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    long_token = await store.mint(grant(exp=time.time() + 3600))
    assert 29_000 < await redis.pttl(ticket_key(long_token)) <= 30_000
    short_token = await store.mint(grant(exp=time.time() + 5))
    assert 4_000 < await redis.pttl(ticket_key(short_token)) <= 5_000
    with pytest.raises(ValueError, match="expired"):
        await store.mint(grant(exp=time.time() - 1))


async def test_a_malformed_stored_grant_is_refused(
    store: TicketStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await redis.set(ticket_key("forged"), b'{"events": "all"}')
    assert await store.take("forged") is None


def test_slots_per_address_are_freed_on_exit() -> None:
    limits = ClientLimits(2)
    with limits.slot("10.0.0.1"), limits.slot("10.0.0.1"):
        with pytest.raises(TooManyStreams), limits.slot("10.0.0.1"):
            pass
        with limits.slot("10.0.0.2"):
            assert limits.count("10.0.0.2") == 1
        assert limits.count("10.0.0.1") == 2
    assert len(limits) == 0
    with limits.slot("10.0.0.1"):
        pass


def test_a_slot_is_freed_when_the_stream_fails() -> None:
    limits = ClientLimits(1)
    with pytest.raises(RuntimeError), limits.slot("a"):
        raise RuntimeError
    assert limits.count("a") == 0


@pytest.mark.parametrize(
    ("client", "address"),
    [
        (("127.0.0.2", 5), "127.0.0.2"),
        (("::ffff:10.1.2.3", 5), "10.1.2.3"),
        (("2001:db8::1", 5), "2001:db8::1"),
        (None, "unknown"),
    ],
)
def test_client_address(client: tuple[str, int] | None, address: str) -> None:
    assert client_address({"client": client}) == address


def test_limit_zero_only_counts() -> None:
    limits = ClientLimits(0)
    for _ in range(5):
        assert limits.try_acquire("a")
    assert limits.count("a") == 5
    for _ in range(5):
        limits.release("a")
    assert len(limits) == 0
