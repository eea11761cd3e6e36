"""SA-Siam branch-training recipe (bundles/sa_siam/recipe.py): the seed's schedule and its loss metric, the
multi-process batch split, branch snapshots loading into the tracker model, and the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bundles.sa_siam.recipe import BranchModel, Recipe, SASiamTask, lr_at_epoch, seed_loss_metric
from common.errors import CheckpointError, InputError


def test_recipe_defaults_are_the_seed_config() -> None:
    r = Recipe()
    assert (r.epochs, r.examples_per_epoch, r.batch_size, r.steps_per_epoch) == (30, 53_200, 8, 6_650)
    assert r.epochs * r.steps_per_epoch == 199_500
    assert (r.lr, r.weight_decay, r.seed, r.log_every, r.max_frame_dist) == (0.01, 5e-4, 0, 10, 100)


def test_lr_boundary_is_step_166250() -> None:
    r = Recipe()
    boundary_epoch = 166_250 // r.steps_per_epoch  # TF staircase: 0.01 * 0.1 ** floor(step / (25 * 6650))
    assert boundary_epoch == 25 and 166_250 % r.steps_per_epoch == 0
    assert lr_at_epoch(r, 24) == 0.01 and lr_at_epoch(r, 25) == pytest.approx(0.001)
    assert lr_at_epoch(r, 29) == pytest.approx(0.001)


def test_seed_metric_is_the_mean_of_the_last_ten_printed_totals() -> None:
    # log lines at iterations 1, 11, 21, ... (the seed's 0-based steps 0, 10, 20, ...); the extra last-iteration
    # record (step 200) is not a seed line
    records = [{"step": 1 + 10 * i, "total_loss": 0.3 - 0.001 * i} for i in range(20)]
    records.append({"step": 200, "total_loss": 9.0})
    tail = [round(0.3 - 0.001 * i, 2) for i in range(10, 20)]
    assert seed_loss_metric(records) == pytest.approx(sum(tail) / 10)
    with pytest.raises(ValueError):
        seed_loss_metric(records[:5])


def test_global_batch_splits_over_processes(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    task = SASiamTask(Recipe())
    assert task.batch_size == 4 and task.grad_reduction == "mean" and task.grad_clip is None
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match="does not split"):
        SASiamTask(Recipe())


def test_semantic_branch_needs_caffenet() -> None:
    with pytest.raises(InputError, match="caffenet"):
        SASiamTask(Recipe(branch="semantic")).build_model()
    with pytest.raises(InputError, match="branch"):
        Recipe.with_overrides({"branch": "both"})


def test_plain_sgd_and_lr_by_epoch() -> None:
    task = SASiamTask(Recipe())
    model = task.build_model()
    assert isinstance(model, BranchModel) and all(k.startswith("appearance.") for k in model.state_dict())
    opt = task.configure(model, 0, None)
    assert opt.param_groups[0]["momentum"] == 0 and opt.param_groups[0]["lr"] == 0.01
    assert task.configure(model, 25, opt) is opt and opt.param_groups[0]["lr"] == pytest.approx(0.001)
    assert model.training


def test_branch_snapshots_load_into_the_tracker_model(tmp_path: Path) -> None:
    from bundles.sa_siam.bundle import BUNDLE

    task = SASiamTask(Recipe())
    app = task.build_model()
    path = tmp_path / "checkpoint_e30.pth"
    torch.save({"epoch": 30, "state_dict": app.state_dict(), "optimizer": {}}, path)
    model = BUNDLE.build_model(path)
    assert model.semantic is None
    assert torch.equal(model.state_dict()["appearance.conv1.weight"], app.state_dict()["appearance.conv1.weight"])
    sd = app.state_dict()
    del sd["appearance.conv3.weight"]
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="appearance.conv3.weight"):
        BUNDLE.build_model(tmp_path / "bad.pth")
    torch.save({"state_dict": {"semantic.c1x1_conv4.weight": torch.zeros(1)}}, tmp_path / "sem_only.pth")
    with pytest.raises(CheckpointError, match="appearance"):
        BUNDLE.build_model(tmp_path / "sem_only.pth")


def test_semantic_branch_trains_its_fusion_and_attention_only(tmp_path: Path) -> None:
    """--branch semantic with a (synthetic) caffenet.npy: the CaffeNet trunk is loaded and frozen, the 1x1 convs,
    attention FCs and bias learn, and the frozen trunk's L2 enters the logged total as a constant."""
    from bundles.sa_siam.caffenet import random_caffenet, save_caffenet_npy
    from bundles.sa_siam.data import build_imdb, curate_vid, make_synthetic_vid

    npy = save_caffenet_npy(tmp_path / "caffenet.npy", random_caffenet(1))
    curated = tmp_path / "curated"
    curate_vid(make_synthetic_vid(tmp_path / "raw", videos=2, frames=4), curated, workers=1, progress=False)
    build_imdb(curated)
    task = SASiamTask(Recipe.with_overrides({"branch": "semantic", "caffenet": str(npy), "data": str(curated),
                                             "examples_per_epoch": "8", "batch_size": "2"}))
    model = task.build_model()
    assert task.caffenet_sha256 and len(task.caffenet_sha256) == 64
    trunk_before = {k: v.clone() for k, v in model.semantic.trunk.state_dict().items()}
    opt = task.configure(model, 0, None)
    batch = torch.utils.data.default_collate([task.dataset()[i] for i in range(2)])
    losses = task.loss(model, batch)
    assert float(losses["total_loss"]) > float(losses["batch_loss"])  # + L2 (frozen trunk included)
    opt.zero_grad()
    losses["total_loss"].backward()
    opt.step()
    assert all(torch.equal(v, model.semantic.trunk.state_dict()[k]) for k, v in trunk_before.items())
    assert model.semantic.c1x1_conv4.weight.grad is not None and model.semantic.att_fc1_conv5.weight.grad is not None
    assert all(p.grad is None for p in model.semantic.trunk.parameters())


