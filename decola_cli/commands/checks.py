"""``decola checks``: versions, devices, data, cache and backends found on this machine."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from decola_cli import options
from decola_cli.console import out
from decola_cli.settings import ChecksSettings, build_settings

EPILOG = """[bold]Examples[/]

  decola checks
  DECOLA_DATA_ROOT=/data/decola decola checks --json
"""


def checks(
    data_root: options.DataRootOption = None,
    cache_dir: options.CacheDirOption = None,
    offline: Annotated[
        bool | None,
        typer.Option("--offline/--online", help="Report as if offline [env DECOLA_OFFLINE]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report versions, CUDA devices, data root, cache dir, offline mode and backends."""
    from decola_core.diagnostics import collect_report

    settings = build_settings(
        ChecksSettings, data_root=data_root, cache_dir=cache_dir, offline=offline, as_json=as_json
    )
    report = collect_report(settings.data_root, settings.cache_dir, settings.offline)
    if settings.as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from rich.table import Table

    for section, rows in report.items():
        table = Table(title=section, show_header=False, title_justify="left", min_width=60)
        table.add_column("item", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in rows.items():
            table.add_row(key, str(value))
        out.print(table)
