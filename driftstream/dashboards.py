"""Grafana dashboards as code: Services, Models and Pipeline, built from one panel table.

Each panel is declared once (title, kind, PromQL queries); from that table this module
renders Grafana dashboard JSON with the grafana-foundation-sdk builders
(``python -m driftstream.dashboards`` writes ``infra/grafana/dashboards/*.json``),
lists every panel query for checking against a live Prometheus
(:func:`all_panel_queries`) and draws the panels with matplotlib from a Prometheus
``query_range`` (:func:`render_png`). Template variables ``$model`` and ``$service`` are
regex matchers (``=~``), so ``.*`` selects everything.

>>> queries = all_panel_queries()
>>> [expr for board, title, expr in queries if title == "Confidence p90"]
['histogram_quantile(0.9, sum(rate(confidence_score_bucket[5m])) by (le))']
>>> [expr for board, title, expr in all_panel_queries({"model": "detector"}) if title == "Window volume"]
['driftstream_window_events{model=~"detector"}']

Reference: Grafana dashboard JSON model,
https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import (
    gauge,
    heatmap,
    logs,
    loki,
    prometheus,
    stat,
    statetimeline,
    text,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = ROOT / "infra" / "grafana" / "dashboards"
DOCS_DIR = ROOT / "docs"

#: Datasource uids; infra/grafana/provisioning/datasources declares the same.
PROMETHEUS_UID = "prometheus"
LOKI_UID = "loki"
#: Where the batch worker's report index is served (compose: MinIO, public read of reports/).
DEFAULT_REPORT_INDEX_URL = "http://localhost:9000/driftstream/reports/index.html"
VARIABLES = ("model", "service")
ALL_VALUE = ".*"

PanelKind = Literal["timeseries", "gauge", "stat", "heatmap", "state-timeline", "logs", "text"]


@dataclass(frozen=True)
class QuerySpec:
    expr: str
    legend: str = ""
    heatmap: bool = False  # pre-bucketed histogram rows (Grafana's "heatmap" format)


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: PanelKind
    queries: tuple[QuerySpec, ...] = ()
    unit: str = ""
    width: int = 8
    height: int = 8
    description: str = ""
    min: float | None = None
    max: float | None = None
    thresholds: tuple[tuple[float | None, str], ...] = ()
    states: tuple[tuple[str, str], ...] = ()  # (text, color) shown for the values 0, 1, ...
    content: str = ""  # markdown of a text panel


@dataclass(frozen=True)
class DashboardSpec:
    name: str
    title: str
    description: str
    variables: tuple[str, ...]
    rows: tuple[tuple[str, tuple[PanelSpec, ...]], ...]

    @property
    def uid(self) -> str:
        return f"driftstream-{self.name}"

    def panels(self) -> list[PanelSpec]:
        return [p for _, panels in self.rows for p in panels]


def _q(expr: str, legend: str = "") -> QuerySpec:
    return QuerySpec(expr, legend)


_APP = 'job=~"$service"'
_LATENCY = "histogram_quantile({q}, sum by (job, endpoint, le) " \
           "(rate(bentoml_service_request_duration_seconds_bucket{{{sel}}}[1m])))"

SERVICES = DashboardSpec(
    name="services",
    title="driftstream / Services",
    description="BentoML detector and recommender: traffic, errors, latency, resources and logs.",
    variables=("service",),
    rows=(
        ("Traffic", (
            PanelSpec("Targets up", "stat", (_q(f"up{{{_APP}}}", "{{job}}"),), width=6, height=6,
                      states=(("down", "red"), ("up", "green")),
                      description="1 when Prometheus can scrape the service."),
            PanelSpec("In-progress requests", "timeseries",
                      (_q(f"sum by (job, endpoint) (bentoml_service_request_in_progress{{{_APP}}})",
                          "{{job}} {{endpoint}}"),), width=6, height=6),
            PanelSpec("Requests per second", "timeseries",
                      (_q(f"sum by (job, endpoint) (rate(bentoml_service_request_total{{{_APP}}}[1m]))",
                          "{{job}} {{endpoint}}"),), unit="reqps", width=12, height=6),
            PanelSpec("Success rate per endpoint", "timeseries",
                      (_q(f'sum by (job, endpoint) (rate(bentoml_service_request_total{{{_APP}, '
                          f'http_response_code=~"2.."}}[1m])) / sum by (job, endpoint) '
                          f"(rate(bentoml_service_request_total{{{_APP}}}[1m]))", "{{job}} {{endpoint}}"),),
                      unit="percentunit", min=0, max=1, width=12),
            PanelSpec("Latency p50 / p95 / p99 per endpoint", "timeseries",
                      tuple(_q(_LATENCY.format(q=q, sel=_APP), f"p{round(q * 100)} " + "{{job}} {{endpoint}}")
                            for q in (0.5, 0.95, 0.99)), unit="s", width=12),
        )),
        ("Resources", (
            PanelSpec("CPU", "timeseries",
                      (_q(f"sum by (job) (rate(process_cpu_seconds_total{{{_APP}}}[1m]))", "{{job}}"),),
                      unit="short", width=12, description="CPU seconds per second (cores) of each service."),
            PanelSpec("Memory (RSS)", "timeseries",
                      (_q(f"sum by (job) (process_resident_memory_bytes{{{_APP}}})", "{{job}}"),),
                      unit="bytes", width=12),
        )),
        ("Logs", (
            PanelSpec("Service logs", "logs", (_q('{service=~"$service"}'),), width=24, height=10,
                      description="Container logs shipped to Loki (docker compose)."),
        )),
    ),
)

_MODEL = 'model=~"$model"'
MODELS = DashboardSpec(
    name="models",
    title="driftstream / Models",
    description="Detector confidence, recommender inputs and the drift of both models.",
    variables=("model",),
    rows=(
        ("Detector", (
            PanelSpec("Confidence p90", "gauge",
                      (_q("histogram_quantile(0.9, sum(rate(confidence_score_bucket[5m])) by (le))"),),
                      min=0, max=1, width=6, thresholds=((None, "red"), (0.5, "green")),
                      description="90th percentile of detection confidence over 5 minutes."),
            PanelSpec("Confidence distribution", "heatmap",
                      (QuerySpec("sum by (le) (increase(confidence_score_bucket[1m]))", "{{le}}",
                                 heatmap=True),),
                      width=10),
            PanelSpec("Detections per image (mean) and images without detection", "timeseries", (
                _q("sum(rate(detector_detections_per_image_sum[5m])) "
                   "/ sum(rate(detector_detections_per_image_count[5m]))", "detections per image"),
                _q("sum(rate(detector_no_detection_total[5m])) "
                   "/ sum(rate(detector_detections_per_image_count[5m]))", "share without detection"),
            ), width=8),
            PanelSpec("Rejected inputs by reason", "timeseries", (
                _q("sum by (reason) (rate(detector_rejected_inputs_total[1m]))", "detector {{reason}}"),
                _q("sum by (reason) (rate(recommender_rejected_requests_total[1m]))",
                   "recommender {{reason}}"),
            ), unit="reqps", width=8),
        )),
        ("Recommender", (
            PanelSpec("Ranked movies present and absent", "timeseries", (
                _q("sum(increase(ranked_movies_present_total[1m]))", "present"),
                _q("sum(increase(ranked_movies_absent_total[1m]))", "absent"),
            ), width=8, description="Requests per minute with and without a list of ranked movies."),
            PanelSpec("Unknown users", "timeseries",
                      (_q("sum(rate(recommender_unknown_user_total[1m]))", "unknown users"),),
                      unit="reqps", width=8),
            PanelSpec("Explanation coverage p50", "timeseries",
                      (_q("histogram_quantile(0.5, sum by (le) "
                          "(rate(recommender_explanation_coverage_bucket[5m])))", "p50"),),
                      unit="percentunit", min=0, max=1, width=8),
        )),
        ("Drift", (
            PanelSpec("Drift score per feature", "timeseries",
                      (_q(f"driftstream_feature_drift_score{{{_MODEL}}}", "{{model}} {{feature}}"),),
                      width=12),
            PanelSpec("Drift state", "state-timeline", (
                _q(f"driftstream_model_drift_detected{{{_MODEL}}}", "{{model}} (model)"),
                _q(f"driftstream_drift_detected{{{_MODEL}}}", "{{model}} {{feature}}"),
            ), states=(("ok", "green"), ("drift", "red")), width=12),
            PanelSpec("Window volume", "timeseries",
                      (_q(f"driftstream_window_events{{{_MODEL}}}", "{{model}}"),), width=8,
                      description="Events in the current hopping window."),
            PanelSpec("Stream confidence quantiles", "timeseries",
                      (_q(f"driftstream_confidence_quantile{{{_MODEL}}}", "{{model}} q{{quantile}}"),),
                      min=0, max=1, width=8),
            PanelSpec("Low-confidence share", "timeseries",
                      (_q(f"driftstream_low_confidence_ratio{{{_MODEL}}}", "{{model}}"),),
                      unit="percentunit", min=0, max=1, width=8),
            PanelSpec("Reference missing", "stat",
                      (_q(f"driftstream_reference_missing{{{_MODEL}}}", "{{model}}"),),
                      states=(("present", "green"), ("missing", "red")), width=8, height=5),
        )),
    ),
)


def _links_markdown(report_index_url: str) -> str:
    return (
        "### Reports and consoles\n\n"
        f"- [Drift report index]({report_index_url}): one HTML report per archived window and batch run\n"
        "- [Prometheus alerts](http://localhost:9090/alerts)\n"
        "- [Alertmanager](http://localhost:9093/#/alerts)\n"
        "- Runbook: `docs/runbook.md` in the repository\n"
    )


def _pipeline(report_index_url: str) -> DashboardSpec:
    return DashboardSpec(
        name="pipeline",
        title="driftstream / Pipeline",
        description="Events from the services through Kafka and the stream workers to S3 and batch reports.",
        variables=("model", "service"),
        rows=(
            ("Stream", (
                PanelSpec("Events in and out", "timeseries", (
                    _q('sum by (service) (rate(driftstream_publish_events_total{service=~"$service", '
                       'outcome=~"published|replayed"}[1m]))', "in {{service}}"),
                    _q(f"sum by (model) (rate(driftstream_events_processed_total{{{_MODEL}}}[1m]))",
                       "out {{model}}"),
                ), unit="ops", width=12),
                PanelSpec("Publish outcomes", "timeseries",
                          (_q('sum by (service, outcome) (rate(driftstream_publish_events_total'
                              '{service=~"$service"}[1m]))', "{{service}} {{outcome}}"),),
                          unit="ops", width=12),
                PanelSpec("Event freshness", "timeseries",
                          (_q(f"driftstream_event_freshness_seconds{{{_MODEL}}}", "{{model}}"),),
                          unit="s", width=8),
                PanelSpec("Consumer lag", "timeseries",
                          (_q("sum by (topic) (driftstream_consumer_lag_messages)", "{{topic}}"),), width=8),
                PanelSpec("Dead letters (5 min)", "timeseries",
                          (_q("sum by (topic, reason) (increase(driftstream_dead_letters_total[5m]))",
                              "{{topic}} {{reason}}"),), width=8),
                PanelSpec("Late events dropped", "timeseries",
                          (_q(f"sum by (model) (rate(driftstream_late_events_dropped_total{{{_MODEL}}}[1m]))",
                              "{{model}}"),), unit="ops", width=12),
                PanelSpec("Publisher spool", "timeseries",
                          (_q('sum by (service) (driftstream_spool_bytes{service=~"$service"})',
                              "{{service}}"),),
                          unit="bytes", width=12),
            )),
            ("Archive and batch", (
                PanelSpec("Windows archived (5 min)", "timeseries",
                          (_q("sum by (model) (increase(driftstream_windows_archived_total"
                              f"{{{_MODEL}}}[5m]))", "{{model}}"),), width=8),
                PanelSpec("Archive backlog", "timeseries",
                          (_q(f"driftstream_archive_backlog_windows{{{_MODEL}}}", "{{model}}"),), width=8),
                PanelSpec("Since last archived window", "timeseries",
                          (_q(f"time() - driftstream_last_window_archived_timestamp_seconds{{{_MODEL}}}",
                              "{{model}}"),), unit="s", width=8),
                # a batch metric's own `job` label is stored as `exported_job`
                PanelSpec("Batch job status", "state-timeline",
                          (_q("max by (exported_job) (driftstream_batch_job_last_status)",
                              "{{exported_job}}"),),
                          states=(("failed", "red"), ("ok", "green")), width=12),
                PanelSpec("Batch runs (1 h)", "timeseries",
                          (_q("sum by (exported_job, status) (increase(driftstream_batch_jobs_total[1h]))",
                              "{{exported_job}} {{status}}"),), width=6),
                PanelSpec("Batch job duration", "timeseries",
                          (_q("max by (exported_job) (driftstream_batch_job_duration_seconds)",
                              "{{exported_job}}"),), unit="s", width=6),
                PanelSpec("Reports and links", "text", content=_links_markdown(report_index_url), width=24,
                          height=5),
            )),
        ),
    )


def dashboard_specs(report_index_url: str = DEFAULT_REPORT_INDEX_URL) -> list[DashboardSpec]:
    """The three dashboards, in file order."""
    return [SERVICES, MODELS, _pipeline(report_index_url)]


# --- Grafana JSON -----------------------------------------------------------------------

_PROM = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
_LOKI = DataSourceRef(type_val="loki", uid=LOKI_UID)

_BUILDERS = {
    "timeseries": timeseries.Panel,
    "gauge": gauge.Panel,
    "stat": stat.Panel,
    "heatmap": heatmap.Panel,
    "state-timeline": statetimeline.Panel,
    "logs": logs.Panel,
    "text": text.Panel,
}


def _variable(name: str) -> Any:
    if name == "model":
        return (gdash.CustomVariable("model").label("Model").values("detector,recommender")
                .include_all(True).all_value(ALL_VALUE).multi(True))
    if name == "service":
        return (gdash.QueryVariable("service").label("Service").datasource(_PROM)
                .query('label_values(up{job=~"detector|recommender"}, job)')
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .include_all(True).all_value(ALL_VALUE).multi(True))
    raise ValueError(f"unknown template variable {name!r}; known: {VARIABLES}")


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    p = _BUILDERS[spec.kind]().id(panel_id).title(spec.title).span(spec.width).height(spec.height)
    if spec.description:
        p = p.description(spec.description)
    if spec.kind == "text":
        return p.mode("markdown").content(spec.content)
    if spec.kind == "logs":
        p = p.datasource(_LOKI)
        for i, q in enumerate(spec.queries):
            p = p.with_target(loki.Dataquery().ref_id(chr(65 + i)).expr(q.expr))
        return p
    p = p.datasource(_PROM)
    for i, q in enumerate(spec.queries):
        target = prometheus.Dataquery().ref_id(chr(65 + i)).expr(q.expr).range()
        if q.legend:
            target = target.legend_format(q.legend)
        if q.heatmap:
            target = target.format("heatmap")
        p = p.with_target(target)
    if spec.unit:
        p = p.unit(spec.unit)
    if spec.min is not None:
        p = p.min(spec.min)
    if spec.max is not None:
        p = p.max(spec.max)
    if spec.thresholds:
        p = p.thresholds(gdash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
                         .steps([Threshold(value=v, color=c) for v, c in spec.thresholds]))
    if spec.states:
        p = p.mappings([ValueMap(options={
            str(value): ValueMappingResult(text=label, color=color, index=value)
            for value, (label, color) in enumerate(spec.states)
        })])
    return p


def _fill_options(node: Any) -> Any:
    # Grafana expects an options object on every panel; the builders leave it null when unset
    if isinstance(node, dict):
        return {k: ({} if k == "options" and v is None else _fill_options(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill_options(v) for v in node]
    return node


def build_dashboard(spec: DashboardSpec) -> dict[str, Any]:
    """Grafana dashboard JSON (as a dict) of one spec."""
    board = (gdash.Dashboard(spec.title).uid(spec.uid).description(spec.description)
             .tags(["driftstream"]).refresh("10s").time("now-30m", "now").timezone("browser"))
    for name in spec.variables:
        board = board.with_variable(_variable(name))
    panel_id = 1
    for row_title, panels in spec.rows:
        board = board.with_row(gdash.Row(row_title).id(panel_id))
        panel_id += 1
        for p in panels:
            board = board.with_panel(_panel(p, panel_id))
            panel_id += 1
    return _fill_options(json.loads(json.dumps(board.build(), cls=JSONEncoder)))


def dashboard_json(spec: DashboardSpec) -> str:
    """Deterministic text of one dashboard file."""
    return json.dumps(build_dashboard(spec), indent=2, sort_keys=True) + "\n"


def write_dashboards(
    out_dir: Path = DASHBOARDS_DIR, report_index_url: str = DEFAULT_REPORT_INDEX_URL
) -> list[Path]:
    """Write ``<name>.json`` per dashboard into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in dashboard_specs(report_index_url):
        path = out_dir / f"{spec.name}.json"
        path.write_text(dashboard_json(spec))
        paths.append(path)
    return paths


