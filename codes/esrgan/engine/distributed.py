"""Distributed training on PyTorch's own engine: torchrun sets the environment, DDP averages gradients.

`python train.py ...` is a world of one; `torchrun --nproc_per_node=N train.py ...` (or multi-node with
`--nnodes`, `--node_rank`, `--rdzv_endpoint`) starts N processes that find rank and world size in the
environment. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device, timeout_s: int = 1800) -> World:
    """Join the process group torchrun describes in the environment; a plain run is a world of one.
    `timeout_s` bounds every wait for the other processes (rank 0 may be saving while they wait)."""
    world_size = _env_int("WORLD_SIZE", "1")
    if world_size < 1:
        raise ValueError(f"the environment variable WORLD_SIZE={world_size} must be at least 1")
    if world_size == 1:
        return World()
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK", "0")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        hint = "" if os.environ.get("TORCHELASTIC_RUN_ID") else "; start runs of several processes with torchrun"
        if hint and rank == 0:  # torchrun's agent gathers its workers itself: this wait is short under it
            print(f"waiting up to {timeout_s} s (train.dist_timeout) for the {world_size} processes of "
                  f"WORLD_SIZE={world_size} to join", file=sys.stderr)
        try:
            _join(backend, rank, world_size, datetime.timedelta(seconds=timeout_s))
        except dist.DistError as err:  # rank 0 waited for the others in vain, or another rank for rank 0
            raise OSError(f"the {world_size} processes did not all join within train.dist_timeout ({timeout_s} s) "
                          f"({err}){hint}") from err
    return World(rank, world_size, local_rank)


def _join(backend: str, rank: int, world_size: int, timeout: datetime.timedelta) -> None:
    store, rank, world_size = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    # After an elastic restart the workers may share torchrun's store with the attempt before; a prefix per
    # attempt keeps them from reading the dead processes' addresses (seen as gloo start-up failures).
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"esrgan/attempt_{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def launched_as_main() -> bool:
    """Whether this process is rank 0 of the world the environment describes (known before joining it)."""
    return _env_int("WORLD_SIZE", "1") <= 1 or _env_int("RANK") == 0


def _env_int(name: str, default: str | None = None) -> int:
    value = os.environ.get(name, default)
    if value is None:
        raise ValueError(f"the environment sets WORLD_SIZE={os.environ['WORLD_SIZE']} but not {name}: start runs of "
                         "several processes with torchrun, which sets both (or unset WORLD_SIZE for one process)")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the environment variable {name}={value!r} is not a whole number") from None


def all_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """Mean of a tensor over all ranks (used only at print time)."""
    if world.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.world_size
    return values


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True if `flag` is true on any rank: every rank gets the same answer."""
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: object, world: World) -> list:
    if not world.distributed:
        return [obj]
    out: list = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every rank's loss uses the sum, so each input's gradient is the sum
    of all ranks' output gradients (what torch.distributed.nn.functional.all_reduce did before it was
    deprecated)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Differentiable mean of `x` over the batches of all ranks (equal batch sizes)."""
    return _SumOverRanks.apply(x.sum()) / (x.numel() * dist.get_world_size())


def any_rank_flag(flag: torch.Tensor) -> torch.Tensor:
    """A boolean tensor that is true where `flag` is true on any rank, computed on the device."""
    out = flag.float()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out > 0
