"""The archive sink against the real stack: objects equal the events sent, and nothing is lost.

Isolation on shared topics: each test uses its own consumer groups (started at the topics'
current end), request ids with a unique prefix (the sink's ``accept`` filter) and event
times in windows far in the past that no other test uses.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from PIL import Image
from prometheus_client import REGISTRY

from batch.archive_sink import ARCHIVED_TOPICS, ArchiveSink
from batch.window_keys import (
    Manifest,
    events_key,
    image_key,
    inputs_key,
    manifest_key,
    sha256_hex,
    window_prefix,
)
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from driftstream.stack import stack as stack_mod
from producers.contracts import (
    DETECTOR_INPUTS,
    DETECTOR_PREDICTIONS,
    RECOMMENDER_REQUESTS,
    WINDOWS_CLOSED,
    ClaimCheck,
    Detection,
    DetectorInput,
    DetectorPrediction,
    Event,
    ImageProperties,
    RecommendedItem,
    RecommenderRequest,
    WindowClosed,
    decode,
    encode,
)

pytestmark = pytest.mark.stack
SIZE = 20.0  # the short preset's tumbling window


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def window_base(rng: random.Random) -> float:
    """A window start between 2004 and 2017, unique to one test run."""
    return float(rng.randrange(1_080_000_000 // 20, 1_500_000_000 // 20) * 20)


def plain_consumer(settings: Settings, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group,
                     "enable.auto.commit": False})


def group_at_end(settings: Settings, group: str, topics: list[str]) -> None:
    """Start a fresh consumer group at the topics' current end (earlier events belong to others)."""
    c = plain_consumer(settings, group)
    try:
        tps = []
        for topic in topics:
            for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
                _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                tps.append(TopicPartition(topic, p, high))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def group_at(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    c = plain_consumer(settings, group)
    try:
        c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def committed(settings: Settings, group: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    c = plain_consumer(settings, group)
    try:
        got = c.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in got}
    finally:
        c.close()


class Sender:
    """Produce events and remember where each landed: (topic, partition, offset, tag)."""

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers,
                                  "enable.idempotence": True})
        self.landed: list[tuple[str, int, int, str]] = []

    def send(self, topic: str, value: bytes, key: bytes, tag: str = "") -> None:
        def delivered(err, msg) -> None:  # noqa: ANN001
            assert err is None, err
            self.landed.append((msg.topic(), msg.partition(), msg.offset(), tag))

        self.producer.produce(topic, value=value, key=key, on_delivery=delivered)

    def event(self, ev: Event, tag: str = "") -> None:
        key = ev.request_id if isinstance(ev, DetectorInput) else ev.model_name  # type: ignore[attr-defined]
        self.send({DetectorPrediction: DETECTOR_PREDICTIONS, DetectorInput: DETECTOR_INPUTS,
                   RecommenderRequest: RECOMMENDER_REQUESTS}[type(ev)], encode(ev), key.encode(), tag)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0

    def ranges(self, topic: str, tag: str | None = None) -> list[dict[str, int]]:
        """Offset ranges per partition of the records of ``topic`` (with ``tag``), manifest-shaped."""
        out: dict[int, list[int]] = {}
        for t, p, o, g in self.landed:
            if t == topic and (tag is None or g == tag):
                r = out.setdefault(p, [o, o, 0])
                r[0], r[1], r[2] = min(r[0], o), max(r[1], o), r[2] + 1
        return [{"partition": p, "first_offset": a, "last_offset": b, "count": n}
                for p, (a, b, n) in sorted(out.items())]

    def first_offsets(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for t, p, o, _ in self.landed:
            out[(t, p)] = min(o, out.get((t, p), o))
        return out

    def last_offsets(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for t, p, o, _ in self.landed:
            out[(t, p)] = max(o, out.get((t, p), o))
        return out


def png(rng: random.Random) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), tuple(rng.randrange(256) for _ in range(3))).save(buf, format="PNG")
    return buf.getvalue()


