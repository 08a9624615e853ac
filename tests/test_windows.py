"""Event-time window assignment and panes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_apps.windows import HoppingWindows, tumbling_windows


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
