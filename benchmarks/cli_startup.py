"""How fast does ``decola --help`` answer? Target: about a second (heavy imports are lazy).

Prints the median wall time of ``decola --help``, ``decola config show NAME`` and, as the
baseline measured in the same run, a bare ``python -c pass`` and ``python -c "import torch"``.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "decola --help": [sys.executable, "-m", "decola_cli.main", "--help"],
    "decola config show (phase 1)": [
        sys.executable,
        "-m",
        "decola_cli.main",
        "config",
        "show",
        "--phase",
        "1",
    ],
}


def median_seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {name: median_seconds(cmd, args.repeat) for name, cmd in CASES.items()}
    baseline = results["python -c pass (baseline)"]
    print(f"{'case':32s} {'median s':>9s} {'x baseline':>11s}")
    for name, seconds in results.items():
        print(f"{name:32s} {seconds:9.3f} {seconds / baseline:11.1f}")


if __name__ == "__main__":
    main()
