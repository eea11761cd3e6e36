"""Start training on N processes with torchrun (torch.distributed.run), one host or many.

`zoo train <bundle> --devices N` re-executes itself under torchrun: the children run the same `zoo train` command
line, see torchrun's environment (LOCAL_RANK, ...) and train as one rank each. The equivalent plain line is printed
so users can run torchrun themselves (e.g. under a cluster scheduler):

    torchrun --nproc-per-node 8 --standalone -m common train siamrpnpp --data ... --out ...
    torchrun --nproc-per-node 8 --nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint host:29400 \
        --rdzv-id run1 -m common train siamrpnpp ...
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchSpec:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (multi-node)
    rdzv_id: str = "zoo"
    master_port: int | None = None  # single node: a fixed port (default: torchrun --standalone picks a free one)


def under_torchrun() -> bool:
    """True inside a process torchrun started (it always sets these)."""
    return "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def train_args(bundle: str, out: str | os.PathLike, overrides: Mapping[str, object], *extra: str,
               device: str = "cpu", workers: int = 1) -> list[str]:
    """The `zoo train` arguments every rank runs: bundle, run directory, device kind, loader workers, recipe
    overrides (`--set k=v`), then `extra` options (--resume, --stop-after, ...)."""
    return ["train", bundle, "--out", str(out), "--device", device, "--workers", str(workers),
            *[f"--set={k}={v}" for k, v in overrides.items()], *extra]


def torchrun_args(spec: LaunchSpec) -> list[str]:
    args = ["--nproc-per-node", str(spec.nproc_per_node)]
    if spec.nnodes == 1 and spec.rdzv_endpoint is None:
        if spec.master_port is None:
            args.append("--standalone")
        else:
            args += ["--master-addr", "127.0.0.1", "--master-port", str(spec.master_port)]
    else:
        if not spec.rdzv_endpoint:
            raise ValueError("several nodes need a rendezvous endpoint (host:port) reachable from every node")
        args += ["--nnodes", str(spec.nnodes), "--node-rank", str(spec.node_rank), "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", spec.rdzv_endpoint, "--rdzv-id", spec.rdzv_id]
    return args


def torchrun_command(spec: LaunchSpec, zoo_args: Sequence[str], *, python: str | None = None) -> list[str]:
    """The full command: `python -m torch.distributed.run <torchrun args> -m common <zoo args>`."""
    return [python or sys.executable, "-m", "torch.distributed.run", *torchrun_args(spec), "-m", "common",
            *zoo_args]


def printable(spec: LaunchSpec, zoo_args: Sequence[str]) -> str:
    return shlex.join(["torchrun", *torchrun_args(spec), "-m", "common", *zoo_args])


def launch(spec: LaunchSpec, zoo_args: Sequence[str], *, env: dict[str, str] | None = None) -> int:
    """Run torchrun in the foreground; its exit status (non-zero when any rank failed; torchrun's summary names
    the failed rank and its error, and each rank logs its own failure)."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, spec.nproc_per_node))))
    return subprocess.call(torchrun_command(spec, zoo_args), env=full_env)
