"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.upstream import UPSTREAM_KEYS_FILE, UpstreamKeys, read_upstream_keys

ROOT = Path(__file__).resolve().parents[1]


def upstream_keys(bundle: str) -> UpstreamKeys:
    """bundles/<bundle>/upstream_keys.json: the upstream state_dict the bundle's model is tested against. It ships
    with the bundle (no file outside the repository is read), so a missing or malformed list fails, never skips."""
    return read_upstream_keys(ROOT / "bundles" / bundle / UPSTREAM_KEYS_FILE)


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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`demo_run(bundle)`: the run directory of `zoo demo <bundle>`, run once per test session (in a subprocess,
    as a user runs it) and shared by every test that needs one. Treat it as read-only: copy it before changing
    anything (shutil.copytree). The demo's stdout + stderr are in `<run>/../<bundle>.log`."""
    import subprocess
    import sys

    runs: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("demo-runs")

    def run(bundle: str) -> Path:
        if bundle not in runs:
            out = base / bundle
            r = subprocess.run([sys.executable, "-m", "common", "demo", bundle, "--out", str(out),
                                "--cache", str(base / "cache")], capture_output=True, text=True, timeout=1200)
            (base / f"{bundle}.log").write_text(r.stdout + r.stderr)
            assert r.returncode == 0, f"zoo demo {bundle} failed:\n{r.stdout}{r.stderr}"
            runs[bundle] = out
        return runs[bundle]

    return run
