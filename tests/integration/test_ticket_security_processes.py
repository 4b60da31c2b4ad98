"""Tickets and credentials under attack and under faults, on real gateway and Redis processes.

- Write access to Redis is not a way to mint stream access: a grant written,
  copied or rewritten by anything without ``SSE_AUTH_SECRET`` is refused, and
  the documented ACL users of other processes cannot write ticket keys at all.
- Tokens and grants that never expire (``NaN``, ``Infinity``, far-off ``exp``)
  are refused.
- Tickets are rate limited per client address and per token subject.
- A proxy's ``Authorization: Basic`` does not hide a ticket or a cookie.
- A ticket command whose reply comes late (it did reach Redis) is not retried
  blindly: a take answers 503, never 401 for a valid ticket; a mint still
  hands out a working ticket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
import redis

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from tests.conftest import StartGateway
from tests.support.delaying_proxy import DelayingProxy
from tests.support.raw_stream import RawStream
from tests.support.redis_acl import make_user

pytestmark = pytest.mark.integration

SECRET = "ticket-security-secret-0123456789abcdef"
AUTH_ENV = {"SSE_AUTH_SECRET": SECRET}
WIDE_GRANT = b'{"sub":null,"events":null,"exp":4102444800}'


def token(ttl: float = 120, **claims: object) -> str:
    return jwt.encode({"exp": time.time() + ttl, **claims}, SECRET, algorithm="HS256")


def hand_made_token(claims: str) -> str:
    """A token signed with the secret whose claims are exactly ``claims`` (JSON text)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(claims.encode())
    signature = hmac.new(SECRET.encode(), signing, hashlib.sha256).digest()
    return (signing + b"." + b64(signature)).decode()


def post_ticket(
    gateway: GatewayProcess, headers: dict[str, str], source: str = "127.0.0.1"
) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=15) as client:
        return client.post(gateway.url + "/api/sse/ticket", headers=headers)


