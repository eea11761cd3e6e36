"""The one pipeline every bundle runs: fetch -> prepare -> convert -> infer -> post-process -> metric -> verify ->
report. Each stage writes into the run directory; see shared/DESIGN.md."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.backends.base import Backend
from common.bundle import Bundle, Check, Graph, load_bundle
from common.errors import InputError, ZooError
from common.export import export_onnx
from common.fetch import default_cache_dir, file_digest
from common.report import DEMO_NOTICE, RunReport, collect_provenance, write_report
from common.verify import check_published, parity_check

log = logging.getLogger("zoo")
BACKENDS = ("onnxruntime", "torch", "ais_bench")


@dataclass(frozen=True)
class EvalOptions:
    bundle: str
    out_dir: Path
    data_dir: Path | None = None
    weights: Path | None = None
    backend: str = "onnxruntime"
    device: str = "cpu"
    batch_size: int = 1
    published_run: str | None = None
    demo: bool = False
    limit: int | None = None
    om_dir: Path | None = None
    cache_dir: Path | None = None


def example_feeds(graph: Graph, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs with the graph's names and shapes (-1 -> batch_size), image-like magnitudes."""
    rng = np.random.default_rng(seed)
    return {t.name: (rng.standard_normal([batch_size if d == -1 else d for d in t.shape]) * 50).astype(np.float32)
            for t in graph.io.inputs}


def open_backends(kind: str, graphs: dict[str, Graph], onnx_paths: dict[str, Path], *, device: str = "cpu",
                  om_dir: Path | None = None, batch_size: int = 1) -> dict[str, Backend]:
    """One backend per graph. ais_bench needs OM files `<om_dir>/<graph>_bs<batch>.om` built with `zoo convert`."""
    if kind == "onnxruntime":
        from common.backends.onnxruntime import OrtBackend

        return {name: OrtBackend(path, device=device) for name, path in onnx_paths.items()}
    if kind == "torch":
        from common.backends.torch_backend import TorchBackend

        return {name: TorchBackend(g.module, g.io, device=device) for name, g in graphs.items()}
    if kind == "ais_bench":
        from common.backends.ais_bench import AisBenchBackend

        if om_dir is None:
            raise ZooError("--backend ais_bench needs --om-dir with OM files from `zoo convert --om`")
        out = {}
        for name, g in graphs.items():
            om = om_path(om_dir, name, batch_size)
            if not om.is_file():
                raise InputError(om, "OM file missing: build it with `zoo convert <bundle> --om`")
            out[name] = AisBenchBackend(om, g.io.outputs, g.io.inputs, device_id=_npu_id(device))
        return out
    raise ZooError(f"unknown backend {kind!r}; choose from {BACKENDS}")


def om_path(om_dir: Path, graph: str, batch_size: int) -> Path:
    """Where the static-batch OM of one graph lives: `<om_dir>/<graph>_bs<batch>.om` (one OM per batch size, as
    the seeds published)."""
    return om_dir / f"{graph}_bs{batch_size}.om"


def atc_commands(bundle: Bundle, onnx_paths: dict[str, Path], om_dir: Path, batch_size: int,
                 soc_version: str) -> dict[str, list[str]]:
    """The ATC command of every graph for one batch size, with the manifest's precision mode."""
    from common.atc import atc_command

    return {name: atc_command(path, om_path(om_dir, name, batch_size).with_suffix(""), batch_size=batch_size,
                              soc_version=soc_version, atc=bundle.manifest.atc)
            for name, path in onnx_paths.items()}


def build_oms(bundle: Bundle, onnx_paths: dict[str, Path], om_dir: Path, batch_size: int,
              soc_version: str | None = None) -> Path:
    """ONNX -> OM with ATC for every graph (SoC from `npu-smi` unless given); ATC logs beside the OMs."""
    from common.atc import detect_soc_version, run_atc

    soc = soc_version or detect_soc_version()
    for name, cmd in atc_commands(bundle, onnx_paths, om_dir, batch_size, soc).items():
        run_atc(cmd, om_path(om_dir, name, batch_size).with_suffix(".atc.log"))
    return om_dir


def _npu_id(device: str) -> int:
    """'npu' / 'npu:3' -> 0 / 3 (ACL's logical id inside a container); anything else is an error."""
    kind, _, index = device.partition(":")
    if kind != "npu" or not (index == "" or index.isdigit()):
        raise ZooError(f"--backend ais_bench needs --device npu or npu:<id>, got {device!r}")
    return int(index or 0)


