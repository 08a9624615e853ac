"""Batch worker: the archive sink, the report jobs of each closed window and the periodic summary.

One process, three threads:

- ``archive-sink``: :class:`batch.archive_sink.ArchiveSink` writes closed windows to S3 and
  announces them on ``driftstream.windows.closed.v1``;
- ``window-jobs``: :class:`WindowJobsConsumer` reads those announcements and runs the model
  family's jobs (:func:`batch.report_runner.run_window_jobs`), committing each announcement
  once its jobs have a recorded status (ok or failed: a failed job never blocks the next
  window); an announcement whose jobs are all ok already (a re-announced window) is skipped;
- ``summary``: every ``DRIFTSTREAM_SUMMARY_INTERVAL_S`` seconds
  (:func:`batch.report_runner.summary_interval_s`), the summary of that period and the
  report index.

Prometheus metrics (and a health answer on any path, e.g. ``/healthz``) are served on
``settings.host:settings.batch_metrics_port``. A thread whose step raises is logged and
continues after a short pause, so one bad window or an outage never stops the process.

Run it with ``driftstream batch worker`` or ``python -m batch.worker``; SIGTERM stops it
cleanly (closed windows are written and offsets committed first).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge, start_http_server

from batch.archive_sink import ArchiveSink
from batch.report_runner import all_jobs_ok, run_summary, run_window_jobs, summary_interval_s
from driftstream.dead_letters import DeadLetterRouter
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from producers.contracts import WINDOWS_CLOSED, WindowClosed

log = logging.getLogger(__name__)

WINDOWS_HANDLED = Counter("driftstream_batch_windows", "Window-closed events handled by the batch worker",
                          ["model", "outcome"])
THREAD_ALIVE = Gauge("driftstream_batch_worker_thread_alive", "1 while the worker thread runs", ["thread"])


class _Forward:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.producer.produce(topic, value=value, key=key)


class WindowJobsConsumer:
    """Consume window-closed events and run the window's jobs; commit after each one."""

    def __init__(self, settings: Settings, *, group_id: str = "driftstream-batch-worker",
                 store: ObjectStore | None = None, accept: Callable[[WindowClosed], bool] | None = None,
                 run_jobs: Callable[..., list[dict[str, Any]]] = run_window_jobs) -> None:
        self.settings = settings
        self.store = store or ObjectStore(settings)
        self.accept = accept
        self.run_jobs = run_jobs
        self.consumer = Consumer({
            "bootstrap.servers": settings.bootstrap_servers, "group.id": group_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000,
            "max.poll.interval.ms": 3_600_000,  # jobs on a large window may take long
        })
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        self.router = DeadLetterRouter(_Forward(self.producer), consumer_name=group_id)
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent event ids (re-announcements)
        self._subscribed = False
        self.handled: list[tuple[WindowClosed, list[dict[str, Any]]]] = []

    def step(self, poll_s: float = 0.5) -> WindowClosed | None:
        """Handle at most one announcement; returns it (or None when nothing came)."""
        if not self._subscribed:
            self.consumer.subscribe([WINDOWS_CLOSED])
            self._subscribed = True
        msg: Message | None = self.consumer.poll(poll_s)
        self.producer.poll(0)
        if msg is None:
            return None
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", msg.error())
            return None
        event = self.router.decode(msg.topic(), msg.value(), msg.partition(), msg.offset())
        if isinstance(event, WindowClosed) and (self.accept is None or self.accept(event)):
            self.handle(event)
        self._commit(msg)
        return event if isinstance(event, WindowClosed) else None

    def handle(self, event: WindowClosed) -> list[dict[str, Any]]:
        """Run the jobs of an announced window (skipped when they all succeeded before)."""
        if event.event_id in self._seen or all_jobs_ok(self.store, event.model, event.window_start):
            log.info("window %s already reported; skipping", event.manifest_key)
            WINDOWS_HANDLED.labels(model=event.model, outcome="skipped").inc()
            self._remember(event.event_id)
            return []
        statuses = self.run_jobs(self.settings, event.model, event.window_start, store=self.store)
        failed = [s["job"] for s in statuses if s["status"] != "ok"]
        WINDOWS_HANDLED.labels(model=event.model, outcome="failed" if failed else "ok").inc()
        self._remember(event.event_id)
        self.handled.append((event, statuses))
        return statuses

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)

    def _commit(self, msg: Message) -> None:
        try:
            self.consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:  # the announcement is re-read: its jobs are skipped if ok
            log.warning("commit failed: %s", exc)

    def close(self) -> None:
        self.producer.flush(5)
        self.consumer.close()