def mint_ticket(gateway: GatewayProcess, bearer: str) -> str:
    answer = post_ticket(gateway, {"Authorization": f"Bearer {bearer}"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["ticket"])


def stream_status(
    gateway: GatewayProcess, path: str, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[int, dict[str, str], object]:
    """Status, headers and (for a refusal) the JSON body of a stream request."""
    stream = RawStream(gateway.port, path, headers=headers)
    try:
        if stream.status == 200:
            stream.read_until(lambda s: b"retry:" in s.body, what="the stream's first bytes")
            return 200, stream.headers, None
        return stream.status, stream.headers, stream.json()
    finally:
        stream.close()


def ticket_keys(client: redis.Redis) -> set[bytes]:
    return {key.encode() if isinstance(key, str) else key for key in client.keys("sse:ticket:*")}


@pytest.fixture
def gateway(redis_server: RedisServer, start_gateway: StartGateway) -> Iterator[GatewayProcess]:
    process = start_gateway(redis_server.url, env=AUTH_ENV)
    process.wait_ready()
    yield process


# --- Redis is not the root of trust --------------------------------------------------


def test_a_grant_written_under_the_old_key_scheme_opens_no_stream(
    gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    """A forged grant: SET sse:ticket:<sha256(ticket)> with a grant of everything."""
    with redis_server.client() as admin:  # the default user: may write any key
        for ticket, grant in (
            ("forged", WIDE_GRANT),
            ("forged-nan", b'{"sub":null,"events":null,"exp":NaN}'),
            ("forged-inf", b'{"sub":null,"events":null,"exp":Infinity}'),
        ):
            admin.set("sse:ticket:" + hashlib.sha256(ticket.encode()).hexdigest(), grant, ex=60)
            status, headers, body = stream_status(gateway, f"/api/sse?ticket={ticket}")
            assert status == 401, (ticket, status)
            assert headers["www-authenticate"].startswith("Bearer")
            assert isinstance(body, dict) and body["status"] == 401


def test_a_copied_or_rewritten_grant_is_refused(
    gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    with redis_server.client() as admin:
        narrow = mint_ticket(gateway, token(sub="narrow", events=["connectome_health"]))
        (narrow_key,) = ticket_keys(admin)
        wide = mint_ticket(gateway, token(sub="wide"))
        (wide_key,) = ticket_keys(admin) - {narrow_key}

        # Copied: the narrow ticket's key now holds the wide ticket's stored value.
        admin.set(narrow_key, admin.get(wide_key) or b"", px=30_000)
        status, _, body = stream_status(gateway, f"/api/sse?ticket={narrow}")
        assert status == 401, "a grant copied from another ticket's key was honoured"
        assert isinstance(body, dict) and "ticket" in body["error"]

        # Rewritten in place: whatever else is stored, the grant itself is swapped.
        stored = admin.get(wide_key) or b""
        admin.set(wide_key, stored[: stored.index(b"{")] + WIDE_GRANT, px=30_000)
        status, _, _ = stream_status(gateway, f"/api/sse?ticket={wide}")
        assert status == 401, "a grant rewritten in Redis was honoured"

    assert gateway.metric('sse_tickets_refused_total{reason="forged"}') == 2
    gateway.stop()
    logs = gateway.log()
    assert "forged" in logs
    for secret in (narrow, wide, SECRET):
        assert secret not in logs


def test_acl_users_of_other_processes_cannot_write_ticket_keys(redis_server: RedisServer) -> None:
    key = "sse:ticket:" + "0" * 64
    with redis_server.client() as admin:
        for process in ("publisher", "cli_publish", "demo_engine", "gateway"):
            make_user(admin, f"acl-{process}", f"pw-{process}", process)
            user = redis.Redis(
                port=redis_server.port, username=f"acl-{process}", password=f"pw-{process}"
            )
            with user, pytest.raises(redis.exceptions.NoPermissionError):
                user.set(key, WIDE_GRANT)
        assert not admin.exists(key)
        # The publisher still writes what it publishes.
        publisher = redis.Redis(
            port=redis_server.port, username="acl-publisher", password="pw-publisher"
        )
        with publisher:
            assert publisher.set("sse:last:connectome_health", "{}")


@pytest.mark.parametrize(
    ("exp", "says"),
    [
        ("1e300", "366 days"),
        ("4102444800", "366 days"),  # 2100-01-01
        ("NaN", "exp"),
        ("Infinity", "exp"),
        ("-Infinity", "exp"),
    ],
)
def test_a_token_that_never_expires_is_refused(
    gateway: GatewayProcess, exp: str, says: str
) -> None:
    bearer = hand_made_token('{"sub":"forever","exp":' + exp + "}")
    status, headers, body = stream_status(
        gateway, "/api/sse", headers=(("Authorization", f"Bearer {bearer}"),)
    )
    assert status == 401, exp
    assert isinstance(body, dict) and says in body["error"], body
    assert 'error="invalid_token"' in headers["www-authenticate"]
    minted = post_ticket(gateway, {"Authorization": f"Bearer {bearer}"})
    assert minted.status_code == 401 and says in minted.json()["error"]


# --- Rate of tickets ------------------------------------------------------------------


def test_tickets_past_the_rate_are_429_per_address_and_per_subject(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={**AUTH_ENV, "SSE_TICKET_RATE": "3"})
    gateway.wait_ready()
    ada = {"Authorization": f"Bearer {token(sub='ada')}"}
    for _ in range(3):
        assert post_ticket(gateway, ada, source="127.0.0.2").status_code == 201

    over = post_ticket(gateway, ada, source="127.0.0.2")
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/json"
    assert 1 <= int(over.headers["retry-after"]) <= 20  # a token every 20 s at 3/min
    assert over.json()["status"] == 429 and "ticket" in over.json()["error"]

    # Another subject from the same address: the address is spent.
    bob = {"Authorization": f"Bearer {token(sub='bob')}"}
    assert post_ticket(gateway, bob, source="127.0.0.2").status_code == 429
    # The same subject from another address: the subject is spent.
    assert post_ticket(gateway, ada, source="127.0.0.3").status_code == 429
    # Neither spent: a refusal above took nothing from 127.0.0.3.
    cy = {"Authorization": f"Bearer {token(sub='cy')}"}
    assert post_ticket(gateway, cy, source="127.0.0.3").status_code == 201
    # Without a subject only the address counts.
    anonymous = {"Authorization": f"Bearer {token()}"}
    assert [post_ticket(gateway, anonymous, source="127.0.0.4").status_code for _ in range(4)] == [
        201,
        201,
        201,
        429,
    ]
    assert gateway.metric('sse_tickets_refused_total{reason="rate_limited"}') == 4
    with redis_server.client() as admin:
        assert len(ticket_keys(admin)) == 7  # no ticket made for a refused request
    gateway.stop()
    logs = gateway.log()
    assert "ticket" in logs and "429" in logs
    assert token(sub="ada").split(".")[2] not in logs


# --- A proxy's Basic auth -------------------------------------------------------------


def test_a_basic_authorization_header_does_not_block_a_ticket_or_a_cookie(
    gateway: GatewayProcess,
) -> None:
    basic = ("Authorization", "Basic " + base64.b64encode(b"proxy-user:proxy-pass").decode())
    ticket = mint_ticket(gateway, token())
    status, _, body = stream_status(gateway, f"/api/sse?ticket={ticket}", headers=(basic,))
    assert status == 200, body
    cookie = ("Cookie", f"sse_token={token()}")
    status, _, body = stream_status(gateway, "/api/sse", headers=(basic, cookie))
    assert status == 200, body
    minted = post_ticket(gateway, {basic[0]: basic[1], cookie[0]: cookie[1]})
    assert minted.status_code == 201, minted.text

    # Basic alone: no stream credential at all.
    status, headers, body = stream_status(gateway, "/api/sse", headers=(basic,))
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="sse"'
    assert isinstance(body, dict) and "credentials needed" in body["error"]
    # A Bearer without its token is still a bad credential, cookie or not.
    status, _, _ = stream_status(gateway, "/api/sse", headers=(("Authorization", "Bearer"), cookie))
    assert status == 401


# --- Late replies: no blind retry -----------------------------------------------------


@pytest.fixture
def proxied(
    redis_server: RedisServer, start_gateway: StartGateway
) -> Iterator[tuple[DelayingProxy, GatewayProcess]]:
    with DelayingProxy(redis_server.port) as proxy:
        process = start_gateway(proxy.url, env=AUTH_ENV)
        process.wait_ready()
        yield proxy, process
        process.stop()


# Longer than the ticket client's command timeout (2 s): the client gives up on a
# command that Redis has executed.
LATE = 3.5


def test_a_ticket_take_whose_reply_is_late_is_503_not_401(
    proxied: tuple[DelayingProxy, GatewayProcess],
) -> None:
    proxy, gateway = proxied
    ticket = mint_ticket(gateway, token())
    proxy.delay_reply_to(b"GETDEL", LATE)
    status, headers, body = stream_status(gateway, f"/api/sse?ticket={ticket}")
    assert proxy.delayed == 1
    assert status == 503, (status, body)
    assert int(headers["retry-after"]) >= 1
    assert isinstance(body, dict) and body["status"] == 503


def test_a_ticket_mint_whose_reply_is_late_still_gives_a_working_ticket(
    proxied: tuple[DelayingProxy, GatewayProcess], redis_server: RedisServer
) -> None:
    proxy, gateway = proxied
    proxy.delay_reply_to(b"SET", LATE)
    answer = post_ticket(gateway, {"Authorization": f"Bearer {token()}"})
    assert proxy.delayed == 1
    assert answer.status_code == 201, answer.text
    status, _, body = stream_status(gateway, f"/api/sse?ticket={answer.json()['ticket']}")
    assert status == 200, body
    with redis_server.client() as admin:
        assert not ticket_keys(admin)  # no orphan key left behind


def test_tickets_work_at_once_after_a_redis_restart(
    own_redis: RedisServer, start_gateway: StartGateway
) -> None:
    """Without redis-py's retry, a pooled connection that died with Redis is still replaced
    before a command is sent: the first ticket after the restart is not a 503."""
    gateway = start_gateway(own_redis.url, env=AUTH_ENV)
    gateway.wait_ready()
    ticket = mint_ticket(gateway, token())  # the pool now holds a connection
    assert stream_status(gateway, f"/api/sse?ticket={ticket}")[0] == 200
    own_redis.restart()
    gateway.wait_ready()
    ticket = mint_ticket(gateway, token())
    assert stream_status(gateway, f"/api/sse?ticket={ticket}")[0] == 200
