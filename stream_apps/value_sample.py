"""A bounded, mergeable uniform sample of rows of numbers.

While at most ``capacity`` rows have been added the sample holds every row ("exact
mode"), so a test on it equals the test on the full window. Beyond that it is a uniform
reservoir: Algorithm R (Vitter, "Random sampling with a reservoir", ACM TOMS 11(1),
1985), applied to whole batches with numpy. Two samples of disjoint streams merge into a
uniform sample of the union: the number of rows taken from the first one is drawn from
the hypergeometric distribution of a draw without replacement from both streams.

Rows (all the features of one event) are kept together so that one random choice serves
every column.

>>> s = ValueSample(width=2, capacity=3)
>>> s.add([[1.0, 10.0], [2.0, 20.0]])
>>> s.count, s.is_exact, s.values.tolist()
(2, True, [[1.0, 10.0], [2.0, 20.0]])
>>> other = ValueSample(width=2, capacity=3)
>>> other.add([[3.0, 30.0], [4.0, 40.0]])
>>> s.merge(other)
>>> s.count, s.is_exact, len(s.values)
(4, False, 3)
>>> ValueSample.from_state(s.to_state()).values.tolist() == s.values.tolist()
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike


class ValueSample:
    """Exact rows while ``count <= capacity``, then a uniform reservoir of ``capacity`` rows."""

    __slots__ = ("width", "capacity", "seed", "count", "_rows", "_size", "_rng")

    def __init__(self, width: int, capacity: int = 5000, seed: int = 0) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.width = int(width)
        self.capacity = int(capacity)
        self.seed = int(seed)
        self.count = 0  # rows seen, exact
        self._rows = np.empty((0, self.width), dtype=np.float64)
        self._size = 0  # rows held in _rows[:_size]
        self._rng: np.random.Generator | None = None

    @property
    def is_exact(self) -> bool:
        """True while the sample holds every row it was given."""
        return self.count <= self.capacity

    @property
    def values(self) -> np.ndarray:
        """The kept rows, shape ``(min(count, capacity), width)`` (a view)."""
        return self._rows[: self._size]

    def column(self, j: int) -> np.ndarray:
        return self._rows[: self._size, j]

    def _random(self) -> np.random.Generator:
        # seeded from the history length so a restored sample continues deterministically
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed, self.count])
        return self._rng

    def _reserve(self, n: int) -> None:
        if n > len(self._rows):
            grown = np.empty((min(self.capacity, max(n, 2 * len(self._rows), 64)), self.width))
            grown[: self._size] = self._rows[: self._size]
            self._rows = grown

    def add(self, rows: ArrayLike) -> None:
        """Add a batch of rows, shape ``(n, width)`` (or ``(n,)`` when width is 1)."""
        batch = np.asarray(rows, dtype=np.float64)
        if batch.ndim == 1 and self.width == 1:
            batch = batch[:, None]
        if batch.ndim != 2 or batch.shape[1] != self.width:
            raise ValueError(f"rows must have shape (n, {self.width}), got {batch.shape}")
        n = len(batch)
        if n == 0:
            return
        free = self.capacity - self._size
        if free > 0:
            take = min(free, n)
            self._reserve(self._size + take)
            self._rows[self._size : self._size + take] = batch[:take]
            self._size += take
            self.count += take
            batch = batch[take:]
            n -= take
            if n == 0:
                return
        # Algorithm R: the i-th row of the stream (1-based) replaces slot j ~ U{0..i-1} if j < capacity
        positions = np.arange(self.count + 1, self.count + n + 1)
        slots = self._random().integers(0, positions)
        keep = slots < self.capacity
        slots, kept = slots[keep], batch[keep]
        if len(slots):
            # a later row wins a slot drawn twice in one batch
            rev_slots = slots[::-1]
            uniq, first = np.unique(rev_slots, return_index=True)
            self._rows[uniq] = kept[::-1][first]
        self.count += n

    def merge(self, other: ValueSample) -> None:
        """Fold in a sample of a disjoint stream; the result samples the union uniformly."""
        if other.width != self.width:
            raise ValueError(f"cannot merge samples of width {self.width} and {other.width}")
        if other.count == 0:
            return
        capacity = min(self.capacity, other.capacity)
        total = self.count + other.count
        if total <= capacity:
            self._reserve(total)
            self._rows[self._size : total] = other.values
            self._size = total
            self.count = total
            self.capacity = capacity
            return
        rng = self._random()
        from_self = int(rng.hypergeometric(self.count, other.count, capacity)) if self.count else 0
        mine = self.values[rng.choice(self._size, size=from_self, replace=False)]
        theirs = other.values[rng.choice(other._size, size=capacity - from_self, replace=False)]
        self._rows = np.concatenate([mine, theirs])
        self._size = capacity
        self.capacity = capacity
        self.count = total

    def copy(self) -> ValueSample:
        out = ValueSample(self.width, self.capacity, self.seed)
        out.count = self.count
        out._rows = self.values.copy()
        out._size = self._size
        return out

    def to_state(self) -> dict[str, Any]:
        """A msgpack-able dict (rows as little-endian float64 bytes)."""
        return {
            "width": self.width,
            "capacity": self.capacity,
            "seed": self.seed,
            "count": self.count,
            "rows": self.values.astype("<f8").tobytes(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ValueSample:
        out = cls(state["width"], state["capacity"], state["seed"])
        rows = np.frombuffer(state["rows"], dtype="<f8").reshape(-1, out.width).astype(np.float64)
        out._rows = rows
        out._size = len(rows)
        out.count = int(state["count"])
        if out._size != min(out.count, out.capacity):
            raise ValueError("corrupt sample state: row count does not match count and capacity")
        return out
