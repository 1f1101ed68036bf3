"""``decola config``: list, show and import recipes."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from decola_cli.command import option, settings_command
from decola_cli.console import err, out
from decola_cli.settings import (
    RecipeSettings,
    Settings,
)


class ConfigListSettings(Settings):
    filter_text: str | None = option("--filter", "-f", help="Only names containing this text.")


class ConfigShowSettings(RecipeSettings):
    name: str | None = option(
        help="Recipe name or YAML path (or use --config / the shorthands).", argument=True
    )
    output: Path | None = option("--output", "-o", help="Write the YAML here instead of printing.")


class ConfigImportSettings(Settings):
    original: Path = option(
        help="An original DECOLA/detectron2 YAML (its _BASE_ files beside it).",
        argument=True,
        default=...,
    )
    output: Path | None = option(
        "--output", "-o", help="Write the recipe here instead of printing."
    )
    strict: bool = option(
        "--strict", help="Fail (exit 2) when the file has unknown keys.", default=False
    )
    verbose: bool = option(
        "--verbose", "-v", help="Also list the keys that were ignored.", default=False
    )


app = typer.Typer(
    help="List, show and import recipes (training/evaluation configurations).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SHOW_EPILOG = """[bold]Examples[/]

  decola config show DECOLA_PHASE1_Lbase_CLIP_R5021k_4x
  decola config show --phase 2 --dataset lvis --backbone swin-b --labels offline
  decola config show --baseline boxsup --set solver.max_iter=1000 --output my_recipe.yaml
"""
LIST_EPILOG = """[bold]Examples[/]

  decola config list
  decola config list --filter PHASE2
"""
IMPORT_EPILOG = """[bold]Examples[/]

  decola config import DECOLA/configs/DECOLA_PHASE1_L_CLIP_R5021k_4x.yaml
  decola config import old.yaml --output configs/mine.yaml --strict
"""


@app.command("list", epilog=LIST_EPILOG)
@settings_command(ConfigListSettings)
def list_command(settings: ConfigListSettings) -> None:
    """List every shipped recipe with its model, backbone, data and schedule."""
    from rich.table import Table

    from decola_core.config.loader import list_recipes, load_recipe

    table = Table(title="decola recipes", show_lines=False)
    for column in ("name", "model", "backbone", "train data", "iterations"):
        table.add_column(column, overflow="fold")
    wanted = (settings.filter_text or "").lower()
    names = [n for n in list_recipes() if wanted in n.lower()]
    for name in names:
        recipe = load_recipe(name)
        backbone = recipe.model.backbone
        detail = {
            "timm_resnet": lambda b: b.name,
            "swin": lambda b: f"swin {b.size}",
            "d2_resnet": lambda b: f"resnet{b.depth} (d2)",
        }[backbone.type](backbone)
        train = " + ".join(d.name for d in recipe.data.train) or "-"
        iters = f"{recipe.solver.max_iter:,}" if not recipe.self_label.enabled else "(labelling)"
        table.add_row(name, recipe.model.architecture, detail, train, iters)
    out.print(table)
    out.print(f"{len(names)} recipes ('decola config show NAME' prints one in full)")


@app.command("show", epilog=SHOW_EPILOG)
@settings_command(ConfigShowSettings)
def show_command(settings: ConfigShowSettings) -> None:
    """Print a recipe fully resolved (inheritance and overrides applied) as YAML."""
    from decola_core.config.loader import dump_recipe
    from decola_core.errors import ConfigError
    from decola_core.utils.io import atomic_write_text

    if settings.name is not None:
        if settings.config is not None:
            raise ConfigError("give the recipe either as an argument or with --config, not both")
        settings = settings.model_copy(update={"config": settings.name})
    recipe = settings.load_recipe()
    text = f"# decola recipe {recipe.name}\n{dump_recipe(recipe)}"
    if settings.output is None:
        sys.stdout.write(text)
        return
    atomic_write_text(settings.output, text)
    err.print(f"wrote recipe [bold]{recipe.name}[/] to {settings.output}")


@app.command("import", epilog=IMPORT_EPILOG)
@settings_command(ConfigImportSettings)
def import_command(settings: ConfigImportSettings) -> None:
    """Convert an original detectron2-style DECOLA config into a decola recipe."""
    from decola_core.config.importer import import_original
    from decola_core.config.loader import dump_recipe
    from decola_core.errors import ConfigError
    from decola_core.utils.io import atomic_write_text

    result = import_original(settings.original)
    for key in result.unknown:
        err.print(f"[yellow]unknown key[/] {key} (not translated)")
    if settings.verbose:
        for key, reason in result.ignored:
            err.print(f"[dim]ignored[/] {key}: {reason}")
    elif result.ignored:
        count = len(result.ignored)
        err.print(
            f"[dim]{count} keys have no effect here and were ignored (--verbose lists them)[/]"
        )
    if settings.strict and result.unknown:
        raise ConfigError(f"{settings.original}: {len(result.unknown)} unknown keys (--strict)")
    text = (
        f"# imported from {settings.original} by 'decola config import'\n"
        f"{dump_recipe(result.recipe)}"
    )
    if settings.output is None:
        sys.stdout.write(text)
        return
    atomic_write_text(settings.output, text, protect=(settings.original,))
    err.print(f"wrote recipe [bold]{result.recipe.name}[/] to {settings.output}")
