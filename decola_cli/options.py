"""Typer option declarations shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RECIPE_PANEL = "Recipe selection"

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Recipe name (see 'decola config list') or YAML path.",
        rich_help_panel=RECIPE_PANEL,
    ),
]
PhaseOption = Annotated[
    int | None,
    typer.Option(
        "--phase", min=1, max=2, help="DECOLA phase: 1 or 2.", rich_help_panel=RECIPE_PANEL
    ),
]
DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="lvis | lvis-base | toy  (default: lvis-base)",
        rich_help_panel=RECIPE_PANEL,
    ),
]
BackboneOption = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        help="r50-21k | r50-1k | swin-b | swin-l  (default: r50-21k)",
        rich_help_panel=RECIPE_PANEL,
    ),
]
BaselineOption = Annotated[
    str | None,
    typer.Option(
        "--baseline",
        help="boxsup | detic (BoxSup + self-training).",
        rich_help_panel=RECIPE_PANEL,
    ),
]
LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="Phase 2 pseudo labels: online | offline  (default: online)",
        rich_help_panel=RECIPE_PANEL,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a recipe field, e.g. --set model.decola.per_prompt_topk=100 (repeatable).",
        rich_help_panel=RECIPE_PANEL,
    ),
]
DataRootOption = Annotated[
    Path | None,
    typer.Option("--data-root", help="Dataset root [env DECOLA_DATA_ROOT, default ./datasets]."),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Cache folder [env DECOLA_CACHE_DIR, default ~/.cache/decola]."
    ),
]
