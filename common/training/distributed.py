"""Process group, device placement and the collectives the training loop needs.

torchrun (torch.distributed.elastic) is the engine: it sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT for every process on one host or many. The backend follows the device: gloo on CPU, nccl on CUDA,
hccl on Ascend (torch_npu; not runnable on the CI machine, kept to the calls the Ascend port makes).

Gradients are reduced the way pysot does it (shared/specs/siamrpnpp_training.md section 1), not with
DistributedDataParallel: rank 0's whole state (parameters and buffers) is broadcast once, then after every backward
the gradients of the parameters that require grad are all-reduced with SUM; BatchNorm buffers are never synced.
DDP is not used because (a) it averages, (b) it fixes the set of trainable parameters at construction while the
SiamRPN++ recipe unfreezes backbone layers at epoch 10, and (c) it broadcasts buffers by default.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from common.errors import ZooError

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank in the world, its rank on the host, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: a single process without a process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ZooError(f"environment variable {name}={value!r} is not an integer") from None


def device_for(kind: str, local_rank: int) -> torch.device:
    """The device of one process: cpu, or accelerator `local_rank` of `kind` (cuda / npu), as pysot maps rank ->
    device (rank % devices per host; torchrun's LOCAL_RANK is exactly that)."""
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ZooError("--device cuda: no CUDA device is visible to torch")
        if local_rank >= torch.cuda.device_count():
            raise ZooError(f"local rank {local_rank} needs CUDA device {local_rank}, only "
                           f"{torch.cuda.device_count()} visible (lower --devices)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if kind == "npu":
        try:
            import torch_npu  # noqa: F401  (registers the 'npu' device and the hccl backend)
        except ImportError as e:
            raise ZooError(f"--device npu needs torch_npu matching torch {torch.__version__}: {e}") from None
        torch.npu.set_device(local_rank)  # type: ignore[attr-defined]
        return torch.device("npu", local_rank)
    raise ZooError(f"unknown device kind {kind!r}; choose from {sorted(BACKENDS)}")


def setup(kind: str, *, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun prepared (env://), or run alone when no launcher set WORLD_SIZE."""
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = device_for(kind, local_rank)
    if world == 1 and "MASTER_ADDR" not in os.environ:
        return DistContext(0, 1, 0, device, None)
    backend = BACKENDS[kind]
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_state(model: nn.Module, ctx: DistContext) -> None:
    """Every rank starts from rank 0's parameters and buffers (pysot's wrapper does this once at start)."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def sum_gradients(params: Iterable[nn.Parameter], ctx: DistContext, *, average: bool = False) -> None:
    """All-reduce (SUM) the gradients of `params` in one flat buffer (one collective per step, not one per
    tensor); `average` then divides by the world size (for recipes whose reference ran one process, so that N
    processes update exactly like one process on the same global batch). A trainable parameter that got no
    gradient on this rank contributes zeros, so every rank takes part in the same collective with the same
    layout."""
    if not ctx.distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if average:
        flat /= ctx.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def mean_over_ranks(values: Mapping[str, float], ctx: DistContext) -> dict[str, float]:
    """Rank-averaged scalars (pysot logs losses averaged over ranks)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is true on any rank (keeps per-rank decisions in step)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def _collective_device(ctx: DistContext) -> torch.device:
    # gloo reduces CPU tensors; nccl / hccl need tensors on the process's device.
    return torch.device("cpu") if ctx.backend == "gloo" else ctx.device
