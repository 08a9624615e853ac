"""The detector service for real: HTTP requests, events read back from Kafka, S3 claim-checks,
bad inputs, metrics, JSON logs, and a Kafka outage in the middle of traffic."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from service_client import ServiceClient
from test_publisher import high_watermarks, read_topic

from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from driftstream.stack import stack as stack_mod
from producers import traffic_detector
from producers.contracts import (
    DETECTOR_INPUTS,
    DETECTOR_PREDICTIONS,
    DetectorInput,
    DetectorPrediction,
    decode,
)
from producers.idcard_scenes import generate_scene
from producers.image_properties import compute_properties

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]


class Detector(ServiceClient):
    def __init__(self, settings: Settings, log_file: Path) -> None:
        super().__init__(f"http://{settings.host}:{settings.detector_port}", log_file)
        self.settings = settings

    def post(self, data: bytes, *, endpoint: str = "/invocation", filename: str = "img.jpg",
             trace_id: str | None = None, **kwargs: object) -> requests.Response:
        headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"} if trace_id else {}
        return requests.post(self.url + endpoint, files={"image": (filename, data)}, headers=headers,
                             timeout=60, **kwargs)


@pytest.fixture(scope="module")
def detector(stack: Settings) -> Iterator[Detector]:
    settings = stack
    if not (ROOT / "serving" / "models" / "model_card.json").is_file():
        pytest.skip("no committed detector model (serving/models/model_card.json); "
                    "run `python -m serving.detector_training`")
    service = Detector(settings, stack_mod.select(settings, ["detector"])[0].log_file)
    stack_mod.up(settings, ["detector"], log=lambda _: None)  # the stack's own start: ready at /readyz
    try:
        yield service
    finally:
        stack_mod.down(settings, ["detector"], log=lambda _: None)


def scene_jpeg(seed: int, quality: int = 90) -> tuple[bytes, np.ndarray]:
    image = generate_scene(seed, size=(640, 480), n_cards=1).image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def wait_for(events_of: callable, want: set[str], timeout_s: float = 30.0) -> dict[str, list]:
    """Read back until every wanted request id has an event (events may trail the response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = events_of()
        if want <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def predictions_by_request(settings: Settings, start: dict[int, int]) -> dict[str, list[DetectorPrediction]]:
    out: dict[str, list[DetectorPrediction]] = {}
    for msg in read_topic(settings, DETECTOR_PREDICTIONS, start):
        ev = decode(DetectorPrediction, msg.value())
        out.setdefault(ev.request_id, []).append(ev)
    return out


def inputs_by_request(settings: Settings, start: dict[int, int]) -> dict[str, list[DetectorInput]]:
    out: dict[str, list[DetectorInput]] = {}
    for msg in read_topic(settings, DETECTOR_INPUTS, start):
        ev = decode(DetectorInput, msg.value())
        out.setdefault(ev.request_id, []).append(ev)
    return out


def test_invocation_responses_match_the_published_events(detector: Detector) -> None:
    s = detector.settings
    pred_start, input_start = high_watermarks(s, DETECTOR_PREDICTIONS), high_watermarks(s, DETECTOR_INPUTS)
    sent: dict[str, tuple[bytes, np.ndarray, str, dict]] = {}
    uploads = [scene_jpeg(seed) for seed in range(5)]
    image = uploads[0][1]
    uploads += [(encode(image, "PNG"), image), (encode(image, "TIFF"), image)]
    for (data, decoded), fmt in zip(uploads, ["jpeg"] * 5 + ["png", "tiff"], strict=True):
        trace = uuid.uuid4().hex
        resp = detector.post(data, filename=f"x.{fmt}", trace_id=trace)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"request_id", "model_version", "detections"}
        assert resp.headers["x-request-id"] == body["request_id"] and resp.headers["x-trace-id"] == trace
        for det in body["detections"]:
            x1, y1, x2, y2 = det["bbox"]
            assert det["category"] == "id_card" and 0 <= det["confidence"] <= 1 and x1 <= x2 and y1 <= y2
        sent[body["request_id"]] = (data, decoded, trace, body)
    found = sum(len(b["detections"]) for *_, b in sent.values())
    assert found > 0, "the model found no card in 7 card scenes"

    preds = wait_for(lambda: predictions_by_request(s, pred_start), set(sent))
    inputs = wait_for(lambda: inputs_by_request(s, input_start), set(sent))
    for request_id, (data, decoded, trace, body) in sent.items():
        (ev,) = preds[request_id]
        assert ev.model_version == body["model_version"] and ev.trace_id == trace
        assert [[d.bbox, d.category, d.confidence] for d in ev.detections] == \
            [[d["bbox"], d["category"], d["confidence"]] for d in body["detections"]]
        assert 0 < ev.latency_ms < 60_000 and ev.event_time <= ev.published_at
        h, w = decoded.shape[:2]
        assert (ev.image.aspect_ratio, ev.image.area) == (h / w, float(h * w))
        exact = compute_properties(decoded)
        assert abs(ev.image.brightness - exact["brightness"]) < 0.01
        assert abs(ev.image.mean_red_relative_intensity - exact["mean_red_relative_intensity"]) < 0.01
        (inp,) = inputs[request_id]
        if len(data) <= s.claim_check_bytes:
            assert inp.image_bytes == data and inp.claim_check is None
        else:  # a lossless scene can exceed the cap: then it is stored in S3
            assert inp.image_bytes is None and inp.claim_check.sha256 == hashlib.sha256(data).hexdigest()


