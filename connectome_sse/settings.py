"""Loading a process's settings: environment (injectable), command-line flags, one-line errors.

Each process has one frozen pydantic-settings model. Fields carry their
environment name as ``validation_alias`` (``SSE_PORT``, ``REDIS_URL``...), so
the model reads the same names whether they come from ``os.environ`` or from a
mapping a test passes in. Command-line flags mirror the fields (``--port``,
``--ping-interval``) and win over the environment.

A bad value raises :class:`SettingsError` whose message is one line naming
the environment variable; entry points print it and exit 2. A variable that
carries one of the model's prefixes (``owned_prefixes`` of the class and of
its bases) but is not one of its settings (a typo such as ``SSE_PROT``) is an
error too, rather than a silently ignored knob.

Every process that talks to Redis derives its model from
:class:`RedisSettings`: ``REDIS_URL`` in any of SPEC's forms, the TLS files
and the sentinels' password, checked together at start, and
:meth:`RedisSettings.redis_target` to hand to ``connectome_sse.redis_connect``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectome_sse.redaction import RedactingParser
from connectome_sse.redis_target import RedisTarget, RedisUrlError, parse_redis_url

S = TypeVar("S", bound="ProcessSettings")


class SettingsError(ValueError):
    """A setting is wrong; the message is one line that names it."""


class ProcessSettings(BaseSettings):
    """Base of every process's settings: frozen, read only from what ``load_settings`` passes."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Environment prefixes this process owns; unknown names under them are typos.
    owned_prefixes: ClassVar[tuple[str, ...]] = ()

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
    """The Redis settings every process shares (SPEC "Which Redis").

    ``REDIS_TLS_`` is owned, so ``REDIS_TLS_CA_FLIE`` is a typo error. ``REDIS_``
    as a whole is not: Kubernetes injects ``REDIS_PORT``, ``REDIS_SERVICE_HOST``...
    for a Service named ``redis``, and that must not stop a process. For the same
    reason ``REDIS_SENTINEL_`` is not owned (a Service named ``redis-sentinel``).
    """

    owned_prefixes: ClassVar[tuple[str, ...]] = ("REDIS_TLS_",)

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

    def redis_target(self) -> RedisTarget:
        """The parsed ``REDIS_URL`` with its TLS files and sentinel password attached."""
        if self.redis_url is None:
            raise ValueError("REDIS_URL is not set")
        return parse_redis_url(
            self.redis_url,
            tls_ca_file=self.redis_tls_ca_file,
            tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
            sentinel_password=self.redis_sentinel_password,
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
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return cls(**values)
    except ValidationError as exc:
        raise SettingsError(_one_line(cls, exc)) from None


def _one_line(cls: type[ProcessSettings], exc: ValidationError) -> str:
    fields = {name: str(f.validation_alias or name) for name, f in cls.model_fields.items()}
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        env = fields.get(field, field)
        given = err.get("input")
        # A field kept out of repr (a secret, a URL that may hold a password) is never
        # echoed: not even redacted, since what cannot be parsed cannot be redacted.
        info = cls.model_fields.get(field)
        secret = info is not None and info.repr is False
        shown = f" (got {given!r})" if isinstance(given, str) and not secret else ""
        parts.append(f"{env}: {err['msg']}{shown}")
    return "; ".join(parts)


def add_setting_flags(parser: argparse.ArgumentParser, cls: type[ProcessSettings]) -> None:
    """One ``--kebab-case`` flag per field, documented with its environment name and default."""
    for name, field in cls.model_fields.items():
        env = str(field.validation_alias or name)
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar=env,
            help=f"{field.description or ''} [env {env}, default {field.default!r}]",
        )


def settings_from_args(
    cls: type[S], args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> S:
    overrides = {name: getattr(args, name, None) for name in cls.model_fields}
    return load_settings(cls, environ, overrides)


def to_environ(settings: ProcessSettings) -> dict[str, str]:
    """The settings as environment variables, for child processes that load them again."""
    environ = {}
    for name, field in type(settings).model_fields.items():
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
