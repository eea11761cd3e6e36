"""The training loop every training bundle runs (one process per device, started by torchrun).

A bundle supplies a `TrainingTask` (its recipe, model, dataset, targets and losses); this module owns the rest:
process group, seeding, rank-0 broadcast, the sharded resumable sampler, mixed precision, pysot's summed
gradients and norm clip, per-epoch snapshots, exact resume, the JSONL log, progress and the plot.

Step order (pysot tools/train.py, shared/specs/siamrpnpp_training.md section 4): at the first iteration of a new
epoch e, save `checkpoint_e{e}` (weights after e epochs) and stop if e == EPOCHS, then let the task reconfigure
(freeze / unfreeze, optimizer rebuild, the epoch's LR); then forward, skip the update when the loss is not finite
or > 1e4 on any rank, zero_grad, backward, SUM all-reduce, clip the global grad norm, step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.checkpoint import load_strict
from common.errors import CheckpointError, ZooError
from common.progress import Progress
from common.training import distributed as D
from common.training.log import JsonlLog, plot_training, read_jsonl
from common.training.sampler import ShardedSampler
from common.training.state import ResumePoint, capture_rng, read_checkpoint, restore_rng, save_checkpoint

log = logging.getLogger("zoo.train")

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "train_plot.png"
RESUME_FILE = "resume.pth"
SUMMARY_FILE = "training.json"
RECIPE_FILE = "recipe.json"
SNAPSHOT_DIR = "snapshot"


class TrainingTask(ABC):
    """A bundle's half of training. `configure` is the only place that sets train/eval modes and requires_grad:
    the loop never calls `model.train()` (it would silently undo a BatchNorm freeze)."""

    name: str
    epochs: int
    batch_size: int  # per process
    grad_clip: float | None = None
    max_valid_loss: float = 1e4  # pysot is_valid_number: an update is skipped above this
    log_every: int = 20
    log_phase: int = 0  # log the steps with (step - log_phase) % log_every == 0 (steps count from 1)
    # "sum": pysot's all-reduce (N processes update N x the global-batch-mean gradient); "mean": the average,
    # for recipes published from one process (SA-Siam), so N processes equal one process on the same global batch
    grad_reduction: str = "sum"

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The initial model (pretrained or random init); rank 0's copy is broadcast to every rank."""

    @abstractmethod
    def dataset(self) -> Dataset:
        """Items indexed 0..len-1; an item must depend only on its index (exact resume / N-process equality)."""

    @abstractmethod
    def configure(self, model: nn.Module, epoch: int, optimizer: torch.optim.Optimizer | None
                  ) -> torch.optim.Optimizer:
        """Set modes, requires_grad and the LR for `epoch`; return the optimizer to use (the same one or a new
        one). Called at the start (optimizer None) and at every epoch boundary."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms of one batch; 'total_loss' is the one optimised."""

    def describe(self) -> dict[str, Any]:
        """The resolved recipe, written to recipe.json."""
        return {}

    def after_training(self, out_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Rank 0, once training completed: extra results for training.json (e.g. the seed's loss metric)."""
        return {}

    def worker_init(self, worker_id: int) -> None:  # noqa: B027 - optional hook
        """Runs in each DataLoader worker (e.g. cv2.setNumThreads(1))."""

    @staticmethod
    def lr_record(optimizer: torch.optim.Optimizer) -> dict[str, float]:
        return {f"lr_{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


@dataclass
class TrainConfig:
    out_dir: Path
    device: str = "cpu"  # cpu | cuda | npu: the kind; the index comes from LOCAL_RANK
    workers: int = 1  # DataLoader workers per process (pysot NUM_WORKERS 1)
    seed: int = 123456  # pysot --seed: python / numpy / torch, identical on every rank
    sampler_seed: int = 0  # DistributedSampler's default seed
    amp: bool | None = None  # None: on where the device supports it (cuda, npu), off on cpu
    loss_scale: float | None = None  # static loss scale; None: dynamic (CUDA GradScaler) or the npu's 32
    resume: Path | None = None
    stop_after: int | None = None  # stop (saving resume.pth) once this many iterations are done
    checkpoint_every: int = 0  # also refresh resume.pth every N iterations (0: only at epoch ends and stops)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in training.json (e.g. how it was launched)


@dataclass
class TrainResult:
    iterations_done: int
    total_iterations: int
    completed: bool
    snapshots: dict[str, str]
    world_size: int


NPU_STATIC_LOSS_SCALE = 32.0  # the Ascend port: apex O1, static loss_scale=32 (spec section 12)


class _Precision:
    """fp32 on CPU; CUDA autocast fp16 + dynamic GradScaler; NPU autocast + static loss scale 32 (as the Ascend
    port's apex O1). The static path unscales after the all-reduce and never skips a step (apex with a static
    scale is assumed not to: spec section 14.3)."""

    def __init__(self, device: torch.device, amp: bool | None, loss_scale: float | None):
        self.device_type = device.type
        self.enabled = (device.type in ("cuda", "npu")) if amp is None else amp
        if self.enabled and device.type == "cpu":
            raise ZooError("mixed precision is not used on CPU (the recipe trains fp32 there); drop --amp")
        self.static_scale = loss_scale or (NPU_STATIC_LOSS_SCALE if self.enabled and device.type == "npu" else None)
        self.scaler = (torch.amp.GradScaler("cuda") if self.enabled and device.type == "cuda" and not self.static_scale
                       else None)

    def autocast(self):
        if not self.enabled:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        elif self.static_scale:
            (loss * self.static_scale).backward()
        else:
            loss.backward()

    def unscale(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        elif self.static_scale:
            for p in params:
                if p.grad is not None:
                    p.grad.div_(self.static_scale)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def describe(self) -> str:
        if not self.enabled:
            return "fp32"
        scaling = f"static loss scale {self.static_scale:g}" if self.static_scale else "GradScaler"
        return f"autocast fp16, {scaling}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def snapshot_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / SNAPSHOT_DIR / f"checkpoint_e{epoch}.pth"


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _StopRequest:
    """SIGTERM / SIGINT set a flag; the loop stops at the next step boundary on every rank and saves resume.pth."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread): no handler
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(task: TrainingTask, cfg: TrainConfig) -> TrainResult:
    """Run (or resume) `task` in this process as one rank of the torchrun world."""
    ctx = D.setup(cfg.device)
    try:
        return _train(task, cfg, ctx)
    finally:
        D.teardown(ctx)


def _train(task: TrainingTask, cfg: TrainConfig, ctx: D.DistContext) -> TrainResult:
    out = cfg.out_dir
    seed_everything(cfg.seed)
    model = task.build_model().to(ctx.device)
    D.broadcast_state(model, ctx)
    dataset = task.dataset()
    global_batch = task.batch_size * ctx.world_size
    per_epoch = len(dataset) // task.epochs // global_batch  # pysot num_per_epoch
    if per_epoch < 1:
        raise ZooError(f"{task.name}: {len(dataset)} items cannot fill one iteration per epoch over {task.epochs} "
                       f"epochs at {task.batch_size} x {ctx.world_size} pairs")
    total = per_epoch * task.epochs

    start, opt_epoch, resumed_rng = 0, 0, None
    state_dict_to_load = None
    optimizer_state = None
    if cfg.resume is not None:
        ck = read_checkpoint(cfg.resume)
        if ck.resume is not None:
            if ck.resume.world_size != ctx.world_size:
                raise CheckpointError(cfg.resume, f"written by {ck.resume.world_size} processes, this run has "
                                      f"{ctx.world_size}: the sample order depends on the world size; resume "
                                      "with the same --devices/--nnodes")
            start, opt_epoch = ck.resume.iteration, ck.resume.optimizer_epoch
            resumed_rng = ck.resume.rng[ctx.rank]
        else:  # a plain upstream snapshot checkpoint_e{e}: weights after e epochs, optimizer of epoch e - 1
            start, opt_epoch = ck.epoch * per_epoch, max(ck.epoch - 1, 0)
        state_dict_to_load, optimizer_state = ck.state_dict, ck.optimizer
        if start > total:
            raise CheckpointError(cfg.resume, f"at iteration {start}, beyond this recipe's {total}")
    if state_dict_to_load is not None:
        load_strict(model, {k.removeprefix("module."): v for k, v in state_dict_to_load.items()},
                    source=str(cfg.resume))
    optimizer = task.configure(model, opt_epoch, None)
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as e:
            raise CheckpointError(cfg.resume, f"optimizer state does not fit epoch {opt_epoch}'s parameter groups: "
                                  f"{e}") from None
    if resumed_rng is not None:
        restore_rng(resumed_rng)
    precision = _Precision(ctx.device, cfg.amp, cfg.loss_scale)

    sampler = ShardedSampler(len(dataset), rank=ctx.rank, world_size=ctx.world_size, seed=cfg.sampler_seed,
                             start=start * task.batch_size)
    loader = DataLoader(dataset, batch_size=task.batch_size, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=ctx.device.type == "cuda",
                        worker_init_fn=task.worker_init if cfg.workers > 0 else None,
                        prefetch_factor=4 if cfg.workers > 0 else None, persistent_workers=False)

    jsonl = progress = None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(json.dumps({"task": task.name, "recipe": task.describe(),
                                                   "world_size": ctx.world_size, "backend": ctx.backend,
                                                   "device": cfg.device, "precision": precision.describe(),
                                                   "iterations_per_epoch": per_epoch, "total_iterations": total,
                                                   "dataset_items": len(dataset), "config": _jsonable(asdict(cfg))},
                                                  indent=1, default=str))
        jsonl = JsonlLog(out / LOG_FILE, resume_from_step=start if cfg.resume else 0)
        progress = Progress(total, start, desc=f"train {task.name}", enabled=cfg.progress)
        log.info("%s: %d processes (%s), %d iterations/epoch x %d epochs, global batch %d, from iteration %d",
                 task.name, ctx.world_size, ctx.backend or "single", per_epoch, task.epochs, global_batch, start)

    def save(path: Path, epoch_field: int, iteration: int, optim_epoch: int) -> None:
        rngs = D.gather_objects(capture_rng(), ctx)  # collective: every rank calls it
        if ctx.is_main:
            save_checkpoint(path, epoch=epoch_field, state_dict=model.state_dict(), optimizer=optimizer.state_dict(),
                            resume=ResumePoint(iteration, optim_epoch, ctx.world_size, rngs),
                            extra={"task": task.name})

    snapshots: dict[str, str] = {}
    cur_epoch = opt_epoch
    it = start
    params = list(model.parameters())
    data_iter = iter(loader)
    stop_note = None
    with _StopRequest() as stop:
        while True:
            if cfg.stop_after is not None and it >= cfg.stop_after and it < total:
                stop_note = f"stopped at iteration {it} (--stop-after)"
                break
            if it < total and D.any_rank(stop.requested, ctx):
                stop_note = f"stopped at iteration {it} by a signal"
                break
            epoch = it // per_epoch
            if epoch != cur_epoch:
                path = snapshot_path(out, epoch)
                save(path, epoch, it, cur_epoch)
                snapshots[path.name] = str(path)
                if epoch >= task.epochs:
                    break
                optimizer = task.configure(model, epoch, optimizer)
                cur_epoch = epoch
            if it >= total:
                break
            t0 = time.perf_counter()
            batch = _to_device(next(data_iter), ctx.device)
            t1 = time.perf_counter()
            with precision.autocast():
                losses = task.loss(model, batch)
            total_loss = losses["total_loss"]
            value = float(total_loss.detach())
            skip = D.any_rank(not math.isfinite(value) or value > task.max_valid_loss, ctx)
            if not skip:
                optimizer.zero_grad(set_to_none=True)
                precision.backward(total_loss)
                D.sum_gradients(params, ctx, average=task.grad_reduction == "mean")
                precision.unscale(optimizer, params)
                if task.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, task.grad_clip)
                precision.step(optimizer)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            t2 = time.perf_counter()
            it += 1
            if (it - task.log_phase) % task.log_every == 0 or it == total or it == start + 1:
                record = D.mean_over_ranks({**{k: float(v.detach()) for k, v in losses.items()},
                                            "data_wait_s": t1 - t0, "step_s": t2 - t1}, ctx)
                if ctx.is_main:
                    record = {"step": it, "epoch": cur_epoch, **record,
                              "pairs_per_s": global_batch / max(record["data_wait_s"] + record["step_s"], 1e-9),
                              **task.lr_record(optimizer), "skipped": skip, "time": time.time()}
                    jsonl.write(record)
            if ctx.is_main:
                progress.update(1, loss=value, epoch=cur_epoch)
            if cfg.checkpoint_every and it % cfg.checkpoint_every == 0 and it < total:
                save(out / RESUME_FILE, cur_epoch, it, cur_epoch)

    completed = stop_note is None
    if not completed:
        save(out / RESUME_FILE, cur_epoch, it, cur_epoch)
    if ctx.is_main:
        progress.close()
        jsonl.close()
        records = read_jsonl(out / LOG_FILE)
        plot_training(records, out / PLOT_FILE, title=f"{task.name}: {ctx.world_size} process(es)")
        from common.fetch import file_digest
        from common.report import collect_provenance

        summary = {"task": task.name, "completed": completed, "note": stop_note, "iterations_done": it,
                   "total_iterations": total, "world_size": ctx.world_size,
                   "snapshots": {p.name: file_digest(p) for p in sorted((out / SNAPSHOT_DIR).glob("*.pth"))}
                   if (out / SNAPSHOT_DIR).is_dir() else {},
                   "provenance": collect_provenance("", {}), **cfg.extra}
        if completed:
            summary["results"] = task.after_training(out, records)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str))
        try:  # report.html: the summary and the plots in one self-contained page
            from common.html_report import write_training_html

            write_training_html(out, summary, records)
        except Exception:  # noqa: BLE001 - the training and its snapshots are done; a page must not fail them
            log.exception("%s: report.html could not be written", task.name)
        log.info("%s: %s", task.name, stop_note or f"completed {total} iterations")
    D.barrier(ctx)
    return TrainResult(it, total, completed, snapshots, ctx.world_size)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))
