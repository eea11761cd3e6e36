"""SA-Siam network, loss and CaffeNet conversion: geometry, group splits, feature-level crops, attention, label map,
loss and L2 on hand cases, safe caffenet.npy reading, ONNX export + ONNX Runtime parity of both inference graphs.

Facts from shared/specs/sa_siam.md sections 2-7 (expected values are written out here, never read from the spec).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bundles.sa_siam.caffenet import load_caffenet_npy, random_caffenet, save_caffenet_npy
from bundles.sa_siam.loss import balanced_logistic_loss, l2_regularisation, label_map
from bundles.sa_siam.model import (
    APPEARANCE_TF_VARIABLES,
    SEMANTIC_TF_VARIABLES,
    TF_VARIABLES,
    AppearanceBranch,
    ExemplarGraph,
    SASiam,
    SearchGraph,
    SemanticBranch,
    exemplar_borders,
    graph_io,
    grid_max,
    state_dict_from_tf,
)
from common.checkpoint import random_state_dict
from common.errors import CheckpointError

pytestmark = pytest.mark.timeout(600)

# HWIO shapes of CaffeNet (spec 4.2), written out independently of the module under test
CAFFENET_HWIO = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
                 "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256)}


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope="module")
def caffenet_file(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    layers = random_caffenet(0)
    layers["fc8"] = {"weights": np.zeros((4, 3), np.float32), "biases": np.zeros(3, np.float32)}  # skipped
    path = save_caffenet_npy(tmp_path_factory.mktemp("caffenet") / "caffenet.npy", layers)
    return path, layers


@pytest.fixture(scope="module")
def appearance() -> AppearanceBranch:
    torch.manual_seed(0)
    app = AppearanceBranch()
    app.load_state_dict(random_state_dict(app, seed=1))  # non-trivial BN statistics for eval-mode checks
    with torch.no_grad():
        app.bias.fill_(0.25)
    return app.eval()


@pytest.fixture(scope="module")
def semantic(caffenet_file) -> SemanticBranch:
    torch.manual_seed(1)
    sem = SemanticBranch()
    sem.trunk.load_state_dict(load_caffenet_npy(caffenet_file[0]))
    with torch.no_grad():  # non-zero biases so that padding-with-zeros (not bias) is visible
        sem.c1x1_conv4.bias.uniform_(0.5, 1.0)
        sem.c1x1_conv5.bias.uniform_(0.5, 1.0)
        sem.bias.fill_(-0.5)
    return sem.eval()


# -- geometry -----------------------------------------------------------------------------------------------
@torch.no_grad()
def test_training_geometry_239(appearance, semantic):
    z, x = _images(2, 239, 0), _images(2, 239, 1)
    assert appearance.exemplar(z).shape == (2, 256, 6, 6)
    assert appearance.search(x).shape == (2, 256, 20, 20)
    assert semantic.exemplar(z).shape == (2, 256, 8, 8)
    assert semantic.search(x).shape == (2, 256, 22, 22)
    c4, c5 = semantic.trunk(x)
    assert c4.shape == (2, 384, 22, 22) and c5.shape == (2, 256, 20, 20)
    assert appearance(z, x).shape == (2, 1, 15, 15)
    assert semantic(z, x).shape == (2, 1, 15, 15)


@torch.no_grad()
def test_inference_geometry_255_and_fusion(appearance, semantic):
    model = SASiam(appearance, semantic).eval()
    assert model.c_appearance == 0.3
    z, x = _images(1, 255, 2), _images(3, 255, 3)
    feats = model.exemplar_features(z)
    assert feats["z_app"].shape == (1, 256, 6, 6) and feats["z_sem"].shape == (1, 256, 8, 8)
    assert appearance.search(x).shape == (3, 256, 22, 22) and semantic.search(x).shape == (3, 256, 24, 24)
    r = model.respond(x, feats)
    assert r.shape == (3, 1, 17, 17)
    # the one template broadcast over the 3 scales == each search crop paired with its own copy
    z3 = z.expand(3, -1, -1, -1)
    r_app, r_sem = appearance(z3, x), semantic(z3, x)
    torch.testing.assert_close(r, 0.3 * r_app + 0.7 * r_sem, rtol=1e-5, atol=1e-5 * float(r.abs().max()))
    app_only = SASiam(appearance).eval()
    assert set(app_only.exemplar_features(z)) == {"z_app"}
    torch.testing.assert_close(app_only.respond(x, {"z_app": feats["z_app"]}), r_app,
                               rtol=1e-5, atol=1e-5 * float(r_app.abs().max()))


def test_xcorr_is_per_sample_scaled_and_biased():
    app = AppearanceBranch()
    with torch.no_grad():
        app.bias.fill_(0.5)
    z, x = torch.randn(2, 256, 6, 6), torch.randn(2, 256, 8, 8)
    r = app.match(z, x)
    assert r.shape == (2, 1, 3, 3)
    expected = 1e-3 * (x[1, :, 1:7, 2:8] * z[1]).sum() + 0.5  # sample 1, output cell (1, 2)
    torch.testing.assert_close(r[1, 0, 1, 2], expected, rtol=1e-5, atol=1e-6)


# -- group splits and upstream variables ----------------------------------------------------------------------
def test_tf_variable_map_covers_every_key(appearance, semantic):
    assert set(APPEARANCE_TF_VARIABLES) == set(appearance.state_dict())
    assert set(SEMANTIC_TF_VARIABLES) == set(semantic.state_dict())
    assert set(TF_VARIABLES) == set(SASiam(appearance, semantic).state_dict())
    assert APPEARANCE_TF_VARIABLES["conv2.weight"] == ("sa_siam/appearance_net/conv2/b1/weights",
                                                       "sa_siam/appearance_net/conv2/b2/weights")
    assert APPEARANCE_TF_VARIABLES["bn1.running_var"] == ("sa_siam/appearance_net/conv1/BatchNorm/moving_variance",)
    assert SEMANTIC_TF_VARIABLES["c1x1_conv4.weight"] == ("sa_siam/semantic_net/c1x1_conv4/weights",)
    assert APPEARANCE_TF_VARIABLES["bias"] == SEMANTIC_TF_VARIABLES["bias"] == ("detection/biases",)


def test_grouped_convs_equal_upstream_b1_b2_split():
    """Build TF-layout b1/b2 variables, convert them with TF_VARIABLES, and compare our grouped conv (+ BN) with the
    upstream computation: split the input channels, conv each half with its HWIO kernel, concatenate."""
    rng = np.random.default_rng(0)
    app = AppearanceBranch()
    variables = {}
    for key, names in APPEARANCE_TF_VARIABLES.items():
        shape = tuple(app.state_dict()[key].shape)
        for n in names:
            if key.endswith("weight") and key.startswith("conv"):
                o, i, h, w = shape
                half = (h, w, i, o // len(names))  # HWIO of one group
            else:
                half = (shape[0] // len(names),)
            a = rng.standard_normal(half).astype(np.float32)
            variables[n] = np.abs(a) + 0.5 if n.endswith("moving_variance") else a
    app.load_state_dict(state_dict_from_tf(variables, APPEARANCE_TF_VARIABLES))
    app.eval()

    def tf_conv(y: torch.Tensor, hwio: np.ndarray) -> torch.Tensor:  # NCHW input, HWIO kernel, VALID
        return F.conv2d(y, torch.from_numpy(hwio).permute(3, 2, 0, 1))

    def tf_bn(y: torch.Tensor, scope: str) -> torch.Tensor:
        v = {k: torch.from_numpy(variables[f"{scope}/BatchNorm/{k}"])[None, :, None, None]
             for k in ("gamma", "beta", "moving_mean", "moving_variance")}
        return (y - v["moving_mean"]) / torch.sqrt(v["moving_variance"] + 1.001e-5) * v["gamma"] + v["beta"]

    s = "sa_siam/appearance_net"
    y = torch.randn(2, 96, 9, 9)
    halves = [tf_bn(tf_conv(y[:, 48 * g:48 * (g + 1)], variables[f"{s}/conv2/b{g + 1}/weights"]), f"{s}/conv2/b{g + 1}")
              for g in range(2)]
    with torch.no_grad():
        torch.testing.assert_close(app.bn2(app.conv2(y)), torch.cat(halves, 1), rtol=1e-4, atol=1e-4)
        y5 = torch.randn(2, 384, 5, 5)
        halves = [tf_conv(y5[:, 192 * g:192 * (g + 1)], variables[f"{s}/conv5/b{g + 1}/weights"])
                  + torch.from_numpy(variables[f"{s}/conv5/b{g + 1}/biases"])[None, :, None, None] for g in range(2)]
        torch.testing.assert_close(app.conv5(y5), torch.cat(halves, 1), rtol=1e-4, atol=1e-4)
        assert app.bn4.eps == pytest.approx(1.001e-5) and app.bn4.momentum == pytest.approx(0.05)


def test_appearance_init_is_slim_xavier():
    app = AppearanceBranch()
    # per-group fans: a conv2 half is [5,5,48,128] -> bound sqrt(6 / (25*48 + 25*128))
    bound = math.sqrt(6 / (25 * 48 + 25 * 128))
    w = app.conv2.weight.detach()
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
    assert torch.all(app.bn1.weight == 1) and torch.all(app.bn1.bias == 0)
    assert torch.all(app.conv5.bias == 0) and torch.all(app.bias == 0)


# -- feature-level exemplar crops and attention -----------------------------------------------------------------
@pytest.mark.parametrize("width,size,borders", [
    (20, 6, (0, 7, 13, 20)), (22, 8, (0, 7, 15, 22)),  # 239 input: conv5, conv4
    (22, 6, (0, 8, 14, 22)), (24, 8, (0, 8, 16, 24)),  # 255 input
])
def test_exemplar_borders_table(width, size, borders):
    assert exemplar_borders(width, size) == borders


@torch.no_grad()
@pytest.mark.parametrize("size,lo", [(239, 7), (255, 8)])
def test_appearance_exemplar_is_conv5_centre_crop(appearance, size, lo):
    z = _images(1, size, 4)
    torch.testing.assert_close(appearance.exemplar(z), appearance.features(z)[:, :, lo:lo + 6, lo:lo + 6])


def test_grid_max_is_row_major():
    f = torch.zeros(1, 2, 22, 22)
    f[0, 0, 3, 20] = 5.0  # row cell 0, column cell 2 -> index 2 (top-right)
    f[0, 0, 20, 3] = 7.0  # row cell 2, column cell 0 -> index 6 (bottom-left)
    f[0, 1, 10, 10] = 3.0  # centre -> index 4
    g = grid_max(f, (0, 7, 15, 22))
    assert g.shape == (1, 2, 9)
    assert g[0, 0].tolist() == [0, 0, 5, 0, 0, 0, 7, 0, 0]
    assert g[0, 1].tolist() == [0, 0, 0, 0, 3, 0, 0, 0, 0]


@torch.no_grad()
def test_attention_range(semantic):
    feat = torch.rand(2, 256, 22, 22, generator=torch.Generator().manual_seed(5)) * 4
    xi = semantic.attention("conv5", feat, (0, 8, 14, 22))
    assert xi.shape == (2, 256)
    assert float(xi.min()) > 0.5 and float(xi.max()) < 1.5 and float(xi.std()) > 0
    _, c5 = semantic.trunk(_images(2, 255, 5))  # large raw activations may saturate fp32's sigmoid: closed range
    xi = semantic.attention("conv5", c5, (0, 8, 14, 22))
    assert float(xi.min()) >= 0.5 and float(xi.max()) <= 1.5
    strong = SemanticBranch()
    strong.att_fc2_conv4.weight.fill_(1e3)  # saturate the sigmoid both ways: the range is still [0.5, 1.5]
    strong.att_fc2_conv4.bias.fill_(-1e3 * 0.5)
    strong.att_fc1_conv4.weight.copy_(torch.eye(9))
    feat = torch.zeros(1, 2, 24, 24)
    feat[0, 1] = 10.0
    xi = strong.attention("conv4", feat, (0, 8, 16, 24))
    assert xi[0, 0] == pytest.approx(0.5) and xi[0, 1] == pytest.approx(1.5)


@torch.no_grad()
def test_semantic_exemplar_composition(semantic):
    """Attention on the raw feature, crop, x0.1 (conv4 only), 1x1, conv5 part zero-padded (not bias-filled)."""
    z = _images(1, 239, 6)
    out = semantic.exemplar(z)
    c4, c5 = semantic.trunk(z)
    xi4 = semantic.attention("conv4", c4, (0, 7, 15, 22))
    xi5 = semantic.attention("conv5", c5, (0, 7, 13, 20))
    e4 = semantic.c1x1_conv4(0.1 * (c4 * xi4[:, :, None, None])[:, :, 7:15, 7:15])
    e5 = semantic.c1x1_conv5((c5 * xi5[:, :, None, None])[:, :, 7:13, 7:13])
    tol = 1e-5 * float(out.abs().max())
    torch.testing.assert_close(out[:, :128], e4, rtol=1e-5, atol=tol)
    torch.testing.assert_close(out[:, 128:, 1:7, 1:7], e5, rtol=1e-5, atol=tol)
    ring = out[:, 128:].clone()
    ring[:, :, 1:7, 1:7] = 0
    assert torch.all(ring == 0)


def test_semantic_trunk_is_frozen(semantic):
    sem = SemanticBranch()
    assert all(not p.requires_grad for p in sem.trunk.parameters())
    trainable = {id(p) for p in sem.trainable_parameters()}
    assert trainable == {id(p) for n, p in sem.named_parameters() if not n.startswith("trunk.")}
    sem.train()
    assert not sem.trunk.training and sem.c1x1_conv4.training
    sem.trunk.load_state_dict(semantic.trunk.state_dict())
    loss = sem(_images(1, 239, 7), _images(1, 239, 8)).sum()
    loss.backward()
    assert sem.c1x1_conv5.weight.grad is not None and sem.att_fc1_conv4.weight.grad is not None
    assert sem.trunk.conv1.weight.grad is None


# -- loss ------------------------------------------------------------------------------------------------------
def test_label_map_counts():
    m = label_map(15)
    assert m.shape == (15, 15) and int(m.sum()) == 13 and int((m == 0).sum()) == 212
    assert m[7, 7] == 1 and m[7, 9] == 1 and m[6, 6] == 1 and m[7, 10] == 0 and m[5, 6] == 0
    assert int(label_map(17).sum()) == 13 and int((label_map(17) == 0).sum()) == 276


def test_balanced_loss_hand_case():
    labels = torch.from_numpy(label_map(15)).bool()
    r = torch.zeros(2, 1, 15, 15)
    a, b = 2.0, -1.0
    r[1, 0] = torch.where(labels, torch.tensor(a), torch.tensor(b))
    # sample 0: logits 0 everywhere -> each class averages ln 2, weighted 0.5 + 0.5 -> ln 2
    # sample 1: 0.5 * BCE(a, 1) + 0.5 * BCE(b, 0) = 0.5 ln(1 + e^-a) + 0.5 ln(1 + e^b)
    expected = (math.log(2) + 0.5 * math.log1p(math.exp(-a)) + 0.5 * math.log1p(math.exp(b))) / 2
    assert float(balanced_logistic_loss(r)) == pytest.approx(expected, rel=1e-6)


def test_l2_regularisation_hand_case(semantic):
    app = AppearanceBranch()
    with torch.no_grad():
        for name, p in app.named_parameters():
            p.fill_(0.01 if name.startswith("conv") and name.endswith("weight") else 10.0)  # BN/biases: excluded
    n_app = sum(math.prod(s) for s in CAFFENET_HWIO.values())  # same conv shapes as AlexNet (no conv biases here)
    term = l2_regularisation(app)
    assert float(term.detach()) == pytest.approx(5e-4 * n_app * 0.01 ** 2 / 2, rel=1e-5)
    term.backward()  # d/dw of wd * w^2 / 2 = wd * w
    torch.testing.assert_close(app.conv3.weight.grad, torch.full_like(app.conv3.weight, 5e-4 * 0.01))
    assert app.bn3.weight.grad is None

    sem = SemanticBranch()
    with torch.no_grad():
        for name, p in sem.named_parameters():
            is_conv_w = name.endswith("weight") and ("conv" in name and "att" not in name)
            p.fill_(0.02 if is_conv_w else 10.0)  # biases, attention FCs, detection bias: excluded
    n_sem = n_app + 384 * 128 + 256 * 128  # frozen trunk (a constant) + the two 1x1 convs
    assert float(l2_regularisation(sem).detach()) == pytest.approx(5e-4 * n_sem * 0.02 ** 2 / 2, rel=1e-5)
    expected = 1e-3 * n_sem * 0.02 ** 2 / 2
    assert float(l2_regularisation(sem, weight_decay=1e-3).detach()) == pytest.approx(expected, rel=1e-5)


# -- caffenet.npy ------------------------------------------------------------------------------------------------
def test_caffenet_layout_and_fc_skip(tmp_path):
    layers = random_caffenet(3)
    layers["conv3"]["weights"] = np.arange(np.prod(CAFFENET_HWIO["conv3"]), dtype=np.float32).reshape(
        CAFFENET_HWIO["conv3"])
    layers["fc6"] = {"weights": np.zeros((2, 2), np.float32), "biases": np.zeros(2, np.float32)}
    sd = load_caffenet_npy(save_caffenet_npy(tmp_path / "c.npy", layers))
    assert set(sd) == set(SemanticBranch().trunk.state_dict())
    w = sd["conv3.weight"]
    assert tuple(w.shape) == (384, 256, 3, 3)
    for o, i, h, x in ((7, 5, 1, 2), (383, 255, 2, 0), (0, 0, 0, 0)):
        assert float(w[o, i, h, x]) == float(layers["conv3"]["weights"][h, x, i, o])
    assert sd["conv1.weight"].dtype == torch.float32 and tuple(sd["conv2.weight"].shape) == (256, 48, 5, 5)


@torch.no_grad()
def test_caffenet_channel_order_and_mean(semantic, caffenet_file):
    """conv1's output at one location, hooked during a real forward, equals the hand computation on the
    BGR-reversed, mean-subtracted image with the file's HWIO kernel."""
    _, layers = caffenet_file
    seen = {}
    handle = semantic.trunk.conv1.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = _images(1, 127, 9)
    semantic.search(x)
    handle.remove()
    rgb = x[0].double().numpy()
    bgr = np.stack([rgb[2] - 104.0, rgb[1] - 117.0, rgb[0] - 123.0])
    c, i, j = 5, 3, 4
    patch = bgr[:, 2 * i:2 * i + 11, 2 * j:2 * j + 11]  # stride 2, VALID
    hwio = layers["conv1"]["weights"].astype(np.float64)
    expected = np.einsum("khw,hwk->", patch, hwio[:, :, :, c]) + layers["conv1"]["biases"][c]
    assert float(seen["out"][0, c, i, j]) == pytest.approx(expected, rel=1e-4, abs=1e-3)


