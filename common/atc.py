"""The thin ATC layer: ONNX -> OM command lines, their failures, and a probe of the Ascend environment.

Facts: shared/specs/ascend.md §5 (ATC flags), §6 (errors), §1/§8.4 (layout, set_env.sh), §12 (scope).
Nothing here needs an NPU or CANN to be importable; only :func:`run_atc` needs ``atc`` on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from common.errors import InputError, ZooError
from common.manifest import AtcConfig, TensorSpec

ASCEND_ROOT = Path("/usr/local/Ascend")
ATC_LOG_LEVELS = ("debug", "info", "warning", "error", "null")

# Flags atc_command sets itself; AtcConfig.extra_args must not repeat them (ATC would take one silently).
_OWN_FLAGS = (
    "--framework",
    "--model",
    "--output",
    "--input_format",
    "--input_shape",
    "--soc_version",
    "--precision_mode",
    "--log",
    "--out_nodes",
)


class AtcError(ZooError):
    """ATC failed, or its output is missing; the message carries the explanation and the log path."""


# --------------------------------------------------------------------------------------------------------
# npu-smi

# A chip row's second cell is a PCI bus id, a process row's a pid; the NPU row's is the health word.
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([^\s|]+)\s*\|\s*[A-Za-z]")


def soc_version_from_npu_smi(text: str) -> str:
    """``--soc_version`` from ``npu-smi info`` table text: ``"Ascend" + Name`` (``310P3`` -> ``Ascend310P3``).

    Every NPU row must name the same chip (an OM runs only on the SoC it was built for).
    Raises ValueError when no NPU row is found or the chips differ.
    """
    names = []
    for line in text.splitlines():
        m = _NPU_ROW.match(line.strip())
        if m:
            names.append(m.group(2))
    if not names:
        raise ValueError("no NPU row (| <id> <Name> | <Health> | ...) found in the npu-smi info output")
    socs = sorted({n if n.startswith("Ascend") else f"Ascend{n}" for n in names})
    if len(socs) > 1:
        raise ValueError(f"npu-smi lists different chips {socs}; choose the target chip explicitly")
    return socs[0]


# --------------------------------------------------------------------------------------------------------
# the ONNX graph


def _load_graph(onnx_path: Path) -> onnx.GraphProto:
    try:
        return onnx.load(str(onnx_path), load_external_data=False).graph
    except FileNotFoundError:
        raise InputError(onnx_path, "ONNX file not found") from None
    except Exception as e:  # onnx raises DecodeError and friends for a corrupt or non-ONNX file
        raise InputError(onnx_path, f"not a readable ONNX model: {e}") from e


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type.tensor_type
    # dim_value 0 means "unset" in the proto: a symbolic (dim_param) or unknown axis, i.e. dynamic.
    shape = tuple(d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim)
    try:
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    except (KeyError, ValueError):
        dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower()
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)


def graph_io(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs, in graph order; dynamic dims are -1."""
    graph = _load_graph(Path(onnx_path))
    initializers = {i.name for i in graph.initializer}  # old exporters list weights as inputs too
    inputs = [_spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [_spec(v) for v in graph.output]


def derive_out_nodes(onnx_path: Path, output_names: Sequence[str]) -> list[str]:
    """``"NodeName:k"`` of the node producing each named graph output, in the given order (``--out_nodes``).

    Node names drift with the torch/onnx version (``Reshape_239`` ...), so they are read from the graph, never
    hard-coded (ascend.md §5, refinedet.md §7).
    """
    onnx_path = Path(onnx_path)
    graph = _load_graph(onnx_path)
    graph_outputs = [o.name for o in graph.output]
    producer: dict[str, str] = {}
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name:
                producer[name] = f"{node.name}:{k}" if node.name else ""
    nodes = []
    for name in output_names:
        if name not in graph_outputs:
            raise InputError(onnx_path, f"graph has no output {name!r}; its outputs are {graph_outputs}")
        if name not in producer:
            raise InputError(
                onnx_path, f"output {name!r} is not produced by any node (an input or a constant)"
            )
        if not producer[name]:
            raise InputError(onnx_path, f"the node producing output {name!r} has no name; ATC needs one")
        nodes.append(producer[name])
    return nodes


# --------------------------------------------------------------------------------------------------------
# the command


def _input_shape_arg(onnx_path: Path, inputs: Sequence[TensorSpec], batch_size: int) -> str:
    parts = []
    for spec in inputs:
        if not spec.shape:
            raise InputError(onnx_path, f"input {spec.name!r} is a scalar; ATC needs a batch axis")
        # axis 0 is the batch where the graph leaves it dynamic; a static axis 0 (e.g. SA-Siam's 3 search scales)
        # is part of the graph and stays, which only fits the batch-1 OM of a single-item tracker
        if spec.shape[0] > 0 and batch_size != 1:
            raise InputError(onnx_path, f"input {spec.name!r} has a static leading axis {spec.shape[0]}: only "
                                        "batch size 1 applies")
        dims = [batch_size if spec.shape[0] <= 0 else spec.shape[0], *spec.shape[1:]]
        dynamic = [i for i, d in enumerate(dims) if d <= 0]
        if dynamic:
            raise InputError(
                onnx_path, f"input {spec.name!r} has dynamic axes {dynamic} besides the batch: {spec.shape}"
            )
        parts.append(f"{spec.name}:{','.join(str(d) for d in dims)}")
    return ";".join(parts)


def atc_command(
    onnx_path: Path,
    output_stem: Path,
    *,
    batch_size: int,
    soc_version: str,
    atc: AtcConfig,
    out_nodes: Sequence[str] | None = None,
    log: str = "error",
) -> list[str]:
    """The ``atc`` argv building one static-batch OM ``<output_stem>.om`` from an ONNX graph.

    ``--input_shape`` comes from the graph's own inputs with axis 0 set to ``batch_size`` (several inputs
    joined by ``;``). Paths are made absolute because ATC and the ais_bench profiler may change directory.
    No shell quoting is needed: the list goes to ``subprocess`` as is.
    """
    onnx_path = Path(onnx_path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not re.fullmatch(r"Ascend\w+", soc_version):
        raise ValueError(
            f"soc_version must look like 'Ascend310P3' (\"Ascend\" + npu-smi Name), got {soc_version!r}"
        )
    if log not in ATC_LOG_LEVELS:
        raise ValueError(f"log must be one of {ATC_LOG_LEVELS}, got {log!r}")
    for arg in atc.extra_args:
        if arg.split("=", 1)[0] in _OWN_FLAGS:
            raise ValueError(
                f"atc.extra_args: {arg!r} repeats a flag the zoo sets itself; use the manifest key"
            )
    inputs, _ = graph_io(onnx_path)
    if not inputs:
        raise InputError(onnx_path, "graph has no inputs")
    cmd = [
        "atc",
        "--framework=5",  # 5 = ONNX
        f"--model={onnx_path.resolve()}",
        f"--output={Path(output_stem).resolve()}",
        f"--input_format={atc.input_format}",
        f"--input_shape={_input_shape_arg(onnx_path, inputs, batch_size)}",
        f"--soc_version={soc_version}",
        f"--precision_mode={atc.precision_mode}",
        f"--log={log}",
    ]
    if out_nodes:
        bad = [n for n in out_nodes if not re.fullmatch(r"[^:;]+:\d+", n)]
        if bad:
            raise ValueError(f"out_nodes must be 'NodeName:index', got {bad}")
        cmd.append(f"--out_nodes={';'.join(out_nodes)}")
    cmd.extend(atc.extra_args)
    return cmd


# --------------------------------------------------------------------------------------------------------
# running it

# (pattern, explanation + action), first match wins; from ascend.md §6.
_KNOWN_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"E10016"),
        "E10016: a node or input named in --out_nodes/--input_shape is not in the model (node numbering "
        "drifts with the torch/onnx version) - derive out_nodes from the exported ONNX and name inputs "
        "at export",
    ),
    (
        re.compile(r"E11017"),
        "E11017: a node given by --out_nodes was not found - derive out_nodes from the exported ONNX graph",
    ),
    (
        re.compile(r"E16005"),
        "E16005: the model has several domain-version fields (custom op domains) - clear non-standard node "
        "domains before running ATC",
    ),
    (
        re.compile(r"atc: (command )?not found|No such file or directory: '?atc'?"),
        "atc is not on PATH: set_env.sh was not sourced in this process - source "
        "/usr/local/Ascend/ascend-toolkit/set_env.sh (the image entrypoint must do it)",
    ),
    (
        re.compile(r"libascendcl\.so: cannot open shared object file"),
        "libascendcl.so not found: set_env.sh was not sourced (or the driver libraries are not mounted) - "
        "source set_env.sh and mount /usr/local/Ascend/driver",
    ),
    (
        re.compile(r"acl open device \d+ failed|0x7020014|507033"),
        "the device cannot be opened: device nodes not mapped into the container, driver/firmware "
        "mismatch or device busy - check --device / ASCEND_VISIBLE_DEVICES, the driver version and "
        "npu-smi info",
    ),
    (
        re.compile(r"EZ9999"),
        "EZ9999: runtime AI Core kernel error (dumps exception_cb_index_* into the working directory) - "
        "run from a writable directory and inspect the dump",
    ),
)


