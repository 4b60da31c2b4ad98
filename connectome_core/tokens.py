"""Stream tokens: HS256 JWTs signed with ``SSE_AUTH_SECRET``, and the grant they carry.

The gateway verifies, ``connectome-sse token`` mints. Only HS256; ``exp`` required
and bounded; ``iat`` unchecked, so clock skew never locks users out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from connectome_core.contract import is_valid_event_name

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
# A JWT naming 64 event types of 64 characters is about 6 KiB; nothing legitimate
# comes close to this, and the check runs before any decoding.
MAX_TOKEN_BYTES = 8192
MAX_GRANTED_EVENTS = 64
# The furthest ahead an ``exp`` may lie. A token that never (or practically never)
# expires cannot be taken back short of changing the secret.
MAX_LIFETIME_DAYS = 366
MAX_LIFETIME = MAX_LIFETIME_DAYS * 86400.0


class TokenError(ValueError):
    """A token (or a stored grant) that must be refused; the message never holds it."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What verified credentials allow: ``events`` None means every event type."""

    sub: str | None
    events: frozenset[str] | None
    exp: float  # unix seconds; the stream ends then

    def to_json(self) -> dict[str, Any]:
        events = sorted(self.events) if self.events is not None else None
        return {"sub": self.sub, "events": events, "exp": self.exp}

    @classmethod
    def from_json(cls, data: object) -> Grant:
        """The inverse of ``to_json``; raises ValueError on anything else."""
        if not isinstance(data, dict):
            raise ValueError("grant is not an object")
        sub, events, exp = data.get("sub"), data.get("events"), data.get("exp")
        if sub is not None and not isinstance(sub, str):
            raise ValueError("grant sub is not a string")
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            raise ValueError("grant exp is not a finite number")
        return cls(sub, events_claim(events), float(exp))


def checked_exp(exp: object, now: float, what: str) -> float:
    """``exp`` as unix seconds if finite, after ``now`` and at most ``MAX_LIFETIME`` ahead."""
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise TokenError(f"{what} 'exp' is not a finite number")
    if exp <= now:
        raise TokenError(f"{what} expired")
    if exp > now + MAX_LIFETIME:
        raise TokenError(f"{what} 'exp' is more than {MAX_LIFETIME_DAYS} days ahead")
    return float(exp)


def events_claim(value: object) -> frozenset[str] | None:
    """The ``events`` claim: absent/null (everything) or a list of event names."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError("'events' must be a list of event names")
    if len(value) > MAX_GRANTED_EVENTS:
        raise ValueError(f"'events' lists more than {MAX_GRANTED_EVENTS} event types")
    bad = [name for name in value if not is_valid_event_name(name)]
    if bad:
        raise ValueError("'events' holds a name that is not an event name")
    return frozenset(value)


class TokenVerifier:
    """HS256 tokens signed with one secret."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.clock = clock

    def verify(self, token: str) -> Grant:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.MissingRequiredClaimError:
            raise TokenError("token has no 'exp' claim") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError(f"token algorithm is not {ALGORITHM}") from None
        except jwt.InvalidTokenError as exc:
            # The library's messages name the claim, never echo the token.
            raise TokenError(f"invalid token: {exc}") from None
        # The library checked exp on its clock; checked again on ours, with bounds.
        exp = checked_exp(claims["exp"], self.clock(), "token")
        sub = claims.get("sub")
        try:
            events = events_claim(claims.get("events"))
        except ValueError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        return Grant(sub if isinstance(sub, str) else None, events, exp)

    def mint(
        self, *, ttl: float, sub: str | None = None, events: Iterable[str] | None = None
    ) -> str:
        """A token valid for ``ttl`` seconds (``connectome-sse token``, tests)."""
        now = self.clock()
        claims: dict[str, Any] = {"iat": int(now), "exp": int(now + ttl)}
        if sub is not None:
            claims["sub"] = sub
        if events is not None:
            claims["events"] = sorted(set(events))
            events_claim(claims["events"])  # refuse what verify() would refuse
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)
