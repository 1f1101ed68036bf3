"""``decola zoo``: list, inspect, download, verify and locate released artefacts."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from decola_cli.command import option, settings_command
from decola_cli.console import err, out
from decola_cli.settings import (
    OfflineSettings,
)


class ZooSettings(OfflineSettings):
    """``decola zoo``: where artefacts go and whether the network may be used."""

    directory: Path | None = option("--dir", help="Store folder (default: <cache dir>/zoo).")

    def store(self) -> Path:
        from decola_core.zoo.resolve import zoo_store

        return self.directory.expanduser() if self.directory else zoo_store(self.cache_dir)


class ZooListSettings(ZooSettings):
    kind: str | None = option(
        "--kind", help="checkpoint | backbone | pseudo-labels | metadata | clip"
    )
    markdown: bool = option(
        "--markdown", help="Print a Markdown table (as in README).", default=False
    )


class ZooNameSettings(ZooSettings):
    name: str = option(help="Artefact name.", argument=True, default=...)


class ZooDownloadSettings(ZooSettings):
    names: list[str] = option(help="Artefact names.", argument=True, default=...)
    force: bool = option("--force", help="Download again even if cached.", default=False)


class ZooVerifySettings(ZooSettings):
    names: list[str] | None = option(
        help="Artefact names (default: every cached one).", argument=True
    )


app = typer.Typer(
    help="Released checkpoints, backbones, pseudo-labels and metadata: list, download, verify.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _downloader(settings: ZooSettings):
    from decola_core.zoo.download import Downloader

    return Downloader(settings.store(), offline=settings.offline)


def _metrics(metrics: dict[str, float], limit: int = 4) -> str:
    shown = list(metrics.items())[:limit]
    return " ".join(f"{k} {v:g}" for k, v in shown) + (" …" if len(metrics) > limit else "")


def markdown_table(artifacts) -> str:
    """The README's model-zoo table."""
    lines = ["| name | kind | recipe | reported |", "|---|---|---|---|"]
    for a in artifacts:
        kind = a.kind if a.runnable else f"{a.kind} (CenterNet2, not runnable)"
        recipe = f"`{a.recipe}`" if a.recipe else "-"
        lines.append(f"| `{a.name}` | {kind} | {recipe} | {_metrics(a.metrics) or '-'} |")
    return "\n".join(lines) + "\n"


@app.command(
    "list",
    epilog="[bold]Examples[/]\n\n  decola zoo list\n  decola zoo list --kind checkpoint --markdown",
)
@settings_command(ZooListSettings)
def list_command(settings: ZooListSettings) -> None:
    """Table of every artefact: name, kind, recipe, metrics, size, cached?"""
    from rich.table import Table

    from decola_core.zoo.registry import load_registry

    downloader = _downloader(settings)
    kind = settings.kind
    artifacts = [a for a in load_registry() if kind is None or a.kind == kind]
    if settings.markdown:
        sys.stdout.write(markdown_table(artifacts))
        return
    table = Table(title=f"decola zoo ({settings.store()})")
    for column in ("name", "kind", "recipe", "metrics", "size", "cached"):
        table.add_column(column, overflow="fold")
    for artifact in artifacts:
        path = downloader.path(artifact)
        size = path.stat().st_size if path.is_file() else artifact.size
        table.add_row(
            artifact.name,
            artifact.kind,
            artifact.recipe or "-",
            _metrics(artifact.metrics),
            f"{size / 2**20:.1f} MiB" if size else "?",
            "yes" if path.is_file() else "no",
        )
    out.print(table)
    out.print(f"{len(artifacts)} artefacts")


