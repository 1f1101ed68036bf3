"""``decola checks``: versions, devices, data, cache and backends found on this machine."""

from __future__ import annotations

import json
import sys

from decola_cli.command import option, settings_command
from decola_cli.console import out
from decola_cli.settings import (
    DecolaSettings,
)


class ChecksSettings(DecolaSettings):
    as_json: bool = option("--json", help="Print the report as JSON.", default=False)


EPILOG = """[bold]Examples[/]

  decola checks
  DECOLA_DATA_ROOT=/data/decola decola checks --json
"""


@settings_command(ChecksSettings)
def checks(settings: ChecksSettings) -> None:
    """Report versions, CUDA devices, data root, cache dir, offline mode and backends."""
    from decola_core.diagnostics import collect_report

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
