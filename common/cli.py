"""`zoo`: the command line. A thin adapter: it parses options, then calls common.pipeline / verify / bench.

Exit codes: 0 = PASS (or DEMO-PASS); 1 = the run completed and a check did NOT pass; 2 = bad input or environment
(one line saying what is wrong and how to fix it).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path

import click

from common.errors import ZooError
from common.manifest import bundle_manifest, bundle_names
from common.training.launch import LaunchSpec

BUNDLE = click.Choice(bundle_names())


def _default_out(bundle: str, demo: bool) -> Path:
    return Path("runs") / f"{bundle}-{'demo' if demo else 'eval'}-{time.strftime('%Y%m%d-%H%M%S')}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log each stage and the configuration used.")
def main(verbose: bool) -> None:
    """Reproduce Ascend ModelZoo results: fetch, convert, infer, evaluate, verify, report."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@main.command("list")
def list_cmd() -> None:
    """List bundles with their published runs."""
    for name in bundle_names():
        m = bundle_manifest(name)
        click.echo(f"{name:<10} {m.bundle.variant:<36} {m.bundle.summary}")
        for r in m.published:
            vals = ", ".join(f"{x.name} {x.value}{x.unit}" for x in r.metrics)
            click.echo(f"    {'*' if r.default else ' '} {r.name:<22} {r.hardware:<22} {vals}")


def _eval_options(f):  # shared options of `eval` and `demo`
    for opt in reversed([
        click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Run directory [runs/<bundle>-...]."),
        click.option("--run", "published_run", help="Published run to reproduce/compare with, with the "
                     "configuration that produced it (see `zoo list`) [manifest default]."),
        click.option("--backend", type=click.Choice(["onnxruntime", "torch", "ais_bench"]), default="onnxruntime",
                     show_default=True, help="Inference backend."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, npu:0 ..."),
        click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True),
        click.option("--limit", type=click.IntRange(1), help="Evaluate only the first N items (smoke runs)."),
        click.option("--om-dir", type=click.Path(path_type=Path), help="Prebuilt OM files <graph>_bs<N>.om for "
                     "--backend ais_bench [built with ATC into the run directory]."),
        click.option("--cache", "cache_dir", type=click.Path(path_type=Path), envvar="ZOO_CACHE",
                     help="Cache directory [$ZOO_CACHE or ~/.cache/ascend-zoo]."),
    ]):
        f = opt(f)
    return f


def _launch_options(f):
    """The torchrun options of `train`, `eval` and `demo` (N processes / nodes); the command receives them as one
    `launch: LaunchSpec` argument."""

    @functools.wraps(f)
    def with_spec(*args, devices: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None, rdzv_id: str,
                  master_port: int | None, **kw):
        return f(*args, launch=LaunchSpec(devices, nnodes, node_rank, rdzv_endpoint, rdzv_id, master_port), **kw)

    for opt in reversed([
        click.option("--devices", type=click.IntRange(1), default=1, show_default=True,
                     help="Processes (devices) per node: >1 (or --nnodes >1) re-runs this command under torchrun; "
                     "process i uses device i of its host (npu:i / cuda:i; on a CPU the cores are split)."),
        click.option("--nnodes", type=click.IntRange(1), default=1, show_default=True),
        click.option("--node-rank", type=click.IntRange(0), default=0, show_default=True),
        click.option("--rdzv-endpoint", help="host:port of the rendezvous, reachable from every node (multi-node)."),
        click.option("--rdzv-id", default="zoo", show_default=True),
        click.option("--master-port", type=click.IntRange(1, 65535), help="Single node: fixed port [a free one]."),
    ]):
        with_spec = opt(with_spec)
    return with_spec


def _torchrun(spec: LaunchSpec, args: list[str], failure: str, unclaimed: str) -> None:
    """Print the plain torchrun line, run it, and fail with `failure` and what is `unclaimed` when any rank failed
    (each failed rank has printed `error: rank N: ...` above)."""
    from common.training.launch import launch, printable

    click.echo(f"launching: {printable(spec, args)}", err=True)
    rc = launch(spec, args)
    if rc != 0:
        raise ZooError(f"{failure} (torchrun exit {rc}): the failing rank and its error are printed above; "
                       f"{unclaimed}")


