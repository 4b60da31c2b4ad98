"""Tickets in (fake) Redis: once, sealed, keyed by the secret, expiry; per-address stream slots.

fakeredis stands in for Redis here only to check the store's own logic; the
same store against real redis-server processes and two gateways is in
tests/integration/test_auth_processes.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import fakeredis
import pytest

from connectome_core.tokens import Grant
from sse_gateway.client_limits import ClientLimits, TooManyStreams, client_address
from sse_gateway.tickets import KEY_PREFIX, TicketSeal, TicketStore

SECRET = b"unit-secret-0123456789abcdef-0123456"
SEAL = TicketSeal(SECRET)


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
def store(redis: fakeredis.FakeAsyncRedis) -> TicketStore:
    return TicketStore(redis, SECRET, ttl=30)


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
    assert sorted(keys) == sorted(SEAL.key(t) for t in tickets)
    assert all(key.startswith(KEY_PREFIX) for key in keys)
    assert not any(t in key for t in tickets for key in keys)


async def test_a_ticket_expires_with_the_ttl_or_the_token(
    store: TicketStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    long_token = await store.mint(grant(exp=time.time() + 3600))
    assert 29_000 < await redis.pttl(SEAL.key(long_token)) <= 30_000
    short_token = await store.mint(grant(exp=time.time() + 5))
    assert 4_000 < await redis.pttl(SEAL.key(short_token)) <= 5_000
    with pytest.raises(ValueError, match="expired"):
        await store.mint(grant(exp=time.time() - 1))


async def test_a_malformed_stored_grant_is_refused(
    store: TicketStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await redis.set(SEAL.key("forged"), b'{"events": "all"}')
    assert await store.take("forged") is None


async def test_grants_not_sealed_for_their_key_are_refused_and_counted(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    forged: list[None] = []
    store = TicketStore(redis, SECRET, ttl=30, on_forged=lambda: forged.append(None))
    wide = b'{"events":null,"exp":4102444800,"sub":null}'
    # Sealed with another secret, sealed for another key, unsealed, resealed after editing.
    other = TicketSeal(b"another-secret-0123456789abcdef-012")
    key = SEAL.key("t1")
    await redis.set(key, other.seal(other.key("t1"), grant()))
    assert await store.take("t1") is None
    await redis.set(key, SEAL.seal(SEAL.key("t2"), grant()))
    assert await store.take("t1") is None
    await redis.set(key, wide)
    assert await store.take("t1") is None
    sealed = SEAL.seal(key, grant(events=frozenset({"a"})))
    await redis.set(key, sealed[: sealed.index(b":") + 1] + wide)
    assert await store.take("t1") is None
    assert len(forged) == 4


def seal_by_hand(key: str, body: bytes) -> bytes:
    """What a holder of the secret would store (the format, written out independently)."""
    seal_key = hmac.digest(SECRET, b"connectome-sse/ticket-grant-seal/v1", hashlib.sha256)
    mac = hmac.new(seal_key, key.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    return mac.encode() + b":" + body


def test_the_seal_format() -> None:
    key = SEAL.key("t")
    original = grant()
    body = json.dumps(original.to_json(), sort_keys=True, separators=(",", ":")).encode()
    assert SEAL.seal(key, original) == seal_by_hand(key, body)
    assert SEAL.open(key, seal_by_hand(key, body)) == original


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity"])
def test_a_sealed_grant_with_a_non_finite_exp_is_refused(exp: str) -> None:
    key = SEAL.key("t")
    body = b'{"events":null,"exp":%s,"sub":null}' % exp.encode()
    with pytest.raises(ValueError, match="finite"):
        SEAL.open(key, seal_by_hand(key, body))


def test_the_key_names_no_ticket_and_depends_on_the_secret() -> None:
    ticket = "a" * 43
    other = TicketSeal(b"another-secret-0123456789abcdef-012")
    assert SEAL.key(ticket) != other.key(ticket)
    digest = SEAL.key(ticket)[len(KEY_PREFIX) :]
    assert digest != hashlib.sha256(ticket.encode()).hexdigest() and ticket not in digest


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
