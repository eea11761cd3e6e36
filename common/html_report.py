"""report.html: one self-contained page per run for a reviewer's browser (beside report.json / report.md).

Self-contained means the file opens with no network: inline CSS, plots embedded as base64 PNG `data:` URIs, no
scripts, fonts or links, and a Content-Security-Policy that makes the browser refuse anything else. Every string
from the run is escaped with `html.escape`. Plots come from the bundle's `figures` hook; a plotting failure
becomes a visible note on the page, never a failed run.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.report import DEMO_NOTICE, RunReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("zoo")

HTML_FILE = "report.html"
TRAINING_HTML_FILE = "report.html"
BENCH_HTML_FILE = "bench.html"

# The browser enforces self-containment: nothing but inline styles and data: images may load.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.5rem 3rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin: 1rem 0 0.3rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.demo-banner { background: #b00020; color: #fff; font-size: 1.5rem; font-weight: 700; padding: 1rem 1.5rem;
               margin: 0 -1.5rem; text-align: center; letter-spacing: 0.02em; }
.verdict { display: inline-block; font-size: 1.6rem; font-weight: 700; padding: 0.3rem 1rem; border-radius: 6px;
           margin: 0.5rem 0; }
.verdict.pass { background: #e3f5e1; color: #1b6e20; } .verdict.fail { background: #fde7e9; color: #b00020; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.result { font-weight: 700; white-space: nowrap; }
tr.pass td.result { color: #1b6e20; } tr.fail td.result { color: #b00020; }
code, .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85rem; word-break: break-all; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #e0e0e0; }
figcaption { font-weight: 600; margin-bottom: 0.3rem; }
.plot-error { background: #fff4e5; border-left: 4px solid #e67e00; padding: 0.5rem 1rem; }
pre { background: #f7f7f9; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
"""

_URL_SCHEME = re.compile(r"\b(https?|ftp|wss?)://", re.IGNORECASE)


def esc(value: Any) -> str:
    """Escaped text. The ':' of a URL scheme is written as a character reference: the page shows the URL
    unchanged, while the file holds no literal 'https://' (so a plain grep proves it references nothing)."""
    return _URL_SCHEME.sub(lambda m: f"{m.group(1)}&#58;//", html.escape(str(value), quote=True))


def format_value(value: Any) -> str:
    """A measured / expected cell: '—' for None, 4 decimals for floats (as report.md), str otherwise."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def _tolerance(metric: Mapping[str, Any]) -> str:
    """A published metric's tolerance rule, as common.verify applies it (the absolute one wins)."""
    if metric.get("tolerance_abs") is not None:
        return f"±{metric['tolerance_abs']:g} abs"
    if metric.get("tolerance_rel") is not None:
        return f"±{metric['tolerance_rel']:.1%} rel"
    return ""


# -- building blocks ---------------------------------------------------------------------------------------------
def page(title: str, body: str) -> str:
    """A complete HTML document around `body` (already HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"  # no favicon request
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
          numeric: Sequence[int] = ()) -> str:
    """A table of escaped cells; columns in `numeric` are right-aligned."""
    attr = f' id="{esc(table_id)}"' if table_id else ""
    out = [f"<table{attr}>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = "".join(("<td class=\"num\">" if i in numeric else "<td>") + f"{esc(c)}</td>"
                        for i, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def key_values(items: Mapping[str, Any], *, table_id: str | None = None) -> str:
    """Two-column table; nested mappings / lists are shown as compact JSON."""
    def show(v: Any) -> str:
        return json.dumps(v, default=str, sort_keys=True) if isinstance(v, Mapping | list | tuple) else str(v)

    return table(("key", "value"), ((k, show(v)) for k, v in items.items()), table_id=table_id)


def png_figure(title: str, png: bytes) -> str:
    """A captioned plot as an embedded base64 PNG."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure class="plot"><figcaption>{esc(title)}</figcaption>'
            f'<img class="plot" alt="{esc(title)}" data-title="{esc(title)}" src="data:image/png;base64,{data}">'
            "</figure>")


def plot_error(what: str, error: BaseException) -> str:
    return (f'<p class="plot-error">{esc(what)} could not be drawn: {esc(type(error).__name__)}: '
            f"{esc(error)}</p>")


