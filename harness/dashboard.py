"""A static latency dashboard: HTML pages over the history store and results files.

The site works from ``file://`` and from GitHub Pages with no server and no network: every page is
plain HTML with its figures written by Plotly, and Plotly's own script is written once beside the
pages (``plotly.min.js``, from the installed plotly package; no CDN). Pages:

- ``index.html``: every series (device, model, variant, precision, batch, environment) with its
  latest latency and interval, the last step found and its commit;
- ``series-<key>.html``: one chart per series: the median with its 95% band over the runs in commit
  order (hash, date and subject on hover), steps marked (pending ones hollow), loaded runs
  marked, energy, memory and power series when recorded, and the raw samples of every run whose
  results file is still readable (a box per run; a click on a point shows its histogram);
- ``device-<name>.html``: the latest results file of each device: the bench table, speed-ups with
  their intervals, the fold summary, the top layers and lint findings of graphs measured per layer,
  and the warnings;
- ``cross-device.html``: the deployable graphs' latencies across devices;
- ``regressions.html``: every step found, newest first, with its size and interval.

``benchmark_entries`` exports the latest latency of every graph in github-action-benchmark's
``customSmallerIsBetter`` format (a JSON list of ``name``, ``unit``, ``value``, ``range``,
``extra``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.errors import HarnessError
from harness.fold.report import FoldReport
from harness.history import Point, Step, detect_steps, series_label, series_of
from harness.onnx_io import write_text_atomic
from harness.outputs import file_stem
from harness.report.cross_device import merge
from harness.report.layers import (
    FINDING_HEAD,
    NOTE,
    TOP,
    TOP_HEAD,
    finding_rows,
    graph_caption,
    measured_layers,
    top_layer_rows,
)
from harness.report.table import MARKDOWN_COLUMNS, comparison_records, markdown_cells
from harness.results import Results, format_interval, read_results

PLOTLY_JS = "plotly.min.js"
MAX_SAMPLES = 5000  # raw samples kept per run on a page (evenly thinned beyond)
CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
nav a { margin-right: 1.2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.regression { color: #b00020; } .improvement { color: #1b7f3b; } .note { color: #666; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""
NAV = [
    ("index.html", "series"),
    ("regressions.html", "regressions"),
    ("cross-device.html", "across devices"),
]


@dataclasses.dataclass
class Series:
    """One series of the history with its steps, as the pages show it."""

    key: Tuple[Any, ...]
    points: List[Point]
    steps: List[Step]

    @property
    def device(self) -> str:
        """The device profile's name."""
        return str(self.key[0])

    @property
    def label(self) -> str:
        """``model/variant[/folded] (precision, batch b)``."""
        return series_label(self.key)

    @property
    def page(self) -> str:
        """The series' page: readable, and unique through a short hash of the whole key."""
        digest = hashlib.sha256(json.dumps(self.key, default=str).encode()).hexdigest()[:8]
        stem = file_stem(f"{self.device}-{self.key[1]}-{self.key[2]}")
        return f"series-{stem}-{digest}.html"


def collect_series(points: Sequence[Point]) -> List[Series]:
    """The history's series in order of device and label, each with its steps."""
    found = [Series(key, pts, detect_steps(pts)) for key, pts in series_of(points).items()]
    return sorted(found, key=lambda s: (s.device, s.label, s.key[6]))


def latest_per_device(documents: Sequence[Results]) -> Dict[str, Results]:
    """The most recent results file of each device (by its ``created`` time)."""
    latest: Dict[str, Results] = {}
    for results in documents:
        known = latest.get(results.device_name)
        if known is None or results.created >= known.created:
            latest[results.device_name] = results
    return dict(sorted(latest.items()))


def _e(value: Any) -> str:
    return html.escape(str(value))


def _plotly_text(value: Any) -> str:
    """Text for Plotly's hover labels, which read a little HTML: only ``& < >`` escaped."""
    return html.escape(str(value), quote=False)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are HTML already (escape text before)."""
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{c}</td>" if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, body: str, devices: Sequence[str]) -> str:
    links = NAV + [(f"device-{file_stem(d)}.html", d) for d in devices]
    nav = "".join(f"<a href='{_e(href)}'>{_e(text)}</a>" for href, text in links)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style>"
        f"<script src='{PLOTLY_JS}'></script></head>"
        f"<body><nav>{nav}</nav><h1>{_e(title)}</h1>{body}"
        "<p class='note'>Written by <code>harness dashboard</code>.</p></body></html>\n"
    )


def _figure_html(figure: Any, div_id: str, post_script: str = "") -> str:
    """A figure as a div whose script uses the site's one copy of plotly.js."""
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=CONFIG,
        post_script=post_script or None,
    )


