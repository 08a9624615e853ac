"""The recommender service for real: HTTP requests against ``python -m serving.recommender_service``,
events read back from Kafka, bad inputs, metrics, JSON logs, and the traffic generator's rating feedback."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from service_client import ServiceClient
from test_publisher import high_watermarks, read_topic

from driftstream.settings import Settings
from driftstream.stack import stack as stack_mod
from producers.contracts import RECOMMENDER_RATINGS, RECOMMENDER_REQUESTS, RatingFeedback, RecommenderRequest, decode
from producers.movielens import MovieLens
from producers.traffic_recommender import FEEDBACK_KEY
from producers.traffic_recommender import run as run_traffic
from serving.recommender.recommend import RecommenderModel

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_MODEL = ROOT / "serving" / "models" / "recommender"
SERVICE_KEY = b"recommender"  # serving.recommender_service.EVENT_KEY (that module starts BentoML on import)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed model; where it is not built yet, a small one trained the same way."""
    if (COMMITTED_MODEL / "recommender.npz").is_file():
        return COMMITTED_MODEL
    from producers.movielens import synthetic_ml100k
    from serving.recommender.train import train_recommender

    out = tmp_path_factory.mktemp("recommender-model")
    data = synthetic_ml100k(n_users=150, n_items=240, n_ratings=6000, seed=0)
    train_recommender(data, source="test", epochs=3, evaluate=False, progress=False).save(out)
    return out