def render_figures(figures: Sequence[tuple[str, Figure]]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Each figure to PNG bytes; one that fails to render becomes an HTML note naming it."""
    from common.plots import figure_png

    pngs, errors = [], []
    for title, fig in figures:
        try:
            pngs.append((title, figure_png(fig)))
        except Exception as e:  # noqa: BLE001 - a broken plot must not cost the run its report
            log.warning("plot %r failed: %s", title, e)
            errors.append(plot_error(f"plot {title!r}", e))
    return pngs, errors


def markdown_lines(lines: Sequence[str]) -> str:
    """The bundle's summary lines (Markdown: tables, text, image references) as HTML. Images are not linked
    (the page must stay self-contained); the plots section embeds their content."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append(table(block[0], body))
            continue
        image = re.fullmatch(r"!\[(.*)\]\((.*)\)", line)
        if image:
            out.append(f'<p class="md-image">[{esc(image.group(1))}: {esc(image.group(2))}; see Plots]</p>')
        elif line:
            out.append("<p>" + re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(line)) + "</p>")
        i += 1
    return "\n".join(out)


# -- the run report ----------------------------------------------------------------------------------------------
def bundle_figures(report: RunReport, run_dir: Path) -> list[tuple[str, Figure]]:
    """The bundle's `figures(run_dir, metrics)`; raises whatever it raises (the caller notes it)."""
    from common.bundle import load_bundle

    return list(load_bundle(report.bundle).figures(run_dir, report.metrics))


def render_report(report: RunReport, plots: Sequence[tuple[str, bytes]] = (), plot_notes: Sequence[str] = ()) -> str:
    """The whole report page; `plots` are (title, PNG bytes), `plot_notes` HTML notes of plots that failed."""
    r, prov = report, report.provenance
    ok = r.verdict.endswith("PASS")
    parts = []
    if r.mode == "demo":
        parts.append(f'<div class="demo-banner" id="demo-banner">{esc(DEMO_NOTICE)}</div>')
    parts.append(f"<h1>{esc(r.bundle)}</h1>")
    parts.append(f'<div class="verdict {"pass" if ok else "fail"}" id="verdict">{esc(r.verdict)}</div>')
    pub = r.published
    parts.append(f"<p>published run compared: <code>{esc(r.published_run)}</code> ({esc(pub.get('source', ''))}, "
                 f"{esc(pub.get('hardware', ''))}); mode {esc(r.mode)}</p>")

    parts.append("<h2>Checks</h2>")
    rows = ['<table id="checks">', "<tr><th>check</th><th>measured</th><th>expected / published</th>"
            "<th>detail (rule)</th><th>result</th></tr>"]
    for c in r.checks:
        rows.append(f'<tr class="check {"pass" if c.passed else "fail"}"><td>{esc(c.name)}</td>'
                    f'<td class="num">{esc(format_value(c.measured))}</td>'
                    f'<td class="num">{esc(format_value(c.expected))}</td><td>{esc(c.detail)}</td>'
                    f'<td class="result">{"PASS" if c.passed else "NOT PASSED"}</td></tr>')
    rows.append("</table>")
    parts.append("\n".join(rows) if r.checks else "<p>(no checks: nothing is claimed)</p>")

    parts.append("<h2>Metrics</h2>")
    main = {k: v for k, v in r.metrics.items() if "/" not in k}
    parts.append(table(("metric", "value"), ((k, format_value(v)) for k, v in main.items()), table_id="metrics",
                       numeric=(1,)))
    per_item = {k: v for k, v in r.metrics.items() if "/" in k}
    if per_item:
        parts.append(f"<details><summary>{len(per_item)} per-class / per-item metrics</summary>"
                     + table(("metric", "value"), ((k, format_value(v)) for k, v in per_item.items()), numeric=(1,))
                     + "</details>")
    if pub.get("metrics"):
        parts.append("<h3>Published</h3>")
        parts.append(table(("metric", "value", "unit", "tolerance"),
                           ((m.get("name"), format_value(m.get("value")), m.get("unit", ""), _tolerance(m))
                            for m in pub["metrics"]), numeric=(1,)))

    parts.append("<h2>Plots</h2>")
    parts += list(plot_notes)
    parts += [png_figure(t, png) for t, png in plots]
    if not plots and not plot_notes:
        parts.append("<p>(this bundle draws no plots)</p>")

    if r.details:
        parts += ["<h2>Details</h2>", markdown_lines(r.details)]

    parts.append("<h2>Timings</h2>")
    parts.append(table(("stage", "seconds"), ((k, f"{v:.2f}") for k, v in r.timings_s.items()), table_id="timings",
                       numeric=(1,)))
    if r.stats:
        parts.append("<h3>Run statistics</h3>" + key_values(r.stats))

    parts.append("<h2>Provenance</h2>")
    up = prov.get("upstream") or {}
    parts.append(key_values({"zoo commit": prov.get("zoo_commit"), "manifest sha256": prov.get("manifest_sha256"),
                             **{f"upstream {k}": v for k, v in up.items()}}, table_id="provenance"))
    parts.append("<h3>Artifacts</h3>")
    parts.append(table(("artifact", "sha256", "path"), ((k, v.get("sha256"), v.get("path"))
                                                        for k, v in r.artifacts.items()), table_id="artifacts"))
    parts.append("<h3>Exported models</h3>")
    parts.append(table(("model", "sha256"), r.exported_models.items(), table_id="exported"))
    parts.append("<h3>Backend</h3>" + key_values(r.backend, table_id="backend"))
    parts.append("<h3>Device</h3>" + key_values(prov.get("device") or {}, table_id="device"))
    parts.append("<h3>Packages</h3>" + key_values(prov.get("packages") or {}, table_id="packages"))

    if r.notes:
        parts.append("<h2>Notes</h2><ul id=\"notes\">" + "".join(f"<li>{esc(n)}</li>" for n in r.notes) + "</ul>")
    return page(f"{r.bundle}: {r.verdict}", "\n".join(parts))


