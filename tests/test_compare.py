"""`zoo compare`: two runs of one bundle that differ in one item name that item first (per class, per sequence,
per query), identical items are counted, and different bundles are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from common.compare import compare_command, compare_runs, render_comparison
from common.errors import InputError


def test_refinedet_one_class_changed_is_named_first(demo_run, tmp_path):
    a = demo_run("refinedet")
    b = shutil.copytree(a, tmp_path / "b")
    gt = json.loads((b / "ground_truth.json").read_text())
    objs = [(i, o) for i, objs in enumerate(gt["objects"]) for o in objs if not o[1]]
    label = max({o[0] for _, o in objs}, key=lambda c: sum(o[0] == c for _, o in objs))
    mine = [(i, o) for i, o in objs if o[0] == label]
    with np.load(b / "detections.npz") as z:
        old = {k: z[k] for k in z.files}
    # The ground truth of one class added as score-1 detections (pixel boxes: the metric adds the det-file +1).
    np.savez(b / "detections.npz",
             image_index=np.r_[old["image_index"], [i for i, _ in mine]].astype(np.int32),
             labels=np.r_[old["labels"], [label] * len(mine)].astype(np.int8),
             scores=np.r_[old["scores"], np.ones(len(mine))].astype(np.float32),
             boxes=np.r_[old["boxes"], np.array([o[2:] for _, o in mine]) - 1].astype(np.float32))

    from bundles.refinedet.data import VOC_CLASSES

    r = compare_runs(a, b)
    (table,) = r.items
    assert table.title == "per-class AP (%)"
    assert table.differing[0].item == VOC_CLASSES[label - 1]
    assert len(table.differing) == 1 and table.identical == len(VOC_CLASSES) - 1
    assert table.differing[0].b > table.differing[0].a
    assert r.provenance == []  # a copy: same weights, backend, device
    text = render_comparison(r)
    assert f"| {VOC_CLASSES[label - 1]} | " in text and "1 differ, 19 identical" in text


def test_siamrpn_one_sequence_changed_is_named_first(demo_run, tmp_path):
    from bundles.siamrpn.bundle import BUNDLE, result_file
    from common.tracking.vot import INIT, TRACKED, Trajectory, init_box, write_trajectory

    a = demo_run("siamrpn")
    b = shutil.copytree(a, tmp_path / "b")
    dataset, _, gts, _ = BUNDLE._load_run(b)
    name = sorted(gts)[1]
    g = gts[name]
    flags = np.full(len(g.polygons), TRACKED, np.int8)
    flags[0] = INIT
    boxes = np.array([init_box(p) for p in g.polygons])
    boxes[0] = np.nan
    write_trajectory(result_file(b, dataset, name), Trajectory(flags, boxes))  # another trajectory: the oracle's

    r = compare_runs(a, b)
    tables = {t.title: t for t in r.items}
    acc = tables["per-sequence accuracy"]
    assert acc.differing[0].item == name and len(acc.differing) == 1 and acc.identical == len(gts) - 1
    out = CliRunner().invoke(compare_command, [str(a), str(b)])
    assert out.exit_code == 0, out.output
    body = out.output.split("## per-sequence accuracy")[1]
    assert body.split("\n| ")[2].startswith(f"{name} |"), body  # the first data row


def test_pamtri_one_query_changed_is_named_first(demo_run, tmp_path):
    from bundles.pamtri import data
    from bundles.pamtri.bundle import score_features

    a = demo_run("pamtri")
    b = shutil.copytree(a, tmp_path / "b")
    gt = data.read_ground_truth(b / "ground_truth.npz")
    qf, gf = np.load(b / "features_query.npy"), np.load(b / "features_gallery.npy")
    before = score_features(gt, qf, gf).ap
    # Move one query onto one of its gallery matches (distance 0): its AP changes, no other query's can.
    for q in np.flatnonzero(np.isfinite(before)):
        for g in np.flatnonzero((gt["gallery_pids"] == gt["query_pids"][q])
                                & (gt["gallery_camids"] != gt["query_camids"][q])):
            moved = qf.copy()
            moved[q] = gf[g]
            if score_features(gt, moved, gf).ap[q] != before[q]:
                break
        else:
            continue
        break
    np.save(b / "features_query.npy", moved)

    (table,) = compare_runs(a, b).items
    assert table.differing[0].item == f"{q}:{gt['query_names'][q]}"
    assert len(table.differing) == 1


@pytest.mark.slow  # the sa_siam demo (training included) takes about a minute
def test_sa_siam_one_sequence_changed_is_named_first(demo_run, tmp_path):
    a = demo_run("sa_siam")
    b = shutil.copytree(a, tmp_path / "b")
    gt = json.loads((b / "ground_truth.json").read_text())
    name = sorted(gt["sequences"])[0]
    np.savetxt(b / "results" / f"{name}.txt", np.asarray(gt["sequences"][name]), fmt="%.4f", delimiter=",")

    tables = {t.title: t for t in compare_runs(a, b).items}
    auc = tables["per-sequence OTB AUC"]
    assert auc.differing[0].item == name and len(auc.differing) == 1
    assert abs(auc.differing[0].b - 20 / 21) < 1e-9  # the ground truth as the result


def test_different_bundles_are_refused(demo_run):
    with pytest.raises(InputError, match="compare two runs of the same bundle"):
        compare_runs(demo_run("refinedet"), demo_run("pamtri"))


def test_not_a_run_directory_is_an_input_error(demo_run, tmp_path):
    with pytest.raises(InputError, match="no report.json"):
        compare_runs(demo_run("refinedet"), tmp_path)


def test_provenance_and_metric_differences_are_listed(demo_run, tmp_path):
    a = demo_run("refinedet")
    b = shutil.copytree(a, tmp_path / "b")
    report = json.loads((b / "report.json").read_text())
    report["backend"]["device"] = "npu:0"
    report["artifacts"]["weights"]["sha256"] = "f" * 64
    report["metrics"]["mAP"] += 1.5
    (b / "report.json").write_text(json.dumps(report))
    r = compare_runs(a, b)
    fields = {k for k, _, _ in r.provenance}
    assert {"backend.device", "weights sha256"} <= fields
    (m,) = [d for d in r.metrics if d.item == "mAP"]
    assert m.difference == pytest.approx(1.5)
    assert "| mAP | " in render_comparison(r) and "| weights sha256 | " in render_comparison(r)
