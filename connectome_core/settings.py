"""Loading a process's settings: environment (injectable), command-line flags, one-line errors.

Each process has one frozen pydantic-settings model whose fields carry their
environment name as ``validation_alias``; flags mirror the fields and win over
the environment. A bad value raises :class:`SettingsError`, one line naming the
variable (and the flag). Secrets are never flags. Every process that talks to
Redis derives its model from :class:`RedisSettings`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectome_core.cli_help import add_version_flag, env_and_default
from connectome_core.redaction import RedactingParser, redact_text
from connectome_core.redis_target import RedisTarget, RedisUrlError, parse_redis_url
from connectome_core.secret_files import read_secret_file, resolve_secret, url_holds_password

S = TypeVar("S", bound="ProcessSettings")


class SettingsError(ValueError):
    """A setting is wrong; the message is one line that names it."""


class ProcessSettings(BaseSettings):
    """Base of every process's settings: frozen, read only from what ``load_settings`` passes."""

    # allow_inf_nan=False: "nan" compares false with every bound, so a range alone
    # would let it through (or call it out of range).
    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

    # Environment prefixes this process owns; unknown names under them are typos.
    owned_prefixes: ClassVar[tuple[str, ...]] = ()
    # Fields holding a secret: refused as a flag, never echoed (they are repr=False too).
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    # Secret field -> the field naming a file that may hold the secret instead.
    secret_files: ClassVar[Mapping[str, str]] = {}

    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias="LOG_FORMAT",
        description="log lines as text, or json: one JSON object per line",
    )

    @field_validator("log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values arrive only through load_settings(), which reads the mapping it is given.
        return (init_settings,)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Environment variable name -> field name."""
        return {str(f.validation_alias or name): name for name, f in cls.model_fields.items()}

    @classmethod
    def env_name(cls, field: str) -> str:
        info = cls.model_fields.get(field)
        return str(info.validation_alias or field) if info is not None else field

    @classmethod
    def setting_name(cls, field: str, flags: Collection[str] = ()) -> str:
        """``SSE_PORT``, or ``--port (SSE_PORT)`` when a flag gave it."""
        env = cls.env_name(field)
        return f"{flag_of(field)} ({env})" if field in flags else env

    @classmethod
    def flag_refusal(cls, field: str, value: object) -> str | None:
        """Why ``value`` may not come from ``field``'s flag, or None when it may."""
        if field not in cls.secret_fields:
            return None
        env = cls.env_name(field)
        source = cls.secret_files.get(field)
        instead = f"{env} or {cls.env_name(source)}" if source else env
        return (
            f"{flag_of(field)}: a secret is never taken from a command line, which every "
            f"user of this host can read: set {instead} in the environment"
        )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.secret_files:
            return data
        data = dict(data)
        for secret, source in cls.secret_files.items():
            value = data.pop(secret, None) or data.pop(cls.env_name(secret), None) or ""
            path = data.get(source) or data.get(cls.env_name(source)) or ""
            data[secret] = resolve_secret(
                str(value), str(path), cls.env_name(secret), cls.env_name(source)
            )
        return data

    @classmethod
    def all_owned_prefixes(cls) -> tuple[str, ...]:
        """``owned_prefixes`` of this class and of every base, so a mixin's survive overriding."""
        found: list[str] = []
        for klass in cls.__mro__:
            for prefix in vars(klass).get("owned_prefixes", ()):
                if prefix not in found:
                    found.append(prefix)
        return tuple(found)


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class RedisSettings(ProcessSettings):
    """The Redis settings every process shares: ``REDIS_URL`` in every form, TLS, passwords.

    ``REDIS_TLS_`` is owned, so ``REDIS_TLS_CA_FLIE`` is a typo error. ``REDIS_``
    as a whole is not: Kubernetes injects ``REDIS_PORT``, ``REDIS_SERVICE_HOST``...
    for a Service named ``redis``, and that must not stop a process. For the same
    reason ``REDIS_SENTINEL_`` is not owned (a Service named ``redis-sentinel``).
    """

    owned_prefixes: ClassVar[tuple[str, ...]] = ("REDIS_TLS_",)
    secret_fields: ClassVar[frozenset[str]] = frozenset({"redis_sentinel_password"})

    # Kept out of repr and never echoed in an error: it may hold a password.
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        repr=False,
        validation_alias="REDIS_URL",
        description="Redis: redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://",
    )
    redis_tls_ca_file: str = Field(
        "",
        validation_alias="REDIS_TLS_CA_FILE",
        description="CA bundle that signs Redis's certificate (rediss://; empty: system CAs)",
    )
    redis_tls_cert_file: str = Field(
        "", validation_alias="REDIS_TLS_CERT_FILE", description="client certificate (rediss://)"
    )
    redis_tls_key_file: str = Field(
        "",
        validation_alias="REDIS_TLS_KEY_FILE",
        description="key of the client certificate (rediss://)",
    )
    redis_password_file: str = Field(
        "",
        validation_alias="REDIS_PASSWORD_FILE",
        description="file holding the Redis password (the master's); replaces one in REDIS_URL",
    )
    # A plain str kept out of repr (not SecretStr) so that it round-trips through
    # to_environ and reads "(empty)" as a default; the RedisTarget holds it as SecretStr.
    redis_sentinel_password: str = Field(
        "",
        repr=False,
        validation_alias="REDIS_SENTINEL_PASSWORD",
        description="password of the sentinels, when they have their own",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url_form(cls, value: str | None) -> str | None:
        if value is None:  # a subclass may make REDIS_URL optional (``up``)
            return None
        try:
            parse_redis_url(value)
        except RedisUrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _readable_file(cls, value: str) -> str:
        if value:
            try:
                with open(value, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror}") from None
        return value

    @field_validator("redis_tls_key_file")
    @classmethod
    def _cert_and_key(cls, value: str, info: ValidationInfo) -> str:
        cert = info.data.get("redis_tls_cert_file")
        if cert is not None and bool(cert) != bool(value):
            raise ValueError(
                "a client certificate needs both REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE"
            )
        return value

    # Read from REDIS_PASSWORD_FILE at start; not a field, so to_environ passes the path.
    _redis_password: SecretStr | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _password_from_file(self) -> Self:
        if self.redis_password_file:
            text = read_secret_file("REDIS_PASSWORD_FILE", self.redis_password_file)
            self._redis_password = SecretStr(text)
        return self

    @classmethod
    def flag_refusal(cls, field: str, value: object) -> str | None:
        if field == "redis_url" and isinstance(value, str) and url_holds_password(value):
            return (
                "--redis-url: it holds a password, and a command line is readable by every "
                "user of this host: set REDIS_URL in the environment, or put the password "
                "in a file named by REDIS_PASSWORD_FILE"
            )
        return super().flag_refusal(field, value)

    def redis_target(self) -> RedisTarget:
        """The parsed ``REDIS_URL`` with its TLS files and passwords attached."""
        if self.redis_url is None:
            raise ValueError("REDIS_URL is not set")
        password = self._redis_password
        return parse_redis_url(
            self.redis_url,
            tls_ca_file=self.redis_tls_ca_file,
            tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
            sentinel_password=self.redis_sentinel_password,
            password=password.get_secret_value() if password is not None else None,
        )


def load_settings(
    cls: type[S],
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """``cls`` from ``environ`` (default ``os.environ``) and flag ``overrides`` by field name."""
    environ = os.environ if environ is None else environ
    names = cls.env_names()
    prefixes = cls.all_owned_prefixes()
    for key in environ:
        if key.startswith(prefixes) and key not in names:
            raise SettingsError(f"{key}: unknown setting (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {field: environ[env] for env, field in names.items() if env in environ}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for field, value in flags.items():
        refusal = cls.flag_refusal(field, value)
        if refusal is not None:
            raise SettingsError(refusal)
    values.update(flags)
    try:
        return cls(**values)
    except ValidationError as exc:
        raise SettingsError(_one_line(cls, exc, flags)) from None


def flag_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def _one_line(cls: type[ProcessSettings], exc: ValidationError, flags: Collection[str]) -> str:
    parts = []
    for err in exc.errors():
        text = _plain(err)
        if not err["loc"]:
            # A check across fields: its message starts with the setting it is about.
            for field in flags:
                env = re.escape(cls.env_name(field))
                text = re.sub(rf"\b{env}\b", cls.setting_name(field, flags), text)
            parts.append(text)
            continue
        field = str(err["loc"][0])
        given = err.get("input")
        # A field kept out of repr (a secret, a URL that may hold a password) is never
        # echoed: not even redacted, since what cannot be parsed cannot be redacted.
        info = cls.model_fields.get(field)
        echo = isinstance(given, str) and info is not None and info.repr is not False
        shown = f" (got {redact_text(repr(given))})" if echo else ""
        parts.append(f"{cls.setting_name(field, flags)}: {text}{shown}")
    return "; ".join(parts)


def _plain(err: ErrorDetails) -> str:
    """The error in our words: a validator's own message without pydantic's prefix."""
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return str(err["ctx"]["error"])
    if err["type"] == "finite_number":
        given = str(err.get("input", "")).strip().lower().lstrip("+-")
        return "not a number" if given == "nan" else "must be a finite number"
    return err["msg"]


def add_setting_flags(
    parser: argparse.ArgumentParser,
    cls: type[ProcessSettings],
    fields: Collection[str] | None = None,
) -> None:
    """One ``--kebab-case`` flag per field (or per one of ``fields``), documented with its
    environment name and default.

    A secret's flag exists only to be refused in one line (an unknown flag would
    make argparse quote it back, secret and all); it is left out of ``--help``.
    """
    for name, field in cls.model_fields.items():
        if fields is not None and name not in fields:
            continue
        env = str(field.validation_alias or name)
        secret = name in cls.secret_fields
        parser.add_argument(
            flag_of(name),
            dest=name,
            default=None,
            metavar=env,
            help=argparse.SUPPRESS
            if secret
            else f"{field.description or ''} {env_and_default(env, field)}",
        )


def settings_from_args(
    cls: type[S], args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> S:
    overrides = {name: getattr(args, name, None) for name in cls.model_fields}
    return load_settings(cls, environ, overrides)


def to_environ(settings: ProcessSettings) -> dict[str, str]:
    """The settings as environment variables, for child processes that load them again.

    A secret read from its file is not written out: the child reads the file too.
    """
    environ = {}
    cls = type(settings)
    from_files = {
        secret for secret, source in cls.secret_files.items() if getattr(settings, source)
    }
    for name, field in cls.model_fields.items():
        if name in from_files:
            continue
        value = getattr(settings, name)
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        environ[str(field.validation_alias or name)] = text
    return environ


def parse_csv(value: object) -> object:
    """Comma-separated environment values become lists (``a, b`` -> ``["a", "b"]``)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def build_parser(
    prog: str, description: str, cls: type[ProcessSettings]
) -> argparse.ArgumentParser:
    parser = RedactingParser(prog=prog, description=description)
    add_version_flag(parser, prog)
    add_setting_flags(parser, cls)
    return parser


def settings_from_cli(
    prog: str, description: str, cls: type[S], argv: Sequence[str] | None = None
) -> S | None:
    """A service's settings from its flags and environment, or None after one line on stderr."""
    args = build_parser(prog, description, cls).parse_args(argv)
    try:
        return settings_from_args(cls, args)
    except SettingsError as exc:
        print(f"{prog}: bad setting: {exc}", file=sys.stderr)
        return None
