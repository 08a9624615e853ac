"""Detection quality of the window and drift code: false alarms and detection delay.

Replays event streams through the same code the stream workers run (no Kafka): a
:class:`~stream_apps.window_processor.WindowProcessor` decides lateness, updates one
accumulator per pane per event, and merges a closed window's panes and scores it against
a reference with the configured budget
(``settings.false_alarms_per_day``) and window settings.

Scenarios (event time advances at ``--rate`` events a second; arrival order is shuffled
by a few seconds, and 0.1% of events arrive 400 s late and must be dropped):

- detector, stationary: ``--stationary-events`` events from the reference distribution;
- detector, brightness x0.6 from a known onset (on a hop boundary, and half a hop later);
- recommender, stationary;
- recommender, item-rating drift: from the onset the model reflects ratings where items
  1-100 got +1 (section 11.2.2's drift), so it recommends and scores differently;
- recommender, popularity shift: from the onset, requested candidate lists favour the
  less popular half of the items five times more.

Detector image properties come from synthetic ID-card scenes (``producers.idcard_scenes``)
measured by ``producers.image_properties``, each scene also darkened with Pillow's
brightness enhancer; events draw a scene and add a little Gaussian jitter to the
continuous properties (a smoothed bootstrap), so the reference and the stationary stream
share one distribution. Without those modules a parametric model stands in.

The recommender is the served ``RecommenderModel`` loaded from ``--recommender-dir``
(trained on ``producers.movielens.synthetic_ml100k``, seed 0); for the rating drift each
drifted item's bias is raised by the mean change of its clipped ratings, the first-order
effect of retraining (a full EMF refit takes minutes of CPU). Without the artefacts a
stand-in factor model (biases plus a truncated SVD of the residuals) is fitted on the
original and on the drifted ratings. Requests follow ``producers.movielens.RequestSampler``'s
user and item weights.

Run: ``python -m benchmarks.detection_quality`` (about a minute of CPU; ``--stationary-events``
and ``--scenes`` make it shorter).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from driftstream.settings import get_settings
from producers.contracts import (
    Detection,
    DetectorPrediction,
    ImageProperties,
    RecommendedItem,
    RecommenderRequest,
)
from stream_apps.detector_window import PROPERTY_NAMES, DetectorWindow, detector_reference
from stream_apps.false_alarm_control import DriftPolicy, DriftTest
from stream_apps.recommender_window import PopularityBuckets, RecommenderWindow, recommender_reference
from stream_apps.reference_profile import ReferenceProfile
from stream_apps.window_processor import ClosedWindow, WindowProcessor
from stream_apps.windows import HoppingWindows

T0 = 1_700_000_000.0
LATE_SHARE = 0.001
LATE_DELAY_S = 400.0
JITTER_S = 3.0
DRIFT_WARMUP_S = 1200.0  # stationary event time before an onset
DRIFT_AFTER_S = 300.0  # event time replayed after an onset
CONTINUOUS = ("brightness", "rms_contrast", "mean_red_relative_intensity",
              "mean_green_relative_intensity", "mean_blue_relative_intensity")


# --- replay ------------------------------------------------------------------------------


@dataclass
class WindowOutcome:
    start: float
    end: float
    drift: dict[str, bool]  # policy name -> model_drift_detected
    flagged: list[str]  # features flagged (default policy)
    min_p: float


@dataclass
class Replay:
    outcomes: list[WindowOutcome] = field(default_factory=list)
    events: int = 0
    dropped: int = 0
    update_s: float = 0.0  # CPU seconds in lateness checks, pane lookups and updates
    result_s: float = 0.0  # CPU seconds merging panes and scoring closed windows


def replay(events: Iterator[Any], new_window: Callable[[], Any], reference: ReferenceProfile,
           policies: dict[str, DriftPolicy], windows: HoppingWindows, grace_s: float, key: str) -> Replay:
    """The stream workers' window state: panes per hop, windows scored when the watermark closes them."""
    main = next(iter(policies))
    processor = WindowProcessor(key, windows, grace_s, new_window=new_window,
                                load_window=lambda _: None, reference=reference, policy=policies[main])
    out = Replay()

    def record(closed: Sequence[ClosedWindow]) -> None:
        for window in closed:
            result = window.result
            tests = {k: DriftTest(v["score"], math.nan if v["p_value"] is None else v["p_value"], v["method"], v["n"])
                     for k, v in result["drift"].items()}
            drift = {main: bool(result["model_drift_detected"])}
            for name, policy in policies.items():
                if name != main:
                    drift[name] = bool(policy.decide(tests, window.window_start, key)["model_drift_detected"])
            p_values = [t.p_value for t in tests.values() if not math.isnan(t.p_value)]
            out.outcomes.append(WindowOutcome(window.window_start, window.window_end, drift,
                                              [k for k, v in result["drift"].items() if v["flagged"]],
                                              min(p_values, default=math.nan)))

    offset = 0
    closes_after = windows.size_s + grace_s
    boundary = -math.inf  # windows close only when the watermark crosses a hop boundary past size + grace
    while chunk := list(islice(events, 10_000)):  # building the events is not timed
        tick, scoring = time.process_time(), out.result_s
        for event in chunk:
            offset += 1
            if processor.apply(event, partition=0, offset=offset) != "accepted":
                continue
            crossed = math.floor((processor.watermark - closes_after) / windows.hop_s)
            if crossed > boundary:
                boundary = crossed
                closing = time.process_time()
                closed = processor.close_due()
                out.result_s += time.process_time() - closing
                record(closed)
        out.events += len(chunk)
        out.update_s += time.process_time() - tick - (out.result_s - scoring)
    out.dropped = processor.late_dropped
    return out


