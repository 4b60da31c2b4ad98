"""Keeping passwords out of output: a URL's user info is cut out before anything parses it.

``urlsplit`` ends the authority at the first ``/``, ``?`` or ``#``, which a
generated password may well hold; here the user info runs to the last ``@``
before the host, so the password is removed first and whatever reads the rest
(a parser, an error message) never sees any of it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import NoReturn

# Query parameters that carry a secret (``unix:///run/redis.sock?password=...`` is the
# only way to give a socket URL a password).
SECRET_PARAMS = frozenset({"password", "pass", "pwd", "secret", "token", "auth"})
MASK = "***"

# A user name as RFC 3986 lets it stand unescaped; anything else is no user name.
PLAIN_USER = re.compile(r"^[A-Za-z0-9._~%!$&'()*+,;=-]*$")
_PLAIN_ITEM = re.compile(r"^[A-Za-z0-9_.-]+=[A-Za-z0-9_.-]*$")
# Quoted: from a scheme to the last quote of the line (a password may hold spaces and
# quotes). Unquoted: to the last "@" of the line, if any, then to the next space.
_URL_IN_TEXT = re.compile(
    r"(?P<q>['\"])(?P<quoted>[A-Za-z][A-Za-z0-9+.-]*:/.*)(?P=q)"
    r"|(?P<bare>[A-Za-z][A-Za-z0-9+.-]*:/(?:.*@)?\S*)"
)
_HOST = r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
_HOSTS = re.compile(rf"(?:{_HOST}(?:,{_HOST})*)?")


@dataclass(frozen=True)
class UrlParts:
    """A URL cut at ``://`` and at the end of its user info (both raw, undecoded)."""

    scheme: str
    userinfo: str | None  # None: the URL has no "@" where user info could end
    rest: str  # host(s), path, query: what follows the user info


def split_url(url: str) -> UrlParts | None:
    """``url`` as scheme, user info and rest; None without ``://``."""
    scheme, sep, after = url.partition("://")
    if not sep:
        return None
    end = _userinfo_end(scheme, after)
    if end < 0:
        return UrlParts(scheme, None, after)
    return UrlParts(scheme, after[:end], after[end + 1 :])


def _userinfo_end(scheme: str, after: str) -> int:
    if scheme.lower() == "unix" and after.startswith("/"):
        return -1  # no user info: the socket path may hold an "@"
    # Everything up to the last "@" is user info, so no piece of a password can pass for
    # a host or a socket path (an "@" in a path after user info is written %40).
    return after.rfind("@")


def redact_url(url: str) -> str:
    """``url`` for a log line: the password and secret query values as ``***``.

    Unlike :meth:`RedisTarget.display` this takes any text, so it masks more than
    it must rather than less: a lone user info (``redis://secret@host``) and a
    query from its first secret parameter on.
    """
    parts = split_url(url.strip())
    if parts is None:
        return "<not a URL>"
    shown = f"{parts.scheme}://" if _is_scheme(parts.scheme) else "<scheme>://"
    if parts.userinfo is not None:
        user, has_password, _ = parts.userinfo.partition(":")
        shown += f"{user}:{MASK}@" if has_password and PLAIN_USER.match(user) else f"{MASK}@"
    where, question, query = parts.rest.partition("?")
    where, hash_, _ = where.partition("#")
    hosts = where.partition("/")[0]
    if not _HOSTS.fullmatch(hosts) or (not hosts and parts.scheme.lower() != "unix"):
        # No host:port where one belongs: a password may be in there (``redis://u:pa/ss``
        # without its "@", or ``redis://u:pa@/ss`` without its host).
        return shown + MASK
    shown += where + (f"#{MASK}" if hash_ else "")
    if question:
        shown += "?" + _redact_query(query)
    return shown


def _redact_query(query: str) -> str:
    shown: list[str] = []
    items = query.split("&")
    for index, item in enumerate(items):
        name = item.partition("=")[0]
        if name.lower() in SECRET_PARAMS:
            # A password holding "&" or "#" runs on into what looks like more items.
            shown.append(f"{name}={MASK}" + ("&" + MASK if index + 1 < len(items) else ""))
            break
        shown.append(item if _PLAIN_ITEM.match(item) else MASK)
    return "&".join(shown)


def _is_scheme(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,30}", text) is not None


def redact_text(text: str) -> str:
    """``text`` (an argparse message, say) with every URL in it redacted."""

    def redact(match: re.Match[str]) -> str:
        if match["quoted"] is not None:
            return f"{match['q']}{redact_url(match['quoted'])}{match['q']}"
        url = match["bare"].rstrip(",;)")
        return redact_url(url) + match["bare"][len(url) :]

    return _URL_IN_TEXT.sub(redact, text)


class RedactingParser(argparse.ArgumentParser):
    """argparse, with every URL in its error messages redacted: a mistyped or ambiguous
    flag (``--redis=redis://u:pw@h``) is quoted back whole."""

    def error(self, message: str) -> NoReturn:
        super().error(redact_text(message))
