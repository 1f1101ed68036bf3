"""The CPU allocator setting of decola's runs (decola_core.utils.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ALLOCATE_AND_FREE = """
import sys, torch
from decola_core.utils.allocator import retain_freed_memory
applied = retain_freed_memory()
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20
before = rss()
block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB: above glibc's mmap threshold
del block
print(applied, rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
@pytest.mark.parametrize("setting", ["default", "system"])
def test_freed_memory_is_kept_for_the_next_step(setting: str) -> None:
    """decola's runs keep freed blocks in the process (no page faults to get them back next
    step); DECOLA_MALLOC=system leaves glibc returning them to the OS."""
    env = {**os.environ, "DECOLA_MALLOC": setting}
    out = subprocess.run(
        [sys.executable, "-c", ALLOCATE_AND_FREE], capture_output=True, text=True, env=env
    )
    applied, kept_mib = out.stdout.split()
    if setting == "system":
        assert applied == "False" and int(kept_mib) < 16
    else:
        assert applied == "True" and int(kept_mib) >= 60