def arrival_order(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indexes in arrival order: a few seconds of jitter, a few events far too late."""
    delay = rng.uniform(0.0, JITTER_S, len(times))
    delay[rng.random(len(times)) < LATE_SHARE] = LATE_DELAY_S
    return np.argsort(times + delay, kind="stable")


# --- detector data --------------------------------------------------------------------------


@dataclass
class PropertyModel:
    """Rows of the seven properties of base and darkened scenes, plus card counts."""

    base: np.ndarray
    dark: np.ndarray
    cards: np.ndarray
    bandwidth: np.ndarray
    source: str

    def sample(self, rng: np.random.Generator, n: int, darkened: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        pick = rng.integers(0, len(self.base), n)
        rows = self.base[pick].copy()
        if darkened is not None and darkened.any():
            rows[darkened] = self.dark[pick[darkened]]
        rows += rng.normal(size=rows.shape) * self.bandwidth
        rows[:, :4] = np.maximum(rows[:, :4], 0.0)
        rows[:, 4:] = np.clip(rows[:, 4:], 0.0, 1.0)
        return rows, self.cards[pick]


def property_model(n_scenes: int, seed: int) -> PropertyModel:
    try:
        from producers.idcard_scenes import FRAME_SIZES, generate_scene
        from producers.image_properties import compute_properties
        from producers.image_transforms import brightness
    except ImportError:
        return parametric_property_model(seed)
    base, dark, cards = [], [], []
    for i in range(n_scenes):
        scene = generate_scene(seed * 100_000 + i, size=FRAME_SIZES[i % len(FRAME_SIZES)])
        base.append([compute_properties(scene.image)[k] for k in PROPERTY_NAMES])
        dark.append([compute_properties(brightness(scene.image, 0.6))[k] for k in PROPERTY_NAMES])
        cards.append(len(scene.boxes))
    return _with_bandwidth(np.array(base), np.array(dark), np.array(cards), f"{n_scenes} synthetic ID-card scenes")


def parametric_property_model(seed: int) -> PropertyModel:
    rng = np.random.default_rng(seed)
    n = 2000
    sizes = np.array([(640, 480), (480, 640), (640, 640), (720, 480), (512, 384)], float)[rng.integers(0, 5, n)]
    bright = rng.beta(6, 6, n) * 0.8 + 0.1
    contrast = rng.gamma(8, 0.025, n)
    rgb = rng.dirichlet([60, 60, 60], n)
    base = np.column_stack([sizes[:, 1] / sizes[:, 0], sizes[:, 0] * sizes[:, 1], bright, contrast, rgb])
    dark = base.copy()
    dark[:, 2:4] *= 0.6
    return _with_bandwidth(base, dark, rng.integers(0, 3, n), "parametric model")


def _with_bandwidth(base: np.ndarray, dark: np.ndarray, cards: np.ndarray, source: str) -> PropertyModel:
    # half of Silverman's rule for the continuous properties; frame shape and area stay discrete
    bandwidth = np.zeros(len(PROPERTY_NAMES))
    for j, name in enumerate(PROPERTY_NAMES):
        if name in CONTINUOUS:
            bandwidth[j] = 0.5 * 1.06 * base[:, j].std() * len(base) ** -0.2
    return PropertyModel(base, dark, cards, bandwidth, source)


def detector_events(model: PropertyModel, n: int, rate: float, rng: np.random.Generator,
                    onset: float | None = None) -> tuple[Iterator[DetectorPrediction], np.ndarray]:
    times = T0 + np.arange(n) / rate
    darkened = times >= onset if onset is not None else None
    rows, cards = model.sample(rng, n, darkened)
    confidence = np.clip(rng.beta(8, 2, (n, 4)) - (0.15 * darkened[:, None] if darkened is not None else 0.0), 0, 1)
    order = arrival_order(times, rng)

    def generate() -> Iterator[DetectorPrediction]:
        for i in order:
            yield DetectorPrediction(
                event_id=f"d{i}", request_id=f"r{i}", model_name="idcard-yolov8n", model_version="v1",
                event_time=float(times[i]), published_at=float(times[i]) + 0.01, latency_ms=40.0,
                detections=[Detection([10.0, 10.0, 200.0, 130.0], "id_card", float(confidence[i, c]))
                            for c in range(int(cards[i]))],
                image=ImageProperties(*rows[i].tolist()))

    return generate(), times


# --- recommender data ------------------------------------------------------------------------


class ServedRecommender:
    """The served model (``serving.recommender.recommend.RecommenderModel``); answers without a
    candidate list are the same for a given user, so they are computed once per user."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._cache: dict[int, tuple[list[tuple[int, float, bool]], bool]] = {}

    def respond(self, user: int, ranked: list[int] | None) -> tuple[list[tuple[int, float, bool]], bool]:
        known = self.model.is_known_user(user)
        key = user if known else -1
        if ranked is None and key in self._cache:
            return self._cache[key]
        answer = ([(r["item_id"], r["score"], bool(r["explanation"]))
                   for r in self.model.recommend(user, 10, ranked)], not known)
        if ranked is None:
            self._cache[key] = answer
        return answer


def served_model_with_rating_drift(model: Any, ratings: Any, items: range, amount: float) -> Any:
    """The served model as retraining on the drifted ratings would move it, to first order:
    each drifted item's bias rises by the mean change of its (clipped) ratings."""
    import dataclasses

    from producers.movielens import introduce_item_drift

    change = (introduce_item_drift(ratings, items, amount).rating - ratings.rating).groupby(ratings.itemId).mean()
    rows = np.searchsorted(model.item_ids, change.index.to_numpy())
    ok = (rows < len(model.item_ids)) & (model.item_ids[np.minimum(rows, len(model.item_ids) - 1)] == change.index)
    bias = model.item_bias.astype(np.float64)
    bias[rows[ok]] += change.to_numpy()[ok]
    return dataclasses.replace(model, item_bias=bias.astype(model.item_bias.dtype),
                               model_version=f"{model.model_version}-ratings-drift")


class FactorRecommender:
    """Stand-in recommender: ``mu + b_u + b_i + p_u . q_i`` (shrunk biases, rank-r SVD of residuals)."""

    def __init__(self, ratings: Any, n_items: int, rank: int = 16, shrink: float = 10.0, neighbours: int = 20) -> None:
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import svds

        users = np.sort(ratings.userId.unique())
        self.user_row = {int(u): r for r, u in enumerate(users)}
        u = np.searchsorted(users, ratings.userId.to_numpy())
        i = ratings.itemId.to_numpy() - 1
        r = ratings.rating.to_numpy(dtype=np.float64)
        n_users = len(users)
        mu = r.mean()
        b_i = np.bincount(i, r - mu, n_items) / (np.bincount(i, minlength=n_items) + shrink)
        b_u = np.bincount(u, r - mu - b_i[i], n_users) / (np.bincount(u, minlength=n_users) + shrink)
        residual = csr_matrix((r - mu - b_i[i] - b_u[u], (u, i)), shape=(n_users, n_items))
        left, sing, right = svds(residual, k=rank, v0=np.ones(min(residual.shape)))  # deterministic start
        p = left * np.sqrt(sing)
        self.scores = mu + b_u[:, None] + b_i[None, :] + p @ (right.T * np.sqrt(sing)).T
        self.item_score = mu + b_i  # what an unknown user gets
        popularity = np.bincount(i, minlength=n_items)
        self.popular = np.argsort(-popularity, kind="stable")
        rated = csr_matrix((np.ones_like(r), (u, i)), shape=(n_users, n_items)).toarray() > 0
        masked = np.where(rated, -np.inf, self.scores)
        top = np.argpartition(-masked, 10, axis=1)[:, :10]
        self.top = np.take_along_axis(top, np.argsort(-np.take_along_axis(masked, top, 1), axis=1), 1)
        # explained: liked (>= 4) by at least 10% of the user's nearest neighbours in factor space
        unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        near = np.argsort(-(unit @ unit.T), axis=1)[:, 1 : neighbours + 1]
        liked = csr_matrix(((r >= 4).astype(np.float32), (u, i)), shape=(n_users, n_items)).toarray()
        self.explained = liked[near].mean(axis=1) >= 0.1

    def respond(self, user: int, ranked: list[int] | None) -> tuple[list[tuple[int, float, bool]], bool]:
        row = self.user_row.get(user)
        if row is None:  # unknown user: popularity fallback
            if ranked is None:
                items = self.popular[:10]
            else:
                cand = np.array(ranked) - 1
                items = cand[np.argsort(-self.item_score[cand], kind="stable")[:10]]
            return [(int(x) + 1, float(self.item_score[x]), False) for x in items], True
        if ranked is None:
            items = self.top[row]
        else:
            cand = np.array(ranked) - 1
            items = cand[np.argsort(-self.scores[row, cand], kind="stable")[:10]]
        return [(int(x) + 1, float(self.scores[row, x]), bool(self.explained[row, x])) for x in items], False


@dataclass
class RequestModel:
    users: np.ndarray
    user_p: np.ndarray
    items: np.ndarray
    item_p: np.ndarray
    ranked_share: float
    ranked_size: int
    unknown_share: float

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[list[int] | None]]:
        users = self.users[rng.choice(len(self.users), size=n, p=self.user_p)]
        unknown = rng.random(n) < self.unknown_share
        users = np.where(unknown, self.users.max() + 1 + rng.integers(0, 1_000_000, n), users)
        ranked: list[list[int] | None] = [None] * n
        with_list = np.flatnonzero(rng.random(n) < self.ranked_share)
        # weighted draws without replacement: draw with replacement and keep the first distinct ones
        draws = self.items[rng.choice(len(self.items), size=(len(with_list), 4 * self.ranked_size), p=self.item_p)]
        for row, j in enumerate(with_list):
            distinct = list(dict.fromkeys(draws[row].tolist()))
            while len(distinct) < self.ranked_size:
                extra = self.items[rng.choice(len(self.items), size=self.ranked_size, p=self.item_p)].tolist()
                distinct = list(dict.fromkeys(distinct + extra))
            ranked[j] = distinct[: self.ranked_size]
        return users, ranked


