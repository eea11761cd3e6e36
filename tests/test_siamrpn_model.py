"""SiamRPN++ r50 model: published keys and shapes, strict loading, geometry, split graphs, ONNX export and parity.

Facts from shared/specs/siamrpn.md sections 2-6 and 16 and the upstream key list bundles/siamrpn/upstream_keys.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import upstream_keys

from bundles.siamrpn.model import (
    KERNEL_NAMES,
    SearchBranch,
    TemplateBranch,
    graph_modules,
    random_state_dict,
    siamrpn_r50_l234,
    xcorr_depthwise,
)
from common.checkpoint import load_checkpoint
from common.errors import CheckpointError
from common.export import check_graph, export_onnx
from common.manifest import bundle_manifest
from common.upstream import UpstreamKeys

pytestmark = pytest.mark.timeout(600)

SPLIT_ATOL = 1e-4  # spec 16: split vs single within 1e-4 abs on logits (fp32)
ORT_ATOL = 2e-3  # ORT vs eager torch: different conv kernels / BN folding, logits O(10)


@pytest.fixture(scope="module")
def spec_keys() -> UpstreamKeys:
    """The upstream key list shipped with the bundle (bundles/siamrpn/upstream_keys.json)."""
    return upstream_keys("siamrpn")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return random_state_dict(0)


@pytest.fixture(scope="module")
def model(weights):
    return siamrpn_r50_l234(weights)


def _smooth(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(shape[0], shape[1], shape[2] // 16 + 1, shape[3] // 16 + 1, generator=gen)
    return F.interpolate(coarse, size=shape[2:], mode="bilinear", align_corners=False) * 255


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return _smooth((1, 3, 127, 127), 1), _smooth((1, 3, 255, 255), 2)


# -- keys -------------------------------------------------------------------------------------------------
def test_state_dict_keys_order_and_shapes_equal_the_published_list(spec_keys):
    sd = siamrpn_r50_l234().state_dict()
    assert list(sd) == spec_keys.keys  # same keys, upstream registration order
    assert {k: tuple(v.shape) for k, v in sd.items()} == spec_keys.shapes
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()} == spec_keys.dtypes
    assert len(sd) == 458
    nbt = [k for k in sd if k.endswith("num_batches_tracked")]
    assert nbt == spec_keys.num_batches_tracked and len(nbt) == 74
    floats = [k for k in sd if sd[k].is_floating_point()]
    assert len(floats) == 384
    params = sum(p.numel() for p in siamrpn_r50_l234().parameters())
    assert params == 53_950_624
    head = [k for k in sd if k.startswith("rpn_head.")]
    assert head[:2] == ["rpn_head.cls_weight", "rpn_head.loc_weight"]


def test_strict_load_round_trip_through_a_checkpoint_file(tmp_path, weights, model, inputs):
    path = tmp_path / "model.pth"
    torch.save(weights, path)
    loaded = siamrpn_r50_l234(load_checkpoint(path), source=str(path))
    with torch.inference_mode():
        a = model(*inputs)
        b = loaded(*inputs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_wrapped_prefixed_checkpoint_without_bn_counters_loads(weights):
    plain = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    wrapped = {"state_dict": {f"module.{k}": v for k, v in plain.items()}}
    m = siamrpn_r50_l234(wrapped)
    assert torch.equal(m.rpn_head.cls_weight, weights["rpn_head.cls_weight"])


def test_wrong_keys_are_refused_with_a_list(weights):
    bad = dict(weights)
    bad["backbone.layer9.weight"] = torch.zeros(1)
    del bad["neck.downsample3.downsample.0.weight"]
    bad["rpn_head.cls_weight"] = torch.zeros(4)
    with pytest.raises(CheckpointError) as err:
        siamrpn_r50_l234(bad, source="bad.pth")
    msg = str(err.value)
    assert "bad.pth" in msg
    assert "missing: neck.downsample3.downsample.0.weight" in msg
    assert "unexpected: backbone.layer9.weight" in msg
    assert "rpn_head.cls_weight: checkpoint (4,) vs model (3,)" in msg


def test_torchvision_style_resnet_keys_are_refused():
    # torchvision ResNet-50: 1x1 downsamples and an fc head -> shape errors and unexpected keys, never a silent load.
    m = siamrpn_r50_l234().state_dict()
    tv = {k: v for k, v in m.items()}
    tv["backbone.layer2.0.downsample.0.weight"] = torch.zeros(512, 256, 1, 1)
    tv["backbone.fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(CheckpointError, match=r"wrong shape.*layer2\.0\.downsample\.0\.weight"):
        siamrpn_r50_l234(tv)


# -- geometry and math ------------------------------------------------------------------------------------
def test_feature_sizes_follow_the_spec(model, inputs):
    z, x = inputs
    with torch.inference_mode():
        bz, bx = model.backbone(z), model.backbone(x)
        assert [tuple(f.shape[1:]) for f in bz] == [(512, 15, 15), (1024, 15, 15), (2048, 15, 15)]
        assert [tuple(f.shape[1:]) for f in bx] == [(512, 31, 31), (1024, 31, 31), (2048, 31, 31)]
        assert [tuple(f.shape[1:]) for f in model.neck(bz)] == [(256, 7, 7)] * 3  # 15 -> centre crop [4, 11)
        assert [tuple(f.shape[1:]) for f in model.neck(bx)] == [(256, 31, 31)] * 3
        cls, loc = model(z, x)
    assert tuple(cls.shape) == (1, 10, 25, 25) and tuple(loc.shape) == (1, 20, 25, 25)
    assert torch.isfinite(cls).all() and torch.isfinite(loc).all()


def test_neck_crop_is_the_centre_7x7(model):
    layer = model.neck.downsample2
    x = torch.randn(1, 512, 15, 15)
    with torch.inference_mode():
        assert torch.equal(layer(x), layer.downsample(x)[:, :, 4:11, 4:11])


def test_xcorr_depthwise_equals_a_literal_loop():
    gen = torch.Generator().manual_seed(3)
    s, k = torch.randn(2, 3, 9, 8, generator=gen), torch.randn(2, 3, 3, 2, generator=gen)
    out = xcorr_depthwise(s, k)
    ref = torch.zeros(2, 3, 7, 7)
    for b in range(2):
        for c in range(3):
            for i in range(7):
                for j in range(7):  # cross-correlation: no kernel flip
                    ref[b, c, i, j] = (s[b, c, i:i + 3, j:j + 2] * k[b, c]).sum()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fusion_uses_the_softmax_of_the_learned_weights(weights, inputs):
    m = siamrpn_r50_l234(weights)
    z, x = inputs
    with torch.inference_mode():
        zf, xf = m.features(z), m.features(x)
        per_level = [getattr(m.rpn_head, f"rpn{lvl}").cls(a, b) for lvl, a, b in zip((2, 3, 4), zf, xf, strict=True)]
        w = torch.softmax(weights["rpn_head.cls_weight"], 0)
        expected = sum(wi * c for wi, c in zip(w, per_level, strict=True))
        cls, _ = m.rpn_head(zf, xf)
    torch.testing.assert_close(cls, expected, atol=1e-4, rtol=1e-5)
    # a plain mean is a different model: it differs by a sizeable fraction of the logits' scale
    assert (cls - sum(per_level) / 3).abs().max() > 0.05 * cls.abs().max()


def test_split_branches_equal_the_single_graph(model, inputs):
    z, x = inputs
    with torch.inference_mode():
        cls, loc = model(z, x)
        kernels = TemplateBranch(model)(z)
        assert len(kernels) == len(KERNEL_NAMES) and all(tuple(k.shape) == (1, 256, 5, 5) for k in kernels)
        cls2, loc2 = SearchBranch(model)(x, *kernels)
    assert (cls - cls2).abs().max() <= SPLIT_ATOL and (loc - loc2).abs().max() <= SPLIT_ATOL


# -- ONNX -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_files(model, tmp_path_factory) -> dict[str, Path]:
    man = bundle_manifest("siamrpn")
    ios = {"model": man.model, **man.graphs}
    out = tmp_path_factory.mktemp("siamrpn_onnx")
    return {name: export_onnx(mod, ios[name], out / f"{name}.onnx") for name, mod in graph_modules(model).items()}


def test_onnx_graphs_have_the_manifest_names_shapes_and_opset(onnx_files):
    man = bundle_manifest("siamrpn")
    assert set(onnx_files) == {"model", "template", "search"}
    for name, io in {"model": man.model, **man.graphs}.items():
        proto = check_graph(onnx_files[name], io)
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [11]
    single = onnx.load(str(onnx_files["model"]), load_external_data=False)
    assert [i.name for i in single.graph.input] == ["template", "search"]
    assert [o.name for o in single.graph.output] == ["cls", "loc"]


def _ort(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnxruntime_matches_torch_and_split_matches_single(onnx_files, model, inputs):
    z, x = inputs
    with torch.inference_mode():
        cls_t, loc_t = (t.numpy() for t in model(z, x))
    zn, xn = z.numpy(), x.numpy()
    cls_o, loc_o = _ort(onnx_files["model"]).run(["cls", "loc"], {"template": zn, "search": xn})
    kernels = _ort(onnx_files["template"]).run(list(KERNEL_NAMES), {"template": zn})
    feeds = {"search": xn, **dict(zip(KERNEL_NAMES, kernels, strict=True))}
    cls_s, loc_s = _ort(onnx_files["search"]).run(["cls", "loc"], feeds)
    np.testing.assert_allclose(cls_o, cls_t, atol=ORT_ATOL, rtol=1e-4)
    np.testing.assert_allclose(loc_o, loc_t, atol=ORT_ATOL, rtol=1e-4)
    assert np.abs(cls_s - cls_o).max() <= SPLIT_ATOL and np.abs(loc_s - loc_o).max() <= SPLIT_ATOL
