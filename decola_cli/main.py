"""The ``decola`` command. Subcommands live in ``decola_cli.commands``; heavy libraries (torch,
timm, open_clip) are imported only inside the commands that need them, so ``decola --help``
answers quickly."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from decola_cli.console import fail_line, out
from decola_core.errors import DecolaError

EPILOG = """[bold]Examples[/]

  decola config list
  decola config show --phase 1 --dataset lvis-base --backbone r50-21k
  decola config show DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_ft4x --set solver.base_lr=1e-4
  decola config import original/DECOLA_PHASE1_L_CLIP_R5021k_4x.yaml --output my_recipe.yaml
  decola zoo download decola-phase1-lbase-r50
  decola predict photo.jpg --weights decola-phase1-lbase-r50 --classes "cola,fork"
  decola eval --predictions results.json --annotations datasets/lvis/lvis_v1_val.json
  decola checks
"""


def _show_version(value: bool) -> None:
    if value:
        from decola_core import __version__

        out.print(f"decola {__version__}")
        raise typer.Exit()


def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show debug messages.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Show only warnings and errors.")
    ] = False,
) -> None:
    """Train, evaluate and run DECOLA open-vocabulary object detectors."""
    from decola_core.utils.logs import setup_logging

    setup_logging("DEBUG" if verbose else "WARNING" if quiet else None)


#: Commands by name: (module, function, epilog attribute). Only the module of the command that
#: runs is imported, so a command pays for its own imports and no other's.
COMMANDS = {
    "train": ("decola_cli.commands.train", "train_command", "EPILOG"),
    "eval": ("decola_cli.commands.eval", "eval_command", "EPILOG"),
    "predict": ("decola_cli.commands.predict", "predict_command", "EPILOG"),
    "self-label": ("decola_cli.commands.self_label", "self_label_command", "SELF_LABEL_EPILOG"),
    "convert": ("decola_cli.commands.pseudo", "convert_command", "CONVERT_EPILOG"),
    "merge": ("decola_cli.commands.pseudo", "merge_command", "MERGE_EPILOG"),
    "dedup": ("decola_cli.commands.pseudo", "dedup_command", "DEDUP_EPILOG"),
    "export": ("decola_cli.commands.export", "export_command", "EPILOG"),
    "checks": ("decola_cli.commands.checks", "checks", "EPILOG"),
}
#: Command groups by name: the module holding their Typer app.
GROUPS = {
    "config": "decola_cli.commands.config",
    "zoo": "decola_cli.commands.zoo",
    "data": "decola_cli.commands.data",
}


def build_app(only: str | None = None) -> typer.Typer:
    """The ``decola`` app with every command, or with the command (or group) ``only``."""
    app = typer.Typer(
        name="decola",
        help="Train, evaluate and run DECOLA open-vocabulary object detectors.",
        epilog=EPILOG,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        add_completion=False,
    )
    app.callback()(main)
    for name, (module, function, epilog) in COMMANDS.items():
        if only in (None, name):
            loaded = importlib.import_module(module)
            app.command(name=name, epilog=getattr(loaded, epilog))(getattr(loaded, function))
    for name, module in GROUPS.items():
        if only in (None, name):
            app.add_typer(importlib.import_module(module).app, name=name)
    return app


def __getattr__(name: str):
    if name == "app":  # the whole app (tests, docs); ``run`` builds only what it runs
        return build_app()
    raise AttributeError(f"module 'decola_cli.main' has no attribute {name!r}")


#: Commands that multiply no matrices: one OpenBLAS thread (unless the user set a number), which
#: spares them the thread pool's start-up (about 0.15 s of CPU when numpy is imported).
SINGLE_BLAS_THREAD = ("convert", "merge", "dedup", "config", "zoo")


def _light(command: str | None, argv: list[str]) -> bool:
    return command in SINGLE_BLAS_THREAD or (command == "eval" and "--predictions" in argv)


def _command_name(argv: list[str]) -> str | None:
    """The subcommand of ``argv`` (the top-level options take no values), if it is known."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    return name if name in COMMANDS or name in GROUPS else None


#: Options that take several space-separated values after one flag (--k 10 20 50).
MULTI_VALUE_OPTIONS = ("--k", "--min-sizes", "--image-size")


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--k 10 20`` -> ``--k 10 --k 20`` (click options take one value per flag)."""
    expanded: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        expanded.append(arg)
        i += 1
        if arg in MULTI_VALUE_OPTIONS:
            values = 0
            while i < len(argv) and _is_number(argv[i]):
                if values:
                    expanded.append(arg)
                expanded.append(argv[i])
                values += 1
                i += 1
    return expanded


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors, exit 2 for bad input, 130 on Ctrl-C."""
    argv = expand_multi_value_options(sys.argv[1:] if argv is None else argv)
    command = _command_name(argv)
    if _light(command, argv):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        app = build_app(command)
        code = app(args=argv, prog_name="decola", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            out.print(exc.ctx.get_help())
        sys.exit(0)
    except click_exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "decola"
        fail_line(where, exc.format_message())
        sys.exit(2)
    except typer.Abort:
        fail_line("decola", "aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        fail_line("decola", "interrupted")
        sys.exit(130)
    except DecolaError as exc:
        fail_line("decola", str(exc))
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
