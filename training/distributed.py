"""torchrun DDP without the DDP wrapper's surprises: process group from the environment
(NCCL on GPUs, gloo on CPUs), all-gather that keeps gradients, explicit gradient averaging."""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> dict:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR…); a no-op alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return {"rank": rank(), "world_size": world_size(), "device": "cuda" if torch.cuda.is_available() else "cpu"}
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend)
    return {"rank": rank(), "world_size": world_size(), "device": "cuda" if torch.cuda.is_available() else "cpu",
            "backend": backend}


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order; gradients flow back to each rank's own rows."""
    import torch.distributed.nn.functional as dnn
    return torch.cat(dnn.all_gather(x), dim=0)


def gather_objects(items: list) -> list:
    """Every rank's list, concatenated in rank order (labels that travel with gathered embeddings)."""
    out: list = [None] * world_size()
    tdist.all_gather_object(out, items)
    return [x for part in out for x in part]


def average_gradients(model: torch.nn.Module) -> None:
    """Sum the ranks' gradients (each holds d(global loss)/d(its rows)): the global batch's gradient."""
    if world_size() <= 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
            p.grad /= world_size()


def shutdown() -> None:
    """Leave cleanly: gloo ranks can hang at exit after collectives otherwise."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()
