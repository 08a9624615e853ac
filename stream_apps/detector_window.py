"""Window accumulator of the object detector's predictions: statistics and drift tests.

One :class:`DetectorWindow` is the state of one pane or window of one model. ``update``
appends the event's numbers to a small buffer (about a microsecond per event, amortised);
every 256 events the buffer is folded with numpy into:

- exact counts: events, detections, images without detections, confidences below the
  low-confidence threshold;
- :class:`~stream_apps.summary_stats.SummaryStats` of the seven image properties and of
  the confidences;
- :class:`~stream_apps.value_sample.ValueSample` rows of the seven properties (one row per
  image) and of the confidences: every value while the window holds at most
  ``sample_capacity`` of them, a uniform reservoir beyond.

States of panes, partitions or workers merge exactly (counts, statistics) or into a
uniform sample of the union, so a window's result covers all its events whoever
counted them. ``to_bytes``/``from_bytes`` (msgpack) carry the state through a changelogged
table. ``result`` compares the property samples with a
:class:`~stream_apps.reference_profile.ReferenceProfile` by the KS test and applies a
:class:`~stream_apps.false_alarm_control.DriftPolicy`.

>>> from producers.contracts import Detection, DetectorPrediction, ImageProperties
>>> def event(i: int, conf: float) -> DetectorPrediction:
...     return DetectorPrediction(
...         event_id=f"e{i}", request_id=f"r{i}", model_name="idcard", model_version="v1",
...         event_time=100.0 + i, published_at=100.5 + i, latency_ms=10.0,
...         detections=[Detection([0, 0, 10, 10], "card", conf)] if conf else [],
...         image=ImageProperties(1.5, 1e6, 0.4 + 0.1 * i, 0.2, 0.3, 0.3, 0.4))
>>> w = DetectorWindow(low_confidence_threshold=0.5)
>>> for i, c in enumerate([0.9, 0.3, 0.0]):
...     w.update(event(i, c))
>>> stats = DetectorWindow.from_bytes(w.to_bytes()).statistics()
>>> stats["event_count"], stats["detections"]["images_without_detections"], stats["confidence"]["low_share"]
(3, 1, 0.5)
>>> round(stats["image_properties"]["brightness"]["mean"], 6)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
from numpy.typing import ArrayLike

from producers.contracts import DetectorPrediction, ImageProperties
from stream_apps.false_alarm_control import DriftPolicy, DriftTest, window_drift_result
from stream_apps.ks_test import Method, ks_2samp
from stream_apps.reference_profile import REFERENCE_SAMPLE_SIZE, ReferenceProfile
from stream_apps.summary_stats import SummaryStats
from stream_apps.value_sample import ValueSample

PROPERTY_NAMES: tuple[str, ...] = tuple(ImageProperties.__struct_fields__)
QUANTILES = (0.1, 0.5, 0.9)
STATE_VERSION = 1
_FLUSH_EVERY = 256
_astuple = msgspec.structs.astuple


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class DetectorWindow:
    """Mergeable state of one detector window (or pane): see the module docstring."""

    def __init__(self, low_confidence_threshold: float = 0.5, sample_capacity: int = 5000, seed: int = 0) -> None:
        if not 0.0 <= low_confidence_threshold <= 1.0:
            raise ValueError(f"low_confidence_threshold must be in [0, 1], got {low_confidence_threshold!r}")
        self.low_confidence_threshold = float(low_confidence_threshold)
        self.sample_capacity = int(sample_capacity)
        self.seed = int(seed)
        self.event_count = 0
        self.detection_count = 0
        self.images_without_detections = 0
        self.low_confidence_count = 0
        self.first_event_time = math.inf
        self.last_event_time = -math.inf
        self.properties = SummaryStats(PROPERTY_NAMES)
        self.property_sample = ValueSample(len(PROPERTY_NAMES), sample_capacity, seed)
        self.confidence = SummaryStats(("confidence",))
        self.confidence_sample = ValueSample(1, sample_capacity, seed + 1)
        self._rows: list[tuple[Any, ...]] = []
        self._confidences: list[float] = []

    # --- accumulation ------------------------------------------------------------------

    def update(self, event: DetectorPrediction) -> None:
        """Count one prediction event (about a microsecond, amortised)."""
        self.event_count += 1
        t = event.event_time
        if t < self.first_event_time:
            self.first_event_time = t
        if t > self.last_event_time:
            self.last_event_time = t
        detections = event.detections
        if detections:
            self._confidences.extend([d.confidence for d in detections])
        else:
            self.images_without_detections += 1
        self._rows.append(_astuple(event.image))
        if len(self._rows) >= _FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            rows = np.array(self._rows, dtype=np.float64)
            self._rows = []
            self.properties.add(rows)
            self.property_sample.add(rows)
        if self._confidences:
            conf = np.array(self._confidences, dtype=np.float64)
            self._confidences = []
            self.detection_count += len(conf)
            self.low_confidence_count += int((conf < self.low_confidence_threshold).sum())
            self.confidence.add(conf)
            self.confidence_sample.add(conf)

    def merge(self, other: DetectorWindow) -> None:
        """Fold in the state of disjoint events (another pane, partition or worker)."""
        if other.low_confidence_threshold != self.low_confidence_threshold:
            raise ValueError("cannot merge windows with different low-confidence thresholds")
        self._flush()
        other._flush()
        self.event_count += other.event_count
        self.detection_count += other.detection_count
        self.images_without_detections += other.images_without_detections
        self.low_confidence_count += other.low_confidence_count
        self.first_event_time = min(self.first_event_time, other.first_event_time)
        self.last_event_time = max(self.last_event_time, other.last_event_time)
        self.properties.merge(other.properties)
        self.property_sample.merge(other.property_sample)
        self.confidence.merge(other.confidence)
        self.confidence_sample.merge(other.confidence_sample)

    def copy(self) -> DetectorWindow:
        return DetectorWindow.from_bytes(self.to_bytes())

    @classmethod
    def combine(cls, windows: Iterable[DetectorWindow]) -> DetectorWindow:
        """A new window holding the merge of ``windows`` (which are left unchanged)."""
        items = list(windows)
        if not items:
            raise ValueError("combine needs at least one window")
        out = items[0].copy()
        for w in items[1:]:
            out.merge(w)
        return out

    # --- serialisation -----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        self._flush()
        return msgspec.msgpack.encode({
            "v": STATE_VERSION,
            "threshold": self.low_confidence_threshold,
            "capacity": self.sample_capacity,
            "seed": self.seed,
            "events": self.event_count,
            "detections": self.detection_count,
            "without": self.images_without_detections,
            "low": self.low_confidence_count,
            "first": self.first_event_time,
            "last": self.last_event_time,
            "properties": self.properties.to_state(),
            "property_sample": self.property_sample.to_state(),
            "confidence": self.confidence.to_state(),
            "confidence_sample": self.confidence_sample.to_state(),
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> DetectorWindow:
        state = msgspec.msgpack.decode(data)
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError("not a detector window state of a supported version")
        out = cls(state["threshold"], state["capacity"], state["seed"])
        out.event_count = state["events"]
        out.detection_count = state["detections"]
        out.images_without_detections = state["without"]
        out.low_confidence_count = state["low"]
        out.first_event_time = state["first"]
        out.last_event_time = state["last"]
        out.properties = SummaryStats.from_state(state["properties"])
        out.property_sample = ValueSample.from_state(state["property_sample"])
        out.confidence = SummaryStats.from_state(state["confidence"])
        out.confidence_sample = ValueSample.from_state(state["confidence_sample"])
        return out

    # --- results -----------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """JSON-able statistics of the window (None where a value is undefined)."""
        self._flush()
        n = self.event_count
        conf = self.confidence_sample.column(0)
        quantiles = np.quantile(conf, QUANTILES) if len(conf) else [math.nan] * len(QUANTILES)
        return {
            "event_count": n,
            "first_event_time": None if n == 0 else self.first_event_time,
            "last_event_time": None if n == 0 else self.last_event_time,
            "detections": {
                "count": self.detection_count,
                "per_image_mean": self.detection_count / n if n else None,
                "images_without_detections": self.images_without_detections,
                "images_without_detections_share": self.images_without_detections / n if n else None,
            },
            "confidence": {
                "count": self.detection_count,
                "mean": self.confidence.result()["confidence"]["mean"],
                **{f"p{round(q * 100)}": _none_if_nan(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
                "low_threshold": self.low_confidence_threshold,
                "low_share": self.low_confidence_count / self.detection_count if self.detection_count else None,
                "quantiles_exact": self.confidence_sample.is_exact,
            },
            "image_properties": self.properties.result(),
            "sample": {"size": len(self.property_sample.values), "exact": self.property_sample.is_exact},
        }

    def drift_tests(self, reference: ReferenceProfile, method: Method = "auto") -> dict[str, DriftTest]:
        """KS test of every image property the reference has, against its sample."""
        self._flush()
        tests: dict[str, DriftTest] = {}
        for j, name in enumerate(PROPERTY_NAMES):
            ref = reference.numeric.get(name)
            if ref is None:
                continue
            values = self.property_sample.column(j)
            if len(values) == 0:
                tests[name] = DriftTest(0.0, math.nan, "ks", 0)
                continue
            r = ks_2samp(np.sort(values), ref, presorted=True, method=method)
            tests[name] = DriftTest(r.statistic, r.p_value, f"ks-{r.method}", r.n)
        return tests

    def result(self, reference: ReferenceProfile | None = None, policy: DriftPolicy | None = None,
               window_start: float | None = None, key: str = "detector") -> dict[str, Any]:
        """Statistics plus drift (:func:`~stream_apps.false_alarm_control.window_drift_result`)."""
        return window_drift_result(self.statistics(), reference, self.drift_tests, policy, window_start, key)


def detector_reference(model: str, model_version: str, image_properties: ArrayLike, *,
                       sample_size: int = REFERENCE_SAMPLE_SIZE, seed: int = 0,
                       created_at: float | None = None) -> ReferenceProfile:
    """A reference profile from training image properties, shape ``(n, 7)`` in
    :data:`PROPERTY_NAMES` order."""
    rows = np.asarray(image_properties, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(PROPERTY_NAMES):
        raise ValueError(f"image_properties must have shape (n, {len(PROPERTY_NAMES)}), got {rows.shape}")
    return ReferenceProfile.build(model, model_version,
                                  numeric={name: rows[:, j] for j, name in enumerate(PROPERTY_NAMES)},
                                  sample_size=sample_size, seed=seed, created_at=created_at)
