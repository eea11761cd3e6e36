"""The semantic branch's frozen CaffeNet weights: the pickled-dict `caffenet.npy` of shared/specs/sa_siam.md 4.2.

The file is a `.npy` holding a 0-d object array whose item is `{layer: {'weights': HWIO, 'biases': [O]}}` (the
caffe-tensorflow layout). Upstream reads it with `np.load(allow_pickle=True, encoding='latin1').item()`, which runs
arbitrary pickle code; nobody publishes this file (its provenance is UNCERTAIN, spec 15.1), so it comes from a
third party and is read here with a restricted unpickler that can only rebuild numpy arrays and dtypes.

Conversion: HWIO -> OIHW (transpose 3, 2, 0, 1). The 2-group layers (conv2, conv4, conv5) need no reordering: the
file's first output half is upstream's `b1`, which sees the first input half, exactly as a PyTorch grouped conv
with groups=2 splits its weight on O. `fc*` layers are skipped (the trunk stops at conv5).
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy_format
import torch

from common.errors import CheckpointError, InputError

# layer -> (weights HWIO, biases): spec 4.2
CAFFENET_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "conv1": ((11, 11, 3, 96), (96,)),
    "conv2": ((5, 5, 48, 256), (256,)),
    "conv3": ((3, 3, 256, 384), (384,)),
    "conv4": ((3, 3, 192, 384), (384,)),
    "conv5": ((3, 3, 192, 256), (256,)),
}
GROUPED_LAYERS = ("conv2", "conv4", "conv5")  # caffe group = 2, upstream's b1/b2 split


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals an array pickle needs. `_reconstruct` is taken from ndarray's own reduce so that both the
    numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`) names resolve without importing deprecated modules."""
    reconstruct = np.empty(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    # A protocol-2 pickle written by Python 3 stores bytes as `_codecs.encode(str, 'latin1')`.
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, dicts, lists and strings, and refuses every other global."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles name modules the old way; numpy's names did not change, so no fix-up is needed.
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _read_npy_object(path: Path) -> Any:
    """The object stored in a pickled (dtype object) .npy, read without executing arbitrary pickle code."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    fp = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(fp)
    except ValueError:
        raise CheckpointError(path, "not a .npy file (bad magic); expected the pickled-dict caffenet.npy") from None
    try:
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise CheckpointError(path, f".npy format version {version} is not supported (1.0 or 2.0)")
    except ValueError as e:
        raise CheckpointError(path, f"malformed .npy header: {e}") from None
    if not dtype.hasobject:
        raise CheckpointError(
            path, f"holds a plain {dtype} array of shape {list(shape)}, not a pickled dict of layers")
    try:
        obj = _ArrayUnpickler(fp, encoding="latin1").load()  # latin1: Python 2 pickles (caffe-tensorflow era)
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, f"refused by the restricted unpickler: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise CheckpointError(path, f"corrupt pickled payload: {type(e).__name__}: {e}") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    return obj


def load_caffenet_npy(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a caffenet.npy safely, check every layer of spec 4.2, and return the trunk's state_dict
    (`conv1.weight` OIHW, `conv1.bias`, ... `conv5.bias`; float32). Errors name the file and the layer."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "caffenet.npy not found")
    layers = _read_npy_object(path)
    if not isinstance(layers, Mapping):
        raise CheckpointError(path, f"expected a dict {{layer: {{'weights', 'biases'}}}}, got {type(layers).__name__}")
    unexpected = sorted(str(k) for k in layers if "fc" not in str(k) and k not in CAFFENET_SHAPES)
    if unexpected:
        raise CheckpointError(path, f"unexpected layer(s) {unexpected}; a CaffeNet file has conv1..conv5 (+ fc*)")
    state: dict[str, torch.Tensor] = {}
    for layer, (w_shape, b_shape) in CAFFENET_SHAPES.items():
        if layer not in layers:
            raise CheckpointError(
                path, f"layer '{layer}' missing (expected weights {list(w_shape)}, biases {list(b_shape)}); "
                      f"found {sorted(map(str, layers))}")
        entry = layers[layer]
        if not isinstance(entry, Mapping):
            raise CheckpointError(path, f"layer '{layer}': expected a dict with 'weights' and 'biases', "
                                        f"got {type(entry).__name__}")
        arrays = {}
        for part, expected in (("weights", w_shape), ("biases", b_shape)):
            if part not in entry:
                raise CheckpointError(path, f"layer '{layer}': '{part}' missing (expected {list(expected)})")
            arr = entry[part]
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
                kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise CheckpointError(path, f"layer '{layer}' {part}: expected a float array, got {kind}")
            if tuple(arr.shape) != expected:
                raise CheckpointError(
                    path, f"layer '{layer}' {part} have shape {list(arr.shape)}, expected {list(expected)}")
            arrays[part] = arr
        weight = np.ascontiguousarray(arrays["weights"].transpose(3, 2, 0, 1), dtype=np.float32)  # HWIO -> OIHW
        state[f"{layer}.weight"] = torch.from_numpy(weight)
        state[f"{layer}.bias"] = torch.from_numpy(np.ascontiguousarray(arrays["biases"], dtype=np.float32))
    return state


def save_caffenet_npy(path: str | Path, layers: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `{layer: {'weights': HWIO, 'biases': [O]}}` in the caffenet.npy format (a pickled 0-d object array),
    atomically. For tests and the demo's synthetic stand-in; writing a pickle is safe, reading one is not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {str(name): {str(k): np.asarray(v) for k, v in entry.items()} for name, entry in layers.items()}
    box = np.empty((), dtype=object)
    box[()] = payload
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, box, allow_pickle=True)
    tmp.replace(path)
    return path


def random_caffenet(seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic random CaffeNet layers in the file's layout (HWIO float32 + biases), for the demo and tests.

    He-scaled over each group's fan-in so that mean-subtracted 0..255 inputs keep finite, non-vanishing activations
    through the 5 ReLU/LRN layers; small positive biases keep some ReLUs alive, as in trained AlexNets."""
    rng = np.random.default_rng(seed)
    layers: dict[str, dict[str, np.ndarray]] = {}
    for layer, (w_shape, b_shape) in CAFFENET_SHAPES.items():
        kh, kw, cin, _ = w_shape
        std = (2.0 / (kh * kw * cin)) ** 0.5
        layers[layer] = {
            "weights": (rng.standard_normal(w_shape) * std).astype(np.float32),
            "biases": (0.1 * rng.random(b_shape)).astype(np.float32),
        }
    return layers
