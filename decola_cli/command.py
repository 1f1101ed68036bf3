"""Commands built from their settings: each option is declared once, as a field of the command's
pydantic-settings model (:func:`option`), and :func:`settings_command` turns the model into the
Typer signature.

Every option the user does not give reaches pydantic as "not given", so the value comes from
the ``DECOLA_<FIELD>`` environment variable, else from the field's default (``None`` there means
"the core job's default", which ``--help`` shows). Precedence is therefore command line >
environment > default for every option of every command.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
from pydantic_settings.exceptions import SettingsError
from rich.markup import escape

from decola_core.errors import ConfigError

ENV_PREFIX = "DECOLA_"
CLI_KEY = "decola_cli"
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def option(
    *flags: str,
    help: str,
    default: Any = None,
    argument: bool = False,
    min: float | None = None,
    max: float | None = None,
    panel: str | None = None,
    metavar: str | None = None,
    **field: Any,
) -> Any:
    """A settings field that is also a command-line option (``flags``; the first is the long
    name) or, with ``argument``, a positional argument. ``field`` goes to pydantic's Field."""
    cli = {
        "flags": flags,
        "argument": argument,
        "min": min,
        "max": max,
        "panel": panel,
        "metavar": metavar,
    }
    extra = {CLI_KEY: cli}
    if "default_factory" not in field:  # one value (not a list): environment values are checked too
        if min is not None:
            field.setdefault("ge", min)
        if max is not None:
            field.setdefault("le", max)
    if "default_factory" in field:
        return Field(description=help, json_schema_extra=extra, **field)
    return Field(default, description=help, json_schema_extra=extra, **field)


def cli_spec(info: FieldInfo) -> dict | None:
    """The command-line spec of a settings field (None: environment/default only)."""
    extra = info.json_schema_extra
    return extra.get(CLI_KEY) if isinstance(extra, dict) else None


def cli_flags(settings_cls: type[BaseSettings]) -> dict[str, list[str]]:
    """Field name -> its flags (``--x`` and ``--no-x`` for on/off options; [] for arguments)."""
    result = {}
    for name, info in settings_cls.model_fields.items():
        spec = cli_spec(info)
        if spec is None:
            continue
        flags = [] if spec["argument"] else [f for part in spec["flags"] for f in part.split("/")]
        result[name] = flags
    return result


def _value_type(annotation: Any) -> Any:
    """The annotation without ``None``, as Typer should parse it."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _value_type(args[0]) if len(args) == 1 else annotation
    if origin is Literal:  # typer parses the text; pydantic checks the choice
        return str
    return annotation


def _shown_default(name: str, info: FieldInfo, defaults: Sequence[Callable]) -> str | None:
    """The default ``--help`` shows: the field's own, else the core job's (``defaults``)."""
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    for source in defaults:
        parameter = inspect.signature(source).parameters.get(name)
        if value is None and parameter is not None and parameter.default is not parameter.empty:
            value = parameter.default
    if value is None or isinstance(value, bool) or value in ([], ()):
        return None
    return str(value)


def _parameter(name: str, info: FieldInfo, spec: dict, defaults) -> inspect.Parameter:
    value_type = _value_type(info.annotation)
    help_text = escape(info.description or "")  # the help is rich markup; [..] is literal here
    shown = _shown_default(name, info, defaults)
    if shown is not None and not spec["argument"]:
        help_text += f" [dim]\\[default: {shown}][/]"
    common = {"help": help_text, "metavar": spec["metavar"], "rich_help_panel": spec["panel"]}
    if value_type in (int, float) or typing.get_args(value_type)[:1] in ((int,), (float,)):
        common.update(min=spec["min"], max=spec["max"])
    if spec["argument"]:
        required = info.is_required()
        marker = typer.Argument(show_default=False, **common)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        default = ... if required else None
        annotation = (
            Annotated[value_type, marker] if required else Annotated[value_type | None, marker]
        )
        return inspect.Parameter(name, kind, default=default, annotation=annotation)
    marker = typer.Option(*spec["flags"], show_default=False, **common)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[value_type | None, marker],
    )


def settings_command(
    settings_cls: type[SettingsT], *, defaults: Sequence[Callable] = ()
) -> Callable[[Callable[[SettingsT], Any]], Callable[..., Any]]:
    """Decorate ``body(settings)``: the result is a Typer command whose options are the CLI
    fields of ``settings_cls``; ``defaults`` (core job dataclasses or functions) supply the
    defaults shown in ``--help`` for fields whose own default is None."""

    def decorate(body: Callable[[SettingsT], Any]) -> Callable[..., Any]:
        params = []
        for name, info in settings_cls.model_fields.items():
            spec = cli_spec(info)
            if spec is not None:
                params.append(_parameter(name, info, spec, defaults))
        shared = ("data_root", "cache_dir", "offline")  # every command has them: listed last
        params.sort(key=lambda p: (p.kind, p.name in shared))  # arguments first

        def command(**values: Any) -> Any:
            return command.body(build_settings(settings_cls, **values))

        command.body = body  # type: ignore[attr-defined]  # tests replace it to see the settings
        command.settings_class = settings_cls  # type: ignore[attr-defined]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__name__ = body.__name__
        command.__doc__ = body.__doc__
        return command

    return decorate


def build_settings(cls: type[SettingsT], **cli_values: Any) -> SettingsT:
    """Instantiate ``cls`` from CLI values (None = not given) over environment and defaults."""
    given = {k: v for k, v in cli_values.items() if v is not None}
    try:
        return cls(**given)
    except SettingsError as err:  # an environment variable that does not parse
        field = str(err).split('"')[1] if '"' in str(err) else "?"
        raise ConfigError(
            f"environment variable {ENV_PREFIX}{field.upper()}: not a valid value "
            f'({err.__cause__ or err}); lists are JSON, e.g. \'["a", "b"]\''
        ) from None
    except ValidationError as err:
        flags = cli_flags(cls)
        problems = []
        for item in err.errors():
            name = str(item["loc"][0]) if item["loc"] else "?"
            if item["type"] == "missing":
                what = f"option {flags[name][0]}" if flags.get(name) else f"argument {name}"
                problems.append(f"missing {what}")
                continue
            if name in given:
                source = f"option {flags[name][0]}" if flags.get(name) else f"argument {name}"
            else:
                source = f"environment variable {ENV_PREFIX}{name.upper()}"
            problems.append(f"{source}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigError("; ".join(problems)) from None


def job_values(settings: BaseSettings, job: Callable) -> dict[str, Any]:
    """The settings that the core ``job`` (a job dataclass or function) takes by keyword,
    leaving out the ones not given (None), so the job's own defaults apply."""
    names = {n for n, p in inspect.signature(job).parameters.items() if p.kind is p.KEYWORD_ONLY}
    return {
        k: getattr(settings, k)
        for k in names & set(type(settings).model_fields)
        if getattr(settings, k) is not None
    }
