"""The report index: one self-contained HTML page over every archived window's reports.

``render_index(entries, drift_series)`` lists the windows of each model, newest first, with
the window's drift status and links to its manifest, reports, heatmaps and explanation
files, above an inline SVG plot of drift scores over time. The page loads nothing: no
script, style sheet or font comes from a network, so it opens the same from S3, a file or
an air-gapped browser. A short inline script marks ``<body data-plot-rendered="true">`` once
the plot's lines have a drawn length, which lets a headless browser confirm the page renders.

An entry is a dict with ``model``, ``window`` (a label), ``manifest`` (object key) and
``reports`` (name -> object key); optional ``drift`` (True, False, None, or the text
``drift``/``no drift``/``failed``/``unknown``), ``window_start`` (datetime, ISO string or Unix
seconds; for ordering and the plot), ``drift_score`` (for the plot when no series is given),
``reasons`` or ``failures`` (job -> reason of a failed job). Report names starting with
``heatmap`` are listed as heatmaps, names containing ``explanation`` as explanations. Links are
``link_prefix`` + key: pass ``"../"`` for keys relative to the bucket when the page itself is
stored at ``reports/index.html``.

>>> page = render_index(
...     [{"model": "detector", "window": "w1", "manifest": "windows/w1/manifest.json",
...       "reports": {"image_drift.html": "reports/w1/image_drift.html"}, "drift": True}],
...     {"detector max": [(0, 0.1), (300, 0.7)]},
... )
>>> 'href="reports/w1/image_drift.html"' in page, "<svg" in page, "drift" in page
(True, True, True)

Reference: W3C SVG 1.1 (https://www.w3.org/TR/SVG11/); HTML Living Standard.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_REQUIRED = ("model", "window", "manifest", "reports")

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.badge { padding: 2px 8px; border-radius: 10px; color: #fff; font-weight: bold; white-space: nowrap; }
.drift { background: #d62728; } .nodrift { background: #2ca02c; } .unknown { background: #888; }
.failedbadge { background: #7f3f00; }
.failed { color: #b00; }
ul { margin: 0; padding-left: 16px; }
svg text { font-family: sans-serif; font-size: 11px; fill: #333; }
"""

_CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var lines = document.querySelectorAll("svg.drift-plot polyline.series");
  var drawn = Array.prototype.every.call(lines, function (l) { return l.getTotalLength() > 0; });
  document.body.setAttribute("data-plot-rendered", String(lines.length > 0 && drawn));
});
</script>
"""


def to_epoch_seconds(value: Any) -> float:
    """Unix seconds of a datetime (naive means UTC), an ISO 8601 string or a number.

    >>> to_epoch_seconds("1970-01-01T00:01:00Z"), to_epoch_seconds(5)
    (60.0, 5.0)
    """
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        return to_epoch_seconds(datetime.fromisoformat(value.replace("Z", "+00:00")))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"not a time: {value!r}")


def _time_label(seconds: float, span: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%m-%d %H:%M" if span > 86_400 else "%H:%M:%S" if span < 600 else "%H:%M")


def _nice_top(value: float) -> float:
    for top in (0.1, 0.2, 0.25, 0.5, 1.0):
        if value <= top:
            return top
    return float(int(value) + 1)


def drift_plot_svg(
    series: Mapping[str, Sequence[tuple[Any, float]]],
    *,
    threshold: float | None = None,
    width: int = 880,
    height: int = 300,
) -> str:
    """An inline SVG line chart: one polyline per series of (time, score) points."""
    if width < 200 or height < 120:
        raise ValueError(f"width must be >= 200 and height >= 120, got {width} x {height}")
    points = {
        name: sorted((to_epoch_seconds(t), float(v)) for t, v in pts) for name, pts in series.items() if pts
    }
    left, right, top, bottom = 52, 180, 16, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg class="drift-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Drift scores over time">'
    ]
    if not points:
        parts.append(f'<text x="{left}" y="{height / 2:.0f}">No drift scores yet.</text></svg>')
        return "".join(parts)
    times = [t for pts in points.values() for t, _ in pts]
    values = [v for pts in points.values() for _, v in pts] + ([threshold] if threshold is not None else [])
    t0, t1 = min(times), max(times)
    span = t1 - t0 or 1.0
    y_top = _nice_top(max(max(values), 1e-9) * 1.05)

    def x_of(t: float) -> float:
        return left + (t - t0) / span * plot_w if t1 > t0 else left + plot_w / 2

    def y_of(v: float) -> float:
        return top + plot_h - min(max(v, 0.0), y_top) / y_top * plot_h

    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>'
    )
    for k in range(5):
        v = y_top * k / 4
        y = y_of(v)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>'
        )
    for k in range(5 if t1 > t0 else 1):
        t = t0 + span * k / 4 if t1 > t0 else t0
        x = x_of(t)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{html.escape(_time_label(t, span))}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">window start (UTC)</text>'
    )
    if threshold is not None:
        y = y_of(threshold)
        parts.append(
            f'<line class="threshold" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="#555" stroke-dasharray="5,4"/>'
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}">threshold {threshold:g}</text>'
        )
    for k, (name, pts) in enumerate(sorted(points.items())):
        colour = PALETTE[k % len(PALETTE)]
        coords = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in pts)
        if len(pts) == 1:  # a single point still draws a visible segment
            x, y = x_of(pts[0][0]), y_of(pts[0][1])
            coords = f"{x - 3:.1f},{y:.1f} {x + 3:.1f},{y:.1f}"
        label = html.escape(name)
        parts.append(
            f'<polyline class="series" data-series="{label}" points="{coords}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        for t, v in pts:
            when = datetime.fromtimestamp(t, UTC).isoformat()
            parts.append(
                f'<circle cx="{x_of(t):.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}">'
                f"<title>{label} {html.escape(when)}: {v:.3f}</title></circle>"
            )
        ly = top + 14 + 18 * k
        parts.append(
            f'<line x1="{left + plot_w + 12}" y1="{ly - 4}" x2="{left + plot_w + 30}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="3"/><text x="{left + plot_w + 36}" y="{ly}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _link(prefix: str, key: str, text: str) -> str:
    href = html.escape(prefix + quote(key, safe="/:._-~%?=&#+"), quote=True)
    return f'<a href="{href}">{html.escape(text)}</a>'


def _links(prefix: str, items: list[tuple[str, str]]) -> str:
    if not items:
        return "&mdash;"
    return "<ul>" + "".join(f"<li>{_link(prefix, key, name)}</li>" for name, key in items) + "</ul>"


def drift_state(entry: Mapping[str, Any]) -> str:
    """``drift``, ``no drift``, ``failed`` or ``unknown`` from an entry's ``drift`` (bool, None or text).

    >>> drift_state({"drift": True}), drift_state({"drift": "no drift"}), drift_state({})
    ('drift', 'no drift', 'unknown')
    """
    drift = entry.get("drift")
    if drift is True:
        return "drift"
    if drift is False:
        return "no drift"
    if isinstance(drift, str) and drift.strip().lower() in ("drift", "no drift", "failed"):
        return drift.strip().lower()
    return "unknown"


_BADGE = {"drift": "drift", "no drift": "nodrift", "failed": "failedbadge", "unknown": "unknown"}


def _status(entry: Mapping[str, Any]) -> str:
    state = drift_state(entry)
    return f'<span class="badge {_BADGE[state]}">{state}</span>'


def _validate(entries: Sequence[Mapping[str, Any]]) -> None:
    for k, entry in enumerate(entries):
        missing = [key for key in _REQUIRED if key not in entry]
        if missing:
            raise ValueError(f"entry {k} lacks {missing}")
        if not isinstance(entry["reports"], Mapping):
            raise ValueError(f"entry {k}: reports must map names to object keys")


def _row(entry: Mapping[str, Any], prefix: str) -> str:
    reports = sorted(entry["reports"].items())
    heatmaps = [(n, k) for n, k in reports if n.startswith("heatmap")]
    explanations = [(n, k) for n, k in reports if "explanation" in n and not n.startswith("heatmap")]
    others = [(n, k) for n, k in reports if (n, k) not in heatmaps and (n, k) not in explanations]
    failures = {**(entry.get("reasons") or {}), **(entry.get("failures") or {})}
    failed = "".join(
        f'<div class="failed">{html.escape(job)} failed: {html.escape(str(reason))}</div>'
        for job, reason in sorted(failures.items())
    )
    return (
        f"<tr><td>{html.escape(str(entry['window']))}</td><td>{_status(entry)}{failed}</td>"
        f"<td>{_link(prefix, entry['manifest'], 'manifest')}</td><td>{_links(prefix, others)}</td>"
        f"<td>{_links(prefix, heatmaps)}</td><td>{_links(prefix, explanations)}</td></tr>"
    )


def render_index(
    entries: Sequence[Mapping[str, Any]],
    drift_series: Mapping[str, Sequence[tuple[Any, float]]] | None = None,
    *,
    title: str = "Drift reports",
    threshold: float | None = None,
    link_prefix: str = "",
    generated_at: datetime | None = None,
) -> str:
    """The index page as one HTML string; without ``drift_series``, one series per model from the
    entries' ``drift_score`` (the largest drift score of the window's drift report), where given."""
    _validate(entries)
    if drift_series is None:
        drift_series = series_from_entries(entries)
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        by_model.setdefault(str(entry["model"]), []).append(entry)
    now = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(entries)} windows, {len(by_model)} models; generated {html.escape(now)}.</p>",
        "<h2>Drift scores over time</h2>",
        drift_plot_svg(drift_series, threshold=threshold),
    ]
    for model in sorted(by_model):
        rows = sorted(by_model[model], key=lambda e: (_sort_key(e), str(e["window"])), reverse=True)
        n_drift = sum(drift_state(e) == "drift" for e in rows)
        body.append(
            f'<h2 id="model-{html.escape(model, quote=True)}">{html.escape(model)} '
            f"({len(rows)} windows, {n_drift} with drift)</h2>"
        )
        body.append(
            "<table><tr><th>window</th><th>drift status</th><th>manifest</th><th>reports</th>"
            "<th>heatmaps</th><th>explanations</th></tr>"
        )
        body.extend(_row(entry, link_prefix) for entry in rows)
        body.append("</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + _CHECK_SCRIPT
        + "</body></html>\n"
    )


def series_from_entries(entries: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """``{model: [(window_start, drift_score), ...]}`` from entries that have both."""
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in entries:
        score, start = entry.get("drift_score"), entry.get("window_start")
        if isinstance(score, int | float) and not isinstance(score, bool) and start is not None:
            series.setdefault(str(entry["model"]), []).append((to_epoch_seconds(start), float(score)))
    return series


def _sort_key(entry: Mapping[str, Any]) -> float:
    start = entry.get("window_start")
    return to_epoch_seconds(start) if start is not None else float("-inf")
