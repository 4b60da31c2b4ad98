"""Which Redis a process talks to: every ``REDIS_URL`` form, parsed in one place.

``redis://``, ``rediss://``, ``unix://`` and ``redis+sentinel://``/``rediss+sentinel://``
become a frozen :class:`RedisTarget` (passwords as ``SecretStr``; ``display()``
for logs). Stricter than redis-py's ``from_url``: unknown query parameters are
refused, so ``?ssl_cert_reqs=none`` can never turn certificate checks off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote

from pydantic import BaseModel, ConfigDict, SecretStr

from connectome_core.redaction import PLAIN_USER, SECRET_PARAMS, split_url

Kind = Literal["tcp", "unix", "sentinel"]
Address = tuple[str, int]

REDIS_PORT = 6379
SENTINEL_PORT = 26379
SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("tcp", False),
    "rediss": ("tcp", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
FORMS = "redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"

# Sentinel accepts any master name without spaces; we refuse only what cannot be a name.
_MASTER_NAME = re.compile(r"^[^\s/\\,@?#]{1,200}$")
_HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,30}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
KNOWN_PARAMS = frozenset({"db", "password", "username"})


class RedisUrlError(ValueError):
    """``REDIS_URL`` is malformed; the message is one line and holds no password."""


class RedisTarget(BaseModel):
    """A parsed ``REDIS_URL`` plus the TLS files and sentinel password that go with it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    tls: bool = False
    # tcp: one address; sentinel: the sentinels' addresses, in the URL's order.
    addresses: tuple[Address, ...] = ()
    path: str | None = None  # unix socket
    master_name: str | None = None
    db: int = 0
    username: str | None = None
    password: SecretStr | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    sentinel_password: SecretStr | None = None

    @property
    def is_sentinel(self) -> bool:
        return self.kind == "sentinel"

    @property
    def scheme(self) -> str:
        if self.kind == "unix":
            return "unix"
        base = "rediss" if self.tls else "redis"
        return f"{base}+sentinel" if self.kind == "sentinel" else base

    def display(self) -> str:
        """The URL with any password shown as ``***``: the form for logs and error lines."""
        userinfo = ""
        if self.username is not None or self.password is not None:
            user = quote(self.username or "", safe="")
            userinfo = f"{user}:***@" if self.password is not None else f"{user}@"
        if self.kind == "unix":
            query = f"?db={self.db}" if self.db else ""
            return f"unix://{userinfo}{self.path}{query}"
        hosts = ",".join(_format_address(a) for a in self.addresses)
        name = f"/{quote(self.master_name or '', safe='')}" if self.is_sentinel else ""
        return f"{self.scheme}://{userinfo}{hosts}{name}/{self.db}"

    def __str__(self) -> str:
        return self.display()


def parse_redis_url(
    url: str,
    *,
    tls_ca_file: str | Path | None = None,
    tls_cert_file: str | Path | None = None,
    tls_key_file: str | Path | None = None,
    sentinel_password: str | None = None,
    password: str | None = None,
) -> RedisTarget:
    """``url`` (one of the forms above) and the TLS/sentinel settings as a :class:`RedisTarget`.

    Empty strings for the keyword settings mean "not set"; ``password`` (from
    ``REDIS_PASSWORD_FILE``) replaces any password the URL holds. A client
    certificate needs its key and the reverse. Files are not opened here (see
    ``connectome_core.settings.RedisSettings`` for the start-up checks).

    The user info is cut out first (it runs to the last ``@`` before the host, so
    a password may hold ``/``, ``?``, ``#`` or ``@``), and no message ever quotes
    a piece of the URL other than a scheme or a query parameter's name.
    """
    parts = split_url(url.strip())
    if parts is None:
        raise RedisUrlError(f"not a URL: use {FORMS}")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f" {scheme!r}" if _SCHEME.match(scheme) else ""
        raise RedisUrlError(f"unknown scheme{shown}: use {FORMS}")
    kind, tls = SCHEMES[scheme]
    user, url_password = _userinfo(parts.userinfo)
    if "#" in parts.rest:
        raise RedisUrlError("a fragment (#...) has no meaning in a Redis URL")
    rest, _, query_text = parts.rest.partition("?")
    query = _query(query_text)
    if kind == "unix":
        fields = _parse_unix(parts.userinfo is not None, rest, query, user, url_password)
    else:
        if query:
            raise RedisUrlError(
                f"{_unsupported(query)} in a {scheme}:// URL "
                "(TLS files come from REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE)"
            )
        fields = {**_parse_network(kind, rest), "username": user, "password": url_password}
    if password:
        fields["password"] = SecretStr(password)
    cert = _path_or_none(tls_cert_file)
    key = _path_or_none(tls_key_file)
    if (cert is None) != (key is None):
        missing = "REDIS_TLS_KEY_FILE" if key is None else "REDIS_TLS_CERT_FILE"
        raise RedisUrlError(f"a client certificate needs both files: {missing} is not set")
    return RedisTarget(
        kind=kind,
        tls=tls,
        tls_ca_file=_path_or_none(tls_ca_file),
        tls_cert_file=cert,
        tls_key_file=key,
        sentinel_password=SecretStr(sentinel_password) if sentinel_password else None,
        **fields,
    )


