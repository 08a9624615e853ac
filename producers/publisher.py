"""Publish a service's events to Kafka without ever blocking or failing its requests.

``EventPublisher.publish`` appends the event to an in-memory queue (the background thread
encodes it): a few microseconds, no I/O, no exception. One background thread owns the Kafka producer
(idempotent, lingering ``publish_linger_ms`` to fill batches) and a durable :class:`~producers.spool.Spool`:

- while Kafka acknowledges, events go straight to the producer (outcome ``published``);
- when a delivery fails or every broker is down, the producer is purged and newer events
  wait in the queue until every direct send has resolved; the failed ones go to the spool
  first, in the order they were published (delivery reports can arrive out of that order),
  then every later event is spooled too (``spooled``), so per-key order holds;
- a single probe record from the head of the spool is retried with backoff; once one is
  acknowledged, the spool is replayed in batches, in order (``replayed``), and publishing
  goes direct again when the spool is empty;
- an event is ``dropped`` only when the spool (or the bounded in-memory queue in front
  of it) is full; that is counted and logged.

Inputs above ``settings.claim_check_bytes`` go to S3 on another background thread and their
event carries a claim-check reference (:mod:`producers.claim_check`). Counters:
``driftstream_publish_events_total{service,topic,outcome}``; gauge ``driftstream_spool_bytes{service}``.
A spool left by a previous process (same service and state dir) is replayed on start.

>>> from driftstream.settings import Settings
>>> off = EventPublisher(Settings(), "doctest", enabled=False)
>>> off.publish("some.topic", b"k", None), off.flush(0.1)
(None, 0)

Reference: librdkafka idempotent producer (https://github.com/confluentinc/librdkafka/blob/master/INTRODUCTION.md#idempotent-producer).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter as Tally
from collections import deque
from functools import partial
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge

from driftstream.settings import Settings
from producers.claim_check import ClaimCheckUploader, ObjectPutter, claim_check_key
from producers.contracts import DETECTOR_INPUTS, ClaimCheck, DetectorInput, Event, encode, new_event_id
from producers.inflight_sends import InFlightSends
from producers.spool import Position, Spool, SpoolRecord

log = logging.getLogger(__name__)

PUBLISH_EVENTS = Counter(
    "driftstream_publish_events",
    "Events a service published: published (acknowledged directly), spooled (written to the local spool), "
    "replayed (acknowledged from the spool), dropped (spool full or undeliverable).",
    ["service", "topic", "outcome"],
)
SPOOL_BYTES = Gauge("driftstream_spool_bytes", "Bytes waiting in the durable local spool.", ["service"],
                    multiprocess_mode="livesum")

OUTCOMES = ("published", "spooled", "replayed", "dropped")
PUBLISH_ENABLED_ENV = "DRIFTSTREAM_PUBLISH_ENABLED"
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Errors that no retry can fix: such a record is dropped instead of blocking the spool forever.
_PERMANENT = {
    getattr(KafkaError, name)
    for name in ("MSG_SIZE_TOO_LARGE", "INVALID_MSG", "INVALID_MSG_SIZE", "INVALID_RECORD",
                 "RECORD_LIST_TOO_LARGE", "TOPIC_AUTHORIZATION_FAILED", "_INVALID_ARG", "_BAD_MSG")
    if hasattr(KafkaError, name)
}
_REPLAY_BATCH = 500
_REPLAY_BATCH_BYTES = 8 << 20
_BACKOFF_S = (0.2, 2.0)
# While sends are in flight the thread checks deliveries at this cadence instead of waking on
# every report and every new event: each wake-up takes the GIL from the request threads.
_BUSY_TICK_S = 0.02


class _EveryFewSeconds(logging.Filter):
    """Lets one librdkafka line through per interval: a broker that is down repeats itself every second."""

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last = -interval_s

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True


_librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
_librdkafka_log.addFilter(_EveryFewSeconds())


def publish_enabled(settings: Settings | None = None) -> bool:
    """Whether a service should publish: ``settings.publish_enabled`` if it exists, else the env variable."""
    value = getattr(settings, "publish_enabled", None)
    if isinstance(value, bool):
        return value
    return os.environ.get(PUBLISH_ENABLED_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def producer_config(settings: Settings, service: str) -> dict[str, Any]:
    """librdkafka settings: idempotent, linger from settings, bounded memory, fast failure detection."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"driftstream-{service}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.publish_linger_ms,
        "batch.size": 1 << 20,
        "compression.type": "none",
        "message.max.bytes": settings.kafka_max_message_bytes,
        "queue.buffering.max.kbytes": 64 * 1024,
        "queue.buffering.max.messages": 100_000,
        "message.timeout.ms": 10_000,
        "socket.connection.setup.timeout.ms": 5_000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1_000,
        "log.connection.close": False,
    }