def test_large_input_goes_by_claim_check_through_s3(detector: Detector) -> None:
    s = detector.settings
    start = high_watermarks(s, DETECTOR_INPUTS)
    noise = (np.random.default_rng(5).random((480, 640, 3)) * 255).astype(np.uint8)
    data = encode(noise, "PNG")
    assert len(data) > s.claim_check_bytes
    resp = detector.post(data, filename="big.png")
    assert resp.status_code == 200, resp.text
    request_id = resp.json()["request_id"]
    (ev,) = wait_for(lambda: inputs_by_request(s, start), {request_id})[request_id]
    assert ev.image_bytes is None and ev.content_type == "image/png"
    ref = ev.claim_check
    assert ref.key.startswith("inputs/detector/") and ref.key.endswith(request_id)
    assert (ref.size, ref.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert ObjectStore(s).get(ref.key) == data


def test_render_returns_a_png_with_the_boxes(detector: Detector) -> None:
    data, decoded = scene_jpeg(11)
    resp = detector.post(data, endpoint="/render")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB"))
    assert drawn.shape == decoded.shape
    boxes = detector.post(data).json()["detections"]
    if boxes:
        assert np.abs(drawn.astype(int) - decoded.astype(int)).max() > 100, "no box was drawn"


def _truncated() -> bytes:
    data, _ = scene_jpeg(3)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "not_an_image": (lambda: b"this is not an image at all", 400, "not a readable image"),
    "truncated": (_truncated, 400, "truncated"),
    "too_small": (lambda: encode(np.zeros((20, 20, 3), np.uint8), "PNG"), 422, "too small"),
    "too_large": (lambda: os.urandom(11 * 1024 * 1024), 413, "at most"),
    "unsupported_format": (lambda: encode(np.zeros((64, 64, 3), np.uint8), "GIF"), 415, "JPEG, PNG or TIFF"),
}


@pytest.mark.parametrize("reason", list(BAD_INPUTS))
def test_bad_upload_gets_a_4xx_that_says_why_and_is_counted(detector: Detector, reason: str) -> None:
    make, status, words = BAD_INPUTS[reason]
    before = detector.metric("detector_rejected_inputs_total", {"reason": reason})
    resp = detector.post(make())
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["reason"] == reason and words in body["error"] and body["request_id"]
    assert detector.metric("detector_rejected_inputs_total", {"reason": reason}) == before + 1
    assert requests.get(detector.url + "/readyz", timeout=5).status_code == 200, "the worker must survive"
    logged = [x for x in detector.log_lines() if x.get("request_id") == body["request_id"]]
    assert logged and logged[0]["level"] == "WARNING" and logged[0]["reason"] == reason


@pytest.mark.parametrize("how", ["no field", "text field", "json body"])
def test_missing_image_field(detector: Detector, how: str) -> None:
    url = detector.url + "/invocation"
    if how == "no field":
        resp = requests.post(url, files={"other": ("a.jpg", b"x")}, timeout=30)
        want = ("missing_image", 400)
    elif how == "text field":
        resp = requests.post(url, files={"image": (None, "http://example.com/card.jpg")}, timeout=30)
        want = ("missing_image", 400)
    else:
        resp = requests.post(url, json={"image": "/etc/hostname"}, timeout=30)
        want = ("not_multipart", 415)
    assert (resp.json()["reason"], resp.status_code) == want
    assert "image" in resp.json()["error"]