def request_model(sampler: Any) -> RequestModel:
    up, ip = sampler.user_probabilities, sampler.item_probabilities
    return RequestModel(up.index.to_numpy(), up.to_numpy(), ip.index.to_numpy(), ip.to_numpy(),
                        sampler.ranked_share, sampler.ranked_size, sampler.unknown_user_share)


def recommender_events(n: int, rate: float, rng: np.random.Generator, before: tuple[FactorRecommender, RequestModel],
                       after: tuple[FactorRecommender, RequestModel] | None = None,
                       onset: float | None = None) -> tuple[Iterator[RecommenderRequest], np.ndarray]:
    times = T0 + np.arange(n) / rate
    drifted = times >= onset if onset is not None else np.zeros(n, bool)
    users_a, ranked_a = before[1].draw(rng, n)
    users_b, ranked_b = (after or before)[1].draw(rng, n)
    order = arrival_order(times, rng)

    def generate() -> Iterator[RecommenderRequest]:
        for i in order:
            recommender, users, ranked = (after[0], users_b, ranked_b) if after and drifted[i] else \
                (before[0], users_a, ranked_a)
            items, fallback = recommender.respond(int(users[i]), ranked[i])
            explained = sum(e for _, _, e in items)
            yield RecommenderRequest(
                event_id=f"q{i}", request_id=f"r{i}", model_name="movie-emf", model_version="v1",
                event_time=float(times[i]), published_at=float(times[i]) + 0.01, latency_ms=5.0,
                user_id=int(users[i]), k=10, ranked_movies_present=ranked[i] is not None,
                ranked_movies=ranked[i], fallback=fallback,
                items=[RecommendedItem(item, score, rank + 1, e) for rank, (item, score, e) in enumerate(items)],
                explanation_coverage=explained / len(items) if items else 0.0)

    return generate(), times


