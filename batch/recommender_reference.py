"""The recommender's training reference: what normal traffic looks like to the stream.

It replays requests drawn from the training ratings (the same sampler and shares the
traffic generator uses) through the committed model, builds the request events the
service would publish, and profiles them: popularity buckets of requested and
recommended items (from the training ratings' item counts), ranked-movies and fallback
rates, score distribution. The training ratings are stored next to the profile, for the
batch job that retrains MF on a window's ratings.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from tqdm import tqdm

from batch.built_reference import BuiltReference
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings
from producers.contracts import RecommendedItem, RecommenderRequest, new_event_id
from stream_apps.recommender_window import PopularityBuckets, recommender_reference
from stream_apps.reference_store import save_reference

REFERENCE_REQUESTS = 4000
REFERENCE_SEED = 424_242
MODEL_DIR = Path(__file__).resolve().parent.parent / "serving" / "models" / "recommender"


def ratings_key(model_version: str) -> str:
    return f"references/recommender/{model_version}/ratings.parquet"


def reference_requests(n: int = REFERENCE_REQUESTS, seed: int = REFERENCE_SEED, progress: bool = True,
                       ) -> tuple[list[RecommenderRequest], PopularityBuckets, object, object]:
    """(request events, popularity buckets, the model, the training data)."""
    from producers.movielens import RequestSampler, synthetic_ml100k
    from serving.recommender.recommend import RecommenderModel

    model = RecommenderModel.load(MODEL_DIR)
    data = synthetic_ml100k(seed=0)  # what the committed model was trained on (its model card)
    ratings = data.ratings
    counts = ratings["itemId"].value_counts()
    buckets = PopularityBuckets.from_interactions(counts.index.to_numpy(), counts.to_numpy())
    sampler = RequestSampler(ratings, ranked_share=0.3, unknown_user_share=0.02, seed=seed)
    events: list[RecommenderRequest] = []
    t = time.time()
    for user_id, ranked in tqdm(sampler.sample_many(n), desc="recommender reference", disable=not progress,
                                mininterval=2):
        known = model.known_items
        ranked = [i for i in ranked if i in known] if ranked is not None else None
        recs = model.recommend(int(user_id), 10, ranked)
        explained = [bool(r["explanation"]) for r in recs]
        events.append(RecommenderRequest(
            event_id=new_event_id(), request_id=new_event_id(), model_name="movie-recommender",
            model_version=model.model_version, event_time=t, published_at=t, latency_ms=1.0,
            user_id=int(user_id), k=10, ranked_movies_present=ranked is not None, ranked_movies=ranked,
            items=[RecommendedItem(int(r["item_id"]), float(r["score"]), int(r["rank"]), e)
                   for r, e in zip(recs, explained, strict=True)],
            explanation_coverage=sum(explained) / len(recs) if recs else 0.0,
            fallback=not model.is_known_user(int(user_id)),
        ))
    return events, buckets, model, data


def build_recommender_reference(settings: Settings, progress: bool = True) -> BuiltReference:
    t0 = time.monotonic()
    events, buckets, model, data = reference_requests(progress=progress)
    profile = recommender_reference("recommender", model.model_version, events, buckets)
    store = ObjectStore(settings)
    buf = io.BytesIO()
    data.ratings.to_parquet(buf, index=False)
    rkey = ratings_key(model.model_version)
    store.put(rkey, buf.getvalue())
    key = save_reference(store, "recommender", profile)
    return BuiltReference("recommender", model.model_version, key, len(events), [rkey], time.monotonic() - t0)


__all__ = ["build_recommender_reference", "ratings_key", "reference_requests"]
