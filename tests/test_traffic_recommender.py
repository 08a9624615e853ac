"""The recommender traffic generator without the stack: shift specs, feedback ratings under drift,
popularity-shifted candidate lists, and a run against a stub service."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from driftstream.settings import Settings
from producers.contracts import RECOMMENDER_RATINGS, RatingFeedback
from producers.movielens import MovieLens, introduce_item_drift, synthetic_ml100k
from producers.traffic_recommender import (
    FEEDBACK_KEY,
    FeedbackRatings,
    build_sampler,
    main,
    parse_drift,
    parse_ids,
    parse_shift,
    run,
)


@pytest.fixture(scope="module")
def data() -> MovieLens:
    return synthetic_ml100k(n_users=120, n_items=200, n_ratings=6000, seed=4)


def test_specs_parse_and_bad_ones_say_why() -> None:
    assert parse_ids("3") == [3] and parse_ids("1-3+2-4") == [1, 2, 3, 4]
    assert parse_drift("items=1-100,amount=1") == (list(range(1, 101)), 1.0)
    assert parse_shift("users=7+9,factor=2.5", "users").ids == (7, 9)
    for bad, words in [("items=1-100", "missing amount"), ("items=5-1,amount=1", "A <= B"),
                       ("items=a,amount=1", "bad id range"), ("items=1,amount=x", "bad drift amount"),
                       ("movies=1,amount=1", "expected items=...")]:
        with pytest.raises(ValueError, match=words):
            parse_drift(bad)
    with pytest.raises(ValueError, match="factor must be"):
        parse_shift("items=1,factor=0", "items")


def test_feedback_uses_the_users_own_rating_else_the_drifted_item_mean(data: MovieLens) -> None:
    drift_items = list(range(1, 41))
    drifted = introduce_item_drift(data.ratings, drift_items, 1)
    plain, shifted = FeedbackRatings(data.ratings), FeedbackRatings(drifted)
    rng = np.random.default_rng(0)
    for row in drifted.sample(200, random_state=1).itertuples():
        assert shifted.rating(row.userId, row.itemId, rng) == row.rating
    # A user the table has never seen: the item's (drifted) mean plus noise, rounded and clipped.
    stranger = 10_000
    gains = []
    for item in drift_items:
        draws = [shifted.rating(stranger, item, rng) for _ in range(200)]
        assert set(draws) <= {1, 2, 3, 4, 5}
        mean = float(drifted.loc[drifted.itemId == item, "rating"].mean())
        assert abs(np.mean(draws) - mean) < 0.35, item
        gains.append(np.mean(draws) - np.mean([plain.rating(stranger, item, rng) for _ in range(200)]))
    assert np.mean(gains) > 0.5, "drifted items must be rated higher"
    untouched = [shifted.rating(stranger, 150, rng) for _ in range(300)]
    assert abs(np.mean(untouched) - np.mean([plain.rating(stranger, 150, rng) for _ in range(300)])) < 0.3


def test_popularity_shift_favours_the_chosen_items_in_candidate_lists(data: MovieLens) -> None:
    chosen = set(range(1, 21))
    base = build_sampler(data.ratings, ranked_share=1.0, unknown_user_share=0.0, seed=1)
    shifted = build_sampler(data.ratings, ranked_share=1.0, unknown_user_share=0.0, seed=1,
                            popularity_shift="items=1-20,factor=5")

    def share(sampler: object) -> float:
        lists = [ranked for _, ranked in sampler.sample_many(300)]  # type: ignore[attr-defined]
        assert all(r is not None and len(r) == 20 and len(set(r)) == 20 for r in lists)
        return float(np.mean([np.mean([m in chosen for m in r]) for r in lists]))

    before, after = share(base), share(shifted)
    assert after > 2.0 * before > 0, (before, after)
    users = build_sampler(data.ratings, ranked_share=0.0, unknown_user_share=0.0, seed=2,
                          user_shift="users=1-10,factor=10")
    drawn = [u for u, _ in users.sample_many(500)]
    base_users = [u for u, _ in build_sampler(data.ratings, ranked_share=0.0, unknown_user_share=0.0,
                                              seed=2).sample_many(500)]
    assert np.mean([u <= 10 for u in drawn]) > 3 * np.mean([u <= 10 for u in base_users])
    with pytest.raises(ValueError, match="ranked_share must be > 0"):
        run(Settings(), 10, 1, popularity_shift="items=1,factor=2", ranked_share=0.0, data=data, progress=False)


class _Stub(BaseHTTPRequestHandler):
    """Answers /recommend like the service: the candidates (or items 1..k), user ids > 1000 fall back."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).received.append(body)
        ids = body["ranked_movies"] or list(range(1, body["k"] + 1))
        fallback = body["user_id"] > 1000
        items = [{"item_id": m, "score": 1.0 / (n + 1), "rank": n + 1,
                  "explanation": {} if fallback else {"5": 1}} for n, m in enumerate(ids[: body["k"]])]
        out = json.dumps({"request_id": f"req-{len(type(self).received)}-{body['user_id']}", "model_version": "stub",
                          "fallback": fallback, "items": items}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


class _Collecting:
    enabled = True

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes | None, object]] = []
        self._lock = threading.Lock()

    def publish(self, topic: str, key: bytes | None, event: object) -> None:
        with self._lock:
            self.events.append((topic, key, event))

    def flush(self, timeout_s: float) -> int:
        return 0


@pytest.fixture()
def stub_url() -> Iterator[str]:
    _Stub.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/recommend"
    server.shutdown()
    server.server_close()


def test_run_sends_requests_and_publishes_one_or_two_ratings_of_returned_items(data: MovieLens,
                                                                                stub_url: str) -> None:
    sink = _Collecting()
    report = run(Settings(), rate=400, count=60, data=data, url=stub_url, publisher=sink, k=5, ranked_share=0.5,
                 unknown_user_share=0.2, drift_items=range(1, 200), drift_amount=1, seed=3, progress=False,
                 max_duration_s=60)  # type: ignore[arg-type]
    assert (report.sent, report.ok, report.statuses) == (60, 60, {200: 60})
    assert len(report.latencies_ms) == 60 and report.percentile(99) >= report.percentile(50) > 0
    received = _Stub.received
    assert report.ranked == sum(b["ranked_movies"] is not None for b in received) and 15 <= report.ranked <= 45
    assert all(b["k"] == 5 and (b["ranked_movies"] is None or len(b["ranked_movies"]) == 20) for b in received)
    assert report.fallbacks == sum(b["user_id"] > 1000 for b in received) > 0
    assert report.items == 300 and report.explained == 300 - 5 * report.fallbacks
    assert 60 <= len(sink.events) <= 120 and report.feedback == len(sink.events)
    per_request: dict[str, int] = {}
    for topic, key, ev in sink.events:
        assert topic == RECOMMENDER_RATINGS and key == FEEDBACK_KEY and isinstance(ev, RatingFeedback)
        assert 1 <= ev.rating <= 5 and ev.rating == int(ev.rating)
        _, n, user = ev.request_id.split("-")
        assert int(user) == ev.user_id
        body = received[int(n) - 1]
        returned = (body["ranked_movies"] or list(range(1, 6)))[:5]
        assert ev.item_id in returned
        per_request[ev.request_id] = per_request.get(ev.request_id, 0) + 1
    assert len(per_request) == 60 and set(per_request.values()) <= {1, 2}
    assert "ratings published" in report.summary()


def test_main_reports_bad_specs_as_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--drift", "items=1-10", "--count", "1"])
    assert exc.value.code == 2 and "missing amount" in capsys.readouterr().err