class Service(ServiceClient):
    def __init__(self, settings: Settings, log_file: Path, model: RecommenderModel) -> None:
        super().__init__(f"http://{settings.host}:{settings.recommender_port}", log_file)
        self.settings = settings
        self.model = model

    def post(self, body: Any = None, *, data: bytes | None = None, trace_id: str | None = None) -> requests.Response:
        headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"} if trace_id else {}
        if data is None:
            return requests.post(self.url + "/recommend", json=body, headers=headers, timeout=30)
        return requests.post(self.url + "/recommend", data=data, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def service(stack: Settings, model_dir: Path) -> Iterator[Service]:
    settings = stack
    log_file = stack_mod.select(settings, ["recommender"])[0].log_file
    svc = Service(settings, log_file, RecommenderModel.load(model_dir))
    custom_model = model_dir != COMMITTED_MODEL
    if custom_model:
        os.environ["DRIFTSTREAM_RECOMMENDER_MODEL_DIR"] = str(model_dir)  # read by the service process
    try:
        stack_mod.up(settings, ["recommender"], log=lambda _: None)  # the stack's own start: ready at /readyz
        yield svc
    finally:
        stack_mod.down(settings, ["recommender"], log=lambda _: None)
        if custom_model:
            os.environ.pop("DRIFTSTREAM_RECOMMENDER_MODEL_DIR", None)


def wait_for(read: Callable[[], dict[str, list]], want: set[str], timeout_s: float = 30.0) -> dict[str, list]:
    """Read back until every wanted request id has an event (events may trail the response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = read()
        if want <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def events_by_request(settings: Settings, topic: str, event_type: type, start: dict[int, int]) -> dict[str, list]:
    out: dict[str, list] = {}
    for msg in read_topic(settings, topic, start):
        ev = decode(event_type, msg.value())
        out.setdefault(ev.request_id, []).append((msg.key(), ev))
    return out


def test_responses_match_the_model_and_the_published_events(service: Service) -> None:
    s, model = service.settings, service.model
    rng = np.random.default_rng(0)
    known = [int(u) for u in model.user_ids[:3]]
    stranger = int(model.user_ids.max()) + 1000
    candidates = [int(i) for i in rng.choice(model.item_ids, 15, replace=False)]
    cases = [(known[0], 10, None), (known[1], 5, candidates), (known[2], 100, None),
             (stranger, 7, None), (stranger, 4, candidates), (known[0], 1, candidates[:1])]
    metrics = ("ranked_movies_present_total", "ranked_movies_absent_total", "recommender_unknown_user_total",
               "recommender_explanation_coverage_count", "recommender_explanation_coverage_sum")
    before = {m: service.metric(m) for m in metrics}
    start = high_watermarks(s, RECOMMENDER_REQUESTS)
    knn = model.neighbours.shape[1]
    sent: dict[str, tuple[tuple[int, int, list[int] | None], dict, str]] = {}
    for user_id, k, ranked in cases:
        trace = uuid.uuid4().hex
        resp = service.post({"user_id": user_id, "k": k, "ranked_movies": ranked}, trace_id=trace)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"request_id", "model_version", "fallback", "items"}
        assert resp.headers["x-request-id"] == body["request_id"] and resp.headers["x-trace-id"] == trace
        assert body["model_version"] == model.model_version and body["fallback"] is (user_id == stranger)
        want = model.recommend(user_id, k, ranked)
        assert [it["item_id"] for it in body["items"]] == [w["item_id"] for w in want]
        assert [it["score"] for it in body["items"]] == pytest.approx([w["score"] for w in want], rel=1e-6)
        assert [it["rank"] for it in body["items"]] == list(range(1, len(want) + 1))
        if ranked is not None:
            assert {it["item_id"] for it in body["items"]} <= set(ranked)
            assert len(body["items"]) == min(k, len(ranked))
        else:
            assert len(body["items"]) == k
        for it, w in zip(body["items"], want, strict=True):
            # {rating: neighbours who gave it}, the rating as a JSON string key "1".."5".
            assert it["explanation"] == {str(r): c for r, c in sorted(w["explanation"].items())}
            assert set(it["explanation"]) <= {"1", "2", "3", "4", "5"}
            assert all(isinstance(c, int) and c >= 1 for c in it["explanation"].values())
            assert sum(it["explanation"].values()) <= knn
            if user_id == stranger:
                assert it["explanation"] == {}
        sent[body["request_id"]] = ((user_id, k, ranked), body, trace)
    assert any(it["explanation"] for _, b, _ in sent.values() for it in b["items"]), "no item was explained"

    coverages = []
    found = wait_for(lambda: events_by_request(s, RECOMMENDER_REQUESTS, RecommenderRequest, start), set(sent))
    for request_id, ((user_id, k, ranked), body, trace) in sent.items():
        ((key, ev),) = found[request_id]
        assert key == SERVICE_KEY
        assert (ev.user_id, ev.k, ev.ranked_movies_present, ev.ranked_movies) == \
            (user_id, k, ranked is not None, ranked)
        assert (ev.model_version, ev.fallback, ev.trace_id) == (body["model_version"], body["fallback"], trace)
        assert [(i.item_id, i.score, i.rank, i.explained) for i in ev.items] == \
            [(it["item_id"], it["score"], it["rank"], bool(it["explanation"])) for it in body["items"]]
        coverage = sum(bool(it["explanation"]) for it in body["items"]) / len(body["items"])
        assert ev.explanation_coverage == pytest.approx(coverage)
        assert 0 < ev.latency_ms < 30_000 and ev.event_time <= ev.published_at
        coverages.append(coverage)

    after = {m: service.metric(m) for m in metrics}
    assert after["ranked_movies_present_total"] - before["ranked_movies_present_total"] == 3
    assert after["ranked_movies_absent_total"] - before["ranked_movies_absent_total"] == 3
    assert after["recommender_unknown_user_total"] - before["recommender_unknown_user_total"] == 2
    assert after["recommender_explanation_coverage_count"] - before["recommender_explanation_coverage_count"] == 6
    assert after["recommender_explanation_coverage_sum"] - before["recommender_explanation_coverage_sum"] == \
        pytest.approx(sum(coverages))


# name: (body (bytes sent as is, else JSON), status, reason, words in the error)
BAD_INPUTS: dict[str, tuple[Any, int, str, str]] = {
    "not JSON": (b"{user_id: 1", 400, "not_json", "not valid JSON"),
    "empty body": (b"", 400, "not_json", "empty"),
    "form body": (b"user_id=5&k=3", 400, "not_json", "not valid JSON"),
    "JSON list": (b"[1, 2]", 400, "not_an_object", "JSON object"),
    "missing user_id": ({"k": 5}, 422, "missing_user_id", "'user_id' is required"),
    "null user_id": ({"user_id": None}, 422, "missing_user_id", "'user_id' is required"),
    "string user_id": ({"user_id": "12"}, 422, "invalid_user_id", "must be an integer, got the string '12'"),
    "float user_id": ({"user_id": 1.5}, 422, "invalid_user_id", "must be an integer, got the number 1.5"),
    "boolean user_id": ({"user_id": True}, 422, "invalid_user_id", "must be an integer"),
    "negative user_id": ({"user_id": -3}, 422, "invalid_user_id", "between 0 and"),
    "k zero": ({"user_id": 1, "k": 0}, 422, "invalid_k", "'k' must be between 1 and 100, got 0"),
    "k 101": ({"user_id": 1, "k": 101}, 422, "invalid_k", "'k' must be between 1 and 100, got 101"),
    "k string": ({"user_id": 1, "k": "ten"}, 422, "invalid_k", "'k' must be an integer"),
    "unknown items": ("unknown", 422, "unknown_items", "does not know: 99999991, 99999992"),
    "ranked_movies not a list": ({"user_id": 1, "ranked_movies": "1,2"}, 422, "invalid_ranked_movies",
                                 "must be a list of item ids"),
    "ranked_movies empty": ({"user_id": 1, "ranked_movies": []}, 422, "invalid_ranked_movies", "between 1 and"),
    "ranked_movies non-integer": ({"user_id": 1, "ranked_movies": [1, 2.5]}, 422, "invalid_ranked_movies",
                                  "item 1 is the number 2.5"),
    "unknown field": ({"user_id": 1, "user": 2}, 422, "unknown_field", "unknown field(s) 'user'"),
    "too large": (b'{"user_id": 1, "ranked_movies": [' + b"1, " * 40_000 + b"1]}", 413, "too_large", "at most"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_that_says_what_is_wrong_and_is_counted(service: Service, case: str) -> None:
    body, status, reason, words = BAD_INPUTS[case]
    if body == "unknown":
        body = {"user_id": int(service.model.user_ids[0]),
                "ranked_movies": [int(service.model.item_ids[0]), 99999991, 99999992]}
    before = service.metric("recommender_rejected_requests_total", {"reason": reason})
    resp = service.post(data=body) if isinstance(body, bytes) else service.post(body)
    assert resp.status_code == status, resp.text
    out = resp.json()
    assert out["reason"] == reason and words in out["error"] and out["request_id"], out
    assert resp.headers["x-request-id"] == out["request_id"]
    assert service.metric("recommender_rejected_requests_total", {"reason": reason}) == before + 1
    assert requests.get(service.url + "/readyz", timeout=5).status_code == 200, "the worker must survive"
    logged = [x for x in service.log_lines() if x.get("request_id") == out["request_id"]]
    assert logged and logged[0]["level"] == "WARNING" and logged[0]["reason"] == reason


def test_json_logs_carry_the_request_and_trace_id(service: Service) -> None:
    trace = uuid.uuid4().hex
    request_id = service.post({"user_id": int(service.model.user_ids[5]), "k": 3}, trace_id=trace).json()["request_id"]
    lines = [x for x in service.log_lines() if x.get("request_id") == request_id]
    assert lines and all(x["trace_id"] == trace and x["service"] == "recommender" for x in lines)
    (line,) = [x for x in lines if x["message"] == "request"]
    assert line["status"] == 200 and line["fallback"] is False and line["items"] == 3 and line["latency_ms"] > 0
    text = requests.get(service.url + "/metrics", timeout=10).text
    for name in ("driftstream_publish_events_total", "bentoml_service_request_total",
                 "recommender_rejected_requests_total"):
        assert name in text, name


def _training_ratings(model: RecommenderModel) -> MovieLens:
    rows = model.rating_rows
    ratings = pd.DataFrame({"userId": model.user_ids[rows[:, 0]], "itemId": model.item_ids[rows[:, 1]],
                            "rating": rows[:, 2].astype(np.int64), "timestamp": 1})
    return MovieLens(ratings=ratings, items=pd.DataFrame({"itemId": model.item_ids}))


def test_traffic_generator_publishes_ratings_of_what_was_recommended(service: Service) -> None:
    s, model = service.settings, service.model
    req_start, rating_start = high_watermarks(s, RECOMMENDER_REQUESTS), high_watermarks(s, RECOMMENDER_RATINGS)
    data = _training_ratings(model)
    drift_items = [int(i) for i in model.item_ids[:100]]
    report = run_traffic(s, rate=40, count=30, data=data, drift_items=drift_items, drift_amount=1,
                         popularity_shift="items=1-50,factor=5", ranked_share=0.5, unknown_user_share=0.1, seed=7,
                         progress=False, max_duration_s=60)
    assert (report.ok, report.failed, report.feedback_unsent) == (30, 0, 0), report.summary()
    assert 30 <= report.feedback <= 60 and report.percentile(99) > 0

    deadline = time.monotonic() + 30
    while True:  # the traffic run flushed its publisher, but the broker's end offsets may trail
        ratings = events_by_request(s, RECOMMENDER_RATINGS, RatingFeedback, rating_start)
        if sum(map(len, ratings.values())) >= report.feedback or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sum(map(len, ratings.values())) == report.feedback and len(ratings) == 30
    requests_seen = wait_for(lambda: events_by_request(s, RECOMMENDER_REQUESTS, RecommenderRequest, req_start),
                             set(ratings))
    truth = {(int(u), int(i)): int(r) for u, i, r in data.ratings[["userId", "itemId", "rating"]].itertuples(False)}
    for request_id, rated in ratings.items():
        ((_, req),) = requests_seen[request_id]
        assert 1 <= len(rated) <= 2
        for key, ev in rated:
            assert key == FEEDBACK_KEY == SERVICE_KEY, "every recommender event must share one key"
            assert ev.user_id == req.user_id and ev.item_id in {i.item_id for i in req.items}
            assert ev.rating in {1.0, 2.0, 3.0, 4.0, 5.0}
            given = truth.get((ev.user_id, ev.item_id))
            if given is not None:  # the user's own rating, drifted
                assert ev.rating == min(5, given + (ev.item_id in drift_items))