def _path_or_none(value: str | Path | None) -> Path | None:
    if value is None or str(value) == "":
        return None
    return Path(value)


def _query(text: str) -> dict[str, str]:
    if not text:
        return {}
    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            shown = f" {name!r}" if name in KNOWN_PARAMS else ""
            raise RedisUrlError(f"query parameter{shown} is given twice")
        query[name] = value
    return query


def _unsupported(query: dict[str, str]) -> str:
    """``unsupported query parameter 'x'`` for the first unknown name; the name is left out
    when the query holds a password, which may have run on past an ``&`` into what looks
    like another parameter."""
    name = min(set(query) - KNOWN_PARAMS or set(query))
    if name in KNOWN_PARAMS or (_PARAM_NAME.match(name) and not set(query) & SECRET_PARAMS):
        return f"unsupported query parameter {name!r}"
    return "unsupported query parameter"


def _userinfo(userinfo: str | None) -> tuple[str | None, SecretStr | None]:
    """``user:password`` (raw) -> (user, password), percent-escapes decoded."""
    if userinfo is None:
        return None, None
    user_text, has_password, password_text = userinfo.partition(":")
    if not PLAIN_USER.match(user_text):
        # Most likely a password whose ":" is missing: never shown, as a user name would be.
        raise RedisUrlError(
            "the user info is not user:password (a user name holding / ? # @ must be "
            "percent-encoded)"
        )
    user = unquote(user_text) or None
    password = SecretStr(unquote(password_text)) if has_password and password_text else None
    return user, password


def _parse_db(text: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise RedisUrlError("the database is not a number in 0..1000000")
    return int(text)


def _parse_address(text: str, default_port: int) -> Address:
    if not text:
        raise RedisUrlError("a host is missing")
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or not host or ":" not in host:
            raise RedisUrlError("a bracketed IPv6 address is malformed")
        port_text = after[1:] if after.startswith(":") else after
        if after and not after.startswith(":"):
            raise RedisUrlError("a bracketed IPv6 address is malformed")
    else:
        host, _, port_text = text.partition(":")
        if not _HOST.match(host):
            raise RedisUrlError("a host is not a host name or address")
    if port_text == "":
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisUrlError("a port is not a number in 1..65535")
    return host, int(port_text)


def _format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_network(kind: Kind, rest: str) -> dict[str, object]:
    hosts, slash, path = rest.partition("/")
    if kind == "tcp":
        if "," in hosts:
            raise RedisUrlError("several hosts need redis+sentinel://")
        address = _parse_address(hosts, REDIS_PORT)
        segments = path.split("/") if slash and path else []
        if len(segments) > 1:
            raise RedisUrlError("the path is /<db> only")
        db = _parse_db(segments[0]) if segments and segments[0] else 0
        return {"addresses": (address,), "db": db}
    addresses = tuple(_parse_address(h, SENTINEL_PORT) for h in hosts.split(","))
    segments = path.split("/") if slash else []
    if not segments or not segments[0]:
        raise RedisUrlError("the master name is missing: redis+sentinel://host:port/<master>")
    if len(segments) > 2:
        raise RedisUrlError("the path is /<master-name>[/<db>] only")
    master = unquote(segments[0])
    if not _MASTER_NAME.match(master):
        raise RedisUrlError("the master name is not valid (no spaces, / \\ , @ ? #)")
    db = _parse_db(segments[1]) if len(segments) == 2 and segments[1] else 0
    return {"addresses": addresses, "master_name": master, "db": db}


def _parse_unix(
    has_userinfo: bool,
    path: str,
    query: dict[str, str],
    user: str | None,
    password: SecretStr | None,
) -> dict[str, object]:
    if has_userinfo and not path.startswith("/"):
        raise RedisUrlError("a unix:// URL has no host: unix:///path/redis.sock")
    if set(query) - KNOWN_PARAMS:
        raise RedisUrlError(f"{_unsupported(query)} in a unix:// URL (only db, password, username)")
    if not path.startswith("/") or path == "/":
        if path and not has_userinfo:
            raise RedisUrlError("a unix:// URL has no host: unix:///path/redis.sock")
        raise RedisUrlError("a unix:// URL needs an absolute socket path: unix:///path/redis.sock")
    if "password" in query:
        if password is not None:
            raise RedisUrlError("the password is given twice (user info and ?password=)")
        password = SecretStr(query["password"]) if query["password"] else None
    if "username" in query:
        if user is not None:
            raise RedisUrlError("the user is given twice (user info and ?username=)")
        user = query["username"] or None
    db = _parse_db(query["db"]) if "db" in query else 0
    return {"path": unquote(path), "db": db, "username": user, "password": password}
