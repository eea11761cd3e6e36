"""The one pipeline every bundle runs: fetch -> prepare -> convert -> infer -> post-process -> metric -> verify ->
report. Each stage writes into the run directory; see shared/DESIGN.md."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.backends.base import Backend
from common.bundle import Bundle, Check, Graph, PredictStats, load_bundle
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
                  om_dir: Path | None = None, batch_size: int = 1, threads: int | None = None) -> dict[str, Backend]:
    """One backend per graph. ais_bench needs OM files `<om_dir>/<graph>_bs<batch>.om` built with `zoo convert`.
    `threads`: ONNX Runtime's intra-op threads (sharded CPU ranks split the cores) [its default: all cores]."""
    if kind == "onnxruntime":
        from common.backends.onnxruntime import OrtBackend

        return {name: OrtBackend(path, device=device, threads=threads) for name, path in onnx_paths.items()}
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
    from common.progress import track

    soc = soc_version or detect_soc_version()
    commands = atc_commands(bundle, onnx_paths, om_dir, batch_size, soc)
    for name, cmd in track(commands.items(), len(commands), desc=f"{bundle.name} ATC bs{batch_size}", unit="graph"):
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


def evaluate(opts: EvalOptions) -> RunReport | None:
    """Run the whole pipeline for one bundle; always writes a report (verdict FAIL/INCOMPLETE on errors).

    Under torchrun with several ranks (`zoo eval --devices N`) the evaluation is sharded (common/sharding.py):
    every rank predicts its part, rank 0 gathers, merges, scores and reports; the other ranks return None."""
    from common.sharding import shard_context

    bundle = load_bundle(opts.bundle)
    bundle.select_run(opts.published_run)
    manifest = bundle.manifest
    run = manifest.run(opts.published_run)
    ctx = shard_context()
    run_dir = opts.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if ctx is not None and not ctx.is_main:
        _run_rank(bundle, opts, ctx)
        return None
    report = RunReport(bundle=bundle.name, mode="demo" if opts.demo else "real", published_run=run.name,
                       published=run.model_dump(mode="json"),
                       provenance=collect_provenance(manifest.sha256, manifest.upstream.model_dump()))
    shutil.copyfile(manifest.path, run_dir / "manifest.toml")  # the resolved manifest travels with the run
    try:
        if ctx is None:
            _run_stages(bundle, opts, report, run_dir)
        else:
            _run_sharded(bundle, opts, report, run_dir, ctx)
    finally:
        if report.verdict == "INCOMPLETE":
            report.notes.append("the run did not complete: no result is claimed")
        write_report(report, run_dir)
    return report


def _fetch(bundle: Bundle, opts: EvalOptions, report: RunReport, run_dir: Path) -> tuple[Path, Path]:
    """The dataset and weights to evaluate: the demo's synthetic ones (after its training, for a training
    bundle), or the real ones the user gave or `zoo fetch` cached."""
    cache = opts.cache_dir or default_cache_dir()
    if opts.demo:
        demo = bundle.make_demo(cache / "demo" / bundle.name)
        data_dir, weights = demo.data_dir, demo.weights
        report.notes += [DEMO_NOTICE, f"demo data: {demo.description}"]
        trained = bundle.demo_training(run_dir / "train", demo, cache)
        if trained is not None:  # a training bundle evaluates the snapshot its demo training just wrote
            weights, notes = trained
            report.notes += notes
        return data_dir, weights
    located = bundle.locate(opts.data_dir, opts.weights, cache)
    if located is None:
        raise ZooError(f"{bundle.name}: real dataset and weights not found; pass --data and --weights "
                       f"(or run `zoo fetch {bundle.name}`), or run `zoo demo {bundle.name}`")
    return located


