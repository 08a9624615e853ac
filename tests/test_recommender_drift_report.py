"""Recommender drift report: raised ratings of some items show up as drift of exactly those items."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from batch.job_status import JobFailed
from batch.recommender_drift_report import HTML_NAME, JSON_NAME, recommender_drift_report, updated_ratings
from driftstream.offline_env import apply_offline_env
from driftstream.settings import get_settings
from producers.movielens import introduce_item_drift, synthetic_ml100k

DRIFTED_ITEMS = set(range(1, 11))
PARAMS = {"latent_dim": 10, "epochs": 12, "seed": 0}


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    apply_offline_env(get_settings().abs_state_dir)
    return synthetic_ml100k(n_users=60, n_items=80, n_ratings=2400, seed=0).ratings


def window_of(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A window as the worker passes it: (user_id, item_id, rating) drawn from a ratings matrix."""
    sample = frame.sample(frac=0.3, random_state=seed)
    return sample.rename(columns={"userId": "user_id", "itemId": "item_id"})[["user_id", "item_id", "rating"]]


def test_raised_item_ratings_are_detected_and_named(ratings: pd.DataFrame, tmp_path: Path) -> None:
    drifted = introduce_item_drift(ratings, DRIFTED_ITEMS, drift_amount=1)
    result = recommender_drift_report(ratings, window_of(drifted, 0), tmp_path, **PARAMS)
    m = result.metrics
    assert result.ok and m["drift_detected"] and m["max_drift_score"] >= 0.2
    assert m["n_changed_ratings"] > 0
    # The items whose factors moved most are the ones whose ratings were raised.
    assert len(set(m["most_drifted_items"]) & DRIFTED_ITEMS) >= 8
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert set(report["item_factor_scores"]) == {f"factor_{k}" for k in range(10)} | {"bias"}
    top = report["most_drifted_items"]
    assert [e["displacement"] for e in top] == sorted((e["displacement"] for e in top), reverse=True)
    assert all(e["factor_drift_score"] is not None for e in top)
    raised = [e for e in top if e["item_id"] in DRIFTED_ITEMS]
    assert sum(e["bias_change"] > 0 for e in raised) >= len(raised) - 1  # higher ratings raise the bias
    html = (tmp_path / HTML_NAME).read_text()
    assert "Feature Drift" in html or "Drift" in html
    assert "item_factor_" in html and not re.search(r"<script[^>]*\ssrc=", html)


def test_window_that_changes_nothing_has_zero_drift(ratings: pd.DataFrame, tmp_path: Path) -> None:
    # Ratings drawn from the reference matrix itself: the same-initialisation fits are identical.
    result = recommender_drift_report(ratings, window_of(ratings, 1), tmp_path, **PARAMS)
    m = result.metrics
    assert m["n_changed_ratings"] == 0 and m["max_drift_score"] == 0.0 and not m["drift_detected"]
    assert m["most_drifted_items"] == [] and m["most_drifted_users"] == []


def test_updated_ratings_replaces_and_adds() -> None:
    ref = pd.DataFrame({"userId": [2, 1], "itemId": [5, 5], "rating": [3.0, 4.0]})
    win = pd.DataFrame({"userId": [1, 1, 3], "itemId": [5, 5, 6], "rating": [1.0, 2.0, 5.0]})
    out = updated_ratings(ref, win)
    assert out.to_dict("list") == {"userId": [1, 2, 3], "itemId": [5, 5, 6], "rating": [2.0, 3.0, 5.0]}


def test_bad_or_missing_data_fails_clearly(ratings: pd.DataFrame, tmp_path: Path) -> None:
    window = window_of(ratings, 2)
    with pytest.raises(JobFailed, match="window is empty"):
        recommender_drift_report(ratings, window.iloc[:0], tmp_path)
    with pytest.raises(JobFailed, match="reference ratings are missing"):
        recommender_drift_report(None, window, tmp_path)
    with pytest.raises(JobFailed, match="lack the columns"):
        recommender_drift_report(ratings, window.drop(columns=["rating"]), tmp_path)
    bad = window.copy()
    bad.iloc[0, 2] = 9
    with pytest.raises(JobFailed, match="outside 1..5"):
        recommender_drift_report(ratings, bad, tmp_path)
    with pytest.raises(ValueError, match="latent_dim"):
        recommender_drift_report(ratings, window, tmp_path, latent_dim=4)
    assert not list(tmp_path.iterdir())