class BatchWorker:
    """The sink, the jobs consumer and the summary loop as threads of one process."""

    def __init__(self, settings: Settings, *, sink: ArchiveSink | None = None,
                 jobs: WindowJobsConsumer | None = None, summary_every_s: float | None = None,
                 serve_metrics: bool = True) -> None:
        self.settings = settings
        self.sink = sink if sink is not None else ArchiveSink(settings)
        self.jobs = jobs if jobs is not None else WindowJobsConsumer(settings)
        self.summary_every_s = summary_interval_s() if summary_every_s is None else summary_every_s
        if not self.summary_every_s > 0:
            raise ValueError(f"summary_every_s must be positive, got {summary_every_s!r}")
        self.serve_metrics = serve_metrics
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self._server: Any = None
        self.summaries: list[dict[str, Any]] = []

    def _loop(self, name: str, step: Callable[[], object], close: Callable[[], None] | None = None) -> None:
        THREAD_ALIVE.labels(thread=name).set(1)
        try:
            while not self.stop_event.is_set():
                try:
                    step()
                except Exception:
                    log.exception("%s step failed; continuing", name)
                    self.stop_event.wait(1.0)
        finally:
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("%s did not close cleanly", name)
            THREAD_ALIVE.labels(thread=name).set(0)

    def _summary_step(self) -> None:
        if self.stop_event.wait(self.summary_every_s):
            return
        summary = run_summary(self.settings, period_s=self.summary_every_s, store=self.jobs.store)
        self.summaries.append(summary)

    def start(self) -> None:
        if self.threads:
            raise RuntimeError("the worker is already started")
        if self.serve_metrics:
            self._server, _ = start_http_server(self.settings.batch_metrics_port, addr=self.settings.host)
            log.info("metrics on http://%s:%d/metrics", self.settings.host, self.settings.batch_metrics_port)
        specs = [("archive-sink", self.sink.step, self.sink.close),
                 ("window-jobs", self.jobs.step, self.jobs.close), ("summary", self._summary_step, None)]
        for name, step, close in specs:
            t = threading.Thread(target=self._loop, args=(name, step, close), name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def alive(self) -> dict[str, bool]:
        return {t.name: t.is_alive() for t in self.threads}

    def stop(self, timeout_s: float = 30.0) -> list[str]:
        """Stop the threads (the sink writes what is closed and commits), then the metrics server.

        Returns the threads still running after ``timeout_s`` (a long job: its announcement
        is not committed, so the job runs again at the next start).
        """
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        return [t.name for t in self.threads if t.is_alive()]


def run_worker(settings: Settings, stop: threading.Event | None = None) -> None:
    """``driftstream batch worker``: run until SIGTERM/SIGINT (or ``stop``), then shut down cleanly."""
    from driftstream.offline_env import apply_offline_env

    apply_offline_env(settings.abs_state_dir)  # before torch or deepchecks load
    worker = BatchWorker(settings)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    worker.start()
    log.info("batch worker started (summary every %.0fs)", worker.summary_every_s)
    try:
        while not stop.wait(1.0):
            dead = [name for name, ok in worker.alive().items() if not ok]
            if dead:
                log.error("worker threads stopped: %s", dead)
                break
    finally:
        busy = worker.stop()
    if busy:
        # The sink has committed what it wrote; an unfinished job is re-run at the next start.
        # Leave at once: interpreter teardown under a running native thread aborts the process.
        log.warning("stopping with %s still busy; its window is reported again at the next start", busy)
        logging.shutdown()
        os._exit(0)


if __name__ == "__main__":
    from driftstream.settings import get_settings
    from serving.json_logging import configure_json_logging

    configure_json_logging("batch")
    run_worker(get_settings())