def _convert(bundle: Bundle, weights: Path, out_dir: Path, opts: EvalOptions
             ) -> tuple[dict[str, Graph], dict[str, Path], Path | None]:
    """torch model -> named graphs -> ONNX files in `out_dir/onnx` (and OMs with ATC for ais_bench)."""
    from common.progress import track

    model = bundle.build_model(weights)
    graphs = bundle.graphs(model)
    onnx_paths = {name: export_onnx(g.module, g.io, out_dir / "onnx" / f"{name}.onnx")
                  for name, g in track(graphs.items(), len(graphs), desc=f"{bundle.name} export ONNX", unit="graph")}
    om_dir = opts.om_dir
    if opts.backend == "ais_bench" and om_dir is None:
        om_dir = build_oms(bundle, onnx_paths, out_dir / "om", opts.batch_size)
    return graphs, onnx_paths, om_dir


def _exported_hashes(onnx_paths: dict[str, Path], om_dir: Path | None) -> dict[str, str]:
    hashes = {name: file_digest(p) for name, p in onnx_paths.items()}
    if om_dir is not None:
        hashes.update({f"{p.stem}.om": file_digest(p) for p in sorted(om_dir.glob("*.om"))})
    return hashes


def _predict(bundle: Bundle, dataset: object, graphs: dict[str, Graph], onnx_paths: dict[str, Path],
             om_dir: Path | None, opts: EvalOptions, out_dir: Path, *, device: str | None = None
             ) -> tuple[PredictStats, dict[str, str], float]:
    """Open the backends, run `bundle.predict` into `out_dir`; returns the stats, the backend description and the
    backends' summed compute seconds."""
    threads = os.environ.get("OMP_NUM_THREADS", "")  # set per rank by `zoo eval --devices N` (cores / N)
    backends = open_backends(opts.backend, graphs, onnx_paths, device=device or opts.device, om_dir=om_dir,
                             batch_size=opts.batch_size,
                             threads=int(threads) if device and threads.isdigit() else None)
    described = {k: v for b in backends.values() for k, v in b.describe().items()}
    try:
        stats = bundle.predict(dataset, backends, out_dir, batch_size=opts.batch_size)
        compute_s = sum(sum(b.timings.run_ms) for b in backends.values()) / 1e3
    finally:
        for b in backends.values():
            b.close()
    return stats, described, compute_s


def _run_stages(bundle: Bundle, opts: EvalOptions, report: RunReport, run_dir: Path) -> None:
    with _stage(report, "fetch"):
        data_dir, weights = _fetch(bundle, opts, report, run_dir)
        report.artifacts["weights"] = {"path": str(weights), "sha256": file_digest(weights)}

    with _stage(report, "prepare"):
        dataset = bundle.prepare(data_dir, run_dir, limit=opts.limit)
        report.artifacts["dataset"] = {"path": str(data_dir), "sha256": ground_truth_digest(run_dir)}

    with _stage(report, "convert"):
        graphs, onnx_paths, om_dir = _convert(bundle, weights, run_dir, opts)
        report.exported_models = _exported_hashes(onnx_paths, om_dir)

    with _stage(report, "infer+post"):
        stats, report.backend, compute_s = _predict(bundle, dataset, graphs, onnx_paths, om_dir, opts, run_dir)
    report.stats = {**asdict(stats), "backend_compute_s": round(compute_s, 3)}
    _score_and_verify(bundle, opts, report, run_dir, graphs, onnx_paths)


def _score_and_verify(bundle: Bundle, opts: EvalOptions, report: RunReport, run_dir: Path,
                      graphs: dict[str, Graph], onnx_paths: dict[str, Path]) -> None:
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


# -- sharded evaluation (torchrun, N ranks) -----------------------------------------------------------------
SHARDS_DIR = "shards"


@dataclass
class _RankWork:
    """What one rank did, sent to rank 0 with its predictions."""

    rank: int
    host: str
    device: str
    error: str | None = None
    weights_sha256: str | None = None
    items: int = 0
    seconds: dict[str, float] | None = None
    stats: dict | None = None
    backend: dict[str, str] | None = None
    compute_s: float = 0.0
    files: dict[str, bytes] | None = None


