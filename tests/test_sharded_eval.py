"""Sharded evaluation (`zoo eval|demo --devices N`, torchrun, gloo): N processes give the predictions and metrics
of one process, two launchers act as two nodes, and a failing rank fails the run by name."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import ZooError
from common.sharding import balanced_groups, merge_by_copy, merge_stats, shard_ranges, unpack_dir

# Speed figures depend on how many processes share the cores; every other metric must be identical.
TIMING_METRICS = {"fps_per_chip", "fps_per_card_x4", "fps_per_video_mean", "preprocess_share", "fps"}


# -- the partition rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world,batch", [(8, 2, 1), (8, 3, 2), (4952, 8, 16), (5, 8, 1), (0, 3, 4), (7, 3, 3)])
def test_shard_ranges_cover_in_order_on_batch_boundaries(n: int, world: int, batch: int) -> None:
    parts = shard_ranges(n, world, batch)
    assert len(parts) == world
    assert [i for r in parts for i in r] == list(range(n))
    assert all(r.start % batch == 0 for r in parts)
    sizes = [len(r) for r in parts]
    assert max(sizes) - min(sizes) <= batch  # balanced to within one batch


def test_balanced_groups_spread_frames_and_keep_order() -> None:
    costs = [100, 10, 10, 80, 20, 60]
    groups = balanced_groups(costs, 2)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert all(g == sorted(g) for g in groups)
    loads = [sum(costs[i] for i in g) for g in groups]
    assert abs(loads[0] - loads[1]) <= 20
    assert balanced_groups(costs, 2) == groups  # deterministic


def test_merge_by_copy_refuses_conflicting_files(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for part, seq in ((a, "s1"), (b, "s2")):
        (part / "results" / seq).mkdir(parents=True)
        (part / "results" / seq / "r.txt").write_text(seq)
        (part / "config.json").write_text("{}")
    merge_by_copy([a, b], out)
    assert (out / "results" / "s2" / "r.txt").read_text() == "s2" and (out / "config.json").is_file()
    (b / "config.json").write_text('{"other": 1}')
    with pytest.raises(ZooError, match="config.json"):
        merge_by_copy([a, b], tmp_path / "out2")


def test_unpack_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ZooError, match="outside"):
        unpack_dir({"../evil.txt": b"x"}, tmp_path / "shard")
    assert not (tmp_path / "evil.txt").exists()


def test_merge_stats_sums_counts_and_keeps_agreeing_values() -> None:
    merged = merge_stats([{"items": 3, "seconds": 2.0, "extra": {"detections": 5, "graphs": "split", "x": 1.5}},
                          {"items": 4, "seconds": 3.0, "extra": {"detections": 7, "graphs": "split", "x": 2.5}}])
    assert merged == {"items": 7, "seconds": 3.0, "extra": {"detections": 12, "graphs": "split"}}


# -- N processes == 1 process, per inference bundle ---------------------------------------------------------
def _zoo(*args: str, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _prediction_files(run_dir: Path) -> dict[str, Path]:
    """The raw predictions a run wrote (not the report, the exported graphs or the tracker timings)."""
    skip = {"report.json", "report.md", "report.html", "manifest.toml"}
    return {p.relative_to(run_dir).as_posix(): p for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in skip and "onnx" not in p.parts and "sanity" not in p.parts
            and not p.name.endswith("_time.json") and not p.name.endswith(".time.json")}


def _assert_same_run(sharded: Path, single: Path, world: int) -> None:
    a, b = _prediction_files(sharded), _prediction_files(single)
    assert sorted(a) == sorted(b)
    for rel in a:
        if rel.endswith(".npz"):
            with np.load(a[rel]) as x, np.load(b[rel]) as y:
                assert x.files == y.files
                for k in x.files:
                    assert np.array_equal(x[k], y[k]), f"{rel}:{k} differs"
        else:
            assert a[rel].read_bytes() == b[rel].read_bytes(), f"{rel} differs"
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (sharded, single))
    assert {k: v for k, v in ra["metrics"].items() if k not in TIMING_METRICS} == {
        k: v for k, v in rb["metrics"].items() if k not in TIMING_METRICS}
    assert ra["verdict"] == rb["verdict"] == "DEMO-PASS"
    assert ra["stats"]["world_size"] == world
    ranks = ra["stats"]["ranks"]
    assert [r["rank"] for r in ranks] == list(range(world))
    assert sum(r["items"] for r in ranks) == ra["stats"]["items"] == rb["stats"]["items"]
    assert all(r["seconds"]["infer+post"] > 0 for r in ranks if r["items"])
    assert not (sharded / "shards").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bundle,options", [
    ("refinedet", ["--batch-size", "2"]),  # 8 images in 4 batches: 3 ranks get 1, 1 and 2 batches
    ("pamtri", ["--batch-size", "4"]),
    ("siamrpn", ["--limit", "3"]),  # 3 sequences: 2 ranks get 2 + 1, 3 ranks one each
])
def test_two_and_three_processes_equal_one(bundle: str, options: list[str], tmp_path: Path) -> None:
    cache = ["--cache", str(tmp_path / "cache")]
    single = tmp_path / "single"
    r = _zoo("demo", bundle, "--out", str(single), *cache, *options)
    assert r.returncode == 0, r.stdout + r.stderr
    for world in (2, 3):
        out = tmp_path / f"world{world}"
        r = _zoo("demo", bundle, "--out", str(out), "--devices", str(world), *cache, *options)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "launching: torchrun --nproc-per-node" in r.stderr
        assert f"{bundle}: DEMO-PASS" in r.stdout
        _assert_same_run(out, single, world)


# -- two nodes ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_launchers_act_as_two_nodes(tmp_path: Path, demo_run) -> None:
    nodes = _two_nodes_same_id(tmp_path, (tmp_path / "cache0", tmp_path / "cache1"))
    for node in nodes:
        assert node.returncode == 0, node.stdout + node.stderr
    assert "--nnodes 2 --node-rank 0 --rdzv-backend c10d" in nodes[0].stderr
    # c10d hands out global ranks in arrival order: exactly one node ran rank 0 and wrote the report
    main = [i for i in (0, 1) if (tmp_path / f"node{i}" / "report.json").is_file()]
    assert len(main) == 1
    other = 1 - main[0]
    assert "this node's shards are done" in nodes[other].stdout
    run = tmp_path / f"node{main[0]}"
    report = json.loads((run / "report.json").read_text())
    assert report["stats"]["world_size"] == 2 and report["verdict"] == "DEMO-PASS"
    reference = demo_run("pamtri")
    for name in ("features_query.npy", "features_gallery.npy"):
        assert np.array_equal(np.load(run / name), np.load(reference / name))
    assert report["metrics"] == json.loads((reference / "report.json").read_text())["metrics"]


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_by_name(tmp_path: Path) -> None:
    """Node 1's copy of the dataset lacks an image: its rank fails in prepare, the run fails naming that rank and
    the file, and no verdict is claimed. (Which node gets global rank 0 is c10d's choice, so either can report.)"""
    from bundles.pamtri.bundle import BUNDLE

    good, bad = tmp_path / "cache0", tmp_path / "cache1"
    demo = BUNDLE.make_demo(bad / "demo" / "pamtri")
    missing = sorted((demo.data_dir).rglob("*.jpg"))[3]
    missing.unlink()
    nodes = _two_nodes_same_id(tmp_path, (good, bad))
    assert all(node.returncode != 0 for node in nodes), [n.stdout + n.stderr for n in nodes]
    main = [i for i in (0, 1) if (tmp_path / f"node{i}" / "report.json").is_file()]
    assert len(main) == 1
    report = json.loads((tmp_path / f"node{main[0]}" / "report.json").read_text())
    assert report["verdict"] == "INCOMPLETE"
    failed = [n for n in report["notes"] if n.startswith("sharded evaluation failed")]
    assert len(failed) == 1 and missing.name in failed[0]
    bad_rank = report["stats"]["ranks"][[r["error"] is not None for r in report["stats"]["ranks"]].index(True)]
    assert f"rank {bad_rank['rank']}" in failed[0] and missing.name in bad_rank["error"]
    assert sum(r["error"] is not None for r in report["stats"]["ranks"]) == 1  # only node 1's rank failed
    assert "sharded evaluation failed" in nodes[main[0]].stderr
    assert not (tmp_path / f"node{main[0]}" / "features_query.npy").exists()


def _two_nodes_same_id(tmp_path: Path, caches: tuple[Path, Path]) -> tuple[subprocess.CompletedProcess, ...]:
    endpoint = f"127.0.0.1:{_free_port()}"
    rdzv_id = f"test{os.getpid()}"
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "common", "demo", "pamtri", "--out", str(tmp_path / f"node{node}"),
               "--cache", str(caches[node]), "--devices", "1", "--nnodes", "2", "--node-rank", str(node),
               "--rdzv-endpoint", endpoint, "--rdzv-id", rdzv_id]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    shutil.rmtree(tmp_path / "node1" / "shards", ignore_errors=True)
    return tuple(results)


