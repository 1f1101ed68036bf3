"""Class-name embedding speed: decola's encoder (batches cut to the longest prompt) against
open_clip's encode_text at the full 77-token context, same prompts, same run, same weights.

    python benchmarks/bench_embed.py [--names 1203] [--model ViT-B-32-quickgelu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1203)
    parser.add_argument("--model", default="ViT-B-32-quickgelu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from decola_core.text import ClipTextEncoder

    encoder = ClipTextEncoder(args.model)  # random weights: the speed does not depend on them
    rng = np.random.default_rng(0)
    words = ["aerosol_can", "paper", "cup", "table", "fork", "traffic", "light", "dog", "kite"]
    prompts = ["a " + "_".join(rng.choice(words, rng.integers(1, 4))) for _ in range(args.names)]
    start = time.perf_counter()
    ours = encoder.encode(prompts)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        full = np.concatenate([
            encoder.model.encode_text(encoder.tokenizer(prompts[i : i + 256])).numpy()
            for i in range(0, len(prompts), 256)
        ])  # fmt: skip
    full_s = time.perf_counter() - start
    print(f"{args.names} prompts with {args.model} (CPU, 2 threads)")
    print(f"decola (cut to longest prompt)   {ours_s:7.1f} s")
    print(f"open_clip encode_text (77 tokens) {full_s:7.1f} s")
    print(f"speed-up {full_s / ours_s:.1f}x, max abs difference {np.abs(ours - full).max():.2e}")


if __name__ == "__main__":
    main()
