"""SiamRPN++ training recipe (bundles/siamrpnpp/recipe.py, loss.py): the LR of every epoch against the spec's
table, freeze / BN modes by epoch, the epoch-10 optimizer rebuild, losses on hand cases (including upstream's
single-anchor quirk), the pretrained-backbone loader, and the whole demo (2 processes, resume, snapshot
evaluated) end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bundles.siamrpn.model import SiamRPN
from bundles.siamrpnpp.loss import cls_loss, loc_loss, total_loss
from bundles.siamrpnpp.recipe import (
    Recipe,
    SiamRPNPPTask,
    apply_freeze,
    build_optimizer,
    load_pretrained_backbone,
    lr_at_epoch,
)
from common.errors import CheckpointError, InputError

# shared/specs/siamrpnpp_training.md section 3: head/neck LR per epoch, as published (6 significant digits)
SPEC_LR = [0.001, 0.00137973, 0.00190365, 0.00262653, 0.0036239, 0.005, 0.00424171, 0.00359843, 0.0030527,
           0.00258974, 0.00219699, 0.0018638, 0.00158114, 0.00134135, 0.00113792, 0.000965349, 0.000818947,
           0.000694748, 0.000589384, 0.0005]


def test_lr_of_every_epoch_matches_the_spec_table() -> None:
    r = Recipe()
    for epoch, want in enumerate(SPEC_LR):
        assert lr_at_epoch(r, epoch) == pytest.approx(want, rel=5e-6), epoch
    with pytest.raises(ValueError):
        lr_at_epoch(r, 20)


def test_recipe_defaults_are_the_8gpu_config() -> None:
    r = Recipe()
    assert (r.epochs, r.batch_size, r.base_lr, r.momentum, r.weight_decay) == (20, 28, 0.005, 0.9, 1e-4)
    assert (r.grad_clip, r.cls_weight, r.loc_weight, r.neg, r.videos_per_epoch) == (10.0, 1.0, 1.2, 0.2, 600_000)
    assert (r.backbone_train_epoch, r.backbone_train_layers, r.layers_lr) == (10, ("layer2", "layer3", "layer4"), 0.1)
    # 12,000,000 // 20 // (28 x 8) iterations per epoch
    assert r.videos_per_epoch * r.epochs // r.epochs // (r.batch_size * 8) == 2678


@pytest.fixture(scope="module")
def model() -> SiamRPN:
    return SiamRPN()


def _bn_modes(module: nn.Module) -> set[bool]:
    return {m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("epoch", [0, 9])
def test_frozen_phase(model: SiamRPN, epoch: int) -> None:
    apply_freeze(model, Recipe(), epoch)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert _bn_modes(model.backbone) == {False}
    assert _bn_modes(model.neck) == {True} and _bn_modes(model.rpn_head) == {True}
    assert all(p.requires_grad for p in model.neck.parameters())
    opt = build_optimizer(model, Recipe())
    assert [g["name"] for g in opt.param_groups] == ["backbone", "neck", "rpn_head"]
    assert opt.param_groups[0]["params"] == []


@pytest.mark.parametrize("epoch", [10, 19])
def test_unfrozen_phase(model: SiamRPN, epoch: int) -> None:
    apply_freeze(model, Recipe(), epoch)
    b = model.backbone
    for name in ("layer2", "layer3", "layer4"):
        assert all(p.requires_grad for p in getattr(b, name).parameters())
        assert _bn_modes(getattr(b, name)) == {True}
    for part in (b.conv1, b.bn1, b.layer1):
        assert not any(p.requires_grad for p in part.parameters())
    assert _bn_modes(b.layer1) == {False} and not b.bn1.training
    opt = build_optimizer(model, Recipe())
    n = sum(1 for name in ("layer2", "layer3", "layer4") for _ in getattr(b, name).parameters())
    assert len(opt.param_groups[0]["params"]) == n


def test_train_call_is_undone_by_configure(model: SiamRPN) -> None:
    task = SiamRPNPPTask(Recipe())
    model.train()  # e.g. something calling train() between epochs
    opt = task.configure(model, 3, None)
    assert _bn_modes(model.backbone) == {False}
    assert opt.param_groups[1]["lr"] == pytest.approx(SPEC_LR[3], rel=5e-6)


def test_optimizer_rebuilt_at_epoch_10_with_momentum_reset(model: SiamRPN) -> None:
    task = SiamRPNPPTask(Recipe())
    opt = task.configure(model, 9, None)
    p = next(model.neck.parameters())
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["momentum_buffer"] is not None
    same = task.configure(model, 9, opt)
    assert same is opt
    rebuilt = task.configure(model, 10, opt)
    assert rebuilt is not opt and len(rebuilt.state) == 0  # momentum restarts from zero
    lrs = {g["name"]: g["lr"] for g in rebuilt.param_groups}
    assert lrs["neck"] == pytest.approx(0.00219699, rel=5e-6)
    assert lrs["backbone"] == pytest.approx(0.000219699, rel=5e-6)
    later = task.configure(model, 11, rebuilt)
    assert later is rebuilt


def test_ascend_port_optimizer_is_built_once(model: SiamRPN) -> None:
    task = SiamRPNPPTask(Recipe(optimizer="ascend_port"))
    opt = task.configure(model, 0, None)
    assert len(opt.param_groups[0]["params"]) == len(list(model.backbone.parameters()))
    assert task.configure(model, 10, opt) is opt


# -- losses -------------------------------------------------------------------------------------------------
def _labels(b: int = 1) -> torch.Tensor:
    return torch.full((b, 5, 25, 25), -1, dtype=torch.long)


def test_cls_loss_hand_case() -> None:
    cls = torch.zeros(1, 10, 25, 25)
    label = _labels()
    label[0, 0, 3, 4] = label[0, 2, 10, 10] = 1
    label[0, 1, 0, 0] = label[0, 4, 24, 24] = label[0, 3, 5, 5] = 0
    cls[0, 5 + 2, 10, 10] = 2.0  # foreground logit of anchor 2: channel 5 + 2 (class-major layout)
    ln2 = math.log(2.0)
    pos = 0.5 * (ln2 + math.log1p(math.exp(-2.0)))
    assert float(cls_loss(cls, label)) == pytest.approx(0.5 * pos + 0.5 * ln2, rel=1e-6)


def test_cls_term_is_zero_with_exactly_one_selected_anchor() -> None:
    """Upstream's index selection drops a class term when exactly one anchor of it is selected (spec 15.1)."""
    cls = torch.zeros(2, 10, 25, 25)
    label = _labels(2)
    label[1, 0, 7, 7] = 1  # one positive in the whole batch
    label[0, 1, 1, 1] = label[1, 1, 2, 2] = 0  # two negatives
    assert float(cls_loss(cls, label)) == pytest.approx(0.5 * math.log(2.0), rel=1e-6)
    label[0, 1, 1, 1] = -1  # now one negative too: both terms vanish
    assert float(cls_loss(cls, label)) == 0.0
    assert float(cls_loss(cls, _labels(2))) == 0.0


