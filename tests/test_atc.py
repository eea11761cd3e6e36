"""The ATC layer (common/atc.py): graph I/O, out_nodes, the command, npu-smi parsing, failures, the probe.

There is no Ascend toolkit here: wherever `atc` or `npu-smi` must run, a small shell script placed first on
PATH stands in for it. The stand-ins only mimic what the code relies on (exit status, the .om file, printed
text); they say nothing about real ATC behaviour.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import onnx
import pytest
import torch

from common.atc import (
    AtcError,
    atc_command,
    derive_out_nodes,
    explain_atc_failure,
    graph_io,
    probe_ascend,
    run_atc,
    soc_version_from_npu_smi,
)
from common.errors import InputError, ZooError
from common.manifest import AtcConfig, TensorSpec

pytestmark = [
    pytest.mark.timeout(120),
    # the brief asks for the TorchScript exporter (dynamo=False), which torch 2.9+ marks deprecated
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# Plausible `npu-smi info` output of an Atlas 300I Pro (one 310P3), npu-smi 23.x layout.
NPU_SMI_310P3 = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc2                                 Version: 23.0.rc2                                     |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 1       310P3                 | OK              | NA           41                0     / 0             |
| 0       0                     | 0000:3B:00.0    | 0            1782 / 21527                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| 1       0                     | 52311           | python3                  | 243                       |
+===============================+=================+======================================================+
"""

# Plausible output for an Atlas 300I inference card (model 3000): 4 Ascend 310 chips, one device each,
# older npu-smi layout without a process table.
NPU_SMI_310_X4 = """\
+------------------------------------------------------------------------------+
| npu-smi 20.2.0                       Version: 20.2.0                         |
+-------------------+-----------------+----------------------------------------+
| NPU     Name      | Health          | Power(W)          Temp(C)              |
| Chip    Device    | Bus-Id          | AICore(%)         Memory-Usage(MB)     |
+===================+=================+========================================+
| 0       310       | OK              | 12.8              45                   |
| 0       0         | 0000:05:00.0    | 0                 2621 / 8192          |
+===================+=================+========================================+
| 1       310       | OK              | 12.8              44                   |
| 0       1         | 0000:06:00.0    | 0                 2621 / 8192          |
+===================+=================+========================================+
| 2       310       | OK              | 12.8              46                   |
| 0       2         | 0000:07:00.0    | 0                 2621 / 8192          |
+===================+=================+========================================+
| 3       310       | Warning         | 12.8              51                   |
| 0       3         | 0000:08:00.0    | 0                 2621 / 8192          |
+===================+=================+========================================+
"""

E10016_OUTPUT = """\
ATC start working now, please wait for a moment.
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E10016: Input parameter[--out_nodes]'s opname[Reshape_239] is not exist in model
        Solution: Check whether the input parameter is valid.
"""


