"""The option vocabulary of the ``decola`` command: every flag a message names exists, and every
option follows command line > ``DECOLA_<OPTION>`` environment variable > default."""

from __future__ import annotations

import ast
import re
import types
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from decola_cli.command import cli_spec
from decola_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: Flags of other programs that decola's help mentions (torchrun's, in the multi-node example).
FOREIGN_FLAGS = {"--nnodes", "--nproc-per-node"}


def commands() -> dict[str, typing.Any]:
    """Every leaf (click) command by its path, e.g. "zoo download"."""
    found: dict[str, typing.Any] = {}

    def walk(command, path: str) -> None:
        if hasattr(command, "commands"):  # a group (typer may vendor its own click)
            for name, child in command.commands.items():
                walk(child, f"{path} {name}".strip())
        else:
            found[path] = command

    walk(typer.main.get_command(app), "")
    return found


def existing_flags() -> set[str]:
    flags = {"--help"}
    top = typer.main.get_command(app)
    for command in [top, *commands().values()]:
        for param in command.params:
            flags.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    return flags


def message_strings() -> list[tuple[str, str]]:
    """(file, text) of every string constant of the library and CLI except docstrings."""
    found = []
    files = [*(ROOT / "decola_core").rglob("*.py"), *(ROOT / "decola_cli").rglob("*.py")]
    for path in sorted(files):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and id(node) not in docstrings:
                found.append((str(path.relative_to(ROOT)), node.value))
    return found


def test_every_flag_named_in_a_message_exists() -> None:
    flags = existing_flags()
    missing = sorted(
        {
            f"{flag} ({where})"
            for where, text in message_strings()
            for flag in FLAG.findall(text)
            if flag not in flags and flag not in FOREIGN_FLAGS
        }
    )
    assert not missing, f"messages name flags that no command has: {missing}"


def test_the_flag_check_sees_a_made_up_flag() -> None:
    assert "--bogus-flag" not in existing_flags()
    assert FLAG.findall("use --bogus-flag or --output-dir") == ["--bogus-flag", "--output-dir"]


# ---- precedence ---------------------------------------------------------------------------------


def registered() -> dict[str, typing.Callable]:
    """Every command function built by ``settings_command``, by its command path."""
    found: dict[str, typing.Callable] = {}

    def walk(group: typer.Typer, prefix: str) -> None:
        for info in group.registered_commands:
            name = info.name or info.callback.__name__.replace("_", "-")
            found[f"{prefix}{name}"] = info.callback
        for sub in group.registered_groups:
            walk(sub.typer_instance, f"{prefix}{sub.name} ")

    walk(app, "")
    return found


def _value_for(annotation, default) -> tuple[str, object]:
    """A valid value of a settings field other than its default: (environment text, value)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if union else []
    kind = args[0] if args else annotation
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choice = next(c for c in reversed(typing.get_args(kind)) if c != default)
        return str(choice), choice
    if origin is list:
        inner = typing.get_args(kind)[0]
        if inner is int:
            return "[3, 7]", [3, 7]
        if inner is Path:
            return '["p1", "p2"]', [Path("p1"), Path("p2")]
        return '["u", "v"]', ["u", "v"]
    if kind is bool:
        return ("false", False) if default is True else ("true", True)
    if kind is int:
        return "2", 2
    if kind is float:
        return "0.25", 0.25
    if kind is Path:
        return "/tmp/decola-env-test", Path("/tmp/decola-env-test")
    return "from-env", "from-env"


def _options():
    for path, function in registered().items():
        for name, info in function.settings_class.model_fields.items():
            spec = cli_spec(info)
            if spec is not None and not spec["argument"]:
                yield pytest.param(path, name, id=f"{path}:{name}")


def _required(function) -> tuple[list[str], dict[str, str]]:
    """Command-line arguments and environment that satisfy a command's required fields."""
    args, env = [], {}
    for name, info in function.settings_class.model_fields.items():
        spec = cli_spec(info)
        if spec is None or not info.is_required():
            continue
        text, _ = _value_for(info.annotation, None)
        if spec["argument"]:
            args.append("x")
        else:
            env[f"DECOLA_{name.upper()}"] = text
    return args, env


def _captured(monkeypatch, path: str, argv: list[str], env: dict[str, str]):
    function = registered()[path]
    seen = []
    monkeypatch.setattr(function, "body", seen.append)
    for key in [k for k in __import__("os").environ if k.startswith("DECOLA_")]:
        monkeypatch.delenv(key)
    result = CliRunner().invoke(app, [*path.split(), *argv], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize(("path", "name"), list(_options()))
def test_every_option_takes_its_environment_variable(monkeypatch, path: str, name: str) -> None:
    function = registered()[path]
    info = function.settings_class.model_fields[name]
    args, env = _required(function)
    text, value = _value_for(info.annotation, info.get_default(call_default_factory=True))
    env[f"DECOLA_{name.upper()}"] = text
    settings = _captured(monkeypatch, path, args, env)
    assert getattr(settings, name) == value


@pytest.mark.parametrize(
    ("path", "flag", "name", "cli", "env", "expected"),
    [
        ("train", "--num-gpus", "num_gpus", "3", "8", 3),
        ("train", "--max-bad-images", "max_bad_images", "5", "9", 5),
        ("eval", "--protocol", "protocol", "fixed", "coco", "fixed"),
        ("self-label", "--shard-images", "shard_images", "11", "4", 11),
        ("dedup", "--iou-threshold", "iou_threshold", "0.5", "0.7", 0.5),
    ],
)
def test_the_command_line_beats_the_environment(monkeypatch, path, flag, name, cli, env, expected):
    function = registered()[path]
    args, environment = _required(function)
    environment[f"DECOLA_{name.upper()}"] = env
    settings = _captured(monkeypatch, path, [*args, flag, cli], environment)
    assert getattr(settings, name) == expected


def test_no_option_passes_a_default_of_its_own() -> None:
    """Typer hands every option over as "not given" (None) when the user does not give it, so
    the environment variable, not a hard-coded CLI default, decides (DECOLA_NUM_GPUS=8 works)."""
    for path, command in commands().items():
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.default is None, f"decola {path} {param.opts[0]}: {param.default!r}"


def test_a_malformed_environment_variable_is_one_clear_line(monkeypatch) -> None:
    function = registered()["train"]
    monkeypatch.setattr(function, "body", lambda settings: None)
    result = CliRunner().invoke(app, ["train"], env={"DECOLA_OVERRIDES": "not-a-list"})
    assert result.exit_code != 0
    assert "DECOLA_OVERRIDES" in str(result.exception)


def test_the_readme_examples_use_existing_options() -> None:
    """Every ``decola ...`` line of the README's shell examples names options its command has."""
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    top = typer.main.get_command(app)
    unknown, checked = [], 0
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if not line.startswith("decola "):
                continue
            args, command = shlex.split(line)[1:], top
            while hasattr(command, "commands") and args and args[0] in command.commands:
                command = command.commands[args.pop(0)]
            flags = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
            flags |= {o for p in top.params for o in p.opts}
            unknown += [f"{line[:60]}: {a}" for a in args if a.startswith("--") and a not in flags]
            checked += 1
    assert checked > 20 and unknown == []