@torch.no_grad()
def test_caffenet_group_split(semantic, caffenet_file):
    """conv2's first 128 outputs (b1) see only input channels 0..47 and equal the file's first output half."""
    _, layers = caffenet_file
    conv2 = semantic.trunk.conv2
    y = torch.randn(1, 96, 9, 9)
    base = conv2(y)
    y2 = y.clone()
    y2[:, 48:] += 1.0
    out = conv2(y2)
    torch.testing.assert_close(out[:, :128], base[:, :128])
    assert not torch.allclose(out[:, 128:], base[:, 128:])
    w = torch.from_numpy(layers["conv2"]["weights"][..., :128]).permute(3, 2, 0, 1)
    b1 = F.conv2d(y[:, :48], w, torch.from_numpy(layers["conv2"]["biases"][:128]))
    torch.testing.assert_close(base[:, :128], b1, rtol=1e-5, atol=1e-5)


def test_lrn_equals_tf_formula(semantic):
    x = torch.rand(1, 10, 3, 3) * 300
    sq = (x ** 2).double()
    sums = torch.stack([sq[:, max(0, d - 2):d + 3].sum(1) for d in range(10)], 1)
    expected = x.double() / (1.0 + 2e-5 * sums) ** 0.75  # TF: depth_radius 2, alpha 2e-5, beta 0.75, bias 1
    torch.testing.assert_close(semantic.trunk.lrn(x).double(), expected, rtol=1e-5, atol=1e-5)


