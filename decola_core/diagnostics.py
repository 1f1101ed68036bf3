"""Environment report for ``decola checks`` and bug reports.

Each section imports what it reports on inside its own function, so that one broken or missing
dependency (a torch without CUDA, an unreadable registry) shows up in its row instead of
hiding the whole report.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from decola_core import __version__

LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "open_clip_torch",
    "numpy",
    "scipy",
    "pydantic",
    "pycocotools",
    "lvis",
    "faster-coco-eval",
    "wandb",
)


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None (reads metadata; imports nothing)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def collect_report(data_root: Path, cache_dir: Path, offline: bool) -> dict[str, dict[str, Any]]:
    """Everything ``decola checks`` prints, as nested plain data (JSON-serialisable)."""
    return {
        "system": _system(),
        "torch": _torch(),
        "libraries": {name: package_version(name) or "not installed" for name in LIBRARIES},
        "data": _data(data_root),
        "cache": _cache(cache_dir, offline),
        "backends": _backends(),
    }


def _system() -> dict[str, Any]:
    return {
        "decola": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu count": os.cpu_count(),
    }


def _torch() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda available": torch.cuda.is_available(),
        "cuda (build)": torch.version.cuda or "none",
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info[f"cuda:{index}"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    info["bf16 on cuda"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    info["distributed"] = (
        ", ".join(
            b
            for b, ok in (
                ("gloo", torch.distributed.is_gloo_available()),
                ("nccl", torch.distributed.is_nccl_available()),
            )
            if ok
        )
        or "none"
    )
    return info


def _data(data_root: Path) -> dict[str, Any]:
    from decola_core.data.catalog import DatasetCatalog

    catalog = DatasetCatalog(data_root)
    found = [n for n in catalog.names() if not catalog.get(n).missing()]
    return {
        "data root": str(data_root.resolve()),
        "exists": data_root.is_dir(),
        "catalog datasets present": f"{len(found)} of {len(catalog.names())}",
        "present": ", ".join(found) or "none",
        "metadata folder": (data_root / "metadata").is_dir(),
    }


def _cache(cache_dir: Path, offline: bool) -> dict[str, Any]:
    from decola_core.zoo import Downloader, load_registry, zoo_store

    store = Downloader(zoo_store(cache_dir), offline=True)
    registry = load_registry()
    cached = sum(store.is_cached(a) for a in registry)
    return {
        "cache dir": str(cache_dir),
        "exists": cache_dir.is_dir(),
        "writable": _writable(cache_dir),
        "zoo artefacts cached": f"{cached} of {len(registry)} in {store.store}",
        "offline mode": offline,
        "WANDB_MODE": os.environ.get("WANDB_MODE", "(unset)"),
    }


def _backends() -> dict[str, Any]:
    import torch

    from decola_core.modeling.ops.ms_deform_attn import (
        BACKEND_ENV,
        available_backends,
        default_backend,
    )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name, why = default_backend(device)
    if os.environ.get(BACKEND_ENV):
        name, why = os.environ[BACKEND_ENV], f"set by {BACKEND_ENV}"
    lvis = package_version("lvis")
    fast = package_version("faster-coco-eval")
    evaluators = [
        f"lvis-api {lvis}" if lvis else None,
        f"faster-coco-eval {fast}" if fast else None,
    ]
    return {
        "deformable attention (in use)": f"{name} on {device}: {why}",
        "deformable attention (available)": ", ".join(available_backends()),
        "evaluation (available)": ", ".join(e for e in evaluators if e) or "none",
    }


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or in its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            return True
    except OSError:
        return False
