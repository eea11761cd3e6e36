"""ONNX Runtime backend: CPU here; CUDA / TensorRT providers when the installed build has them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.backends.base import Backend
from common.errors import BackendUnavailable

# Preference order; only providers the installed onnxruntime build offers are used.
PROVIDER_PREFERENCE = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path: Path, *, device: str = "cpu", threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        kind, _, index = device.partition(":")  # cuda:1 -> the CUDA provider on device 1 (one per sharded rank)
        wanted = PROVIDER_PREFERENCE.get(kind) if index == "" or index.isdigit() else None
        if wanted is None:
            raise BackendUnavailable(
                f"onnxruntime: unknown device {device!r}; choose from {sorted(PROVIDER_PREFERENCE)}")
        available = ort.get_available_providers()
        providers = [p for p in wanted if p in available]
        if kind != "cpu" and providers[:1] != [wanted[0]]:
            raise BackendUnavailable(f"onnxruntime {ort.__version__} has no {wanted[0]} here (available: {available})")
        if index:
            providers = [(p, {"device_id": int(index)}) if p != "CPUExecutionProvider" else p for p in providers]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._version = ort.__version__

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(list(self.output_names), feeds), strict=True))

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "onnxruntime": self._version,
            "providers": ",".join(self.session.get_providers()),
            "model": self.model_path.name,
        }