@app.command("info", epilog="[bold]Examples[/]\n\n  decola zoo info decola-phase1-lbase-r50")
@settings_command(ZooNameSettings)
def info_command(settings: ZooNameSettings) -> None:
    """Everything the registry knows about one artefact, and whether it is cached."""
    from decola_core.config.loader import list_recipes
    from decola_core.zoo.registry import load_registry

    artifact = load_registry().get(settings.name)
    path = _downloader(settings).path(artifact)
    if artifact.recipe is None:
        recipe = "none released"
    elif artifact.recipe in list_recipes():
        recipe = f"{artifact.recipe} (decola config show {artifact.recipe})"
    else:
        recipe = f"{artifact.recipe} (original config, not shipped by decola)"
    rows = {
        "name": artifact.name,
        "kind": artifact.kind,
        "recipe": recipe,
        "backbone": artifact.backbone,
        "training data": artifact.data,
        "metrics": _metrics(artifact.metrics, limit=len(artifact.metrics)) or None,
        "format": artifact.format,
        "runnable by decola": "yes" if artifact.runnable else "no",
        "url": artifact.url,
        "sha256": artifact.sha256 or "not published (pinned in the lock file on download)",
        "data path": artifact.data_path,
        "cached at": str(path) if path.is_file() else f"not cached ({path})",
        "registry": artifact.source,
        "description": artifact.description or None,
    }
    for key, value in rows.items():
        if value is not None:
            out.print(f"[bold]{key}:[/] {value}", soft_wrap=True)


@app.command(
    "download",
    epilog="[bold]Examples[/]\n\n  decola zoo download decola-phase1-l-r50\n"
    "  decola zoo download lvis-clip-embeddings lvis-category-info --dir datasets/metadata",
)
@settings_command(ZooDownloadSettings)
def download_command(settings: ZooDownloadSettings) -> None:
    """Download artefacts (resumable, checksum-verified, atomic)."""
    from decola_core.zoo.registry import load_registry

    registry = load_registry()
    # every name is checked before anything is downloaded
    artifacts = [registry.get(name) for name in settings.names]
    downloader = _downloader(settings)
    for artifact in artifacts:
        cached = downloader.is_cached(artifact) and not settings.force
        path = downloader.fetch(artifact, force=settings.force)
        err.print(f"{'cached' if cached else 'downloaded'} [bold]{artifact.name}[/] -> {path}")


@app.command(
    "verify",
    epilog="[bold]Examples[/]\n\n  decola zoo verify\n  decola zoo verify decola-phase1-l-r50",
)
@settings_command(ZooVerifySettings)
def verify_command(settings: ZooVerifySettings) -> None:
    """Re-hash cached files against the registry or the lock file; exit 1 on a mismatch."""
    from decola_core.zoo.registry import load_registry

    registry = load_registry()
    downloader = _downloader(settings)
    if settings.names:
        artifacts = [registry.get(name) for name in settings.names]
    else:
        artifacts = [a for a in registry if downloader.is_cached(a)]
    failed = 0
    for artifact in artifacts:
        result = downloader.verify(artifact)
        style = {"ok": "green", "pinned": "cyan", "missing": "yellow", "mismatch": "red"}
        out.print(f"[{style[result.status]}]{result.status:8s}[/] {result.name} {result.path}")
        if result.status == "mismatch":
            out.print(f"         expected {result.expected}\n         got      {result.actual}")
        failed += result.status in ("mismatch", "missing")
    if not artifacts:
        out.print(f"nothing cached in {settings.store()}")
    if failed:
        raise typer.Exit(1)


@app.command("path", epilog="[bold]Examples[/]\n\n  decola zoo path decola-phase1-l-r50")
@settings_command(ZooNameSettings)
def path_command(settings: ZooNameSettings) -> None:
    """Print where the artefact is (or would be) stored; exit 1 if it is not downloaded."""
    from decola_core.zoo.registry import load_registry

    path = _downloader(settings).path(load_registry().get(settings.name))
    sys.stdout.write(f"{path}\n")
    if not path.is_file():
        err.print(f"not downloaded yet: decola zoo download {settings.name}")
        raise typer.Exit(1)
