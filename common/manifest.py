"""The bundle manifest: one TOML file per bundle, the single source of truth of what it reproduces.

Schema (see shared/DESIGN.md): ``[bundle]``, ``[upstream]``, ``[published_env]``, ``[pinned_env]``, ``[model]``,
``[atc]``, ``[artifacts.<name>]``, ``[[published]]`` (one table per published result set, with the configuration
that produced it) and ``[[throughput]]`` (published speed tables keyed by batch size).
Unknown or misspelled keys are an error that names the file and the key (pydantic ``extra="forbid"``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import ManifestError

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "bundles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleInfo(_Strict):
    name: str
    variant: str = Field(description="timm-style arch.tag, e.g. refinedet320.voc07_modelzoo")
    task: Literal["detection", "reid", "tracking", "training"]
    summary: str
    license: str = ""


class Upstream(_Strict):
    repo: str
    commit: str
    patch: str = ""
    port: str = ""

    @field_validator("commit")
    @classmethod
    def _full_sha(cls, v: str) -> str:
        if len(v) != 40 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError(f"must be a full 40-hex commit, got {v!r}")
        return v


class TensorSpec(_Strict):
    name: str
    shape: tuple[int, ...] = Field(description="-1 marks the dynamic batch axis")
    dtype: str = "float32"


class ModelIO(_Strict):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int = 11

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


class AtcConfig(_Strict):
    precision_mode: str = "force_fp16"
    input_format: str = "NCHW"
    batch_sizes: tuple[int, ...] = (1,)
    extra_args: tuple[str, ...] = ()


class Artifact(_Strict):
    """A file the bundle needs: weights or a dataset archive, with where to get it and how to check it."""

    name: str = ""
    kind: Literal["weights", "dataset", "other"]
    filename: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    md5: str | None = Field(default=None, description="only where md5 is all that is published")
    unpack: bool = False
    license: str = ""
    origin_url: str = ""
    note: str = ""

    @field_validator("sha256", "md5")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.lower()
        if any(c not in "0123456789abcdef" for c in v) or len(v) not in (32, 64):
            raise ValueError(f"not a hex digest: {v!r}")
        return v


class PublishedMetric(_Strict):
    name: str
    value: float
    unit: str = ""
    tolerance_rel: float | None = Field(default=None, description="allowed |measured-published|/published")
    tolerance_abs: float | None = None
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _one_tolerance(self) -> PublishedMetric:
        if self.tolerance_rel is None and self.tolerance_abs is None:
            raise ValueError(f"metric {self.name!r} needs tolerance_rel or tolerance_abs")
        return self


class PublishedRun(_Strict):
    """One published result set and the configuration that produced it."""

    name: str
    hardware: str
    source: str
    metrics: tuple[PublishedMetric, ...]
    batch_size: int | None = None
    default: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    note: str = ""


class ThroughputTable(_Strict):
    """A published speed table: frames (images) per second keyed by batch size."""

    hardware: str
    source: str
    measure: str = Field(description="what the time contains, e.g. 'ais_bench NPU compute time'")
    convention: Literal["per_device", "per_card_x4"] = "per_device"
    unit: str = "fps"
    per_batch: dict[int, float]


class Manifest(_Strict):
    bundle: BundleInfo
    upstream: Upstream
    published_env: dict[str, str]
    pinned_env: dict[str, str]
    model: ModelIO | None = None
    graphs: dict[str, ModelIO] = Field(default_factory=dict, description="extra graphs, e.g. split tracker branches")
    atc: AtcConfig = AtcConfig()
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    published: tuple[PublishedRun, ...] = ()
    throughput: tuple[ThroughputTable, ...] = ()
    path: Path | None = None
    sha256: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        defaults = [r.name for r in self.published if r.default]
        if self.published and len(defaults) != 1:
            raise ValueError(f"exactly one [[published]] run must have default = true, found {defaults}")
        names = [r.name for r in self.published]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate [[published]] names: {names}")
        return self

    @property
    def default_run(self) -> PublishedRun:
        return next(r for r in self.published if r.default)

    def run(self, name: str | None) -> PublishedRun:
        """The published run called ``name`` (the default one when None)."""
        if name is None:
            return self.default_run
        for r in self.published:
            if r.name == name:
                return r
        raise ManifestError(self.path, f"no published run {name!r}; known: {[r.name for r in self.published]}")


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; errors name the file and the offending key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ManifestError(path, f"cannot read manifest: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(path, f"not valid TOML: {e}") from e
    for key, art in (data.get("artifacts") or {}).items():
        if isinstance(art, dict):
            art.setdefault("name", key)
    try:
        return Manifest.model_validate({**data, "path": path, "sha256": hashlib.sha256(raw).hexdigest()})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in e.errors()
        )
        raise ManifestError(path, f"invalid manifest: {problems}") from None


def bundle_names() -> list[str]:
    """Every bundle that has a manifest, from the directory listing (never a hand-written list)."""
    return sorted(p.parent.name for p in BUNDLES_DIR.glob("*/manifest.toml"))


def bundle_manifest(name: str) -> Manifest:
    path = BUNDLES_DIR / name / "manifest.toml"
    if not path.is_file():
        raise ManifestError(path, f"no bundle {name!r}; known bundles: {bundle_names()}")
    return load_manifest(path)