def _save_object_npy(path: Path, payload: bytes) -> Path:
    """A .npy with an object-array header followed by an arbitrary pickle (what a hostile caffenet.npy looks like)."""
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload)
    return path


@pytest.mark.parametrize("protocol", [0, 2])
def test_caffenet_reads_legacy_pickles(tmp_path, protocol):
    """Older writers: low pickle protocols (bytes via `_codecs.encode`) and numpy 1's `numpy.core` module name."""
    layers = random_caffenet(5)
    box = np.empty((), dtype=object)
    box[()] = layers
    raw = pickle.dumps(box, protocol=protocol).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    sd = load_caffenet_npy(_save_object_npy(tmp_path / "legacy.npy", raw))
    np.testing.assert_array_equal(sd["conv5.weight"].numpy(), layers["conv5"]["weights"].transpose(3, 2, 0, 1))


class _Getcwd:  # harmless if it ever ran; the loader must refuse it without running it
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("case,needles", [
    ("missing", ["conv4", "missing", "[3, 3, 192, 384]"]),
    ("shape", ["conv2", "weights", "[5, 5, 96, 256]", "[5, 5, 48, 256]"]),
    ("bias_shape", ["conv5", "biases", "[128]", "[256]"]),
    ("not_dict", ["dict", "list"]),
    ("plain_array", ["float32", "not a pickled dict"]),
    ("not_npy", ["not a .npy"]),
    ("evil", ["not allowed", "getcwd"]),
])
def test_caffenet_errors_name_file_and_layer(tmp_path, case, needles):
    path = tmp_path / f"{case}.npy"
    layers = random_caffenet(4)
    if case == "missing":
        del layers["conv4"]
        save_caffenet_npy(path, layers)
    elif case == "shape":
        layers["conv2"]["weights"] = np.zeros((5, 5, 96, 256), np.float32)
        save_caffenet_npy(path, layers)
    elif case == "bias_shape":
        layers["conv5"]["biases"] = np.zeros(128, np.float32)
        save_caffenet_npy(path, layers)
    elif case == "not_dict":
        box = np.empty((), dtype=object)
        box[()] = [1, 2, 3]
        np.save(path, box, allow_pickle=True)
    elif case == "plain_array":
        np.save(path, np.zeros((2, 2), np.float32))
    elif case == "not_npy":
        path.write_bytes(b"PK\x03\x04 not numpy at all")
    else:
        _save_object_npy(path, pickle.dumps(_Getcwd(), protocol=2))
    with pytest.raises(CheckpointError) as err:
        load_caffenet_npy(path)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