def explain_atc_failure(output: str) -> str | None:
    """One-line explanation and action for a known ATC / runtime failure in ``output``; None if unknown."""
    for pattern, explanation in _KNOWN_FAILURES:
        if pattern.search(output):
            return explanation
    return None


def _output_stem(cmd: Sequence[str]) -> Path:
    for i, arg in enumerate(cmd):
        if arg.startswith("--output="):
            return Path(arg.split("=", 1)[1])
        if arg == "--output" and i + 1 < len(cmd):
            return Path(cmd[i + 1])
    raise ValueError(f"ATC command has no --output: {list(cmd)}")


def _tail(text: str, n: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


def run_atc(cmd: list[str], log_path: Path, timeout_s: float | None = None) -> Path:
    """Run an :func:`atc_command` argv, keep its combined stdout/stderr in ``log_path``, return ``<stem>.om``.

    Raises AtcError with the explanation of a known failure (or the log's last lines) and the log path.
    """
    stem = _output_stem(cmd)
    om = stem.parent / f"{stem.name}.om"  # ATC appends .om; with_suffix would eat a dotted stem
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # ATC overwrites the file anyway; removing it first keeps a stale OM from passing the existence check.
    om.unlink(missing_ok=True)
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout_s,
        )
    except FileNotFoundError as e:
        text = f"{cmd[0]}: command not found ({e})"
        log_path.write_text(f"$ {' '.join(cmd)}\n{text}\n")
        raise AtcError(f"ATC did not start: {explain_atc_failure(text)}; log: {log_path}") from None
    except subprocess.TimeoutExpired as e:
        out = e.output if isinstance(e.output, str) else (e.output or b"").decode("utf-8", "replace")
        log_path.write_text(f"$ {' '.join(cmd)}\n{out}\n[killed after {timeout_s} s]\n")
        raise AtcError(f"ATC ran past {timeout_s} s; log: {log_path}") from None
    log_path.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}")
    if proc.returncode != 0:
        why = explain_atc_failure(proc.stdout) or f"last lines: {_tail(proc.stdout)}"
        raise AtcError(f"ATC failed (exit {proc.returncode}): {why}; log: {log_path}")
    if not om.is_file():
        why = explain_atc_failure(proc.stdout) or f"last lines: {_tail(proc.stdout)}"
        raise AtcError(f"ATC exited 0 but wrote no {om}: {why}; log: {log_path}")
    return om


