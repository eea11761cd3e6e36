"""The ais_bench backend (common/backends/ais_bench.py) against stand-in `ais_bench` modules.

The stand-ins follow the documented ais_bench API (shared/specs/ascend.md §3); no NPU here. They are injected
into `sys.modules` (`ais_bench`, `ais_bench.infer`, `ais_bench.infer.interface`) in two variants:

* 9d6da90-era: `sumary()` with one duration (ms) per execution, `reset_sumaryinfo()`, `finalize()`;
* later (ait/msit): `summary()` with `(start, end)` pairs, `free_resource()`, and `finalize` as a static
  method that must not be called (it would tear down ACL for every session). This variant has no
  `reset_sumaryinfo`, to exercise the fallback.

Both return the outputs in the newer ModelZoo OM order (odm_loc, odm_conf, arm_loc, arm_conf), not the
manifest order, filled with a per-tensor constant so that a wrong name is visible.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common.backends.ais_bench import AisBenchBackend, map_outputs_by_shape
from common.errors import BackendUnavailable, InputError, ZooError
from common.manifest import TensorSpec

pytestmark = pytest.mark.timeout(60)

N = 6375
INPUTS = (TensorSpec(name="image", shape=(-1, 3, 320, 320)),)
OUTPUTS = (  # the refinedet manifest's [model].outputs
    TensorSpec(name="arm_loc", shape=(-1, N, 4)),
    TensorSpec(name="arm_conf", shape=(-1, N, 2)),
    TensorSpec(name="odm_loc", shape=(-1, N, 4)),
    TensorSpec(name="odm_conf", shape=(-1, N, 21)),
)
OM_ORDER = ("odm_loc", "odm_conf", "arm_loc", "arm_conf")
FILL = {"arm_loc": 1.0, "arm_conf": 2.0, "odm_loc": 3.0, "odm_conf": 4.0}
LAST_DIM = {"arm_loc": 4, "arm_conf": 2, "odm_loc": 4, "odm_conf": 21}
BATCH = 2


class _StandInBase:
    """Shared behaviour: a static batch-2 OM whose outputs come back in OM_ORDER."""

    instances: list[_StandInBase] = []

    def __init__(self, device_id: int, model_path: str, acl_json_path=None, debug=False, loop=1) -> None:
        self.device_id = device_id
        self.model_path = model_path
        self.feeds: list[list[np.ndarray]] = []
        self.modes: list[str] = []
        self.released: list[str] = []
        self.resets = 0
        self.order = OM_ORDER
        type(self).instances.append(self)

    def get_inputs(self):
        return [SimpleNamespace(name="image", datatype="FLOAT32", format="NCHW", shape=[BATCH, 3, 320, 320])]

    def infer(self, feeds, mode="static", custom_sizes=100000):
        assert all(isinstance(f, np.ndarray) and f.flags.c_contiguous for f in feeds)
        assert [f.shape for f in feeds] == [(BATCH, 3, 320, 320)]
        self.feeds.append(list(feeds))
        self.modes.append(mode)
        self._record(len(self.feeds))
        return [np.full((BATCH, N, LAST_DIM[n]), FILL[n], np.float32) for n in self.order]


class OldSession(_StandInBase):
    """9d6da90-era InferSession."""

    instances: list[_StandInBase] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._times: list[float] = []

    def _record(self, call: int) -> None:
        self._times.append(1.25 * call)  # call k took 1.25*k ms

    def sumary(self):
        return SimpleNamespace(exec_time_list=list(self._times))

    def reset_sumaryinfo(self) -> None:
        self.resets += 1
        self._times.clear()

    def finalize(self) -> None:
        self.released.append("finalize")


class NewSession(_StandInBase):
    """ait/msit-era InferSession."""

    instances: list[_StandInBase] = []
    global_finalize_calls = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pairs: list[tuple[float, float]] = []

    def _record(self, call: int) -> None:
        start = 1000.0 * call
        self._pairs.append((start, start + 0.5 * call))  # call k took 0.5*k ms

    def summary(self):
        return SimpleNamespace(exec_time_list=list(self._pairs))

    def sumary(self):
        return self.summary()

    def free_resource(self) -> None:
        self.released.append("free_resource")

    @staticmethod
    def finalize() -> None:
        NewSession.global_finalize_calls += 1


def _install(monkeypatch: pytest.MonkeyPatch, session_cls: type) -> None:
    pkg = types.ModuleType("ais_bench")
    pkg.__path__ = []
    infer = types.ModuleType("ais_bench.infer")
    infer.__path__ = []
    interface = types.ModuleType("ais_bench.infer.interface")
    interface.InferSession = session_cls
    pkg.infer = infer
    infer.interface = interface
    monkeypatch.setitem(sys.modules, "ais_bench", pkg)
    monkeypatch.setitem(sys.modules, "ais_bench.infer", infer)
    monkeypatch.setitem(sys.modules, "ais_bench.infer.interface", interface)
    session_cls.instances = []


@pytest.fixture
def om(tmp_path: Path) -> Path:
    path = tmp_path / "refinedet_bs2.om"
    path.write_bytes(b"stand-in OM")
    return path


def _image() -> np.ndarray:
    return np.ones((BATCH, 3, 320, 320), np.float32)


# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("session_cls", [OldSession, NewSession], ids=["9d6da90", "later"])
def test_outputs_named_by_shape_and_verified_order(monkeypatch, om, session_cls):
    _install(monkeypatch, session_cls)
    backend = AisBenchBackend(om, OUTPUTS, INPUTS, device_id=3, output_order=OM_ORDER)
    out = backend.run({"image": _image()})
    assert list(out) == list(OM_ORDER)
    for name, arr in out.items():
        assert arr.shape == (BATCH, N, LAST_DIM[name])
        assert np.all(arr == FILL[name]), name
    s = session_cls.instances[0]
    assert (s.device_id, s.model_path) == (3, str(om))
    assert set(s.modes) == {"static"}


def test_equal_shapes_without_output_order_follow_manifest_order(monkeypatch, om):
    # Documented hazard: arm_loc and odm_loc share (B, 6375, 4). Without output_order, the OM's first such
    # output is called arm_loc (manifest order) - wrong for this OM, which is why users verify once vs ORT.
    _install(monkeypatch, OldSession)
    out = AisBenchBackend(om, OUTPUTS, INPUTS).run({"image": _image()})
    assert np.all(out["arm_conf"] == FILL["arm_conf"]) and np.all(out["odm_conf"] == FILL["odm_conf"])
    assert np.all(out["arm_loc"] == FILL["odm_loc"]) and np.all(out["odm_loc"] == FILL["arm_loc"])


def test_manifest_order_om_needs_no_output_order(monkeypatch, om):
    class ManifestOrder(OldSession):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.order = tuple(o.name for o in OUTPUTS)

    _install(monkeypatch, ManifestOrder)
    out = AisBenchBackend(om, OUTPUTS, INPUTS).run({"image": _image()})
    assert all(np.all(out[n] == FILL[n]) for n in FILL)


@pytest.mark.parametrize(
    ("session_cls", "per_call_ms"), [(OldSession, 1.25), (NewSession, 0.5)], ids=["9d6da90", "later"]
)
def test_warmup_then_reset_then_compute_time_from_exec_time_list(monkeypatch, om, session_cls, per_call_ms):
    _install(monkeypatch, session_cls)
    backend = AisBenchBackend(om, OUTPUTS, INPUTS, output_order=OM_ORDER, warmup=2)
    s = session_cls.instances[0]
    # warm-up: 2 executions on zeros of the OM input shape (batch from the session's descriptors)
    assert len(s.feeds) == 2 and all(
        np.all(f[0] == 0) and f[0].shape == (BATCH, 3, 320, 320) for f in s.feeds
    )
    assert backend.timings.run_ms == []
    if session_cls is OldSession:
        assert s.resets == 1 and s._times == []  # reset_sumaryinfo() after warm-up
    backend.run({"image": _image()})
    backend.run({"image": _image()})
    # calls 3 and 4 of the stand-in; its reported times, not the (microsecond) wall clock
    assert backend.timings.run_ms == pytest.approx([3 * per_call_ms, 4 * per_call_ms])


@pytest.mark.parametrize(
    ("session_cls", "release", "api"),
    [
        (OldSession, "finalize", "sumary() reset_sumaryinfo() finalize()"),
        (NewSession, "free_resource", "summary() free_resource()"),
    ],
    ids=["9d6da90", "later"],
)
def test_close_calls_the_right_release_once_and_describe(monkeypatch, om, session_cls, release, api):
    _install(monkeypatch, session_cls)
    NewSession.global_finalize_calls = 0
    with AisBenchBackend(om, OUTPUTS, INPUTS, device_id=1, output_order=OM_ORDER) as backend:
        info = backend.describe()
    backend.close()  # idempotent
    s = session_cls.instances[0]
    assert s.released == [release]
    assert NewSession.global_finalize_calls == 0
    assert info["backend"] == "ais_bench" and info["om"] == str(om) and info["device_id"] == "1"
    assert info["api"] == api


def test_missing_module_is_backend_unavailable_with_hint(monkeypatch, om):
    for name in ("ais_bench", "ais_bench.infer", "ais_bench.infer.interface"):
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ImportError
    with pytest.raises(BackendUnavailable, match=r"ais_bench backend unavailable: .*aclruntime\+ais_bench .*"
                       r"Ascend/tools@9d6da90.*set_env\.sh sourced"):  # fmt: skip
        AisBenchBackend(om, OUTPUTS, INPUTS)


class _BrokenLibFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import ais_bench...` fail the way a missing libascendcl.so does (OSError from the loader)."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] == "ais_bench":
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("libascendcl.so: cannot open shared object file: No such file or directory")


def test_os_error_on_import_is_backend_unavailable(monkeypatch, om):
    for name in ("ais_bench", "ais_bench.infer", "ais_bench.infer.interface"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenLibFinder(), *sys.meta_path])
    with pytest.raises(BackendUnavailable, match="libascendcl.so.*install aclruntime"):
        AisBenchBackend(om, OUTPUTS, INPUTS)


def test_missing_om_names_the_file(monkeypatch, tmp_path):
    _install(monkeypatch, OldSession)
    with pytest.raises(InputError, match=r"nope\.om: OM file not found"):
        AisBenchBackend(tmp_path / "nope.om", OUTPUTS, INPUTS)


def test_unmatched_shapes_fail_at_load_and_release(monkeypatch, om):
    class WrongOm(OldSession):
        def infer(self, feeds, mode="static", custom_sizes=100000):
            outs = super().infer(feeds, mode, custom_sizes)
            return [*outs[:3], np.zeros((BATCH, N, 81), np.float32)]  # a COCO-sized head, not ours

    _install(monkeypatch, WrongOm)
    with pytest.raises(ZooError, match=r"refinedet_bs2\.om: cannot map OM outputs.*\(2, 6375, 81\)"):
        AisBenchBackend(om, OUTPUTS, INPUTS)
    assert WrongOm.instances[0].released == ["finalize"]


def test_map_outputs_by_shape_rules():
    om_shapes = [(2, N, 4), (2, N, 21), (2, N, 4), (2, N, 2)]
    assert map_outputs_by_shape(om_shapes, OUTPUTS, OM_ORDER) == list(OM_ORDER)
    assert map_outputs_by_shape(om_shapes, OUTPUTS) == ["arm_loc", "odm_conf", "odm_loc", "arm_conf"]
    with pytest.raises(ValueError, match="contradicts"):  # says conf first where the OM has a loc tensor
        map_outputs_by_shape(om_shapes, OUTPUTS, ("odm_conf", "odm_loc", "arm_loc", "arm_conf"))
    with pytest.raises(ValueError, match="permutation"):
        map_outputs_by_shape(om_shapes, OUTPUTS, ("odm_loc", "odm_conf", "arm_loc"))
    with pytest.raises(ValueError, match="OM has 3 outputs"):
        map_outputs_by_shape(om_shapes[:3], OUTPUTS)
    with pytest.raises(ValueError, match="3 OM outputs have shape"):
        map_outputs_by_shape([(2, N, 4), (2, N, 21), (2, N, 4), (2, N, 4)], OUTPUTS)
