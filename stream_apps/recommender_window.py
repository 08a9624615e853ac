"""Window accumulator of the recommender's requests: statistics and drift tests.

Per window it counts requests, the share with ``ranked_movies``, the unknown-user
(fallback) share, mean explanation coverage and returned scores, and it tracks what is
recommended and requested as *popularity buckets*: items ranked by reference popularity
(interactions in the training data) and cut into ``n_buckets`` buckets of equal
interaction mass, plus one bucket for items the reference never saw. Categories stay
bounded however many items exist, and a shift toward head or tail items shows directly.

Drift tests against a :class:`~stream_apps.reference_profile.ReferenceProfile`:

- ``recommended_popularity``, ``requested_popularity``: chi-square on bucket counts with the
  Rao-Scott correction for the several items of one request
  (:mod:`stream_apps.categorical_drift`);
- ``score_mean``: KS on the mean returned score of each request (one value per request,
  so the values are independent; the scores of one request are not);
- ``fallback``, ``ranked_movies_present``: chi-square on the two-category counts.

Only features present in the reference are tested.

>>> from producers.contracts import RecommendedItem, RecommenderRequest
>>> buckets = PopularityBuckets.from_interactions([1, 2, 3, 4], [70, 10, 10, 10], n_buckets=2)
>>> buckets.bucket_of
{1: 0, 2: 1, 3: 1, 4: 1}
>>> w = RecommenderWindow(buckets)
>>> w.update(RecommenderRequest(
...     event_id="e1", request_id="r1", model_name="mf", model_version="v1", event_time=10.0,
...     published_at=10.1, latency_ms=3.0, user_id=7, k=2, ranked_movies_present=False,
...     items=[RecommendedItem(1, 4.5, 1, True), RecommendedItem(9, 3.5, 2)],
...     explanation_coverage=0.5, fallback=False))
>>> s = w.statistics()
>>> s["recommended_popularity"], s["scores"]["mean"], s["rates"]["explanation_coverage"]
({'b0': 1, 'b1': 0, 'unseen': 1}, 4.0, 0.5)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import numpy as np
from numpy.typing import ArrayLike

from producers.contracts import RecommenderRequest
from stream_apps.categorical_drift import ClusteredCounts, chi_square_drift
from stream_apps.false_alarm_control import DriftPolicy, DriftTest, window_drift_result
from stream_apps.ks_test import Method, ks_2samp
from stream_apps.reference_profile import REFERENCE_SAMPLE_SIZE, ReferenceProfile
from stream_apps.summary_stats import SummaryStats
from stream_apps.value_sample import ValueSample

CODEBOOK = "item_popularity"
STATE_VERSION = 1
QUANTILES = (0.1, 0.5, 0.9)
_FLUSH_EVERY = 256


class PopularityBuckets:
    """Item id -> popularity bucket (0 = most popular mass); unknown items -> ``n_buckets``."""

    __slots__ = ("bucket_of", "n_buckets", "labels", "fingerprint", "_table")

    def __init__(self, bucket_of: Mapping[int, int], n_buckets: int) -> None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets!r}")
        if any(not 0 <= b < n_buckets for b in bucket_of.values()):
            raise ValueError(f"bucket indexes must be in [0, {n_buckets})")
        self.bucket_of = {int(k): int(v) for k, v in bucket_of.items()}
        self.n_buckets = int(n_buckets)
        self.labels = tuple(f"b{i}" for i in range(n_buckets)) + ("unseen",)
        digest = hashlib.sha256(msgspec.json.encode(sorted(self.bucket_of.items())))
        digest.update(str(n_buckets).encode())
        self.fingerprint = digest.hexdigest()[:16]
        # a lookup table makes bucketing a batch of ids one numpy indexing (ids are small ints)
        top = max(self.bucket_of, default=-1)
        self._table: np.ndarray | None = None
        if top < 10_000_000:
            self._table = np.full(top + 2, n_buckets, dtype=np.int64)  # the last slot: beyond the table
            for item, b in self.bucket_of.items():
                if item >= 0:
                    self._table[item] = b

    def codes(self, item_ids: ArrayLike) -> np.ndarray:
        """Bucket index of every id (``n_buckets`` for items the reference never saw)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if self._table is not None:
            last = len(self._table) - 1
            return self._table[np.where((ids >= 0) & (ids < last), ids, last)]
        get, unseen = self.bucket_of.get, self.n_buckets
        return np.array([get(int(i), unseen) for i in ids], dtype=np.int64)

    @classmethod
    def from_interactions(cls, item_ids: ArrayLike, counts: ArrayLike, n_buckets: int = 10) -> PopularityBuckets:
        """Equal-mass buckets of items ranked by interaction count (ties by item id)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        cnt = np.asarray(counts, dtype=np.float64)
        if ids.shape != cnt.shape or ids.ndim != 1:
            raise ValueError("item_ids and counts must be 1-d and of equal length")
        if (cnt < 0).any() or cnt.sum() <= 0:
            raise ValueError("counts must be non-negative with a positive total")
        order = np.lexsort((ids, -cnt))
        mass_before = np.concatenate([[0.0], np.cumsum(cnt[order])[:-1]]) / cnt.sum()
        bucket = np.minimum((mass_before * n_buckets).astype(np.int64), n_buckets - 1)
        return cls(dict(zip(ids[order].tolist(), bucket.tolist(), strict=True)), n_buckets)

    @classmethod
    def from_reference(cls, reference: ReferenceProfile) -> PopularityBuckets:
        """The reference's buckets; one object per reference (cached), cheap to call per window."""
        key = reference.fingerprint()
        cached = _BUCKETS_OF_REFERENCE.get(key)
        if cached is not None:
            return cached
        codebook = reference.codebooks.get(CODEBOOK)
        if codebook is None:
            raise ValueError(f"the reference has no {CODEBOOK!r} codebook")
        n = len(reference.categorical.get("recommended_popularity", {})) - 1
        out = cls(codebook, n if n >= 1 else max(codebook.values(), default=0) + 1)
        if len(_BUCKETS_OF_REFERENCE) >= 8:  # a few references at most are in use at once
            _BUCKETS_OF_REFERENCE.clear()
        _BUCKETS_OF_REFERENCE[key] = out
        return out

    def counts_by_label(self, counts: np.ndarray) -> dict[str, int]:
        return {label: int(c) for label, c in zip(self.labels, counts, strict=True)}


