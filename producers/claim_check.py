"""Claim-check uploads: large inputs go to S3 on a background thread, and the event carries a reference.

An input above the size cap is not put on Kafka. ``ClaimCheckUploader.submit`` queues the
bytes (never blocking the request) and a worker thread stores them under
``inputs/<service>/<yyyy-mm-dd>/<request id>`` and then calls back with a
:class:`~producers.contracts.ClaimCheck` (bucket, key, size, sha256), so an event is only
published once its object exists. Failed uploads are retried with backoff while the
uploader runs; the queue is bounded in bytes and a refused submit is the caller's to count.

>>> claim_check_key("detector", "r1", 1_700_000_000.0)
'inputs/detector/2023-11-14/r1'
>>> ref = make_claim_check("driftstream", "inputs/detector/2023-11-14/r1", b"abc")
>>> ref.size, ref.sha256[:12]
(3, 'ba7816bf8f01')

Reference: G. Hohpe and B. Woolf, "Enterprise Integration Patterns", Claim Check
(https://www.enterpriseintegrationpatterns.com/patterns/messaging/StoreInLibrary.html).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from producers.contracts import ClaimCheck

log = logging.getLogger(__name__)


def claim_check_key(service: str, request_id: str, event_time: float) -> str:
    """Object key of an input: partitioned by service and UTC day, named by request id."""
    if not service or not request_id or "/" in request_id:
        raise ValueError(f"service and a request id without '/' are required, "
                         f"got {service!r}, {request_id!r}")
    day = datetime.fromtimestamp(event_time, UTC).strftime("%Y-%m-%d")
    return f"inputs/{service}/{day}/{request_id}"


def make_claim_check(bucket: str, key: str, data: bytes) -> ClaimCheck:
    return ClaimCheck(bucket=bucket, key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())


class ObjectPutter(Protocol):
    """What the uploader needs from an object store (``driftstream.object_store.ObjectStore`` fits)."""

    bucket: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...


@dataclass
class _Job:
    key: str
    data: bytes
    content_type: str
    done: Callable[[ClaimCheck], None]
    failed: Callable[[str], None]


class ClaimCheckUploader:
    """One worker thread putting queued inputs to the store, at most ``max_pending_bytes`` queued."""

    def __init__(self, store_factory: Callable[[], ObjectPutter], *, max_pending_bytes: int = 64 << 20,
                 retry_backoff_s: tuple[float, float] = (0.2, 5.0), name: str = "claim-check") -> None:
        if max_pending_bytes <= 0:
            raise ValueError(f"max_pending_bytes must be > 0, got {max_pending_bytes}")
        if not 0 < retry_backoff_s[0] <= retry_backoff_s[1]:
            raise ValueError(f"retry_backoff_s must be (first, max) with 0 < first <= max, "
                             f"got {retry_backoff_s}")
        self._store_factory = store_factory
        self._store: ObjectPutter | None = None
        self.max_pending_bytes = max_pending_bytes
        self._backoff = retry_backoff_s
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending_bytes = 0
        self._pending = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Inputs queued or being uploaded."""
        return self._pending

    def submit(self, key: str, data: bytes, content_type: str, done: Callable[[ClaimCheck], None],
               failed: Callable[[str], None]) -> bool:
        """Queue one upload; ``done(ref)`` runs after it is stored. False when the queue is full or closed."""
        with self._lock:
            if self._stop.is_set() or self._pending_bytes + len(data) > self.max_pending_bytes:
                return False
            self._pending_bytes += len(data)
            self._pending += 1
        self._jobs.put(_Job(key, data, content_type, done, failed))
        return True

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._upload(job)
            finally:
                with self._lock:
                    self._pending_bytes -= len(job.data)
                    self._pending -= 1

    def _upload(self, job: _Job) -> None:
        delay = self._backoff[0]
        while True:
            try:
                if self._store is None:
                    self._store = self._store_factory()
                self._store.put(job.key, job.data, job.content_type)
                ref = make_claim_check(self._store.bucket, job.key, job.data)
            except Exception as exc:  # the store is down or refuses: retry until closed
                if self._stop.is_set():
                    job.failed(f"upload of {job.key} abandoned at shutdown: {exc}")
                    return
                log.warning("claim-check upload of %s failed, retrying in %.1fs: %s", job.key, delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            try:
                job.done(ref)
            except Exception:
                log.exception("claim-check callback failed for %s", job.key)
            return

    def close(self, timeout_s: float = 10.0) -> int:
        """Finish queued uploads within ``timeout_s``; returns how many were abandoned."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        abandoned = 0
        while True:  # jobs never started: report them as failed so they are counted
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                abandoned += 1
                job.failed(f"upload of {job.key} abandoned at shutdown")
        return abandoned + (1 if self._thread.is_alive() else 0)