class TwoHeads(torch.nn.Module):
    """Tiny detector-like model: a (B, N, 4) 'loc' and a softmaxed (B, N, 3) 'conf' output."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conf = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.loc(x).permute(0, 2, 3, 1).reshape(x.shape[0], 64, 4)
        conf = torch.softmax(self.conf(x).permute(0, 2, 3, 1).reshape(x.shape[0], 64, 3), dim=-1)
        return loc, conf


class Siamese(torch.nn.Module):
    """Two inputs, as the SiamRPN tracker seed (template and search crops)."""

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return search.mean(dim=(2, 3)) - template.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def two_heads_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "two_heads.onnx"
    torch.onnx.export(
        TwoHeads().eval(),
        (torch.zeros(1, 3, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=11,
        input_names=["image"],
        output_names=["loc", "conf"],
        dynamic_axes={"image": {0: "batch"}, "loc": {0: "batch"}, "conf": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="module")
def siamese_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "siamese.onnx"
    torch.onnx.export(
        Siamese().eval(),
        (torch.zeros(1, 3, 127, 127), torch.zeros(1, 3, 255, 255)),
        str(path),
        dynamo=False,
        opset_version=11,
        input_names=["template", "search"],
        output_names=["score"],
    )
    return path


# ----------------------------------------------------------------------------------------------------------
# graph


def test_graph_io_names_shapes_dynamic_batch(two_heads_onnx: Path):
    inputs, outputs = graph_io(two_heads_onnx)
    assert inputs == [TensorSpec(name="image", shape=(-1, 3, 8, 8), dtype="float32")]
    assert [o.name for o in outputs] == ["loc", "conf"]
    assert all(o.shape[0] == -1 and o.dtype == "float32" for o in outputs)
    assert outputs[1].shape[-1] == 3


def test_derive_out_nodes_names_real_producers(two_heads_onnx: Path):
    graph = onnx.load(str(two_heads_onnx)).graph
    nodes = derive_out_nodes(two_heads_onnx, ["conf", "loc"])  # order as asked, not graph order
    assert len(nodes) == 2
    by_name = {n.name: n for n in graph.node}
    for wanted, spec in zip(["conf", "loc"], nodes, strict=True):
        name, k = spec.rsplit(":", 1)
        assert by_name[name].output[int(k)] == wanted
    assert by_name[nodes[0].rsplit(":", 1)[0]].op_type == "Softmax"


def test_derive_out_nodes_missing_output_is_named(two_heads_onnx: Path):
    with pytest.raises(
        InputError, match=r"two_heads\.onnx: graph has no output 'prior_data'.*\['loc', 'conf'\]"
    ):
        derive_out_nodes(two_heads_onnx, ["loc", "prior_data"])


def test_unreadable_onnx_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \xff\xff\xff")
    with pytest.raises(InputError, match="bad.onnx"):
        graph_io(bad)
    with pytest.raises(InputError, match="missing.onnx: ONNX file not found"):
        graph_io(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------------------------------------------
# command


def test_full_command_for_batch_16(two_heads_onnx: Path, tmp_path: Path):
    atc = AtcConfig(
        precision_mode="allow_fp32_to_fp16", extra_args=("--op_select_implmode=high_performance",)
    )
    nodes = derive_out_nodes(two_heads_onnx, ["loc", "conf"])
    cmd = atc_command(
        two_heads_onnx,
        tmp_path / "om" / "two_heads_bs16",
        batch_size=16,
        soc_version="Ascend310P3",
        atc=atc,
        out_nodes=nodes,
    )
    assert cmd == [
        "atc",
        "--framework=5",
        f"--model={two_heads_onnx.resolve()}",
        f"--output={(tmp_path / 'om' / 'two_heads_bs16').resolve()}",
        "--input_format=NCHW",
        "--input_shape=image:16,3,8,8",
        "--soc_version=Ascend310P3",
        "--precision_mode=allow_fp32_to_fp16",
        "--log=error",
        f"--out_nodes={nodes[0]};{nodes[1]}",
        "--op_select_implmode=high_performance",
    ]


def test_command_two_inputs_joined_with_semicolon(siamese_onnx: Path, tmp_path: Path):
    cmd = atc_command(siamese_onnx, tmp_path / "siam", batch_size=1, soc_version="Ascend310", atc=AtcConfig())
    assert "--input_shape=template:1,3,127,127;search:1,3,255,255" in cmd
    assert "--precision_mode=force_fp16" in cmd  # the manifest default
    assert not any(a.startswith("--out_nodes") for a in cmd)


def test_command_rejects_bad_arguments(two_heads_onnx: Path, tmp_path: Path):
    ok = dict(batch_size=1, soc_version="Ascend310P3", atc=AtcConfig())
    with pytest.raises(ValueError, match="soc_version"):
        atc_command(two_heads_onnx, tmp_path / "x", **{**ok, "soc_version": "310P3"})
    with pytest.raises(ValueError, match="batch_size"):
        atc_command(two_heads_onnx, tmp_path / "x", **{**ok, "batch_size": 0})
    with pytest.raises(ValueError, match="repeats a flag"):
        atc_command(
            two_heads_onnx, tmp_path / "x", **{**ok, "atc": AtcConfig(extra_args=("--soc_version=A",))}
        )
    with pytest.raises(ValueError, match="NodeName:index"):
        atc_command(two_heads_onnx, tmp_path / "x", **ok, out_nodes=["Softmax_246"])


# ----------------------------------------------------------------------------------------------------------
# npu-smi


def test_npu_smi_310p3():
    assert soc_version_from_npu_smi(NPU_SMI_310P3) == "Ascend310P3"


def test_npu_smi_four_chip_310_card():
    assert soc_version_from_npu_smi(NPU_SMI_310_X4) == "Ascend310"


def test_npu_smi_910b_single_token_chip_rows():
    text = (
        "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|\n"
        "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |\n"
        "+===========================+===============+====================================================+\n"
        "| 0     910B3               | OK            | 93.8        36                0    / 0             |\n"
        "| 0                         | 0000:C1:00.0  | 0           0    / 0          3161 / 65536         |\n"
    )
    assert soc_version_from_npu_smi(text) == "Ascend910B3"


def test_npu_smi_garbage_and_mixed_chips_raise():
    with pytest.raises(ValueError, match="no NPU row"):
        soc_version_from_npu_smi("bash: npu-smi: command not found\n")
    with pytest.raises(ValueError, match="no NPU row"):
        soc_version_from_npu_smi("")
    mixed = NPU_SMI_310_X4.replace("| 2       310  ", "| 2       310P3")
    with pytest.raises(ValueError, match=r"different chips \['Ascend310', 'Ascend310P3'\]"):
        soc_version_from_npu_smi(mixed)


# ----------------------------------------------------------------------------------------------------------
# failures and running


def test_explain_known_failures():
    assert explain_atc_failure(E10016_OUTPUT).startswith("E10016")
    assert "out_nodes" in explain_atc_failure(E10016_OUTPUT)
    assert explain_atc_failure("E16005: The model has [2] [--domain version] fields").startswith("E16005")
    assert "set_env.sh" in explain_atc_failure("bash: atc: command not found")
    assert explain_atc_failure("ATC run success, welcome to the next use.") is None


def _fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


FAKE_ATC_OK = """\
# Stand-in for ATC: writes <--output>.om and prints a success line. Not the real tool.
for arg in "$@"; do
  case "$arg" in --output=*) out="${arg#--output=}" ;; esac