def prediction(rid: str, t: float, rng: random.Random) -> DetectorPrediction:
    dets = [Detection([rng.uniform(0, 50), 5.0, 60.0 + i, 70.0], "id_card", round(rng.uniform(0.3, 0.99), 4))
            for i in range(rng.randrange(0, 3))]
    return DetectorPrediction(
        event_id=uuid.uuid4().hex, request_id=rid, model_name="idcard-yolov8n", model_version="v-test",
        event_time=t, published_at=t + 0.01, latency_ms=rng.uniform(5, 50), detections=dets,
        image=ImageProperties(1.333, 192.0, rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3), 0.34, 0.33, 0.33),
    )


def request(rid: str, t: float, rng: random.Random) -> RecommenderRequest:
    items = [RecommendedItem(rng.randrange(1, 1700), rng.uniform(0, 5), r + 1, r % 2 == 0) for r in range(3)]
    present = rng.random() < 0.5
    return RecommenderRequest(
        event_id=uuid.uuid4().hex, request_id=rid, model_name="movielens-mf", model_version="v-test",
        event_time=t, published_at=t + 0.01, latency_ms=3.0, user_id=rng.randrange(1000), k=3,
        ranked_movies_present=present, items=items, explanation_coverage=2 / 3, fallback=not present,
        ranked_movies=[5, 7] if present else None,
    )


def expected_detector_row(ev: DetectorPrediction) -> dict:
    conf = [d.confidence for d in ev.detections]
    return {
        "event_id": ev.event_id, "request_id": ev.request_id, "model_name": ev.model_name,
        "model_version": ev.model_version, "event_time": ev.event_time, "published_at": ev.published_at,
        "latency_ms": ev.latency_ms, "n_detections": len(conf), "max_confidence": max(conf) if conf else None,
        "mean_confidence": sum(conf) / len(conf) if conf else None,
        "detections_json": json.dumps([[d.bbox, d.category, d.confidence] for d in ev.detections]),
        "aspect_ratio": ev.image.aspect_ratio, "area": ev.image.area, "brightness": ev.image.brightness,
        "rms_contrast": ev.image.rms_contrast,
        "mean_red_relative_intensity": ev.image.mean_red_relative_intensity,
        "mean_green_relative_intensity": ev.image.mean_green_relative_intensity,
        "mean_blue_relative_intensity": ev.image.mean_blue_relative_intensity, "trace_id": "",
    }


def normalise_detections(row: dict) -> dict:
    row = dict(row)
    row["detections_json"] = json.dumps([[d["bbox"], d["category"], d["confidence"]]
                                         for d in json.loads(row["detections_json"])])
    return row


@contextmanager
def running(sink: ArchiveSink, limit_s: float = 90.0) -> Iterator[ArchiveSink]:
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop, limit_s), daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "sink did not stop"


def window_closed_reader(settings: Settings) -> Consumer:
    group = f"test-wc-{uuid.uuid4().hex[:8]}"
    group_at_end(settings, group, [WINDOWS_CLOSED])
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group,
                  "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe([WINDOWS_CLOSED])
    return c


def read_window_closed(c: Consumer, keys: set[str], want: int, timeout_s: float) -> list[WindowClosed]:
    out: list[WindowClosed] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        msg = c.poll(0.3)
        if msg is None or msg.error():
            continue
        ev = decode(WindowClosed, msg.value())
        if ev.manifest_key in keys:
            out.append(ev)
    return out


