"""The shared training machinery (common/training) on a tiny task: sampler order, N processes == 1 process on
the concatenated batch, resume == uninterrupted, two torchrun launchers as two nodes, a failing rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from common.training.launch import LaunchSpec, printable, torchrun_command
from common.training.log import read_jsonl
from common.training.loop import TrainConfig, snapshot_path, train
from common.training.sampler import ShardedSampler
from common.training.state import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from training_tasks import make_tiny  # noqa: E402


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return dict(read_checkpoint(path).state_dict)


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=tol, rtol=0), f"{k}: max diff {(a[k] - b[k]).abs().max():.3g}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], out: Path, sets: dict[str, str], *, timeout: int = 240,
              extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, "-m", "common.training.worker",
           "training_tasks:make_tiny", str(out), *extra, *[f"--set={k}={v}" for k, v in sets.items()]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: int = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


# -- sampler ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,world", [(20, 2), (23, 3), (8, 1)])
def test_sharded_sampler_is_torchs_distributed_order(length: int, world: int) -> None:
    for rank in range(world):
        ours = list(ShardedSampler(length, rank=rank, world_size=world, seed=0))
        theirs = list(DistributedSampler(range(length), num_replicas=world, rank=rank, shuffle=True, seed=0))
        assert ours == theirs


def test_sharded_sampler_starts_mid_way() -> None:
    full = list(ShardedSampler(30, rank=1, world_size=2, seed=5))
    assert list(ShardedSampler(30, rank=1, world_size=2, seed=5, start=4)) == full[4:]
    assert len(ShardedSampler(30, rank=1, world_size=2, seed=5, start=4)) == len(full) - 4


# -- one process: resume == uninterrupted --------------------------------------------------------------------
@pytest.mark.parametrize("stop", [5, 9])  # mid-epoch 0 (frozen layer), and just after the epoch-1 rebuild
def test_resume_equals_uninterrupted(tmp_path: Path, stop: int) -> None:
    sets = {"clip": "0.5"}
    full = train(make_tiny(sets), TrainConfig(tmp_path / "full", progress=False))
    assert full.completed and full.total_iterations == 16
    part = train(make_tiny(sets), TrainConfig(tmp_path / "part", progress=False, stop_after=stop))
    assert not part.completed and part.iterations_done == stop
    resumed = train(make_tiny(sets), TrainConfig(tmp_path / "part", progress=False,
                                                 resume=tmp_path / "part" / "resume.pth"))
    assert resumed.completed
    for e in (1, 2):
        _assert_close(_weights(snapshot_path(tmp_path / "full", e)), _weights(snapshot_path(tmp_path / "part", e)))
    a = read_jsonl(tmp_path / "full" / "train_log.jsonl")
    b = read_jsonl(tmp_path / "part" / "train_log.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 17))
    assert [round(r["total_loss"], 9) for r in a] == [round(r["total_loss"], 9) for r in b]
    # the optimizer state (momentum) travels too: resuming from the e1 snapshot reproduces e2
    again = train(make_tiny(sets), TrainConfig(tmp_path / "from_e1", progress=False,
                                               resume=snapshot_path(tmp_path / "full", 1)))
    assert again.completed
    _assert_close(_weights(snapshot_path(tmp_path / "full", 2)), _weights(snapshot_path(tmp_path / "from_e1", 2)))


def test_resume_with_another_world_size_is_refused(tmp_path: Path) -> None:
    train(make_tiny({}), TrainConfig(tmp_path, progress=False, stop_after=2))
    ck = read_checkpoint(tmp_path / "resume.pth")
    assert ck.resume is not None and ck.resume.world_size == 1 and ck.resume.iteration == 2


def test_snapshot_is_upstream_format(tmp_path: Path) -> None:
    train(make_tiny({}), TrainConfig(tmp_path, progress=False))
    obj = torch.load(snapshot_path(tmp_path, 1), weights_only=True)
    assert {"epoch", "state_dict", "optimizer"} <= obj.keys() and obj["epoch"] == 1
    assert (tmp_path / "train_plot.png").stat().st_size > 1000
    assert (tmp_path / "training.json").is_file()


# -- several processes (gloo) ------------------------------------------------------------------------------
def test_two_processes_equal_one_on_the_concatenated_batch(tmp_path: Path) -> None:
    """Summed gradients: 2 ranks x batch 2 == 1 process x batch 4 with the loss x 2, for the whole run (norm
    clip active, an optimizer rebuild at epoch 1)."""
    sets = {"clip": "0.5"}
    rc, out = _finish(_torchrun(["--nproc-per-node", "2", "--standalone"], tmp_path / "two", sets))
    assert rc == 0, out
    train(make_tiny({**sets, "batch_size": "4", "loss_factor": "2"}), TrainConfig(tmp_path / "one", progress=False))
    for e in (1, 2):
        _assert_close(_weights(snapshot_path(tmp_path / "two", e)), _weights(snapshot_path(tmp_path / "one", e)))
    assert read_checkpoint(snapshot_path(tmp_path / "two", 2)).resume.world_size == 2


def test_averaged_gradients_equal_one_process_without_a_factor(tmp_path: Path) -> None:
    """grad_reduction "mean" (recipes published from one process): 2 ranks x batch 2 == 1 process x batch 4."""
    rc, out = _finish(_torchrun(["--nproc-per-node", "2", "--standalone"], tmp_path / "two", {"reduction": "mean"}))
    assert rc == 0, out
    train(make_tiny({"batch_size": "4"}), TrainConfig(tmp_path / "one", progress=False))
    _assert_close(_weights(snapshot_path(tmp_path / "two", 2)), _weights(snapshot_path(tmp_path / "one", 2)))


def test_two_torchrun_launchers_as_two_nodes(tmp_path: Path) -> None:
    port = _free_port()
    common = ["--nproc-per-node", "1", "--nnodes", "2", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "zoo-test"]
    nodes = [_torchrun([*common, "--node-rank", str(r)], tmp_path / "nodes", {}) for r in (0, 1)]
    results = [_finish(p) for p in nodes]
    assert all(rc == 0 for rc, _ in results), results
    train(make_tiny({"batch_size": "4", "loss_factor": "2"}), TrainConfig(tmp_path / "one", progress=False))
    _assert_close(_weights(snapshot_path(tmp_path / "nodes", 2)), _weights(snapshot_path(tmp_path / "one", 2)))


def test_a_failing_rank_fails_the_job_and_is_named(tmp_path: Path) -> None:
    rc, out = _finish(_torchrun(["--nproc-per-node", "2", "--standalone"], tmp_path, {"fail_rank": "1",
                                                                                      "fail_at": "2"}))
    assert rc != 0
    assert "rank 1: RuntimeError: injected failure" in out
    assert not snapshot_path(tmp_path, 2).exists()


def test_torchrun_command_lines() -> None:
    single = printable(LaunchSpec(8), ["train", "siamrpnpp"])
    assert single == "torchrun --nproc-per-node 8 --standalone -m common train siamrpnpp"
    multi = torchrun_command(LaunchSpec(8, 2, 1, "10.0.0.1:29400", "r1"), ["train", "x"], python="py")
    assert multi[:3] == ["py", "-m", "torch.distributed.run"]
    assert ["--nnodes", "2", "--node-rank", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", "10.0.0.1:29400"] == \
        multi[5:13]
    with pytest.raises(ValueError, match="rendezvous"):
        torchrun_command(LaunchSpec(8, 2), ["train"])