def _step_cell(step: Optional[Step], points: Sequence[Point]) -> str:
    if step is None:
        return "<span class='note'>no step</span>"
    commit = points[step.index].git_commit[:12]
    return f"<span class='{step.kind}'>{_e(step.describe())}</span> at <code>{_e(commit)}</code>"


def _point_interval(point: Point) -> str:
    return format_interval(point.median_ms, point.ci_low_ms, point.ci_high_ms)


def index_page(series: Sequence[Series], devices: Sequence[str]) -> str:
    """Every series with its latest latency, interval, last step and its commit."""
    rows = []
    for s in series:
        last = s.points[-1]
        rows.append(
            [
                _e(s.device),
                f"<a href='{_e(s.page)}'>{_e(s.label)}</a>",
                f"<code>{_e(s.key[6])}</code>",
                str(len(s.points)),
                _e(_point_interval(last)) + (" (loaded)" if last.loaded else ""),
                f"<code>{_e(last.git_commit[:12])}</code>",
                _step_cell(s.steps[-1] if s.steps else None, s.points),
            ]
        )
    head = [
        "device",
        "series",
        "environment",
        "runs",
        "latest median ms [95% CI]",
        "commit",
        "last step",
    ]
    body = (
        _table(head, rows, numeric=[3, 4])
        if rows
        else "<p>No history: add results with <code>harness history add</code>.</p>"
    )
    return _page("Latency dashboard", body, devices)


def _hover(point: Point) -> str:
    lines = [
        f"commit {point.git_commit[:12]}",
        point.commit_date or point.created,
        point.commit_message,
        f"median {_point_interval(point)} ms",
        f"loaded: {point.loaded}" if point.loaded else "",
        f"graph {point.graph[:12]}" if point.graph else "",
        f"{point.flops / 1e6:.2f} MFLOPs" if point.flops else "",
    ]
    return "<br>".join(_plotly_text(line) for line in lines if line)


