"""report.html: one self-contained page per run, opened in a real headless Chromium (Debian's, through Playwright).

The demo-run tests open each bundle's demo report (the shared session fixture `demo_run`, read-only) and check what a
reviewer would see: no console or page error, no request leaving the file, every expected plot decoded, the DEMO
banner, and the verdict table equal to report.json's checks. A full-page screenshot of each is kept as a test
artefact under $ZOO_TEST_ARTEFACTS (default: the test's tmp_path); its path is printed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.bundle import Check
from common.html_report import format_value, render_report, write_bench_html, write_training_html
from common.report import DEMO_NOTICE, RunReport, write_report

CHROMIUM = Path("/usr/bin/chromium")

EXPECTED_PLOTS = {
    "refinedet": ["precision / recall per class"],
    "pamtri": ["CMC curve"],
    "siamrpn": ["EAO curve", "per-sequence accuracy and failures"],
    "siamrpnpp": ["EAO curve", "per-sequence accuracy and failures",
                  "siamrpnpp training: interrupted (loss, LR, throughput)",
                  "siamrpnpp training: uninterrupted (loss, LR, throughput)"],
    "sa_siam": ["OTB success and precision plots", "sa_siam training: appearance (loss, LR, throughput)"],
}

# What the page exposes to the test, read in the browser after layout (images decoded or not).
PAGE_STATE_JS = """() => ({
  images: Array.from(document.images).map(i => ({title: i.dataset.title || i.alt, src: i.getAttribute('src'),
                                                 complete: i.complete, naturalWidth: i.naturalWidth})),
  banner: (document.getElementById('demo-banner') || {}).innerText || null,
  verdict: (document.getElementById('verdict') || {}).innerText || null,
  checks: Array.from(document.querySelectorAll('#checks tr.check')).map(r => Array.from(r.cells).map(c => c.innerText)),
  plotErrors: Array.from(document.querySelectorAll('.plot-error')).map(e => e.innerText),
  scripts: document.scripts.length,
})"""


def _missing(what: str) -> None:
    """Under CI a missing browser is a failure (the image installs it); elsewhere the test is skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _missing(f"playwright not importable: {e}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _artefacts(tmp_path: Path) -> Path:
    out = Path(os.environ["ZOO_TEST_ARTEFACTS"]) if os.environ.get("ZOO_TEST_ARTEFACTS") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_page(browser, html: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """Load `html` from file://, record console errors, page errors and every request other than the file itself
    (aborted: a self-contained page makes none), wait for the images, return PAGE_STATE_JS's view of it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    url = html.resolve().as_uri()

    def route(r) -> None:
        if r.request.url == url:
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15000)
        state = page.evaluate(PAGE_STATE_JS)
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")
    finally:
        page.close()
    return {**state, "errors": errors, "requests": requests}


# -- the five demo reports in Chromium ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("bundle", list(EXPECTED_PLOTS))
def test_demo_report_html_in_chromium(bundle: str, demo_run, browser, tmp_path: Path) -> None:
    run_dir = demo_run(bundle)
    html_path = run_dir / "report.html"
    assert html_path.is_file(), f"zoo demo {bundle} wrote no report.html"
    report = json.loads((run_dir / "report.json").read_text())
    state = open_page(browser, html_path, _artefacts(tmp_path) / f"report-{bundle}.png")

    assert state["errors"] == [], state["errors"]
    assert state["requests"] == [], f"the page tried to load {state['requests']}"
    assert state["plotErrors"] == [], state["plotErrors"]
    assert state["scripts"] == 0
    titles = [i["title"] for i in state["images"]]
    assert titles == EXPECTED_PLOTS[bundle]
    for img in state["images"]:
        assert img["src"].startswith("data:image/png;base64,"), img["title"]
        assert img["complete"] and img["naturalWidth"] > 0, f"plot {img['title']!r} not decoded"
    assert report["mode"] == "demo" and state["banner"] is not None and DEMO_NOTICE in state["banner"]
    assert state["verdict"] == report["verdict"]
    expected_rows = [[c["name"], format_value(c["measured"]), format_value(c["expected"]), c["detail"],
                      "PASS" if c["passed"] else "NOT PASSED"] for c in report["checks"]]
    assert report["checks"] and _squash(state["checks"]) == _squash(expected_rows)


def _squash(rows: list[list[str]]) -> list[list[str]]:
    """innerText renders runs of whitespace as one space; compare cell texts the same way."""
    return [[re.sub(r"\s+", " ", str(c)).strip() for c in row] for row in rows]


# -- the renderer without a demo run ------------------------------------------------------------------------------
def _report(**kw: Any) -> RunReport:
    r = RunReport(bundle="refinedet", mode="demo", published_run="310P3_bs1",
                  published={"source": "ModelZoo <README>", "hardware": "Ascend310P3",
                             "metrics": [{"name": "mAP", "value": 79.6, "tolerance_rel": 0.01}]},
                  metrics={"mAP": 12.5, "AP/cat": 3.0},
                  checks=[Check("<script>alert('x')</script> check", False, "rule: |a - b| <= 1 & \"quoted\"", 1.5,
                                2.0), Check("plain", True, "ok")],
                  provenance={"zoo_commit": "abc", "manifest_sha256": "f" * 64,
                              "upstream": {"repo": "https://github.com/luuuyi/RefineDet.PyTorch", "commit": "0e4b"},
                              "packages": {"numpy": "2"}, "device": {"cpu": "x"}},
                  artifacts={"weights": {"path": "/w.pth", "sha256": "a" * 64}}, exported_models={"model": "b" * 64},
                  backend={"backend": "onnxruntime"}, timings_s={"fetch": 1.0},
                  notes=["see http://example.org/<b>bold</b>"], details=["| a | b |", "|---|---|", "| 1 | `2` |"])
    for k, v in kw.items():
        setattr(r, k, v)
    r.decide()
    return r


def _tiny_png() -> bytes:
    from common.plots import figure_png, new_figure

    fig = new_figure(2, 1.5)
    fig.add_subplot().plot([0, 1], [1, 0])
    return figure_png(fig)


def test_html_is_self_contained_and_escapes_everything() -> None:
    text = render_report(_report(), [("a <plot>", _tiny_png())])
    for bad in ("http://", "https://", 'src="//', "src='//", "<script", "url(", "@import"):
        assert bad not in text.lower(), bad
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; check" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "ModelZoo &lt;README&gt;" in text
    assert re.findall(r'\bsrc="([^"]*)"', text) and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r'\bsrc="([^"]*)"', text))
    assert "href=" not in text.replace('<link rel="icon" href="data:,">', "")
    assert DEMO_NOTICE in text and 'id="demo-banner"' in text
    # the table carries measured / expected and the rule; the verdict is the report's
    assert "<td class=\"num\">1.5000</td><td class=\"num\">2.0000</td>" in text and "NOT PASSED" in text
    assert 'id="verdict">DEMO-FAIL<' in text


def test_real_run_has_no_demo_banner() -> None:
    text = render_report(_report(mode="real"))
    assert 'id="demo-banner"' not in text and DEMO_NOTICE not in text


def test_escaped_page_runs_no_script_in_chromium(browser, tmp_path: Path) -> None:
    """The hostile check name shows as text in the browser: nothing executes, nothing loads."""
    path = tmp_path / "report.html"
    path.write_text(render_report(_report(), [("plot", _tiny_png())]))
    state = open_page(browser, path)
    assert state["errors"] == [] and state["requests"] == [] and state["scripts"] == 0
    assert state["checks"][0][0] == "<script>alert('x')</script> check"
    assert state["images"][0]["naturalWidth"] > 0


def test_plot_failure_is_a_note_not_a_crash(monkeypatch, tmp_path: Path) -> None:
    from bundles.refinedet.bundle import BUNDLE

    def broken(run_dir: Path, metrics: Any) -> list:
        raise RuntimeError("no <detections> file")

    monkeypatch.setattr(BUNDLE, "figures", broken)
    write_report(_report(), tmp_path)
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()
    text = (tmp_path / "report.html").read_text()
    assert 'class="plot-error"' in text and "RuntimeError: no &lt;detections&gt; file" in text


def test_voc_result_carries_the_per_class_curves() -> None:
    from common.metrics.voc import _synthetic, evaluate, evaluate_class

    dets, gts = _synthetic(40, 10, 3, seed=1)
    res = evaluate(dets, gts)
    assert list(res.per_class) == list(gts)
    for name in gts:
        one = evaluate_class(dets[name], gts[name])
        np.testing.assert_array_equal(res.per_class[name].precision, one.precision)
        np.testing.assert_array_equal(res.per_class[name].recall, one.recall)
        assert res.per_class[name].ap == res.ap[name]
    assert res == evaluate(dets, gts)  # equality still compares AP / npos only (arrays are not compared)


def test_training_page(browser, tmp_path: Path) -> None:
    records = [{"step": s, "epoch": 0, "total_loss": 2.0 / s, "cls_loss": 1.0 / s, "lr_backbone": 1e-3 * s,
                "pairs_per_s": 10.0 + s, "data_wait_s": 0.01, "step_s": 0.2} for s in range(1, 6)]
    summary = {"task": "demo<task>", "completed": True, "iterations_done": 5, "total_iterations": 5,
               "world_size": 2, "snapshots": {"checkpoint_e1.pth": "c" * 64}, "provenance": {"zoo_commit": "abc"}}
    path = write_training_html(tmp_path, summary, records)
    state = open_page(browser, path)
    assert state["errors"] == [] and state["requests"] == [] and state["plotErrors"] == []
    assert [i["title"] for i in state["images"]] == ["loss, LR and throughput"]
    assert state["images"][0]["naturalWidth"] > 0
    assert "demo&lt;task&gt;" in path.read_text()


def test_training_page_without_records_notes_the_missing_plot(tmp_path: Path) -> None:
    text = write_training_html(tmp_path, {"task": "t", "completed": False, "note": "stopped"}, []).read_text()
    assert 'class="plot-error"' in text and "<img" not in text


def test_bench_files(browser, tmp_path: Path) -> None:
    from common.bench import write_bench
    from common.manifest import bundle_manifest

    published = bundle_manifest("refinedet").throughput
    rows = [{"batch": b, "pure_fps": 3.0 * b, "median_ms": 300.0, "p99_ms": 320.0, "e2e_fps": 2.0 * b,
             "ratio": 0.66, "items": 4} for b in (1, 4)]
    js, html_path = write_bench(tmp_path, "refinedet", {"kind": "inference", "rows": rows}, published,
                                ["| batch | pure fps |", "| 1 | 3.00 |"])
    doc = json.loads(js.read_text())
    assert doc["rows"] == rows and doc["published"][0]["per_batch"]["16"] == 445.783
    state = open_page(browser, html_path)
    assert state["errors"] == [] and state["requests"] == [] and state["plotErrors"] == []
    assert [i["title"] for i in state["images"]] == ["throughput vs batch size (measured here and published)"]
    assert state["images"][0]["naturalWidth"] > 0
    text = html_path.read_text()
    assert "445.8" in text and "| 1 | 3.00 |" in text


def test_bench_html_notes_a_broken_figure(tmp_path: Path) -> None:
    class Broken:
        def savefig(self, *a: Any, **k: Any) -> None:
            raise ValueError("bad figure")

    text = write_bench_html(tmp_path / "bench.html", title="t", lines=["x"], figures=[("p", Broken())]).read_text()
    assert "ValueError: bad figure" in text and "<img" not in text


@pytest.mark.slow
def test_zoo_bench_out_writes_json_and_html(tmp_path: Path) -> None:
    """`zoo bench refinedet --out DIR` at the smallest size: the table is still printed, and both files written."""
    from click.testing import CliRunner

    from common.cli import main

    r = CliRunner().invoke(main, ["bench", "refinedet", "--batch-sizes", "1,2", "--images", "2", "--warmup", "0",
                                  "--iters", "1", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "| batch | pure fps |" in r.output
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [row["batch"] for row in doc["rows"]] == [1, 2]
    assert "data:image/png;base64," in (tmp_path / "b" / "bench.html").read_text()
