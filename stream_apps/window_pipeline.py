"""The steps every stream app runs on a batch of records, in pipeline order.

validate (dead letters) -> window (per-partition :class:`WindowProcessor`) -> statistics
and drift (on window close) -> metrics and sink (S3 ``drift/<model>/<window>.json``).

Window state lives in a changelogged Faust table. Table writes go to the changelog
partition of the records they came from, so a partition's state always moves with the
partition when workers join, leave or crash, and Faust restores it before the partition
is consumed again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import faust
from botocore.exceptions import ClientError
from confluent_kafka import Producer
from faust.types import Message

from driftstream.dead_letters import DeadLetterRouter
from driftstream.object_store import ObjectStore, s3_client
from driftstream.settings import Settings
from stream_apps import worker_metrics as m
from stream_apps.consumer_lag import LagProbe
from stream_apps.false_alarm_control import DriftPolicy
from stream_apps.fast_drain import BatchDelivery, FastDrainTransport
from stream_apps.reference_profile import ReferenceProfile
from stream_apps.reference_store import ReferenceMissing, current_key, load_reference
from stream_apps.window_processor import ClosedWindow, WindowProcessor, WindowState
from stream_apps.windows import HoppingWindows

log = logging.getLogger(__name__)

CONSUMER_FETCH_BYTES = 2 << 20  # per partition and fetch (~3.5k detector events): fastest of 1, 2, 4 and 8 MiB here
PERSISTENCE_HOPS = 1  # the budget already sets alpha; persistence would only add delay (docs/drift.md)


def window_id(start: float) -> str:
    return datetime.fromtimestamp(start, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


class StreamApp(BatchDelivery, faust.App):
    """A Faust app whose consumer hands records to batch handlers (:mod:`stream_apps.fast_drain`)."""

    def _new_transport(self) -> FastDrainTransport:
        return FastDrainTransport(self.conf.broker_consumer, self)


def make_app(settings: Settings, app_id: str, web_port: int) -> StreamApp:
    """A Faust app on the project's broker; state in memory, restored from changelogs."""
    return StreamApp(
        app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        web_port=web_port,
        producer_max_request_size=settings.kafka_max_message_bytes,
        stream_buffer_maxsize=8192,
        consumer_max_fetch_size=CONSUMER_FETCH_BYTES,
    )