# --- scenarios and report --------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    model: str
    run: Replay
    times: np.ndarray
    onset: float | None
    hop_s: float

    def alarms(self, policy: str, before: float | None = None) -> int:
        """Rising edges of model-level drift, in windows ending at or before ``before``."""
        count, previous = 0, False
        for o in self.run.outcomes:
            if before is not None and o.end > before:
                break
            if o.drift[policy] and not previous:
                count += 1
            previous = o.drift[policy]
        return count

    def detection(self, policy: str) -> tuple[float, int, list[str]] | None:
        assert self.onset is not None
        for o in self.run.outcomes:
            if o.end > self.onset and o.drift[policy]:
                events = int(((self.times >= self.onset) & (self.times < o.end)).sum())
                return o.end - self.onset, events, o.flagged
        return None


def python_loop_ns() -> float:
    """CPU nanoseconds of one trivial Python loop step: how fast this machine runs Python."""
    tick = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.process_time() - tick) * 1e3


def print_report(rows: list[Row], policies: dict[str, DriftPolicy], settings_line: str) -> None:
    names = list(policies)
    print(settings_line)
    for name, p in policies.items():
        print(f"  policy {name}: persistence {p.persistence_hops} hop(s), per-window alpha {p.alpha:.3g} "
              f"({p.correction.upper()} across features)")
    header = (f"{'scenario':<34} {'model':<11} {'events':>7} {'late':>5} {'windows':>7} "
              + " ".join(f"{'alarms ' + n:>10}" for n in names)
              + " " + " ".join(f"{'delay ' + n + ' s (hops)':>20}" for n in names)
              + f" {'delay ev':>8} {'us/event':>8} {'ms/window':>9}  flagged at detection")
    print(header)
    print("-" * len(header))
    for row in rows:
        r = row.run
        fa = [row.alarms(n, row.onset) for n in names]
        delays, events, flagged = [], "-", "-"
        for n in names:
            found = row.detection(n) if row.onset is not None else None
            if row.onset is None:
                delays.append("-")
            elif found is None:
                delays.append("not detected")
            else:
                delays.append(f"{found[0]:.0f} ({found[0] / row.hop_s:.2f})")
                if n == names[0]:
                    events, flagged = str(found[1]), ", ".join(found[2])
        print(f"{row.scenario:<34} {row.model:<11} {r.events:>7} {r.dropped:>5} {len(r.outcomes):>7} "
              + " ".join(f"{x:>10}" for x in fa) + " " + " ".join(f"{d:>20}" for d in delays)
              + f" {events:>8} {1e6 * r.update_s / max(r.events, 1):>8.2f} "
              + f"{1e3 * r.result_s / max(len(r.outcomes), 1):>9.1f}  {flagged}")
    print("alarms: model-level false alarms (on drift scenarios: before the onset); late: events dropped as "
          "too late; delay: event time from the onset to the end of the first window with drift; "
          "us/event: CPU per event (lateness, pane, update); ms/window: CPU per closed window "
          "(merge 10 panes, statistics, tests)")
    for row in rows:
        if row.onset is None:
            p = [o.min_p for o in row.run.outcomes if not math.isnan(o.min_p)]
            print(f"  {row.model} stationary: smallest p-value of any feature in any window {min(p):.2e} "
                  f"over {len(p)} windows")
    print(f"  this machine runs a trivial Python loop step in {python_loop_ns():.0f} ns of CPU")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stationary-events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second of event time")
    parser.add_argument("--scenes", type=int, default=150, help="synthetic scenes behind the detector data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recommender-dir", default="serving/models/recommender",
                        help="artefacts of the served recommender (a stand-in model is used without them)")
    args = parser.parse_args(argv)
    if args.stationary_events < 1 or args.rate <= 0 or args.scenes < 10:
        parser.error("need --stationary-events >= 1, --rate > 0 and --scenes >= 10")
    started = time.time()
    settings = get_settings()
    size, hop, _, grace = settings.effective_windows()
    windows = HoppingWindows(size, hop)
    budget = settings.false_alarms_per_day

    def policies() -> dict[str, DriftPolicy]:
        return {f"m={m}": DriftPolicy.from_budget(budget, size, hop, m) for m in (1, 2)}

    rng = np.random.default_rng(args.seed)
    rows: list[Row] = []
    n_drift = int((DRIFT_WARMUP_S + DRIFT_AFTER_S) * args.rate)
    onset_aligned = math.ceil((T0 + DRIFT_WARMUP_S) / hop) * hop
    onsets = {"on a hop boundary": onset_aligned, "half a hop later": onset_aligned + hop / 2}

    # detector
    model = property_model(args.scenes, args.seed)
    ref_rows, _ = model.sample(rng, 200_000)
    det_ref = detector_reference("idcard-yolov8n", "v1", ref_rows, seed=args.seed, created_at=T0)
    threshold = settings.low_confidence_threshold

    def new_detector() -> DetectorWindow:
        return DetectorWindow(threshold)

    events, times = detector_events(model, args.stationary_events, args.rate, rng)
    rows.append(Row("stationary", "detector", replay(events, new_detector, det_ref, policies(), windows, grace,
                                                     "detector"), times, None, hop))
    for label, onset in onsets.items():
        events, times = detector_events(model, n_drift, args.rate, rng, onset)
        rows.append(Row(f"brightness x0.6, {label}", "detector",
                        replay(events, new_detector, det_ref, policies(), windows, grace, "detector"),
                        times, onset, hop))

    # recommender
    from producers.movielens import RequestSampler, introduce_item_drift, synthetic_ml100k

    data = synthetic_ml100k(seed=0)  # the data the committed recommender was trained on
    n_items = int(data.items.itemId.max())
    base: ServedRecommender | FactorRecommender
    retrained: ServedRecommender | FactorRecommender
    try:
        from serving.recommender.recommend import RecommenderModel

        served = RecommenderModel.load(args.recommender_dir)
        base = ServedRecommender(served)
        retrained = ServedRecommender(served_model_with_rating_drift(served, data.ratings, range(1, 101), 1))
        recommender_source = f"served model {served.model_version} (item biases moved for the rating drift)"
    except (ImportError, FileNotFoundError) as exc:
        base = FactorRecommender(data.ratings, n_items)
        retrained = FactorRecommender(introduce_item_drift(data.ratings, range(1, 101), 1), n_items)
        recommender_source = f"stand-in factor model refitted on drifted ratings ({exc.__class__.__name__})"
    sampler = RequestSampler(data.ratings, ranked_share=0.3, ranked_size=20, unknown_user_share=0.05,
                             seed=args.seed)
    requests = request_model(sampler)
    tail = sampler.item_probabilities.sort_values().index[: n_items // 2]
    shifted = request_model(sampler.with_popularity_shift(tail, factor=5.0))
    counts = data.ratings.itemId.value_counts()
    buckets = PopularityBuckets.from_interactions(counts.index.to_numpy(), counts.to_numpy(), n_buckets=10)
    ref_events, _ = recommender_events(50_000, args.rate, rng, (base, requests))
    rec_ref = recommender_reference("movie-emf", "v1", ref_events, buckets, seed=args.seed, created_at=T0)

    def new_recommender() -> RecommenderWindow:
        return RecommenderWindow(buckets)

    events, times = recommender_events(args.stationary_events, args.rate, rng, (base, requests))
    rows.append(Row("stationary", "recommender",
                    replay(events, new_recommender, rec_ref, policies(), windows, grace, "recommender"),
                    times, None, hop))
    for label, after in (("item ratings 1-100 +1", (retrained, requests)),
                         ("popularity shift to the tail x5", (base, shifted))):
        events, times = recommender_events(n_drift, args.rate, rng, (base, requests), after, onset_aligned)
        rows.append(Row(label, "recommender",
                        replay(events, new_recommender, rec_ref, policies(), windows, grace, "recommender"),
                        times, onset_aligned, hop))

    print_report(rows, policies(),
                 f"windows {size:.0f} s every {hop:.0f} s, grace {grace:.0f} s, budget {budget} false alarms/day, "
                 f"{args.rate:.0f} events/s;\n  detector data: {model.source}; recommender: {recommender_source}")
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