def test_no_detection_is_counted_and_logged_as_a_warning(detector: Detector) -> None:
    before = detector.metric("detector_no_detection_total")
    blank = encode(np.full((480, 640, 3), 128, np.uint8), "PNG")
    resp = detector.post(blank)
    assert resp.status_code == 200 and resp.json()["detections"] == []
    assert detector.metric("detector_no_detection_total") == before + 1
    request_id = resp.json()["request_id"]
    warnings = [x for x in detector.log_lines()
                if x.get("request_id") == request_id and x["level"] == "WARNING"]
    assert warnings and "no detection" in warnings[0]["message"] and warnings[0]["reason"]


def test_metrics_and_json_logs(detector: Detector) -> None:
    data, _ = scene_jpeg(21)
    trace = uuid.uuid4().hex
    request_id = detector.post(data, trace_id=trace).json()["request_id"]
    text = requests.get(detector.url + "/metrics", timeout=10).text
    for le in ("0.1", "0.5", "1.0", "+Inf"):
        assert f'confidence_score_bucket{{le="{le}"}}' in text
    for name in ("detector_detections_per_image_count", "detector_no_detection_total",
                 "driftstream_publish_events_total", "driftstream_spool_bytes",
                 "bentoml_service_request_total"):
        assert name in text, name
    lines = [x for x in detector.log_lines() if x.get("request_id") == request_id]
    assert lines and all(x["trace_id"] == trace and x["service"] == "detector" for x in lines)
    assert any(x["message"] == "request" and x["endpoint"] == "/invocation" for x in lines)


def test_traffic_generator_reaches_its_rate(detector: Detector) -> None:
    report = traffic_detector.run(detector.settings, rate=4.0, count=8, transforms=["brightness=0.6"],
                                  distinct=2, progress=False)
    assert (report.sent, report.ok, report.failed) == (8, 8, 0), report.summary()
    # open loop: request i leaves at i/rate, so 8 requests at 4/s take at least 7/4 s (rate <= 8/1.75)
    assert 2.0 < report.achieved_rate <= 8 / 1.75 and 0 < report.percentile(50) <= report.percentile(99)
    assert "req/s" in report.summary()
    with pytest.raises(ValueError):
        traffic_detector.run(detector.settings, rate=4.0, count=1, transforms=["sepia=1"], progress=False)


def test_kafka_outage_mid_traffic_loses_no_event(detector: Detector) -> None:
    """Kafka stops while requests flow and starts again: every request succeeds, every event arrives once,
    in request order for its key."""
    s = detector.settings
    start = high_watermarks(s, DETECTOR_PREDICTIONS)
    uploads = [scene_jpeg(100 + i)[0] for i in range(4)]
    sent: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        i = 0
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                resp = detector.post(uploads[i % len(uploads)])
                if resp.status_code == 200:
                    sent.append(resp.json()["request_id"])
                else:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))
            i += 1
            time.sleep(0.05)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        time.sleep(3)
        stack_mod.down(s, ["kafka"], log=lambda _: None)
        down_at = len(sent)
        time.sleep(6)
        during = len(sent) - down_at
    finally:
        stack_mod.up(s, ["kafka"], log=lambda _: None)  # later tests need a broker whatever happened
    time.sleep(3)
    stop.set()
    thread.join(60)
    assert not failures, f"requests failed during the outage: {failures[:3]}"
    assert during > 0, "no request completed while Kafka was down"
    assert detector.metric("driftstream_publish_events_total",
                           {"service": "detector", "topic": DETECTOR_PREDICTIONS, "outcome": "spooled"}) > 0

    deadline = time.monotonic() + 90
    while detector.metric("driftstream_spool_bytes", {"service": "detector"}) > 0:
        assert time.monotonic() < deadline, "the spool was not replayed after Kafka came back"
        time.sleep(0.5)
    found = wait_for(lambda: predictions_by_request(s, start), set(sent), timeout_s=60)
    missing = [r for r in sent if r not in found]
    duplicates = sum(len(v) - 1 for v in found.values())
    assert not missing, f"{len(missing)} of {len(sent)} prediction events lost"
    assert duplicates == 0, f"{duplicates} duplicate events (consumers drop them by event_id)"
    assert detector.metric("driftstream_publish_events_total",
                           {"service": "detector", "topic": DETECTOR_PREDICTIONS, "outcome": "dropped"}) == 0
    in_log = [ev.request_id for msg in read_topic(s, DETECTOR_PREDICTIONS, start)
              for ev in [decode(DetectorPrediction, msg.value())] if ev.request_id in set(sent)]
    moved = [(i, got, want) for i, (got, want) in enumerate(zip(in_log, sent, strict=True)) if got != want]
    assert not moved, f"{len(moved)} events out of request order across the Kafka-down transition: {moved[:3]}"