def test_loc_loss_hand_case() -> None:
    loc = torch.zeros(2, 20, 25, 25)
    target = torch.zeros(2, 4, 5, 25, 25)
    weight = torch.zeros(2, 5, 25, 25)
    target[0, :, 1, 6, 6] = torch.tensor([1.0, -2.0, 3.0, 4.0])  # |diff| sum 10 at anchor 1 of sample 0
    weight[0, 1, 6, 6] = 1.0
    target[1, :, 0, 0, 0] = 1.0  # weight 0: ignored
    assert float(loc_loss(loc, target, weight)) == pytest.approx(10.0 / 2)
    loc[0, 1 * 5 + 1, 6, 6] = -2.0  # channel = coordinate * 5 + anchor: removes the -2 difference
    assert float(loc_loss(loc, target, weight)) == pytest.approx(8.0 / 2)
    out = total_loss(torch.zeros(2, 10, 25, 25), loc, {"label_cls": _labels(2), "label_loc": target,
                                                        "label_loc_weight": weight}, cls_weight=1.0, loc_weight=1.2)
    assert float(out["total_loss"]) == pytest.approx(1.2 * 4.0)


# -- pretrained backbone --------------------------------------------------------------------------------------
def test_pretrained_backbone_loads_strictly(tmp_path: Path, model: SiamRPN) -> None:
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.backbone.state_dict().items()}
    good = tmp_path / "resnet50.model"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()} | {"fc.weight": torch.zeros(1000, 2048)}},
               good)
    fresh = SiamRPN()
    digest = load_pretrained_backbone(fresh, good)
    assert len(digest) == 64
    assert torch.equal(fresh.backbone.layer2[0].downsample[0].weight, sd["layer2.0.downsample.0.weight"])

    missing = tmp_path / "missing.model"
    torch.save({k: v for k, v in sd.items() if k != "layer3.2.conv2.weight"}, missing)
    with pytest.raises(CheckpointError, match="layer3.2.conv2.weight"):
        load_pretrained_backbone(SiamRPN(), missing)

    whole = tmp_path / "model.pth"  # the Ascend README's rename: a whole-tracker checkpoint
    torch.save({f"backbone.{k}": v for k, v in sd.items()}, whole)
    with pytest.raises(CheckpointError, match="backbone.' prefix"):
        load_pretrained_backbone(SiamRPN(), whole)