def eval_args(command: str, bundle: str, out_dir: Path, **kw) -> list[str]:
    """The `zoo eval|demo` arguments every rank of a sharded evaluation runs (options left at None omitted)."""
    flags = {"published_run": "--run", "backend": "--backend", "device": "--device", "batch_size": "--batch-size",
             "limit": "--limit", "om_dir": "--om-dir", "cache_dir": "--cache", "data_dir": "--data",
             "weights": "--weights"}
    args = [command, bundle, "--out", str(out_dir)]
    for key, value in kw.items():
        if key not in flags:
            raise ValueError(f"no command-line flag for {key}")
        if value is not None:
            args += [flags[key], str(value)]
    return args


def _run(bundle: str, demo: bool, out_dir: Path | None, launch: LaunchSpec, **kw) -> None:
    from common.pipeline import EvalOptions, evaluate
    from common.training.launch import under_torchrun

    out_dir = out_dir or _default_out(bundle, demo)
    if not under_torchrun() and (launch.nproc_per_node > 1 or launch.nnodes > 1):
        _launch_sharded(launch, eval_args("demo" if demo else "eval", bundle, out_dir, **kw), out_dir)
    opts = EvalOptions(bundle=bundle, out_dir=out_dir, demo=demo, **kw)
    report = evaluate(opts)
    if report is None:  # a rank other than 0: it sent its shard; rank 0 reports
        return
    for c in report.checks:
        click.echo(c.line())
    click.echo(f"{bundle}: {report.verdict}  (report: {opts.out_dir / 'report.md'})")
    # Under torchrun a completed run exits 0 whatever its verdict (torchrun would call a FAIL verdict a crashed
    # rank); the launcher reads the verdict from report.json.
    sys.exit(0 if under_torchrun() else report.exit_code)


def _launch_sharded(spec: LaunchSpec, args: list[str], out_dir: Path) -> None:
    """Re-run this evaluation under torchrun; exit with the verdict rank 0 wrote, or fail naming torchrun's
    failure (each failed rank prints `error: rank N: ...`)."""
    import json

    if spec.nnodes > 1 and not out_dir.is_absolute():
        click.echo(f"note: --out {out_dir} is relative; rank 0's node writes the run directory", err=True)
    report = out_dir / "report.json"
    report.unlink(missing_ok=True)  # never read a verdict a previous run left here
    _torchrun(spec, args, "sharded evaluation failed", "no result is claimed")
    if not report.is_file():
        # torchrun's c10d rendezvous hands out global ranks in arrival order, not by --node-rank: the node that
        # got rank 0 writes the report (into its --out; the same path on shared storage).
        click.echo(f"node {spec.node_rank}: this node's shards are done; the node that ran rank 0 writes the report")
        sys.exit(0)
    verdict = json.loads(report.read_text())["verdict"]
    sys.exit(0 if verdict.endswith("PASS") else 1)


@main.command()
@click.argument("bundle", type=BUNDLE)
@_eval_options
@_launch_options
def demo(bundle: str, out_dir: Path | None, launch: LaunchSpec, **kw) -> None:
    """Run the whole pipeline on synthetic data and random weights (says DEMO; claims nothing published)."""
    _run(bundle, True, out_dir, launch, **kw)


@main.command("eval")
@click.argument("bundle", type=BUNDLE)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Dataset root (the real layout).")
@click.option("--weights", type=click.Path(path_type=Path), help="Published checkpoint (or, with --epochs, a "
              "training run's snapshot folder).")
@click.option("--epochs", help="Training bundles: evaluate snapshots checkpoint_e<N>.pth for N in e.g. 11-20 or "
              "10,19,20 and write a table (snapshots.md).")
@_eval_options
@_launch_options
def eval_cmd(bundle: str, data_dir: Path | None, weights: Path | None, epochs: str | None, out_dir: Path | None,
             launch: LaunchSpec, **kw) -> None:
    """Evaluate on the real dataset and verify against the published numbers.

    With neither --data nor --weights and nothing fetched into the cache, runs the demo instead and says so."""
    from common.bundle import load_bundle
    from common.fetch import default_cache_dir

    if epochs is not None:
        from common.pipeline import EvalOptions, evaluate_snapshots, parse_epochs, snapshot_files

        if launch.nproc_per_node > 1 or launch.nnodes > 1:
            raise ZooError("--epochs evaluates snapshots one after the other on one device; shard one snapshot "
                           "at a time with --weights <checkpoint_eN.pth> --devices N")

        if weights is None or data_dir is None:
            raise ZooError("--epochs needs --weights (the snapshot folder) and --data")
        files = snapshot_files(weights, parse_epochs(epochs))
        opts = EvalOptions(bundle=bundle, out_dir=out_dir or _default_out(bundle, False), data_dir=data_dir, **kw)
        reports, table = evaluate_snapshots(opts, files)
        click.echo(table.read_text())
        sys.exit(max(r.exit_code for r in reports))

    for label, path in (("--data", data_dir), ("--weights", weights)):
        if path is not None and not path.exists():
            raise ZooError(f"{label} {path}: does not exist")
    b = load_bundle(bundle)
    cache = kw.get("cache_dir") or default_cache_dir()
    if data_dir is None and weights is None and b.locate(None, None, cache) is None:
        click.echo(f"{bundle}: no real dataset/weights given or cached -> running the DEMO on synthetic data "
                   f"(pass --data and --weights, or `zoo fetch {bundle}`, for a real evaluation)", err=True)
        _run(bundle, True, out_dir, launch, **kw)
    _run(bundle, False, out_dir, launch, data_dir=data_dir, weights=weights, **kw)


