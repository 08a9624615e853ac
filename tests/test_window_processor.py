"""Lateness, closing and re-delivery in the stream workers' window state, against
hand-computed windows (no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest

from producers.contracts import DetectorPrediction, ImageProperties
from stream_apps.detector_window import DetectorWindow
from stream_apps.window_processor import WindowProcessor
from stream_apps.windows import HoppingWindows


def _event(i: int, t: float) -> DetectorPrediction:
    return DetectorPrediction(
        event_id=f"e{i}", request_id=f"r{i}", model_name="m", model_version="v", event_time=t, published_at=t,
        latency_ms=1.0, detections=[], image=ImageProperties(1.0, 100.0, 0.5, 0.1, 0.3, 0.3, 0.4),
    )


def _processor(size: float, hop: float, grace: float) -> WindowProcessor:
    return WindowProcessor("detector", HoppingWindows(size, hop), grace_s=grace, new_window=DetectorWindow,
                           load_window=DetectorWindow.from_bytes)


def test_negative_grace_raises() -> None:
    with pytest.raises(ValueError, match="grace_s"):
        _processor(60, 30, -1)


def test_late_events_accepted_within_grace_and_dropped_after() -> None:
    p = _processor(60, 30, 10)
    assert p.apply(_event(0, 99.0), 0, 0) == "accepted"
    # t = 35 lies in [0, 60) and [30, 90); [30, 90) closes at 90 + 10 > 99: accepted
    assert p.apply(_event(1, 35.0), 0, 1) == "accepted"
    assert p.apply(_event(2, 101.0), 0, 2) == "accepted"
    # t = 29 lies in [-30, 30) and [0, 60), both closed at the watermark 101 (70 <= 101): dropped
    assert p.apply(_event(3, 29.0), 0, 3) == "late"
    assert p.late_dropped == 1 and p.watermark == 101.0


def test_each_window_closes_once_in_order_with_its_events() -> None:
    p = _processor(60, 30, 5)
    for i, t in enumerate((1.0, 2.0, 31.0)):
        p.apply(_event(i, t), 0, i)
    assert p.close_due() == []
    p.apply(_event(3, 200.0), 0, 3)  # closes every window ending at or before 195
    # [60, 120) and [90, 150) hold no event; [150, 210) holding t = 200 is still open
    assert [(w.window_start, w.result["event_count"]) for w in p.close_due()] == [(-30.0, 2), (0.0, 3), (30.0, 1)]
    assert p.close_due() == []
    p.apply(_event(4, 400.0), 0, 4)
    assert [(w.window_start, w.result["event_count"]) for w in p.close_due()] == [(150.0, 1), (180.0, 1)]


def test_redelivered_events_are_counted_once() -> None:
    p = _processor(60, 30, 5)
    for i, t in enumerate((1.0, 2.0, 3.0)):
        p.apply(_event(i, t), 0, i)
    assert [p.apply(_event(i, t), 0, i) for i, t in enumerate((1.0, 2.0, 3.0))] == ["duplicate"] * 3
    p.apply(_event(3, 100.0), 0, 3)
    assert {w.window_start: w.result["event_count"] for w in p.close_due()} == {-30.0: 3, 0.0: 3}


def test_idle_stream_closes_its_windows_by_the_wall_clock() -> None:
    p = _processor(60, 30, 5)
    p.apply(_event(0, 10.0), 0, 0)
    assert p.close_due(wall_now=p.last_event_wall + 1, idle_after_s=5) == []
    closed = p.close_due(wall_now=p.last_event_wall + 6, idle_after_s=5)
    assert [w.window_start for w in closed] == [-30.0, 0.0]


def test_pane_aggregation_matches_direct_window_membership() -> None:
    """Events counted per pane and merged per window equal the accepted events of each window."""
    rng = np.random.default_rng(1)
    p = _processor(60, 15, 20)
    times = np.arange(0, 600, 0.5) + rng.uniform(-10, 10, 1200)  # out of order
    times[rng.random(1200) < 0.05] -= 120.0  # these arrive too late for all their windows
    accepted: list[float] = []
    results: dict[float, int] = {}
    for i, t in enumerate(times):
        if p.apply(_event(i, float(t)), 0, i) == "accepted":
            accepted.append(float(t))
        for w in p.close_due():
            results[w.window_start] = w.result["event_count"]
    assert p.late_dropped > 0
    assert len(accepted) + p.late_dropped == len(times)
    assert len(results) > 30
    for start, count in results.items():
        # every accepted event of the window arrived before the window closed
        assert count == sum(start <= t < start + 60 for t in accepted)
    assert list(results) == sorted(results)
