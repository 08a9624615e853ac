"""Event-time windows: which windows an event belongs to, and when a window is closed.

A hopping window of size ``S`` and hop ``H`` (``S`` a whole multiple of ``H``) covers
``[k*H, k*H + S)`` for every integer ``k``; a tumbling window is the case ``H == S``.
Every window is the union of ``S/H`` consecutive *panes* ``[j*H, (j+1)*H)``: an event
updates exactly one pane, and a window's state is the merge of its panes' states. This
keeps the per-event cost and the stored state independent of how much windows overlap
(Li et al., "No pane, no gain", SIGMOD Record 34(1), 2005).

:class:`WindowClock` keeps a watermark per key (a partition): the largest event time seen.
A window is closed once ``watermark >= window end + grace``. An event is accepted while
the last window that contains it is still open, and counted as dropped otherwise. The
low watermark over all keys (their minimum) closes windows whose state is merged from
several partitions.

>>> w = HoppingWindows(size_s=300, hop_s=30)
>>> w.window_starts(95.0)[0], w.window_starts(95.0)[-1], len(w.window_starts(95.0))
(-180.0, 90.0, 10)
>>> w.pane_start(95.0), w.pane_starts(0.0)[-1]
(90.0, 270.0)
>>> clock = WindowClock(HoppingWindows(size_s=60, hop_s=30), grace_s=10)
>>> clock.observe(5.0), clock.observe(65.0), clock.pop_closed()  # [-30, 30) ends at 30 + 10 <= 65
(True, True, [-30.0])
>>> clock.observe(100.0), clock.pop_closed()
(True, [0.0, 30.0])
>>> clock.observe(20.0), clock.dropped()  # its last window [0, 60) is closed
(False, 1)
"""

from __future__ import annotations

import math
from collections.abc import Hashable

_EPS = 1e-9


class HoppingWindows:
    """Windows ``[k*hop, k*hop + size)`` on the event-time axis (seconds)."""

    __slots__ = ("size_s", "hop_s", "panes_per_window")

    def __init__(self, size_s: float, hop_s: float) -> None:
        if not (math.isfinite(size_s) and size_s > 0):
            raise ValueError(f"size_s must be a positive number, got {size_s!r}")
        if not (math.isfinite(hop_s) and 0 < hop_s <= size_s):
            raise ValueError(f"hop_s must be in (0, size_s], got {hop_s!r}")
        ratio = size_s / hop_s
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f"size_s must be a whole multiple of hop_s, got {size_s!r} and {hop_s!r}")
        self.size_s = float(size_s)
        self.hop_s = float(hop_s)
        self.panes_per_window = int(round(ratio))

    def __repr__(self) -> str:
        return f"HoppingWindows(size_s={self.size_s}, hop_s={self.hop_s})"

    @property
    def windows_per_day(self) -> float:
        return 86400.0 / self.hop_s

    def pane_index(self, t: float) -> int:
        return math.floor(t / self.hop_s)

    def pane_start(self, t: float) -> float:
        """Start of the one pane that holds event time ``t``."""
        return math.floor(t / self.hop_s) * self.hop_s

    def window_starts(self, t: float) -> list[float]:
        """Starts of every window that contains ``t``, oldest first."""
        last = math.floor(t / self.hop_s)
        return [k * self.hop_s for k in range(last - self.panes_per_window + 1, last + 1)]

    def pane_starts(self, window_start: float) -> list[float]:
        """Starts of the panes whose union is the window starting at ``window_start``."""
        first = round(window_start / self.hop_s)
        return [k * self.hop_s for k in range(first, first + self.panes_per_window)]

    def window_end(self, window_start: float) -> float:
        return window_start + self.size_s


def tumbling_windows(size_s: float) -> HoppingWindows:
    """Non-overlapping windows: a hopping window whose hop is its size."""
    return HoppingWindows(size_s, size_s)


