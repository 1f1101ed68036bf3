"""Reading detections: a results array or shards, in one process or split across forked
workers, always to the same columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import decola_core.evaluation.predictions as predictions
from decola_core.errors import DecolaError
from decola_core.evaluation import Predictions


def records(n: int, extra=None) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        record = {
            "image_id": int(i % 17),
            "category_id": int(rng.integers(1, 9)),
            "bbox": rng.uniform(0, 50, 4).tolist(),
            "score": float(rng.random()),
        }
        if extra is not None:
            record.update(extra(i))
        out.append(record)
    return out


def same(a: Predictions, b: Predictions) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("image_id", "category_id", "bbox", "score")
    )


@pytest.fixture
def forked(monkeypatch):
    """Parse everything in 2 forked workers, however small."""
    monkeypatch.setattr(predictions, "fork_workers", lambda amount, minimum: 2)


def serial(path: Path, monkeypatch) -> Predictions:
    with monkeypatch.context() as patch:
        patch.setattr(predictions, "fork_workers", lambda amount, minimum: 1)
        return Predictions.load(path)


@pytest.mark.parametrize("indent", [None, 1])
def test_an_array_split_across_workers_reads_the_same(tmp_path, monkeypatch, forked, indent):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records(300), indent=indent))  # ", " separators, newlines
    assert predictions._record_aligned_parts(path.read_bytes(), 8)
    loaded = Predictions.load(path)
    assert len(loaded) == 300 and same(loaded, serial(path, monkeypatch))


def test_lookalike_boundaries_inside_records_fall_back(tmp_path, monkeypatch, forked):
    def extra(i: int) -> dict:  # "},{" inside a string and between nested objects
        return {"note": "a},{b" * (i % 3), "parts": [{"x": i}, {"y": i}]}

    path = tmp_path / "results.json"
    path.write_text(json.dumps(records(200, extra), separators=(",", ":")))
    loaded = Predictions.load(path)
    assert len(loaded) == 200 and same(loaded, serial(path, monkeypatch))


def test_broken_arrays_are_clear_errors_in_parallel_too(tmp_path, forked):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records(100))[:-40])
    with pytest.raises(DecolaError, match="invalid JSON"):
        Predictions.load(path)
    path.write_text(json.dumps(records(100)).replace('"score"', '"scor"', 1))
    with pytest.raises(DecolaError, match="needs image_id"):
        Predictions.load(path)


def test_shard_folders_read_the_same_in_workers(tmp_path, monkeypatch, forked):
    folder = tmp_path / "minsize_240"
    folder.mkdir()
    rows = records(90)
    for k in range(3):
        lines = [json.dumps(r) for r in rows[30 * k : 30 * (k + 1)]]
        (folder / f"shard_{k:05d}.jsonl").write_text("\n".join(lines) + "\n\n")
    loaded = Predictions.load(folder)
    assert len(loaded) == 90 and same(loaded, serial(folder, monkeypatch))
    assert loaded.score.tolist() == [r["score"] for r in rows]
