"""Secrets from the environment or a file: never from a command line, never in a message.

A command line is readable by every user of the host (``ps``), so a secret
comes from its environment variable or from a file named by ``<NAME>_FILE``
(Docker and Kubernetes mount secrets as files). Errors name the setting and
the path, never the content.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectome_core.redaction import split_url
from connectome_core.redis_target import RedisUrlError, parse_redis_url


class SecretFileError(ValueError):
    """A secret's file cannot be used, or the secret is given twice; one line."""


def read_secret_file(setting: str, path: str) -> str:
    """The secret in ``path``, one trailing newline dropped (``echo secret > file``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SecretFileError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"{setting}: {path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise SecretFileError(f"{setting}: {path} is empty")
    return text


def resolve_secret(value: str, path: str, setting: str, file_setting: str) -> str:
    """``value`` (the secret's own setting) or the content of ``path`` (its file setting)."""
    if not path:
        return value
    if value:
        raise SecretFileError(f"{setting} and {file_setting} are both set: keep one")
    return read_secret_file(file_setting, path)


def secret_from_environ(environ: Mapping[str, str], setting: str) -> str:
    """``setting`` from ``environ``, or from the file that ``<setting>_FILE`` names."""
    file_setting = f"{setting}_FILE"
    return resolve_secret(
        environ.get(setting, ""), environ.get(file_setting, ""), setting, file_setting
    )


def url_holds_password(url: str) -> bool:
    """True when the Redis URL ``url`` carries a password (or, unparsed, may carry one)."""
    try:
        return parse_redis_url(url).password is not None
    except RedisUrlError:
        parts = split_url(url.strip())
        return parts is not None and (parts.userinfo is not None or "password" in parts.rest)