@main.command()
@click.argument("bundle", type=BUNDLE)
@click.option("--dataset", required=True, help="Which raw dataset (siamrpnpp: vid, yt_bb, coco, det).")
@click.option("--raw", "raw_root", type=click.Path(path_type=Path), required=True,
              help="The raw dataset in its standard layout.")
@click.option("--out", "out_root", type=click.Path(path_type=Path), required=True,
              help="The training-data base (e.g. training_dataset/): <out>/<dataset>/crop511 + JSON.")
@click.option("--workers", type=click.IntRange(1), help="Processes [all cores; $ZOO_WORKERS].")
@click.option("--limit", type=click.IntRange(1), help="Only the first N videos/images of each split (smoke runs).")
def curate(bundle: str, dataset: str, raw_root: Path, out_root: Path, workers: int | None,
           limit: int | None) -> None:
    """Training bundles: crop a raw dataset into the training crops + index (parallel, resumable; skipped items are
    named in <out>/<dataset>/curation_report.json)."""
    from importlib import import_module

    if bundle_manifest(bundle).bundle.task != "training":
        raise ZooError(f"{bundle} is an inference bundle: nothing to curate")
    report = import_module(f"bundles.{bundle}.curate").curate(dataset, raw_root, out_root, workers=workers,
                                                               limit=limit)
    click.echo(report.summary())


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise ZooError(f"--set {v!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


@main.command()
@click.argument("bundle", type=BUNDLE)
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="Curated training data (the folder holding vid/ yt_bb/ coco/ det/) [recipe default].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Training run directory [runs/<b>-train-...].")
@click.option("--device", type=click.Choice(["cpu", "cuda", "npu"]), default="cpu", show_default=True,
              help="Device kind; process i uses device i of its host (torchrun LOCAL_RANK).")
