"""Multi-process (multi-GPU, multi-node) training on Hugging Face accelerate's process group.

``mofusion train`` runs unchanged under ``accelerate launch`` or ``torchrun``: both set
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, and then :func:`setup` hands process-group creation, the
device of each process and the DistributedDataParallel wrapper to ``accelerate``. A single process
(no launcher) never imports it.

How the work is split (see :class:`mofusion.training.Trainer`): ``train.batch_size`` is per process;
every process draws the same global batch of ``world_size x batch_size`` windows (with its step
noise, diffusion steps and condition dropout) from the step's seeded generators and trains on its
own slice, and DDP averages the gradients. So N processes of batch B take the same steps as one
process of batch N x B (tested: equal losses and weights, within float tolerance, without dropout).
Only rank 0 writes logs and checkpoints; every rank can resume from them.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import MofusionError


@dataclass
class Distributed:
    """This process's place in the job (a single process: rank 0 of 1)."""

    world_size: int = 1
    rank: int = 0
    device: torch.device | None = None
    accelerator: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: int) -> slice:
        """This rank's slice of a global batch of ``world_size * batch`` items."""
        return slice(self.rank * batch, (self.rank + 1) * batch)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as DistributedDataParallel (the same module for a single process)."""
        if not self.enabled:
            return model
        return self.accelerator.prepare_model(model)

    def mean(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Statistics averaged over the ranks (one all-reduce for the whole dict)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        flat = torch.cat([values[k].detach().float().reshape(-1).to(self.device) for k in keys])
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        out, start = {}, 0
        for k in keys:
            n = values[k].numel()
            out[k] = flat[start : start + n].reshape(values[k].shape)
            start += n
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (a stop decision all ranks must share)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group (launchers expect every process to end cleanly).

        The DDP wrapper's reducer holds the group, and accelerate keeps the wrapper: both are let go
        first (the caller drops its own, see ``mofusion train``), so that gloo's threads are joined
        here while the interpreter is alive, not at its exit, where a rank could abort with
        "terminate called without an active exception" (seen about once in 40 runs under load)."""
        if self.enabled and torch.distributed.is_initialized():
            if self.accelerator is not None:
                self.accelerator.free_memory()  # its references to the wrapped model, and a gc pass
            gc.collect()
            torch.distributed.destroy_process_group()


def launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise MofusionError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def setup(device: str = "auto") -> Distributed:
    """The job this process belongs to: under a launcher (``WORLD_SIZE`` > 1) the process group is
    created by ``accelerate`` (NCCL on GPUs, gloo on CPUs); otherwise a single process."""
    world = launched_world_size()
    if world <= 1:
        return Distributed()
    try:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs
    except ImportError as exc:
        raise MofusionError(
            f"multi-process training needs accelerate ({exc}); pip install accelerate"
        ) from None
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    # every parameter takes part in every step (the null condition too), so DDP needs no search
    kwargs = DistributedDataParallelKwargs(find_unused_parameters=False)
    accelerator = Accelerator(cpu=on_cpu, mixed_precision="no", kwargs_handlers=[kwargs])
    if accelerator.num_processes != world:
        raise MofusionError(
            f"the launcher started {world} processes but accelerate sees {accelerator.num_processes}"
        )
    return Distributed(accelerator.num_processes, accelerator.process_index, accelerator.device, accelerator)
