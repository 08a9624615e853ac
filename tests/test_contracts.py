"""Contract unit tests: round trips, and every kind of malformed event rejected with a clear message."""

from __future__ import annotations

import json

import msgspec
import pytest

from producers import contracts as c


def _prediction(**overrides) -> c.DetectorPrediction:
    fields = dict(
        event_id="e1", request_id="r1", model_name="idcard-yolov8n", model_version="v1", event_time=1_700_000_000.0,
        published_at=1_700_000_000.1, latency_ms=12.5,
        detections=[c.Detection([1.0, 2.0, 30.0, 40.0], "id_card", 0.93)],
        image=c.ImageProperties(1.33, 307200.0, 0.45, 0.21, 0.34, 0.33, 0.33), trace_id="t1",
    )
    fields.update(overrides)
    return c.DetectorPrediction(**fields)


def _request(**overrides) -> c.RecommenderRequest:
    fields = dict(
        event_id="e2", request_id="r2", model_name="emf", model_version="v1", event_time=1_700_000_000.0,
        published_at=1_700_000_000.2, latency_ms=3.0, user_id=7, k=2, ranked_movies_present=True,
        ranked_movies=[5, 9], items=[c.RecommendedItem(9, 4.1, 1, True), c.RecommendedItem(5, 3.2, 2)],
        explanation_coverage=0.5, fallback=False,
    )
    fields.update(overrides)
    return c.RecommenderRequest(**fields)


EXAMPLES = [
    _prediction(),
    c.DetectorInput(event_id="e3", request_id="r1", event_time=1.0, content_type="image/png", image_bytes=b"\x89PNG"),
    c.DetectorInput(event_id="e4", request_id="r1", event_time=1.0, content_type="image/jpeg",
                    claim_check=c.ClaimCheck("driftstream", "inputs/r1", 10, "a" * 64)),
    _request(),
    c.RatingFeedback(event_id="e7", user_id=3, item_id=50, rating=4.0, event_time=2.0, request_id="r2"),
    c.WindowClosed(event_id="e5", model="detector", window_start=100.0, window_end=120.0, event_count=3,
                   manifest_key="windows/detector/100/manifest.json", reference_version="v1",
                   partitions=[c.PartitionRange(0, 5, 7)]),
    c.DeadLetter(event_id="e6", source_topic=c.DETECTOR_PREDICTIONS, partition=0, offset=3,
                 reason="bad", original=b"\x00\xff", failed_at=1.0),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event: c.Event) -> None:
    raw = c.encode(event)
    assert c.decode(type(event), raw) == event
    assert json.loads(raw)["kind"].endswith("/v1")


def _mutate(event: c.Event, **changes) -> bytes:
    doc = json.loads(c.encode(event))
    for path, value in changes.items():
        target = doc
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return json.dumps(doc).encode()


_DELETE = object()

MALFORMED = [
    ("not json", c.DetectorPrediction, b"{nope", "malformed"),
    ("empty", c.DetectorPrediction, b"", "truncated"),
    ("missing field", c.DetectorPrediction, _mutate(_prediction(), request_id=_DELETE), "request_id"),
    ("wrong type", c.DetectorPrediction, _mutate(_prediction(), latency_ms="fast"), "latency_ms"),
    ("confidence > 1", c.DetectorPrediction,
     _mutate(_prediction(), detections__0__confidence=1.5), "confidence"),
    ("bbox inverted", c.DetectorPrediction,
     _mutate(_prediction(), detections__0__bbox=[10, 10, 5, 5]), "x1<=x2"),
    ("bbox length", c.DetectorPrediction, _mutate(_prediction(), detections__0__bbox=[1, 2, 3]), "bbox"),
    ("negative time", c.DetectorPrediction, _mutate(_prediction(), event_time=-5), "event_time"),
    ("relative intensity > 1", c.DetectorPrediction,
     _mutate(_prediction(), image__mean_red_relative_intensity=2.0), "mean_red_relative_intensity"),
    ("wrong kind", c.DetectorPrediction, _mutate(_prediction(), kind="recommender.request/v1"), "kind"),
    ("future version", c.DetectorPrediction, _mutate(_prediction(), kind="detector.prediction/v2"), "kind"),
    ("k out of range", c.RecommenderRequest, _mutate(_request(), k=0), "k"),
    ("ranked flag lies", c.RecommenderRequest, _mutate(_request(), ranked_movies_present=False), "ranked_movies"),
    ("rank zero", c.RecommenderRequest, _mutate(_request(), items__0__rank=0), "rank"),
    ("input without payload", c.DetectorInput,
     _mutate(EXAMPLES[1], image_bytes=None), "exactly one of image_bytes and claim_check"),
    ("bad sha", c.DetectorInput, _mutate(EXAMPLES[2], claim_check__sha256="xyz"), "sha256"),
    ("window ends first", c.WindowClosed, _mutate(EXAMPLES[5], window_end=50.0), "window_end"),
    ("unknown model", c.WindowClosed, _mutate(EXAMPLES[5], model="other"), "model"),
    ("rating above 5", c.RatingFeedback, _mutate(EXAMPLES[4], rating=6), "rating"),
]


@pytest.mark.parametrize(("case", "schema", "raw", "needle"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rejected_with_message(case: str, schema: type, raw: bytes, needle: str) -> None:
    with pytest.raises(c.ContractError) as info:
        c.decode(schema, raw)
    assert needle.lower() in str(info.value).lower(), f"{case}: {info.value}"


def test_nan_rejected() -> None:
    raw = c.encode(_prediction()).replace(b'"latency_ms":12.5', b'"latency_ms":NaN')
    with pytest.raises(c.ContractError):
        c.decode(c.DetectorPrediction, raw)


def test_topic_registry_has_dead_letter_topics() -> None:
    for name, spec in c.TOPICS.items():
        if spec.schema is not c.DeadLetter:
            assert spec.dead_letter in c.TOPICS, name
            assert c.TOPICS[spec.dead_letter].schema is c.DeadLetter


def test_json_schemas_exported_and_current() -> None:
    from pathlib import Path

    schemas = c.json_schemas()
    assert set(schemas) == {"detector.prediction/v1", "detector.input/v1", "recommender.request/v1",
                            "recommender.rating/v1", "window.closed/v1", "dead_letter/v1"}
    exported = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    for tag, schema in schemas.items():
        path = exported / f"{tag.replace('/', '.')}.json"
        assert path.exists(), f"run `python -m producers.export_schemas` ({path} missing)"
        assert json.loads(path.read_text()) == json.loads(msgspec.json.encode(schema)), f"{path} is stale"