class WindowPipeline:
    """Validation, windows, drift and metrics of one model's topic in one worker."""

    def __init__(self, settings: Settings, *, model: str, topic: str, table: faust.Table,
                 new_window: Callable[[ReferenceProfile | None], WindowState],
                 load_window: Callable[[ReferenceProfile | None, bytes], WindowState],
                 publish_metrics: Callable[[str, dict[str, Any]], None], app_id: str) -> None:
        self.settings = settings
        self.model = model
        self.topic = topic
        self.table = table
        self.new_window = new_window
        self.load_window = load_window
        self.publish_metrics = publish_metrics
        size, hop, _, grace = settings.effective_windows()
        self.windows = HoppingWindows(size, hop)
        self.grace_s = grace
        self.processors: dict[int, WindowProcessor] = {}  # source partition -> processor
        self.reference: ReferenceProfile | None = None
        self._reference_checked = -1e9
        self.store = ObjectStore(settings)
        self.quick_store = ObjectStore(settings, client=s3_client(settings, timeout_s=2.0, retries=1))
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 50})
        self.router = DeadLetterRouter(_ConfluentForward(self.producer), consumer_name=app_id)
        self.sink_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{model}-sink")
        self.lag_probe = LagProbe(settings.bootstrap_servers, app_id)
        m.REFERENCE_MISSING.labels(model=model).set(0)
        # Freshness is computed when Prometheus scrapes, so it keeps growing while nothing is processed.
        self._newest_event_time = math.nan
        m.EVENT_FRESHNESS.labels(model=model).set_function(self._freshness_now)

    # --- reference ------------------------------------------------------------------------

    def ensure_reference(self, force: bool = False) -> None:
        """Load the current reference, and follow it when a new one is built (checked every 30 s).

        A missing reference is logged and exposed as ``driftstream_reference_missing``.
        """
        now = time.monotonic()
        if not force and now - self._reference_checked < 30:
            return
        self._reference_checked = now
        try:
            pointer = json.loads(self.store.get(current_key(self.model)))
            if self.reference is not None and pointer.get("fingerprint") == self.reference.fingerprint():
                return
            self.reference = load_reference(self.store, self.model)
        except (ReferenceMissing, ClientError):
            m.REFERENCE_MISSING.labels(model=self.model).set(1)
            log.error(str(ReferenceMissing(self.model, current_key(self.model))))
            return
        except Exception as exc:  # S3 down: keep the reference we have, retry later
            log.error("reference could not be loaded: %s", exc)
            if self.reference is None:
                m.REFERENCE_MISSING.labels(model=self.model).set(1)
            return
        m.REFERENCE_MISSING.labels(model=self.model).set(0)
        for proc in self.processors.values():
            proc.reference = self.reference
        log.info("reference loaded", extra={"model": self.model, "version": self.reference.model_version})

    def _policy(self) -> DriftPolicy:
        size, hop, _, _ = self.settings.effective_windows()
        return DriftPolicy.from_budget(self.settings.false_alarms_per_day, size, hop, PERSISTENCE_HOPS)

    def processor(self, partition: int) -> WindowProcessor:
        proc = self.processors.get(partition)
        if proc is None:
            ref = self.reference
            proc = WindowProcessor(
                f"{self.model}#{partition}", self.windows, self.grace_s,
                new_window=lambda: self.new_window(self.reference),
                load_window=lambda raw: self.load_window(self.reference, raw),
                reference=ref, policy=self._policy(),
            )
            prefix_pane, meta = f"pane|{proc.model}|", proc.meta_key
            proc.restore({k: v for k, v in self.table.data.items() if k == meta or k.startswith(prefix_pane)})
            self.processors[partition] = proc
        return proc

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            self.processors.pop(p, None)
        self._update_freshness()

    # --- the pipeline --------------------------------------------------------------------

    def process_batch(self, messages: Sequence[Message]) -> list[ClosedWindow]:
        """validate -> window; then close due windows -> statistics, drift -> metrics, sink."""
        self.ensure_reference()
        touched: set[int] = set()
        accepted = late = 0
        for msg in messages:
            record = self.router.decode(self.topic, msg.value, msg.partition, msg.offset)  # validation
            if record is None:
                continue
            outcome = self.processor(msg.partition).apply(record, msg.partition, msg.offset)  # window
            touched.add(msg.partition)
            if outcome == "accepted":
                accepted += 1
            elif outcome == "late":
                late += 1
        self.producer.poll(0)
        if accepted:
            m.EVENTS_PROCESSED.labels(model=self.model).inc(accepted)
        if late:
            m.LATE_EVENTS_DROPPED.labels(model=self.model).inc(late)
        closed: list[ClosedWindow] = []
        for p in touched:
            closed += self.processors[p].close_due()  # statistics and drift
            self._persist(p)
        self._emit(closed)  # metrics and sink
        self._update_freshness()
        return closed

    def tick(self) -> list[ClosedWindow]:
        """Close windows of idle partitions (wall clock), refresh freshness and lag."""
        self.ensure_reference()
        closed: list[ClosedWindow] = []
        for partition, proc in list(self.processors.items()):
            done = proc.close_due(idle_after_s=self.grace_s)
            if done:
                closed += done
                self._persist(partition)  # the closes reach the changelog, as a batch's do
        self._emit(closed)
        self._update_freshness()
        return closed

    def _persist(self, partition: int) -> None:
        """Write changed state to the table, on the changelog partition it belongs to."""
        for key, value in self.processors[partition].dirty_entries().items():
            if value is None:
                self.table.data.pop(key, None)
                self.table.send_changelog(partition, key, None, value_serializer="raw")
            else:
                self.table.data[key] = value
                self.table.send_changelog(partition, key, value)

    def _update_freshness(self) -> None:
        newest = max((p.newest_event_time for p in self.processors.values()), default=math.nan)
        self._newest_event_time = newest if math.isfinite(newest) and newest > 0 else math.nan

    def _freshness_now(self) -> float:
        """Now minus the newest processed event time (NaN before the first event); read by the scrape thread."""
        newest = self._newest_event_time  # one float read: safe against the event loop's updates
        return math.nan if math.isnan(newest) else max(0.0, time.time() - newest)

    def _emit(self, closed: list[ClosedWindow]) -> None:
        for w in closed:
            m.WINDOWS_CLOSED.labels(model=self.model).inc()
            self.publish_metrics(self.model, w.result)
            _publish_drift_metrics(self.model, w.result)
            doc = {"model": self.model, "window_start": w.window_start, "window_end": w.window_end,
                   "closed_at": w.closed_at, "result": w.result}
            # Stored before the window's close is persisted, so a crash can only re-close it.
            if not self._sink_once(w.window_start, doc):
                self.sink_pool.submit(self._sink, w.window_start, doc)
            if w.result.get("model_drift_detected"):
                log.warning("drift detected", extra={"model": self.model, "window": window_id(w.window_start),
                                                     "features": [k for k, v in w.result["drift"].items()
                                                                  if v.get("drift_detected")]})

    def _sink_once(self, start: float, doc: dict[str, Any]) -> bool:
        try:
            self.quick_store.put(f"drift/{self.model}/{window_id(start)}.json",
                                 json.dumps(doc, default=float).encode(), "application/json")
            return True
        except Exception as exc:
            log.warning("drift result not stored, retrying in the background: %s", exc)
            return False

    def _sink(self, start: float, doc: dict[str, Any]) -> None:
        key = f"drift/{self.model}/{window_id(start)}.json"
        for attempt in range(8):
            try:
                self.store.put(key, json.dumps(doc, default=float).encode(), "application/json")
                return
            except Exception as exc:
                log.warning("drift result not stored (attempt %d): %s", attempt + 1, exc)
                time.sleep(min(2**attempt, 30))

    async def refresh_lag(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            lag = await loop.run_in_executor(None, self.lag_probe.lag, self.topic)
            m.CONSUMER_LAG.labels(topic=self.topic).set(lag)
        except Exception as exc:
            log.debug("lag probe failed: %s", exc)


def _publish_drift_metrics(model: str, result: dict[str, Any]) -> None:
    m.WINDOW_EVENTS.labels(model=model).set(result.get("event_count", 0))
    drift = result.get("drift") or {}
    for feature, d in drift.items():
        m.FEATURE_DRIFT_SCORE.labels(model=model, feature=feature).set(d.get("score") or 0.0)
        p = d.get("p_value")
        m.FEATURE_DRIFT_PVALUE.labels(model=model, feature=feature).set(1.0 if p is None else p)
        m.DRIFT_DETECTED.labels(model=model, feature=feature).set(1 if d.get("drift_detected") else 0)
    if drift:
        m.MODEL_DRIFT_DETECTED.labels(model=model).set(1 if result.get("model_drift_detected") else 0)


class _ConfluentForward:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.producer.produce(topic, value=value, key=key)