class _Queued(NamedTuple):
    topic: str
    key: bytes | None
    event: Event
    size: int  # estimate of the encoded size, for the queue's byte bound


class EventPublisher:
    """Durable, non-blocking publishing of one service's events (one instance per service instance)."""

    def __init__(self, settings: Settings, service: str, *, enabled: bool = True,
                 store: ObjectPutter | None = None, max_queue_bytes: int = 64 << 20,
                 config: dict[str, Any] | None = None) -> None:
        if not _SERVICE.match(service):
            raise ValueError(f"service must match {_SERVICE.pattern}, got {service!r}")
        if max_queue_bytes <= 0:
            raise ValueError(f"max_queue_bytes must be > 0, got {max_queue_bytes}")
        self.settings = settings
        self.service = service
        self.enabled = enabled
        self.max_queue_bytes = max_queue_bytes
        # Inline inputs are base64 in JSON (4/3 larger): keep them well under the message cap.
        self.inline_max_bytes = min(settings.claim_check_bytes,
                                    (settings.kafka_max_message_bytes - 16384) * 3 // 4)
        self._children: dict[tuple[str, str], Any] = {}
        self._queue: deque[_Queued] = deque()
        self._queue_lock = threading.Lock()
        self._queued_bytes = 0
        self._wake = threading.Event()
        self._closed = False
        self._drops_unlogged = 0
        self._drop_logged_at = 0.0
        if not enabled:
            return
        self._config = {**producer_config(settings, service), **(config or {}),
                        "error_cb": self._on_error, "logger": _librdkafka_log}
        self._spool = Spool(settings.abs_state_dir / "spool" / service, settings.spool_max_bytes)
        self._producer = Producer(self._config)
        self._spooling = not self._spool.empty
        self._purge_needed = False
        self._fatal = False
        self._probe = True
        self._backoff = _BACKOFF_S[0]
        self._next_replay_at = 0.0
        self._replay: tuple[Position, Tally[str]] | None = None
        self._replay_outstanding = 0
        self._releasing = 0
        self._replay_failed = False
        self._direct: InFlightSends[SpoolRecord] = InFlightSends()
        self._gauge_value = -1
        if self._spooling:
            log.info("spool of %s holds %d events from an earlier run; replaying them first", service,
                     self._spool.pending_records)
        self._claims = ClaimCheckUploader(self._store_factory(store), name=f"claim-check-{service}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publisher-{service}", daemon=True)
        self._thread.start()

    def _store_factory(self, store: ObjectPutter | None):  # noqa: ANN202
        def make() -> ObjectPutter:
            if store is not None:
                return store
            from driftstream.object_store import ObjectStore

            return ObjectStore(self.settings)

        return make

    # --- the request path ----------------------------------------------------------------

    def publish(self, topic: str, key: bytes | None, event: Event) -> None:
        """Queue ``event`` for ``topic``; never raises, never waits on I/O.

        Events are immutable, so encoding waits for the background thread too: the request
        path only appends to a queue, whatever the event's size.
        """
        if not self.enabled:
            return
        try:
            image = getattr(event, "image_bytes", None)
            size = 1024 + (len(image) * 4 // 3 if isinstance(image, bytes) else 0)  # JSON carries base64
            self._enqueue(_Queued(topic, key, event, size))
        except Exception:
            log.exception("could not queue an event for %s", topic)
            self._count(topic, "dropped")

    def publish_input(self, request_id: str, content_type: str, data: bytes, event_time: float) -> None:
        """Publish the original input: inline up to the claim-check size, else by reference to S3."""
        if not self.enabled:
            return
        try:
            key = request_id.encode()
            if len(data) <= self.inline_max_bytes:
                self.publish(DETECTOR_INPUTS, key, DetectorInput(
                    event_id=new_event_id(), request_id=request_id, event_time=event_time,
                    content_type=content_type, image_bytes=data))
                return
            event_id = new_event_id()

            def stored(ref: ClaimCheck) -> None:
                self.publish(DETECTOR_INPUTS, key, DetectorInput(
                    event_id=event_id, request_id=request_id, event_time=event_time,
                    content_type=content_type, claim_check=ref))

            def failed(why: str) -> None:
                self._dropped(DETECTOR_INPUTS, why)

            object_key = claim_check_key(self.service, request_id, event_time)
            if not self._claims.submit(object_key, data, content_type, stored, failed):
                self._dropped(DETECTOR_INPUTS, "claim-check upload queue is full")
        except Exception:
            log.exception("could not publish the input of request %s", request_id)
            self._count(DETECTOR_INPUTS, "dropped")

    def _enqueue(self, item: _Queued) -> None:
        with self._queue_lock:
            accepted = not self._closed and self._queued_bytes + item.size <= self.max_queue_bytes
            if accepted:
                self._queued_bytes += item.size
                self._queue.append(item)
        if accepted:
            if not self._wake.is_set():
                self._wake.set()
        else:
            self._dropped(item.topic, "publisher closed" if self._closed else "in-memory queue is full")

    # --- accounting --------------------------------------------------------------------------

    def _count(self, topic: str, outcome: str, n: int = 1) -> None:
        child = self._children.get((topic, outcome))
        if child is None:
            child = self._children[(topic, outcome)] = PUBLISH_EVENTS.labels(self.service, topic, outcome)
        child.inc(n)

    def _dropped(self, topic: str, why: str) -> None:
        self._count(topic, "dropped")
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= 1.0:  # at most one line a second under a flood
            log.error("dropped %d event(s) of %s: %s", self._drops_unlogged, topic, why,
                      extra={"topic": topic, "dropped": self._drops_unlogged})
            self._drops_unlogged = 0
            self._drop_logged_at = now

    def pending(self) -> int:
        """Events accepted but not yet acknowledged by Kafka (queued, in flight, spooled or uploading)."""
        if not self.enabled:
            return 0
        # From this publisher's own ledgers, not len(producer), which also counts librdkafka's
        # internal requests; a replayed record stays in the spool until its batch commits.
        return (len(self._queue) + self._direct.unresolved + self._direct.failed_count + self._releasing
                + self._spool.pending_records + self._claims.pending)

    @property
    def spooling(self) -> bool:
        return self.enabled and self._spooling

    # --- the background thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # keep publishing whatever went wrong once
                log.exception("publisher step failed")
                time.sleep(0.1)

    def _step(self) -> None:
        moved = self._drain_queue(1000)
        self._producer.poll(0)
        if self._purge_needed or self._fatal:
            self._purge()
        self._spool_failed()
        if self._spooling and not self._direct.holding:
            self._replay_step()
        self._spool.maybe_sync()
        pending = self._spool.pending_bytes
        if pending != self._gauge_value:
            SPOOL_BYTES.labels(self.service).set(pending)
            self._gauge_value = pending
        if moved or self._purge_needed or self._fatal:
            return
        # Sleep until there is work: a delivery report (poll returns early), a new event (the
        # wake event), or the spool's next fsync or replay; an idle publisher costs ~nothing.
        if len(self._producer):
            self._stop.wait(0.05 if self._spooling else _BUSY_TICK_S)
        else:
            self._wake.wait(0.05 if self._spooling else 0.2)
            self._wake.clear()

    def _drain_queue(self, limit: int) -> int:
        moved = 0
        while moved < limit:
            if self._spooling and self._direct.holding:
                break  # older direct sends may still fail, and must be spooled first
            # The item leaves the queue only once it is counted elsewhere (sent or spooled), so
            # pending() never misses it; this thread is the queue's only consumer.
            try:
                item = self._queue[0]
            except IndexError:
                break
            try:
                record = SpoolRecord(item.topic, item.key, encode(item.event))
            except Exception:
                self._dequeue(item)
                log.exception("could not encode an event for %s", item.topic)
                self._dropped(item.topic, "the event cannot be encoded")
                continue
            if not self._spooling:
                seq = self._direct.sent()
                try:
                    self._producer.produce(record.topic, record.value, record.key,
                                           on_delivery=partial(self._on_direct, seq))
                except BufferError:
                    self._direct.cancel(seq)  # the item stays first: it waits for the older sends
                    self._start_spooling("the producer's local queue is full")
                    break
                except KafkaException as exc:
                    self._fail(seq, record, exc.args[0])
                    self._dequeue(item)
                    continue
            else:
                self._to_spool(record)
            self._dequeue(item)
            moved += 1
        return moved

    def _dequeue(self, item: _Queued) -> None:
        with self._queue_lock:
            self._queue.popleft()
            self._queued_bytes -= item.size

    def _to_spool(self, record: SpoolRecord) -> None:
        if self._spool.append(record):
            self._count(record.topic, "spooled")
        else:
            self._dropped(record.topic, f"the spool is full ({self._spool.max_bytes} bytes)")

    def _fail(self, seq: int, record: SpoolRecord, err: KafkaError) -> None:
        if err.code() in _PERMANENT:
            self._direct.cancel(seq)
            self._dropped(record.topic, f"Kafka refused it for good: {err}")
            return
        self._direct.failed(seq, record)
        self._start_spooling(f"delivery failed: {err}")

    def _on_direct(self, seq: int, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._direct.succeeded(seq)
            self._count(msg.topic(), "published")
        else:
            self._fail(seq, SpoolRecord(msg.topic(), msg.key(), msg.value()), err)

    def _spool_failed(self, force: bool = False) -> None:
        """Once no direct send is unresolved, spool the failed ones in publish order."""
        records = self._direct.release(force)
        self._releasing = len(records)  # still pending while they move to the spool
        for record in records:
            self._to_spool(record)
            self._releasing -= 1

    def _on_replay(self, err: KafkaError | None, msg: Message) -> None:
        self._replay_outstanding -= 1
        if err is None:
            return
        if err.code() in _PERMANENT:
            self._dropped(msg.topic(), f"Kafka refused a spooled event for good: {err}")
        else:
            self._replay_failed = True

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("Kafka producer fatal error, recreating it: %s", err)
            self._fatal = True
            self._start_spooling(str(err))
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._start_spooling(str(err))
            self._purge_needed = True  # also fails an in-flight replay batch fast

    def _start_spooling(self, why: str) -> None:
        if self._spooling:
            return
        log.warning("Kafka unreachable (%s); spooling events to %s", why, self._spool.directory)
        self._spooling = True
        self._purge_needed = True
        self._probe = True
        self._backoff = _BACKOFF_S[0]
        self._next_replay_at = time.monotonic() + self._backoff

    def _purge(self) -> None:
        """Fail everything the producer still holds, so it can be spooled before any newer event."""
        self._purge_needed = False
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        deadline = time.monotonic() + 5.0
        while len(self._producer) and time.monotonic() < deadline:
            self._producer.poll(0.01)
        if self._fatal:
            self._fatal = False
            lost = len(self._producer)
            lost = max(0, lost - self._replay_outstanding)  # unacknowledged replays stay in the spool
            if lost:  # a dead producer never reports these: count them rather than wait forever
                log.error("%d events were lost with the failed Kafka producer", lost)
                self._count("unknown", "dropped", lost)
            if self._replay_outstanding:
                self._replay_outstanding, self._replay_failed = 0, True  # replayed again later
            self._direct.forget_unresolved()
            self._producer = Producer(self._config)

    def _replay_step(self) -> None:
        now = time.monotonic()
        if self._replay is not None:
            if self._replay_outstanding > 0:
                return
            end, topics = self._replay
            self._replay = None
            if self._replay_failed:
                self._probe = True
                self._next_replay_at = now + self._backoff
                self._backoff = min(self._backoff * 2, _BACKOFF_S[1])
                return
            self._spool.commit(end)
            for topic, n in topics.items():
                self._count(topic, "replayed", n)
            if self._probe:
                log.info("Kafka reachable again; replaying %d spooled events", self._spool.pending_records)
            self._probe = False
            self._backoff = _BACKOFF_S[0]
        if now < self._next_replay_at:
            return
        if self._spool.empty:
            self._spooling = False
            log.info("spool drained; publishing directly again")
            return
        topics: Tally[str] = Tally()
        end: Position | None = None
        for record, position in self._spool.read(1 if self._probe else _REPLAY_BATCH, _REPLAY_BATCH_BYTES):
            try:
                self._producer.produce(record.topic, record.value, record.key, on_delivery=self._on_replay)
            except (BufferError, KafkaException):
                break  # the rest waits for the next batch
            topics[record.topic] += 1
            end = position
        if end is None:
            self._next_replay_at = now + 0.1
            return
        self._replay = (end, topics)
        self._replay_outstanding = sum(topics.values())
        self._replay_failed = False

    # --- waiting and closing -------------------------------------------------------------------

    def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` until every accepted event is acknowledged; returns how many are not."""
        if not self.enabled:
            return 0
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            left = self.pending()
            if left == 0 or time.monotonic() >= deadline or not self._thread.is_alive():
                return left
            time.sleep(0.005)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout_s``; spool the rest for the next start."""
        if not self.enabled or self._closed:
            self._closed = True
            return
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s / 2)
        self._claims.close(max(0.1, deadline - time.monotonic()))
        self.flush(max(0.0, deadline - time.monotonic()))
        with self._queue_lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)
        # The thread is gone: this thread now owns the producer and the spool. Unresolved
        # direct sends go to the spool first, then whatever is still queued.
        self._spooling = True
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        end = time.monotonic() + 2.0
        while (self._direct.unresolved or self._replay_outstanding) and time.monotonic() < end:
            self._producer.poll(0.01)  # serves the purged records' reports
        self._spool_failed(force=True)
        self._direct.forget_unresolved()
        self._drain_queue(len(self._queue) + 1)
        if self._replay is not None and self._replay_outstanding == 0 and not self._replay_failed:
            self._spool.commit(self._replay[0])  # acknowledged before the thread stopped
            for topic, n in self._replay[1].items():
                self._count(topic, "replayed", n)
        left = self._spool.pending_records
        self._spool.close()
        SPOOL_BYTES.labels(self.service).set(self._spool.pending_bytes)
        if left:
            log.warning("publisher of %s closed with %d events spooled for the next start",
                        self.service, left)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
