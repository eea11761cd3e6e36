"""``zoo doctor``: is this machine (or container) ready to run a bundle on an Ascend NPU, and if not, why.

Checks what shared/specs/ascend.md section 8 says a container needs: the four kinds of device nodes, the host
driver mounted read-only, ``npu-smi``, the CANN environment (``set_env.sh`` sourced) and an importable
``aclruntime`` (ais_bench backend). Each missing item says what it is for and how to provide it, and the
report ends with the exact ``docker run`` line for the bundle's Ascend image. Every path is injectable, so
the tests point it at a fake /dev in a temporary directory.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.atc import driver_version

ASCEND_ROOT = Path("/usr/local/Ascend")
SET_ENV = "ascend-toolkit/set_env.sh"  # under ASCEND_ROOT
# Management device nodes every NPU process needs besides its /dev/davinciN. Under Kubernetes the Ascend device
# plugin injects these and the chips itself, so common/k8s.py mounts only DRIVER_MOUNTS.
MANAGEMENT_DEVICES = ("davinci_manager", "devmm_svm", "hisi_hdc")
# Host paths a container needs read-only (ascend.md 8.2); the driver libraries always come from the host. Named
# one by one because the checks below, the docker run line and the Kubernetes manifests (common/k8s.py) share them.
DCMI = "/usr/local/dcmi"
NPU_SMI = "/usr/local/bin/npu-smi"
DRIVER_LIB64 = "/usr/local/Ascend/driver/lib64"
DRIVER_VERSION_INFO = "/usr/local/Ascend/driver/version.info"
ASCEND_INSTALL_INFO = "/etc/ascend_install.info"
DRIVER_MOUNTS = (DCMI, NPU_SMI, DRIVER_LIB64, DRIVER_VERSION_INFO, ASCEND_INSTALL_INFO)
DRIVER_MOUNT_DIRS = frozenset({DCMI, DRIVER_LIB64})  # the rest of DRIVER_MOUNTS are files
_DAVINCI = re.compile(r"davinci(\d+)")


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, whether it is there, and what to do when it is not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok     " if self.ok else "MISSING"
        text = f"[{mark}] {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n            -> {self.fix}"


def npu_devices(dev_root: Path = Path("/dev")) -> list[int]:
    """Indices N of the ``davinciN`` chip device nodes under ``dev_root``, sorted."""
    try:
        names = [p.name for p in Path(dev_root).iterdir()]
    except OSError:
        return []
    return sorted(int(m[1]) for n in names if (m := _DAVINCI.fullmatch(n)))


def diagnose(
    dev_root: Path = Path("/dev"),
    *,
    ascend_root: Path = ASCEND_ROOT,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    import_module: Callable[[str], object] = importlib.import_module,
) -> list[Finding]:
    """Check the NPU devices, driver, npu-smi, CANN environment and aclruntime; one Finding each."""
    env = os.environ if env is None else env
    dev_root, ascend_root = Path(dev_root), Path(ascend_root)
    findings: list[Finding] = []

    chips = npu_devices(dev_root)
    findings.append(
        Finding(
            "NPU chips (/dev/davinciN)",
            bool(chips),
            ", ".join(f"/dev/davinci{n}" for n in chips) if chips else f"no davinciN device node in {dev_root}",
            "pass each chip to the container: --device /dev/davinciN (on the host: ls /dev/davinci*; "
            "no node on the host means no NPU driver is loaded there)",
        )
    )
    for name in MANAGEMENT_DEVICES:
        node = dev_root / name
        present = node.exists()
        findings.append(
            Finding(
                f"/dev/{name}",
                present,
                "present" if present else f"{node} is missing (management device every NPU process needs)",
                f"--device /dev/{name}",
            )
        )
    for node in [dev_root / f"davinci{n}" for n in chips] + [dev_root / m for m in MANAGEMENT_DEVICES]:
        if node.exists() and not os.access(node, os.R_OK | os.W_OK):
            gid = node.stat().st_gid
            findings.append(
                Finding(
                    f"access to /dev/{node.name}",
                    False,
                    f"uid {os.getuid()} cannot open it (group id {gid})",
                    f"add the device group: --group-add {gid} (or run as root: --user 0)",
                )
            )

    driver = ascend_root / "driver"
    lib64 = driver / "lib64"
    findings.append(
        Finding(
            "driver libraries",
            lib64.is_dir(),
            str(lib64) if lib64.is_dir() else f"{lib64} not found",
            f"mount the host driver read-only: -v {DRIVER_LIB64}:{DRIVER_LIB64}:ro",
        )
    )
    info = driver / "version.info"
    version = driver_version(info)
    findings.append(
        Finding(
            "driver version",
            version is not None,
            f"{version} ({info})" if version else f"{info} not found",
            f"-v {DRIVER_VERSION_INFO}:{DRIVER_VERSION_INFO}:ro "
            "(the container's CANN must be compatible with the host driver)",
        )
    )
    smi = which("npu-smi")
    findings.append(
        Finding(
            "npu-smi",
            smi is not None,
            smi or "not on PATH",
            f"mount it from the host: -v {NPU_SMI}:{NPU_SMI}:ro "
            "(some hosts have it in /usr/local/sbin)",
        )
    )

    set_env = ascend_root / SET_ENV
    home = env.get("ASCEND_TOOLKIT_HOME")
    if home:
        findings.append(Finding("CANN environment", True, f"ASCEND_TOOLKIT_HOME={home}"))
    elif set_env.is_file():
        findings.append(
            Finding(
                "CANN environment",
                False,
                f"{set_env} exists but was not sourced (ASCEND_TOOLKIT_HOME unset)",
                f"source {set_env} (the zoo images' entrypoint does this)",
            )
        )
    else:
        findings.append(
            Finding(
                "CANN environment",
                False,
                f"no CANN toolkit ({set_env} not found, ASCEND_TOOLKIT_HOME unset)",
                "use the bundle's Ascend image (docker build -f bundles/<bundle>/Dockerfile --target ascend .), "
                "built on a CANN 8.x image",
            )
        )

    try:
        import_module("aclruntime")
        findings.append(Finding("aclruntime (ais_bench backend)", True, "importable"))
    except Exception as e:  # ImportError, or OSError from a missing libascendcl.so / driver library
        findings.append(
            Finding(
                "aclruntime (ais_bench backend)",
                False,
                f"cannot import: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "),
                "use the Ascend image (aclruntime + ais_bench are built there from the pinned Ascend/tools "
                "commit) with the driver mounted; on CPU use --backend onnxruntime",
            )
        )
    return findings


def docker_run_line(bundle: str, devices: Sequence[int | str] = ()) -> str:
    """The ``docker run`` line for the bundle's Ascend image (ascend.md 8.2), as one copy-pastable line.

    ``devices``: chip indices (or ``/dev/davinciN`` paths) to expose; none given means ``/dev/davinci0``.
    The container's user (uid 1000) joins the group that owns the device nodes on the host.
    """
    chips = [d if str(d).startswith("/dev/") else f"/dev/davinci{d}" for d in devices] or ["/dev/davinci0"]
    devs = " ".join(f"--device {d}" for d in [*chips, *(f"/dev/{m}" for m in MANAGEMENT_DEVICES)])
    mounts = " ".join(f"-v {p}:{p}:ro" for p in DRIVER_MOUNTS)
    return (
        f'docker run --rm {devs} --group-add "$(stat -c %g /dev/davinci_manager)" {mounts} '
        f'-v /path/to/dataset:/data:ro -v "$PWD/runs:/out" '
        f"zoo/{bundle}:ascend eval --data /data --backend ais_bench"
    )


def main_doctor(bundle: str | None = None, *, dev_root: Path = Path("/dev"), **kw) -> int:
    """Print the readiness report and the docker run line; 0 when everything is there, else 1."""
    bundle = bundle or os.environ.get("ZOO_BUNDLE") or "<bundle>"
    findings = diagnose(dev_root, **kw)
    missing = [f for f in findings if not f.ok]
    print(f"zoo doctor: Ascend NPU readiness for bundle {bundle}")
    for f in findings:
        print("  " + f.line())
    chips = npu_devices(dev_root)
    print(f"devices: {', '.join(f'/dev/davinci{n}' for n in chips) or 'no NPU device found'}")
    print(
        "On the NPU host, run the Ascend image with the devices and the host driver mounted "
        "(ascend.md 8.2; with Ascend Docker Runtime use -e ASCEND_VISIBLE_DEVICES=0 instead):"
    )
    print("  " + docker_run_line(bundle, chips))
    if missing:
        print(f"zoo doctor: {len(missing)} of {len(findings)} checks failed: not ready for ais_bench on an NPU")
        return 1
    print("zoo doctor: ready for the ais_bench backend")
    return 0
