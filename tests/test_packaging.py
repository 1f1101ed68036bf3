"""What a wheel ships: every recipe (from the repository's configs/, linked into the package)
and the zoo registry, so an installed (non-editable) decola finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from decola_core.config import config_dir, list_recipes

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_finds_the_repository_recipes() -> None:
    assert config_dir().resolve() == (ROOT / "configs").resolve()
    assert len(list_recipes()) == len(
        [p for p in (ROOT / "configs").rglob("*.yaml") if "_fragments" not in p.parts]
    )


def test_the_wheel_holds_every_recipe_and_the_registry(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")  # the build backend, without isolation
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("decola-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert shipped and {f"decola_core/configs/{n}" for n in shipped} <= names
    assert "decola_core/zoo/registry.yaml" in names
