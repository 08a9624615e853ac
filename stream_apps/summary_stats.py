"""Mergeable count, mean, standard deviation, minimum and maximum of several columns.

Batches are folded in and partial results merged with the pairwise update of Chan,
Golub and LeVeque ("Algorithms for computing the sample variance", The American
Statistician 37(3), 1983), which stays accurate where sums of squares cancel. The count
is an exact integer; ``std`` is the sample standard deviation (``ddof=1``, as pandas'
``describe``), undefined (``None``) below two values.

>>> s = SummaryStats(["x"])
>>> s.add([[1.0], [2.0]])
>>> t = SummaryStats(["x"])
>>> t.add([[3.0], [4.0]])
>>> s.merge(t)
>>> s.result()
{'x': {'count': 4, 'mean': 2.5, 'std': 1.2909944487358056, 'min': 1.0, 'max': 4.0}}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


class SummaryStats:
    """Count/mean/std/min/max per named column, mergeable across partitions."""

    __slots__ = ("names", "count", "mean", "m2", "minimum", "maximum")

    def __init__(self, names: Sequence[str]) -> None:
        if not names:
            raise ValueError("names must list at least one column")
        self.names = tuple(names)
        k = len(self.names)
        self.count = 0
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)  # sum of squared deviations from the mean
        self.minimum = np.full(k, np.inf)
        self.maximum = np.full(k, -np.inf)

    def _fold(self, n: int, mean: np.ndarray, m2: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total
        self.minimum = np.minimum(self.minimum, lo)
        self.maximum = np.maximum(self.maximum, hi)

    def add(self, rows: ArrayLike) -> None:
        """Fold in a batch, shape ``(n, columns)`` (or ``(n,)`` for one column)."""
        batch = np.asarray(rows, dtype=np.float64)
        if batch.ndim == 1 and len(self.names) == 1:
            batch = batch[:, None]
        if batch.ndim != 2 or batch.shape[1] != len(self.names):
            raise ValueError(f"rows must have shape (n, {len(self.names)}), got {batch.shape}")
        if len(batch) == 0:
            return
        mean = batch.mean(axis=0)
        m2 = ((batch - mean) ** 2).sum(axis=0)
        self._fold(len(batch), mean, m2, batch.min(axis=0), batch.max(axis=0))

    def merge(self, other: SummaryStats) -> None:
        if other.names != self.names:
            raise ValueError(f"cannot merge stats of {other.names} into {self.names}")
        self._fold(other.count, other.mean, other.m2, other.minimum, other.maximum)

    def copy(self) -> SummaryStats:
        return SummaryStats.from_state(self.to_state())

    def std(self) -> np.ndarray:
        """Sample standard deviation per column (NaN below two values)."""
        if self.count < 2:
            return np.full(len(self.names), np.nan)
        return np.sqrt(np.maximum(self.m2, 0.0) / (self.count - 1))

    def result(self) -> dict[str, dict[str, Any]]:
        """JSON-able ``{column: {count, mean, std, min, max}}``; None where undefined."""
        std = self.std()
        out: dict[str, dict[str, Any]] = {}
        for j, name in enumerate(self.names):
            empty = self.count == 0
            out[name] = {
                "count": self.count,
                "mean": None if empty else float(self.mean[j]),
                "std": None if math.isnan(std[j]) else float(std[j]),
                "min": None if empty else float(self.minimum[j]),
                "max": None if empty else float(self.maximum[j]),
            }
        return out

    def to_state(self) -> dict[str, Any]:
        """A msgpack-able dict (min and max are infinite while empty)."""
        return {
            "names": list(self.names),
            "count": self.count,
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SummaryStats:
        out = cls(state["names"])
        out.count = int(state["count"])
        out.mean = np.asarray(state["mean"], dtype=np.float64)
        out.m2 = np.asarray(state["m2"], dtype=np.float64)
        out.minimum = np.asarray(state["min"], dtype=np.float64)
        out.maximum = np.asarray(state["max"], dtype=np.float64)
        return out
