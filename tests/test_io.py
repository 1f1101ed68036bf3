"""Atomic output: a failed write leaves the old file and no temporary files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from decola_core.errors import DecolaError
from decola_core.utils.io import atomic_open, atomic_write_text


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("partial")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_inputs_are_protected(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text("{}")
    with pytest.raises(DecolaError, match="refusing to overwrite the input"):
        atomic_write_text(tmp_path / "." / "in.json", "x", protect=(source,))
    assert source.read_text() == "{}"
