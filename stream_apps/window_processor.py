"""Hopping-window state of one model in one partition, as a stream worker keeps it.

The processor holds one mergeable accumulator per *pane* (a hop-long slice of event
time); a window of ``size/hop`` panes is scored when the watermark passes its end plus
the grace period. Its state is a set of table entries (``pane|<model>|<start>`` and
``meta|<model>``) that a changelogged table stores, so a restarted or new worker
rebuilds it with :meth:`restore`.

Exactly-once effect on at-least-once delivery: each pane remembers the highest offset
it applied per source partition, so events re-delivered after a crash (Kafka resumes
from the last committed offset) are recognised and skipped.

>>> from stream_apps.detector_window import DetectorWindow
>>> from stream_apps.windows import HoppingWindows
>>> from producers.contracts import DetectorPrediction, ImageProperties
>>> def ev(i, t):
...     return DetectorPrediction(event_id=f"e{i}", request_id=f"r{i}", model_name="m", model_version="v",
...         event_time=t, published_at=t, latency_ms=1.0, detections=[],
...         image=ImageProperties(1.0, 100.0, 0.5, 0.1, 0.3, 0.3, 0.4))
>>> p = WindowProcessor("detector", HoppingWindows(20, 10), grace_s=5, new_window=DetectorWindow,
...                     load_window=DetectorWindow.from_bytes)
>>> [p.apply(ev(i, t), partition=0, offset=i) for i, t in enumerate([1.0, 12.0, 12.5])]
['accepted', 'accepted', 'accepted']
>>> p.apply(ev(1, 12.0), partition=0, offset=1)  # re-delivered after a restart
'duplicate'
>>> q = WindowProcessor("detector", HoppingWindows(20, 10), grace_s=5, new_window=DetectorWindow,
...                     load_window=DetectorWindow.from_bytes)
>>> q.restore(p.entries()); q.apply(ev(1, 12.0), partition=0, offset=1)  # a new worker, same state
'duplicate'
>>> p.apply(ev(9, 40.0), partition=0, offset=3)  # moves the watermark to 40
'accepted'
>>> [(o.window_start, o.result["event_count"]) for o in p.close_due()]
[(-10.0, 1), (0.0, 3), (10.0, 2)]
>>> p.apply(ev(10, 2.0), partition=0, offset=4)  # its windows are closed
'late'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from stream_apps.false_alarm_control import DriftPolicy
from stream_apps.reference_profile import ReferenceProfile
from stream_apps.windows import HoppingWindows

Outcome = Literal["accepted", "duplicate", "late"]
_EPS = 1e-9


class WindowState(Protocol):
    event_count: int

    def update(self, event: Any) -> None: ...
    def merge(self, other: Any) -> None: ...
    def copy(self) -> Any: ...
    def to_bytes(self) -> bytes: ...
    def result(self, reference: ReferenceProfile | None = None, policy: DriftPolicy | None = None,
               window_start: float | None = None, key: str = "") -> dict[str, Any]: ...


class _PaneEntry(msgspec.Struct):
    state: bytes
    offsets: dict[int, int]


class _MetaEntry(msgspec.Struct):
    watermark: float
    last_closed: float  # start of the newest window already scored
    policy: dict[str, Any] | None = None


@dataclass
class _Pane:
    state: Any
    offsets: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClosedWindow:
    model: str
    window_start: float
    window_end: float
    result: dict[str, Any]
    closed_at: float


class WindowProcessor:
    """Panes, watermark and drift policy of one model; see the module docstring."""

    def __init__(self, model: str, windows: HoppingWindows, grace_s: float,
                 new_window: Callable[[], WindowState], load_window: Callable[[bytes], WindowState],
                 reference: ReferenceProfile | None = None, policy: DriftPolicy | None = None) -> None:
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s!r}")
        self.model = model
        self.windows = windows
        self.grace_s = float(grace_s)
        self.new_window = new_window
        self.load_window = load_window
        self.reference = reference
        self.policy = policy
        self.panes: dict[float, _Pane] = {}
        self.watermark = -math.inf
        self.last_closed = -math.inf
        self.last_event_wall = 0.0
        self.newest_event_time = -math.inf
        self.late_dropped = 0
        self._dirty: set[str] = set()

    # --- keys ---------------------------------------------------------------------------

    def _pane_key(self, start: float) -> str:
        return f"pane|{self.model}|{start!r}"

    @property
    def meta_key(self) -> str:
        return f"meta|{self.model}"

    # --- events ---------------------------------------------------------------------------

    def apply(self, event: Any, partition: int, offset: int, event_time: float | None = None) -> Outcome:
        t = float(event.event_time if event_time is None else event_time)
        start = self.windows.pane_start(t)
        # The event's newest window must still be open at the watermark.
        if start + self.windows.size_s + self.grace_s <= self.watermark + _EPS or start <= self.last_closed - _EPS:
            self.late_dropped += 1
            return "late"
        pane = self.panes.get(start)
        if pane is None:
            pane = self.panes[start] = _Pane(self.new_window())
        elif offset <= pane.offsets.get(partition, -1):
            return "duplicate"
        pane.state.update(event)
        pane.offsets[partition] = offset
        self._dirty.add(self._pane_key(start))
        if t > self.watermark:
            self.watermark = t
            self._dirty.add(self.meta_key)
        self.newest_event_time = max(self.newest_event_time, t)
        self.last_event_wall = time.time()
        return "accepted"

    # --- closing windows --------------------------------------------------------------------

    def close_due(self, wall_now: float | None = None, idle_after_s: float | None = None) -> list[ClosedWindow]:
        """Score every window the watermark has closed, oldest first.

        With ``idle_after_s``, a stream idle that long (wall clock) closes its windows as
        if event time had advanced with the clock, so the last windows are not held back
        forever when traffic stops.
        """
        wm = self.watermark
        if idle_after_s is not None and self.panes:
            now = time.time() if wall_now is None else wall_now
            if now - self.last_event_wall >= idle_after_s:
                wm = max(wm, now - self.grace_s)
        w = self.windows
        limit = wm - w.size_s - self.grace_s + _EPS  # window start <= limit is closed
        candidates = sorted({s for p in self.panes for s in w.window_starts(p) if self.last_closed < s <= limit})
        out: list[ClosedWindow] = []
        for start in candidates:
            parts = [self.panes[p].state for p in w.pane_starts(start) if p in self.panes]
            if not parts:
                continue
            merged = parts[0].copy()
            for other in parts[1:]:
                merged.merge(other)
            result = merged.result(self.reference, self.policy if self.reference else None, start, self.model)
            out.append(ClosedWindow(self.model, start, w.window_end(start), result, time.time()))
        if candidates:
            self.last_closed = candidates[-1]
            self._dirty.add(self.meta_key)
            # A pane is needed while any window holding it is still open.
            for p in [p for p in self.panes if p + w.size_s - w.hop_s <= self.last_closed + _EPS]:
                del self.panes[p]
                self._dirty.add(self._pane_key(p))
        return out

    # --- state through a changelogged table ------------------------------------------------

    def dirty_entries(self) -> dict[str, bytes | None]:
        """Table writes since the last call (``None``: delete the key)."""
        out: dict[str, bytes | None] = {}
        for key in self._dirty:
            out[key] = self._encode(key)
        self._dirty.clear()
        return out

    def entries(self) -> dict[str, bytes]:
        keys = [self._pane_key(p) for p in self.panes] + [self.meta_key]
        return {k: v for k in keys if (v := self._encode(k)) is not None}

    def _encode(self, key: str) -> bytes | None:
        if key == self.meta_key:
            policy = self.policy.to_state() if self.policy else None
            return msgspec.msgpack.encode(_MetaEntry(self.watermark, self.last_closed, policy))
        start = float(key.rsplit("|", 1)[1])
        pane = self.panes.get(start)
        if pane is None:
            return None
        return msgspec.msgpack.encode(_PaneEntry(pane.state.to_bytes(), pane.offsets))

    def restore(self, entries: Mapping[str, bytes]) -> None:
        """Rebuild from table entries of this model (others are ignored)."""
        prefix = f"pane|{self.model}|"
        for key, raw in entries.items():
            if key == self.meta_key:
                meta = msgspec.msgpack.decode(raw, type=_MetaEntry)
                self.watermark = max(self.watermark, meta.watermark)
                self.last_closed = max(self.last_closed, meta.last_closed)
                if meta.policy and self.policy is not None:
                    self.policy = DriftPolicy.from_state(meta.policy)
            elif key.startswith(prefix):
                entry = msgspec.msgpack.decode(raw, type=_PaneEntry)
                self.panes[float(key[len(prefix):])] = _Pane(self.load_window(entry.state), dict(entry.offsets))
        if self.panes:
            self.newest_event_time = max(self.newest_event_time, self.watermark)
            self.last_event_wall = time.time()
