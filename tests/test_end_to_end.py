"""End to end through the real stack: services -> Kafka -> stream workers -> Prometheus ->
Alertmanager -> receiver. Injected drift makes ``ImagePropertyDrift`` reach the receiver,
every dashboard panel's query answers with data while traffic flows, and stopping a
service makes ``ServiceDown`` reach the receiver."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from confluent_kafka import Producer

from driftstream.settings import Settings
from driftstream.stack import stack as stack_mod

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["alerts-receiver", "detector", "recommender"]
WORKERS = ["stream-detector", "stream-recommender", "batch"]

pytestmark = pytest.mark.skipif(not (ROOT / "serving" / "models" / "model_card.json").exists(),
                                reason="no detector checkpoint: run `python -m serving.detector_training`")


def _alerts(settings: Settings) -> list[dict]:
    url = f"http://{settings.host}:{settings.alerts_receiver_port}/alerts"
    return requests.get(url, timeout=5).json()


def _wait_alert(settings: Settings, name: str, since: float, timeout_s: float, **labels: str) -> dict | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for a in _alerts(settings):
            if (a.get("alertname") == name and a.get("status") == "firing" and a.get("received_at", 0) >= since
                    and all(a.get("labels", {}).get(k) == v for k, v in labels.items())):
                return a
        time.sleep(2)
    return None


def _exercise_error_paths(s: Settings) -> None:
    from producers.contracts import DETECTOR_PREDICTIONS, Detection, DetectorPrediction, ImageProperties, encode

    r = requests.post(f"http://{s.host}:{s.detector_port}/invocation",
                      files={"image": ("x.jpg", b"not an image", "image/jpeg")}, timeout=10)
    assert r.status_code == 400
    r = requests.post(f"http://{s.host}:{s.recommender_port}/recommend", data=b"{not json",
                      headers={"content-type": "application/json"}, timeout=10)
    assert 400 <= r.status_code < 500
    late = time.time() - 3600
    event = DetectorPrediction(
        event_id=f"late-{time.time()}", request_id="late", model_name="idcard-yolov8n", model_version="test",
        event_time=late, published_at=time.time(), latency_ms=1.0, detections=[Detection([0, 0, 9, 9], "id_card", 0.9)],
        image=ImageProperties(1.0, 100.0, 0.5, 0.2, 0.33, 0.33, 0.34))
    p = Producer({"bootstrap.servers": s.bootstrap_servers})
    p.produce(DETECTOR_PREDICTIONS, encode(event), key=b"idcard-yolov8n")
    p.flush(10)


@pytest.fixture(scope="module")
def full_stack(stack: Settings):
    from batch.reference_build import build_reference

    settings = stack
    stack_mod.up(settings, SERVICES)
    for model in ("detector", "recommender"):
        build_reference(settings, model, progress=False)
    stack_mod.up(settings, WORKERS)
    yield settings
    stack_mod.down(settings, WORKERS + SERVICES)


@pytest.mark.timeout(600)
def test_drift_reaches_receiver_and_dashboards_answer(full_stack: Settings) -> None:
    from driftstream.dashboards import all_panel_queries
    from producers import traffic_detector, traffic_recommender
    from producers.contracts import DETECTOR_PREDICTIONS, RECOMMENDER_REQUESTS

    s = full_stack
    normal = traffic_detector.run(s, 5.0, 100, (), seed=11, distinct=100, progress=False)
    assert normal.ok == normal.sent
    drift_start = time.time()
    rec = threading.Thread(target=traffic_recommender.run, args=(s, 10.0, 400),
                           kwargs={"seed": 12, "progress": False}, daemon=True)
    rec.start()
    broken = Producer({"bootstrap.servers": s.bootstrap_servers})
    for topic in (DETECTOR_PREDICTIONS, RECOMMENDER_REQUESTS):
        broken.produce(topic, b"{not json", key=b"broken")
    broken.flush(10)
    drifted = traffic_detector.run(s, 5.0, 150, ("brightness=0.6",), seed=13, distinct=150, progress=False)
    assert drifted.ok == drifted.sent

    alert = _wait_alert(s, "ImagePropertyDrift", drift_start, 180)
    assert alert is not None, "ImagePropertyDrift never reached the receiver"
    assert alert["labels"].get("service") == "detector"

    # Every panel of every dashboard: no query error, some data. Exercise the error paths
    # the panels count (bad inputs, a late event), then give Prometheus a few scrapes.
    rec.join(timeout=120)
    _exercise_error_paths(s)
    time.sleep(8)
    url = f"http://{s.host}:{s.prometheus_port}/api/v1/query"
    empty, errors = [], []
    for dashboard, title, expr in all_panel_queries():
        res = requests.get(url, params={"query": expr}, timeout=10).json()
        if res.get("status") != "success":
            errors.append((dashboard, title, res.get("error")))
        elif not res["data"]["result"]:
            empty.append((dashboard, title, expr))
    assert not errors, errors
    assert not empty, [f"{d}: {t}" for d, t, _ in empty]


@pytest.mark.timeout(300)
def test_stopped_service_reaches_receiver_as_service_down(full_stack: Settings) -> None:
    s = full_stack
    since = time.time()
    stack_mod.down(s, ["recommender"])
    try:
        alert = _wait_alert(s, "ServiceDown", since, 120, service="recommender")
        assert alert is not None, "ServiceDown never reached the receiver"
        assert alert["path"].startswith("/pager")  # critical: the pager route
    finally:
        stack_mod.up(s, ["recommender"])