def test_archived_objects_equal_the_events_sent(settings: Settings) -> None:
    rng = random.Random()
    store = ObjectStore(settings)
    t0 = window_base(rng)
    w0, w1 = t0, t0 + SIZE
    for w in (w0, w1):
        assert not list(store.list(window_prefix("detector", w))), "window of a previous run"
    prefix = f"arch-{uuid.uuid4().hex[:8]}-"
    group = f"test-archive-{uuid.uuid4().hex[:8]}"
    group_at_end(settings, group, ARCHIVED_TOPICS)
    wc = window_closed_reader(settings)

    sender = Sender(settings)
    preds: list[DetectorPrediction] = []
    inputs: dict[str, DetectorInput] = {}
    for i in range(10):
        t = (w0 if i < 6 else w1) + 0.5 + i
        tag = "w0" if i < 6 else "w1"
        rid = f"{prefix}d{i}"
        ev = prediction(rid, t, rng)
        preds.append(ev)
        common = {"event_id": uuid.uuid4().hex, "request_id": rid, "event_time": t,
                  "content_type": "image/png"}
        if i == 3:  # a large input travels by claim-check: archived as a reference only
            claim = ClaimCheck(settings.s3_bucket, f"claims/{rid}", 1234, "c" * 64)
            inp = DetectorInput(**common, claim_check=claim)
        else:
            inp = DetectorInput(**common, image_bytes=png(rng))
        inputs[rid] = inp
        sender.event(inp, tag)
        sender.event(ev, tag)
    sender.event(preds[0], "w0")  # a duplicate (producer retry): archived once
    recs = [request(f"{prefix}r{i}", w0 + 1.0 + i, rng) for i in range(3)]
    for ev in recs:
        sender.event(ev)
    sender.send(DETECTOR_PREDICTIONS, b'{"kind": "detector.prediction/v1", "event_id": "broken"}', b"x")
    w2 = w1 + SIZE  # an input without any prediction: its window has no events and is not archived
    sender.event(DetectorInput(event_id=uuid.uuid4().hex, request_id=f"{prefix}orphan", event_time=w2 + 1,
                               content_type="image/png", image_bytes=png(rng)), "w2")
    sender.flush()

    sink = ArchiveSink(settings, group_id=group, idle_close_s=1.0,
                       accept=lambda e: getattr(e, "request_id", "").startswith(prefix),
                       reference=lambda model: f"ref-{model}-7")
    late_metric = ("driftstream_archive_late_events_total", {"model": "detector"})
    late_before = REGISTRY.get_sample_value(*late_metric) or 0
    keys = {manifest_key("detector", w0), manifest_key("detector", w1), manifest_key("recommender", w0)}
    with running(sink):
        wait_for(lambda: all(store.exists(k) for k in keys), 40, "three archived windows")
        wait_for(lambda: sink.backlog() == 0, 10, "empty backlog")
        late = prediction(f"{prefix}late", w0 + 2.0, rng)
        sender.event(late)
        sender.flush()
        wait_for(lambda: sink.stats.late >= 1, 15, "the late event")
    assert sink.stats.invalid >= 1
    assert sink.stats.empty_windows == 1 and not list(store.list(window_prefix("detector", w2)))
    assert REGISTRY.get_sample_value(*late_metric) == late_before + 1

    # events.parquet: exactly the events sent (duplicate once, late one dropped), in event-time order
    by_window = {w0: preds[:6], w1: preds[6:]}
    for w, sent in by_window.items():
        man = Manifest.from_json(store.get(manifest_key("detector", w)))
        data = store.get(events_key("detector", w))
        rows = [normalise_detections(r) for r in pq.read_table(io.BytesIO(data)).to_pylist()]
        assert rows == [expected_detector_row(e) for e in sorted(sent, key=lambda e: e.event_time)]
        assert man.events_sha256 == sha256_hex(data) == man.objects[events_key("detector", w)]["sha256"]
        assert (man.window_start, man.window_end, man.reference_version) == (w, w + SIZE, "ref-detector-7")
        assert man.model_names == ["idcard-yolov8n"] and man.schema_version == 1
        # inputs: inline images byte-identical; the claim-check kept as a reference
        in_rows = {r["request_id"]: r for r in pq.read_table(io.BytesIO(store.get(inputs_key("detector", w))))
                   .to_pylist()}
        assert set(in_rows) == {e.request_id for e in sent}
        images = 0
        for rid, row in in_rows.items():
            inp = inputs[rid]
            if inp.image_bytes is not None:
                key = image_key("detector", w, rid, "image/png")
                assert row["storage"] == "inline" and row["key"] == key
                assert store.get(key) == inp.image_bytes
                assert man.objects[key]["sha256"] == sha256_hex(inp.image_bytes) == row["sha256"]
                images += 1
            else:
                assert (row["storage"], row["key"], row["size"]) == ("claim_check", f"claims/{rid}", 1234)
        assert man.counts["events"] == len(sent) and man.counts["images"] == images
        assert man.counts["inputs"] == len(sent) and man.counts["predictions_without_input"] == 0
        # every object of the folder is in the manifest, with its checksum
        folder = set(store.list(window_prefix("detector", w))) - {man.key}
        assert folder == set(man.objects)
        for key, meta in man.objects.items():
            assert sha256_hex(store.get(key)) == meta["sha256"]
    m0 = Manifest.from_json(store.get(manifest_key("detector", w0)))
    assert m0.counts["duplicates_dropped"] == 1 and m0.counts["claim_checks"] == 1
    # offset ranges per topic: exactly where the window's records landed
    for w, tag in ((w0, "w0"), (w1, "w1")):
        man = Manifest.from_json(store.get(manifest_key("detector", w)))
        assert man.partitions == {topic: sender.ranges(topic, tag) for topic in (DETECTOR_PREDICTIONS,
                                                                                  DETECTOR_INPUTS)}
    assert sum(r["count"] for r in m0.partitions[DETECTOR_PREDICTIONS]) == 7

    # a recommender window: events and no images is normal
    rman = Manifest.from_json(store.get(manifest_key("recommender", w0)))
    rrows = pq.read_table(io.BytesIO(store.get(events_key("recommender", w0)))).to_pylist()
    assert [r["event_id"] for r in rrows] == [e.event_id for e in recs]
    for r, e in zip(rrows, recs, strict=True):
        assert r["items"] == [i.item_id for i in e.items] and r["scores"] == [i.score for i in e.items]
        assert (r["user_id"], r["fallback"], r["ranked_movies"]) == (e.user_id, e.fallback, e.ranked_movies)
    assert rman.counts == {"events": 3, "duplicates_dropped": 0, "ratings": 0}
    assert set(store.list(window_prefix("recommender", w0))) == {rman.key, events_key("recommender", w0)}

    # announced on WINDOWS_CLOSED, and offsets committed past everything archived
    closed = {e.manifest_key: e for e in read_window_closed(wc, keys, 3, 20)}
    wc.close()
    assert set(closed) == keys
    assert closed[manifest_key("detector", w0)].event_count == 6
    assert closed[manifest_key("detector", w0)].reference_version == "ref-detector-7"
    last = sender.last_offsets()
    done = committed(settings, group, sorted(last))
    assert all(done[tp] >= off + 1 for tp, off in last.items()), (done, last)

    # Idempotent retry: a crash before the manifest of w1 and a restart from the earliest offsets
    # rewrite w1 at the same keys with the same bytes; the complete w0 is left alone.
    before = {k: store.get(k) for k in store.list(window_prefix("detector", w1))}
    m0_bytes = store.get(manifest_key("detector", w0))
    store.delete(manifest_key("detector", w1))
    replay = f"test-replay-{uuid.uuid4().hex[:8]}"
    group_at(settings, replay, sender.first_offsets())
    sink2 = ArchiveSink(settings, group_id=replay, idle_close_s=1.0,
                        accept=lambda e: getattr(e, "request_id", "").startswith(prefix),
                        reference=lambda model: f"ref-{model}-7")
    with running(sink2):
        wait_for(lambda: store.exists(manifest_key("detector", w1)) and sink2.stats.republished >= 2
                 and sink2.backlog() == 0, 40, "the rewrite of w1 and the re-announcement of w0")
    after = {k: store.get(k) for k in store.list(window_prefix("detector", w1))}
    assert set(after) == set(before)
    mk1 = manifest_key("detector", w1)
    assert all(after[k] == before[k] for k in before if k != mk1)
    m1a, m1b = json.loads(before[mk1]), json.loads(after[mk1])
    m1a.pop("archived_at"), m1b.pop("archived_at")
    assert m1a == m1b
    assert store.get(manifest_key("detector", w0)) == m0_bytes
    assert sink2.stats.archived == 1


