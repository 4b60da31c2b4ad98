"""Credentials and TLS trust of the CLI's HTTP clients (``doctor``, ``listen``): one set of flags.

``--token T`` (``Authorization: Bearer T``), ``--cookie NAME=VALUE`` (or a
bare stream token, sent as ``sse_token``; repeatable), and ``--cacert FILE``
or ``--insecure`` for servers whose certificate the system does not trust
(compose's self-signed HTTPS port). Read once into ``ClientOptions``.
"""

from __future__ import annotations

import argparse
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

STREAM_COOKIE = "sse_token"
# RFC 6265: a cookie name is an HTTP token; a value has no space, '"', ',', ';' or '\'.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")


class UsageError(ValueError):
    """A flag the command cannot use; the message is one line for the user."""


def parse_cookie(text: str) -> tuple[str, str]:
    """``NAME=VALUE``, or a bare token (no ``=``) as the stream cookie; never echoes the value."""
    name, equals, value = text.partition("=")
    if not equals:
        name, value = STREAM_COOKIE, text
    if not _NAME.fullmatch(name) or not value or not _VALUE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "expected NAME=VALUE (or a stream token): a cookie name, then a value without "
            "spaces, quotes, commas, semicolons or backslashes"
        )
    return name, value


@dataclass(frozen=True)
class ClientOptions:
    token: str | None = None
    cookies: tuple[tuple[str, str], ...] = ()
    insecure: bool = False
    cacert: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies)
        return headers

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify`` takes: the system's trust, a CA file's, or none."""
        if self.insecure:
            return False
        if self.cacert:
            return ssl.create_default_context(cafile=self.cacert)
        return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", metavar="T", help="stream token (connectome-sse token): Authorization: Bearer T"
    )
    parser.add_argument(
        "--cookie",
        metavar="NAME=VALUE",
        type=parse_cookie,
        action="append",
        default=[],
        help=f"send this cookie (repeatable); a bare token T is sent as {STREAM_COOKIE}=T",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    tls.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE")


def from_args(args: argparse.Namespace) -> ClientOptions:
    """The options of parsed arguments; ``UsageError`` for a CA file that is not there."""
    if args.cacert and not Path(args.cacert).is_file():
        raise UsageError(f"--cacert: no such file {args.cacert!r}")
    options = ClientOptions(
        token=args.token,
        cookies=tuple(args.cookie),
        insecure=args.insecure,
        cacert=args.cacert,
    )
    try:
        options.verify()
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(
            f"--cacert: {args.cacert!r} holds no usable CA certificate ({exc})"
        ) from None
    return options
