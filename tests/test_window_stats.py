"""Window statistics against hand-computed values; merging, serialisation, samples, references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from producers.contracts import (
    Detection,
    DetectorPrediction,
    ImageProperties,
    RecommendedItem,
    RecommenderRequest,
)
from stream_apps.categorical_drift import ClusteredCounts, chi_square_drift
from stream_apps.detector_window import PROPERTY_NAMES, DetectorWindow, detector_reference
from stream_apps.false_alarm_control import DriftPolicy
from stream_apps.recommender_window import PopularityBuckets, RecommenderWindow, recommender_reference
from stream_apps.reference_profile import ReferenceProfile
from stream_apps.summary_stats import SummaryStats
from stream_apps.value_sample import ValueSample

# --- helpers ---------------------------------------------------------------------------


def prediction(i: int, confidences: list[float], brightness: float, t: float | None = None) -> DetectorPrediction:
    return DetectorPrediction(
        event_id=f"e{i}", request_id=f"r{i}", model_name="idcard", model_version="v1",
        event_time=100.0 + i if t is None else t, published_at=200.0, latency_ms=5.0,
        detections=[Detection([0.0, 0.0, 10.0, 10.0], "id_card", c) for c in confidences],
        image=ImageProperties(0.75, 307200.0, brightness, 0.2, 0.3, 0.3, 0.4))


def request(i: int, items: list[tuple[int, float, bool]], *, fallback: bool = False,
            ranked: list[int] | None = None, coverage: float = 0.0) -> RecommenderRequest:
    return RecommenderRequest(
        event_id=f"e{i}", request_id=f"r{i}", model_name="mf", model_version="v1", event_time=50.0 + i,
        published_at=60.0, latency_ms=2.0, user_id=i, k=max(1, len(items)),
        ranked_movies_present=ranked is not None, ranked_movies=ranked,
        items=[RecommendedItem(item, score, rank + 1, explained)
               for rank, (item, score, explained) in enumerate(items)],
        explanation_coverage=coverage, fallback=fallback)


CONFIDENCES = [[0.9, 0.3], [0.6], [], [0.2, 0.8, 0.45]]
BRIGHTNESS = [0.2, 0.4, 0.6, 0.8]


def detector_window(**kwargs: float) -> DetectorWindow:
    w = DetectorWindow(low_confidence_threshold=0.5, **kwargs)  # type: ignore[arg-type]
    for i, (c, b) in enumerate(zip(CONFIDENCES, BRIGHTNESS, strict=True)):
        w.update(prediction(i, c, b))
    return w


# --- summary statistics and samples ----------------------------------------------------


def test_summary_stats_hand_computed_and_merge_equals_whole() -> None:
    s = SummaryStats(["x", "y"])
    s.add([[1.0, 10.0], [2.0, 10.0]])
    t = SummaryStats(["x", "y"])
    t.add([[3.0, 10.0], [4.0, 10.0]])
    s.merge(t)
    r = s.result()
    assert r["x"] == {"count": 4, "mean": 2.5, "std": pytest.approx(math.sqrt(5 / 3)), "min": 1.0, "max": 4.0}
    assert r["y"]["std"] == 0.0
    rng = np.random.default_rng(0)
    data = rng.normal(1e6, 1.0, (1000, 2))  # large offset: naive sums of squares would cancel
    whole, parts = SummaryStats(["a", "b"]), SummaryStats(["a", "b"])
    whole.add(data)
    for chunk in np.array_split(data, 7):
        piece = SummaryStats(["a", "b"])
        piece.add(chunk)
        parts.merge(SummaryStats.from_state(piece.to_state()))
    assert parts.count == 1000
    np.testing.assert_allclose(parts.mean, data.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(parts.std(), data.std(axis=0, ddof=1), rtol=1e-9)


def test_summary_stats_undefined_values_and_bad_shapes() -> None:
    s = SummaryStats(["x"])
    assert s.result()["x"] == {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    s.add([5.0])
    assert s.result()["x"]["std"] is None and s.result()["x"]["mean"] == 5.0
    with pytest.raises(ValueError):
        s.add([[1.0, 2.0]])
    with pytest.raises(ValueError):
        SummaryStats([])


def test_value_sample_exact_then_bounded_reservoir() -> None:
    s = ValueSample(width=1, capacity=100, seed=1)
    s.add(np.arange(60.0))
    s.add(np.arange(60.0, 100.0))
    assert s.is_exact and sorted(s.column(0).tolist()) == list(range(100))
    s.add(np.arange(100.0, 10_000.0))
    assert not s.is_exact and s.count == 10_000 and len(s.values) == 100
    assert len(set(s.column(0).tolist())) == 100  # a sample without replacement
    restored = ValueSample.from_state(s.to_state())
    assert restored.count == 10_000 and np.array_equal(restored.values, s.values)
    with pytest.raises(ValueError):
        ValueSample(width=0)
    with pytest.raises(ValueError):
        s.add(np.ones((3, 2)))


def test_reservoir_and_merge_are_uniform() -> None:
    rng_means, merged_shares = [], []
    for seed in range(40):
        s = ValueSample(width=1, capacity=200, seed=seed)
        for chunk in np.array_split(np.arange(20_000.0), 37):
            s.add(chunk)
        rng_means.append(s.column(0).mean())
        a = ValueSample(1, 200, seed)
        a.add(np.zeros(1000))
        b = ValueSample(1, 200, seed + 100)
        b.add(np.ones(3000))
        a.merge(b)
        assert a.count == 4000 and len(a.values) == 200
        merged_shares.append(a.column(0).mean())
    # a uniform sample of 0..19999 has mean 9999.5 (sd of one sample mean ~ 408)
    assert abs(np.mean(rng_means) - 9999.5) < 300
    # 3000 of 4000 values are ones (sd of one share ~ 0.03)
    assert abs(np.mean(merged_shares) - 0.75) < 0.015


# --- detector window ---------------------------------------------------------------------


def test_detector_window_hand_computed_statistics() -> None:
    s = detector_window().statistics()
    assert s["event_count"] == 4
    assert (s["first_event_time"], s["last_event_time"]) == (100.0, 103.0)
    assert s["detections"] == {"count": 6, "per_image_mean": 1.5, "images_without_detections": 1,
                               "images_without_detections_share": 0.25}
    conf = s["confidence"]
    # sorted confidences 0.2 0.3 0.45 0.6 0.8 0.9; numpy's linear interpolation
    assert conf["p10"] == pytest.approx(0.25)
    assert conf["p50"] == pytest.approx(0.525)
    assert conf["p90"] == pytest.approx(0.85)
    assert conf["low_share"] == 0.5  # 0.3, 0.2 and 0.45 are below 0.5
    assert conf["mean"] == pytest.approx(3.25 / 6)
    assert conf["quantiles_exact"] is True
    b = s["image_properties"]["brightness"]
    assert b["count"] == 4 and b["mean"] == pytest.approx(0.5) and b["min"] == 0.2 and b["max"] == 0.8
    assert b["std"] == pytest.approx(math.sqrt(0.2 / 3))
    assert s["image_properties"]["area"]["std"] == 0.0
    assert set(s["image_properties"]) == set(PROPERTY_NAMES)


def test_detector_window_merge_and_bytes_equal_one_window() -> None:
    whole = detector_window().statistics()
    first, second = DetectorWindow(0.5), DetectorWindow(0.5)
    for i, (c, b) in enumerate(zip(CONFIDENCES, BRIGHTNESS, strict=True)):
        (first if i % 2 else second).update(prediction(i, c, b))
    merged = DetectorWindow.from_bytes(first.to_bytes())
    merged.merge(DetectorWindow.from_bytes(second.to_bytes()))
    got = merged.statistics()
    assert got["event_count"] == whole["event_count"]
    assert got["detections"] == whole["detections"]
    for key in ("p10", "p50", "p90", "low_share"):
        assert got["confidence"][key] == pytest.approx(whole["confidence"][key])
    for name in PROPERTY_NAMES:
        assert got["image_properties"][name] == pytest.approx(whole["image_properties"][name])
    combined = DetectorWindow.combine([first, second])
    assert combined.statistics()["event_count"] == 4 and first.event_count == 2  # inputs unchanged
    with pytest.raises(ValueError, match="threshold"):
        first.merge(DetectorWindow(0.3))
    with pytest.raises(ValueError):
        DetectorWindow.from_bytes(b"\x80")


def test_detector_empty_window_and_result_without_reference() -> None:
    r = DetectorWindow().result()
    assert r["event_count"] == 0 and r["detections"]["per_image_mean"] is None
    assert r["confidence"]["p50"] is None and r["drift"] == {} and r["model_drift_detected"] is False


def test_detector_result_flags_a_darker_window() -> None:
    rng = np.random.default_rng(5)
    train = np.column_stack([np.full(4000, 0.75), np.full(4000, 307200.0), rng.normal(0.5, 0.05, 4000),
                             rng.normal(0.2, 0.02, 4000), np.full((4000, 3), 1 / 3)])
    reference = detector_reference("idcard", "v1", train, created_at=0.0)
    window = DetectorWindow()
    for i, b in enumerate(rng.normal(0.5, 0.05, 500) * 0.6):
        window.update(prediction(i, [0.9], float(b)))
    policy = DriftPolicy(alpha=1e-5, hop_s=30)
    r = window.result(reference, policy, window_start=0.0)
    assert r["reference_version"] == reference.fingerprint()
    assert r["drift"]["brightness"]["flagged"] and r["drift"]["brightness"]["drift_detected"]
    assert r["drift"]["brightness"]["score"] == pytest.approx(1.0, abs=0.01)
    assert not r["drift"]["area"]["flagged"] and r["drift"]["area"]["score"] == 0.0
    assert r["model_drift_detected"] is True and r["alpha"] == 1e-5
    assert json.loads(json.dumps(r)) == r  # a JSON-able result
    undecided = window.result(reference)
    assert undecided["drift"]["brightness"]["flagged"] is None and undecided["model_drift_detected"] is None
    with pytest.raises(ValueError, match="window_start"):
        window.result(reference, policy)


# --- recommender window ----------------------------------------------------------------


BUCKETS = PopularityBuckets.from_interactions([1, 2, 3, 4, 5], [40, 30, 10, 10, 10], n_buckets=2)


def recommender_window() -> RecommenderWindow:
    w = RecommenderWindow(BUCKETS)
    w.update(request(0, [(1, 4.0, True), (3, 3.0, False)], coverage=0.5))
    w.update(request(1, [(2, 5.0, True), (9, 2.0, True)], ranked=[1, 2, 3], coverage=1.0))
    w.update(request(2, [(1, 3.0, False), (2, 3.0, False)], fallback=True))
    w.update(request(3, [], ranked=[9]))
    return w


def test_popularity_buckets_have_equal_mass() -> None:
    # mass before each item: 0, 0.4, 0.7, 0.8, 0.9 -> buckets floor(2 * mass)
    assert BUCKETS.bucket_of == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert BUCKETS.labels == ("b0", "b1", "unseen")
    assert BUCKETS.codes([1, 3, 9, -1, 10**12]).tolist() == [0, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        PopularityBuckets({1: 3}, n_buckets=2)


def test_recommender_window_hand_computed_statistics() -> None:
    s = recommender_window().statistics()
    assert s["event_count"] == 4
    assert s["rates"] == {"ranked_movies_present": 0.5, "fallback": 0.25, "explanation_coverage": 0.375,
                          "empty_response": 0.25}
    assert s["items"] == {"count": 6, "per_request_mean": 1.5, "explained_share": 0.5}
    assert s["scores"]["mean"] == pytest.approx(20 / 6) and s["scores"]["min"] == 2.0
    # per-request mean scores: 3.5, 3.5, 3.0 (the empty response has none)
    assert s["score_mean"]["count"] == 3 and s["score_mean"]["mean"] == pytest.approx(10 / 3)
    assert s["score_mean"]["p50"] == 3.5
    assert s["recommended_popularity"] == {"b0": 4, "b1": 1, "unseen": 1}
    assert s["requested_popularity"] == {"b0": 2, "b1": 1, "unseen": 1}


def test_recommender_window_merge_bytes_and_bucket_checks() -> None:
    whole = recommender_window().statistics()
    a, b = RecommenderWindow(BUCKETS), RecommenderWindow(BUCKETS)
    a.update(request(0, [(1, 4.0, True), (3, 3.0, False)], coverage=0.5))
    a.update(request(1, [(2, 5.0, True), (9, 2.0, True)], ranked=[1, 2, 3], coverage=1.0))
    b.update(request(2, [(1, 3.0, False), (2, 3.0, False)], fallback=True))
    b.update(request(3, [], ranked=[9]))
    merged = RecommenderWindow.from_bytes(a.to_bytes(), BUCKETS)
    merged.merge(RecommenderWindow.from_bytes(b.to_bytes(), BUCKETS))
    got = merged.statistics()
    for key in ("event_count", "rates", "items", "recommended_popularity", "requested_popularity"):
        assert got[key] == whole[key]
    assert got["scores"] == pytest.approx(whole["scores"])
    other = PopularityBuckets.from_interactions([1, 2], [1, 1], n_buckets=2)
    with pytest.raises(ValueError, match="buckets"):
        RecommenderWindow.from_bytes(a.to_bytes(), other)
    with pytest.raises(ValueError, match="buckets"):
        a.merge(RecommenderWindow(None))


def test_recommender_reference_and_drift_tests() -> None:
    rng = np.random.default_rng(2)

    def traffic(n: int, tail_boost: float, start: int) -> list[RecommenderRequest]:
        weights = np.array([40, 30, 10, 10, 10], float) * np.array([1, 1, tail_boost, tail_boost, tail_boost])
        # three items without replacement, drawn in proportion to the weights (Gumbel top-k)
        picks = np.argsort(-(np.log(weights) + rng.gumbel(size=(n, 5))), axis=1)[:, :3] + 1
        scores = rng.normal(3, 0.5, (n, 3))
        fallback = rng.random(n) < 0.1
        return [request(start + i, [(int(x), float(v), False) for x, v in zip(picks[i], scores[i], strict=True)],
                        fallback=bool(fallback[i])) for i in range(n)]

    reference = recommender_reference("mf", "v1", traffic(4000, 1.0, 0), BUCKETS, created_at=0.0)
    assert set(reference.categorical) == {"fallback", "ranked_movies_present", "recommended_popularity"}
    assert reference.codebooks["item_popularity"] == BUCKETS.bucket_of
    assert PopularityBuckets.from_reference(reference).fingerprint == BUCKETS.fingerprint
    assert PopularityBuckets.from_reference(reference) is PopularityBuckets.from_reference(reference)
    assert len(reference.numeric["score_mean"]) == 4000
    policy = DriftPolicy(alpha=1e-4, hop_s=30)
    same = RecommenderWindow(BUCKETS)
    shifted = RecommenderWindow(BUCKETS)
    for ev in traffic(1500, 1.0, 10_000):
        same.update(ev)
    for ev in traffic(1500, 4.0, 20_000):
        shifted.update(ev)
    calm = same.result(reference, policy, window_start=0.0, key="a")
    assert calm["model_drift_detected"] is False
    assert calm["drift"]["recommended_popularity"]["method"] == "chi2-rao-scott"
    drifted = shifted.result(reference, policy, window_start=0.0, key="b")
    assert drifted["drift"]["recommended_popularity"]["drift_detected"] is True
    assert drifted["drift"]["score_mean"]["flagged"] is False
    assert drifted["model_drift_detected"] is True
    assert json.loads(json.dumps(drifted)) == drifted


# --- categorical drift -----------------------------------------------------------------


def test_chi_square_hand_computed_pooling_and_empty() -> None:
    # expected 50/50 (reference 500/500, pseudo counts cancel), X2 = 16, reference size term 100/1000
    r = chi_square_drift({"a": 30, "b": 70}, {"a": 500, "b": 500})
    assert r.statistic == pytest.approx(16 / 1.1) and r.dof == 1 and r.n == 100
    # a category unseen in the reference has a tiny expected count: pooled, not exploding
    pooled = chi_square_drift({"a": 50, "b": 49, "new": 1}, {"a": 10**6, "b": 10**6})
    assert pooled.dof == 1 and pooled.p_value > 0.5
    assert math.isnan(chi_square_drift({}, {"a": 1}).p_value)
    with pytest.raises(ValueError):
        chi_square_drift({"a": 1}, {"a": 1}, pseudo_count=0)


def test_design_effect_is_one_for_independent_draws_and_cluster_size_for_copies() -> None:
    rng = np.random.default_rng(0)
    independent = ClusteredCounts(5)
    codes = rng.integers(0, 5, 20_000)
    independent.add_clusters(codes, np.full(2000, 10))
    assert 1.0 <= independent.design_effect() < 1.12
    copies = ClusteredCounts(5)
    copies.add_clusters(np.repeat(rng.integers(0, 5, 2000), 10), np.full(2000, 10))
    assert copies.design_effect() == pytest.approx(10.0, rel=0.01)
    restored = ClusteredCounts.from_state(copies.to_state())
    assert restored.design_effect() == copies.design_effect()
    with pytest.raises(ValueError):
        copies.add_clusters([0, 1], [3])


# --- reference profile -----------------------------------------------------------------


def test_reference_profile_bytes_roundtrip_bounded_sample_and_validation() -> None:
    rng = np.random.default_rng(0)
    ref = ReferenceProfile.build(
        "recommender", "v3", numeric={"score_mean": rng.normal(size=20_000)},
        categorical={"fallback": {"true": 5, "false": 95}, "present": np.array([True, False, False])},
        sample_size=5000, created_at=1.7e9,
        design_effects={"fallback": 1.0}, codebooks={"item_popularity": {10: 0, 11: 1}})
    assert len(ref.numeric["score_mean"]) == 5000 and np.all(np.diff(ref.numeric["score_mean"]) >= 0)
    back = ReferenceProfile.from_bytes(ref.to_bytes())
    assert back == ref and back.fingerprint() == ref.fingerprint()
    assert back.codebooks["item_popularity"] == {10: 0, 11: 1}
    assert back.frequencies("fallback") == {"true": 0.05, "false": 0.95}
    assert back.categorical["present"] == {"false": 2, "true": 1}
    assert (back.model, back.model_version, back.created_at) == ("recommender", "v3", 1.7e9)
    with pytest.raises(ValueError):
        ReferenceProfile.from_bytes(b"{}")
    with pytest.raises(ValueError):
        ReferenceProfile.from_bytes(b"not json")
    with pytest.raises(ValueError):
        ReferenceProfile("m", "v", 0.0, numeric={"x": np.array([np.nan])})
    with pytest.raises(ValueError):
        ReferenceProfile("m", "v", 0.0, categorical={"c": {"a": 0}})