_BUCKETS_OF_REFERENCE: dict[str, PopularityBuckets] = {}


class RecommenderWindow:
    """Mergeable state of one recommender window (or pane): see the module docstring."""

    def __init__(self, buckets: PopularityBuckets | None = None, sample_capacity: int = 5000, seed: int = 0) -> None:
        self.buckets = buckets
        self.sample_capacity = int(sample_capacity)
        self.seed = int(seed)
        self.event_count = 0
        self.ranked_present_count = 0
        self.fallback_count = 0
        self.empty_response_count = 0
        self.explanation_sum = 0.0
        self.explained_items = 0
        self.first_event_time = math.inf
        self.last_event_time = -math.inf
        self.scores = SummaryStats(("score",))
        self.score_means = SummaryStats(("score_mean",))
        self.score_mean_sample = ValueSample(1, sample_capacity, seed)
        k = (buckets.n_buckets + 1) if buckets else 1
        self.recommended = ClusteredCounts(k)
        self.requested = ClusteredCounts(k)
        # per-event buffers, folded with numpy every _FLUSH_EVERY requests
        self._scores: list[float] = []
        self._explained: list[bool] = []
        self._rec_ids: list[int] = []
        self._rec_sizes: list[int] = []
        self._req_ids: list[int] = []
        self._req_sizes: list[int] = []

    # --- accumulation ------------------------------------------------------------------

    def update(self, event: RecommenderRequest) -> None:
        """Count one request (a few microseconds for ten items, amortised)."""
        self.event_count += 1
        t = event.event_time
        if t < self.first_event_time:
            self.first_event_time = t
        if t > self.last_event_time:
            self.last_event_time = t
        if event.ranked_movies_present:
            self.ranked_present_count += 1
        if event.fallback:
            self.fallback_count += 1
        self.explanation_sum += event.explanation_coverage
        items = event.items
        if items:
            self._scores.extend([it.score for it in items])
            self._explained.extend([it.explained for it in items])
            self._rec_ids.extend([it.item_id for it in items])
            self._rec_sizes.append(len(items))
        else:
            self.empty_response_count += 1
        ranked = event.ranked_movies
        if ranked:
            self._req_ids.extend(ranked)
            self._req_sizes.append(len(ranked))
        if len(self._rec_sizes) >= _FLUSH_EVERY or len(self._req_sizes) >= _FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._rec_sizes:
            scores = np.array(self._scores)
            sizes = np.array(self._rec_sizes)
            means = np.add.reduceat(scores, np.concatenate([[0], np.cumsum(sizes)[:-1]])) / sizes
            self.scores.add(scores)
            self.score_means.add(means)
            self.score_mean_sample.add(means)
            self.explained_items += int(np.count_nonzero(self._explained))
            if self.buckets is not None:
                self.recommended.add_clusters(self.buckets.codes(self._rec_ids), sizes)
            self._scores, self._explained, self._rec_ids, self._rec_sizes = [], [], [], []
        if self._req_sizes:
            if self.buckets is not None:
                self.requested.add_clusters(self.buckets.codes(self._req_ids), self._req_sizes)
            self._req_ids, self._req_sizes = [], []

    def _check_compatible(self, other_fingerprint: str | None) -> None:
        mine = self.buckets.fingerprint if self.buckets else None
        if mine != other_fingerprint:
            raise ValueError("windows were bucketed with different popularity buckets")

    def merge(self, other: RecommenderWindow) -> None:
        """Fold in the state of disjoint events (another pane, partition or worker)."""
        self._check_compatible(other.buckets.fingerprint if other.buckets else None)
        self._flush()
        other._flush()
        self.event_count += other.event_count
        self.ranked_present_count += other.ranked_present_count
        self.fallback_count += other.fallback_count
        self.empty_response_count += other.empty_response_count
        self.explanation_sum += other.explanation_sum
        self.explained_items += other.explained_items
        self.first_event_time = min(self.first_event_time, other.first_event_time)
        self.last_event_time = max(self.last_event_time, other.last_event_time)
        self.scores.merge(other.scores)
        self.score_means.merge(other.score_means)
        self.score_mean_sample.merge(other.score_mean_sample)
        self.recommended.merge(other.recommended)
        self.requested.merge(other.requested)

    def copy(self) -> RecommenderWindow:
        return RecommenderWindow.from_bytes(self.to_bytes(), self.buckets)

    @classmethod
    def combine(cls, windows: Iterable[RecommenderWindow]) -> RecommenderWindow:
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
        """msgpack state; the buckets themselves are not stored, only their fingerprint."""
        self._flush()
        return msgspec.msgpack.encode({
            "v": STATE_VERSION,
            "buckets": self.buckets.fingerprint if self.buckets else None,
            "capacity": self.sample_capacity,
            "seed": self.seed,
            "events": self.event_count,
            "ranked_present": self.ranked_present_count,
            "fallback": self.fallback_count,
            "empty": self.empty_response_count,
            "explanation_sum": self.explanation_sum,
            "explained_items": self.explained_items,
            "first": self.first_event_time,
            "last": self.last_event_time,
            "scores": self.scores.to_state(),
            "score_means": self.score_means.to_state(),
            "score_mean_sample": self.score_mean_sample.to_state(),
            "recommended": self.recommended.to_state(),
            "requested": self.requested.to_state(),
        })

    @classmethod
    def from_bytes(cls, data: bytes, buckets: PopularityBuckets | None = None) -> RecommenderWindow:
        """Restore a state; ``buckets`` must be the ones it was counted with."""
        state = msgspec.msgpack.decode(data)
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError("not a recommender window state of a supported version")
        out = cls(buckets, state["capacity"], state["seed"])
        out._check_compatible(state["buckets"])
        out.event_count = state["events"]
        out.ranked_present_count = state["ranked_present"]
        out.fallback_count = state["fallback"]
        out.empty_response_count = state["empty"]
        out.explanation_sum = state["explanation_sum"]
        out.explained_items = state["explained_items"]
        out.first_event_time = state["first"]
        out.last_event_time = state["last"]
        out.scores = SummaryStats.from_state(state["scores"])
        out.score_means = SummaryStats.from_state(state["score_means"])
        out.score_mean_sample = ValueSample.from_state(state["score_mean_sample"])
        out.recommended = ClusteredCounts.from_state(state["recommended"])
        out.requested = ClusteredCounts.from_state(state["requested"])
        return out

    # --- results -----------------------------------------------------------------------

    def _binary_counts(self, name: str) -> dict[str, int]:
        hits = self.fallback_count if name == "fallback" else self.ranked_present_count
        return {"true": hits, "false": self.event_count - hits}

    def statistics(self) -> dict[str, Any]:
        """JSON-able statistics of the window (None where a value is undefined)."""
        self._flush()
        n = self.event_count
        means = self.score_mean_sample.column(0)
        q = np.quantile(means, QUANTILES) if len(means) else [math.nan] * len(QUANTILES)
        items = self.scores.count
        out: dict[str, Any] = {
            "event_count": n,
            "first_event_time": None if n == 0 else self.first_event_time,
            "last_event_time": None if n == 0 else self.last_event_time,
            "rates": {
                "ranked_movies_present": self.ranked_present_count / n if n else None,
                "fallback": self.fallback_count / n if n else None,
                "explanation_coverage": self.explanation_sum / n if n else None,
                "empty_response": self.empty_response_count / n if n else None,
            },
            "items": {
                "count": items,
                "per_request_mean": items / n if n else None,
                "explained_share": self.explained_items / items if items else None,
            },
            "scores": self.scores.result()["score"],
            "score_mean": {
                **self.score_means.result()["score_mean"],
                **{f"p{round(x * 100)}": None if math.isnan(v) else float(v)
                   for x, v in zip(QUANTILES, q, strict=True)},
                "quantiles_exact": self.score_mean_sample.is_exact,
            },
            "recommended_popularity": None,
            "requested_popularity": None,
        }
        if self.buckets is not None:
            out["recommended_popularity"] = self.buckets.counts_by_label(self.recommended.counts)
            out["requested_popularity"] = self.buckets.counts_by_label(self.requested.counts)
        return out

    def drift_tests(self, reference: ReferenceProfile, method: Method = "auto") -> dict[str, DriftTest]:
        """Tests of every feature the reference has; p-value NaN where the window has no data."""
        self._flush()
        tests: dict[str, DriftTest] = {}
        ref = reference.numeric.get("score_mean")
        if ref is not None:
            values = self.score_mean_sample.column(0)
            if len(values):
                r = ks_2samp(np.sort(values), ref, presorted=True, method=method)
                tests["score_mean"] = DriftTest(r.statistic, r.p_value, f"ks-{r.method}", r.n)
            else:
                tests["score_mean"] = DriftTest(0.0, math.nan, "ks", 0)
        if self.buckets is not None:
            for name, counts in (("recommended_popularity", self.recommended),
                                 ("requested_popularity", self.requested)):
                if name not in reference.categorical:
                    continue
                chi = chi_square_drift(self.buckets.counts_by_label(counts.counts), reference.categorical[name],
                                       design_effect=counts.design_effect(),
                                       reference_design_effect=reference.design_effect(name))
                tests[name] = DriftTest(chi.statistic, chi.p_value, "chi2-rao-scott", chi.n)
        for name in ("fallback", "ranked_movies_present"):
            if name in reference.categorical:
                chi = chi_square_drift(self._binary_counts(name), reference.categorical[name])
                tests[name] = DriftTest(chi.statistic, chi.p_value, "chi2", chi.n)
        return tests

    def result(self, reference: ReferenceProfile | None = None, policy: DriftPolicy | None = None,
               window_start: float | None = None, key: str = "recommender") -> dict[str, Any]:
        """Statistics plus drift (:func:`~stream_apps.false_alarm_control.window_drift_result`)."""
        return window_drift_result(self.statistics(), reference, self.drift_tests, policy, window_start, key)

    def reference_profile(self, model: str, model_version: str, *, created_at: float | None = None) -> ReferenceProfile:
        """This window's data as a reference: run the reference traffic through a window with
        ``sample_capacity`` set to the reference sample size, then call this."""
        self._flush()
        categorical: dict[str, dict[str, int]] = {
            name: self._binary_counts(name) for name in ("fallback", "ranked_movies_present")
        }
        design: dict[str, float] = {}
        codebooks: dict[str, dict[int, int]] = {}
        if self.buckets is not None:
            codebooks[CODEBOOK] = self.buckets.bucket_of
            for name, counts in (("recommended_popularity", self.recommended),
                                 ("requested_popularity", self.requested)):
                if counts.total:
                    categorical[name] = self.buckets.counts_by_label(counts.counts)
                    design[name] = counts.design_effect()
        numeric = {"score_mean": self.score_mean_sample.column(0)} if self.score_means.count else {}
        return ReferenceProfile.build(model, model_version, numeric=numeric, categorical=categorical,
                                      sample_size=max(1, self.sample_capacity), created_at=created_at,
                                      design_effects=design, codebooks=codebooks)


def recommender_reference(model: str, model_version: str, requests: Iterable[RecommenderRequest],
                          buckets: PopularityBuckets, *, sample_size: int = REFERENCE_SAMPLE_SIZE, seed: int = 0,
                          created_at: float | None = None) -> ReferenceProfile:
    """A reference profile from reference traffic (for example the model's answers to the
    training users' requests), bucketed with ``buckets``."""
    window = RecommenderWindow(buckets, sample_capacity=sample_size, seed=seed)
    for request in requests:
        window.update(request)
    return window.reference_profile(model, model_version, created_at=created_at)