@_launch_options
@click.option("--resume", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Continue from resume.pth or a snapshot (model, optimizer, LR position, freeze state, RNG, "
                   "sampler position).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one recipe value (repeatable).")
@click.option("--workers", type=click.IntRange(0), default=1, show_default=True,
              help="DataLoader worker processes per training process.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision [on for cuda/npu, off on cpu].")
@click.option("--stop-after", type=click.IntRange(0), help="Stop after this many iterations (resume later).")
@click.option("--checkpoint-every", type=click.IntRange(0), default=0, show_default=True,
              help="Also refresh resume.pth every N iterations (0: at epoch ends and stops only).")
def train(bundle: str, data_dir: Path | None, out_dir: Path | None, device: str, launch: LaunchSpec,
          resume: Path | None, sets: tuple[str, ...], workers: int, amp: bool | None, stop_after: int | None,
          checkpoint_every: int) -> None:
    """Train a training bundle on 1 device or N (torchrun: one process per device; several nodes with
    --nnodes and a rendezvous endpoint). Prints the equivalent plain torchrun line."""
    from common.training.launch import train_args, under_torchrun

    overrides = _parse_sets(sets)
    if data_dir is not None:
        overrides["data"] = str(data_dir)
    if out_dir is None:
        if launch.nnodes > 1:
            raise ZooError("--nnodes > 1 needs --out (the same shared path on every node)")
        out_dir = Path("runs") / f"{bundle}-train-{time.strftime('%Y%m%d-%H%M%S')}"
    if not under_torchrun() and (launch.nproc_per_node > 1 or launch.nnodes > 1):
        args = train_args(bundle, out_dir, overrides, "--checkpoint-every", str(checkpoint_every), device=device,
                          workers=workers)
        args += ["--resume", str(resume)] if resume else []
        args += ["--stop-after", str(stop_after)] if stop_after is not None else []
        args += [] if amp is None else ["--amp" if amp else "--no-amp"]
        _torchrun(launch, args, "training failed", "nothing after the last snapshot is claimed")
        click.echo(f"{bundle}: training done: {out_dir}")
        return
    _train_here(bundle, out_dir, device, overrides, resume, workers, amp, stop_after, checkpoint_every)


def _train_here(bundle: str, out_dir: Path, device: str, overrides: dict[str, str], resume: Path | None,
                workers: int, amp: bool | None, stop_after: int | None, checkpoint_every: int) -> None:
    """One rank (or the only process): run the shared loop; a failure is reported with this rank's number."""
    import os

    from common.bundle import load_bundle
    from common.training.loop import TrainConfig
    from common.training.loop import train as run_training

    rank = os.environ.get("RANK", "0")
    try:
        task = load_bundle(bundle).training_task(overrides)
        cfg = TrainConfig(out_dir=out_dir, device=device, workers=workers, amp=amp, resume=resume,
                          stop_after=stop_after, checkpoint_every=checkpoint_every,
                          extra={"launched_with": sys.argv})
        result = run_training(task, cfg)
    except Exception as e:
        click.echo(f"error: rank {rank}: {type(e).__name__}: {e}", err=True)
        raise
    if rank == "0":
        import json

        from common.training.loop import SUMMARY_FILE

        results = json.loads((out_dir / SUMMARY_FILE).read_text()).get("results")
        if results:
            click.echo(f"{bundle}: {json.dumps(results)}")
        state = "done" if result.completed else f"stopped at iteration {result.iterations_done}"
        click.echo(f"{bundle}: training {state} ({result.iterations_done}/{result.total_iterations} iterations, "
                   f"{result.world_size} process(es)): {out_dir}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify(run_dir: Path) -> None:
    """Recompute the metrics of a run directory from its predictions and re-check them."""
    from common.verify import verify_run_dir

    checks, _ = verify_run_dir(run_dir)
    for c in checks:
        click.echo(c.line())
    ok = all(c.passed for c in checks)
    click.echo(f"{run_dir}: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("bundle", type=BUNDLE)
@click.option("--mirror", help="Offline mirror: a directory or base URL holding the artifact files.")
@click.option("--offline", is_flag=True, help="Use the mirror only; contact no upstream URL.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), envvar="ZOO_CACHE")
def fetch(bundle: str, mirror: str | None, offline: bool, cache_dir: Path | None) -> None:
    """Download (checksummed, resumable) and safely unpack the bundle's weights and dataset into the cache."""
    from common.fetch import default_cache_dir, fetch_bundle_artifacts

    m = bundle_manifest(bundle)
    paths = fetch_bundle_artifacts(bundle, dict(m.artifacts), cache_dir or default_cache_dir(), mirror=mirror,
                                   offline=offline)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@main.command()
@click.argument("bundle", type=BUNDLE)
@click.option("--weights", type=click.Path(exists=True, path_type=Path), help="Checkpoint [random weights].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("export"), show_default=True)
@click.option("--om", is_flag=True, help="Also build OM files with ATC (needs CANN; one per batch size).")
@click.option("--soc-version", help="e.g. Ascend310P3 [from `npu-smi info`].")
@click.option("--dry-run", is_flag=True, help="Print the ATC commands instead of running them.")
def convert(bundle: str, weights: Path | None, out_dir: Path, om: bool, soc_version: str | None,
            dry_run: bool) -> None:
    """Export ONNX graphs (named inputs/outputs, dynamic batch) and optionally OM files via ATC."""
    import shlex

    from common.atc import detect_soc_version
    from common.bundle import load_bundle
    from common.export import export_onnx
    from common.pipeline import atc_commands, build_oms, om_path

    b = load_bundle(bundle)
    onnx_paths = {name: export_onnx(g.module, g.io, out_dir / f"{name}.onnx")
                  for name, g in b.graphs(b.build_model(weights)).items()}
    for name, path in onnx_paths.items():
        click.echo(f"onnx {name}: {path}")
    if not om:
        return
    soc_version = soc_version or detect_soc_version()
    for bs in b.manifest.atc.batch_sizes:
        if dry_run:
            for cmd in atc_commands(b, onnx_paths, out_dir, bs, soc_version).values():
                click.echo(shlex.join(cmd))
            continue
        build_oms(b, onnx_paths, out_dir, bs, soc_version)
        for name in onnx_paths:
            click.echo(f"om {name} bs{bs}: {om_path(out_dir, name, bs)}")


@main.command()
@click.argument("bundle", type=BUNDLE)
@click.option("--backend", type=click.Choice(["onnxruntime", "torch"]), default="onnxruntime", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--batch-sizes", help="Comma-separated batch sizes [the published table's, manifest [atc]].")
@click.option("--images", type=click.IntRange(1), default=32, show_default=True,
              help="Synthetic items per end-to-end measurement.")
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True)
@click.option("--iters", type=click.IntRange(1), default=10, show_default=True)
@click.option("--processes", type=click.IntRange(1), default=2, show_default=True,
              help="Training bundles: also measure the loop with this many processes (torchrun).")
@click.option("--workers", type=click.IntRange(0), default=1, show_default=True,
              help="Training bundles: DataLoader workers per process.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write bench.json and bench.html (throughput plot beside the published table) here.")
@click.option("--devices", type=click.IntRange(1), default=1, show_default=True,
              help="N >= 2: end-to-end scaling, 1 process vs N sharded processes (`zoo eval --devices N`), per "
              "device and in aggregate (training bundles: the loop on N processes).")
def bench(bundle: str, backend: str, device: str, batch_sizes: str | None, images: int, warmup: int,
          iters: int, processes: int, workers: int, out_dir: Path | None, devices: int) -> None:
    """Print pure-inference vs end-to-end throughput per batch size beside the published table, and metric speed.
    Training bundles: training pairs/s (pure step, data pipeline alone, end to end on 1 and N processes);
    --batch-sizes is then the per-process batch [2]. --devices N: how end-to-end throughput scales over N
    processes/devices."""
    training = bundle_manifest(bundle).bundle.task == "training"
    if devices > 1 and training:
        processes = devices
    elif devices > 1:
        import json

        from common.scaling import run_scaling_bench

        given = click.get_current_context().get_parameter_source("images") != click.core.ParameterSource.DEFAULT
        result = run_scaling_bench(bundle, devices, device=device, backend=backend,
                                   size=images if given else None,  # default: the demo's own dataset
                                   batch_size=int(batch_sizes.split(",")[0]) if batch_sizes else 1, echo=click.echo)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "scaling.json").write_text(json.dumps(result, indent=1) + "\n")
            click.echo(f"bench: {out_dir / 'scaling.json'}")
        return
    if training:
        from importlib import import_module

        from common.bench import write_bench

        bench_mod = import_module(f"bundles.{bundle}.bench")
        default_batch = {"sa_siam": 8}.get(bundle, 2)  # sa_siam: the seed's global batch; siamrpnpp: per process
        printed: list[str] = []

        def echo(line: str) -> None:
            printed.append(line)
            click.echo(line)

        batch = int(batch_sizes or default_batch)
        res = bench_mod.run_training_bench(batch_size=batch, steps=iters, processes=processes, device=device,
                                           workers=workers, echo=echo)
        if out_dir is not None:
            write_bench(out_dir, bundle, {"kind": "training", "device": device, "batch_size": batch, "steps": iters,
                                          "processes": processes, "workers": workers, "pairs_per_s": res},
                        bundle_manifest(bundle).throughput, printed)
            click.echo(f"bench: {out_dir / 'bench.json'}, {out_dir / 'bench.html'}")
        return
    from common.bench import run_bench

    sizes = ([int(x) for x in batch_sizes.split(",")] if batch_sizes
             else list(bundle_manifest(bundle).atc.batch_sizes))
    run_bench(bundle, backend=backend, device=device, batch_sizes=sizes, images=images, warmup=warmup, iters=iters,
              out_dir=out_dir)
    if out_dir is not None:
        click.echo(f"bench: {out_dir / 'bench.json'}, {out_dir / 'bench.html'}")


@main.command()
@click.argument("bundle", required=False)
def doctor(bundle: str | None) -> None:
    """Explain what is missing to run on an Ascend NPU here, and print a docker run line that would work."""
    from common.doctor import main_doctor

    sys.exit(main_doctor(bundle))


def _register_commands() -> None:
    """Commands that live beside their machinery (each module keeps its click command with its logic)."""
    from common.compare import compare_command
    from common.k8s import k8s_command
    from common.submission import bench_check_command, check_command, submit_command

    for command in (submit_command, check_command, compare_command, bench_check_command, k8s_command):
        main.add_command(command)


_register_commands()


def cli_main() -> None:
    try:
        main(standalone_mode=False)
    except ZooError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
