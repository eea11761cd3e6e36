"""common.doctor against fake /dev and /usr/local/Ascend trees (no NPU, no Docker needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.doctor import (
    DRIVER_MOUNTS,
    MANAGEMENT_DEVICES,
    diagnose,
    docker_run_line,
    main_doctor,
    npu_devices,
)


def _fake_dev(root: Path, chips=(0, 3), management=MANAGEMENT_DEVICES) -> Path:
    dev = root / "dev"
    dev.mkdir()
    for n in chips:
        (dev / f"davinci{n}").touch()
    for name in management:
        (dev / name).touch()
    (dev / "null").touch()
    return dev


def _fake_ascend(root: Path, *, driver=True, set_env=True) -> Path:
    ascend = root / "Ascend"
    if driver:
        (ascend / "driver" / "lib64").mkdir(parents=True)
        (ascend / "driver" / "version.info").write_text("Version=23.0.0\nascendhal_version=7.35.19\n")
    if set_env:
        (ascend / "ascend-toolkit").mkdir(parents=True)
        (ascend / "ascend-toolkit" / "set_env.sh").write_text("export ASCEND_TOOLKIT_HOME=/x\n")
    return ascend


def _ready(tmp_path: Path) -> dict:
    return dict(
        ascend_root=_fake_ascend(tmp_path),
        env={"ASCEND_TOOLKIT_HOME": "/usr/local/Ascend/ascend-toolkit/latest"},
        which=lambda name: f"/usr/local/bin/{name}",
        import_module=lambda name: object(),
    )


def _missing_names(findings) -> set[str]:
    return {f.name for f in findings if not f.ok}


def test_everything_present_is_ready(tmp_path, capsys):
    dev = _fake_dev(tmp_path)
    kw = _ready(tmp_path)
    findings = diagnose(dev, **kw)
    assert all(f.ok for f in findings), [f.line() for f in findings if not f.ok]
    assert npu_devices(dev) == [0, 3]
    assert any("23.0.0" in f.detail for f in findings)
    assert main_doctor("refinedet", dev_root=dev, **kw) == 0
    out = capsys.readouterr().out
    assert "--device /dev/davinci0 --device /dev/davinci3 " in out
    assert "ready for the ais_bench backend" in out


def test_bare_machine_explains_every_missing_item(tmp_path, capsys):
    dev = tmp_path / "dev"
    dev.mkdir()
    ascend = tmp_path / "nothing"

    def no_module(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    kw = dict(ascend_root=ascend, env={}, which=lambda name: None, import_module=no_module)
    findings = diagnose(dev, **kw)
    assert _missing_names(findings) == {
        "NPU chips (/dev/davinciN)",
        "/dev/davinci_manager",
        "/dev/devmm_svm",
        "/dev/hisi_hdc",
        "driver libraries",
        "driver version",
        "npu-smi",
        "CANN environment",
        "aclruntime (ais_bench backend)",
    }
    assert all(f.fix for f in findings if not f.ok), "every missing item says how to provide it"

    assert main_doctor("refinedet", dev_root=dev, **kw) == 1
    out = capsys.readouterr().out
    assert "no NPU device found" in out
    assert docker_run_line("refinedet", []) in out
    assert "MISSING" in out and "9 of 9 checks failed" in out


def test_management_device_missing_alone(tmp_path):
    dev = _fake_dev(tmp_path, management=("davinci_manager", "hisi_hdc"))
    assert _missing_names(diagnose(dev, **_ready(tmp_path))) == {"/dev/devmm_svm"}


def test_set_env_present_but_not_sourced(tmp_path):
    kw = {**_ready(tmp_path), "env": {}}
    (cann,) = [f for f in diagnose(_fake_dev(tmp_path), **kw) if f.name == "CANN environment"]
    assert not cann.ok and "not sourced" in cann.detail and "set_env.sh" in cann.fix


def test_aclruntime_import_error_from_missing_library(tmp_path):
    def broken(name):
        raise OSError("libascendcl.so: cannot open shared object file: No such file or directory")

    kw = {**_ready(tmp_path), "import_module": broken}
    (acl,) = [f for f in diagnose(_fake_dev(tmp_path), **kw) if f.name.startswith("aclruntime")]
    assert not acl.ok and "libascendcl.so" in acl.detail and "OSError" in acl.detail


@pytest.mark.skipif(os.getuid() == 0, reason="root can open any device node")
def test_device_node_without_permission(tmp_path):
    dev = _fake_dev(tmp_path)
    (dev / "davinci_manager").chmod(0)
    findings = diagnose(dev, **_ready(tmp_path))
    (access,) = [f for f in findings if f.name == "access to /dev/davinci_manager"]
    assert not access.ok and "--group-add" in access.fix


def test_docker_run_line_has_devices_and_read_only_mounts():
    line = docker_run_line("refinedet", [2, "/dev/davinci5"])
    for dev in ("/dev/davinci2", "/dev/davinci5", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"):
        assert f"--device {dev} " in line
    for path in DRIVER_MOUNTS:
        assert f"-v {path}:{path}:ro" in line
    assert "-v /path/to/dataset:/data:ro" in line and '-v "$PWD/runs:/out"' in line
    assert line.startswith("docker run --rm ") and "zoo/refinedet:ascend eval" in line
    assert "\n" not in line
    assert "--device /dev/davinci0 " in docker_run_line("refinedet", [])
