"""The Ascend path end to end, with stand-ins (no NPU, no CANN here): `zoo eval --backend ais_bench` exports ONNX,
builds a static-batch OM per graph with ATC for the SoC `npu-smi` reports, and runs it through the ais_bench
backend.

Stand-ins, each following the documented interface (shared/specs/ascend.md): `npu-smi` prints a 310P3 table;
`atc` writes `<output>.om` recording its --model and --input_shape; `ais_bench.infer.interface.InferSession`
runs that ONNX file with ONNX Runtime at the OM's static batch, returning outputs in graph order.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_atc import NPU_SMI_310P3

from common.pipeline import EvalOptions, evaluate

FAKE_ATC = """#!/bin/sh
# Stand-in for ATC (not the real tool): records what it was asked to compile.
for arg in "$@"; do
  case "$arg" in --output=*) out="${arg#--output=}" ;; --model=*) model="${arg#--model=}" ;;
    --input_shape=*) shape="${arg#--input_shape=}" ;; --soc_version=*) soc="${arg#--soc_version=}" ;;
    --precision_mode=*) prec="${arg#--precision_mode=}" ;; esac
done
printf '{"model": "%s", "input_shape": "%s", "soc": "%s", "precision": "%s"}' "$model" "$shape" "$soc" "$prec" \\
  > "$out.om"
echo "ATC run success, welcome to the next use."
"""


class StandInSession:
    """ais_bench InferSession stand-in (9d6da90-era API): the 'OM' names an ONNX file and a static input shape."""

    def __init__(self, device_id: int, model_path: str, acl_json_path=None, debug=False, loop=1) -> None:
        import onnxruntime as ort

        self.om = json.loads(Path(model_path).read_text())
        self.session = ort.InferenceSession(self.om["model"], providers=["CPUExecutionProvider"])
        name, dims = self.om["input_shape"].split(":")
        self.static_shape = [int(d) for d in dims.split(",")]
        self.times: list[float] = []

    def get_inputs(self):
        return [SimpleNamespace(name=i.name, datatype="FLOAT32", format="NCHW", shape=self.static_shape)
                for i in self.session.get_inputs()]

    def infer(self, feeds, mode="static", custom_sizes=100000):
        assert [list(f.shape) for f in feeds] == [self.static_shape], "a static OM takes only its batch size"
        names = [i.name for i in self.session.get_inputs()]
        self.times.append(1.0)
        return self.session.run(None, dict(zip(names, feeds, strict=True)))

    def sumary(self):
        return SimpleNamespace(exec_time_list=list(self.times))

    def reset_sumaryinfo(self):
        self.times.clear()

    def finalize(self):
        pass


@pytest.fixture()
def ascend_stand_ins(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("atc", FAKE_ATC), ("npu-smi", f"#!/bin/sh\ncat <<'TABLE'\n{NPU_SMI_310P3}TABLE\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    interface = types.ModuleType("ais_bench.infer.interface")
    interface.InferSession = StandInSession
    for mod, value in (("ais_bench", types.ModuleType("ais_bench")), ("ais_bench.infer",
                                                                     types.ModuleType("ais_bench.infer")),
                       ("ais_bench.infer.interface", interface)):
        monkeypatch.setitem(sys.modules, mod, value)


@pytest.mark.slow
def test_eval_on_ais_bench_builds_oms_with_atc_and_runs_them(tmp_path, ascend_stand_ins):
    out = tmp_path / "run"
    report = evaluate(EvalOptions(bundle="refinedet", out_dir=out, demo=True, backend="ais_bench", device="npu:0",
                                  batch_size=2, limit=3, cache_dir=tmp_path / "cache"))
    assert report.verdict == "DEMO-PASS", [c.line() for c in report.checks]
    om = json.loads((out / "om" / "model_bs2.om").read_text())
    assert om == {"model": str((out / "onnx" / "model.onnx").resolve()), "input_shape": "image:2,3,320,320",
                  "soc": "Ascend310P3", "precision": "allow_fp32_to_fp16"}
    assert "model_bs2.om" in report.exported_models and report.backend["backend"] == "ais_bench"
    # the same predictions as ONNX Runtime directly (the stand-in OM *is* the ONNX graph)
    ref = evaluate(EvalOptions(bundle="refinedet", out_dir=tmp_path / "ort", demo=True, batch_size=2, limit=3,
                               cache_dir=tmp_path / "cache"))
    assert report.metrics == ref.metrics
    a, b = np.load(out / "detections.npz"), np.load(tmp_path / "ort" / "detections.npz")
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_allclose(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)