def test_s3_outage_loses_nothing_and_commits_nothing_unarchived(settings: Settings) -> None:
    rng = random.Random()
    store = ObjectStore(settings)
    w0 = window_base(rng)
    w1 = w0 + SIZE
    prefix = f"outage-{uuid.uuid4().hex[:8]}-"
    group = f"test-outage-{uuid.uuid4().hex[:8]}"
    group_at_end(settings, group, ARCHIVED_TOPICS)
    sink = ArchiveSink(settings, group_id=group, idle_close_s=1.0, max_buffer_bytes=1,
                       backoff_initial_s=0.2, backoff_max_s=1.0,
                       accept=lambda e: getattr(e, "request_id", "").startswith(prefix))
    sender = Sender(settings)
    first = [prediction(f"{prefix}a{i}", w0 + i, rng) for i in range(5)]
    second = [prediction(f"{prefix}b{i}", w1 + i, rng) for i in range(4)]

    def backlog() -> float | None:
        return REGISTRY.get_sample_value("driftstream_archive_backlog_windows", {"model": "detector"})

    with running(sink, limit_s=120):
        try:
            stack_mod.down(settings, ["s3"])
            for ev in first:
                sender.event(ev)
                sender.event(DetectorInput(event_id=uuid.uuid4().hex, request_id=ev.request_id,
                                           event_time=ev.event_time, content_type="image/png",
                                           image_bytes=png(rng)))
            sender.flush()
            wait_for(lambda: sink.backlog("detector") == 1 and sink.stats.write_failures >= 2, 30,
                     "a backlog while S3 is down")
            assert backlog() == 1
            # the buffer bound paused consumption: later events wait in Kafka, not in memory
            wait_for(lambda: sink.paused, 5, "paused consumption")
            accepted = sink.stats.accepted
            for ev in second:
                sender.event(ev)
            sender.flush()
            time.sleep(2.0)
            assert sink.stats.accepted == accepted
            held = sender.first_offsets()
            now = committed(settings, group, sorted(held))
            for tp, off in now.items():
                assert off <= held[tp], f"{tp} committed at {off}, past unarchived offset {held[tp]}"
        finally:
            stack_mod.up(settings, ["s3"])
        keys = [manifest_key("detector", w0), manifest_key("detector", w1)]
        wait_for(lambda: all(store.exists(k) for k in keys) and sink.backlog() == 0, 40,
                 "both windows after S3 is back")
    assert backlog() == 0
    for w, sent in ((w0, first), (w1, second)):
        rows = pq.read_table(io.BytesIO(store.get(events_key("detector", w)))).to_pylist()
        assert [r["event_id"] for r in rows] == [e.event_id for e in sent]
    m0 = Manifest.from_json(store.get(manifest_key("detector", w0)))
    assert m0.counts["images"] == 5
    last = sender.last_offsets()
    done = committed(settings, group, sorted(last))
    assert all(done[tp] >= off + 1 for tp, off in last.items()), (done, last)


