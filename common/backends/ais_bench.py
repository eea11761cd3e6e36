"""The ais_bench backend: an OM on an Ascend NPU through ``ais_bench.infer.interface.InferSession``.

Facts: shared/specs/ascend.md §2 (install), §3 (Python API and its variants), §4.3 (what the timer measures);
refinedet.md §7 (OM output order). Thin on purpose: open, warm up, run, map outputs, time, release.

API variants (feature-detected, never chosen by version string: both report 0.0.2):

* 9d6da90-era (our pin): ``sumary()`` whose ``exec_time_list`` holds one duration per execution (ms),
  ``reset_sumaryinfo()``, ``finalize()``.
* later (ait / msit): ``summary()`` whose ``exec_time_list`` holds ``(start, end)`` pairs (ms; the later CLI
  takes ``end - start``), ``free_resource()``; ``finalize`` becomes a class-wide static method, so it is only
  used when ``free_resource`` is absent.

Output mapping: ATC keeps ``--out_nodes`` order, which need not be the manifest's order, and the OM's tensor
names are not reliable. Outputs are therefore matched to manifest names **by shape**. Outputs of the same
shape (RefineDet's ``arm_loc`` and ``odm_loc``, both (B, 6375, 4)) are told apart by ``output_order`` when
given, else by manifest order; **verify that order once against ONNX Runtime on one image** (a swap gives a
large mismatch), then pin it as ``output_order``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from common.backends.base import Backend
from common.errors import BackendUnavailable, InputError, ZooError
from common.manifest import TensorSpec

INSTALL_HINT = (
    "install aclruntime+ais_bench built from Ascend/tools@9d6da90fd0d3e5d232676c7a4527f7d92ac70e5c "
    "(ais-bench_workload/tool/ais_bench) in a CANN environment (set_env.sh sourced)"
)


def _shape_matches(spec: Sequence[int], shape: Sequence[int]) -> bool:
    """A -1 in the spec matches any size (the dynamic batch axis)."""
    return len(spec) == len(shape) and all(s == -1 or s == d for s, d in zip(spec, shape, strict=True))


def map_outputs_by_shape(
    shapes: Sequence[tuple[int, ...]],
    outputs: Sequence[TensorSpec],
    output_order: Sequence[str] | None = None,
) -> list[str]:
    """Manifest name of each OM output position, from the OM output shapes (in OM order).

    A shape matching one manifest spec decides alone. Specs with equal shapes form a group whose OM positions
    are named in ``output_order`` order (restricted to the group) if given, else in manifest order.
    When ``output_order`` is given it must agree with every shape-decided position.
    Raises ValueError when counts or shapes cannot be matched.
    """
    names = [o.name for o in outputs]
    if len(shapes) != len(outputs):
        raise ValueError(
            f"OM has {len(shapes)} outputs {list(shapes)}, the manifest lists {len(outputs)}: {names}"
        )
    if output_order is not None and sorted(output_order) != sorted(names):
        raise ValueError(f"output_order {list(output_order)} must be a permutation of the outputs {names}")
    groups: dict[tuple[int, ...], list[str]] = {}
    for o in outputs:
        groups.setdefault(tuple(o.shape), []).append(o.name)
    positions: dict[tuple[int, ...], list[int]] = {key: [] for key in groups}
    for p, shape in enumerate(shapes):
        hits = [key for key in groups if _shape_matches(key, shape)]
        if len(hits) != 1:
            what = "no manifest output" if not hits else f"several manifest shapes {hits}"
            raise ValueError(
                f"OM output {p} of shape {tuple(shape)} matches {what}; manifest outputs: "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        positions[hits[0]].append(p)
    result: list[str] = [""] * len(shapes)
    for key, members in groups.items():
        if len(positions[key]) != len(members):
            raise ValueError(
                f"{len(positions[key])} OM outputs have shape {key} "
                f"but the manifest has {len(members)}: {members}"
            )
        ordered = [n for n in output_order if n in members] if output_order is not None else members
        for p, name in zip(positions[key], ordered, strict=True):
            result[p] = name
    if output_order is not None and result != list(output_order):
        raise ValueError(
            f"output_order {list(output_order)} contradicts the OM output shapes, which give {result}"
        )
    return result


def _entry_ms(entry: Any) -> float:
    """One ``exec_time_list`` entry in ms: a duration (9d6da90) or a ``(start, end)`` pair (later ones)."""
    if isinstance(entry, (tuple, list)):
        return float(entry[1]) - float(entry[0])
    return float(entry)


class AisBenchBackend(Backend):
    """An OM loaded on one NPU device; outputs come back named by the manifest (mapped by shape)."""

    name = "ais_bench"

    def __init__(
        self,
        om_path: Path,
        outputs: Sequence[TensorSpec],
        inputs: Sequence[TensorSpec],
        device_id: int = 0,
        warmup: int = 1,
        output_order: Sequence[str] | None = None,
    ) -> None:
        """Open ``om_path`` on ``device_id``, run ``warmup`` executions on zeros, then reset the timers.

        ``inputs`` are in OM input order; a -1 axis is taken from the session's own input descriptors (a
        static OM has none left). ``output_order``: manifest output names in the OM's output order, verified
        once against ONNX Runtime; it decides between outputs of equal shape.
        """
        super().__init__()
        try:
            from ais_bench.infer.interface import InferSession
        except (ImportError, OSError) as e:  # OSError: libascendcl.so / driver libraries not loadable
            raise BackendUnavailable(f"ais_bench backend unavailable: {e}; {INSTALL_HINT}") from e
        self.om_path = Path(om_path)
        if not self.om_path.is_file():
            raise InputError(self.om_path, "OM file not found (build it with `atc`, see common.atc)")
        self.device_id = int(device_id)
        self.input_specs = tuple(inputs)
        self.output_specs = tuple(outputs)
        self.input_names = tuple(t.name for t in self.input_specs)
        self.output_names = tuple(t.name for t in self.output_specs)
        self.output_order = None if output_order is None else tuple(output_order)
        if self.output_order is not None and sorted(self.output_order) != sorted(self.output_names):
            raise ValueError(
                f"output_order {list(self.output_order)} must be a permutation of {self.output_names}"
            )
        try:
            self._session = InferSession(self.device_id, str(self.om_path))
        except Exception as e:  # aclruntime raises RuntimeError-like errors with its own codes (ascend.md §6)
            raise ZooError(
                f"{self.om_path}: ais_bench could not load the OM on device {self.device_id}: {e} "
                "(device not mapped or busy, driver mismatch, or OM built for another --soc_version)"
            ) from e
        self._closed = False
        s = self._session
        # Feature detection (ascend.md §3): later releases add summary(); both keep the misspelt sumary().
        self._summary = getattr(s, "summary", None) or getattr(s, "sumary", None)
        self._reset = getattr(s, "reset_sumaryinfo", None)
        self._release_name = "free_resource" if hasattr(s, "free_resource") else "finalize"
        self.api_variant = (
            f"{'summary' if hasattr(s, 'summary') else 'sumary'}()"
            f"{' reset_sumaryinfo()' if self._reset else ''} {self._release_name}()"
        )
        self._mapping: dict[tuple[tuple[int, ...], ...], list[str]] = {}
        self._time_mark = 0  # exec_time_list entries already consumed
        self._pending_ms: float | None = None
        try:
            self._warm_up(max(0, int(warmup)))
        except BaseException:
            self.close()  # do not leave the device context held by a half-built backend
            raise

    # ------------------------------------------------------------------------------------------------
    def _exec_times(self) -> list[Any] | None:
        if self._summary is None:
            return None
        try:
            return list(self._summary().exec_time_list)
        except Exception:  # a timer we cannot read must not fail an inference
            return None

    def _static_input_shapes(self) -> list[tuple[int, ...]]:
        descs = None
        if any(-1 in t.shape for t in self.input_specs) and hasattr(self._session, "get_inputs"):
            descs = list(self._session.get_inputs())
        shapes = []
        for i, spec in enumerate(self.input_specs):
            shape = list(spec.shape)
            if -1 in shape and descs is not None and i < len(descs):
                om_shape = [int(d) for d in descs[i].shape]
                if len(om_shape) == len(shape):
                    shape = [o if s == -1 else s for s, o in zip(shape, om_shape, strict=True)]
            if any(d <= 0 for d in shape):
                raise ValueError(
                    f"{self.om_path}: input {spec.name!r} shape {spec.shape} still has a dynamic axis; "
                    "give the static OM shape (batch included) in `inputs`"
                )
            shapes.append(tuple(shape))
        return shapes

    def _warm_up(self, n: int) -> None:
        if n == 0:
            return
        zeros = [
            np.zeros(shape, np.dtype(spec.dtype))
            for shape, spec in zip(self._static_input_shapes(), self.input_specs, strict=True)
        ]
        for _ in range(n):
            arrays = self._session.infer(zeros, mode="static")
        self._output_names_for(arrays)  # a shape mismatch fails here, at load time, not on the first batch
        # Warm-up executions are excluded from timing, as the ais_bench CLI does (ascend.md §3).
        if self._reset is not None:
            self._reset()
        times = self._exec_times()
        self._time_mark = 0 if times is None else len(times)
        self.timings.reset()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        before = self._time_mark
        arrays = self._session.infer([feeds[name] for name in self.input_names], mode="static")
        times = self._exec_times()
        self._pending_ms = None
        if times is not None and len(times) < before:  # someone reset the session's timers meanwhile
            before = 0
        if times is not None and len(times) > before:
            # loop > 1 records several executions per call; the call's compute time is their sum.
            self._pending_ms = sum(_entry_ms(e) for e in times[before:])
            self._time_mark = len(times)
        return {name: np.asarray(a) for name, a in zip(self._output_names_for(arrays), arrays, strict=True)}

    def _output_names_for(self, arrays: Sequence[np.ndarray]) -> list[str]:
        shapes = tuple(tuple(int(d) for d in np.shape(a)) for a in arrays)
        if shapes not in self._mapping:  # static OM: computed once, then a dict lookup per batch
            try:
                self._mapping[shapes] = map_outputs_by_shape(shapes, self.output_specs, self.output_order)
            except ValueError as e:
                raise ZooError(f"{self.om_path}: cannot map OM outputs to manifest names: {e}") from e
        return self._mapping[shapes]

    def _last_compute_ms(self, t0: float) -> float:
        """NPU compute time of the call (ais_bench's timer around the model execute), else wall clock."""
        if self._pending_ms is not None:
            return self._pending_ms
        return (time.perf_counter() - t0) * 1e3

    def describe(self) -> dict[str, str]:
        try:
            version = metadata.version("ais_bench")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return {
            "backend": self.name,
            "om": str(self.om_path),
            "device_id": str(self.device_id),
            "api": self.api_variant,
            "ais_bench_version": version,
            "timer": "ais_bench exec_time_list (NPU compute time)" if self._summary else "wall clock",
        }

    def close(self) -> None:
        """Release the model and device context once (free_resource, else finalize)."""
        if self._closed:
            return
        self._closed = True
        release = getattr(self._session, self._release_name, None)
        if release is not None:
            release()
