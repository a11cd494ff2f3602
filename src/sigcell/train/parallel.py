"""Distributed wiring, and the only module that touches ``torch.distributed``.

Launch with torchrun, e.g. ``torchrun --nproc_per_node=2 -m sigcell pretrain --config base ...``:
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is detected, the process group is created
(NCCL on CUDA, gloo on CPU), and the model is wrapped in DDP (default) or FSDP2 (``parallel: fsdp``).
Without torchrun everything here is a no-op on one process.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "all_gather_objects", "all_reduce_sum", "barrier", "init_distributed", "shutdown",
           "wrap_model"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) logs and writes."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Create the process group when launched by torchrun and pick this process's device.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    """
    if device == "cuda" and not torch.cuda.is_available():
        msg = "device 'cuda' was requested but torch sees no CUDA device; pass --device cpu or auto"
        raise RuntimeError(msg)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        dev = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        return DistInfo(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=10), device_id=dev if use_cuda else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def is_initialized() -> bool:
    """True once a process group exists (created by sigcell or by the caller)."""
    return dist.is_available() and dist.is_initialized()


def shutdown() -> None:
    """Destroy the process group if this process created one."""
    if is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo, strategy: str) -> nn.Module:
    """The module the train step calls: the model itself, DDP(model), or the model sharded by FSDP2.

    FSDP2 shards each transformer block, then the root (embeddings, final norm, head).
    """
    if not info.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for block in model.encoder.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    msg = f"parallel strategy must be 'ddp' or 'fsdp', got {strategy!r}"
    raise ValueError(msg)


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, sync: bool) -> Iterator[None]:
    """Within the block, backward passes reduce gradients across ranks only if ``sync``.

    Accumulation micro-batches skip the reduction; the last one of each step reduces.
    """
    if sync or not dist.is_initialized():
        yield
        return
    if hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
        return
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
        return
    yield


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself on one process)."""
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` on one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if dist.is_initialized():
        dist.barrier()


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for the DTensor shards FSDP2 uses."""
    return hasattr(tensor, "to_local") and hasattr(tensor, "full_tensor")


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def full_state_dict(model: nn.Module, strategy: str) -> dict[str, torch.Tensor]:
    """The whole model state on CPU (gathered from the shards under FSDP; every rank must call)."""
    if dist.is_initialized() and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strategy: str) -> None:
    """Load a whole model state (from a checkpoint) into a plain or sharded model."""
    if dist.is_initialized() and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(state)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: str) -> dict[str, Any]:
    """The optimizer state to save (whole, keyed by parameter name under FSDP; every rank must call)."""
    if dist.is_initialized() and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         strategy: str) -> None:
    """Inverse of :func:`optimizer_state`."""
    if dist.is_initialized() and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        return
    optimizer.load_state_dict(state)