def write_html(report: RunReport, run_dir: Path) -> Path:
    """Render report.html into `run_dir` with the bundle's plots; a failing `figures` hook is noted on the page."""
    notes: list[str] = []
    try:
        figures = bundle_figures(report, run_dir)
    except Exception as e:  # noqa: BLE001 - plotting must never fail the run: say so on the page instead
        log.warning("%s: plots failed: %s", report.bundle, e)
        figures, notes = [], [plot_error("the plots", e)]
    pngs, errors = render_figures(figures)
    path = run_dir / HTML_FILE
    path.write_text(render_report(report, pngs, notes + errors), encoding="utf-8")
    return path


# -- training runs -----------------------------------------------------------------------------------------------
def write_training_html(out_dir: Path, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Path:
    """report.html of a training run directory: the summary (training.json's content) and the loss / LR /
    throughput plot of its log."""
    from common.plots import training_figure

    title = f"{summary.get('task', 'training')}: {summary.get('world_size', '?')} process(es)"
    notes: list[str] = []
    pngs: list[tuple[str, bytes]] = []
    try:
        pngs, notes = render_figures([("loss, LR and throughput", training_figure(records, title=title))])
    except Exception as e:  # noqa: BLE001 - the training itself succeeded; only its page lacks the plot
        notes = [plot_error("the training plot", e)]
    state = "completed" if summary.get("completed") else f"NOT completed: {summary.get('note')}"
    parts = [f"<h1>training {esc(title)}</h1>",
             f'<div class="verdict {"pass" if summary.get("completed") else "fail"}" id="verdict">{esc(state)}</div>',
             f"<p>{esc(summary.get('iterations_done'))} / {esc(summary.get('total_iterations'))} iterations, "
             f"{len(records)} logged steps</p>", "<h2>Plots</h2>", *notes,
             *[png_figure(t, png) for t, png in pngs], "<h2>Summary</h2>"]
    plain = {k: v for k, v in summary.items() if k not in ("snapshots", "provenance", "results")}
    parts.append(key_values(plain, table_id="summary"))
    if summary.get("results"):
        parts += ["<h3>Results</h3>", key_values(summary["results"], table_id="results")]
    parts += ["<h3>Snapshots</h3>", table(("snapshot", "sha256"), (summary.get("snapshots") or {}).items(),
                                          table_id="snapshots")]
    prov = summary.get("provenance") or {}
    parts += ["<h2>Provenance</h2>", key_values({"zoo commit": prov.get("zoo_commit")}, table_id="provenance"),
              "<h3>Device</h3>", key_values(prov.get("device") or {}),
              "<h3>Packages</h3>", key_values(prov.get("packages") or {})]
    path = out_dir / TRAINING_HTML_FILE
    path.write_text(page(f"training {title}", "\n".join(parts)), encoding="utf-8")
    return path


# -- zoo bench ---------------------------------------------------------------------------------------------------
def write_bench_html(path: Path, *, title: str, lines: Sequence[str], figures: Sequence[tuple[str, Figure]],
                     tables: Sequence[tuple[str, str]] = ()) -> Path:
    """bench.html: the printed lines, the plots and (heading, table HTML) sections."""
    pngs, notes = render_figures(figures)
    parts = [f"<h1>{esc(title)}</h1>", "<pre id=\"bench-output\">" + "\n".join(esc(x) for x in lines) + "</pre>",
             "<h2>Plots</h2>", *notes, *[png_figure(t, png) for t, png in pngs]]
    for heading, body in tables:
        parts += [f"<h2>{esc(heading)}</h2>", body]
    path.write_text(page(title, "\n".join(parts)), encoding="utf-8")
    return path