def _samples(point: Point, cache: Dict[str, Optional[Results]]) -> Optional[List[float]]:
    """The raw latency samples of a point's run, from its results file when still readable."""
    if point.source not in cache:
        try:
            cache[point.source] = read_results(point.source) if point.source else None
        except HarnessError:
            cache[point.source] = None
    results = cache[point.source]
    if results is None:
        return None
    for run in results.runs:
        same = (run.model, run.variant, run.folded) == (point.model, point.variant, point.folded)
        if same and abs(run.stats.median - point.median_ms) <= 1e-9 * max(point.median_ms, 1):
            values = run.series_ms["latency_ms"]
            stride = max(1, -(-len(values) // MAX_SAMPLES))
            return [float(v) for v in values[::stride]]
    return None


def series_figure(series: Series) -> Any:
    """The series' chart: median and 95% band by run, steps, loaded runs, recorded metrics."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    points = series.points
    metrics = sorted({k for p in points for k in p.metrics})
    rows = 1 + len(metrics)
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[3] + [1] * len(metrics),
        subplot_titles=["median latency, ms (95% CI band)"] + metrics,
    )
    x = list(range(1, len(points) + 1))
    hover = [_hover(p) for p in points]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p.ci_high_ms for p in points],
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            name="95% CI high",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p.ci_low_ms for p in points],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.2)",
            hoverinfo="skip",
            name="95% CI",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p.median_ms for p in points],
            mode="lines+markers",
            name="median",
            text=hover,
            hovertemplate="%{text}<extra></extra>",
            marker={"size": 8, "color": "#1f77b4"},
        ),
        row=1,
        col=1,
    )
    loaded = [(i, p) for i, p in zip(x, points) if p.loaded]
    if loaded:
        fig.add_trace(
            go.Scatter(
                x=[i for i, _ in loaded],
                y=[p.median_ms for _, p in loaded],
                mode="markers",
                name="loaded machine (down-weighted)",
                text=[_hover(p) for _, p in loaded],
                hovertemplate="%{text}<extra></extra>",
                marker={"size": 14, "symbol": "x-open", "color": "#ff7f0e"},
            ),
            row=1,
            col=1,
        )
    for step in series.steps:
        color = "#b00020" if step.kind == "regression" else "#1b7f3b"
        at = step.index + 0.5  # between the last run of the old level and the first of the new
        fig.add_vline(
            x=at, line={"color": color, "dash": "dash" if step.confirmed else "dot"}, row=1, col=1
        )
        fig.add_trace(
            go.Scatter(
                x=[step.index + 1],
                y=[step.after_ms],
                mode="markers",
                name=f"step {step.change:+.1%}" + ("" if step.confirmed else " (pending)"),
                text=[_plotly_text(step.describe())],
                hovertemplate="%{text}<extra></extra>",
                marker={
                    "size": 16,
                    "color": color,
                    "symbol": "triangle-up" if step.kind == "regression" else "triangle-down",
                    "line": {"width": 2, "color": color},
                    "opacity": 1.0 if step.confirmed else 0.5,
                },
            ),
            row=1,
            col=1,
        )
    for row, name in enumerate(metrics, start=2):
        have = [(i, p.metrics[name]) for i, p in zip(x, points) if name in p.metrics]
        fig.add_trace(
            go.Scatter(
                x=[i for i, _ in have],
                y=[v for _, v in have],
                mode="lines+markers",
                name=name,
                showlegend=False,
            ),
            row=row,
            col=1,
        )
    labels = [f"{p.git_commit[:7]}" for p in points]
    fig.update_xaxes(
        tickmode="array",
        tickvals=x,
        ticktext=labels,
        tickangle=-45 if len(x) > 8 else 0,
        range=[0.5, len(x) + 0.5],
    )
    fig.update_xaxes(title_text="commit (oldest first)", row=rows, col=1)
    fig.update_yaxes(title_text="ms", row=1, col=1, rangemode="tozero")
    fig.update_layout(
        template="plotly_white",
        height=460 + 170 * len(metrics),
        margin={"l": 70, "r": 30, "t": 50, "b": 90},
        legend={"orientation": "h", "y": -0.25 if not metrics else -0.12},
        hovermode="closest",
    )
    return fig


def samples_figure(series: Series, samples: Sequence[Optional[List[float]]]) -> Any:
    """The raw samples of each run, a box per run on the same commit axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (point, values) in enumerate(zip(series.points, samples), start=1):
        if values:
            fig.add_trace(
                go.Box(
                    y=values,
                    x=[i] * len(values),
                    name=point.git_commit[:7],
                    boxpoints=False,
                    marker={"color": "#1f77b4"},
                    showlegend=False,
                )
            )
    labels = [p.git_commit[:7] for p in series.points]
    x = list(range(1, len(labels) + 1))
    fig.update_xaxes(
        tickmode="array",
        tickvals=x,
        ticktext=labels,
        range=[0.5, len(x) + 0.5],
        title_text="commit (oldest first)",
    )
    fig.update_yaxes(title_text="latency sample, ms")
    fig.update_layout(
        template="plotly_white",
        height=340,
        margin={"l": 70, "r": 30, "t": 30, "b": 70},
        title="raw samples per run",
    )
    return fig


_CLICK_SCRIPT = """
var chart = document.getElementById('{plot_id}');
chart.on('plotly_click', function (event) {
  var run = Math.round(event.points[0].x);
  var values = SAMPLES[run - 1];
  var target = document.getElementById('histogram');
  if (!values) { target.textContent = 'no raw samples kept for run ' + run; return; }
  Plotly.react(target, [{type: 'histogram', x: values, nbinsx: 60}],
    {template: chart.layout.template, height: 300, margin: {l: 60, r: 20, t: 40, b: 50},
     title: {text: 'run ' + run + ' (' + LABELS[run - 1] + '): ' + values.length + ' samples'},
     xaxis: {title: {text: 'latency, ms'}}, yaxis: {title: {text: 'samples'}}},
    {displaylogo: false, responsive: true});
});
"""


def series_page(series: Series, devices: Sequence[str], cache: Dict[str, Any]) -> str:
    """One series: chart, raw samples, and the runs as a table."""
    samples = [_samples(p, cache) for p in series.points]
    labels = [p.git_commit[:7] for p in series.points]
    parts = [
        f"<p>Device <b>{_e(series.device)}</b>, environment <code>{_e(series.key[6])}</code>, "
        f"{len(series.points)} run(s). Dashed line: a step that held for 2 runs; dotted, hollow: "
        "the last run departing on its own (pending). Click a point for its samples.</p>",
        "<script>var SAMPLES = "
        + json.dumps(samples).replace("</", "<\\/")
        + "; var LABELS = "
        + json.dumps(labels).replace("</", "<\\/")
        + ";</script>",
        _figure_html(series_figure(series), "chart", _CLICK_SCRIPT),
        "<div id='histogram' class='note'>Click a run in the chart to see its samples.</div>",
    ]
    if any(samples):
        parts.append(_figure_html(samples_figure(series, samples), "samples"))
    at = {s.index: s for s in series.steps}
    rows = [
        [
            str(i),
            f"<code>{_e(p.git_commit[:12])}</code>",
            _e(p.commit_date or p.created),
            _e(p.commit_message),
            _e(_point_interval(p)),
            _e(p.loaded or ""),
            _step_cell(at[i - 1], series.points) if i - 1 in at else "",
        ]
        for i, p in enumerate(series.points, start=1)
    ]
    head = ["run", "commit", "date", "subject", "median ms [95% CI]", "loaded", "step"]
    parts.append(_table(head, rows, numeric=[0, 4]))
    return _page(f"{series.device}: {series.label}", "".join(parts), devices)


def regressions_page(series: Sequence[Series], devices: Sequence[str]) -> str:
    """Every step found, newest first: its size with its interval, where, and how sure."""
    found = [(s, step) for s in series for step in s.steps]
    found.sort(key=lambda item: item[0].points[item[1].index].created, reverse=True)
    rows = []
    for s, step in found:
        point = s.points[step.index]
        low, high = step.change_interval
        rows.append(
            [
                _e(point.created),
                _e(s.device),
                f"<a href='{_e(s.page)}'>{_e(s.label)}</a>",
                f"<code>{_e(point.git_commit[:12])}</code> {_e(point.commit_message)}",
                f"<span class='{step.kind}'>{_e(step.kind)}</span>",
                f"{step.before_ms:.4g} &rarr; {step.after_ms:.4g}",
                _e(f"{step.change:+.1%} [{low:+.1%}, {high:+.1%}]"),
                f"{step.z:.1f}",
                "confirmed (2 runs)" if step.confirmed else "pending (1 run)",
            ]
        )
    head = ["run", "device", "series", "commit", "kind", "ms", "change [95% CI]", "z", "status"]
    body = _table(head, rows, numeric=[5, 6, 7]) if rows else "<p>No step found in any series.</p>"
    return _page("Regressions and improvements", body, devices)


def _bar_figure(names: List[str], groups: Dict[str, List[Tuple[float, float, float]]]) -> Any:
    """Grouped horizontal bars (one group per name, one bar per key of ``groups``), log axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, values in groups.items():
        fig.add_trace(
            go.Bar(
                y=names,
                x=[v[0] for v in values],
                name=label,
                orientation="h",
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [v[2] - v[0] for v in values],
                    "arrayminus": [v[0] - v[1] for v in values],
                },
            ),
        )
    fig.update_xaxes(
        type="log", dtick="D2", title_text="median latency, ms (log scale; bars: 95% CI)"
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_layout(
        template="plotly_white",
        barmode="group",
        showlegend=True,
        legend={"title": {"text": "device"}},
        height=140 + 36 * len(names) * max(1, len(groups)),
        margin={"l": 40, "r": 30, "t": 30, "b": 60},
    )
    return fig


def _layer_parts(results: Results) -> List[str]:
    """The top layers of each graph measured per layer and the lint findings, where recorded."""
    parts = []
    runs = [run for run in results.runs if measured_layers(run)]
    if runs:
        parts.append(f"<h2>Top {TOP} layers by measured time</h2><p class='note'>{_e(NOTE)}</p>")
    for run in runs:
        rows = [[_e(c) for c in row] for row in top_layer_rows(run)]
        parts.append(
            f"<h3>{_e(run.label)}</h3><p class='note'>{_e(graph_caption(run))}</p>"
            + _table(TOP_HEAD, rows, numeric=(2, 3))
        )
    findings = [[_e(c) for c in row] for row in finding_rows(results)]
    if findings:
        parts.append("<h2>Lint findings</h2>" + _table(FINDING_HEAD, findings, numeric=(3,)))
    elif any(run.findings is not None for run in results.runs):  # linted, nothing found
        parts.append("<h2>Lint findings</h2><p>No findings on the linted graphs.</p>")
    return parts


def device_page(results: Results, devices: Sequence[str]) -> str:
    """The device's latest results file: its table, a chart, fold summaries, measured layers and
    findings, and warnings."""
    records = comparison_records(results)
    head = [f"<p>{_e(results.source)}, created {_e(results.created)}"]
    if results.complete is False:
        head.append(" <b>(did not complete: partial numbers)</b>")
    parts = ["".join(head) + "</p>"]
    parts.append(_table(MARKDOWN_COLUMNS, [[_e(c) for c in markdown_cells(r)] for r in records]))
    names = [run.label for run in results.runs]
    values = [(r.stats.median, r.stats.median_ci_low, r.stats.median_ci_high) for r in results.runs]
    if names:
        parts.append(_figure_html(_bar_figure(names, {results.device_name: values}), "latency"))
    folds = []
    for run in results.runs:
        fold = run.to_dict().get("fold")
        if isinstance(fold, dict) and fold.get("records") is not None:
            try:
                text = FoldReport.from_dict(fold).to_text()
            except (KeyError, TypeError, ValueError):
                continue
            first = text.splitlines()[-1].strip() if text else ""
            folds.append(
                f"<details><summary><b>{_e(run.label)}</b>: {_e(first)}</summary>"
                f"<pre>{_e(text)}</pre></details>"
            )
    if folds:
        parts.append("<h2>Fold summary</h2>" + "".join(folds))
    parts += _layer_parts(results)
    warnings = results.all_warnings()
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings))
        parts.append("</ul>")
    return _page(f"Latest results on {results.device_name}", "".join(parts), devices)


def cross_device_page(latest: Dict[str, Results], devices: Sequence[str]) -> str:
    """The deployable graphs across devices: a table and a chart of their latencies."""
    if not latest:
        return _page("Across devices", "<p>No results files given.</p>", devices)
    try:
        table = merge(list(latest.values()))
    except HarnessError as exc:
        return _page("Across devices", f"<p>These results do not merge: {_e(exc)}</p>", devices)
    head = ["model", "variant"] + [d.label for d in table.devices]
    rows, groups = [], {d.label: [] for d in table.devices}
    names = []
    for row in table.rows:
        cells = [_e(row[0]), _e(row[1])]
        complete = True
        for d in table.devices:
            cell = table.cells.get((row, d.label))
            if cell is None:
                cells.append("")
                complete = False
                continue
            text = cell.stats.format() + (" folded" if cell.folded else "")
            if cell.speedup is not None:
                text += f", {cell.speedup.format()} vs baseline"
            cells.append(_e(text))
        rows.append(cells)
        if complete:
            names.append(f"{row[0]}/{row[1]}")
            for d in table.devices:
                stats = table.cells[(row, d.label)].stats
                groups[d.label].append((stats.median, stats.median_ci_low, stats.median_ci_high))
    parts = [
        "<p>Median latency, ms [95% CI], of the deployable graph (folded where folding changed "
        "it), with the speed-up against the baseline.</p>",
        _table(head, rows),
    ]
    if names:
        parts.append(_figure_html(_bar_figure(names, groups), "cross"))
    return _page("Across devices", "".join(parts), devices)


def write_site(points: Sequence[Point], documents: Sequence[Results], out: Path) -> List[Path]:
    """Write every page and plotly.min.js into ``out``; returns the pages written."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise HarnessError(
            "harness dashboard needs plotly: pip install 'harness[dashboard]' (or plotly>=5.5)"
        ) from None

    series = collect_series(points)
    latest = latest_per_device(documents)
    devices = sorted(latest)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / PLOTLY_JS, get_plotlyjs())
    cache: Dict[str, Any] = {d.source: d for d in documents if d.source}
    pages = {
        "index.html": index_page(series, devices),
        "regressions.html": regressions_page(series, devices),
        "cross-device.html": cross_device_page(latest, devices),
    }
    for s in series:
        pages[s.page] = series_page(s, devices, cache)
    for name, results in latest.items():
        pages[f"device-{file_stem(name)}.html"] = device_page(results, devices)
    return [write_text_atomic(out / name, text) for name, text in pages.items()]