@contextmanager
def _stage(report: RunReport, name: str) -> Iterator[None]:
    log.info("stage %s ...", name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        report.timings_s[name] = round(time.perf_counter() - t0, 3)


def evaluate(opts: EvalOptions) -> RunReport:
    """Run the whole pipeline for one bundle; always writes a report (verdict FAIL/INCOMPLETE on errors)."""
    bundle = load_bundle(opts.bundle)
    bundle.select_run(opts.published_run)
    manifest = bundle.manifest
    run = manifest.run(opts.published_run)
    run_dir = opts.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(bundle=bundle.name, mode="demo" if opts.demo else "real", published_run=run.name,
                       published=run.model_dump(mode="json"),
                       provenance=collect_provenance(manifest.sha256, manifest.upstream.model_dump()))
    shutil.copyfile(manifest.path, run_dir / "manifest.toml")  # the resolved manifest travels with the run
    try:
        _run_stages(bundle, opts, report, run_dir)
    finally:
        if report.verdict == "INCOMPLETE":
            report.notes.append("the run did not complete: no result is claimed")
        write_report(report, run_dir)
    return report


def _run_stages(bundle: Bundle, opts: EvalOptions, report: RunReport, run_dir: Path) -> None:
    cache = opts.cache_dir or default_cache_dir()
    with _stage(report, "fetch"):
        if opts.demo:
            demo = bundle.make_demo(cache / "demo" / bundle.name)
            data_dir, weights = demo.data_dir, demo.weights
            report.notes += [DEMO_NOTICE, f"demo data: {demo.description}"]
            trained = bundle.demo_training(run_dir / "train", demo, cache)
            if trained is not None:  # a training bundle evaluates the snapshot its demo training just wrote
                weights, notes = trained
                report.notes += notes
        else:
            located = bundle.locate(opts.data_dir, opts.weights, cache)
            if located is None:
                raise ZooError(f"{bundle.name}: real dataset and weights not found; pass --data and --weights "
                               f"(or run `zoo fetch {bundle.name}`), or run `zoo demo {bundle.name}`")
            data_dir, weights = located
        report.artifacts["weights"] = {"path": str(weights), "sha256": file_digest(weights)}

    with _stage(report, "prepare"):
        dataset = bundle.prepare(data_dir, run_dir, limit=opts.limit)
        report.artifacts["dataset"] = {"path": str(data_dir), "sha256": _ground_truth_digest(run_dir)}

    with _stage(report, "convert"):
        model = bundle.build_model(weights)
        graphs = bundle.graphs(model)
        onnx_paths = {name: export_onnx(g.module, g.io, run_dir / "onnx" / f"{name}.onnx")
                      for name, g in graphs.items()}
        report.exported_models = {name: file_digest(p) for name, p in onnx_paths.items()}
        om_dir = opts.om_dir
        if opts.backend == "ais_bench" and om_dir is None:
            om_dir = build_oms(bundle, onnx_paths, run_dir / "om", opts.batch_size)
        if om_dir is not None:
            report.exported_models.update({f"{p.stem}.om": file_digest(p) for p in sorted(om_dir.glob("*.om"))})

    backends = open_backends(opts.backend, graphs, onnx_paths, device=opts.device, om_dir=om_dir,
                             batch_size=opts.batch_size)
    report.backend = {k: v for b in backends.values() for k, v in b.describe().items()}
    try:
        with _stage(report, "infer+post"):
            stats = bundle.predict(dataset, backends, run_dir, batch_size=opts.batch_size)
        compute_ms = sum(sum(b.timings.run_ms) for b in backends.values())
    finally:
        for b in backends.values():
            b.close()
    report.stats = {**asdict(stats), "backend_compute_s": round(compute_ms / 1e3, 3)}

    with _stage(report, "metric"):
        report.metrics = bundle.score(run_dir)
        bundle.export_predictions(run_dir)

    with _stage(report, "verify"):
        if opts.demo:
            torch_device = opts.device if opts.backend == "torch" else "cpu"
            report.checks += [_parity(graphs, onnx_paths, torch_device)]
            report.checks += bundle.demo_checks(run_dir, report.metrics)
        else:
            report.checks += check_published(report.metrics, bundle.manifest.run(opts.published_run))
            report.checks += bundle.extra_checks(run_dir, report.metrics)
    report.details = bundle.summary_lines(run_dir, report.metrics)
    report.decide()


def _parity(graphs: dict[str, Graph], onnx_paths: dict[str, Path], torch_device: str) -> Check:
    """ONNX Runtime (CPU) vs eager torch on `torch_device`, same deterministic batch of 2, for every graph."""
    from common.backends.onnxruntime import OrtBackend
    from common.backends.torch_backend import TorchBackend

    checks = []
    for name, g in graphs.items():
        feeds = example_feeds(g, 2 if g.io.inputs[0].shape[0] == -1 else g.io.inputs[0].shape[0])
        ref = TorchBackend(g.module, g.io, device=torch_device).run(feeds)
        checks.append(parity_check(name, ref, OrtBackend(onnx_paths[name]).run(feeds)))
    return Check(f"backend parity: ONNX Runtime vs torch ({torch_device})", all(c.passed for c in checks),
                 " | ".join(f"{c.name}: {c.detail}" for c in checks))


def _ground_truth_digest(run_dir: Path) -> str:
    """Fingerprint of the evaluated dataset: sha256 of the ground-truth files `prepare` wrote."""
    h = hashlib.sha256()
    for p in sorted(run_dir.glob("ground_truth*")):
        h.update(p.name.encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()


def parse_epochs(text: str) -> list[int]:
    """'11-20' / '10,19,20' / '19' -> sorted epochs; a clear error otherwise."""
    epochs: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ZooError(f"--epochs {text!r}: expected N, N-M or a comma list of them") from None
        if a < 0 or b < a:
            raise ZooError(f"--epochs {text!r}: empty or negative range {part!r}")
        epochs.update(range(a, b + 1))
    return sorted(epochs)


def snapshot_files(weights: Path, epochs: list[int]) -> dict[int, Path]:
    """checkpoint_e<N>.pth for each epoch in a snapshot folder (or a training run directory holding snapshot/);
    every missing one is named."""
    folder = weights / "snapshot" if (weights / "snapshot").is_dir() else weights
    if not folder.is_dir():
        raise InputError(weights, "--epochs needs --weights to be a snapshot folder (or a training run directory)")
    files = {e: folder / f"checkpoint_e{e}.pth" for e in epochs}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(folder, f"missing snapshot(s): {', '.join(missing)}")
    return files


def evaluate_snapshots(opts: EvalOptions, snapshots: dict[int, Path]) -> tuple[list[RunReport], Path]:
    """Evaluate each snapshot into `<out>/e<N>` (each with its own report and verdict against the selected
    published run) and write `<out>/snapshots.md` + `.json`: one row per epoch, best EAO marked (pysot TRAIN.md
    selects the best snapshot this way)."""
    import json
    from dataclasses import replace

    reports = []
    for epoch, path in snapshots.items():
        log.info("snapshot e%d: %s", epoch, path)
        reports.append(evaluate(replace(opts, weights=path, out_dir=opts.out_dir / f"e{epoch}")))
    rows = [{"epoch": e, "weights": str(p), "verdict": r.verdict, **r.metrics}
            for (e, p), r in zip(snapshots.items(), reports, strict=True)]
    keys = [k for k in ("accuracy", "robustness", "lost", "eao") if all(k in row for row in rows)]
    best = max(rows, key=lambda row: row.get("eao", float("-inf")))["epoch"] if rows else None
    run = load_bundle(opts.bundle).manifest.run(opts.published_run)
    lines = [f"# {opts.bundle}: snapshots vs `{run.name}` ({run.source})", "",
             "| epoch | " + " | ".join(keys) + " | verdict |", "|---" * (len(keys) + 2) + "|"]
    for row in rows:
        mark = " (best EAO)" if row["epoch"] == best else ""
        lines.append(f"| e{row['epoch']}{mark} | " + " | ".join(f"{row[k]:.3f}" for k in keys)
                     + f" | {row['verdict']} |")
    lines += ["", "published: " + ", ".join(f"{m.name} {m.value}" for m in run.metrics)]
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / "snapshots.json").write_text(json.dumps({"published_run": run.name, "rows": rows}, indent=1))
    table = opts.out_dir / "snapshots.md"
    table.write_text("\n".join(lines) + "\n")
    return reports, table
