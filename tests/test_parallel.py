"""Forked workers: results in order, shared data not pickled, a dying worker a clear error."""

from __future__ import annotations

import os

import pytest

from decola_core.errors import DecolaError
from decola_core.utils.parallel import fork_map


def scaled(shared: dict, item: int) -> tuple[int, int]:
    return item * shared["factor"], os.getpid()


def dies_on_three(shared: None, item: int) -> int:
    if item == 3:
        os._exit(1)  # as if killed for memory
    return item


def test_results_come_back_in_order_from_other_processes() -> None:
    results = fork_map(scaled, {"factor": 3, "unpicklable": lambda: None}, range(20), 2)
    assert [value for value, _ in results] == [3 * i for i in range(20)]
    assert os.getpid() not in {pid for _, pid in results}


def test_a_dying_worker_is_a_clear_error_not_a_hang() -> None:
    with pytest.raises(DecolaError, match="worker process died"):
        fork_map(dies_on_three, None, range(8), 2)