def benchmark_entries(
    points: Sequence[Point] = (), documents: Sequence[Results] = ()
) -> List[Dict[str, Any]]:
    """github-action-benchmark ``customSmallerIsBetter`` entries (name, unit, value, range,
    extra): every graph of the results files, else the latest run of every history series."""
    rows: List[Tuple[str, float, float, float, List[str]]] = []
    for results in documents:
        for run in results.runs:
            name = f"{results.device_name} {run.label} ({run.precision}, batch {run.batch})"
            extra = [f"samples: {len(run.series_ms['latency_ms'])}", f"created {results.created}"]
            s = run.stats
            rows.append((name, s.median, s.median_ci_low, s.median_ci_high, extra))
    if not documents:
        for key, series in series_of(points).items():
            p = series[-1]
            extra = [f"commit {p.git_commit}", f"environment {key[6]}", f"created {p.created}"]
            if p.loaded:
                extra.append(f"loaded: {p.loaded}")
            rows.append(
                (f"{key[0]} {series_label(key)}", p.median_ms, p.ci_low_ms, p.ci_high_ms, extra)
            )
    return [
        {
            "name": name,
            "unit": "ms",
            "value": median,
            "range": f"± {(high - low) / 2:.4g}",
            "extra": "\n".join([f"median 95% CI [{low:.4g}, {high:.4g}] ms", *extra]),
        }
        for name, median, low, high, extra in rows
    ]
