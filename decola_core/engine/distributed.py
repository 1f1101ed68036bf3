"""Process-group set-up from the environment (torchrun, Slurm, or decola's own launcher)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool | None = None) -> DistContext:
    """Join the process group described by the environment (torchrun's RANK/WORLD_SIZE or
    Slurm's SLURM_PROCID/SLURM_NTASKS); a single process otherwise. NCCL on GPU, gloo on CPU."""
    use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    env = os.environ
    world = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1")))
    rank = int(env.get("RANK", env.get("SLURM_PROCID", "0")))
    local_rank = int(env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0")))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_over_ranks(value: float, device: torch.device | None = None) -> float:
    """``value`` averaged over the processes of the job (itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    total = torch.tensor([float(value)], device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()
