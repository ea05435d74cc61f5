"""The typed settings layer of every process, on pydantic-settings (``clmlf train`` and every
``clmlf-monitor`` command; the option groups of the monitor and consumer processes are in
:mod:`monitor.settings`).

One settings class per process. A field's alias is its environment variable (a field without
one is a flag only); argparse declares the flags without defaults of their own (``dest`` = field
name), and :func:`settings_from_args` builds the class once from the flags given (they win),
else the environment, else the field's default. A bad value exits 2 with one line naming the flag.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

S = TypeVar("S", bound="ProcessSettings")


class _AliasEnvSource(EnvSettingsSource):
    """Environment variables named by a field's alias only: a field without an alias is a flag only,
    and no field is read from a variable spelled like its Python name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field.alias is None:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def _extract_field_info(self, field: FieldInfo, field_name: str, *args: Any, **kwargs: Any):
        infos = super()._extract_field_info(field, field_name, *args, **kwargs)
        return [info for info in infos if info[0] != field_name] or infos[:1]


class ProcessSettings(BaseSettings):
    """Base of every process's settings: frozen, unknown keys refused, empty variables ignored."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", populate_by_name=True, env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init keywords), then the environment; no dotenv or secrets directory."""
        return init_settings, _AliasEnvSource(settings_cls)


def settings_from_args(parser: argparse.ArgumentParser, settings: type[S], args: argparse.Namespace,
                       **values: Any) -> S:
    """``settings`` from the flags given in ``args`` (plus ``values``), the environment and the
    defaults, validated once; a bad value exits 2 through ``parser.error`` with one line."""
    given = {name: getattr(args, name) for name in settings.model_fields if getattr(args, name, None) is not None}
    try:
        return settings(**given, **values)
    except ValidationError as exc:
        _exit_with(parser, settings, exc, getattr(args, "command", None))


def _flag_of(parser: argparse.ArgumentParser, dest: str, command: str | None) -> str | None:
    """The option string of ``dest`` in ``parser`` or, for the top-level parser, in ``command``'s."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return _flag_of(action.choices[command], dest, None)
    return next((a.option_strings[0] for a in parser._actions if a.dest == dest and a.option_strings), None)


def _exit_with(parser: argparse.ArgumentParser, settings: type[ProcessSettings], exc: ValidationError,
               command: str | None) -> NoReturn:
    err = exc.errors()[0]
    message = str(err.get("msg", "invalid value"))
    loc = [str(part) for part in err.get("loc", ())]
    if loc:
        field_name = next((n for n, f in settings.model_fields.items() if loc[0] in (n, f.alias)), loc[0])
        field = settings.model_fields.get(field_name)
        env = field.alias if field is not None else None
        where = _flag_of(parser, field_name, command) or env or field_name.replace("_", "-")
        if err.get("type") == "missing":
            message = f"{where} is required" + (f" (or set {env})" if env else "")
        else:
            message = f"{where}: {message}"
    parser.error(message)
