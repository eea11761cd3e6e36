"""The demo training (`zoo demo siamrpnpp`): synthetic raw datasets in the four real layouts -> the real curation
-> a short 2-process (gloo) run of the real recipe on the real model, interrupted and resumed -> checks that are
honest on synthetic data:

- 2-process step == 1-process step on the same global batch (the reference runs the two ranks' batches as
  micro-batches in one process and sums their gradients, as pysot's all-reduce does);
- resume == uninterrupted (an interrupted + resumed run reaches the same weights and BN statistics);
- the loss falls on an overfit set (a fixed batch, a few steps).

Scaled down so it fits a 2-core CPU: 3 epochs of 2 iterations, 1 pair per process, warm-up 1 epoch, backbone
layer2-4 unfrozen from epoch 1 (the optimizer rebuild is exercised), the model starting from the calibrated random
weights of bundles/siamrpn's demo (a random BatchNorm-statistics backbone would saturate). The recipe the real run
uses is recipe.Recipe's defaults (the spec's), untouched.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from bundles.siamrpnpp.recipe import Recipe, SiamRPNPPTask, apply_freeze, build_optimizer, set_epoch_lr
from common.checkpoint import load_strict
from common.errors import ZooError
from common.training.launch import LaunchSpec, launch, printable, train_args
from common.training.loop import RESUME_FILE, SUMMARY_FILE, snapshot_path
from common.training.sampler import ShardedSampler
from common.training.state import read_checkpoint

log = logging.getLogger("zoo.siamrpnpp")

DEMO_PROCESSES = 2
DEMO_OVERRIDES = {"epochs": "3", "batch_size": "1", "videos_per_epoch": "4", "warmup_epochs": "1",
                  "backbone_train_epoch": "1", "log_every": "1"}
INTERRUPT_AT = 1  # iterations: the interrupted run stops here ...
COMPARE_AT = 4  # ... resumes, and stops again here, where the uninterrupted run wrote checkpoint_e2
OVERFIT_STEPS = 6
CHECKS_FILE = "demo_checks.json"


def curate_demo_data(cache: Path) -> Path:
    """Synthetic raw COCO / DET / VID / YouTube-BB -> crop511 + JSON through the real curation (resumable)."""
    from bundles.siamrpnpp.curate import DATASETS, curate
    from bundles.siamrpnpp.synthetic import make_synthetic_raw

    raw = make_synthetic_raw(cache / "raw")
    base = cache / "training_dataset"
    for name in DATASETS:
        curate(name, raw[name], base, workers=2, progress=False)
    return base


def _launch(out: Path, overrides: dict[str, str], *extra: str) -> None:
    args = train_args("siamrpnpp", out, overrides, *extra)
    spec = LaunchSpec(DEMO_PROCESSES)
    log.info("demo training: %s", printable(spec, args))
    rc = launch(spec, args, env={"OMP_NUM_THREADS": "1"})
    if rc != 0:
        raise ZooError(f"demo training failed (torchrun exit {rc}; the failing rank is named above): {out}")


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys)


def one_process_reference(recipe: Recipe, world_size: int) -> dict[str, torch.Tensor]:
    """The first update of a `world_size`-process run, computed in this one process: each rank's batch of
    iteration 0 as a micro-batch (BatchNorm sees the same per-rank batches), gradients summed, clipped, one step."""
    task = SiamRPNPPTask(recipe)
    torch.manual_seed(0)
    model = task.build_model()
    dataset = task.dataset()
    optimizer = task.configure(model, 0, None)
    optimizer.zero_grad(set_to_none=True)
    for rank in range(world_size):
        order = ShardedSampler(len(dataset), rank=rank, world_size=world_size).order()[:recipe.batch_size]
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in order])
        task.loss(model, batch)["total_loss"].backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), recipe.grad_clip)
    optimizer.step()
    return model.state_dict()


def overfit_losses(recipe: Recipe, steps: int) -> list[float]:
    """Total loss over `steps` updates on one fixed batch (items 0..1) at the recipe's peak LR."""
    task = SiamRPNPPTask(recipe)
    model = task.build_model()
    dataset = task.dataset()
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    apply_freeze(model, recipe, 0)
    optimizer = build_optimizer(model, recipe)
    set_epoch_lr(optimizer, recipe, recipe.warmup_epochs)  # the peak of the schedule
    losses = []
    for _ in range(steps):
        loss = task.loss(model, batch)["total_loss"]
        losses.append(float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), recipe.grad_clip)
        optimizer.step()
    with torch.no_grad():
        losses.append(float(task.loss(model, batch)["total_loss"]))
    return losses


