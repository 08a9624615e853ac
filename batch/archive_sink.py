"""Archive sink: every closed tumbling window of prediction events lands in S3, exactly once.

A confluent-kafka consumer (manual commits) reads the detector predictions, the detector
inputs and the recommender requests; records are validated at this boundary (invalid
ones are dead-lettered). Each model family (``detector``, ``recommender``) has tumbling
windows of ``settings.effective_windows()[2]`` seconds by event time. A window closes
when the watermark minus grace passes its end (the watermark is the largest event time
seen, taken as the lowest over the partitions still delivering, so a topic read behind
another does not make its records late; see :meth:`ArchiveSink.watermark`), or, so that
an idle stream still closes its windows, when nothing arrived for ``idle_close_s`` and
the wall clock minus grace passes its end. A closed window is written under the layout of
:mod:`batch.window_keys` (images, ``inputs.parquet``, ``events.parquet``, then
``manifest.json`` last), a :class:`~producers.contracts.WindowClosed` is published, and
only then are offsets committed: per partition, the lowest offset still held by a window
not yet durably written. Late events for a closed window are counted and dropped.

Restart safety: records of a window whose manifest already exists are not rewritten;
when that window closes again its ``WindowClosed`` is re-published from the stored
manifest with the same ``event_id`` (so a crash between the manifest and the publish
loses nothing and readers can drop the duplicate). With S3 down the sink retries with
exponential backoff, keeps consuming into memory up to ``max_buffer_bytes`` (then
pauses its partitions) and commits nothing it has not written.

The event tables are built from decoded events alone and sorted by ``(event_time,
event_id)``, so archiving the same events twice gives byte-identical objects:

>>> from producers.contracts import Detection, DetectorPrediction, ImageProperties
>>> ev = DetectorPrediction(event_id="e1", request_id="r1", model_name="idcard-yolov8n",
...     model_version="v1", event_time=10.0, published_at=10.5, latency_ms=12.0,
...     detections=[Detection([1.0, 2.0, 3.0, 4.0], "id_card", 0.75)],
...     image=ImageProperties(1.0, 4096.0, 0.5, 0.2, 0.33, 0.33, 0.34))
>>> row = detector_events_table([ev]).to_pylist()[0]
>>> row["n_detections"], row["max_confidence"], row["brightness"]
(1, 0.75, 0.5)
>>> parquet_bytes(detector_events_table([ev])) == parquet_bytes(detector_events_table([ev]))
True
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from batch.window_keys import (
    EVENTS_TOPIC,
    MODELS,
    TOPIC_MODEL,
    Manifest,
    events_key,
    image_key,
    inputs_key,
    manifest_key,
    ratings_key,
    sha256_hex,
)
from driftstream.dead_letters import DeadLetterRouter
from driftstream.object_store import ObjectStore, s3_client
from driftstream.settings import Settings
from producers.contracts import (
    WINDOWS_CLOSED,
    DetectorInput,
    DetectorPrediction,
    Event,
    PartitionRange,
    RatingFeedback,
    RecommenderRequest,
    WindowClosed,
    encode,
)

log = logging.getLogger(__name__)

ARCHIVED_TOPICS = list(TOPIC_MODEL)

WINDOWS_ARCHIVED = Counter("driftstream_windows_archived", "Windows written to S3", ["model"])
BACKLOG = Gauge("driftstream_archive_backlog_windows", "Closed windows not yet durably written", ["model"])
LAST_ARCHIVED = Gauge("driftstream_last_window_archived_timestamp_seconds",
                      "Wall-clock time the last window was archived", ["model"])
LATE_EVENTS = Counter("driftstream_archive_late_events", "Events for an already closed window, dropped",
                      ["model"])
WRITE_ERRORS = Counter("driftstream_archive_write_errors", "Failed attempts to write a window", ["model"])
BUFFERED_BYTES = Gauge("driftstream_archive_buffered_bytes", "Record bytes held in memory by open windows")

IMAGE_COLUMNS = ["aspect_ratio", "area", "brightness", "rms_contrast", "mean_red_relative_intensity",
                 "mean_green_relative_intensity", "mean_blue_relative_intensity"]

DETECTOR_SCHEMA = pa.schema(
    [("event_id", pa.string()), ("request_id", pa.string()), ("model_name", pa.string()),
     ("model_version", pa.string()), ("event_time", pa.float64()), ("published_at", pa.float64()),
     ("latency_ms", pa.float64()), ("n_detections", pa.int32()), ("max_confidence", pa.float64()),
     ("mean_confidence", pa.float64()), ("detections_json", pa.string())]
    + [(c, pa.float64()) for c in IMAGE_COLUMNS]
    + [("trace_id", pa.string())]
)
RECOMMENDER_SCHEMA = pa.schema(
    [("event_id", pa.string()), ("request_id", pa.string()), ("model_name", pa.string()),
     ("model_version", pa.string()), ("event_time", pa.float64()), ("published_at", pa.float64()),
     ("latency_ms", pa.float64()), ("user_id", pa.int64()), ("k", pa.int32()),
     ("ranked_movies_present", pa.bool_()), ("ranked_movies", pa.list_(pa.int64())), ("fallback", pa.bool_()),
     ("explanation_coverage", pa.float64()), ("n_items", pa.int32()), ("items", pa.list_(pa.int64())),
     ("scores", pa.list_(pa.float64())), ("ranks", pa.list_(pa.int32())), ("explained", pa.list_(pa.bool_())),
     ("trace_id", pa.string())]
)
RATINGS_SCHEMA = pa.schema(
    [("event_id", pa.string()), ("request_id", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
     ("rating", pa.float64()), ("event_time", pa.float64())]
)
INPUTS_SCHEMA = pa.schema(
    [("request_id", pa.string()), ("event_id", pa.string()), ("event_time", pa.float64()),
     ("content_type", pa.string()), ("storage", pa.string()), ("bucket", pa.string()), ("key", pa.string()),
     ("size", pa.int64()), ("sha256", pa.string()), ("has_prediction", pa.bool_())]
)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _ordered(events: Iterable[Event]) -> list:
    return sorted(events, key=lambda e: (e.event_time, e.event_id))  # type: ignore[attr-defined]


def detector_events_table(events: Iterable[DetectorPrediction]) -> pa.Table:
    """One row per prediction; detections as JSON plus count, max and mean confidence."""
    rows = []
    for e in _ordered(events):
        conf = [d.confidence for d in e.detections]
        row = {
            "event_id": e.event_id, "request_id": e.request_id, "model_name": e.model_name,
            "model_version": e.model_version, "event_time": e.event_time, "published_at": e.published_at,
            "latency_ms": e.latency_ms, "n_detections": len(conf),
            "max_confidence": max(conf) if conf else None,
            "mean_confidence": sum(conf) / len(conf) if conf else None,
            "detections_json": msgspec.json.encode(e.detections).decode(), "trace_id": e.trace_id,
        }
        row.update(msgspec.structs.asdict(e.image))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DETECTOR_SCHEMA)


def recommender_events_table(events: Iterable[RecommenderRequest]) -> pa.Table:
    """One row per request; the recommended items as parallel lists in rank order."""
    rows = []
    for e in _ordered(events):
        items = sorted(e.items, key=lambda i: i.rank)
        rows.append({
            "event_id": e.event_id, "request_id": e.request_id, "model_name": e.model_name,
            "model_version": e.model_version, "event_time": e.event_time, "published_at": e.published_at,
            "latency_ms": e.latency_ms, "user_id": e.user_id, "k": e.k,
            "ranked_movies_present": e.ranked_movies_present, "ranked_movies": e.ranked_movies,
            "fallback": e.fallback, "explanation_coverage": e.explanation_coverage, "n_items": len(items),
            "items": [i.item_id for i in items], "scores": [i.score for i in items],
            "ranks": [i.rank for i in items], "explained": [i.explained for i in items],
            "trace_id": e.trace_id,
        })
    return pa.Table.from_pylist(rows, schema=RECOMMENDER_SCHEMA)


@dataclass
class WindowBuffer:
    """The records of one window of one model family, and the offsets that hold them."""

    model: str
    start: float
    end: float
    already_archived: bool = False  # manifest exists: track offsets only, never rewrite
    # event_id -> (event, partition, offset); inputs by request_id; (topic, partition) -> [first, last, n]
    events: dict[str, tuple[Event, int, int]] = field(default_factory=dict)
    inputs: dict[str, tuple[DetectorInput, int, int]] = field(default_factory=dict)
    ratings: dict[str, tuple[RatingFeedback, int, int]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    duplicates: int = 0
    nbytes: int = 0
    closed_by: str = ""
    manifest: Manifest | None = None  # set once written, so a failed publish is retried alone
    attempts: int = 0

    def hold(self, topic: str, partition: int, offset: int, size: int) -> None:
        rng = self.offsets.get((topic, partition))
        if rng is None:
            self.offsets[(topic, partition)] = [offset, offset, 1]
        else:
            rng[0], rng[1], rng[2] = min(rng[0], offset), max(rng[1], offset), rng[2] + 1
        self.nbytes += size

    def add(self, topic: str, event: Event, partition: int, offset: int, size: int) -> None:
        self.hold(topic, partition, offset, size)
        if self.already_archived:
            return
        if isinstance(event, DetectorInput):
            key, table = event.request_id, self.inputs
        elif isinstance(event, RatingFeedback):
            key, table = event.event_id, self.ratings  # type: ignore[assignment]
        else:
            key, table = event.event_id, self.events  # type: ignore[assignment]
        held = table.get(key)
        if held is None:
            table[key] = (event, partition, offset)  # type: ignore[assignment]
            return
        self.duplicates += 1
        if (partition, offset) < held[1:]:  # keep the earliest copy so a re-read archives the same bytes
            table[key] = (event, partition, offset)  # type: ignore[assignment]

    @property
    def event_count(self) -> int:
        return len(self.events)

    def partition_ranges(self) -> dict[str, list[dict[str, int]]]:
        out: dict[str, list[dict[str, int]]] = {}
        for (topic, part), (first, last, n) in sorted(self.offsets.items()):
            out.setdefault(topic, []).append({"partition": part, "first_offset": first, "last_offset": last,
                                              "count": n})
        return out


def window_objects(buf: WindowBuffer, bucket: str) -> tuple[dict[str, tuple[bytes, str]], dict[str, int]]:
    """Every object of a window except the manifest (key -> (bytes, content type)) and its counts."""
    objects: dict[str, tuple[bytes, str]] = {}
    events = [e for e, _, _ in buf.events.values()]
    counts = {"events": len(events), "duplicates_dropped": buf.duplicates}
    if buf.model == "detector":
        request_ids = {e.request_id for e in events}  # type: ignore[attr-defined]
        rows = []
        for inp, _, _ in sorted(buf.inputs.values(), key=lambda v: (v[0].event_time, v[0].request_id)):
            if inp.image_bytes is not None:
                key = image_key("detector", buf.start, inp.request_id, inp.content_type)
                objects[key] = (inp.image_bytes, inp.content_type)
                ref = ("inline", bucket, key, len(inp.image_bytes), sha256_hex(inp.image_bytes))
            else:
                cc = inp.claim_check
                assert cc is not None
                ref = ("claim_check", cc.bucket, cc.key, cc.size, cc.sha256)
            rows.append({"request_id": inp.request_id, "event_id": inp.event_id, "event_time": inp.event_time,
                         "content_type": inp.content_type, "storage": ref[0], "bucket": ref[1], "key": ref[2],
                         "size": ref[3], "sha256": ref[4], "has_prediction": inp.request_id in request_ids})
        with_input = {r["request_id"] for r in rows}
        counts.update(
            inputs=len(rows), images=sum(r["storage"] == "inline" for r in rows),
            claim_checks=sum(r["storage"] == "claim_check" for r in rows),
            inputs_without_prediction=sum(not r["has_prediction"] for r in rows),
            predictions_without_input=len(request_ids - with_input),
        )
        objects[inputs_key("detector", buf.start)] = (
            parquet_bytes(pa.Table.from_pylist(rows, schema=INPUTS_SCHEMA)), "application/vnd.apache.parquet")
        table = detector_events_table(events)  # type: ignore[arg-type]
    else:
        table = recommender_events_table(events)  # type: ignore[arg-type]
        ratings = sorted((r for r, _, _ in buf.ratings.values()), key=lambda r: (r.event_time, r.event_id))
        counts["ratings"] = len(ratings)
        if ratings:
            rows = [{"event_id": r.event_id, "request_id": r.request_id, "user_id": r.user_id, "item_id": r.item_id,
                     "rating": r.rating, "event_time": r.event_time} for r in ratings]
            objects[ratings_key("recommender", buf.start)] = (
                parquet_bytes(pa.Table.from_pylist(rows, schema=RATINGS_SCHEMA)), "application/vnd.apache.parquet")
    objects[events_key(buf.model, buf.start)] = (parquet_bytes(table), "application/vnd.apache.parquet")
    return objects, counts


def archive_window(store: ObjectStore, buf: WindowBuffer, reference_version: str,
                   reference_key: str = "", put_workers: int = 8) -> Manifest:
    """Write a window's objects, then its manifest (last: its presence marks the window complete).

    Keys are deterministic, so calling this again overwrites the same objects.
    """
    if not buf.events:
        raise ValueError("an empty window is not archived")
    objects, counts = window_objects(buf, store.bucket)
    ekey = events_key(buf.model, buf.start)
    attachments = sorted(k for k in objects if k != ekey)
    # Many small image PUTs: in parallel (boto3 clients are thread-safe); any failure fails the write.
    with ThreadPoolExecutor(max_workers=min(put_workers, max(1, len(attachments)))) as pool:
        for done in [pool.submit(store.put, k, *objects[k]) for k in attachments]:
            done.result()
    store.put(ekey, *objects[ekey])  # after the objects it refers to
    events = [e for e, _, _ in buf.events.values()]
    manifest = Manifest(
        model=buf.model, window_start=buf.start, window_end=buf.end, reference_version=reference_version,
        reference_key=reference_key, counts=counts, partitions=buf.partition_ranges(),
        objects={k: {"sha256": sha256_hex(d), "size": len(d), "content_type": c}
                 for k, (d, c) in objects.items()},
        events_key=ekey, events_sha256=sha256_hex(objects[ekey][0]),
        model_names=sorted({e.model_name for e in events}),  # type: ignore[attr-defined]
        model_versions=sorted({e.model_version for e in events}),  # type: ignore[attr-defined]
        closed_by=buf.closed_by or "watermark", archived_at=time.time(),
    )
    store.put(manifest.key, manifest.to_json(), "application/json")
    return manifest


def window_closed_event(manifest: Manifest) -> WindowClosed:
    """The announcement of an archived window; its id is derived from the manifest key (re-publish safe)."""
    topic = EVENTS_TOPIC[manifest.model]
    ranges = [PartitionRange(r["partition"], r["first_offset"], r["last_offset"])
              for r in manifest.partitions.get(topic, [])]
    return WindowClosed(
        event_id=hashlib.sha256(f"window.closed|{manifest.key}".encode()).hexdigest()[:32],
        model=manifest.model,  # type: ignore[arg-type]
        window_start=manifest.window_start, window_end=manifest.window_end, event_count=manifest.event_count,
        manifest_key=manifest.key, reference_version=manifest.reference_version, partitions=ranges,
    )


@dataclass(frozen=True)
class ReferenceRef:
    """Which reference a window will be compared with: its version and the key of its profile."""

    version: str
    key: str = ""


NO_REFERENCE = ReferenceRef("none")


class CurrentReference:
    """The model's current reference from its S3 pointer (``references/<model>/current.json``).

    The version is the profile's fingerprint, the name the stream apps give it too. The
    pointer is read at most every ``ttl_s``; without one the version is ``none`` (and the
    report jobs of that window fail with "missing reference").
    """

    def __init__(self, store: ObjectStore, ttl_s: float = 30.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ReferenceRef]] = {}

    def __call__(self, model: str) -> ReferenceRef:
        hit = self._cache.get(model)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        from stream_apps.reference_store import current_key

        try:
            pointer = json.loads(self.store.get(current_key(model)))
            ref = ReferenceRef(str(pointer.get("fingerprint") or pointer.get("model_version") or "none"),
                               str(pointer.get("key", "")))
        except Exception as exc:  # missing pointer, or S3 down: the manifest says so
            log.info("no current reference for %s (%s)", model, type(exc).__name__)
            ref = NO_REFERENCE
        self._cache[model] = (time.monotonic(), ref)
        return ref


class _ForwardProducer:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.producer.produce(topic, value=value, key=key)


@dataclass
class SinkStats:
    """Counters of one sink instance (the Prometheus metrics add up over instances)."""

    records: int = 0
    accepted: int = 0
    late: int = 0
    invalid: int = 0
    filtered: int = 0
    empty_windows: int = 0
    archived: int = 0
    republished: int = 0
    write_failures: int = 0
    commits: int = 0


class ArchiveSink:
    """Consume, window, archive, announce, commit. Call :meth:`run` in a thread or :meth:`step` in a loop.

    ``accept`` limits the sink to some events (records it rejects are skipped and hold no
    offsets). ``reference(model)`` names the reference the window will be compared with
    (a :class:`ReferenceRef` or a version string; default :class:`CurrentReference`); it is
    recorded in the manifest and the window-closed event.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = "driftstream-archive-sink",
        reference: Callable[[str], ReferenceRef | str] | None = None,
        accept: Callable[[Event], bool] | None = None,
        idle_close_s: float | None = None,
        max_buffer_bytes: int = 512 * 1024 * 1024,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        commit_interval_s: float = 5.0,
        store: ObjectStore | None = None,
    ) -> None:
        _, _, size, grace = settings.effective_windows()
        if max_buffer_bytes <= 0:
            raise ValueError(f"max_buffer_bytes must be positive, got {max_buffer_bytes!r}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("backoff_initial_s must be positive and at most backoff_max_s")
        self.settings = settings
        self.size_s, self.grace_s = float(size), float(grace)
        self.idle_close_s = float(max(grace, 1.0) if idle_close_s is None else idle_close_s)
        if not (math.isfinite(self.idle_close_s) and self.idle_close_s >= 0):
            raise ValueError(f"idle_close_s must be a non-negative number, got {idle_close_s!r}")
        self.group_id = group_id
        self.accept = accept
        self.max_buffer_bytes = max_buffer_bytes
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.commit_interval_s = commit_interval_s
        self.store = store or ObjectStore(settings, client=s3_client(settings, timeout_s=5.0, retries=1))
        self.reference = reference or CurrentReference(self.store)
        self.stats = SinkStats()
        self.consumer = Consumer({
            "bootstrap.servers": settings.bootstrap_servers, "group.id": group_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": False, "enable.auto.offset.store": False,
            "session.timeout.ms": 6000, "max.poll.interval.ms": 600000,
            "fetch.message.max.bytes": settings.kafka_max_message_bytes,
        })
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True,
                                  "message.max.bytes": settings.kafka_max_message_bytes})
        self.router = DeadLetterRouter(_ForwardProducer(self.producer), consumer_name=group_id)
        self._open: dict[str, dict[float, WindowBuffer]] = {m: {} for m in MODELS}
        self._pending: list[WindowBuffer] = []  # closed, not yet written+announced, oldest first
        self._horizon = dict.fromkeys(MODELS, -math.inf)  # a window ending at or before this is closed
        self._partition_time: dict[tuple[str, int], float] = {}  # largest event time per partition
        self._partition_seen: dict[tuple[str, int], float] = {}  # when it last delivered (monotonic)
        self._last_event_at = dict.fromkeys(MODELS, time.monotonic())
        self._archived: dict[tuple[str, float], bool] = {}  # manifest exists? (cache of S3 lookups)
        self._position: dict[tuple[str, int], int] = {}  # next offset to read per partition
        self._committed: dict[tuple[str, int], int] = {}
        self._start: dict[tuple[str, int], int] = {}  # where each assigned partition began
        self._lagging: set[tuple[str, int]] = set()
        self._last_commit = 0.0
        self._retry_at = 0.0  # S3 backoff: no write or lookup before this (monotonic)
        self._failures = 0
        self._paused = False
        self._over_bound_warned = False
        self._subscribed = False
        self._lock = threading.Lock()
        for m in MODELS:
            BACKLOG.labels(model=m).set(0)
            WINDOWS_ARCHIVED.labels(model=m)
            LATE_EVENTS.labels(model=m)
            WRITE_ERRORS.labels(model=m)

    # --- introspection ---------------------------------------------------------------

    def backlog(self, model: str | None = None) -> int:
        """Closed windows not yet durably written and announced."""
        return sum(1 for b in self._pending if model is None or b.model == model)

    @property
    def paused(self) -> bool:
        """Whether consumption is paused because the unwritten backlog filled the buffer."""
        return self._paused

    def open_windows(self, model: str) -> list[float]:
        return sorted(self._open[model])

    def buffered_bytes(self) -> int:
        open_bytes = sum(b.nbytes for m in MODELS for b in self._open[m].values())
        return open_bytes + sum(b.nbytes for b in self._pending)

    # --- consumer loop ---------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing uncommitted is durable: drop it and let the next owner re-read from the commits.
        log.info("partitions revoked; dropping %d buffered windows", len(self._pending)
                 + sum(len(v) for v in self._open.values()))
        for m in MODELS:
            self._open[m].clear()
            self._horizon[m] = -math.inf
        self._pending.clear()
        self._partition_time.clear()
        self._partition_seen.clear()
        self._position.clear()
        self._committed.clear()
        self._start.clear()
        self._lagging = set()
        self._paused = False
        self._update_gauges()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Where each partition starts, so a partition not read yet can tell whether it lags.
        try:
            for tp in consumer.committed(partitions, timeout=10):
                off = tp.offset
                if off < 0:  # no commit yet: auto.offset.reset=earliest
                    off = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                         timeout=10)[0]
                self._start[(tp.topic, tp.partition)] = off
        except KafkaException as exc:
            log.warning("start offsets unknown (%s); lag of unread partitions is not tracked", exc)

    def subscribe(self) -> None:
        if not self._subscribed:
            self.consumer.subscribe(ARCHIVED_TOPICS, on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._subscribed = True

    def run(self, stop: threading.Event | None = None, timeout_s: float | None = None) -> SinkStats:
        """Loop until ``stop`` is set or ``timeout_s`` passes; then write what is closed and close."""
        stop = stop or threading.Event()
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        self.subscribe()
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                self.step()
        finally:
            self.close()
        return self.stats

    def step(self, poll_s: float = 0.2) -> None:
        """One round: poll a batch, close due windows, write what is due, commit."""
        self.subscribe()
        msgs = self.consumer.consume(num_messages=500, timeout=poll_s)
        with self._lock:
            self._lagging = self._lagging_partitions()
            for msg in msgs:
                self._ingest(msg)
            self._close_due()
            self._write_pending()
            self._flow_control()
            self._commit(force=False)
            self._update_gauges()
        self.producer.poll(0)

    def close(self, drain_s: float = 10.0) -> None:
        """Write the closed windows that still can be (bounded), commit, leave the group."""
        deadline = time.monotonic() + drain_s
        with self._lock:
            self._retry_at = 0.0
            while self._pending and time.monotonic() < deadline:
                before = len(self._pending)
                self._write_pending()
                if len(self._pending) == before:
                    break
            self._commit(force=True)
        self.producer.flush(5)
        self.consumer.close()

    # --- records ---------------------------------------------------------------------

    def _ingest(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        topic, part, offset = msg.topic(), msg.partition(), msg.offset()
        self._position[(topic, part)] = offset + 1
        self.stats.records += 1
        event = self.router.decode(topic, msg.value(), part, offset)
        if event is None:
            self.stats.invalid += 1
            return
        if self.accept is not None and not self.accept(event):
            self.stats.filtered += 1
            return
        model = TOPIC_MODEL[topic]
        t = event.event_time  # type: ignore[attr-defined]
        start = math.floor(t / self.size_s) * self.size_s
        end = start + self.size_s
        # Judged per record against the watermark so far, so batching never changes the outcome.
        if end <= max(self._horizon[model], self.watermark(model) - self.grace_s):
            self.stats.late += 1
            LATE_EVENTS.labels(model=model).inc()
            return
        buf = self._open[model].get(start)
        if buf is None:
            buf = self._open[model][start] = WindowBuffer(model, start, end,
                                                          already_archived=self._is_archived(model, start))
        buf.add(topic, event, part, offset, len(msg.value() or b""))
        self.stats.accepted += 1
        now = self._last_event_at[model] = time.monotonic()
        self._partition_seen[(topic, part)] = now
        if t > self._partition_time.get((topic, part), -math.inf):
            self._partition_time[(topic, part)] = t

    def _lagging_partitions(self) -> set[tuple[str, int]]:
        """Assigned partitions with records not read yet (cached high watermark past our position)."""
        lagging = set()
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            pos = self._position.get(key, self._start.get(key))
            if pos is None:
                continue
            high = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            if high > pos:
                lagging.add(key)
        return lagging

    def lagging(self, model: str) -> bool:
        """Whether some partition of the model still has records to read."""
        return any(TOPIC_MODEL[t] == model for t, _ in self._lagging)

    def watermark(self, model: str) -> float:
        """The model's event-time watermark: the lowest of its active partitions' largest event times.

        A partition is active while it has records left to read or delivered one within
        ``idle_close_s``. A partition read behind another (the large inputs after a restart
        with a backlog) thus holds the watermark back instead of seeing its records dropped
        as late; a quiet, caught-up one does not. A lagging partition not read at all yet
        holds it entirely. With every partition quiet it is the largest event time seen.
        """
        now = time.monotonic()
        active, seen = math.inf, -math.inf
        for tp, t in self._partition_time.items():
            if TOPIC_MODEL[tp[0]] != model:
                continue
            seen = max(seen, t)
            if tp in self._lagging or now - self._partition_seen[tp] < self.idle_close_s:
                active = min(active, t)
        if any(TOPIC_MODEL[tp[0]] == model and tp not in self._partition_time for tp in self._lagging):
            return -math.inf
        return seen if active == math.inf else active

    def _is_archived(self, model: str, start: float) -> bool:
        """Whether the window's manifest exists; unknown (S3 down) counts as no and is re-checked at write."""
        known = self._archived.get((model, start))
        if known is not None:
            return known
        if time.monotonic() < self._retry_at:
            return False
        try:
            found = self._head(manifest_key(model, start))
        except Exception as exc:  # S3 unreachable: decide when writing
            log.info("manifest lookup failed (%s); deciding at write time", type(exc).__name__)
            return False
        self._archived[(model, start)] = found
        if len(self._archived) > 10000:  # old windows are closed by the horizon; forget the oldest half
            for key in sorted(self._archived, key=lambda k: k[1])[:5000]:
                del self._archived[key]
        return found

    def _head(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.store.client.head_object(Bucket=self.store.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    # --- closing and writing -----------------------------------------------------------

    def _close_due(self) -> None:
        now_mono, now_wall = time.monotonic(), time.time()
        for model in MODELS:
            windows = self._open[model]
            if not windows:
                continue
            threshold = self.watermark(model) - self.grace_s
            due = {s: "watermark" for s, b in windows.items() if b.end <= threshold}
            # While paused or lagging, silence is not idleness: the window's records wait in Kafka.
            if (not self._paused and not self.lagging(model)
                    and now_mono - self._last_event_at[model] >= self.idle_close_s):
                for s, b in windows.items():
                    if s not in due and b.end <= now_wall - self.grace_s:
                        due[s] = "idle"
            if threshold > self._horizon[model]:
                self._horizon[model] = threshold
            for start in sorted(due):
                buf = windows.pop(start)
                buf.closed_by = due[start]
                self._horizon[model] = max(self._horizon[model], buf.end)
                if not buf.events and not buf.already_archived:
                    # inputs without any prediction: nothing to archive, nothing to hold
                    self.stats.empty_windows += 1
                    log.info("window %s/%s closed without events; not archived", model, start)
                    continue
                self._pending.append(buf)
        self._pending.sort(key=lambda b: (b.start, b.model))

    def _write_pending(self) -> None:
        while self._pending and time.monotonic() >= self._retry_at:
            buf = self._pending[0]
            try:
                self._write_one(buf)
            except Exception as exc:
                self._failures += 1
                buf.attempts += 1
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (self._failures - 1))
                self._retry_at = time.monotonic() + delay
                self.stats.write_failures += 1
                WRITE_ERRORS.labels(model=buf.model).inc()
                log.warning("archiving window %s/%s failed (%s: %s); retry in %.1fs", buf.model,
                            buf.start, type(exc).__name__, str(exc)[:200], delay)
                return
            self._failures = 0
            self._pending.pop(0)
            self._archived[(buf.model, buf.start)] = True
            self._commit(force=True)

    def _write_one(self, buf: WindowBuffer) -> None:
        if buf.manifest is None:
            key = manifest_key(buf.model, buf.start)
            if buf.already_archived or self._head(key):
                # Complete from an earlier run: never overwrite it with what a restart re-read.
                buf.manifest = Manifest.from_json(self.store.get(key))
                self.stats.republished += 1
            else:
                ref = self.reference(buf.model)
                ref = ref if isinstance(ref, ReferenceRef) else ReferenceRef(str(ref))
                buf.manifest = archive_window(self.store, buf, ref.version, ref.key)
                self.stats.archived += 1
                WINDOWS_ARCHIVED.labels(model=buf.model).inc()
                LAST_ARCHIVED.labels(model=buf.model).set(time.time())
                log.info("archived window %s (%d events)", buf.manifest.key, buf.event_count)
        self._publish(window_closed_event(buf.manifest))

    def _publish(self, event: WindowClosed) -> None:
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        self.producer.produce(WINDOWS_CLOSED, value=encode(event), key=event.model.encode(),
                              on_delivery=delivered)
        if self.producer.flush(10) != 0 or errors:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT,
                                            f"window-closed event not delivered: {errors or 'timeout'}"))

    # --- memory bound and commits --------------------------------------------------------

    def _flow_control(self) -> None:
        """Pause consuming while unwritten closed windows fill the buffer; resume once it drains.

        Only a backlog pauses: open windows must be able to complete (an open window larger
        than the bound is read anyway, with a warning), else nothing could ever close them.
        """
        size = self.buffered_bytes()
        BUFFERED_BYTES.set(size)
        assignment = self.consumer.assignment()
        if not self._paused and size >= self.max_buffer_bytes and assignment:
            if self._pending:
                self.consumer.pause(assignment)
                self._paused = True
                log.warning("archive buffer full (%d bytes, %d windows unwritten); pausing consumption",
                            size, len(self._pending))
            elif not self._over_bound_warned:
                self._over_bound_warned = True
                log.warning("open windows hold %d bytes, over max_buffer_bytes=%d; raise the bound",
                            size, self.max_buffer_bytes)
        elif self._paused and (size < 0.8 * self.max_buffer_bytes or not self._pending):
            if assignment:
                self.consumer.resume(assignment)
            self._paused = False
            now = time.monotonic()
            for m in MODELS:  # idleness restarts: the paused records are about to arrive
                self._last_event_at[m] = now
            log.info("archive backlog written; consuming again")

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset to commit: the lowest one a not-yet-written window still holds."""
        held: dict[tuple[str, int], int] = {}
        buffers = [b for m in MODELS for b in self._open[m].values()] + self._pending
        for buf in buffers:
            for tp, (first, _, _) in buf.offsets.items():
                if tp not in held or first < held[tp]:
                    held[tp] = first
        return {tp: held.get(tp, pos) for tp, pos in self._position.items()}

    def _commit(self, force: bool) -> None:
        if not force and time.monotonic() - self._last_commit < self.commit_interval_s:
            return
        offsets = {tp: off for tp, off in self.safe_offsets().items() if self._committed.get(tp) != off}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed: %s", exc)
            return
        self._committed.update(offsets)
        self._last_commit = time.monotonic()
        self.stats.commits += 1

    def _update_gauges(self) -> None:
        for m in MODELS:
            BACKLOG.labels(model=m).set(self.backlog(m))
        BUFFERED_BYTES.set(self.buffered_bytes())
