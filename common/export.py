"""torch -> ONNX export with named inputs/outputs and a dynamic batch axis, checked against the manifest."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from common.errors import ZooError
from common.manifest import ModelIO, TensorSpec


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim)


def check_graph(path: Path, io: ModelIO) -> onnx.ModelProto:
    """onnx.checker + shape inference, then every manifest input/output must exist by name with its shape
    (-1 = dynamic). Raises ZooError naming the file and the first mismatch."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph_in = {v.name: _dims(v) for v in inferred.graph.input}
    graph_out = {v.name: _dims(v) for v in inferred.graph.output}
    for kind, specs, found in (("input", io.inputs, graph_in), ("output", io.outputs, graph_out)):
        if [s.name for s in specs] != list(found):
            raise ZooError(f"{path}: graph {kind}s {list(found)} differ from the manifest's {[s.name for s in specs]}")
        for spec in specs:
            if not _shape_matches(spec, found[spec.name]):
                raise ZooError(f"{path}: {kind} {spec.name!r} has shape {found[spec.name]}, manifest says {spec.shape}")
    return model


def _shape_matches(spec: TensorSpec, dims: tuple[int, ...]) -> bool:
    return len(spec.shape) == len(dims) and all(s == -1 or s == d for s, d in zip(spec.shape, dims, strict=True))


def export_onnx(module: nn.Module, io: ModelIO, path: Path, *, dynamic_batch: bool = True) -> Path:
    """Export `module` (forward takes the inputs in manifest order) to `path` at the manifest's opset.

    Uses the TorchScript exporter: the seeds' graphs are opset 11 and ATC accepts v11-v15, while the
    torch.export-based exporter only emits opset >= 18."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.zeros([1 if d == -1 else d for d in t.shape]) for t in io.inputs)
    axes = {t.name: {0: "batch"} for t in (*io.inputs, *io.outputs) if dynamic_batch and t.shape[0] == -1}
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is expected, see docstring
        torch.onnx.export(
            module.eval(), example, str(tmp), dynamo=False, opset_version=io.opset,
            input_names=[t.name for t in io.inputs], output_names=[t.name for t in io.outputs],
            dynamic_axes=axes or None, do_constant_folding=True,
        )
    check_graph(tmp, io)
    tmp.replace(path)
    return path
