"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def add_reference_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--reference-dir``: the original model's reference outputs (``DECOLA_REFERENCE_DIR``,
    else ``../shared/reference`` beside the checkout)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "reference"
    parser.add_argument(
        "--reference-dir", type=Path, default=Path(os.environ.get("DECOLA_REFERENCE_DIR", default))
    )


def run_child(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``script`` again in a fresh process (so its peak memory and imports are its own),
    with ``env`` added to the environment, and return the JSON object it prints last."""
    proc = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_in_children(
    doc: str,
    script: str,
    names: tuple[str, ...],
    measure,
    envs: dict[str, dict] | None = None,
    rounds: int = 1,
    before: dict[str, str] | None = None,
) -> tuple | None:
    """The command line of a model benchmark (``--threads``, ``--reference-dir``).

    Run normally, it measures each of ``names`` in a fresh process (with ``envs[name]`` added
    to its environment) and returns (arguments, {name: result}). With ``before`` (an
    environment giving the baseline configuration), it runs ``rounds`` alternating rounds,
    baseline then current, and returns (arguments, [current results], [baseline results]).
    Run as such a child (``--child NAME``), it calls ``measure(name, reference_dir)`` with
    torch's threads set, prints the result with the process's peak resident memory as JSON,
    and returns None.
    """
    import resource

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    add_reference_dir_argument(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        from decola_core.utils.allocator import retain_freed_memory

        retain_freed_memory()  # as `decola train/eval/self-label/predict` do
        torch.set_num_threads(args.threads)
        result = measure(args.child, args.reference_dir)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return None
    common = ("--threads", str(args.threads), "--reference-dir", str(args.reference_dir))
    envs = envs or {}

    def one_round(extra: dict[str, str]) -> dict:
        return {
            name: run_child(script, "--child", name, *common, env={**envs.get(name, {}), **extra})
            for name in names
        }

    if before is None:
        return args, one_round({})
    current, baseline = [], []
    for _ in range(rounds):
        baseline.append(one_round(before))
        current.append(one_round({}))
    return args, current, baseline
