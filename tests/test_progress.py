"""Progress on long work: plain lines (count, rate, ETA) when stderr is not a terminal, a tqdm bar when it is,
silence on ranks other than 0."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from common.progress import Progress, track


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(monkeypatch, capsys) -> None:
    monkeypatch.setenv("ZOO_PROGRESS_EVERY", "0")
    monkeypatch.delenv("RANK", raising=False)
    assert list(track(range(3), 3, desc="prepare", unit="image")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("prepare: 3/3 images (100.0 %), ")
    assert "image/s" in lines[0] and "ETA" in lines[0]


def test_a_bar_on_a_terminal(monkeypatch) -> None:
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delenv("RANK", raising=False)
    with Progress(4, desc="infer", unit="image") as bar:
        bar.update(2, loss=0.5)
        bar.update(2)
    out = tty.getvalue()
    assert "infer" in out and "/4" in out and "\r" in out  # tqdm redraws one line (cleared at the end)


def test_silent_on_other_ranks_and_when_disabled(monkeypatch, capsys) -> None:
    monkeypatch.setenv("ZOO_PROGRESS_EVERY", "0")
    monkeypatch.setenv("RANK", "1")
    list(track(range(3), 3, desc="x"))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("ZOO_PROGRESS", "0")
    list(track(range(3), 3, desc="y"))
    assert capsys.readouterr().err == ""


def test_a_demo_reports_progress_of_its_long_stages(tmp_path) -> None:
    env = {**os.environ, "ZOO_PROGRESS_EVERY": "0"}
    r = subprocess.run([sys.executable, "-m", "common", "demo", "refinedet", "--out", str(tmp_path / "run"),
                        "--cache", str(tmp_path / "cache"), "--limit", "3"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    for stage in ("refinedet prepare: 3/3 annotations", "refinedet export ONNX: 1/1 graphs",
                  "refinedet infer+post: 3/3 images"):
        assert stage in r.stderr, r.stderr
