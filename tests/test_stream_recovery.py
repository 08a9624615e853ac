"""The detector stream worker against the real Kafka: a second worker joins, the first is
SIGKILLed mid-stream, and every window still counts each event exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from confluent_kafka import Producer

from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from producers.contracts import (
    DETECTOR_PREDICTIONS,
    Detection,
    DetectorPrediction,
    ImageProperties,
    encode,
    new_event_id,
)
from stream_apps.window_pipeline import window_id
from stream_apps.windows import HoppingWindows

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, DRIFTSTREAM_STREAM_DETECTOR_METRICS_PORT=str(port), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "stream_apps.worker", "detector"], env=env, cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"worker did not start; see {log}")


def _processed(port: int) -> float:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return 0.0
    for line in text.splitlines():
        if line.startswith('driftstream_events_processed_total{model="detector"}'):
            return float(line.split()[-1])
    return 0.0


def _event(i: int, t: float, rng: np.random.Generator) -> DetectorPrediction:
    return DetectorPrediction(
        event_id=new_event_id(), request_id=f"recovery-{i}", model_name="idcard-yolov8n", model_version="test",
        event_time=t, published_at=t, latency_ms=5.0, detections=[Detection([0, 0, 5, 5], "id_card", 0.8)],
        image=ImageProperties(1.3, 1e5, float(rng.uniform(0.3, 0.6)), 0.2, 0.33, 0.33, 0.34),
    )


@pytest.mark.timeout(240)
def test_kill_and_join_counts_each_event_once(settings: Settings, tmp_path: Path) -> None:
    size, hop, _, grace = settings.effective_windows()
    windows = HoppingWindows(size, hop)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
    rng = np.random.default_rng(3)
    # Worker A on the port the test Prometheus scrapes (job stream-detector); B on a free one.
    port_a, port_b = settings.stream_detector_metrics_port, _free_port()
    a = _start_worker(settings, port_a, tmp_path / "worker-a.log")
    b = None
    sent: list[float] = []
    try:
        rate, duration = 80, 36.0
        t_start = time.time()
        i = 0
        killed = joined = False
        while (now := time.time()) - t_start < duration:
            target = int((now - t_start) * rate)
            while i < target:
                t = time.time()
                producer.produce(DETECTOR_PREDICTIONS, encode(_event(i, t, rng)), key=b"idcard-yolov8n")
                sent.append(t)
                i += 1
            producer.poll(0)
            if not joined and now - t_start > 8:
                b = _start_worker(settings, port_b, tmp_path / "worker-b.log")  # a second worker joins
                joined = True
            if not killed and now - t_start > 18:
                assert _processed(port_a) + _processed(port_b) > 0, "no worker processed anything"
                os.killpg(a.pid, signal.SIGKILL)  # no shutdown, no final commit
                a.wait(10)
                killed = True
            time.sleep(0.01)
        assert producer.flush(30) == 0
        assert killed and joined and b is not None

        # Windows lying wholly inside the run, once closed, must count exactly the events sent.
        first, last = sent[0], sent[-1]
        starts = [s for s in np.arange(windows.pane_start(first) + hop, last, hop) if s + size <= last]
        assert len(starts) >= 2
        expected = {s: sum(1 for t in sent if s <= t < s + size) for s in starts}
        store = ObjectStore(settings)
        got: dict[float, int] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(got) < len(starts):
            for s in starts:
                key = f"drift/detector/{window_id(s)}.json"
                if s not in got and store.exists(key):
                    doc = json.loads(store.get(key))
                    if doc["window_end"] + grace <= time.time():
                        got[s] = doc["result"]["event_count"]
            time.sleep(1)
        assert got == expected

        # The real Prometheus scraped worker A's metrics while it ran.
        url = f"http://{settings.host}:{settings.prometheus_port}/api/v1/query"
        q = 'max_over_time(driftstream_events_processed_total{job="stream-detector",model="detector"}[5m])'
        res = requests.get(url, params={"query": q}, timeout=5).json()["data"]["result"]
        assert res and float(res[0]["value"][1]) > 0
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
