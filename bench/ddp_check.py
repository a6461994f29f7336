"""One DDP training step with one process: NCCL on a GPU, gloo on a CPU.

    python -m bench.ddp_check [--device cuda|cpu]

The process group comes up (world size 1, rendezvous on localhost), DDP wraps the suite's
model, and one step of the trainer's loss (grid/train.batch_loss) runs through it; its loss and
gradients must equal those of the same step without DDP. Prints one JSON object and exits 1
when they differ. The multi-process equality (2 ranks = 1 process) is tests/integration/
test_distributed.py's, with gloo; this is the NCCL smoke check a GPU machine runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import sys

import torch
import torch.distributed as td
from torch.nn.parallel import DistributedDataParallel

from bench.common import build_family, make_batch, resolve_device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    from grid.distributed import Dist
    from grid.train import batch_loss

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # The rendezvous address for this check only: left behind, it would leak into whatever this
    # process starts later (a SLURM job inherits it and submitit refuses to overwrite it).
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    td.init_process_group(backend, rank=0, world_size=1)
    try:
        shape = argparse.Namespace(vocab=256, latent_channels=4, latent_size=8, patch_size=2, patch="linear",
                                   codebook=64)
        family = build_family("transfusion", "cpu-0.11M", shape)
        torch.manual_seed(0)
        plain = family.build().to(device).train()
        wrapped = DistributedDataParallel(copy.deepcopy(plain), device_ids=[device.index or 0] if device.type == "cuda"
                                          else None)
        batch = make_batch(family, 64, 4, 0).to(device)
        losses = []
        for model in (plain, wrapped):
            loss, _ = batch_loss(model, family, batch, torch.Generator().manual_seed(1), Dist())
            loss.backward()
            losses.append(float(loss.detach()))
        grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (plain, wrapped.module)]
        diff = float((grads[0] - grads[1]).abs().max() / grads[0].abs().max().clamp(min=1e-12))
        ok = abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0]) and diff <= 1e-4
        print(json.dumps({"backend": backend, "device": str(device), "loss": losses[0], "loss_ddp": losses[1],
                          "max_grad_rel_diff": diff, "ok": ok}))
        return 0 if ok else 1
    finally:
        td.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    sys.exit(main())
