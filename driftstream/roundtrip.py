"""A smoke path through the real stack: events -> Kafka -> validating consumer -> S3 -> back.

Used by the demo and by tests: it proves the broker, the contracts, dead-lettering and the
object store work together before anything heavier runs.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer

from driftstream.dead_letters import DeadLetterRouter
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from producers.contracts import (
    DETECTOR_PREDICTIONS,
    TOPICS,
    DeadLetter,
    Detection,
    DetectorPrediction,
    ImageProperties,
    decode,
    encode,
    new_event_id,
    now,
)


@dataclass
class RoundTripResult:
    sent: int
    consumed: int
    dead_lettered: int
    archived_key: str
    read_back: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.consumed == self.sent and self.read_back == self.sent and self.dead_lettered == 1


def _event(rng: random.Random) -> DetectorPrediction:
    t = now()
    conf = rng.uniform(0.5, 0.99)
    return DetectorPrediction(
        event_id=new_event_id(), request_id=uuid.uuid4().hex, model_name="idcard-yolov8n", model_version="roundtrip",
        event_time=t, published_at=t, latency_ms=rng.uniform(20, 60),
        detections=[Detection([10.0, 20.0, 200.0, 140.0], "id_card", conf)],
        image=ImageProperties(1.333, 307200.0, rng.uniform(0.3, 0.6), 0.2, 0.34, 0.33, 0.33),
    )


class _Forward:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.producer.produce(topic, value=value, key=key)


def run(settings: Settings, n_events: int = 20, timeout_s: float = 60.0) -> RoundTripResult:
    t0 = time.monotonic()
    rng = random.Random(7)
    run_id = uuid.uuid4().hex[:12]
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
    events = [_event(rng) for _ in range(n_events)]
    for ev in events:
        producer.produce(DETECTOR_PREDICTIONS, value=encode(ev), key=ev.model_name.encode(),
                         headers={"run": run_id})
    producer.produce(DETECTOR_PREDICTIONS, value=b'{"kind":"detector.prediction/v1","event_id":"broken"}',
                     headers={"run": run_id})
    if producer.flush(30) != 0:
        raise RuntimeError("Kafka did not acknowledge the round-trip events")

    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap_servers, "group.id": f"roundtrip-{run_id}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000,
    })
    consumer.subscribe([DETECTOR_PREDICTIONS])
    router = DeadLetterRouter(_Forward(producer), consumer_name="roundtrip")
    wanted = {ev.event_id for ev in events}
    got: list[DetectorPrediction] = []
    dead = 0
    deadline = time.monotonic() + timeout_s
    while (len(got) < n_events or dead < 1) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        if dict(msg.headers() or []).get("run") != run_id.encode():
            continue
        ev = router.decode(msg.topic(), msg.value(), msg.partition(), msg.offset())
        if ev is None:
            dead += 1
        elif isinstance(ev, DetectorPrediction) and ev.event_id in wanted:
            got.append(ev)
    consumer.commit(asynchronous=False)
    consumer.close()
    producer.flush(10)

    store = ObjectStore(settings)
    key = f"roundtrip/{run_id}/events.jsonl"
    store.put(key, b"\n".join(encode(e) for e in got), "application/x-ndjson")
    back = [decode(DetectorPrediction, line) for line in store.get(key).splitlines() if line]
    assert {e.event_id for e in back} <= wanted
    _check_dead_letter(settings, run_id)
    return RoundTripResult(n_events, len(got), dead, key, len(back), time.monotonic() - t0)


def _check_dead_letter(settings: Settings, run_id: str) -> None:
    """The broken record must be readable from the dead-letter topic with its reason."""
    dlq = TOPICS[DETECTOR_PREDICTIONS].dead_letter
    assert dlq is not None
    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap_servers, "group.id": f"roundtrip-dlq-{run_id}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([dlq])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            dl = decode(DeadLetter, msg.value())
            if b"broken" in dl.original and dl.consumer == "roundtrip" and "missing required field" in dl.reason:
                return
        raise RuntimeError("dead letter of the broken round-trip record not found")
    finally:
        consumer.close()
