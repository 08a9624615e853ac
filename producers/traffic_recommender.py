"""Traffic for the running recommender: sampled requests at a steady rate, and the ratings users give back.

``run(settings, rate, count, ...)`` draws requests with :class:`~producers.movielens.RequestSampler`
from the ratings the model was trained on (the synthetic MovieLens 100k of seed 0 by default,
or the real files with ``--ml100k``) and posts them to ``/recommend`` on an open-loop schedule
(request ``i`` leaves at ``i / rate`` seconds) from a small thread pool. A ``ranked_share``
of requests carries ``ranked_movies`` (20 candidates drawn by popularity) to re-rank; an
``unknown_user_share`` comes from users the model never saw (the popularity fallback).

After each answered request the user rates one or two of the returned movies, published as
``RatingFeedback`` to the ratings topic (:class:`FeedbackRatings` says which rating): the
ground truth the batch job retrains MF on.

Shifts, each ``NAME=VALUE`` pairs separated by commas; ids are ``A-B`` ranges or single ids
joined by ``+`` (``items=1-50+200-210``):

- ``--drift items=1-100,amount=1``: users rate those movies ``amount`` stars higher
  (:func:`~producers.movielens.introduce_item_drift`, clipped to 1..5): a drift of the
  feedback, invisible in the requests;
- ``--popularity-shift items=1-100,factor=5``: the candidate lists of ``ranked_movies``
  requests draw those movies ``factor`` times more often than their popularity says, so the
  requested (and re-ranked, hence recommended and rated) item popularity moves; it acts
  only on the ``--ranked-share`` of requests that carry a list;
- ``--user-shift users=1-100,factor=5``: those users send ``factor`` times more requests.

Command (the CLI hook calls ``main``)::

    driftstream traffic recommender --rate 20 --count 1000 --drift items=1-100,amount=1

>>> parse_ids("1-3+7")
[1, 2, 3, 7]
>>> parse_drift("items=1-100,amount=1")[1]
1.0
>>> shift = parse_shift("items=5-6,factor=4", "items")
>>> shift.ids, shift.factor
((5, 6), 4.0)

Reference: open-loop load generation, B. Schroeder et al., "Open Versus Closed: A Cautionary
Tale", NSDI 2006.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import requests

from driftstream.settings import Settings, get_settings
from producers.contracts import RECOMMENDER_RATINGS, RatingFeedback, new_event_id, now
from producers.movielens import (
    RATING_MAX,
    RATING_MIN,
    MovieLens,
    RequestSampler,
    introduce_item_drift,
    load_ml100k,
    synthetic_ml100k,
)
from producers.open_loop import run_open_loop
from producers.publisher import EventPublisher, publish_enabled

#: Kafka key of every recommender event; the service publishes its requests with the same key.
FEEDBACK_KEY = b"recommender"
FEEDBACK_SERVICE = "feedback"
MAX_IDS = 100_000


# --- shift specifications ---------------------------------------------------------------------


def parse_ids(spec: str) -> list[int]:
    """Ids from ``A-B`` ranges (inclusive) and single ids joined by ``+``, in order, without repeats."""
    out: dict[int, None] = {}
    for part in spec.split("+"):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"bad id range {part!r}: use A-B or A, joined by '+' (e.g. 1-100+200)") from None
        if first < 0 or last < first:
            raise ValueError(f"bad id range {part!r}: ids must be >= 0 and A <= B")
        if len(out) + last - first + 1 > MAX_IDS:
            raise ValueError(f"at most {MAX_IDS} ids, got more in {spec!r}")
        out.update(dict.fromkeys(range(first, last + 1)))
    return list(out)


def _pairs(spec: str, allowed: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in allowed or name in out:
            raise ValueError(f"bad spec {spec!r}: expected {','.join(f'{a}=...' for a in allowed)}")
        out[name] = value.strip()
    missing = [a for a in allowed if a not in out]
    if missing:
        raise ValueError(f"bad spec {spec!r}: missing {', '.join(missing)}")
    return out


def parse_drift(spec: str) -> tuple[list[int], float]:
    """``items=IDS,amount=X`` -> (item ids, rating change)."""
    pairs = _pairs(spec, ("items", "amount"))
    try:
        amount = float(pairs["amount"])
    except ValueError:
        raise ValueError(f"bad drift amount {pairs['amount']!r}: a number of stars, e.g. 1") from None
    if not np.isfinite(amount):
        raise ValueError(f"drift amount must be finite, got {amount}")
    return parse_ids(pairs["items"]), amount


@dataclass(frozen=True)
class Shift:
    """Ids whose request weight is multiplied by ``factor``."""

    ids: tuple[int, ...]
    factor: float

    def __post_init__(self) -> None:
        if not self.ids:
            raise ValueError("a shift needs at least one id")
        if not (np.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"factor must be a finite number > 0, got {self.factor}")


def parse_shift(spec: str, key: str) -> Shift:
    """``KEY=IDS,factor=X`` (``key`` is ``items`` or ``users``) -> :class:`Shift`."""
    pairs = _pairs(spec, (key, "factor"))
    try:
        factor = float(pairs["factor"])
    except ValueError:
        raise ValueError(f"bad factor {pairs['factor']!r}: a number > 0, e.g. 5") from None
    return Shift(tuple(parse_ids(pairs[key])), factor)


def _as_shift(value: Shift | str | None, key: str) -> Shift | None:
    return parse_shift(value, key) if isinstance(value, str) else value


# --- the ratings users give back ----------------------------------------------------------------


class FeedbackRatings:
    """The rating a user gives a recommended movie, from a (possibly drifted) ratings table.

    The user's own rating when the table has one; otherwise the movie's mean rating in the
    table (the global mean for a movie nobody rated) plus Gaussian noise of ``noise_sd``
    stars, rounded and clipped to 1..5.

    >>> table = pd.DataFrame({"userId": [1, 2, 2], "itemId": [10, 10, 20], "rating": [5, 3, 2]})
    >>> fr = FeedbackRatings(table, noise_sd=0.0)
    >>> fr.rating(1, 10), fr.rating(3, 10), fr.rating(3, 20), fr.rating(3, 99)
    (5, 4, 2, 3)
    """

    def __init__(self, ratings: pd.DataFrame, noise_sd: float = 0.5) -> None:
        if not (np.isfinite(noise_sd) and noise_sd >= 0):
            raise ValueError(f"noise_sd must be a finite number >= 0, got {noise_sd}")
        if len(ratings) == 0:
            raise ValueError("ratings is empty")
        self.noise_sd = float(noise_sd)
        users = ratings["userId"].to_numpy(np.int64)
        items = ratings["itemId"].to_numpy(np.int64)
        values = ratings["rating"].to_numpy(np.float64)
        self._given = dict(zip(zip(users.tolist(), items.tolist(), strict=True), values.tolist(), strict=True))
        self._item_mean = ratings.groupby("itemId")["rating"].mean().astype(float).to_dict()
        self._global_mean = float(values.mean())

    def rating(self, user_id: int, item_id: int, rng: np.random.Generator | None = None) -> int:
        given = self._given.get((int(user_id), int(item_id)))
        if given is None:
            given = self._item_mean.get(int(item_id), self._global_mean)
            if rng is not None and self.noise_sd > 0:
                given += float(rng.normal(0.0, self.noise_sd))
        return int(min(RATING_MAX, max(RATING_MIN, np.floor(given + 0.5))))  # half up, not to even


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class RecommenderTrafficReport:
    sent: int
    ok: int
    statuses: dict[int | str, int]
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)
    ranked: int = 0
    fallbacks: int = 0
    items: int = 0
    explained: int = 0
    feedback: int = 0
    feedback_unsent: int = 0
    shifts: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    @property
    def achieved_rate(self) -> float:
        """Requests completed per second of the run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def explanation_coverage(self) -> float:
        """Share of all returned items that came with an explanation."""
        return self.explained / self.items if self.items else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms of the answered requests (nan when none was answered).

        >>> RecommenderTrafficReport(3, 3, {200: 3}, 1.0, [1.0, 2.0, 9.0]).percentile(50)
        2.0
        """
        if not 0 <= q <= 100:
            raise ValueError(f"q must be in [0, 100], got {q}")
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0])))
        return (f"sent {self.sent} in {self.elapsed_s:.1f}s ({self.achieved_rate:.2f} req/s), ok {self.ok}, "
                f"failed {self.failed} [{codes}]; latency ms p50 {self.percentile(50):.1f} "
                f"p90 {self.percentile(90):.1f} p99 {self.percentile(99):.1f}; ranked_movies {self.ranked}, "
                f"fallback {self.fallbacks}, explanation coverage {self.explanation_coverage:.2f}; "
                f"ratings published {self.feedback}"
                + (f" ({self.feedback_unsent} not yet delivered, spooled)" if self.feedback_unsent else "")
                + (f"; {' '.join(self.shifts)}" if self.shifts else ""))


def _traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def build_sampler(ratings: pd.DataFrame, *, ranked_share: float = 0.3, unknown_user_share: float = 0.02,
                  popularity_shift: Shift | str | None = None, user_shift: Shift | str | None = None,
                  seed: int = 0) -> RequestSampler:
    """The request sampler of a run, with its shifts applied."""
    sampler = RequestSampler(ratings, ranked_share=ranked_share, unknown_user_share=unknown_user_share, seed=seed)
    items = _as_shift(popularity_shift, "items")
    if items is not None:
        sampler = sampler.with_popularity_shift(items.ids, items.factor)
    users = _as_shift(user_shift, "users")
    if users is not None:
        sampler = sampler.with_user_mix_shift(users.ids, users.factor)
    return sampler


def run(settings: Settings, rate: float, count: int, *, drift_items: Iterable[int] | None = None,
        drift_amount: float = 0.0, popularity_shift: Shift | str | None = None,
        user_shift: Shift | str | None = None, ranked_share: float = 0.3, unknown_user_share: float = 0.02,
        k: int = 10, seed: int = 0, data: MovieLens | None = None, feedback: bool = True, workers: int = 4,
        url: str | None = None, request_timeout_s: float = 10.0, max_duration_s: float | None = None,
        progress: bool = True, publisher: EventPublisher | None = None) -> RecommenderTrafficReport:
    """Send ``count`` requests at ``rate`` per second and publish the users' ratings of what came back.

    ``data`` defaults to ``synthetic_ml100k(seed=0)``, what the served model was trained on.
    Stops at ``max_duration_s`` (default: 1.5x the plan + 60 s). The ratings go through
    ``publisher`` when given (left open), else through a publisher of its own, closed at the end.
    """
    if rate <= 0 or count < 1 or workers < 1:
        raise ValueError(f"rate must be > 0 and count, workers >= 1; got {rate}, {count}, {workers}")
    if not 1 <= k <= 100:
        raise ValueError(f"k must be in 1..100, got {k}")
    popularity_shift = _as_shift(popularity_shift, "items")
    user_shift = _as_shift(user_shift, "users")
    if popularity_shift is not None and ranked_share == 0:
        raise ValueError("a popularity shift acts on the candidate lists of ranked_movies requests: "
                         "ranked_share must be > 0")
    drift_ids = list(drift_items or [])
    if drift_amount and not drift_ids:
        raise ValueError("drift_amount needs drift_items")
    if data is None:
        if progress:
            print("generating the synthetic MovieLens 100k (seed 0) the model was trained on", file=sys.stderr,
                  flush=True)
        data = synthetic_ml100k(seed=0)
    sampler = build_sampler(data.ratings, ranked_share=ranked_share, unknown_user_share=unknown_user_share,
                            popularity_shift=popularity_shift, user_shift=user_shift, seed=seed)
    truth = introduce_item_drift(data.ratings, drift_ids, drift_amount) if drift_ids and drift_amount \
        else data.ratings
    rater = FeedbackRatings(truth)
    shifts = ([f"drift items={len(drift_ids)} amount={drift_amount:g}"] if drift_ids and drift_amount else []) \
        + ([f"popularity-shift items={len(popularity_shift.ids)} factor={popularity_shift.factor:g}"]
           if popularity_shift else []) \
        + ([f"user-shift users={len(user_shift.ids)} factor={user_shift.factor:g}"] if user_shift else [])
    target = url or f"http://{settings.host}:{settings.recommender_port}/recommend"
    budget = max_duration_s if max_duration_s is not None else 1.5 * count / rate + 60.0

    own_publisher = publisher is None
    if publisher is None:
        publisher = EventPublisher(settings, FEEDBACK_SERVICE, enabled=feedback and publish_enabled(settings))
    local = threading.local()
    lock = threading.Lock()
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []
    tally = Counter[str]()

    def send(i: int, user_id: int, ranked: list[int] | None) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        t0 = time.perf_counter()
        body: dict = {}
        try:
            resp = session.post(target, json={"user_id": user_id, "k": k, "ranked_movies": ranked},
                                headers={"traceparent": _traceparent()}, timeout=request_timeout_s)
            status: int | str = resp.status_code
            if status == 200:
                body = resp.json()
        except (requests.RequestException, ValueError) as exc:
            status = type(exc).__name__
        latency = (time.perf_counter() - t0) * 1000.0
        items = body.get("items", [])
        rated = 0
        if items and feedback and publisher.enabled:
            rng = np.random.default_rng([seed, i])
            picks = rng.choice(len(items), size=min(len(items), int(rng.integers(1, 3))), replace=False)
            for p in picks:
                item_id = int(items[int(p)]["item_id"])
                publisher.publish(RECOMMENDER_RATINGS, FEEDBACK_KEY, RatingFeedback(
                    event_id=new_event_id(), user_id=user_id, item_id=item_id,
                    rating=float(rater.rating(user_id, item_id, rng)), event_time=now(),
                    request_id=str(body.get("request_id", ""))))
                rated += 1
        with lock:
            statuses[status] += 1
            if status == 200:
                latencies.append(latency)
                tally["ranked"] += ranked is not None
                tally["fallbacks"] += bool(body.get("fallback"))
                tally["items"] += len(items)
                tally["explained"] += sum(1 for it in items if it.get("explanation"))
                tally["feedback"] += rated

    def jobs() -> Iterator[Callable[[], None]]:
        for i in range(count):
            user_id, ranked = sampler.sample()  # drawn in order, before the request's planned start
            yield partial(send, i, user_id, ranked)

    try:
        elapsed = run_open_loop(jobs(), count=count, rate=rate, budget_s=budget, workers=workers,
                                progress_desc="recommender traffic" if progress else None)
    finally:
        unsent = publisher.flush(10.0)
        if own_publisher:
            publisher.close(timeout_s=5.0)
    with lock:
        return RecommenderTrafficReport(
            sent=sum(statuses.values()), ok=statuses.get(200, 0), statuses=dict(statuses), elapsed_s=elapsed,
            latencies_ms=list(latencies), ranked=tally["ranked"], fallbacks=tally["fallbacks"],
            items=tally["items"], explained=tally["explained"], feedback=tally["feedback"],
            feedback_unsent=unsent, shifts=shifts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="driftstream traffic recommender",
                                     description="Send sampled requests to the running recommender and publish "
                                                 "the ratings users give back.")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (default 10)")
    parser.add_argument("--count", type=int, default=200, help="number of requests (default 200)")
    parser.add_argument("--drift", metavar="items=IDS,amount=X", default=None,
                        help="raise the ratings users give to these movies, e.g. items=1-100,amount=1")
    parser.add_argument("--popularity-shift", metavar="items=IDS,factor=X", default=None,
                        help="candidate lists of ranked_movies requests draw these movies X times more often, "
                             "e.g. items=1-100,factor=5")
    parser.add_argument("--user-shift", metavar="users=IDS,factor=X", default=None,
                        help="these users send X times more requests, e.g. users=1-100,factor=5")
    parser.add_argument("--ranked-share", type=float, default=0.3,
                        help="share of requests that carry ranked_movies (default 0.3)")
    parser.add_argument("--unknown-share", type=float, default=0.02,
                        help="share of requests from users the model never saw (default 0.02)")
    parser.add_argument("--k", type=int, default=10, help="recommendations per request (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="request sampling seed")
    parser.add_argument("--ml100k", metavar="DIR", default=None,
                        help="sample from the real MovieLens 100k files (when the model was trained on them)")
    parser.add_argument("--no-feedback", action="store_true", help="do not publish rating feedback")
    parser.add_argument("--workers", type=int, default=4, help="concurrent requests")
    parser.add_argument("--url", default=None, help="override the /recommend URL")
    parser.add_argument("--max-duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        drift_items, drift_amount = parse_drift(args.drift) if args.drift else (None, 0.0)
        popularity = parse_shift(args.popularity_shift, "items") if args.popularity_shift else None
        users = parse_shift(args.user_shift, "users") if args.user_shift else None
        data = load_ml100k(args.ml100k) if args.ml100k else None
        report = run(get_settings(), args.rate, args.count, drift_items=drift_items, drift_amount=drift_amount,
                     popularity_shift=popularity, user_shift=users, ranked_share=args.ranked_share,
                     unknown_user_share=args.unknown_share, k=args.k, seed=args.seed, data=data,
                     feedback=not args.no_feedback, workers=args.workers, url=args.url,
                     max_duration_s=args.max_duration)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    print(report.summary())
    return 0 if report.sent and report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
