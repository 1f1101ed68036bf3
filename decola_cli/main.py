"""The ``decola`` command. Subcommands live in ``decola_cli.commands``; heavy libraries (torch,
timm, open_clip) are imported only inside the commands that need them, so ``decola --help``
answers quickly."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from decola_cli.commands import checks, config, data, pseudo, zoo
from decola_cli.commands.eval import EPILOG as EVAL_EPILOG
from decola_cli.commands.eval import eval_command
from decola_cli.commands.predict import EPILOG as PREDICT_EPILOG
from decola_cli.commands.predict import predict_command
from decola_cli.commands.train import EPILOG as TRAIN_EPILOG
from decola_cli.commands.train import train_command
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
app.add_typer(config.app, name="config")
app.add_typer(zoo.app, name="zoo")
app.add_typer(data.app, name="data")
app.command(name="train", epilog=TRAIN_EPILOG)(train_command)
app.command(name="eval", epilog=EVAL_EPILOG)(eval_command)
app.command(name="predict", epilog=PREDICT_EPILOG)(predict_command)
app.command(name="self-label", epilog=pseudo.SELF_LABEL_EPILOG)(pseudo.self_label_command)
app.command(name="convert", epilog=pseudo.CONVERT_EPILOG)(pseudo.convert_command)
app.command(name="merge", epilog=pseudo.MERGE_EPILOG)(pseudo.merge_command)
app.command(name="dedup", epilog=pseudo.DEDUP_EPILOG)(pseudo.dedup_command)
app.command(name="checks", epilog=checks.EPILOG)(checks.checks)


def _show_version(value: bool) -> None:
    if value:
        from decola_core import __version__

        out.print(f"decola {__version__}")
        raise typer.Exit()


@app.callback()
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


#: Options that take several space-separated values after one flag (--k 10 20 50).
MULTI_VALUE_OPTIONS = ("--k", "--min-sizes")


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
    try:
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
