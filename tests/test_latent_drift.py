"""Latent-factor drift: same-start MF fits, Procrustes alignment, Deepchecks FeatureDrift."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from producers.movielens import introduce_item_drift, synthetic_ml100k
from serving.recommender.latent_drift import (
    LatentFactors,
    feature_drift_scores,
    latent_factor_drift,
    most_drifted,
)

DRIFTED = range(1, 101)  # the chapter's drift: items 1-100, +1 star
UNTOUCHED = range(101, 201)


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return synthetic_ml100k(n_users=300, n_items=600, n_ratings=20_000, seed=0).ratings


@pytest.fixture(scope="module")
def factors(ratings: pd.DataFrame) -> LatentFactors:
    drifted = introduce_item_drift(ratings, DRIFTED, drift_amount=1)
    return latent_factor_drift(ratings, drifted, latent_dim=8, epochs=10, seed=0)


def test_same_data_gives_identical_factors(ratings: pd.DataFrame) -> None:
    # Same start, same batches: without drift there is nothing to see, not even a rotation.
    lf = latent_factor_drift(ratings, ratings, latent_dim=4, epochs=2, seed=1)
    np.testing.assert_allclose(lf.items_drifted.to_numpy(), lf.items_reference.to_numpy(), atol=1e-5)
    np.testing.assert_allclose(lf.rotation, np.eye(4), atol=1e-5)
    assert lf.item_displacement().max() < 1e-4


def test_alignment_removes_a_pure_rotation() -> None:
    # A rotated copy of the reference factors is not drift: Procrustes maps it back exactly.
    from scipy.linalg import orthogonal_procrustes
    rng = np.random.default_rng(0)
    P, Q = rng.normal(size=(50, 6)), rng.normal(size=(70, 6))
    rot, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    R, _ = orthogonal_procrustes(np.vstack([P @ rot, Q @ rot]), np.vstack([P, Q]))
    np.testing.assert_allclose(Q @ rot @ R, Q, atol=1e-10)


def test_frames_are_ready_for_deepchecks(factors: LatentFactors) -> None:
    assert list(factors.items_reference.columns) == [*(f"factor_{k}" for k in range(8)), "bias"]
    assert factors.items_reference.index.name == "itemId" and factors.users_drifted.index.name == "userId"
    assert factors.items_reference.index.equals(factors.items_drifted.index)
    ref, cur = factors.chapter_layout("item")
    assert ref.shape == (8, len(factors.items_reference)) and "item_factor_2" in cur.columns
    with pytest.raises(ValueError):
        factors.chapter_layout("movie")


def test_displacement_names_the_drifted_items(factors: LatentFactors) -> None:
    displacement = factors.item_displacement()
    drifted = displacement[displacement.index.isin(DRIFTED)]
    untouched = displacement[~displacement.index.isin(DRIFTED)]
    assert drifted.median() > 3 * untouched.median()
    items, users = most_drifted(factors, n=50)
    assert np.isin(items.index, DRIFTED).mean() >= 0.9
    assert len(users) == 50 and users.is_monotonic_decreasing
    with pytest.raises(ValueError):
        most_drifted(factors, n=0)


def test_deepchecks_flags_drifted_items_not_untouched(factors: LatentFactors) -> None:
    os.environ.setdefault("DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY", "True")
    factor_cols = [c for c in factors.items_reference.columns if c.startswith("factor_")]
    drifted = feature_drift_scores(factors.items_reference, factors.items_drifted, rows=DRIFTED)
    untouched = feature_drift_scores(factors.items_reference, factors.items_drifted, rows=UNTOUCHED)
    # Deepchecks' default condition fails a column at a drift score of 0.2 or more.
    assert drifted.max() >= 0.3 and drifted["bias"] >= 0.3
    assert untouched.max() < 0.2
    assert drifted[factor_cols].mean() > 2 * untouched[factor_cols].mean()
