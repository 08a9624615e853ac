"""Chi-square drift test of a window's category counts against reference frequencies.

Pearson's goodness-of-fit statistic ``X2 = sum_k (O_k - n p_k)^2 / (n p_k)`` compares the
window's counts ``O_k`` (``n`` in all) with the reference proportions ``p_k``. A pseudo
count (0.5 per category, Jeffreys) keeps categories unseen in the reference finite, and
categories whose expected count is below ``min_expected`` are pooled, smallest first,
so the chi-square approximation holds.

Observations often come in clusters: one recommendation request returns ten items of
one user's taste, so the items of a request are not independent draws and the plain
statistic is too large. The first-order Rao-Scott correction divides ``X2`` by the mean
design effect ``delta`` (Rao and Scott, "On chi-squared tests for multiway contingency
tables with cell proportions estimated from survey data", Annals of Statistics 12(1),
1984). :class:`ClusteredCounts` keeps the per-cluster sums that estimate ``delta`` from
the window itself and merges exactly. The reference's own sampling noise enters through
its size ``R`` and design effect: ``X2 / (delta_window + delta_reference * n / R)``.

>>> chi = chi_square_drift({"a": 30, "b": 70}, {"a": 500, "b": 500})
>>> round(chi.statistic, 4), chi.dof, round(chi.p_value, 6)  # 16 / (1 + 100/1000)
(14.5455, 1, 0.000137)
>>> c = ClusteredCounts(2)
>>> c.add_clusters([0, 0, 1, 1, 0, 0, 1, 1], [2, 2, 2, 2])  # four requests, two equal items each
>>> c.counts.tolist(), round(c.design_effect(), 4)  # 2, times 4/3 for the estimated mean
([4, 4], 2.6667)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import chdtrc


@dataclass(frozen=True)
class ChiSquareResult:
    statistic: float  # corrected X2
    p_value: float  # NaN when there was nothing to test (empty window)
    dof: int
    design_effect: float  # the divisor applied to the raw X2
    n: int


def chi_square_drift(
    observed: Mapping[str, int],
    reference_counts: Mapping[str, int],
    *,
    pseudo_count: float = 0.5,
    min_expected: float = 5.0,
    design_effect: float = 1.0,
    reference_design_effect: float = 1.0,
) -> ChiSquareResult:
    """Goodness of fit of ``observed`` counts to the (smoothed) reference proportions."""
    if pseudo_count <= 0:
        raise ValueError(f"pseudo_count must be > 0, got {pseudo_count!r}")
    if min_expected < 0:
        raise ValueError(f"min_expected must be >= 0, got {min_expected!r}")
    if design_effect <= 0 or reference_design_effect <= 0:
        raise ValueError("design effects must be > 0")
    labels = sorted(set(observed) | set(reference_counts))
    obs = np.array([observed.get(k, 0) for k in labels], dtype=np.float64)
    ref = np.array([reference_counts.get(k, 0) for k in labels], dtype=np.float64)
    if (obs < 0).any() or (ref < 0).any():
        raise ValueError("counts must be non-negative")
    n = int(obs.sum())
    if n == 0:
        return ChiSquareResult(0.0, math.nan, 0, 1.0, 0)
    p = (ref + pseudo_count) / (ref.sum() + pseudo_count * len(labels))
    expected = n * p
    # pool the smallest expected counts until the pool itself is large enough
    order = np.argsort(expected, kind="stable")
    pooled = 0
    pool_expected = 0.0
    while pooled < len(order) and (expected[order[pooled]] < min_expected or 0 < pool_expected < min_expected):
        pool_expected += expected[order[pooled]]
        pooled += 1
    keep = order[pooled:]
    groups_obs = list(obs[keep])
    groups_exp = list(expected[keep])
    if pooled:
        groups_obs.append(obs[order[:pooled]].sum())
        groups_exp.append(pool_expected)
    o, e = np.array(groups_obs), np.array(groups_exp)
    dof = len(o) - 1
    if dof < 1:
        return ChiSquareResult(0.0, 1.0, 0, 1.0, n)
    raw = float(((o - e) ** 2 / e).sum())
    divisor = design_effect + reference_design_effect * n / float(ref.sum() or math.inf)
    statistic = raw / divisor
    return ChiSquareResult(statistic, float(chdtrc(dof, statistic)), dof, divisor, n)


class ClusteredCounts:
    """Counts per category of observations that arrive in clusters, with a design effect.

    For cluster ``i`` of size ``m_i`` holding ``c_ik`` observations of category ``k`` it
    keeps ``sum c_ik``, ``sum c_ik^2``, ``sum m_i c_ik``, ``sum m_i^2`` and the number of
    clusters: all exact integers, merged by addition.
    """

    __slots__ = ("n_categories", "counts", "sq", "cross", "size_sq", "clusters")

    def __init__(self, n_categories: int) -> None:
        if n_categories < 1:
            raise ValueError(f"n_categories must be >= 1, got {n_categories!r}")
        self.n_categories = int(n_categories)
        self.counts = np.zeros(n_categories, dtype=np.int64)
        self.sq = np.zeros(n_categories, dtype=np.int64)
        self.cross = np.zeros(n_categories, dtype=np.int64)
        self.size_sq = 0
        self.clusters = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add_clusters(self, codes: ArrayLike, sizes: ArrayLike) -> None:
        """Add clusters: ``codes`` holds the category of every observation, cluster after cluster."""
        codes_a = np.asarray(codes, dtype=np.int64)
        sizes_a = np.asarray(sizes, dtype=np.int64)
        if sizes_a.ndim != 1 or codes_a.ndim != 1 or int(sizes_a.sum()) != len(codes_a):
            raise ValueError("sizes must add up to the number of codes")
        if len(codes_a) and (codes_a.min() < 0 or codes_a.max() >= self.n_categories):
            raise ValueError(f"codes must be in [0, {self.n_categories})")
        sizes_a = sizes_a[sizes_a > 0]
        if len(sizes_a) == 0:
            return
        cluster = np.repeat(np.arange(len(sizes_a)), sizes_a)
        table = np.zeros((len(sizes_a), self.n_categories), dtype=np.int64)
        np.add.at(table, (cluster, codes_a), 1)
        self.counts += table.sum(axis=0)
        self.sq += (table * table).sum(axis=0)
        self.cross += (table * sizes_a[:, None]).sum(axis=0)
        self.size_sq += int((sizes_a * sizes_a).sum())
        self.clusters += len(sizes_a)

    def merge(self, other: ClusteredCounts) -> None:
        if other.n_categories != self.n_categories:
            raise ValueError(f"cannot merge {other.n_categories} categories into {self.n_categories}")
        self.counts += other.counts
        self.sq += other.sq
        self.cross += other.cross
        self.size_sq += other.size_sq
        self.clusters += other.clusters

    def design_effect(self) -> float:
        """Mean design effect of the category counts, at least 1 (1 for independent draws).

        ``sum_k Var(O_k) / (n p_k) / (K - 1)`` with ``Var(O_k)`` estimated from the cluster
        residuals ``c_ik - m_i p_k`` at the observed proportions; categories never seen are
        left out. Below 1 (clusters more diverse than independent draws) it is kept at 1,
        which only makes the test more conservative.
        """
        n = self.total
        seen = self.counts > 0
        k = int(seen.sum())
        if self.clusters < 2 or k < 2:
            return 1.0
        p = self.counts[seen] / n
        residual_sq = self.sq[seen] - 2 * p * self.cross[seen] + p * p * self.size_sq
        variance = residual_sq * self.clusters / (self.clusters - 1)
        delta = float((variance / (n * p)).sum() / (k - 1))
        return max(1.0, delta)

    def to_state(self) -> dict[str, Any]:
        """A JSON- and msgpack-able dict."""
        return {
            "n_categories": self.n_categories,
            "counts": self.counts.tolist(),
            "sq": self.sq.tolist(),
            "cross": self.cross.tolist(),
            "size_sq": self.size_sq,
            "clusters": self.clusters,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClusteredCounts:
        out = cls(state["n_categories"])
        out.counts = np.asarray(state["counts"], dtype=np.int64)
        out.sq = np.asarray(state["sq"], dtype=np.int64)
        out.cross = np.asarray(state["cross"], dtype=np.int64)
        out.size_sq = int(state["size_sq"])
        out.clusters = int(state["clusters"])
        return out
