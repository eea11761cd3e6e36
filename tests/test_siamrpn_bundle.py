"""The siamrpn bundle end to end on a tiny synthetic VOT (2 sequences x 18 frames, 160x120) with random weights:
prepare -> predict (supervised protocol, per-sequence files) -> score from the run directory alone; resume after
an interruption; refusal to mix tracker values or to score a partial run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bundles.siamrpn.bundle import GROUND_TRUTH, SiamRPNBundle, result_file, time_file
from bundles.siamrpn.model import random_state_dict
from common.backends.torch_backend import TorchBackend
from common.errors import InputError
from common.tracking.data import make_synthetic_vot
from common.tracking.vot import FAILURE, INIT, SKIPPED, read_trajectory

pytestmark = pytest.mark.timeout(600)
FRAMES, SEQUENCES = 18, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("siamrpn")
    data = make_synthetic_vot(root / "VOT2016", sequences=SEQUENCES, frames=FRAMES, size=(160, 120), seed=1)
    weights = root / "w.pth"
    torch.save(random_state_dict(0), weights)
    bundle = SiamRPNBundle()
    model = bundle.build_model(weights)
    graphs = bundle.graphs(model)
    backends = {k: TorchBackend(graphs[k].module, graphs[k].io) for k in ("template", "search")}
    run_dir = root / "run"
    dataset = bundle.prepare(root, run_dir)
    stats = bundle.predict(dataset, backends, run_dir, batch_size=1)
    return bundle, backends, data, run_dir, dataset, stats


def test_predict_writes_per_sequence_results_and_score_reads_them(setup):
    bundle, _, _, run_dir, dataset, stats = setup
    assert dataset.name == "VOT2016" and [s.name for s in dataset.sequences] == ["synth00", "synth01"]
    assert stats.items == FRAMES * SEQUENCES and stats.extra["graphs"] == "split"
    for seq in ("synth00", "synth01"):
        traj = read_trajectory(result_file(run_dir, "VOT2016", seq))
        assert len(traj.flags) == FRAMES and traj.flags[0] == INIT
        for f in np.flatnonzero(traj.flags == FAILURE):  # protocol bookkeeping in the written file
            assert (traj.flags[f + 1:f + 5] == SKIPPED).all()
            if f + 5 < FRAMES:
                assert traj.flags[f + 5] == INIT
    metrics = bundle.score(run_dir)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["robustness"] >= 0 and np.isfinite(metrics["eao"])
    assert metrics["frames"] == FRAMES * SEQUENCES
    assert metrics["fps_per_card_x4"] == pytest.approx(4 * metrics["fps_per_chip"])
    assert 0 < metrics["preprocess_share"] < 1
    cfg = json.loads((run_dir / "tracker_config.json").read_text())
    assert cfg["published_run"] == "pth_vot_config" and cfg["tracker"]["penalty_k"] == 0.05


def test_score_uses_the_run_directory_alone(setup, tmp_path):
    bundle, _, data, run_dir, _, _ = setup
    copy = shutil.copytree(run_dir, tmp_path / "copy")
    assert bundle.score(copy) == bundle.score(run_dir)
    lines = bundle.summary_lines(copy, bundle.score(copy))
    assert any(line.startswith(f"| synth00 | {FRAMES} |") for line in lines)
    assert any("penalty_k 0.05" in line for line in lines)
    checks = bundle.demo_checks(copy, bundle.score(copy))
    assert all(c.passed for c in checks), [c.line() for c in checks]


def test_interrupted_run_resumes_per_sequence(setup, tmp_path):
    bundle, backends, _, run_dir, dataset, _ = setup
    copy = shutil.copytree(run_dir, tmp_path / "resume")
    before = result_file(copy, "VOT2016", "synth00").read_text()
    result_file(copy, "VOT2016", "synth01").unlink()  # as if killed while tracking synth01
    time_file(copy, "VOT2016", "synth01").unlink()
    stats = bundle.predict(dataset, backends, copy, batch_size=1)
    assert stats.extra["resumed_sequences"] == 1 and stats.items == FRAMES
    assert result_file(copy, "VOT2016", "synth00").read_text() == before
    # deterministic tracker: the re-tracked sequence equals the first run's
    assert result_file(copy, "VOT2016", "synth01").read_text() == result_file(run_dir, "VOT2016", "synth01").read_text()


def test_partial_run_reports_no_dataset_score(setup, tmp_path):
    bundle, _, _, run_dir, _, _ = setup
    copy = shutil.copytree(run_dir, tmp_path / "partial")
    result_file(copy, "VOT2016", "synth01").unlink()
    with pytest.raises(InputError, match="no result for 1 sequence.*synth01"):
        bundle.score(copy)


def test_other_tracker_values_refuse_an_existing_run_dir(setup, tmp_path):
    _, backends, _, run_dir, dataset, _ = setup
    copy = shutil.copytree(run_dir, tmp_path / "mixed")
    other = SiamRPNBundle()
    other.select_run("ascend310_defaults")
    with pytest.raises(InputError, match="tracker_config.json: run directory holds results of other tracker values"):
        other.predict(dataset, backends, copy, batch_size=1)


def test_checkpoint_with_wrong_keys_names_the_file(tmp_path):
    sd = random_state_dict(0)
    sd["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(InputError, match=r"bad.pth: keys do not match the model; 1 unexpected: backbone.extra.weight"):
        SiamRPNBundle().build_model(path)


def test_ground_truth_recorded_in_run_dir(setup):
    _, _, data, run_dir, _, _ = setup
    gt = json.loads((run_dir / GROUND_TRUTH).read_text())
    assert gt["dataset"] == "VOT2016" and gt["sequences"]["synth00"]["size"] == [160, 120]
    first = [float(v) for v in (data / "synth00" / "groundtruth.txt").read_text().splitlines()[0].split(",")]
    assert gt["sequences"]["synth00"]["polygons"][0] == first


def test_bad_dataset_is_refused_by_prepare(tmp_path, setup):
    bundle, _, data, _, _, _ = setup
    root = shutil.copytree(data, tmp_path / "VOT2016")
    (root / "synth01" / "color" / "00000004.jpg").unlink()
    with pytest.raises(InputError, match="synth01/color/00000004.jpg: sequence synth01: frame missing"):
        bundle.prepare(tmp_path, tmp_path / "run")


def test_published_run_name_reaches_the_tracker_through_the_pipeline(tmp_path):
    """`zoo eval/demo siamrpn --run ascend310_defaults` must track with that run's values (spec 8.3), and the run
    directory must record them."""
    import json as _json

    from common.pipeline import EvalOptions, evaluate

    out = tmp_path / "run"
    report = evaluate(EvalOptions(bundle="siamrpn", out_dir=out, demo=True, published_run="ascend310_defaults",
                                  limit=1, cache_dir=tmp_path / "cache"))
    used = _json.loads((out / "tracker_config.json").read_text())
    assert report.published_run == "ascend310_defaults"
    assert used["published_run"] == "ascend310_defaults"
    flat = _json.dumps(used)
    assert '"penalty_k": 0.04' in flat and '"window_influence": 0.44' in flat, flat