def test_two_branch_snapshots_in_a_folder_give_the_fused_tracker(tmp_path: Path) -> None:
    from bundles.sa_siam.bundle import BUNDLE, build_sa_siam

    full = build_sa_siam(None).state_dict()
    for branch in ("appearance", "semantic"):
        torch.save({"epoch": 30, "state_dict": {k: v for k, v in full.items() if k.startswith(f"{branch}.")}},
                   tmp_path / f"{branch}.pth")
    model = BUNDLE.build_model(tmp_path)
    assert model.semantic is not None and model.c_appearance == 0.3
    assert set(BUNDLE.graphs(model)) == {"exemplar", "search"}
    assert [t.name for t in BUNDLE.graphs(model)["search"].io.inputs] == ["search", "z_app", "z_sem"]


def test_zoo_curate_sa_siam(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bundles.sa_siam.data import make_synthetic_vid
    from common.cli import main

    raw = make_synthetic_vid(tmp_path / "raw", videos=2, frames=4)
    r = CliRunner().invoke(main, ["curate", "sa_siam", "--dataset", "vid", "--raw", str(raw), "--out",
                                  str(tmp_path / "cur"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cur" / "train_imdb.json").is_file()
    r = CliRunner().invoke(main, ["curate", "sa_siam", "--dataset", "coco", "--raw", str(raw), "--out",
                                  str(tmp_path / "cur")])
    assert r.exit_code != 0 and "vid" in str(r.exception)


def test_paper_row_without_the_semantic_branch_is_not_reproduced(tmp_path: Path) -> None:
    from bundles.sa_siam.bundle import BUNDLE, TRACKER_CONFIG

    (tmp_path / TRACKER_CONFIG).write_text(json.dumps({"branches": "appearance"}))
    BUNDLE.select_run("paper_otb2013")
    try:
        [check] = BUNDLE.extra_checks(tmp_path, {})
        assert not check.passed and "NOT reproduced" in check.detail
        (tmp_path / TRACKER_CONFIG).write_text(json.dumps({"branches": "both"}))
        assert BUNDLE.extra_checks(tmp_path, {})[0].passed
    finally:
        BUNDLE.select_run(None)


@pytest.mark.slow
def test_demo_trains_two_processes_and_tracks(demo_run) -> None:
    out = demo_run("sa_siam")
    assert "sa_siam: DEMO-PASS" in (out.parent / "sa_siam.log").read_text()
    report = json.loads((out / "report.json").read_text())
    names = [c["name"] for c in report["checks"]]
    assert any(n.startswith("loss falls on an overfit set") for n in names)
    assert any(n.startswith("backend parity") for n in names)
    assert (out / "otb_plot.png").stat().st_size > 10_000
    summary = json.loads((out / "train" / "appearance" / "training.json").read_text())
    assert summary["world_size"] == 2 and summary["completed"]
    assert summary["results"]["final_loss_mean10"] > 0
    assert {row["run"] for row in summary["results"]["compared_with"]} == {"npu1p_appearance_loss",
                                                                          "gpu1p_appearance_loss"}


def test_convert_dry_run_builds_both_tracker_graphs_for_atc(tmp_path: Path) -> None:
    """`zoo eval sa_siam --backend ais_bench` converts the two graphs like the inference bundles: the search OM
    keeps its 3 scales on the static axis 0."""
    from click.testing import CliRunner

    from common.cli import main

    r = CliRunner().invoke(main, ["convert", "sa_siam", "--om", "--dry-run", "--soc-version", "Ascend310P3",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("atc ")]
    assert len(lines) == 2
    assert "--input_shape=exemplar:1,3,255,255" in lines[0]
    assert "search:3,3,255,255;z_app:1,256,6,6;z_sem:1,256,8,8" in lines[1]
