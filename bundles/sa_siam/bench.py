"""`zoo bench sa_siam`: training examples/s (pure step vs end to end, 1 and N processes) beside the seed's
log-derived 340 (NPU) / 240 (GPU) examples/s, and the tracker's fps with the fused model beside the paper's ~50.

Runs on the demo's curated synthetic VID and synthetic OTB. The fused tracker uses a random synthetic CaffeNet
(speed does not depend on the weights' values); compare only on the same hardware class.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bundles.sa_siam.demo import curate_demo_data
from bundles.sa_siam.recipe import Recipe, SASiamTask
from common.bundle import load_bundle
from common.training.bench import loop_throughput


def _overrides(data: Path, batch: int, steps: int) -> dict[str, str]:
    return {"data": str(data), "batch_size": str(batch), "epochs": "30", "log_every": "1",
            "examples_per_epoch": str(batch * (steps + 2))}


def pure_step(task: SASiamTask, steps: int) -> float:
    model = task.build_model()
    optimizer = task.configure(model, 0, None)
    data = task.dataset()
    batch = torch.utils.data.default_collate([data[i] for i in range(task.batch_size)])
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = task.loss(model, batch)["total_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - t0)
    return task.batch_size / statistics.median(times)


def loop_rate(out: Path, overrides: dict[str, str], processes: int, workers: int) -> float:
    stop = int(overrides["examples_per_epoch"]) // int(overrides["batch_size"]) - 1
    return loop_throughput("sa_siam", out, overrides, processes=processes, stop_after=stop, workers=workers)


def tracker_fps(root: Path, frames: int = 30) -> float:
    from bundles.sa_siam.bundle import BackendResponseModel, build_sa_siam
    from bundles.sa_siam.caffenet import load_caffenet_npy, random_caffenet, save_caffenet_npy
    from bundles.sa_siam.tracker import SASiamTracker
    from common.backends.torch_backend import TorchBackend
    from common.tracking.data import make_synthetic_otb, read_otb

    bundle = load_bundle("sa_siam")
    model = build_sa_siam(None)
    npy = save_caffenet_npy(root / "caffenet.npy", random_caffenet(0))
    model.semantic.trunk.load_state_dict(load_caffenet_npy(npy))
    graphs = bundle.graphs(model.eval())
    backends = {n: TorchBackend(g.module, g.io) for n, g in graphs.items()}
    seq = read_otb(make_synthetic_otb(root / "otb", sequences=1, frames=frames))[0]
    tracker = SASiamTracker(BackendResponseModel(backends["exemplar"], backends["search"]))
    images = [seq.load(i) for i in range(len(seq.frames))]
    tracker.track(images, np.asarray(seq.boxes[0]))
    return tracker.fps


def run_training_bench(*, batch_size: int, steps: int, processes: int, device: str = "cpu", workers: int = 1,
                       echo=print) -> dict[str, float]:
    if device != "cpu":
        raise NotImplementedError("zoo bench sa_siam measures the CPU here; on a GPU run `zoo train --device cuda`")
    batch_size = max(batch_size, processes)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        tmp_dir = Path(tmp)
        data = curate_demo_data(tmp_dir / "data")
        one = _overrides(data, batch_size, steps)
        res = {"pure_step": pure_step(SASiamTask(Recipe.with_overrides(one)), steps)}
        res["e2e_1p"] = loop_rate(tmp_dir / "p1", one, 1, workers)
        if processes > 1:
            res[f"e2e_{processes}p"] = loop_rate(tmp_dir / f"p{processes}", one, processes, workers)
        res["tracker_fps_fused"] = tracker_fps(tmp_dir)
    echo(f"sa_siam on {device}: appearance branch, global batch {batch_size} (examples/s; median of {steps} steps)")
    echo(f"  pure step (1 process):     {res['pure_step']:.1f}")
    echo(f"  end to end, 1 process:     {res['e2e_1p']:.1f}  ({res['e2e_1p'] / res['pure_step']:.2f} x pure; "
         "goal >= 0.9)")
    if processes > 1:
        agg = res[f"e2e_{processes}p"]
        echo(f"  end to end, {processes} processes:   {agg:.1f}  (same global batch, split)")
    echo(f"  tracker, both branches (torch): {res['tracker_fps_fused']:.1f} fps")
    for t in load_bundle("sa_siam").manifest.throughput:
        echo(f"  published {t.hardware}: {', '.join(f'{v} {t.unit}' for v in t.per_batch.values())} "
             f"({t.measure}; {t.source})")
    print(json.dumps(res))
    return res
