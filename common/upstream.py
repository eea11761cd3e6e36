"""The upstream state_dict each bundle reproduces: its keys, shapes and dtypes in registration order, with the
upstream repository and commit they were read from. Each bundle ships them as ``bundles/<b>/upstream_keys.json``
(package data), so strict loading and the tests need nothing outside the repository. Standard library only.

File format (``format`` says it too)::

    {"model": ..., "upstream": {"repo": URL, "commit": 40 hex, "built_with": "how the model was constructed"},
     "num_keys": N, "keys": [[name, [dims]] or [name, [dims], dtype], ...], ...}

``dtype`` is written only where it is not float32 (BatchNorm ``num_batches_tracked`` counters: int64).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import InputError

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "bundles"
UPSTREAM_KEYS_FILE = "upstream_keys.json"
DTYPES = ("float32", "int64")


@dataclass(frozen=True)
class UpstreamKeys:
    """An upstream model's state_dict keys in registration order, their shapes and (non-float32) dtypes."""

    path: Path
    model: str
    repo: str
    commit: str
    built_with: str
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]  # every key: "float32" or "int64"
    outputs: tuple[str, ...] = ()
    parity_scale: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.shapes)

    @property
    def num_batches_tracked(self) -> list[str]:
        """The BatchNorm counters among the keys (int64 scalars), in order."""
        return [k for k in self.shapes if k.endswith("num_batches_tracked")]

    def reference(self) -> str:
        """Where the key list comes from, for messages: ``owner/repo@commit12 (bundles/<b>/upstream_keys.json)``."""
        repo = re.sub(r"^https?://github\.com/", "", self.repo)
        try:
            shown = self.path.resolve().relative_to(BUNDLES_DIR.parent)
        except ValueError:
            shown = self.path
        return f"{repo}@{self.commit[:12]} ({shown})"


def _fail(path: Path, problem: str) -> InputError:
    return InputError(path, f"upstream key list: {problem}")


def read_upstream_keys(path: str | Path) -> UpstreamKeys:
    """Parse and validate an ``upstream_keys.json``; InputError names the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "file not found (every bundle ships its upstream keys)") from None
    except (OSError, ValueError) as e:
        raise _fail(path, f"not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a JSON object")
    up = data.get("upstream")
    if not isinstance(up, dict) or not all(isinstance(up.get(k), str) for k in ("repo", "commit", "built_with")):
        raise _fail(path, '"upstream" must be an object with string "repo", "commit" and "built_with"')
    if not re.fullmatch(r"[0-9a-f]{40}", up["commit"]):
        raise _fail(path, f"upstream.commit {up['commit']!r} is not a full 40-hex commit")
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise _fail(path, '"keys" must be a non-empty list')
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for i, entry in enumerate(entries):
        ok = (
            isinstance(entry, list)
            and len(entry) in (2, 3)
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and all(isinstance(d, int) and d > 0 for d in entry[1])
            and (len(entry) == 2 or entry[2] in DTYPES)
        )
        if not ok:
            raise _fail(path, f"keys[{i}] = {entry!r} is not [name, [positive dims]] or [name, [dims], {DTYPES}]")
        if entry[0] in shapes:
            raise _fail(path, f"keys[{i}]: {entry[0]!r} is listed twice")
        shapes[entry[0]] = tuple(entry[1])
        dtypes[entry[0]] = entry[2] if len(entry) == 3 else "float32"
    if data.get("num_keys") != len(shapes):
        raise _fail(path, f"num_keys is {data.get('num_keys')!r} but {len(shapes)} keys are listed")
    return UpstreamKeys(
        path=path,
        model=str(data.get("model", "")),
        repo=up["repo"],
        commit=up["commit"],
        built_with=up["built_with"],
        shapes=shapes,
        dtypes=dtypes,
        outputs=tuple(data.get("outputs", ())),
        parity_scale={str(k): float(v) for k, v in data.get("parity_scale", {}).items()},
    )


@functools.cache
def bundle_upstream_keys(bundle: str) -> UpstreamKeys:
    """``bundles/<bundle>/upstream_keys.json``, parsed once per process."""
    return read_upstream_keys(BUNDLES_DIR / bundle / UPSTREAM_KEYS_FILE)