def run_demo_training(train_dir: Path, *, init: Path, cache: Path) -> tuple[Path, list[str]]:
    """Curate, train (interrupted + resumed, and uninterrupted), check; returns the final snapshot and notes."""
    data = curate_demo_data(cache)
    overrides = {**DEMO_OVERRIDES, "data": str(data), "init": str(init)}
    recipe = Recipe.with_overrides(overrides)
    if train_dir.exists():
        shutil.rmtree(train_dir)
    full, resumed = train_dir / "uninterrupted", train_dir / "interrupted"
    _launch(full, overrides)
    _launch(resumed, overrides, "--stop-after", str(INTERRUPT_AT))
    first_step = resumed / f"step{INTERRUPT_AT}.pth"
    shutil.copyfile(resumed / RESUME_FILE, first_step)
    _launch(resumed, overrides, "--resume", str(first_step), "--stop-after", str(COMPARE_AT))

    two = dict(read_checkpoint(first_step).state_dict)
    one = one_process_reference(recipe, DEMO_PROCESSES)
    params = [k for k, _ in SiamRPNPPTask(recipe).build_model().named_parameters()]
    step_diff = _max_diff(two, one, params)

    cont = dict(read_checkpoint(snapshot_path(full, 2)).state_dict)
    res = dict(read_checkpoint(resumed / RESUME_FILE).state_dict)
    resume_diff = _max_diff(cont, res, list(cont))

    losses = overfit_losses(recipe, OVERFIT_STEPS)
    summary = json.loads((full / SUMMARY_FILE).read_text())
    final = snapshot_path(full, recipe.epochs)
    from bundles.siamrpn.model import SiamRPN, checkpoint_filter_fn

    load_strict(SiamRPN(), checkpoint_filter_fn(torch.load(final, weights_only=True), SiamRPN()), source=str(final))
    checks: dict[str, Any] = {
        "world_size": summary["world_size"], "iterations": summary["iterations_done"],
        "step_equal": {"max_abs_diff": step_diff, "tolerance": 1e-5, "params": len(params)},
        "resume_equal": {"max_abs_diff": resume_diff, "tolerance": 1e-6, "tensors": len(cont),
                         "interrupted_at": INTERRUPT_AT, "compared_at": COMPARE_AT},
        "overfit": {"losses": losses},
        "snapshot": str(final), "snapshots": summary["snapshots"],
    }
    (train_dir / CHECKS_FILE).write_text(json.dumps(checks, indent=1))
    notes = [f"demo training: {summary['world_size']} processes (gloo), {summary['iterations_done']} iterations "
             f"of the real model on curated synthetic crop511 data, interrupted at {INTERRUPT_AT} and resumed; log "
             f"{full / 'train_log.jsonl'}, plot {full / 'train_plot.png'}",
             f"evaluated snapshot: {final.name} (weights after {recipe.epochs} demo epochs)"]
    return final, notes


def training_checks(train_dir: Path) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) of the demo training checks recorded in `train_dir`."""
    path = train_dir / CHECKS_FILE
    if not path.is_file():
        return [("demo training checks recorded", False, f"{path} missing")]
    c = json.loads(path.read_text())
    s, r, o = c["step_equal"], c["resume_equal"], c["overfit"]["losses"]
    return [
        ("2-process step == 1-process step on the same global batch (summed gradients)",
         s["max_abs_diff"] <= s["tolerance"], f"max |diff| over {s['params']} parameters {s['max_abs_diff']:.2e} "
         f"(tolerance {s['tolerance']:g})"),
        ("resume == uninterrupted", r["max_abs_diff"] <= r["tolerance"],
         f"interrupted at iteration {r['interrupted_at']}, compared at {r['compared_at']}: max |diff| over "
         f"{r['tensors']} tensors {r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g})"),
        ("loss falls on an overfit set", o[-1] < 0.8 * o[0],
         f"total loss {o[0]:.4f} -> {o[-1]:.4f} over {len(o) - 1} steps on one fixed batch (expected < 0.8x)"),
    ]
