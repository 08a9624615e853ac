"""Event-time window assignment, panes, watermarks and lateness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_apps.windows import HoppingWindows, WindowClock, tumbling_windows


def test_hopping_window_starts_cover_exactly_the_windows_that_contain_t() -> None:
    w = HoppingWindows(size_s=300, hop_s=30)
    starts = w.window_starts(95.0)
    assert starts == [float(s) for s in range(-180, 91, 30)]
    for s in starts:
        assert s <= 95.0 < w.window_end(s)
    # window ends are exclusive: t = 90 opens [90, 390) and is no longer in [-210, 90)
    assert w.window_starts(90.0)[0] == -180.0 and w.window_starts(90.0)[-1] == 90.0
    assert w.window_starts(89.999)[0] == -210.0


def test_tumbling_windows_assign_one_window() -> None:
    w = tumbling_windows(300)
    assert w.window_starts(299.9) == [0.0]
    assert w.window_starts(300.0) == [300.0]
    assert w.pane_starts(300.0) == [300.0]


def test_panes_partition_a_window() -> None:
    w = HoppingWindows(size_s=300, hop_s=30)
    assert w.pane_starts(60.0) == [float(s) for s in range(60, 360, 30)]
    rng = np.random.default_rng(0)
    for t in rng.uniform(-1e4, 1e4, 200):
        pane = w.pane_start(float(t))
        # the pane of t belongs to exactly the windows that contain t
        assert [s for s in w.window_starts(float(t)) if pane in w.pane_starts(s)] == w.window_starts(float(t))


@pytest.mark.parametrize("size, hop", [(0, 1), (10, 0), (10, 20), (10, 3), (math.inf, 1), (-5, 1)])
def test_bad_window_parameters_raise(size: float, hop: float) -> None:
    with pytest.raises(ValueError):
        HoppingWindows(size, hop)


def test_negative_grace_raises() -> None:
    with pytest.raises(ValueError, match="grace_s"):
        WindowClock(HoppingWindows(60, 30), grace_s=-1)


def test_late_events_accepted_within_grace_and_dropped_after() -> None:
    clock = WindowClock(HoppingWindows(size_s=60, hop_s=30), grace_s=10)
    assert clock.observe(99.0)
    # t = 35 lies in [0, 60) and [30, 90); [30, 90) closes at 90 + 10 > 99: accepted
    assert clock.observe(35.0)
    assert clock.open_window_starts(35.0) == [30.0]  # [0, 60) closed at 70
    assert not clock.is_late(35.0)
    assert clock.observe(101.0)
    # t = 29 lies in [-30, 30) and [0, 60), both closed (70 <= 101): dropped
    assert clock.is_late(29.0)
    assert not clock.observe(29.0)
    assert clock.dropped() == 1 and clock.dropped(0) == 1
    assert clock.watermark() == 101.0


def test_pop_closed_returns_each_window_with_events_once_in_order() -> None:
    w = HoppingWindows(size_s=60, hop_s=30)
    clock = WindowClock(w, grace_s=5)
    for t in (1.0, 2.0, 31.0):
        clock.observe(t)
    assert clock.pop_closed() == []
    clock.observe(200.0)  # closes everything ending at or before 195
    # [60, 120) and [90, 150) held no event; [150, 210) holding t = 200 is still open
    assert clock.pop_closed() == [-30.0, 0.0, 30.0]
    assert clock.pop_closed() == []
    clock.observe(400.0)
    assert clock.pop_closed() == [150.0, 180.0]


def test_low_watermark_waits_for_every_partition() -> None:
    clock = WindowClock(HoppingWindows(size_s=30, hop_s=30), grace_s=0)
    clock.observe(5.0, key=0)
    clock.observe(6.0, key=1)
    clock.observe(100.0, key=0)
    assert clock.watermark() == 6.0
    assert clock.pop_closed() == []  # partition 1 may still send events of [0, 30)
    clock.observe(40.0, key=1)
    assert clock.pop_closed() == [0.0]
    clock.forget(1)  # an idle partition no longer holds the others back
    assert clock.pop_closed() == [30.0]  # [90, 120) holds t = 100 but is still open
    # an event of a window already closed by the low watermark is dropped, whatever its key
    assert not clock.observe(10.0, key=2)
    assert clock.watermark(2) == -math.inf and clock.watermark() == 100.0  # a dropped event sets no watermark
    clock.forget(0)
    assert clock.watermark() == -math.inf and clock.pop_closed() == []


def test_pane_aggregation_matches_direct_window_membership() -> None:
    """Events counted per pane and merged per window equal the events of each window."""
    rng = np.random.default_rng(1)
    w = HoppingWindows(size_s=60, hop_s=15)
    clock = WindowClock(w, grace_s=20)
    times = np.arange(0, 600, 0.5) + rng.uniform(-10, 10, 1200)  # out of order
    times[rng.random(1200) < 0.05] -= 120.0  # these arrive too late for all their windows
    panes: dict[float, list[float]] = {}
    accepted: list[float] = []
    results: dict[float, int] = {}
    for t in times:
        if clock.observe(float(t)):
            accepted.append(float(t))
            panes.setdefault(w.pane_start(float(t)), []).append(float(t))
        for start in clock.pop_closed():
            results[start] = sum(len(panes.get(p, [])) for p in w.pane_starts(start))
    clock.forget(0)
    assert clock.dropped() > 0
    assert len(accepted) + clock.dropped() == len(times)
    for start, count in results.items():
        # every accepted event of the window arrived before the window closed
        assert count == sum(start <= t < start + 60 for t in accepted)
    assert list(results) == sorted(results)
