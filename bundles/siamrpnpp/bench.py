"""`zoo bench siamrpnpp`: training throughput in pairs/s beside the published 1p / 8p numbers.

- pure step: forward + backward + all-reduce-free optimizer step on a batch already in memory (one process);
- data pipeline alone: the DataLoader with the default worker count (reading crops, augmentation, targets);
- end to end: the real loop (`zoo train`, torchrun) for 1 process and for N, median pairs/s of the logged steps
  after the first (which includes start-up), and the scaling efficiency N-process / (N x 1-process).

Runs on the demo's curated synthetic crop511 data with the recipe's frozen-backbone phase (epochs 0-9, the first
half of training). The published numbers are Ascend 910 (1p 49, 8p 280.1 pairs/s): compare only on the same
hardware class; CPU numbers here are for the loop's overheads (end-to-end vs pure step, data vs step rate).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bundles.siamrpnpp.demo import curate_demo_data
from bundles.siamrpnpp.recipe import Recipe, SiamRPNPPTask
from common.bundle import load_bundle
from common.training.bench import loop_throughput


def _recipe(data: Path, init: Path, batch: int, steps: int, processes: int) -> dict[str, str]:
    return {"data": str(data), "init": str(init), "batch_size": str(batch), "epochs": "20", "log_every": "1",
            "videos_per_epoch": str(batch * processes * (steps + 1))}


def pure_step(task: SiamRPNPPTask, batch: dict[str, torch.Tensor], steps: int, device: torch.device) -> float:
    model = task.build_model().to(device)
    optimizer = task.configure(model, 0, None)
    batch = {k: v.to(device) for k, v in batch.items()}
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = task.loss(model, batch)["total_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), task.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return task.batch_size / statistics.median(times)


def data_rate(task: SiamRPNPPTask, batches: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(task.dataset(), batch_size=task.batch_size, num_workers=workers,
                                         worker_init_fn=task.worker_init if workers else None, shuffle=False)
    it = iter(loader)
    next(it)  # worker start-up
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["search"])
    return n / (time.perf_counter() - t0)


def loop_rate(out: Path, overrides: dict[str, str], processes: int, device: str, workers: int) -> float:
    stop = int(overrides["videos_per_epoch"]) // int(overrides["batch_size"]) // processes - 1
    return loop_throughput("siamrpnpp", out, overrides, processes=processes, stop_after=stop, device=device,
                           workers=workers)


def run_training_bench(*, batch_size: int, steps: int, processes: int, device: str = "cpu", workers: int = 1,
                       echo=print) -> dict[str, float]:
    bundle = load_bundle("siamrpnpp")
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        tmp_dir = Path(tmp)
        demo = bundle.make_demo(tmp_dir / "demo")
        data = curate_demo_data(tmp_dir / "data")
        one = _recipe(data, demo.weights, batch_size, steps, 1)
        task = SiamRPNPPTask(Recipe.with_overrides(one))
        batch = torch.utils.data.default_collate([task.dataset()[i] for i in range(batch_size)])
        dev = torch.device(device if device != "cuda" else "cuda:0")
        res = {"pure_step": pure_step(task, batch, steps, dev), "data_alone": data_rate(task, steps, workers)}
        res["e2e_1p"] = loop_rate(tmp_dir / "p1", one, 1, device, workers)
        if processes > 1:
            res[f"e2e_{processes}p"] = loop_rate(tmp_dir / f"p{processes}",
                                                 _recipe(data, demo.weights, batch_size, steps, processes),
                                                 processes, device, workers)
    echo(f"siamrpnpp training throughput, {device}, batch {batch_size} per process, frozen-backbone phase "
         f"(pairs/s; median of {steps} steps)")
    echo(f"  pure step (1 process):          {res['pure_step']:.3f}")
    echo(f"  data pipeline alone ({workers} worker): {res['data_alone']:.1f}  "
         f"({res['data_alone'] / res['pure_step']:.0f}x the step rate; goal >= 2x)")
    echo(f"  end to end, 1 process:          {res['e2e_1p']:.3f}  ({res['e2e_1p'] / res['pure_step']:.2f} x pure; "
         "goal >= 0.9)")
    if processes > 1:
        agg = res[f"e2e_{processes}p"]
        echo(f"  end to end, {processes} processes:        {agg:.3f} in all, {agg / processes:.3f} per process; "
             f"scaling efficiency {agg / (processes * res['e2e_1p']):.2f}")
    for t in bundle.manifest.throughput:
        echo(f"  published {t.hardware}: {', '.join(f'{v} {t.unit} at batch {b}' for b, v in t.per_batch.items())}"
             f" ({t.measure}; {t.source})")
    print(json.dumps(res))
    return res