# --- queries ----------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Replace ``$model``/``$service`` by ``values`` (default: the all-value ``.*``)."""
    values = values or {}
    unknown = set(values) - set(VARIABLES)
    if unknown:
        raise ValueError(f"unknown template variables {sorted(unknown)}; known: {VARIABLES}")

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, ALL_VALUE) if name in VARIABLES else m.group(0)

    return _VAR_RE.sub(repl, expr)


def all_panel_queries(values: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(dashboard name, panel title, PromQL) of every Prometheus panel query, variables substituted."""
    return [
        (spec.name, p.title, substitute(q.expr, values))
        for spec in dashboard_specs()
        for p in spec.panels()
        if p.kind not in ("logs", "text")
        for q in p.queries
    ]


# --- PNG rendering ----------------------------------------------------------------------


def _query_range(
    prometheus_url: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    )
    url = f"{prometheus_url.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
    if body.get("status") != "success":
        raise ValueError(f"Prometheus rejected {expr!r}: {body.get('error', body)}")
    return body["data"]["result"]


def _legend(fmt: str, labels: Mapping[str, str]) -> str:
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def _draw_heatmap(ax: Any, series: list[dict[str, Any]]) -> bool:
    rows = sorted(((float(s["metric"].get("le", "nan")), s) for s in series), key=lambda r: r[0])
    rows = [(le, s) for le, s in rows if not math.isnan(le)]
    if not rows:
        return False
    times = sorted({float(t) for _, s in rows for t, _ in s["values"]})
    index = {t: i for i, t in enumerate(times)}
    cumulative = [[0.0] * len(times) for _ in rows]
    for r, (_, s) in enumerate(rows):
        for t, v in s["values"]:
            cumulative[r][index[float(t)]] = float(v)
    # buckets are cumulative: a cell is its bucket minus the one below
    cells = [[cumulative[r][c] - (cumulative[r - 1][c] if r else 0.0) for c in range(len(times))]
             for r in range(len(rows))]
    ax.imshow(cells, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(rows)), [f"{le:g}" for le, _ in rows], fontsize=7)
    ax.set_xticks([])
    ax.set_xlabel("time →", fontsize=7)
    return True


_UNIT_LABELS = {"percentunit": "ratio", "reqps": "requests/s", "ops": "events/s", "s": "seconds", "short": ""}


def _draw_panel(ax: Any, panel: PanelSpec, prometheus_url: str, start: float, end: float, step: float,
                values: Mapping[str, str] | None) -> None:
    ax.set_title(panel.title, fontsize=10)
    drawn = False
    for q in panel.queries:
        series = _query_range(prometheus_url, substitute(q.expr, values), start, end, step)
        if q.heatmap:
            drawn = _draw_heatmap(ax, series) or drawn
            continue
        for s in series[:12]:
            # minutes relative to the end: date axes cost several times more to draw
            xs = [(float(t) - end) / 60 for t, _ in s["values"]]
            ys = [float(v) for _, v in s["values"]]
            style = {"drawstyle": "steps-post"} if panel.kind == "state-timeline" else {}
            ax.plot(xs, ys, label=_legend(q.legend, s["metric"])[:40], linewidth=1.2, **style)
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.min is not None or panel.max is not None:
        ax.set_ylim(panel.min, panel.max)
    for v, color in panel.thresholds:
        if v is not None:
            ax.axhline(v, color=color, linestyle="--", linewidth=0.8)
    if panel.kind != "heatmap":
        ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(axis="both", labelsize=7)
        ax.set_xlim((start - end) / 60, 0)
        ax.set_xlabel("minutes before end", fontsize=7)
    if panel.unit:
        ax.set_ylabel(_UNIT_LABELS.get(panel.unit, panel.unit), fontsize=7)


def render_png(
    prometheus_url: str,
    out_dir: Path = DOCS_DIR,
    *,
    minutes: float = 30.0,
    end: float | None = None,
    values: Mapping[str, str] | None = None,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Draw each dashboard's Prometheus panels into ``out_dir/dashboard-<name>.png``.

    ``end`` defaults to now; ``names`` selects dashboards (default: all); ``values`` fills
    the template variables as in :func:`all_panel_queries`.
    """
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    specs = dashboard_specs()
    known = [spec.name for spec in specs]
    if names is not None and (not names or set(names) - set(known)):
        raise ValueError(f"names must be a non-empty subset of {known}, got {list(names)}")
    from matplotlib.figure import Figure

    end = time.time() if end is None else end
    start = end - minutes * 60
    step = max(1.0, round(minutes * 60 / 240))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        if names is not None and spec.name not in names:
            continue
        panels = [p for p in spec.panels() if p.kind not in ("logs", "text")]
        ncols = 3
        nrows = math.ceil(len(panels) / ncols)
        fig = Figure(figsize=(6 * ncols, 3.2 * nrows), dpi=80, layout="constrained")
        fig.suptitle(f"{spec.title}  ({minutes:g} min to {datetime.fromtimestamp(end):%Y-%m-%d %H:%M})")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, panel in zip(axes, panels, strict=False):
            _draw_panel(ax, panel, prometheus_url, start, end, step, values)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        path = out_dir / f"dashboard-{spec.name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the Grafana dashboards (and optionally PNGs).")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="dashboard JSON directory")
    parser.add_argument("--report-index-url", default=DEFAULT_REPORT_INDEX_URL)
    parser.add_argument("--png-from", metavar="PROMETHEUS_URL", help="also draw PNGs from this Prometheus")
    parser.add_argument("--png-dir", type=Path, default=DOCS_DIR)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args(argv)
    for path in write_dashboards(args.out, args.report_index_url):
        print(path)
    if args.png_from:
        for path in render_png(args.png_from, args.png_dir, minutes=args.minutes):
            print(path)


if __name__ == "__main__":
    main()
