"""Token checks, credential precedence, event narrowing and log redaction (sse_gateway.auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from connectome_core.tokens import MAX_TOKEN_BYTES, Grant, TokenError, TokenVerifier
from sse_gateway.auth import Authenticator, AuthError, authorize_events
from sse_gateway.request import Credentials, query_pairs, redacted_query, request_credentials

SECRET = b"s" * 32
OTHER = b"o" * 32


def token(claims: dict[str, Any], key: bytes = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def soon() -> int:
    return int(time.time()) + 60


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT assembled by hand, for what no library will make (``alg: none``)."""
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    if key is None:
        return signing + "."
    return signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


def refused(token_text: str) -> AuthError:
    """The gateway's answer to ``token_text`` as a bearer token (the codec refused it)."""
    with pytest.raises(TokenError):
        TokenVerifier(SECRET).verify(token_text)
    auth = Authenticator(TokenVerifier(SECRET), Tickets({}))
    with pytest.raises(AuthError) as info:
        auth.token_grant(presented([(b"authorization", f"Bearer {token_text}".encode())]))
    return info.value


def test_a_good_token_gives_its_grant() -> None:
    exp = soon()
    grant = TokenVerifier(SECRET).verify(token({"exp": exp, "sub": "ada", "events": ["a", "b"]}))
    assert grant == Grant("ada", frozenset({"a", "b"}), float(exp))


def test_without_events_claim_everything_is_granted() -> None:
    assert TokenVerifier(SECRET).verify(token({"exp": soon()})).events is None


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("expired", lambda: token({"exp": int(time.time()) - 5}), "expired"),
        ("wrong key", lambda: token({"exp": soon()}, key=OTHER), "signature"),
        ("alg none", lambda: hand_made({"alg": "none", "typ": "JWT"}, {"exp": soon()}, None), ""),
        ("alg HS512", lambda: token({"exp": soon()}, SECRET * 2, "HS512"), "algorithm"),
        (
            # RS256 "verified" with the shared secret as if it were a public key
            "alg RS256 confusion",
            lambda: hand_made({"alg": "RS256", "typ": "JWT"}, {"exp": soon()}, SECRET),
            "algorithm",
        ),
        ("missing exp", lambda: token({"sub": "ada"}), "exp"),
        ("exp too far", lambda: token({"exp": int(time.time()) + 367 * 86400}), "366 days"),
        ("exp far far", lambda: hand_made({"alg": "HS256"}, {"exp": 1e300}, SECRET), "366 days"),
        ("exp NaN", lambda: hand_made({"alg": "HS256"}, {"exp": float("nan")}, SECRET), "exp"),
        ("exp Infinity", lambda: hand_made({"alg": "HS256"}, {"exp": float("inf")}, SECRET), "exp"),
        ("exp not a number", lambda: hand_made({"alg": "HS256"}, {"exp": "soon"}, SECRET), "exp"),
        ("events a string", lambda: token({"exp": soon(), "events": "a,b"}), "events"),
        ("events of numbers", lambda: token({"exp": soon(), "events": [1, 2]}), "events"),
        ("events bad name", lambda: token({"exp": soon(), "events": ["a b"]}), "events"),
        ("events an object", lambda: token({"exp": soon(), "events": {"a": 1}}), "events"),
        ("sub a number", lambda: token({"exp": soon(), "sub": 7}), "Subject"),
        ("audience", lambda: token({"exp": soon(), "aud": "other-service"}), "audience"),
        ("not yet valid", lambda: token({"exp": soon(), "nbf": soon()}), "yet"),
        ("garbage", lambda: "not.a.jwt", ""),
        ("empty", lambda: "", ""),
        (
            "oversized",
            lambda: token({"exp": soon(), "pad": "x" * MAX_TOKEN_BYTES}),
            str(MAX_TOKEN_BYTES),
        ),
    ],
)
def test_bad_tokens_are_401(name: str, make: Any, says: str) -> None:
    error = refused(make())
    assert error.status == 401, name
    assert says in error.message, (name, error.message)
    assert error.headers["WWW-Authenticate"].startswith("Bearer ")
    assert json.loads(json.dumps(error.body())) == {"error": error.message, "status": 401}


def test_an_oversized_token_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an oversized token")

    monkeypatch.setattr(jwt, "decode", must_not_decode)
    assert refused("x" * (MAX_TOKEN_BYTES + 1)).status == 401


def test_messages_never_echo_the_token() -> None:
    bad = token({"exp": soon()}, key=OTHER)
    assert bad not in refused(bad).message
    assert bad.split(".")[2] not in refused(bad).message


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(b"short")


def test_mint_round_trips() -> None:
    verifier = TokenVerifier(SECRET)
    grant = verifier.verify(verifier.mint(ttl=30, sub="cli", events=["b", "a"]))
    assert grant.sub == "cli" and grant.events == frozenset({"a", "b"})
    assert time.time() + 25 < grant.exp <= time.time() + 31


@pytest.mark.parametrize(
    ("granted", "requested", "expected"),
    [
        (None, None, None),
        (None, {"a"}, {"a"}),
        ({"a", "b"}, None, {"a", "b"}),  # silently narrowed to the claim
        ({"a", "b"}, {"b"}, {"b"}),
        (set(), None, set()),  # gateway-made events only
    ],
)
def test_events_claim_narrows(
    granted: set[str] | None, requested: set[str] | None, expected: set[str] | None
) -> None:
    grant = Grant(None, None if granted is None else frozenset(granted), soon())
    asked = None if requested is None else frozenset(requested)
    result = authorize_events(grant, asked)
    assert result == (None if expected is None else frozenset(expected))