def test_recipe_overrides_are_typed_and_checked() -> None:
    r = Recipe.with_overrides({"epochs": "3", "warmup_epochs": "1", "base_lr": "0.01",
                               "backbone_train_layers": "layer3,layer4"})
    assert (r.epochs, r.base_lr, r.backbone_train_layers) == (3, 0.01, ("layer3", "layer4"))
    with pytest.raises(InputError, match="unknown recipe key 'epoch'"):
        Recipe.with_overrides({"epoch": "3"})
    with pytest.raises(InputError, match="batch_size"):
        Recipe.with_overrides({"batch_size": "many"})
    with pytest.raises(InputError, match="optimizer"):
        Recipe.with_overrides({"optimizer": "adam"})


# -- the demo end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_trains_two_processes_resumes_and_evaluates(demo_run) -> None:
    out = demo_run("siamrpnpp")
    assert "siamrpnpp: DEMO-PASS" in (out.parent / "siamrpnpp.log").read_text()
    report = json.loads((out / "report.json").read_text())
    names = [c["name"] for c in report["checks"]]
    assert any(n.startswith("2-process step == 1-process step") for n in names)
    assert any(n.startswith("resume == uninterrupted") for n in names)
    train = out / "train" / "uninterrupted"
    summary = json.loads((train / "training.json").read_text())
    assert summary["world_size"] == 2 and summary["completed"]
    assert sorted(summary["snapshots"]) == ["checkpoint_e1.pth", "checkpoint_e2.pth", "checkpoint_e3.pth"]
    assert (train / "train_plot.png").stat().st_size > 10_000
    log = [json.loads(x) for x in (train / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 2, 3, 4, 5, 6]
    assert {"total_loss", "cls_loss", "loc_loss", "lr_neck", "pairs_per_s", "data_wait_s"} <= log[0].keys()
    assert report["artifacts"]["weights"]["path"].endswith("checkpoint_e3.pth")


# -- snapshot evaluation -------------------------------------------------------------------------------------
def test_epoch_ranges_and_missing_snapshots_are_named(tmp_path: Path) -> None:
    from common.errors import ZooError
    from common.pipeline import parse_epochs, snapshot_files

    assert parse_epochs("11-13,19,20") == [11, 12, 13, 19, 20]
    with pytest.raises(ZooError, match="--epochs"):
        parse_epochs("11-x")
    (tmp_path / "snapshot").mkdir()
    (tmp_path / "snapshot" / "checkpoint_e11.pth").write_bytes(b"")
    with pytest.raises(InputError, match="checkpoint_e12.pth"):
        snapshot_files(tmp_path, [11, 12])


@pytest.mark.slow
def test_eval_epochs_writes_a_snapshot_table(tmp_path: Path) -> None:
    """Two upstream-format snapshots through `zoo eval --epochs` on one synthetic VOT sequence: a report per
    snapshot (verdict vs the 8p e19 row, tracker values recorded) and the table."""
    from bundles.siamrpn.model import random_state_dict
    from common.tracking.data import make_synthetic_vot

    snaps = tmp_path / "train" / "snapshot"
    snaps.mkdir(parents=True)
    for e in (19, 20):
        torch.save({"epoch": e, "state_dict": random_state_dict(e), "optimizer": {}}, snaps / f"checkpoint_e{e}.pth")
    data = make_synthetic_vot(tmp_path / "VOT2016", sequences=1, frames=12, seed=1)
    r = subprocess.run([sys.executable, "-m", "common", "eval", "siamrpnpp", "--weights", str(tmp_path / "train"),
                        "--epochs", "19-20", "--data", str(data), "--out", str(tmp_path / "out"),
                        "--cache", str(tmp_path / "cache")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stdout + r.stderr  # random weights cannot meet the published row
    table = json.loads((tmp_path / "out" / "snapshots.json").read_text())
    assert table["published_run"] == "npu8p_e19_torch18"
    assert [row["epoch"] for row in table["rows"]] == [19, 20]
    for e in (19, 20):
        cfg = json.loads((tmp_path / "out" / f"e{e}" / "tracker_config.json").read_text())
        assert cfg["tracker"]["penalty_k"] == 0.04 and cfg["tracker"]["lr"] == 0.33
    assert "| e19" in (tmp_path / "out" / "snapshots.md").read_text()


def test_zoo_curate_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bundles.siamrpnpp.synthetic import make_synthetic_raw
    from common.cli import main

    raw = make_synthetic_raw(tmp_path / "raw")
    r = CliRunner().invoke(main, ["curate", "siamrpnpp", "--dataset", "coco", "--raw", str(raw["coco"]), "--out",
                                  str(tmp_path / "td"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "coco:" in r.output and (tmp_path / "td" / "coco" / "train2017.json").is_file()
    r = CliRunner().invoke(main, ["curate", "siamrpn", "--dataset", "coco", "--raw", str(raw["coco"]), "--out",
                                  str(tmp_path / "td")])
    assert r.exit_code != 0 and "inference bundle" in str(r.exception)