def test_watermark_closes_a_window_and_later_ones_stay_open(settings: Settings) -> None:
    rng = random.Random()
    store = ObjectStore(settings)
    w0 = window_base(rng)
    prefix = f"wm-{uuid.uuid4().hex[:8]}-"
    group = f"test-wm-{uuid.uuid4().hex[:8]}"
    group_at_end(settings, group, ARCHIVED_TOPICS)
    grace = settings.effective_windows()[3]
    sink = ArchiveSink(settings, group_id=group, idle_close_s=3600.0,  # only the watermark closes here
                       accept=lambda e: getattr(e, "request_id", "").startswith(prefix))
    sender = Sender(settings)
    for i in range(3):
        sender.event(prediction(f"{prefix}{i}", w0 + i, rng))
    later = w0 + 2 * SIZE + grace + 1  # watermark later - grace passes the end of w0, not of its own window
    sender.event(prediction(f"{prefix}later", later, rng))
    sender.event(prediction(f"{prefix}late", w0 + 5, rng))  # after the watermark passed w0: late
    sender.flush()
    with running(sink):
        wait_for(lambda: store.exists(manifest_key("detector", w0)) and sink.stats.late == 1, 30,
                 "w0 closed by the watermark")
        assert sink.open_windows("detector") == [w0 + 2 * SIZE]
    man = Manifest.from_json(store.get(manifest_key("detector", w0)))
    assert man.closed_by == "watermark" and man.event_count == 3
    assert not store.exists(manifest_key("detector", w0 + 2 * SIZE))  # still open: never written partially
    # the open window's records are not committed: a restart re-reads them
    (tp, first), = [(tp, o) for tp, o in sender.first_offsets().items() if tp[0] == DETECTOR_PREDICTIONS]
    assert committed(settings, group, [tp])[tp] <= first + 3
