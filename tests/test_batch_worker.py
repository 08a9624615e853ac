"""The batch worker against the real stack: every window gets a recorded status, failures never block.

Events go through Kafka into the archive sink, the worker runs the jobs of each closed window,
and each bad-data case (missing reference, no images, corrupt object, empty window) gives a
failed status with its reason while the next window goes on.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import urllib.request
import uuid
from pathlib import Path

import msgspec
import numpy as np
import pytest
from PIL import Image
from test_archive_sink import SIZE, Sender, group_at_end, prediction, request, wait_for, window_base

from batch.archive_sink import ARCHIVED_TOPICS, NO_REFERENCE, ArchiveSink, ReferenceRef
from batch.report_runner import (
    STATUS_NAME,
    job_status,
    list_reports,
    parse_since,
    report,
    run_summary,
    summary_interval_s,
    window_start_of,
)
from batch.window_keys import manifest_key, report_key, window_label
from batch.worker import BatchWorker, WindowJobsConsumer
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from producers.contracts import WINDOWS_CLOSED, DetectorInput, DetectorPrediction
from producers.idcard_scenes import generate_scene
from producers.image_properties import compute_properties
from stream_apps.detector_window import detector_reference
from stream_apps.reference_store import profile_key

pytestmark = pytest.mark.stack
MODELS_DIR = Path(__file__).resolve().parent.parent / "serving" / "models"
DETECTOR_CARD = MODELS_DIR / "model_card.json"
RECOMMENDER_DIR = MODELS_DIR / "recommender"


def scene_png(seed: int) -> tuple[bytes, dict[str, float]]:
    image = generate_scene(seed, size=(160, 120), n_cards=1).image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue(), compute_properties(image)


def send_window(sender: Sender, prefix: str, start: float, n: int, rng: random.Random, *,
                images: bool) -> list[DetectorPrediction]:
    sent = []
    for i in range(n):
        rid = f"{prefix}{int(start)}-{i}"
        t = start + 0.5 + i
        ev = prediction(rid, t, rng)
        sent.append(ev)
        sender.event(ev)
        if images:
            data, _ = scene_png(rng.randrange(10_000))
            sender.event(DetectorInput(event_id=uuid.uuid4().hex, request_id=rid, event_time=t,
                                       content_type="image/png", image_bytes=data))
    return sent


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (local test server)
        return resp.status, resp.read().decode()


def test_summary_interval_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTSTREAM_SUMMARY_INTERVAL_S", raising=False)
    assert summary_interval_s() == 3600.0
    monkeypatch.setenv("DRIFTSTREAM_SUMMARY_INTERVAL_S", "120")
    assert summary_interval_s() == 120.0
    monkeypatch.setenv("DRIFTSTREAM_SUMMARY_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="number of seconds"):
        summary_interval_s()
    assert parse_since("1h").total_seconds() == 3600
    with pytest.raises(ValueError, match="30m"):
        parse_since("yesterday")


def test_worker_records_every_outcome_and_failures_never_block(settings: Settings) -> None:
    rng = random.Random()
    store = ObjectStore(settings)
    base = window_base(rng)
    w_noref, w_noimg, w_good = (base + k * SIZE for k in range(3))
    prefix = f"worker-{uuid.uuid4().hex[:8]}-"

    # a reference stored under its own version: only windows archived against it find it
    version = f"test-{uuid.uuid4().hex[:8]}"
    props = np.array([list(scene_png(s)[1].values()) for s in range(12)])
    profile = detector_reference("detector", version, props, created_at=0.0)
    store.put(profile_key("detector", version), profile.to_bytes(), "application/json")
    good_ref = ReferenceRef(profile.fingerprint(), profile_key("detector", version))
    lost_ref = ReferenceRef("gone", profile_key("detector", f"{version}-deleted"))

    detector_calls = itertools.count(1)

    def reference_for(model: str) -> ReferenceRef:
        if model != "detector":
            return NO_REFERENCE
        # windows are written oldest first: the first one's reference is gone
        return lost_ref if next(detector_calls) == 1 else good_ref

    sink_group = f"test-wsink-{uuid.uuid4().hex[:8]}"
    jobs_group = f"test-wjobs-{uuid.uuid4().hex[:8]}"
    group_at_end(settings, sink_group, ARCHIVED_TOPICS)
    group_at_end(settings, jobs_group, [WINDOWS_CLOSED])
    ours = {w_noref, w_noimg, w_good}
    sink = ArchiveSink(settings, group_id=sink_group, idle_close_s=1.0, reference=reference_for,
                       accept=lambda e: getattr(e, "request_id", "").startswith(prefix))
    jobs = WindowJobsConsumer(settings, group_id=jobs_group, store=store,
                              accept=lambda e: e.window_start in ours)
    worker = BatchWorker(settings, sink=sink, jobs=jobs, summary_every_s=3600)

    sender = Sender(settings)
    send_window(sender, prefix, w_noref, 12, rng, images=True)
    send_window(sender, prefix, w_noimg, 12, rng, images=False)
    send_window(sender, prefix, w_good, 12, rng, images=True)
    for i in range(3):  # recommender answers to unknown users: popularity fallbacks, no model scores
        ev = request(f"{prefix}rec-{i}", w_noref + 1 + i, rng)
        ev = msgspec.structs.replace(ev, user_id=900_000 + i, fallback=True, ranked_movies_present=False,
                                     ranked_movies=None)
        sender.event(ev)
    sender.flush()
    worker.start()
    try:
        wait_for(lambda: len(jobs.handled) >= 4, 150, "jobs of four windows", every_s=0.5)
        base = f"http://{settings.host}:{settings.batch_metrics_port}"
        code, text = get(base + "/metrics")
        assert code == 200
        assert 'driftstream_batch_jobs_total{job="image_drift",status="failed"}' in text
        assert 'driftstream_windows_archived_total{model="detector"}' in text
        for name in ("driftstream_archive_backlog_windows", "driftstream_batch_job_duration_seconds",
                     "driftstream_batch_job_last_status", "driftstream_archive_late_events_total"):
            assert name in text, name
        assert get(base + "/healthz")[0] == 200
        assert all(worker.alive().values())
    finally:
        worker.stop()
    handled = [(e.model, e.window_start) for e, _ in jobs.handled]
    assert sorted(handled) == [("detector", w_noref), ("detector", w_noimg), ("detector", w_good),
                               ("recommender", w_noref)]
    assert [w for m, w in handled if m == "detector"] == [w_noref, w_noimg, w_good]  # oldest first

    def status(w: float, job: str) -> dict:
        st = job_status(store, "detector", w, job)
        assert st is not None, f"no status of {job} for {window_label(w)}"
        return st

    st = status(w_noref, "image_drift")
    assert st["status"] == "failed" and st["reason"].startswith("missing reference")
    st = status(w_noimg, "heatmaps")
    assert st["status"] == "failed" and "window has no images" in st["reason"]
    st = status(w_noimg, "image_drift")
    assert st["status"] == "ok", st["reason"]
    assert st["outputs"]["html"] == report_key("detector", w_noimg, "image_drift", "image_drift.html")
    assert b"<html>" in store.get(st["outputs"]["html"])
    good = status(w_good, "image_drift")
    assert good["status"] == "ok" and good["reference_version"] == good_ref.version
    assert isinstance(good["metrics"]["drift_detected"], bool)
    heat = status(w_good, "heatmaps")
    if DETECTOR_CARD.is_file():  # the committed detector: EigenCAM overlays of every image
        assert heat["status"] == "ok", heat["reason"]
        assert heat["metrics"]["n_heatmaps"] == 12
        assert all(store.exists(k) for k in heat["outputs"].values())
        assert sum(name.startswith("heatmap:") for name in heat["outputs"]) == 12
    else:
        assert heat["reason"].startswith("detector model not available"), heat["reason"]

    # recommender: routed to its own jobs; a window without rating feedback has nothing to refit on
    drift = job_status(store, "recommender", w_noref, "recommender_drift")
    assert drift is not None and drift["status"] == "failed"
    assert drift["reason"].startswith(("window has no rating feedback", "recommender model not available"))
    expl = job_status(store, "recommender", w_noref, "explanations")
    assert expl is not None
    if RECOMMENDER_DIR.is_dir():
        assert expl["status"] == "ok", expl["reason"]
        assert expl["metrics"]["n_users"] == 3 and expl["metrics"]["n_known_users"] == 0
    else:
        assert expl["reason"].startswith("recommender model not available"), expl["reason"]

    # listing, summary and the index
    entries = list_reports(settings, store=store, model="detector", since=w_noref, until=w_good + SIZE)
    listed = {e["window_start"]: e for e in entries}
    assert set(listed) == ours
    assert listed[w_noref]["drift_status"] == "failed" and listed[w_noref]["jobs"]["image_drift"] == "failed"
    assert listed[w_good]["drift"] in (True, False)
    assert listed[w_good]["drift_status"] in ("drift", "no drift")
    assert listed[w_good]["manifest"] == manifest_key("detector", w_good)
    assert listed[w_good]["reports"]["image_drift"] == good["outputs"]["html"]
    summary = run_summary(settings, period_s=3 * SIZE, end=w_noref + 3 * SIZE, store=store)
    assert [w["window_start"] for w in summary["windows"]] == [w_noref, w_noref, w_noimg, w_good]
    assert summary["totals"]["detector"]["windows"] == 3 and summary["totals"]["recommender"]["windows"] == 1
    assert summary["index_key"] == "reports/index.html"
    index = store.get("reports/index.html").decode()
    assert window_label(w_good) in index and "../" + good["outputs"]["html"] in index
    assert json.loads(store.get(summary["json_key"]))["totals"] == summary["totals"]
    assert b"<table" in store.get(summary["html_key"])

    # a corrupt object: the window's jobs fail with the reason, the status says so
    label = window_label(w_good)
    first_image = next(k for k in json.loads(store.get(manifest_key("detector", w_good)))["objects"]
                       if "/images/" in k)
    store.put(first_image, b"not the archived bytes")
    statuses = report(settings, "detector", window=label, store=store)
    assert [s["status"] for s in statuses] == ["failed", "failed"]
    assert all(s["reason"].startswith(f"corrupt object {first_image}") for s in statuses)
    stored = json.loads(store.get(report_key("detector", label, "image_drift", STATUS_NAME)))
    assert stored["status"] == "failed"

    # an empty window is not archived: asking for its report is a clear failure, not a crash
    empty = window_start_of(settings, w_good + SIZE + 1)
    statuses = report(settings, "detector", window=empty + 3, store=store)
    assert [s["status"] for s in statuses] == ["failed", "failed"]
    assert all("no archived window" in s["reason"] and "empty window" in s["reason"] for s in statuses)
