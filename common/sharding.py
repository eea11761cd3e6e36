"""Sharded evaluation: one evaluation spread over the processes torchrun starts (one host or many), each on its
own device, with rank 0 gathering the raw predictions into the one run directory.

torchrun (torch.distributed.elastic) is the engine: `zoo eval <bundle> --devices N` re-runs itself under torchrun,
exactly as `zoo train` does (common/training/launch.py). Every rank prepares the dataset and converts the model
itself (no shared filesystem is assumed between nodes), predicts its shard into a private folder, and sends the
folder's files to rank 0 with one `gather_object`. Rank 0 writes them out, lets the bundle merge them into what one
process would have written (same predictions, same order), then scores, verifies and reports as usual.

Why gloo on every device kind: the only collectives here move prediction files (bytes on the host), so a CPU
process group is right for CUDA and NPU ranks too; the device itself (cuda:i / npu:i from LOCAL_RANK) only runs
the model. Why shards are cut at batch boundaries: every batch a rank runs is a batch the 1-process run runs, so
the outputs are the same numbers, not just the same metric.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ZooError


@dataclass(frozen=True)
class ShardContext:
    """This process's place in a sharded evaluation."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def host(self) -> str:
        return socket.gethostname()


def shard_context() -> ShardContext | None:
    """The torchrun context when this process is one of several ranks; None for a plain single process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ZooError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (torchrun sets them)") from None
    return ShardContext(rank, world, local) if world > 1 else None


def init_group(timeout_s: float = 7200.0) -> None:
    """Join the gloo process group torchrun prepared (env://). The long timeout covers the slowest rank's
    prepare + convert + predict before the gather (a full VOT2016 on a CPU takes that long)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def gather_to_main(obj: Any, ctx: ShardContext) -> list[Any] | None:
    """Every rank's picklable `obj`, in rank order, on rank 0 (None elsewhere)."""
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, ctx: ShardContext) -> Any:
    """Rank 0's picklable `obj` on every rank."""
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def close_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, local_rank: int) -> str:
    """The device of one rank: cpu stays cpu; cuda / npu (with or without an index) becomes device LOCAL_RANK of
    this host, as torchrun numbers processes per host."""
    kind = device.partition(":")[0]
    return "cpu" if kind == "cpu" else f"{kind}:{local_rank}"


def shard_ranges(n_items: int, world_size: int, batch_size: int = 1) -> list[range]:
    """Contiguous, balanced parts of `range(n_items)` whose boundaries fall on multiples of `batch_size` (so each
    rank's batches are exactly batches of the 1-process run); concatenated in rank order they give back the
    whole range. Ranks beyond the number of batches get empty parts."""
    if world_size < 1 or batch_size < 1:
        raise ValueError(f"world_size and batch_size must be >= 1, got {world_size}, {batch_size}")
    n_batches = -(-n_items // batch_size)
    bounds = [min(n_items, batch_size * (n_batches * r // world_size)) for r in range(world_size + 1)]
    return [range(bounds[r], bounds[r + 1]) for r in range(world_size)]


def balanced_groups(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Items (e.g. sequences, cost = frames) spread over ranks by longest-first greedy assignment to the least
    loaded rank; each group keeps the items' original order. Deterministic: ties go to the lower index/rank."""
    loads = [0.0] * world_size
    groups: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        groups[r].append(i)
        loads[r] += costs[i]
    return [sorted(g) for g in groups]


def pack_dir(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative POSIX path (what a rank sends to rank 0)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack_dir(files: dict[str, bytes], folder: Path) -> None:
    """Write what `pack_dir` produced under `folder`, refusing any path that would leave it."""
    root = folder.resolve()
    for rel, data in files.items():
        target = (folder / rel).resolve()
        if root not in target.parents:
            raise ZooError(f"shard file {rel!r} would be written outside {folder}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def merge_by_copy(parts: Sequence[Path], run_dir: Path) -> None:
    """Merge shards whose predictions are one file per item (tracker result files): copy every file into
    `run_dir`. A file two shards both wrote must be byte-identical (e.g. the tracker configuration); anything else
    is an error, never a silent overwrite."""
    seen: dict[str, Path] = {}
    for part in parts:
        for src in sorted(p for p in part.rglob("*") if p.is_file()):
            rel = src.relative_to(part).as_posix()
            dst = run_dir / rel
            if rel in seen:
                if seen[rel].read_bytes() != src.read_bytes():
                    raise ZooError(f"shards {seen[rel].parent} and {part} both wrote {rel} with different content")
                continue
            seen[rel] = src
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def merge_stats(per_rank: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One stage summary from the ranks' PredictStats dicts: items summed, wall seconds the slowest rank's, extra
    integer counts summed; any other extra value kept only when every rank reports the same."""
    out: dict[str, Any] = {"items": sum(s["items"] for s in per_rank),
                           "seconds": max(s["seconds"] for s in per_rank), "extra": {}}
    keys = [k for k in per_rank[0]["extra"] if all(k in s["extra"] for s in per_rank)]
    for k in keys:
        values = [s["extra"][k] for s in per_rank]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out["extra"][k] = sum(values)
        elif all(v == values[0] for v in values):
            out["extra"][k] = values[0]
    return out
