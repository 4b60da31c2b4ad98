"""A gateway URL as ``listen`` and ``doctor`` take it, its user info cut out before parsing.

Credentials in the URL (a proxy's Basic auth) are handed to httpx as ``auth``
and never stay in the URL, which these commands print in notes and reports.
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from connectome_core.redaction import redact_url, split_url

BasicCredentials = tuple[str, str]


class GatewayUrlError(ValueError):
    """Not an http(s) URL; the message is one line and holds no password."""


def split_gateway_url(text: str) -> tuple[SplitResult, BasicCredentials | None]:
    """``text`` (``http[s]://…`` or a bare ``host:port``) without its user info, and that
    user info as (user, password), percent-escapes decoded."""
    url = text.strip()
    if "://" not in url:
        url = f"http://{url}"
    parts = split_url(url)
    assert parts is not None, "the URL has a scheme by now"
    try:
        plain = urlsplit(f"{parts.scheme}://{parts.rest}")
        valid = plain.scheme.lower() in ("http", "https") and bool(plain.hostname)
        plain.port  # noqa: B018 - raises ValueError on a port that is no number
    except ValueError:
        valid = False
    if not valid:
        raise GatewayUrlError(f"{redact_url(url)} is not an http:// or https:// URL")
    if parts.userinfo is None:
        return plain, None
    user, _, password = parts.userinfo.partition(":")
    return plain, (unquote(user), unquote(password))
