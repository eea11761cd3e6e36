"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spec_keys_file(name: str) -> Path:
    """shared/specs/keys/<name>: beside the checkout (how CI lays it out) or inside it. The upstream key lists are
    the contract the models are tested against, so callers fail (never skip) when the file is absent."""
    for base in (ROOT.parent / "shared", ROOT / "shared"):
        if (base / "specs" / "keys" / name).is_file():
            return base / "specs" / "keys" / name
    return ROOT.parent / "shared" / "specs" / "keys" / name


def import_oracle(module: str):
    """Import a peer toolkit used only as a test oracle (got10k, torchreid ...). It is in the `test` dependency
    group, so under CI a missing oracle fails the test instead of silently skipping the cross-check."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"oracle {module} not importable under CI: {e}")
        pytest.skip(f"oracle {module} not installed: {e}")
