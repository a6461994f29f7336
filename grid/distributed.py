"""Data-parallel training over torch.distributed: who this process is, and the few collectives
the trainer needs.

    dist = Dist.from_env()            # torchrun, a SLURM task (submitit) or a single process
    model = dist.wrap(model, fsdp)    # DDP, FSDP2 (fully_shard) or the module itself
    local = dist.shard(batch)         # this rank's rows of the global batch

Decisions:
- Every rank builds the same data stream and packs the whole global batch, then keeps its
  contiguous block of rows. Packing is 2-4% of a step here and the stream state, RNG states
  and checkpoints are then the same whatever the world size, so a run can resume on a
  different number of GPUs and a 2-process run equals a 1-process run with the same global
  batch (tested). The cost, each rank packing world_size times the rows it trains on, matters
  only for very large worlds; sharding the stream itself is the fix there.
- Loss normalisation over the global batch (model/family.py `combine`, given `Dist.sum`): each
  rank's loss terms are sums over its own text targets / images, whose counts differ between
  ranks. Dividing each local sum by the global count (times world, because DDP and FSDP
  average gradients) makes the gradient exactly that of the global mean, as in one process.
- Ranks come from the environment: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*;
  on SLURM, submitit's TorchDistributedEnvironment derives them from the job (SLURM_PROCID ...).
  gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td

from model.batch import PackedBatch


def _slurm_task_env() -> None:
    """Export torch.distributed's variables from a multi-task SLURM job (submitit's helper)."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @staticmethod
    def from_env(device: torch.device | None = None) -> "Dist":
        """This process's place; initialises the process group when the world has > 1 process."""
        _slurm_task_env()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return Dist()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not td.is_initialized():
            cuda = device is not None and device.type == "cuda"
            if cuda:
                torch.cuda.set_device(local)
            td.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
        return Dist(rank, world, local)

    def device(self, kind: str) -> torch.device:
        return torch.device("cuda", self.local_rank) if kind == "cuda" else torch.device(kind)

    # ------------------------------------------------------------ data

    def shard(self, batch: PackedBatch) -> tuple[PackedBatch, slice]:
        """This rank's contiguous block of rows, and the slice of the global batch's images it
        holds (images are numbered row-major, so a block of rows holds a run of images)."""
        if not self.active:
            return batch, slice(0, batch.images.shape[0])
        rows = batch.tokens.shape[0]
        if rows % self.world:
            raise ValueError(f"batch_rows={rows} is not divisible by the world size {self.world}: "
                             f"choose batch_rows as a multiple of the number of processes")
        per = rows // self.world
        return batch.rows(self.rank * per, (self.rank + 1) * per)

    # ------------------------------------------------------------ collectives

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a copy; the input is unchanged)."""
        if not self.active:
            return values.clone()
        out = values.clone()
        td.all_reduce(out)
        return out

    def broadcast(self, obj):
        """Rank 0's Python object on every rank."""
        if not self.active:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def close(self) -> None:
        if self.active and td.is_initialized():
            td.destroy_process_group()

    # ------------------------------------------------------------ model

    def wrap(self, model: torch.nn.Module, fsdp: bool) -> torch.nn.Module:
        """DDP (every rank holds the model) or FSDP2 (parameters sharded per block, for the
        sizes whose optimizer state does not fit one GPU)."""
        if not self.active:
            return model
        if fsdp:
            from torch.distributed.fsdp import fully_shard

            for block in model.backbone.blocks:
                fully_shard(block)
            return fully_shard(model)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DDP and/or torch.compile wrappers (FSDP2 shards in place: no wrapper)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def full_state(model: torch.nn.Module, opt: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts, the same layout for 1 process, DDP and FSDP2
    (so a checkpoint resumes under any of them). With FSDP2 every rank must call this: the
    shards are gathered (to CPU)."""
    if not fsdp:
        return unwrap(model).state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, opt: torch.optim.Optimizer, model_state: dict, opt_state: dict,
                    fsdp: bool) -> None:
    if not fsdp:
        unwrap(model).load_state_dict(model_state)
        opt.load_state_dict(opt_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, opt, model_state_dict=model_state, optim_state_dict=opt_state,
                   options=StateDictOptions(full_state_dict=True))
