"""Dashboards as code: deterministic JSON, expected panels and variables, and every panel
query accepted by a real Prometheus (started here on an empty TSDB plus a small backfill)."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftstream import dashboards

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

EXPECTED_PANELS = {
    "services": {"Targets up", "In-progress requests", "Requests per second", "Success rate per endpoint",
                 "Latency p50 / p95 / p99 per endpoint", "CPU", "Memory (RSS)", "Service logs"},
    "models": {"Confidence p90", "Confidence distribution", "Ranked movies present and absent",
               "Drift score per feature", "Drift state", "Window volume"},
    "pipeline": {"Events in and out", "Event freshness", "Consumer lag", "Dead letters (5 min)",
                 "Windows archived (5 min)", "Batch job status", "Reports and links"},
}
EXPECTED_VARIABLES = {"services": {"service"}, "models": {"model"}, "pipeline": {"model", "service"}}


def _load(name: str) -> dict:
    return json.loads((dashboards.DASHBOARDS_DIR / f"{name}.json").read_text())


def test_generation_is_deterministic_and_committed_files_are_current(tmp_path: Path) -> None:
    first = dashboards.write_dashboards(tmp_path / "a")
    second = dashboards.write_dashboards(tmp_path / "b")
    assert [p.name for p in first] == ["services.json", "models.json", "pipeline.json"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        committed = dashboards.DASHBOARDS_DIR / a.name
        assert committed.read_bytes() == a.read_bytes(), f"run `python -m driftstream.dashboards` ({a.name})"


@pytest.mark.parametrize("name", sorted(EXPECTED_PANELS))
def test_each_dashboard_has_its_panels_variables_and_datasources(name: str) -> None:
    board = _load(name)
    assert board["uid"] == f"driftstream-{name}"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    assert EXPECTED_PANELS[name] <= titles, EXPECTED_PANELS[name] - titles
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == EXPECTED_VARIABLES[name]
    for v in variables.values():
        assert v["includeAll"] and v["allValue"] == ".*"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for p in panels:
        assert p["options"] is not None
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "text":
            continue
        uid = p["datasource"]["uid"]
        assert uid == (dashboards.LOKI_UID if p["type"] == "logs" else dashboards.PROMETHEUS_UID)
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])


def test_panels_use_the_fixed_metric_names_and_the_chapter_query() -> None:
    services = json.dumps(_load("services"))
    for metric in ("bentoml_service_request_in_progress", "bentoml_service_request_total",
                   "bentoml_service_request_duration_seconds_bucket", "process_cpu_seconds_total",
                   "process_resident_memory_bytes"):
        assert metric in services
    models = _load("models")
    gauge = next(p for p in models["panels"] if p["title"] == "Confidence p90")
    assert gauge["type"] == "gauge"
    chapter_query = "histogram_quantile(0.9, sum(rate(confidence_score_bucket[5m])) by (le))"
    assert gauge["targets"][0]["expr"] == chapter_query
    heat = next(p for p in models["panels"] if p["title"] == "Confidence distribution")
    assert heat["type"] == "heatmap" and heat["targets"][0]["format"] == "heatmap"
    links = next(p for p in _load("pipeline")["panels"] if p["title"] == "Reports and links")
    assert dashboards.DEFAULT_REPORT_INDEX_URL in links["options"]["content"]


def test_all_panel_queries_substitute_variables() -> None:
    queries = dashboards.all_panel_queries()
    assert len(queries) >= 30
    assert not any("$" in expr for _, _, expr in queries)
    chosen = dashboards.all_panel_queries({"model": "detector", "service": "recommender"})
    exprs = {title: expr for _, title, expr in chosen}
    assert 'model=~"detector"' in exprs["Drift score per feature"]
    assert 'job=~"recommender"' in exprs["Requests per second"]
    with pytest.raises(ValueError, match="unknown template variables"):
        dashboards.all_panel_queries({"nope": "x"})


# --- a throwaway Prometheus -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openmetrics(end: float, minutes: int = 20, step: int = 15) -> str:
    """Synthetic samples for a few panels' metrics over the last ``minutes``."""
    times = [end - minutes * 60 + i * step for i in range(minutes * 60 // step)]
    lines = ["# TYPE bentoml_service_request counter"]
    for code, per_step in (("200", 10), ("500", 1)):
        lines += [f'bentoml_service_request_total{{job="detector",instance="d:1",endpoint="/detect",'
                  f'http_response_code="{code}",service_name="Detector"}} {i * per_step} {t:.3f}'
                  for i, t in enumerate(times)]
    lines.append("# TYPE confidence_score histogram")
    # per step: 2 detections <= 0.5, 8 in (0.8, 0.9]
    for le, per_step in (("0.5", 2), ("0.8", 2), ("0.9", 10), ("1.0", 10), ("+Inf", 10)):
        lines += [f'confidence_score_bucket{{job="detector",instance="d:1",le="{le}"}} {i * per_step} {t:.3f}'
                  for i, t in enumerate(times)]
    lines.append("# TYPE driftstream_feature_drift_score gauge")
    lines += [f'driftstream_feature_drift_score{{job="stream-detector",instance="s:1",model="detector",'
              f'feature="brightness"}} {0.5 + 0.4 * math.sin(i / 8):.4f} {t:.3f}'
              for i, t in enumerate(times)]
    lines.append("# TYPE up gauge")
    lines += [f'up{{job="detector",instance="d:1"}} 1 {t:.3f}' for t in times]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    if not PROMETHEUS or not PROMTOOL:
        pytest.skip("prometheus/promtool not installed (Debian package `prometheus`)")
    tmp = tmp_path_factory.mktemp("prometheus")
    data = tmp / "data"
    data.mkdir()
    end = time.time() - 60
    (tmp / "backfill.om").write_text(_openmetrics(end))
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(tmp / "backfill.om"), str(data)],
        check=True, capture_output=True, timeout=60,
    )
    port = _free_port()
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n")
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, end
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _query(url: str, expr: str, at: float) -> dict:
    params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_every_panel_query_is_accepted_by_prometheus(prometheus_url: tuple[str, float]) -> None:
    url, end = prometheus_url
    failures = []
    for board, title, expr in dashboards.all_panel_queries():
        body = _query(url, expr, end)
        if body.get("status") != "success":
            failures.append((board, title, expr, body.get("error")))
    assert not failures, failures


def test_panels_show_the_backfilled_data(prometheus_url: tuple[str, float]) -> None:
    url, end = prometheus_url
    exprs = {title: expr for _, title, expr in dashboards.all_panel_queries()}
    p90 = _query(url, exprs["Confidence p90"], end)["data"]["result"]
    # 80% of detections in (0.8, 0.9]: the p90 lies in that bucket
    assert len(p90) == 1 and 0.8 < float(p90[0]["value"][1]) <= 0.9
    success = _query(url, exprs["Success rate per endpoint"], end)["data"]["result"]
    got = [(r["metric"]["endpoint"], round(float(r["value"][1]), 3)) for r in success]
    assert got == [("/detect", 0.909)]


def test_render_png_draws_a_dashboard(prometheus_url: tuple[str, float], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    url, end = prometheus_url
    # one dashboard keeps the test fast; it has line, gauge, heatmap and empty panels
    paths = dashboards.render_png(url, tmp_path, minutes=20, end=end, names=["models"])
    assert [p.name for p in paths] == ["dashboard-models.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 20_000
    with pytest.raises(ValueError, match="minutes"):
        dashboards.render_png(url, tmp_path, minutes=0)
    with pytest.raises(ValueError, match="subset"):
        dashboards.render_png(url, tmp_path, names=["nope"])
