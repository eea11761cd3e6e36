"""`zoo bench <bundle> --devices N`: does throughput add up over devices?

End to end (prepare + convert + infer + post-process, the whole `zoo eval`), on the bundle's synthetic data in the
real layout, measured twice through the real commands: one process using every core (or one device), and N
sharded processes (`zoo eval --devices N`, torchrun), each with cores / N threads (or its own device). Printed per
device and in aggregate, with the scaling efficiency, beside the published per-chip tables. On a CPU host the
comparison is "N processes x 1 thread vs 1 process x N threads"; on an accelerator host, N devices vs one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.bundle import load_bundle
from common.errors import ZooError

CARD_NOTE = ("Ascend 310 seed tables marked per_card_x4 measured ONE chip and multiplied by 4 (a 310 card carries "
             "4 chips); they are shown as published and divided by 4 per chip. Nothing measured here is multiplied.")


def _eval(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `zoo eval ...` and return its report (a FAIL verdict is expected on synthetic data; exit 2 is not)."""
    r = subprocess.run([sys.executable, "-m", "common", "eval", *args], capture_output=True, text=True,
                       env={**os.environ, **env})
    out = Path(args[args.index("--out") + 1])
    if r.returncode not in (0, 1) or not (out / "report.json").is_file():
        raise ZooError(f"benchmark run failed (exit {r.returncode}): {' '.join(args)}\n{r.stderr[-3000:]}")
    return json.loads((out / "report.json").read_text())


def _throughput(report: dict[str, Any]) -> tuple[float, list[dict[str, float]]]:
    """Aggregate items/s (all items / the slowest rank's infer+post time) and per-rank items/s."""
    stats = report["stats"]
    ranks = stats.get("ranks") or [{"rank": 0, "items": stats["items"],
                                     "seconds": {"infer+post": report["timings_s"]["infer+post"]}}]
    per_rank = [{"rank": r["rank"], "items": r["items"], "seconds": r["seconds"]["infer+post"],
                 "items_per_s": r["items"] / r["seconds"]["infer+post"] if r["seconds"]["infer+post"] else 0.0}
                for r in ranks]
    slowest = max(r["seconds"] for r in per_rank)
    return sum(r["items"] for r in per_rank) / slowest, per_rank


def run_scaling_bench(bundle_name: str, devices: int, *, device: str = "cpu", backend: str = "onnxruntime",
                      size: int | None = None, batch_size: int = 1, echo: Callable[[str], None] = print
                      ) -> dict[str, Any]:
    """Measure 1 process vs `devices` sharded processes end to end; print and return the figures."""
    if devices < 2:
        raise ZooError("--devices N needs N >= 2 to measure scaling")
    bundle = load_bundle(bundle_name)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="zoo-scaling-") as tmp:
        root = Path(tmp)
        demo = bundle.make_demo(root / "data", seed=0, size=size)
        common = ["--data", str(demo.data_dir), "--weights", str(demo.weights), "--device", device,
                  "--backend", backend, "--batch-size", str(batch_size), "--cache", str(root / "cache")]
        one = _eval([bundle_name, "--out", str(root / "one"), *common],
                    {"OMP_NUM_THREADS": str(cores)} if device == "cpu" else {})
        many = _eval([bundle_name, "--out", str(root / "many"), "--devices", str(devices), *common], {})
    agg_one, _ = _throughput(one)
    agg_many, per_rank = _throughput(many)
    unit = "frames" if bundle_name in ("siamrpn", "siamrpnpp", "sa_siam") else "images"
    cpu = device == "cpu"
    label_one = f"1 process x {cores} threads" if cpu else f"1 x {device}"
    label_many = f"{devices} processes x {max(1, cores // devices)} thread(s)" if cpu else f"{devices} x {device}"
    efficiency = agg_many / (devices * agg_one) if agg_one else 0.0
    echo(f"{bundle_name}: end-to-end {unit}/s on synthetic data ({one['stats']['items']} {unit}, backend "
         f"{backend}, batch {batch_size}, {cores} cores)")
    echo(f"  {label_one:<32} {agg_one:10.2f} {unit}/s")
    echo(f"  {label_many:<32} {agg_many:10.2f} {unit}/s aggregate "
         f"({agg_many / agg_one if agg_one else 0:.2f}x the single process)")
    for r in per_rank:
        echo(f"    rank {r['rank']}: {r['items']:5d} {unit} in {r['seconds']:8.2f} s = "
             f"{r['items_per_s']:8.2f} {unit}/s")
    if cpu:
        echo(f"  {devices} processes share the same {cores} cores: the ratio is what one process leaves idle "
             "(GIL-bound pre/post-processing, serial operators); with a device per process it becomes the scaling.")
    else:
        echo(f"  scaling efficiency: {efficiency:.2f} (aggregate / ({devices} x one device))")
    tables = bundle.manifest.throughput
    if tables:
        echo("  published (pure device compute, per batch size; not end to end):")
        for t in tables:
            x4 = t.convention == "per_card_x4"
            row = ", ".join(f"bs{b} {v:.1f}" + (f" ({v / 4:.1f}/chip)" if x4 else "") for b, v in t.per_batch.items())
            echo(f"    {t.hardware} [{t.convention}] {t.unit}: {row}")
        if any(t.convention == "per_card_x4" for t in tables):
            echo(f"  {CARD_NOTE}")
    return {"bundle": bundle_name, "devices": devices, "device": device, "backend": backend, "cores": cores,
            "single": {"label": label_one, "items_per_s": agg_one},
            "sharded": {"label": label_many, "items_per_s": agg_many, "ranks": per_rank},
            "efficiency": efficiency}
