"""Event-time windows: which windows an event belongs to, and when a window is closed.

A hopping window of size ``S`` and hop ``H`` (``S`` a whole multiple of ``H``) covers
``[k*H, k*H + S)`` for every integer ``k``; a tumbling window is the case ``H == S``.
Every window is the union of ``S/H`` consecutive *panes* ``[j*H, (j+1)*H)``: an event
updates exactly one pane, and a window's state is the merge of its panes' states. This
keeps the per-event cost and the stored state independent of how much windows overlap
(Li et al., "No pane, no gain", SIGMOD Record 34(1), 2005).

Watermarks, lateness and closing live with the window state, in
:class:`stream_apps.window_processor.WindowProcessor`.

>>> w = HoppingWindows(size_s=300, hop_s=30)
>>> w.window_starts(95.0)[0], w.window_starts(95.0)[-1], len(w.window_starts(95.0))
(-180.0, 90.0, 10)
>>> w.pane_start(95.0), w.pane_starts(0.0)[-1]
(90.0, 270.0)
"""

from __future__ import annotations

import math


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