def _demo_in_turns(bundle: Bundle, opts: EvalOptions, ctx) -> None:
    """Demo data is written once per cache before any rank reads it: global rank 0 first, then the first rank of
    every other host (a host without a shared cache writes its own copy), then everyone else reads."""
    from common.sharding import barrier

    if bundle.manifest.bundle.task == "training":
        raise ZooError(f"{bundle.name}: the demo trains before it evaluates, which is not sharded; shard the "
                       "evaluation of a snapshot instead (--weights ... --data ...)")
    cache = opts.cache_dir or default_cache_dir()
    for turn in (ctx.rank == 0, ctx.rank != 0 and ctx.local_rank == 0, ctx.local_rank != 0):
        if turn:
            bundle.make_demo(cache / "demo" / bundle.name)
        barrier()


def _work_on_shard(bundle: Bundle, opts: EvalOptions, ctx, report: RunReport | None, run_dir: Path,
                   work_dir: Path) -> tuple[_RankWork, tuple | None]:
    """One rank's part: fetch, prepare, convert, predict its shard into `work_dir/pred`. Errors are caught and
    sent to rank 0 (so no rank waits forever on a collective); rank 0 gets its own graphs back for the parity
    check. Collectives (the demo's turn-taking) happen on every rank whatever fails."""
    from common.sharding import pack_dir, rank_device

    device = rank_device(opts.device, ctx.local_rank)
    (work_dir / "pred").mkdir(parents=True, exist_ok=True)
    work = _RankWork(ctx.rank, ctx.host, device, seconds={})
    rank_report = report or RunReport(bundle=bundle.name, mode="demo" if opts.demo else "real", published_run="")
    try:
        if opts.demo:
            _demo_in_turns(bundle, opts, ctx)
    except ZooError:
        raise
    except Exception as e:  # a failed demo write on one rank: the others are past the barriers already
        work.error = f"{type(e).__name__}: {e}"
        return work, None
    try:
        t = time.perf_counter()
        data_dir, weights = _fetch(bundle, opts, rank_report, run_dir)
        work.weights_sha256 = file_digest(weights)
        if report is not None:
            report.artifacts["weights"] = {"path": str(weights), "sha256": work.weights_sha256}
        work.seconds["fetch"] = time.perf_counter() - t
        t = time.perf_counter()
        dataset = bundle.prepare(data_dir, work_dir if report is None else run_dir, limit=opts.limit)
        part = bundle.shard(dataset, ctx.rank, ctx.world_size, batch_size=opts.batch_size)
        work.seconds["prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        graphs, onnx_paths, om_dir = _convert(bundle, weights, work_dir, opts)
        work.seconds["convert"] = time.perf_counter() - t
        t = time.perf_counter()
        stats, work.backend, work.compute_s = _predict(bundle, part, graphs, onnx_paths, om_dir, opts,
                                                       work_dir / "pred", device=device)
        work.seconds["infer+post"] = time.perf_counter() - t
        work.items, work.stats = stats.items, asdict(stats)
        work.files = pack_dir(work_dir / "pred")
        return work, (data_dir, dataset, graphs, onnx_paths, om_dir)
    except Exception as e:
        log.exception("rank %d failed", ctx.rank)
        work.error = f"{type(e).__name__}: {e}"
        return work, None


def _run_rank(bundle: Bundle, opts: EvalOptions, ctx) -> None:
    """A rank other than 0: work on its shard, send the result to rank 0, wait for the run's outcome, clean up;
    raise if this rank or the run failed, so every node's torchrun (and launcher) fails with the run."""
    from common.sharding import broadcast_from_main, close_group, gather_to_main, init_group

    init_group()
    work_dir = opts.out_dir / SHARDS_DIR / f"rank{ctx.rank}-work"
    try:
        work, _ = _work_on_shard(bundle, opts, ctx, None, opts.out_dir, work_dir)
        gather_to_main(work, ctx)
        outcome = broadcast_from_main(None, ctx)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            work_dir.parent.rmdir()  # the shards folder, when this rank was its only user
        close_group()
    if work.error:
        raise ZooError(f"rank {ctx.rank}: {work.error}")
    if outcome != "ok":
        raise ZooError(f"rank {ctx.rank}: this rank's shard was sent, but the run failed: {outcome}")


def _run_sharded(bundle: Bundle, opts: EvalOptions, report: RunReport, run_dir: Path, ctx) -> None:
    """Rank 0: its own shard, then gather every rank's predictions, merge them into what one process writes,
    score and verify. Any failed rank fails the run, named, before anything is scored."""
    from common.sharding import broadcast_from_main, close_group, gather_to_main, init_group, merge_stats, unpack_dir

    init_group()
    shards = run_dir / SHARDS_DIR
    outcome = "rank 0 stopped before the end"
    try:
        t0 = time.perf_counter()
        work, mine = _work_on_shard(bundle, opts, ctx, report, run_dir, shards / "rank0-work")
        with _stage(report, "gather"):
            gathered = gather_to_main(work, ctx)
        assert gathered is not None
        report.stats["world_size"] = ctx.world_size
        report.stats["ranks"] = [{"rank": w.rank, "host": w.host, "device": w.device, "items": w.items,
                                  "seconds": {k: round(v, 3) for k, v in (w.seconds or {}).items()},
                                  "backend_compute_s": round(w.compute_s, 3), "error": w.error} for w in gathered]
        failed = [w for w in gathered if w.error]
        if failed:
            problem = "sharded evaluation failed: " + "; ".join(f"rank {w.rank} ({w.host}): {w.error}"
                                                                 for w in failed)
            report.notes.append(problem)
            raise ZooError(problem)
        if len({w.weights_sha256 for w in gathered}) != 1:
            raise ZooError("ranks evaluated different weights: " + ", ".join(
                f"rank {w.rank} {w.weights_sha256[:12]}" for w in gathered if w.weights_sha256))
        assert mine is not None
        data_dir, dataset, graphs, onnx_paths, om_dir = mine
        for key in ("fetch", "prepare", "convert", "infer+post"):
            report.timings_s[key] = round(max((w.seconds or {}).get(key, 0.0) for w in gathered), 3)
        report.timings_s["ranks_total"] = round(time.perf_counter() - t0, 3)
        report.artifacts["dataset"] = {"path": str(data_dir),
                                       "sha256": ground_truth_digest(run_dir)}
        report.exported_models = _exported_hashes(onnx_paths, om_dir)
        report.backend = {**(work.backend or {}), "world_size": str(ctx.world_size)}
        with _stage(report, "merge"):
            parts = []
            for w in gathered:
                part = shards / f"rank{w.rank}"
                unpack_dir(w.files or {}, part)
                parts.append((bundle.shard(dataset, w.rank, ctx.world_size, batch_size=opts.batch_size), part))
            bundle.merge_predictions(parts, run_dir)
        merged = merge_stats([w.stats for w in gathered if w.stats])
        report.stats.update({**merged, "backend_compute_s": round(sum(w.compute_s for w in gathered), 3)})
        report.notes.append(f"sharded over {ctx.world_size} processes (torchrun); predictions gathered and merged "
                            "on rank 0 in the 1-process order")
        _score_and_verify(bundle, opts, report, run_dir, graphs, onnx_paths)
        outcome = "ok"  # a completed run, PASS or FAIL: the verdict is in rank 0's report
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
        raise
    finally:
        shutil.rmtree(shards, ignore_errors=True)
        try:
            broadcast_from_main(outcome, ctx)  # every rank learns whether the run completed
        finally:
            close_group()


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


def ground_truth_digest(run_dir: Path) -> str:
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
