"""Loading a process's settings: environment (injectable), command-line flags, one-line errors.

Each process has one frozen pydantic-settings model. Fields carry their
environment name as ``validation_alias`` (``SSE_PORT``, ``REDIS_URL``...), so
the model reads the same names whether they come from ``os.environ`` or from a
mapping a test passes in. Command-line flags mirror the fields (``--port``,
``--ping-interval``) and win over the environment.

A bad value raises :class:`SettingsError` whose message is one line naming
the environment variable; entry points print it and exit 2. A variable that
carries one of the model's prefixes but is not one of its settings (a typo
such as ``SSE_PROT``) is an error too, rather than a silently ignored knob.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectome_sse.redaction import redact_url

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


def load_settings(
    cls: type[S],
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """``cls`` from ``environ`` (default ``os.environ``) and flag ``overrides`` by field name."""
    environ = os.environ if environ is None else environ
    names = cls.env_names()
    for key in environ:
        if key.startswith(cls.owned_prefixes) and key not in names:
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
        # Inputs are echoed redacted: a REDIS_URL password must not reach a log.
        shown = f" (got {redact_url(given)!r})" if isinstance(given, str) else ""
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
    parser = argparse.ArgumentParser(prog=prog, description=description)
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
