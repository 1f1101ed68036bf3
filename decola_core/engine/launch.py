"""``launch(function, job, options)``: run a job function in one process or in N local worker
processes per machine (detectron2's ``launch``), through torch's elastic agent.

Under ``torchrun`` or Slurm (``WORLD_SIZE``/``SLURM_NTASKS`` set) the processes already exist:
the function runs as it is and joins the group the environment describes
(:func:`~decola_core.engine.distributed.init_distributed`). The library spawns a function, never
its own command line.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from decola_core.errors import PREEMPTED_EXIT, ConfigError, DecolaError, Preempted
from decola_core.jobs import LaunchOptions
from decola_core.utils.allocator import retain_freed_memory
from decola_core.utils.logs import setup_logging

JobT = TypeVar("JobT")


def in_distributed_job() -> bool:
    """Whether this process is one of several started by torchrun or Slurm."""
    env = os.environ
    return int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1"))) > 1


def launch(function: Callable[[JobT], Any], job: JobT, options: LaunchOptions | None = None) -> Any:
    """``function(job)`` in this process, or in ``num_gpus`` worker processes (gloo on CPU,
    NCCL on GPU) when more than one is asked for; returns rank 0's result.

    ``function`` must be importable by name and ``job`` picklable (workers are spawned).
    """
    options = options or LaunchOptions()
    if options.num_gpus < 1 or options.num_machines < 1:
        raise ConfigError("--num-gpus and --num-machines must be at least 1")
    if in_distributed_job() or options.num_gpus * options.num_machines == 1:
        retain_freed_memory()
        return function(job)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if options.num_machines > 1:
        if not options.dist_url:
            raise ConfigError("several machines need --dist-url host:port of machine 0")
        host, _, port = options.dist_url.removeprefix("tcp://").partition(":")
        rendezvous = {
            "rdzv_backend": "static",
            "rdzv_endpoint": f"{host}:{port or 29500}",
            "rdzv_configs": {"rank": options.machine_rank},
        }
    else:
        rendezvous = {"rdzv_backend": "c10d", "rdzv_endpoint": f"127.0.0.1:{_free_port()}"}
    config = LaunchConfig(
        min_nodes=options.num_machines,
        max_nodes=options.num_machines,
        nproc_per_node=options.num_gpus,
        run_id=uuid.uuid4().hex[:8],
        max_restarts=options.max_restarts,
        start_method="spawn",
        **rendezvous,
    )
    try:
        results = elastic_launch(config, _run_worker)(function, job)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        error = Preempted if failure.exitcode == PREEMPTED_EXIT else DecolaError
        raise error(f"worker {rank} failed: {_first_line(failure.message)}") from None
    return results.get(0) if isinstance(results, dict) else results


def _run_worker(function: Callable[[Any], Any], job: Any) -> Any:
    """A worker: logs like the parent (``DECOLA_LOG_LEVEL``); the function's own user-facing
    errors end it with their one-line message."""
    setup_logging(rank=int(os.environ.get("RANK", "0")))
    retain_freed_memory()
    try:
        return function(job)
    except DecolaError as err:
        print(f"decola: error: {err}", file=sys.stderr)
        raise SystemExit(getattr(err, "exit_code", 2)) from None


def _first_line(message: Any) -> str:
    if isinstance(message, dict):
        message = message.get("message", message)
    text = str(message).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
