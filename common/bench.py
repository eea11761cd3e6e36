"""Speed measurement: pure-inference latency/throughput per batch size, end-to-end throughput, metric speed.

Printed beside the bundle's published tables; throughput compares only on the same hardware class and the same
measure (the published Ascend numbers are ais_bench NPU compute time, never end-to-end).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.backends.base import Backend
from common.bundle import load_bundle
from common.manifest import ThroughputTable
from common.pipeline import example_feeds, open_backends
from common.report import device_description


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """min / median / mean / p99 / max of per-call latencies in milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {"count": float(a.size), "min_ms": float(a.min()), "median_ms": float(np.median(a)),
            "mean_ms": float(a.mean()), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def bench_backend(backend: Backend, feeds: dict[str, np.ndarray], *, warmup: int = 2, iters: int = 10
                  ) -> dict[str, float]:
    """Warm up, reset timers, then time `iters` runs; throughput = batch * 1000 / median latency."""
    for _ in range(warmup):
        backend.run(feeds)
    backend.timings.reset()
    for _ in range(iters):
        backend.run(feeds)
    stats = latency_stats(backend.timings.run_ms)
    batch = next(iter(feeds.values())).shape[0]
    stats["throughput"] = batch * 1000.0 / stats["median_ms"]
    return stats


def run_bench(bundle_name: str, *, backend: str, device: str = "cpu", batch_sizes: Sequence[int], images: int,
              warmup: int, iters: int, echo=print, out_dir: Path | None = None) -> list[dict[str, float]]:
    """Pure-inference and end-to-end (demo data through prepare + predict) throughput per batch size; with
    `out_dir`, also bench.json and bench.html (fps vs batch size beside the published tables) there."""
    from common.export import export_onnx

    bundle = load_bundle(bundle_name)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        tmp_dir = Path(tmp)
        demo = bundle.make_demo(tmp_dir / "demo", seed=0, size=images)
        graphs = bundle.graphs(bundle.build_model(demo.weights))
        onnx_paths = {n: export_onnx(g.module, g.io, tmp_dir / f"{n}.onnx") for n, g in graphs.items()}
        for bs in batch_sizes:
            backends = open_backends(backend, graphs, onnx_paths, device=device, batch_size=bs)
            pure = {n: bench_backend(b, example_feeds(graphs[n], bs), warmup=warmup, iters=iters)
                    for n, b in backends.items()}
            main = pure.get("model") or next(iter(pure.values()))
            run_dir = tmp_dir / f"run-bs{bs}"
            run_dir.mkdir()
            dataset = bundle.prepare(demo.data_dir, run_dir, limit=images)
            t0 = time.perf_counter()
            stats = bundle.predict(dataset, backends, run_dir, batch_size=bs)
            e2e = stats.items / (time.perf_counter() - t0)
            rows.append({"batch": bs, "pure_fps": main["throughput"], "median_ms": main["median_ms"],
                         "p99_ms": main["p99_ms"], "e2e_fps": e2e, "ratio": e2e / main["throughput"],
                         "items": stats.items})
    published = bundle.manifest.throughput
    desc = next(iter(backends.values())).describe()
    printed: list[str] = []
    echo = _recording(echo, printed)
    echo(f"{bundle_name}: {backend} on {desc.get('gpu') or desc.get('device') or device_description()['cpu']} "
         f"(pure = backend only, e2e = load + pre + infer + post over {rows[0]['items']} synthetic items)")
    header = "| batch | pure fps | median ms | p99 ms | e2e fps | e2e/pure |"
    header += "".join(f" {t.hardware} ({t.convention}) |" for t in published)
    echo(header)
    echo("|" + "---|" * (6 + len(published)))
    for r in rows:
        pub = "".join(f" {t.per_batch.get(int(r['batch']), float('nan')):.1f} |" for t in published)
        echo(f"| {r['batch']} | {r['pure_fps']:.2f} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['e2e_fps']:.2f} "
             f"| {r['ratio']:.2f} |{pub}")
    for t in published:
        echo(f"published {t.hardware}: {t.measure} ({t.source})")
    metric = bundle.metric_benchmark()
    for k, v in metric.items():
        echo(f"metric benchmark {k}: {v:.4g}")
    if out_dir is not None:
        write_bench(out_dir, bundle_name, {"kind": "inference", "backend": backend, "device": device,
                                           "backend_description": desc, "images": images, "warmup": warmup,
                                           "iters": iters, "rows": rows, "metric_benchmark": metric},
                    published, printed)
    return rows


def _recording(echo: Callable[[str], Any], lines: list[str]) -> Callable[[str], None]:
    """`echo` that also keeps each printed line (bench.html shows the table exactly as printed)."""
    def both(line: str) -> None:
        lines.append(line)
        echo(line)

    return both


def write_bench(out_dir: Path, bundle_name: str, result: Mapping[str, Any], published: Sequence[ThroughputTable],
                printed: Sequence[str]) -> tuple[Path, Path]:
    """bench.json (the measurement, the published tables and the environment) and bench.html (the printed lines,
    a plot of throughput against batch size beside the published tables, and those tables) into `out_dir`.
    `result["rows"]` (inference: run_bench's rows) is plotted against batch size; a training bench's
    `result["pairs_per_s"]` (name -> pairs/s) as bars."""
    from common.html_report import esc, write_bench_html
    from common.plots import bars_figure, bench_figure
    from common.report import collect_provenance

    bundle = load_bundle(bundle_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"bundle": bundle_name, **result, "published": [t.model_dump(mode="json") for t in published],
           "provenance": collect_provenance(bundle.manifest.sha256, bundle.manifest.upstream.model_dump())}
    js = out_dir / "bench.json"
    js.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if result.get("rows"):
        fig = bench_figure(result["rows"], published, title=f"{bundle_name}: throughput vs batch size")
        figures = [("throughput vs batch size (measured here and published)", fig)]
    else:
        figures = [("training throughput", bars_figure(result.get("pairs_per_s", {}), ylabel="pairs/s",
                                                       title=f"{bundle_name}: training throughput"))]
    tables = []
    for t in published:
        rows = "".join(f'<tr><td class="num">{b}</td><td class="num">{v:.1f}</td></tr>'
                       for b, v in sorted(t.per_batch.items()))
        tables.append((f"published {t.hardware} ({t.convention}, {t.unit})",
                       f"<p>{esc(t.measure)}; {esc(t.source)}</p><table class=\"published\"><tr><th>batch</th>"
                       f"<th>{esc(t.unit)}</th></tr>{rows}</table>"))
    html_path = write_bench_html(out_dir / "bench.html", title=f"zoo bench {bundle_name}", lines=printed,
                                 figures=figures, tables=tables)
    return js, html_path
