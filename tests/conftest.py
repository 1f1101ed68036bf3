"""Shared test set-up: one torch thread (OpenMP contention on 2 shared cores makes steps 10x
slower), a throw-away cache folder (tests never touch the user's), GPU tests skipped without
CUDA, and the reference-data folder."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["DECOLA_CACHE_DIR"] = tempfile.mkdtemp(prefix="decola-test-cache-")
atexit.register(shutil.rmtree, os.environ["DECOLA_CACHE_DIR"], ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The original model's reference outputs (``DECOLA_REFERENCE_DIR`` or ../shared/reference)."""
    path = Path(os.environ.get("DECOLA_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set DECOLA_REFERENCE_DIR)")
    return path


@pytest.fixture()
def toy_data_root(tmp_path: Path) -> Path:
    """Random class embeddings and category statistics for the toy recipes (8 classes, 64-d)."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    (tmp_path / "toy" / "annotations").mkdir(parents=True)
    np.save(tmp_path / "toy" / "toy_clip_a+cname.npy", rng.normal(size=(8, 64)).astype(np.float16))
    np.save(tmp_path / "toy" / "toy_clip_a+object.npy", rng.normal(size=(1, 64)).astype(np.float16))
    categories = [{"id": i + 1, "name": f"shape{i}", "image_count": 10 + i} for i in range(8)]
    (tmp_path / "toy" / "annotations" / "toy_train.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": categories})
    )
    return tmp_path


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data root, weights without a recipe, weights recording their recipe) of a random model."""
    import torch

    from decola_core.config import load_recipe
    from decola_core.data.toy import ensure_toy_dataset
    from decola_core.modeling import build_model
    from decola_core.modeling.checkpoint import save_weights

    root = tmp_path_factory.mktemp("toy_model")
    data_root = root / "data"
    ensure_toy_dataset(data_root)
    recipe = load_recipe("toy/DECOLA_PHASE1_Toy")
    torch.manual_seed(0)
    model = build_model(recipe, data_root=data_root)
    bare = save_weights(model, root / "bare.pth")
    with_recipe = save_weights(model, root / "trained.pth", recipe=recipe.model_dump(mode="json"))
    return data_root, bare, with_recipe


class DecolaRunner:
    """Runs the ``decola`` command as users do (a child process, wide terminal, captured
    output): ``decola("eval", "--predictions", f)`` -> CompletedProcess; ``decola.argv(...)``
    is the command line, for tests that start and kill the process themselves."""

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "decola_cli.main", *map(str, args)]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )


@pytest.fixture(scope="session")
def decola() -> DecolaRunner:
    """The ``decola`` command line (see :class:`DecolaRunner`)."""
    return DecolaRunner()


TINY_CLIP = {
    "embed_dim": 64,  # the toy recipes' embedding width
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """(architecture config, random weights) of a tiny CLIP."""
    import open_clip
    import torch

    root = tmp_path_factory.mktemp("clip")
    config = root / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    weights = root / "tiny.pt"
    torch.save(open_clip.create_model("tiny-clip").state_dict(), weights)
    return config, weights