def test_events_outside_the_claim_are_403() -> None:
    with pytest.raises(AuthError) as info:
        authorize_events(Grant(None, frozenset({"a"}), soon()), frozenset({"a", "secret"}))
    assert info.value.status == 403
    assert "'secret'" in info.value.message
    assert "WWW-Authenticate" not in info.value.headers


class Tickets:
    def __init__(self, grants: dict[str, Grant]) -> None:
        self.grants = grants

    async def take(self, ticket: str, *, keep: bool = False) -> Grant | None:
        return self.grants.get(ticket) if keep else self.grants.pop(ticket, None)


def presented(headers: list[tuple[bytes, bytes]] = (), query: str = "") -> Credentials:  # type: ignore[assignment]
    """The credentials of a request with ``headers`` and ``query``, as the gateway reads them."""
    return request_credentials({"headers": list(headers), "query_string": query.encode()})


async def test_credential_precedence_bearer_then_ticket_then_cookie() -> None:
    verifier = TokenVerifier(SECRET)
    by_header = verifier.mint(ttl=60, sub="header")
    by_cookie = verifier.mint(ttl=60, sub="cookie")
    ticket_grant = Grant("ticket", None, soon())
    auth = Authenticator(verifier, Tickets({"T1": ticket_grant}))
    both = [
        (b"authorization", f"Bearer {by_header}".encode()),
        (b"cookie", f"theme=dark; sse_token={by_cookie}".encode()),
    ]
    assert (await auth.stream_grant(presented(both, "ticket=T1"))).sub == "header"
    cookie_only = both[1:]
    assert (await auth.stream_grant(presented(cookie_only, "ticket=T1"))).sub == "ticket"
    # The ticket was used: a second use is refused even with a cookie beside it.
    with pytest.raises(AuthError, match="already used"):
        await auth.stream_grant(presented(cookie_only, "ticket=T1"))
    assert (await auth.stream_grant(presented(cookie_only))).sub == "cookie"


async def test_a_bad_bearer_does_not_fall_back_to_the_cookie() -> None:
    verifier = TokenVerifier(SECRET)
    auth = Authenticator(verifier, Tickets({}))
    headers = [
        (b"authorization", b"Bearer nonsense"),
        (b"cookie", f"sse_token={verifier.mint(ttl=60)}".encode()),
    ]
    with pytest.raises(AuthError):
        await auth.stream_grant(presented(headers))


@pytest.mark.parametrize(
    ("headers", "missing"),
    [
        ([], True),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], True),  # not ours: no credential
        ([(b"authorization", b"Bearer ")], False),
        ([(b"authorization", b"Bearer")], False),
        ([(b"authorization", b"Bearer a"), (b"authorization", b"bearer b")], False),
    ],
)
async def test_missing_or_malformed_credentials_are_401(
    headers: list[tuple[bytes, bytes]], missing: bool
) -> None:
    auth = Authenticator(TokenVerifier(SECRET), Tickets({}))
    with pytest.raises(AuthError) as info:
        await auth.stream_grant(presented(headers))
    assert info.value.status == 401
    assert info.value.missing is missing


async def test_a_basic_authorization_leaves_the_ticket_or_cookie_to_decide() -> None:
    verifier = TokenVerifier(SECRET)
    auth = Authenticator(verifier, Tickets({"T": Grant("ticket", None, soon())}))
    basic = (b"authorization", b"Basic dXNlcjpwYXNz")
    cookie = (b"cookie", f"sse_token={verifier.mint(ttl=60, sub='cookie')}".encode())
    assert (await auth.stream_grant(presented([basic], "ticket=T"))).sub == "ticket"
    assert (await auth.stream_grant(presented([basic, cookie]))).sub == "cookie"
    assert auth.token_grant(presented([basic, cookie])).sub == "cookie"
    bearer = (b"authorization", f"Bearer {verifier.mint(ttl=60, sub='bearer')}".encode())
    assert (await auth.stream_grant(presented([basic, bearer, cookie]))).sub == "bearer"


async def test_a_ticket_grant_too_far_ahead_is_401() -> None:
    far = Grant(None, None, time.time() + 400 * 86400)
    auth = Authenticator(TokenVerifier(SECRET), Tickets({"T": far}))
    with pytest.raises(AuthError, match="366 days"):
        await auth.stream_grant(presented(query="ticket=T"))


async def test_a_ticket_whose_token_expired_meanwhile_is_401() -> None:
    auth = Authenticator(TokenVerifier(SECRET), Tickets({"T": Grant(None, None, time.time() - 1)}))
    with pytest.raises(AuthError, match="expired"):
        await auth.stream_grant(presented(query="ticket=T"))


def test_the_ticket_route_takes_header_or_cookie_only() -> None:
    verifier = TokenVerifier(SECRET)
    auth = Authenticator(verifier, Tickets({}))
    cookie = [(b"cookie", f"sse_token={verifier.mint(ttl=60, sub='c')}".encode())]
    assert auth.token_grant(presented(cookie)).sub == "c"
    with pytest.raises(AuthError):
        auth.token_grant(presented(query="ticket=T"))


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        (b"ticket=abc&events=a,b", "ticket=***&events=a,b"),
        (b"events=a&ticket=abc", "events=a&ticket=***"),
        (b"tick%65t=abc", "ticket=***"),
        (b"x=ticket%3Dabc", "x=ticket%3Dabc"),
        (b"", ""),
    ],
)
def test_query_strings_are_logged_without_the_ticket(query: bytes, logged: str) -> None:
    assert redacted_query(query_pairs(query)) == logged