class WindowClock:
    """Watermarks per key, lateness decisions and the windows that closed.

    ``observe`` costs a few hundred nanoseconds; ``pop_closed`` returns each window with
    at least one accepted event exactly once, in order, when the (low) watermark passes
    its end plus the grace period.
    """

    def __init__(self, windows: HoppingWindows, grace_s: float) -> None:
        if not (math.isfinite(grace_s) and grace_s >= 0):
            raise ValueError(f"grace_s must be a non-negative number, got {grace_s!r}")
        self.windows = windows
        self.grace_s = float(grace_s)
        self._watermarks: dict[Hashable, float] = {}
        self._dropped: dict[Hashable, int] = {}
        self._panes: set[int] = set()  # panes with accepted events, not yet released
        self._next_window = -(2**62)  # index of the next window that may close
        self._quiet_until = -math.inf  # low watermark below which pop_closed has nothing to do

    def observe(self, t: float, key: Hashable = 0) -> bool:
        """Advance ``key``'s watermark to ``t``; False when the event is too late for every window.

        The event counts as too late when the last window containing it has closed by
        ``key``'s watermark, that is when ``pane_start(t) + size + grace <= watermark``.
        """
        w = self.windows
        pane = math.floor(t / w.hop_s)
        if pane < self._next_window:  # every window holding it was already closed (low watermark)
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        wm = self._watermarks.get(key)
        if wm is None or t > wm:
            self._watermarks[key] = t
        elif pane * w.hop_s + w.size_s + self.grace_s <= wm + _EPS:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if pane not in self._panes:
            self._panes.add(pane)
            self._quiet_until = -math.inf
        return True

    def is_late(self, t: float, key: Hashable = 0) -> bool:
        """Whether an event at ``t`` would be dropped (without observing it)."""
        wm = self._watermarks.get(key)
        w = self.windows
        return wm is not None and math.floor(t / w.hop_s) * w.hop_s + w.size_s + self.grace_s <= wm + _EPS

    def open_window_starts(self, t: float, key: Hashable = 0) -> list[float]:
        """Windows containing ``t`` that are still open at ``key``'s watermark."""
        wm = self._watermarks.get(key, -math.inf)
        limit = wm - self.windows.size_s - self.grace_s + _EPS
        return [s for s in self.windows.window_starts(t) if s > limit]

    def watermark(self, key: Hashable | None = None) -> float:
        """``key``'s watermark, or the low watermark (minimum over keys) when key is None."""
        if key is not None:
            return self._watermarks.get(key, -math.inf)
        return min(self._watermarks.values()) if self._watermarks else -math.inf

    def dropped(self, key: Hashable | None = None) -> int:
        """Events counted as too late, for ``key`` or in total."""
        if key is not None:
            return self._dropped.get(key, 0)
        return sum(self._dropped.values())

    def forget(self, key: Hashable) -> None:
        """Stop waiting for ``key`` (an idle or revoked partition holds the low watermark back)."""
        self._watermarks.pop(key, None)

    def pop_closed(self) -> list[float]:
        """Starts of the windows closed by the low watermark since the last call, oldest first.

        Only windows that hold at least one accepted event are returned; panes no window
        needs any more are released.
        """
        if not self._panes:
            return []
        w = self.windows
        wm = self.watermark()
        if wm < self._quiet_until or wm == -math.inf:  # -inf: no key has a watermark (all forgotten)
            return []
        # window k is closed when k*hop + size + grace <= wm
        last_closed = math.floor((wm - w.size_s - self.grace_s + _EPS) / w.hop_s)
        p = w.panes_per_window
        first = max(self._next_window, min(self._panes) - p + 1)  # the first window that can close
        if last_closed < first:
            self._quiet_until = first * w.hop_s + w.size_s + self.grace_s - _EPS
            return []
        candidates: set[int] = set()
        for pane in self._panes:
            lo = max(pane - p + 1, self._next_window)
            hi = min(pane, last_closed)
            if lo <= hi:
                candidates.update(range(lo, hi + 1))
        self._panes = {pane for pane in self._panes if pane > last_closed}
        self._next_window = last_closed + 1
        return [k * w.hop_s for k in sorted(candidates)]
