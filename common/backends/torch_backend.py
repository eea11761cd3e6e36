"""Eager torch backend (CPU, CUDA, or NPU through torch_npu when installed): the reference for parity checks."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.backends.base import Backend
from common.manifest import ModelIO


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, module: nn.Module, io: ModelIO, *, device: str = "cpu"):
        super().__init__()
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # Published numbers are fp32. On Ampere/Hopper torch runs fp32 convolutions as TF32 (10-bit mantissa)
            # by default; on the H100 that moved RefineDet's softmax outputs by up to 0.05 vs ONNX Runtime.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.module = module.eval().to(self.device)
        self.input_names = tuple(t.name for t in io.inputs)
        self.output_names = tuple(t.name for t in io.outputs)

    @torch.inference_mode()
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(feeds[n]).to(self.device) for n in self.input_names]
        out = self.module(*args)
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        if len(out) != len(self.output_names):
            raise RuntimeError(f"torch module returned {len(out)} outputs, manifest names {self.output_names}")
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {n: t.detach().cpu().numpy() for n, t in zip(self.output_names, out, strict=True)}

    def describe(self) -> dict[str, str]:
        info = {"backend": self.name, "torch": torch.__version__, "device": str(self.device),
                "threads": str(torch.get_num_threads())}
        if self.device.type == "cuda":
            info.update(gpu=torch.cuda.get_device_name(self.device), tf32="off")
        return info
