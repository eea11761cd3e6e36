"""Tracker speed on ONNX Runtime: the seed's single graph vs the split template/search pair, and the share of
per-frame pre-processing (crop + resize). A bench, not a test: numbers depend on the machine and its load.

    python -m bundles.siamrpn.bench --frames 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bundles.siamrpn.model import random_state_dict, siamrpn_r50_l234
from bundles.siamrpn.tracker import SiamRPNTracker, TrackerConfig
from common.checkpoint import load_checkpoint
from common.export import export_onnx
from common.tracking.data import make_synthetic_vot, read_vot
from common.tracking.vot import init_box


def _export(weights: Path | None, out: Path) -> dict[str, Path]:
    from bundles.siamrpn.bundle import SiamRPNBundle

    bundle = SiamRPNBundle()
    state = load_checkpoint(weights) if weights else random_state_dict(0)
    graphs = bundle.graphs(siamrpn_r50_l234(state))
    return {name: export_onnx(g.module, g.io, out / f"{name}.onnx") for name, g in graphs.items()}


def _track(tracker: SiamRPNTracker, frames: list[np.ndarray], box: np.ndarray) -> tuple[float, float, int]:
    """Init on frame 0, track the rest (no resets: the speed, not the protocol); returns (tracker seconds of the
    tracked frames, pre-processing seconds of those frames, frames tracked)."""
    tracker.init(frames[0], box)
    pre0, t0 = tracker.preprocess_s, tracker.frame_s
    for f in frames[1:]:
        tracker.track(f)
    return tracker.frame_s - t0, tracker.preprocess_s - pre0, len(frames) - 1


def bench_tracker(weights: Path | None = None, *, frames: int = 20, size: tuple[int, int] = (640, 480),
                  threads: int | None = None, work_dir: Path | None = None, repeats: int = 2) -> dict[str, float]:
    """fps of the tracker on CPU ONNX Runtime with the single graph and with the split pair (best of `repeats`),
    their ratio, and the per-frame pre-processing (crop + resize) share of the split path's frame time.
    Random weights when `weights` is None (speed does not depend on the values)."""
    from common.backends.onnxruntime import OrtBackend

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work_dir or tmp)
        paths = _export(weights, base / "onnx")
        seq = read_vot(make_synthetic_vot(base / "vot", sequences=1, frames=frames, size=size, seed=0))[0]
        imgs = [seq.load(i) for i in range(len(seq.frames))]
        box = init_box(seq.polygons[0])
        single = {"model": OrtBackend(paths["model"], threads=threads)}
        split = {k: OrtBackend(paths[k], threads=threads) for k in ("template", "search")}
        res: dict[str, float] = {}
        for label, backends, is_split in (("single", single, False), ("split", split, True)):
            best = None
            for _ in range(repeats):
                t = SiamRPNTracker(backends, TrackerConfig(), split=is_split)
                secs, pre, n = _track(t, imgs, box)
                if best is None or secs < best[0]:
                    best = (secs, pre, n)
            secs, pre, n = best
            res[f"fps_{label}"] = n / secs
            res[f"frame_ms_{label}"] = 1e3 * secs / n
            res[f"preprocess_ms_{label}"] = 1e3 * pre / n
            res[f"preprocess_share_{label}"] = pre / secs
        res["split_speedup"] = res["fps_split"] / res["fps_single"]
        res["frames"] = float(frames - 1)
        res["threads"] = float(threads or 0)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="model.pth (default: random weights)")
    ap.add_argument("--frames", type=int, default=20, help="frames per pass (default 20)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    ap.add_argument("--repeats", type=int, default=2, help="passes per path, best kept (default 2)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = bench_tracker(args.weights, frames=args.frames, threads=args.threads, repeats=args.repeats)
    res["bench_seconds"] = time.perf_counter() - t0
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
