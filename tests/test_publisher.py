"""EventPublisher against the real Kafka and S3: delivery, order, spooling, replay, drops, claim-checks."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from prometheus_client import REGISTRY

from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from producers.claim_check import claim_check_key
from producers.contracts import (
    DETECTOR_INPUTS,
    DETECTOR_PREDICTIONS,
    DetectorInput,
    DetectorPrediction,
    ImageProperties,
    decode,
    new_event_id,
    now,
)
from producers.publisher import EventPublisher
from producers.spool import Spool

pytestmark = pytest.mark.stack


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def read_topic(settings: Settings, topic: str, start: dict[int, int],
               timeout_s: float = 30.0) -> list[Message]:
    """Every record of ``topic`` from ``start`` offsets up to the current end, in partition order."""
    ends = high_watermarks(settings, topic)
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"rb-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, start.get(p, 0)) for p in ends])
    done = {p for p, end in ends.items() if start.get(p, 0) >= end}
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(done) < len(ends) and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                done.add(msg.partition())
            continue
        out.append(msg)
        if msg.offset() + 1 >= ends[msg.partition()]:
            done.add(msg.partition())
    c.close()
    assert len(done) == len(ends), f"could not read {topic} to its end within {timeout_s}s"
    return out


def count(service: str, topic: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("driftstream_publish_events_total",
                                      {"service": service, "topic": topic, "outcome": outcome})
    return value or 0.0


def prediction(run: str, key: str, seq: int) -> DetectorPrediction:
    t = now()
    return DetectorPrediction(
        event_id=new_event_id(), request_id=f"{run}-{key}-{seq:05d}", model_name=key, model_version="test",
        event_time=t, published_at=t, latency_ms=1.0, detections=[],
        image=ImageProperties(0.75, 307200.0, 0.5, 0.2, 0.33, 0.33, 0.34))


def ours(messages: list[Message], run: str) -> list[DetectorPrediction]:
    events = [decode(DetectorPrediction, m.value()) for m in messages]
    return [e for e in events if e.request_id.startswith(run)]


def assert_complete_and_ordered(events: list[DetectorPrediction], expected: dict[str, int]) -> None:
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate events"
    for key, n in expected.items():
        seqs = [int(e.request_id.rsplit("-", 1)[1]) for e in events if e.model_name == key]
        assert seqs == list(range(n)), f"key {key}: events missing or out of order"


def _settings(settings: Settings, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", **overrides)  # everything else from the test env


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_events_reach_kafka_once_and_in_key_order(settings: Settings, tmp_path: Path) -> None:
    run, service = uuid.uuid4().hex[:10], "pubdirect"
    start = high_watermarks(settings, DETECTOR_PREDICTIONS)
    before = count(service, DETECTOR_PREDICTIONS, "published")
    with EventPublisher(_settings(settings, tmp_path), service) as pub:
        for seq in range(150):
            for key in ("model-a", "model-b"):
                pub.publish(DETECTOR_PREDICTIONS, key.encode(), prediction(run, key, seq))
        assert pub.flush(30) == 0
    events = ours(read_topic(settings, DETECTOR_PREDICTIONS, start), run)
    assert_complete_and_ordered(events, {"model-a": 150, "model-b": 150})
    assert count(service, DETECTOR_PREDICTIONS, "published") - before == 300


def test_publish_call_takes_microseconds(settings: Settings, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    with EventPublisher(_settings(settings, tmp_path), "pubtiming") as pub:
        events = [prediction(run, "timing", i) for i in range(2000)]
        took = []
        for ev in events:
            t0 = time.perf_counter()
            pub.publish(DETECTOR_PREDICTIONS, b"timing", ev)
            took.append(time.perf_counter() - t0)
        assert pub.flush(30) == 0
    p99_us = float(np.percentile(took, 99)) * 1e6
    assert p99_us < 1000, f"publish p99 {p99_us:.0f} us"


def test_unreachable_kafka_spools_then_a_restart_replays_in_order(settings: Settings, tmp_path: Path) -> None:
    run, service = uuid.uuid4().hex[:10], "pubspool"
    start = high_watermarks(settings, DETECTOR_PREDICTIONS)
    dead = _settings(settings, tmp_path, kafka_port=_dead_port())
    pub = EventPublisher(dead, service)
    t0 = time.perf_counter()
    for seq in range(40):
        pub.publish(DETECTOR_PREDICTIONS, b"spool-a", prediction(run, "spool-a", seq))
    assert time.perf_counter() - t0 < 0.5, "publishing must not wait for an unreachable broker"
    assert pub.flush(3) == 40
    assert pub.spooling
    pub.close(timeout_s=1)
    spooled = Spool(dead.abs_state_dir / "spool" / service, dead.spool_max_bytes)
    assert spooled.pending_records == 40, "every event must be on disk after close"
    spooled.close()

    # The next process with the same state dir and a reachable broker replays first, then publishes.
    with EventPublisher(_settings(settings, tmp_path), service) as pub:
        for seq in range(40, 60):
            pub.publish(DETECTOR_PREDICTIONS, b"spool-a", prediction(run, "spool-a", seq))
        assert pub.flush(30) == 0
        deadline = time.monotonic() + 5
        while pub.spooling and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pub.spooling, "an empty spool must switch back to direct publishing"
    events = ours(read_topic(settings, DETECTOR_PREDICTIONS, start), run)
    assert_complete_and_ordered(events, {"spool-a": 60})
    assert count(service, DETECTOR_PREDICTIONS, "replayed") == 60
    assert count(service, DETECTOR_PREDICTIONS, "dropped") == 0


def test_full_spool_drops_are_counted_and_logged(settings: Settings, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    run, service = uuid.uuid4().hex[:10], "pubfull"
    dead = _settings(settings, tmp_path, kafka_port=_dead_port(), spool_max_bytes=4000)
    with caplog.at_level(logging.ERROR, logger="producers.publisher"):
        pub = EventPublisher(dead, service)
        for seq in range(100):
            pub.publish(DETECTOR_PREDICTIONS, b"k", prediction(run, "k", seq))
        deadline = time.monotonic() + 10
        while sum(count(service, DETECTOR_PREDICTIONS, o) for o in ("spooled", "dropped")) < 100:
            assert time.monotonic() < deadline, "events neither spooled nor dropped"
            time.sleep(0.02)
        pub.close(timeout_s=0.5)
    spooled = count(service, DETECTOR_PREDICTIONS, "spooled")
    dropped = count(service, DETECTOR_PREDICTIONS, "dropped")
    assert spooled > 0 and dropped > 0 and spooled + dropped == 100
    assert any("spool is full" in r.getMessage() for r in caplog.records)


def test_publish_never_raises(settings: Settings, tmp_path: Path) -> None:
    with EventPublisher(_settings(settings, tmp_path), "pubbad") as pub:
        pub.publish(DETECTOR_PREDICTIONS, b"k", object())  # type: ignore[arg-type]
    assert count("pubbad", DETECTOR_PREDICTIONS, "dropped") == 1


def test_inputs_inline_and_by_claim_check_through_s3(settings: Settings, tmp_path: Path) -> None:
    service = "pubclaim"
    rng = np.random.default_rng(3)
    small, large = rng.bytes(600), rng.bytes(5000)
    ids = {"small": uuid.uuid4().hex, "large": uuid.uuid4().hex}
    start = high_watermarks(settings, DETECTOR_INPUTS)
    t = now()
    with EventPublisher(_settings(settings, tmp_path, claim_check_bytes=1000), service) as pub:
        pub.publish_input(ids["small"], "image/png", small, t)
        pub.publish_input(ids["large"], "image/jpeg", large, t)
        assert pub.flush(30) == 0
    events = {e.request_id: e for e in (decode(DetectorInput, m.value())
                                        for m in read_topic(settings, DETECTOR_INPUTS, start))}
    inline, ref = events[ids["small"]], events[ids["large"]]
    assert inline.image_bytes == small and inline.claim_check is None and inline.content_type == "image/png"
    assert ref.image_bytes is None and ref.claim_check is not None
    import hashlib

    cc = ref.claim_check
    assert cc.key == claim_check_key(service, ids["large"], t) and cc.key.startswith(f"inputs/{service}/")
    assert (cc.size, cc.sha256, cc.bucket) == (5000, hashlib.sha256(large).hexdigest(), settings.s3_bucket)
    assert ObjectStore(settings).get(cc.key) == large
