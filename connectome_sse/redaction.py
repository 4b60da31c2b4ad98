"""Keeping secrets out of logs: a Redis URL is only ever logged through here."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry a secret (``unix:///run/redis.sock?password=...`` is the
# only way to give a socket URL a password).
SECRET_PARAMS = frozenset({"password", "pass", "pwd", "secret", "token", "auth"})
MASK = "***"


def redact_url(url: str) -> str:
    """``redis://user:secret@host:6379/0?password=x`` -> ``redis://user:***@host:6379/0?password=***``."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        # ``redis://secret@host``: redis-py takes a lone userinfo as a password.
        shown = f"{user}:" if has_password or not user else ""
        netloc = f"{shown}{MASK}@{hostport}"
    secret_query = any(name.lower() in SECRET_PARAMS for name, _ in query)
    if netloc == parts.netloc and not secret_query:
        return url
    text = parts.query
    if secret_query:
        masked = [(n, MASK if n.lower() in SECRET_PARAMS else v) for n, v in query]
        text = urlencode(masked, safe="*")
    if "//" not in url:  # urlunsplit would drop an empty authority (unix:///path)
        return urlunsplit((parts.scheme, netloc, parts.path, text, parts.fragment))
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    rebuilt += f"?{text}" if text else ""
    return rebuilt + (f"#{parts.fragment}" if parts.fragment else "")