done
echo "ATC start working now, please wait for a moment."
printf 'fake om for %s\\n' "$out" > "$out.om"
echo "ATC run success, welcome to the next use."
"""


def test_run_atc_success_with_stand_in(two_heads_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_tool(tmp_path / "bin", "atc", FAKE_ATC_OK)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cmd = atc_command(
        two_heads_onnx, tmp_path / "two_heads_bs1", batch_size=1, soc_version="Ascend310P3", atc=AtcConfig()
    )
    om = run_atc(cmd, tmp_path / "logs" / "atc.log")
    assert om == (tmp_path / "two_heads_bs1.om").resolve()
    assert om.is_file()
    log = (tmp_path / "logs" / "atc.log").read_text()
    assert "--input_shape=image:1,3,8,8" in log and "ATC run success" in log


def test_run_atc_failure_explains_e10016(
    two_heads_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Stand-in for a failing ATC: prints the E10016 text and exits 1.
    _fake_tool(tmp_path / "bin", "atc", "cat <<'EOF'\n" + E10016_OUTPUT + "EOF\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cmd = atc_command(
        two_heads_onnx,
        tmp_path / "m",
        batch_size=1,
        soc_version="Ascend310P3",
        atc=AtcConfig(),
        out_nodes=["Reshape_239:0"],
    )
    log = tmp_path / "atc.log"
    with pytest.raises(AtcError) as info:
        run_atc(cmd, log)
    msg = str(info.value)
    assert "exit 1" in msg and "E10016" in msg and "derive out_nodes" in msg and str(log) in msg
    assert isinstance(info.value, ZooError)
    assert "opname[Reshape_239]" in log.read_text()
    assert not (tmp_path / "m.om").exists()


def test_run_atc_exit_zero_without_om_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_tool(tmp_path / "bin", "atc", "echo 'nothing written'\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "m.v2.om").write_text("stale OM of an earlier run")  # must not count as this run's output
    with pytest.raises(AtcError, match=r"wrote no .*m\.v2\.om.*nothing written"):
        run_atc(["atc", f"--output={tmp_path / 'm.v2'}"], tmp_path / "atc.log")


def test_run_atc_without_atc_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AtcError, match="set_env.sh"):
        run_atc(["atc", f"--output={tmp_path / 'm'}"], tmp_path / "atc.log")
    assert (tmp_path / "atc.log").is_file()


# ----------------------------------------------------------------------------------------------------------
# probe


def test_probe_reads_a_fake_ascend_tree(tmp_path: Path):
    root = tmp_path / "Ascend"
    versioned = root / "ascend-toolkit" / "8.2.RC1"
    versioned.mkdir(parents=True)
    (root / "ascend-toolkit" / "latest").symlink_to(versioned)
    (root / "driver").mkdir()
    (root / "driver" / "version.info").write_text("Version=24.1.rc2\nascendhal_version=7.35.19\n")
    _fake_tool(tmp_path / "bin", "npu-smi", "cat <<'EOF'\n" + NPU_SMI_310P3 + "EOF\n")
    _fake_tool(tmp_path / "bin", "atc", "exit 0\n")
    env = {"PATH": str(tmp_path / "bin"), "ASCEND_TOOLKIT_HOME": str(root / "ascend-toolkit" / "latest")}
    info = probe_ascend(env=env, root=root)
    assert info["atc"] == str(tmp_path / "bin" / "atc")
    assert info["cann_version"] == "8.2.RC1"
    assert info["driver_version"] == "24.1.rc2"
    assert info["npu_smi"] == str(tmp_path / "bin" / "npu-smi")
    assert info["soc_version"] == "Ascend310P3"
    assert info["npu_smi_error"] is None


def test_probe_on_a_bare_machine_never_raises(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    _fake_tool(tmp_path / "bin", "npu-smi", "echo 'dcmi module initialize failed. ret is -8005'\nexit 1\n")
    info = probe_ascend(env={"PATH": str(tmp_path / "bin")}, root=tmp_path / "nothing")
    assert info["atc"] is None and info["cann_version"] is None and info["driver_version"] is None
    assert info["soc_version"] is None and "no NPU row" in (info["npu_smi_error"] or "")
    assert all(v is None or isinstance(v, str) for v in info.values())


def test_a_static_leading_axis_is_kept(tmp_path: Path):
    """SA-Siam's search graph takes its 3 scales on a static axis 0: the OM keeps 3 (only batch size 1 fits)."""

    class ThreeScales(torch.nn.Module):
        def forward(self, search, z):
            return (search.mean(dim=(1, 2, 3)) * z.mean()).reshape(3, 1)

    path = tmp_path / "three.onnx"
    torch.onnx.export(ThreeScales().eval(), (torch.zeros(3, 3, 8, 8), torch.zeros(1, 2, 4, 4)), str(path),
                      dynamo=False, opset_version=11, input_names=["search", "z"], output_names=["response"])
    cmd = atc_command(path, tmp_path / "three", batch_size=1, soc_version="Ascend310P3", atc=AtcConfig())
    assert "--input_shape=search:3,3,8,8;z:1,2,4,4" in cmd
    with pytest.raises(InputError, match="static leading axis 3"):
        atc_command(path, tmp_path / "three", batch_size=4, soc_version="Ascend310P3", atc=AtcConfig())
