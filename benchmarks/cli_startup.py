"""How fast do the commands start? CPU seconds (user + system) of the whole process, median of
``--repeat`` runs, for ``decola --help`` and for the pseudo-label chain and scoring commands on
tiny inputs (20 images), against a bare ``python -c pass`` and ``python -c "import torch"``
measured in the same run. Target: convert, merge, dedup and eval --predictions at most 0.5 s.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5


def cases(folder: Path) -> dict[str, list[str]]:
    from decola_core.evaluation.synthetic import synthetic_lvis

    gt, dets = synthetic_lvis(20, 5, 10, seed=1)
    info = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
    for name, data in (("gt.json", gt), ("dets.json", dets), ("info.json", info)):
        (folder / name).write_text(json.dumps(data))
    decola = [sys.executable, "-m", "decola_cli.main"]
    f = str(folder)
    return {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        # what the light commands cannot avoid: the CLI stack and numpy (one BLAS thread)
        "imports of typer+pydantic-settings+numpy": [
            sys.executable, "-c",
            "import os; os.environ['OPENBLAS_NUM_THREADS'] = '1'; import typer, rich.progress, "
            "pydantic_settings, numpy, orjson",
        ],
        "decola --help": [*decola, "--help"],
        "decola convert": [*decola, "convert", "--predictions", f"{f}/dets.json",
                           "--image-info", f"{f}/info.json", "--output", f"{f}/p.json",
                           "--cache-dir", f"{f}/cache"],
        "decola merge": [*decola, "merge", f"{f}/p.json", f"{f}/p.json", "--output", f"{f}/m.json"],
        "decola dedup": [*decola, "dedup", f"{f}/m.json", "--output", f"{f}/d.json"],
        "decola eval --predictions": [*decola, "eval", "--predictions", f"{f}/dets.json",
                                      "--annotations", f"{f}/gt.json"],
    }  # fmt: skip


def cpu_seconds(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            name: [cpu_seconds(command) for _ in range(args.repeat)]
            for name, command in cases(Path(tmp)).items()
        }
    baseline = statistics.median(cpu for cpu, _ in runs["python -c pass (baseline)"])
    print(f"{'case':30s} {'CPU s':>7s} {'wall s':>7s} {'x baseline':>10s}  target")
    for name, values in runs.items():
        cpu = statistics.median(c for c, _ in values)
        wall = statistics.median(w for _, w in values)
        target = (
            ""
            if not name.startswith("decola ") or "help" in name
            else ("ok" if cpu <= TARGET_S else f"> {TARGET_S}")
        )
        print(f"{name:30s} {cpu:7.3f} {wall:7.3f} {cpu / baseline:10.1f}  {target}")


if __name__ == "__main__":
    main()
