"""Redis failures as one password-free line that starts with the setting to fix.

Also which failures a setting must cure (a certificate, a password, an ACL
permission) and which a retry may (a refused connection, a timeout).
"""

from __future__ import annotations

import re
import ssl

from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError as SyncMasterNotFoundError

from connectome_core.redis_target import RedisTarget


class RedisUnavailable(Exception):
    """Redis (or its sentinels) could not be used; the message is one line, password-free."""


class RedisMisconfigured(RedisUnavailable):
    """A :class:`RedisUnavailable` that retrying cannot cure: a setting must change
    (the sentinels know no such master name, or refused ``REDIS_SENTINEL_PASSWORD``)."""


def is_configuration_error(exc: BaseException) -> bool:
    """True when retrying cannot help until someone fixes a setting: a certificate that
    does not verify, a failed TLS handshake, a refused password, a missing ACL permission.

    Connection refused, timeouts and "no master found" (a failover in progress)
    stay retryable.
    """
    return any(
        isinstance(link, (NoPermissionError, AuthenticationError, ssl.SSLError))
        for link in _chain(exc)
    )


def one_line(exc: BaseException) -> str:
    return _squash(str(exc)) or type(exc).__name__


def short_error(exc: BaseException) -> str:
    """``exc`` for a log line repeated on every retry: its type and a short text.

    Redis's own texts can be paragraphs (a protected-mode Redis answers with an
    850-character ``DENIED`` explanation): a long one is cut to its first sentence.
    """
    return f"{type(exc).__name__}: {one_line(exc)}"


def _squash(text: str, limit: int = 120) -> str:
    """One line; a text longer than ``limit`` is cut to its first sentence, or to ``limit``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    end = text.find(". ", 20)
    if 0 < end < 2 * limit:
        return text[: end + 1]
    return text[: limit - 1] + "…"


def _message(exc: BaseException) -> str:
    """The error text itself: redis-py's pipeline errors may nest it in a tuple in ``args``."""
    value: object = exc.args[0] if exc.args else str(exc)
    while isinstance(value, tuple) and value:
        value = value[0]
    return str(value)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.S)
# Redis's answers to a client that sent no password (NOAUTH, also to redis-py's HELLO),
# and to one that sent a password to a Redis that has none.
_NEEDS_PASSWORD = re.compile(
    r"NOAUTH|Authentication required|HELLO must be called with the client already "
    r"authenticated",
    re.I,
)
_NO_PASSWORD_SET = re.compile(r"called without any password configured|no password is set", re.I)


def describe_error(exc: BaseException, target: RedisTarget) -> str:
    """``exc`` from a client of ``target`` as one password-free line naming what to fix."""
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, RedisUnavailable):
            return str(link)
    if isinstance(exc, (AsyncMasterNotFoundError, SyncMasterNotFoundError)):
        # redis-py's own text repeats each sentinel client's repr; ours names the setting.
        return (
            f"REDIS_URL: the sentinels of {target.display()} gave no usable master "
            f"{target.master_name!r} (unreachable, unknown name, or down)"
        )
    cert_error = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if cert_error is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return _certificate_line(exc, cert_error, target)
    # redis-py may wrap these in a ConnectionError raised while connecting.
    denied = next((e for e in chain if isinstance(e, NoPermissionError)), None)
    if denied is not None:
        user = target.username or "default"
        reason = _PIPELINE_PREFIX.sub("", _message(denied))
        return (
            f"REDIS_URL: the ACL user {user!r} lacks a permission on {target.display()}: "
            f"{_squash(reason)} (see the README's ACL rules)"
        )
    refused = next((e for e in chain if isinstance(e, AuthenticationError)), None)
    if refused is not None:
        return _password_line(refused, target)
    tls_error = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls_error is not None:
        return (
            f"REDIS_URL: the TLS handshake with {target.display()} failed (check "
            f"REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE): {one_line(tls_error)}"
        )
    return _plain_line(exc, target)


def _certificate_line(
    exc: BaseException, cert_error: ssl.SSLCertVerificationError | None, target: RedisTarget
) -> str:
    reason = (
        cert_error.verify_message
        if cert_error is not None and cert_error.verify_message
        else one_line(exc)
    )
    trust = (
        f"REDIS_TLS_CA_FILE ({target.tls_ca_file})"
        if target.tls_ca_file
        else "the system's CA store (REDIS_TLS_CA_FILE is not set)"
    )
    return (
        f"REDIS_TLS_CA_FILE: the TLS certificate of {target.display()} does not verify "
        f"against {trust}: {reason}"
    )


def _password_line(refused: AuthenticationError, target: RedisTarget) -> str:
    where = target.display()
    text = _message(refused)
    if _NEEDS_PASSWORD.search(text):
        return (
            f"REDIS_URL: {where}: Redis needs a password "
            "(set it in REDIS_URL or REDIS_PASSWORD_FILE)"
        )
    if _NO_PASSWORD_SET.search(text):
        return (
            f"REDIS_URL: {where}: Redis has no password set, but one is given "
            "(in REDIS_URL or REDIS_PASSWORD_FILE)"
        )
    return f"REDIS_URL: {where} refused the user or password: {one_line(refused)}"


def _plain_line(exc: BaseException, target: RedisTarget) -> str:
    where = target.display()
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return f"cannot reach Redis at {where} (REDIS_URL): {one_line(exc)}"
    if isinstance(exc, ResponseError):
        return f"REDIS_URL: {where} answered with an error: {one_line(exc)}"
    return f"REDIS_URL: {where}: {type(exc).__name__}: {one_line(exc)}"
