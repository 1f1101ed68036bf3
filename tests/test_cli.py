"""The `decola` command as users run it: help with examples, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from decola_core.config import load_recipe

COMMANDS = [
    [],
    ["config"],
    ["config", "list"],
    ["config", "show"],
    ["config", "import"],
    ["checks"],
    ["zoo"],
    ["zoo", "list"],
    ["zoo", "info"],
    ["zoo", "download"],
    ["zoo", "verify"],
    ["zoo", "path"],
]
GROUPS = (["config"], ["zoo"])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "decola")
def test_help_shows_examples(decola, command: list[str]) -> None:
    result = decola(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    if command not in GROUPS:
        assert "Examples" in result.stdout


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from decola_cli.main import run\n"
        "sys.argv = ['decola', '--help']\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'open_clip', 'wandb') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "show", "--bogus"], "No such option: --bogus"),
        (["config", "show", "--phase", "3"], "--phase"),
        (
            ["config", "show", "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x", "--set", "model.nope=1"],
            "unknown key 'model.nope'",
        ),
        (
            ["config", "show", "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x", "--phase", "1"],
            "--config cannot be combined with --phase",
        ),
        (["config", "show", "NOT_A_RECIPE"], "unknown recipe 'NOT_A_RECIPE'"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_bad_input_exits_2_with_one_line(decola, args: list[str], message: str) -> None:
    result = decola(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0] and "Traceback" not in result.stderr


def test_bad_environment_variable_is_named(decola) -> None:
    result = decola("checks", "--json", env={"DECOLA_OFFLINE": "maybe"})
    assert result.returncode == 2
    assert "DECOLA_OFFLINE" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_version(decola) -> None:
    result = decola("--version")
    assert result.returncode == 0 and result.stdout.startswith("decola ")


def test_config_show_prints_the_resolved_recipe(decola) -> None:
    result = decola(
        "config",
        "show",
        "--phase",
        "2",
        "--dataset",
        "lvis",
        "--backbone",
        "swin-b",
        "--set",
        "solver.max_iter=5000",
        "--set",
        "solver.steps=[4000]",
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    expected = load_recipe(
        "DECOLA_PHASE2_LI_CLIP_SwinB_4x_ft4x", ["solver.max_iter=5000", "solver.steps=[4000]"]
    )
    assert shown == expected.model_dump(mode="json")


def test_config_show_writes_output_atomically(decola, tmp_path: Path) -> None:
    target = tmp_path / "out" / "recipe.yaml"
    result = decola("config", "show", "toy/DECOLA_PHASE1_Toy", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert load_recipe(target).model.transformer.hidden_dim == 64
    assert sorted(p.name for p in target.parent.iterdir()) == ["recipe.yaml"]
    assert str(target) in result.stderr


def test_config_list_counts_every_recipe(decola) -> None:
    result = decola("config", "list")
    assert result.returncode == 0
    from decola_core.config import list_recipes

    assert f"{len(list_recipes())} recipes" in result.stdout
    assert "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x" in result.stdout


def test_config_import_roundtrip_and_refuses_to_overwrite_input(decola, tmp_path: Path) -> None:
    original = tmp_path / "orig.yaml"
    original.write_text(
        "MODEL:\n  META_ARCHITECTURE: DECOLA_DeformableDETR\n  DECOLA:\n    PER_PROMPT_TOPK: 77\n"
        "  DETR:\n    TYPO_KEY: 1\n"
    )
    result = decola("config", "import", str(original))
    assert result.returncode == 0, result.stderr
    assert "unknown key MODEL.DETR.TYPO_KEY" in result.stderr
    assert yaml.safe_load(result.stdout)["model"]["decola"]["per_prompt_topk"] == 77
    strict = decola("config", "import", str(original), "--strict")
    assert strict.returncode == 2 and "1 unknown keys" in strict.stderr
    same = decola("config", "import", str(original), "--output", str(original))
    assert same.returncode == 2 and "refusing to overwrite the input" in same.stderr
    assert "PER_PROMPT_TOPK: 77" in original.read_text()
    written = tmp_path / "recipe.yaml"
    assert decola("config", "import", str(original), "-o", str(written)).returncode == 0
    assert load_recipe(written).model.decola.per_prompt_topk == 77


def test_checks_reports_environment_and_settings(decola, tmp_path: Path) -> None:
    (tmp_path / "lvis").mkdir()
    (tmp_path / "coco").mkdir()
    (tmp_path / "lvis" / "lvis_v1_val.json").write_text("{}")
    result = decola(
        "checks",
        "--json",
        "--cache-dir",
        str(tmp_path / "cache"),
        env={"DECOLA_DATA_ROOT": str(tmp_path), "DECOLA_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["data"]["data root"] == str(tmp_path.resolve())
    assert report["data"]["present"] == "lvis_v1_val"
    assert report["cache"]["cache dir"] == str(tmp_path / "cache")
    assert report["cache"]["offline mode"] is True
    assert report["cache"]["zoo artefacts cached"].startswith("0 of ")
    assert report["torch"]["version"].startswith("2.")
    assert report["backends"]["deformable attention (in use)"].startswith("pytorch on cpu")
    # the CLI option beats the environment variable
    online = decola("checks", "--json", "--online", env={"DECOLA_OFFLINE": "1"})
    assert json.loads(online.stdout)["cache"]["offline mode"] is False
