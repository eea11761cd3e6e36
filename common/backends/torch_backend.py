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
        return {"backend": self.name, "torch": torch.__version__, "device": str(self.device),
                "threads": str(torch.get_num_threads())}