# --------------------------------------------------------------------------------------------------------
# environment probe


def driver_version(version_info: Path) -> str | None:
    """The driver version from /usr/local/Ascend/driver/version.info (None when unreadable)."""
    try:
        text = version_info.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^\s*(?:Version|version)\s*=\s*(\S+)", text, re.MULTILINE)
    return m.group(1) if m else (text.strip().splitlines() or [None])[0]


def _cann_version(toolkit_home: str | None, root: Path) -> str | None:
    # ascend-toolkit/latest is a symlink to the versioned directory (e.g. 8.2.RC1), whose name is the release.
    for candidate in (toolkit_home, str(root / "ascend-toolkit" / "latest")):
        if not candidate:
            continue
        p = Path(candidate)
        try:
            resolved = p.resolve(strict=True)
        except OSError:
            continue
        name = resolved.name
        if name == "latest" or not re.search(r"\d", name):
            # not a symlink to a versioned dir: the toolkit's install info may still say it
            for info in sorted(resolved.glob("*/ascend_toolkit_install.info")):
                m = re.search(r"^\s*version\s*=\s*(\S+)", info.read_text(errors="replace"), re.MULTILINE)
                if m:
                    return m.group(1)
            continue
        return name
    return None


def _npu_smi_soc(npu_smi: str | None, timeout_s: float) -> tuple[str | None, str | None]:
    if not npu_smi:
        return None, None
    try:
        proc = subprocess.run(
            [npu_smi, "info"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s
        )
        return soc_version_from_npu_smi(proc.stdout), None
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"


def probe_ascend(
    env: Mapping[str, str] | None = None, root: Path = ASCEND_ROOT, timeout_s: float = 20.0
) -> dict[str, str | None]:
    """What this machine offers for Ascend work; every value is a string or None, and it never raises.

    Keys: ``atc`` (path), ``ascend_toolkit_home``, ``cann_version``, ``driver_version``, ``npu_smi`` (path),
    ``soc_version`` (from npu-smi), ``npu_smi_error`` (why soc_version is None when npu-smi exists).
    """
    env = os.environ if env is None else env
    path = env.get("PATH")
    result: dict[str, str | None] = dict.fromkeys(
        (
            "atc",
            "ascend_toolkit_home",
            "cann_version",
            "driver_version",
            "npu_smi",
            "soc_version",
            "npu_smi_error",
        )
    )
    try:
        result["atc"] = shutil.which("atc", path=path)
        result["ascend_toolkit_home"] = env.get("ASCEND_TOOLKIT_HOME") or None
        result["cann_version"] = _cann_version(result["ascend_toolkit_home"], root)
        result["driver_version"] = driver_version(root / "driver" / "version.info")
        # npu-smi lives in /usr/local/bin on most hosts, /usr/local/sbin on some older ones (ascend.md §1).
        result["npu_smi"] = shutil.which("npu-smi", path=path) or next(
            (
                str(p)
                for p in (Path("/usr/local/bin/npu-smi"), Path("/usr/local/sbin/npu-smi"))
                if p.is_file()
            ),
            None,
        )
        result["soc_version"], result["npu_smi_error"] = _npu_smi_soc(result["npu_smi"], timeout_s)
    except Exception as e:  # a probe is diagnostics: report, never crash the caller
        result["npu_smi_error"] = result["npu_smi_error"] or f"probe failed: {type(e).__name__}: {e}"
    return result


def detect_soc_version() -> str:
    """`--soc_version` for this host from `npu-smi info` (an OM runs only on the SoC it was built for)."""
    try:
        text = subprocess.run(["npu-smi", "info"], capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ZooError(f"npu-smi unavailable ({e}): pass --soc-version (e.g. Ascend310P3), or mount the host's "
                       "npu-smi (see `zoo doctor`)") from None
    try:
        return soc_version_from_npu_smi(text)
    except ValueError as e:
        raise ZooError(f"npu-smi info: {e}") from None
