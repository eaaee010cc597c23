"""Data parallel under torchrun: each rank takes every world_size-th frame of the epoch's order, DDP
averages gradients, validation sums are all-reduced; only rank 0 writes files."""

from __future__ import annotations

import hashlib
import os

import torch

from gnnmd.devices import resolve_device


class Distributed:
    """Rank and world size from torchrun's environment (a single process otherwise), and this rank's
    device: on GPUs each rank takes its own (cuda:LOCAL_RANK) and ranks talk over nccl; on CPUs, gloo."""

    def __init__(self, device: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.world > 1 else None
        self.device = resolve_device(device, local_rank)
        self.started = False
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self.started = True
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[self.device.index])
        return DistributedDataParallel(model)

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any (ranks' clocks differ: they must stop together or
        DDP would hang)."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def all_same(self, value):
        """Every rank's `value` (gathered), for cross-rank checks."""
        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def close(self):
        if self.started:
            torch.distributed.destroy_process_group()


def parameter_digest(model) -> str:
    """sha256 of the (unwrapped) model's state_dict, to check that every rank holds the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(getattr(model, "module", model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