# -- ONNX export and ONNX Runtime parity ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("with_semantic", [False, True], ids=["appearance", "both"])
def test_onnx_export_and_ort_parity(tmp_path, appearance, semantic, with_semantic):
    import onnx
    import onnxruntime as ort

    from common.export import export_onnx
    from common.manifest import ModelIO, TensorSpec

    model = SASiam(appearance, semantic if with_semantic else None).eval()
    io = graph_io(with_semantic)
    assert [n for n, _ in io["search"][0]] == (["search", "z_app", "z_sem"] if with_semantic else ["search", "z_app"])
    z, x = _images(1, 255, 10), _images(3, 255, 11)
    with torch.no_grad():
        feats = model.exemplar_features(z)
        ref = {"exemplar": [feats["z_app"]] + ([feats["z_sem"]] if with_semantic else []),
               "search": [model.respond(x, feats)]}
    inputs = {"exemplar": (z,), "search": (x, *ref["exemplar"])}
    for graph, module in (("exemplar", ExemplarGraph(model)), ("search", SearchGraph(model))):
        ins, outs = io[graph]
        for t, (_, shape) in zip(inputs[graph], ins, strict=True):
            assert list(t.shape) == shape
        for t, (_, shape) in zip(ref[graph], outs, strict=True):
            assert list(t.shape) == shape
        path = tmp_path / f"{graph}.onnx"
        spec = ModelIO(inputs=tuple(TensorSpec(name=n, shape=tuple(s)) for n, s in ins),
                       outputs=tuple(TensorSpec(name=n, shape=tuple(s)) for n, s in outs), opset=11)
        export_onnx(module, spec, path, dynamic_batch=False)  # TorchScript exporter (dynamo=False) + check_graph
        assert onnx.load(str(path)).opset_import[0].version == 11
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: t.numpy() for (n, _), t in zip(ins, inputs[graph], strict=True)})
        for g, r in zip(got, ref[graph], strict=True):
            r = r.numpy()
            assert np.abs(g - r).max() <= 1e-4 * np.abs(r).max() + 1e-5, (graph, np.abs(g - r).max())
