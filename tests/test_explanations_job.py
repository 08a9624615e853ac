"""Explanations job: stored top-10 lists, explanations matching the neighbours' ratings, coverage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batch.explanations_job import HTML_NAME, JSON_NAME, PARQUET_NAME, explanations_job
from batch.job_status import JobFailed
from producers.movielens import synthetic_ml100k
from serving.recommender.emf import EMFModel
from serving.recommender.recommend import RecommenderModel

UNKNOWN_USER = 10_000


@pytest.fixture(scope="module")
def model() -> RecommenderModel:
    data = synthetic_ml100k(n_users=60, n_items=90, n_ratings=2400, seed=4)
    emf = EMFModel(latent_dim=8, epochs=3, knn=5, seed=0).fit(data.ratings)
    return RecommenderModel.from_fitted(emf, data.ratings, model_version="test-emf")


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    users = [3, 7, 7, 12, 40, UNKNOWN_USER, 3]
    return pd.DataFrame({"user_id": users, "explanation_coverage": np.linspace(0.2, 0.8, len(users))})


def independent_explanation(model: RecommenderModel, user: int, item: int) -> dict[str, int]:
    """Counts of the ratings the user's neighbours gave the item, from the raw arrays."""
    u = int(np.flatnonzero(model.user_ids == user)[0])
    i = int(np.flatnonzero(model.item_ids == item)[0])
    rated = {(int(a), int(b)): int(r) for a, b, r in model.rating_rows}
    counts: dict[int, int] = {}
    for nb in model.neighbours[u]:
        if nb >= 0 and (int(nb), i) in rated:
            counts[rated[(int(nb), i)]] = counts.get(rated[(int(nb), i)], 0) + 1
    return {str(r): counts[r] for r in sorted(counts)}


def test_explanations_are_stored_and_correct(
    model: RecommenderModel, events: pd.DataFrame, tmp_path: Path
) -> None:
    result = explanations_job(events, model, tmp_path)
    assert result.ok and set(result.outputs) == {"html", "parquet", "json"}
    table = pd.read_parquet(tmp_path / PARQUET_NAME)
    assert sorted(table["user_id"].unique()) == [3, 7, 12, 40, UNKNOWN_USER]
    assert all(ranks == list(range(1, 11)) for ranks in table.groupby("user_id")["rank"].apply(list))
    known = table[table["known_user"]]
    for row in known.itertuples(index=False):
        assert json.loads(row.explanation) == independent_explanation(model, row.user_id, row.item_id)
        counts = [getattr(row, f"similar_rated_{s}") for s in range(1, 6)]
        assert sum(counts) == row.n_similar_users and row.explained == (row.n_similar_users > 0)
    assert not table.loc[~table["known_user"], "explained"].any()  # popularity fallback: no explanation

    m = result.metrics
    assert m["n_users"] == 5 and m["n_known_users"] == 4 and m["n_recommendations"] == 50
    assert m["explanation_coverage"] == pytest.approx(table["explained"].mean())
    assert 0 < m["explanation_coverage"] <= 0.8  # the unknown user's 10 items are unexplained
    assert m["served_explanation_coverage"] == pytest.approx(events["explanation_coverage"].mean())
    report = json.loads((tmp_path / JSON_NAME).read_text())
    first = table[table["user_id"] == 3].iloc[0]
    assert report["users"]["3"][0]["explanation"] == json.loads(first["explanation"])
    assert "Recommendations with explanations" in (tmp_path / HTML_NAME).read_text()


def test_bad_or_missing_data_fails_clearly(
    model: RecommenderModel, events: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(JobFailed, match="window is empty"):
        explanations_job(events.iloc[:0], model, tmp_path)
    with pytest.raises(JobFailed, match="window is empty"):
        explanations_job(None, model, tmp_path)
    with pytest.raises(JobFailed, match="lack a user id column"):
        explanations_job(events.drop(columns=["user_id"]), model, tmp_path)
    with pytest.raises(JobFailed, match="model is missing"):
        explanations_job(events, None, tmp_path)
    with pytest.raises(ValueError, match="k must be"):
        explanations_job(events, model, tmp_path, k=0)
    assert not list(tmp_path.iterdir())
