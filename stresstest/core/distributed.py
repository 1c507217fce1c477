"""Data-parallel training under torchrun: which process this is, and the few collectives the loop needs.

`torchrun --nproc_per_node N train.py ...` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK set; each
joins one process group (NCCL on CUDA GPUs, gloo on CPUs) and trains one replica under
DistributedDataParallel. Without torchrun, a run is one process and nothing here does anything."""
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import resolve_device
from .errors import UserError, first_line


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that prints and writes files."""
        return self.rank == 0


def start(device_name: str) -> tuple[Ranks, torch.device]:
    """This process's place in a torchrun job (joining its process group) and its device: cuda:LOCAL_RANK on
    GPUs, else the device asked for."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), resolve_device(device_name)
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {world} processes on this node but only "
                            f"{torch.cuda.device_count()} GPUs are visible; lower --nproc_per_node")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise UserError("data-parallel training runs on CUDA GPUs (NCCL) or CPUs (gloo), not on MPS; "
                        "use --device cuda or cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def all_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sum of `tensor` over all processes (in place; itself in a one-process run)."""
    if ranks.world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def finish(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


# What gloo and NCCL say when the other end of a collective is gone. Some collectives (DDP's buffer broadcast in
# the forward pass) raise them as a plain RuntimeError rather than a DistError.
PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "remote worker crash",
             "nccl communicator was aborted")


def lost_peer(error: Exception, ranks: Ranks) -> bool:
    """Whether `error` is a collective failing because another process of the job died."""
    if isinstance(error, dist.DistError):
        return True
    return ranks.world > 1 and any(phrase in str(error).lower() for phrase in PEER_LOST)


@contextmanager
def torchrun_job(device_name: str, rerun: str):
    """(ranks, device) of this process for the body of a stage, leaving the process group at its end. A collective
    that fails because another process of the job died becomes one line that says how to continue (`rerun`)."""
    ranks, device = start(device_name)
    try:
        yield ranks, device
    except (dist.DistError, RuntimeError) as error:
        if not lost_peer(error, ranks):
            raise
        raise UserError(f"another process of this torchrun job failed ({type(error).__name__}: "
                        f"{first_line(error)}); {rerun}") from None
    finally:
        finish(ranks)