def test_epochs_and_devices_together_are_refused() -> None:
    from click.testing import CliRunner

    from common.cli import main

    r = CliRunner().invoke(main, ["eval", "siamrpnpp", "--weights", ".", "--data", ".", "--epochs", "1-2",
                                  "--devices", "2"])
    assert r.exit_code != 0 and "one snapshot at a time" in str(r.exception)


@pytest.mark.slow
def test_scaling_bench_prints_per_rank_aggregate_and_the_published_per_chip_tables() -> None:
    from common.scaling import CARD_NOTE, run_scaling_bench

    lines: list[str] = []
    result = run_scaling_bench("pamtri", 2, echo=lines.append)
    text = "\n".join(lines)
    assert result["devices"] == 2 and [r["rank"] for r in result["sharded"]["ranks"]] == [0, 1]
    assert sum(r["items"] for r in result["sharded"]["ranks"]) == 80  # the demo's 12 queries + 68 gallery images
    assert result["single"]["items_per_s"] > 0 and result["sharded"]["items_per_s"] > 0
    assert "1 process x" in text and "2 processes x" in text and "rank 1:" in text
    assert "bs1 728.7 (182.2/chip)" in text  # the Ascend310 per_card_x4 table, divided by 4 per chip, not assumed
    assert CARD_NOTE in text
