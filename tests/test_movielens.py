"""MovieLens loader, synthetic generator, drift injection and request sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from producers.movielens import (
    GENRES,
    RATING_COLUMNS,
    RequestSampler,
    introduce_item_drift,
    load_ml100k,
    synthetic_ml100k,
)


def _write_fixture(root: Path) -> None:
    # Same layout as the real files: tab-separated u.data, pipe-separated latin-1 u.item.
    (root / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n")
    flags_a = ["0"] * len(GENRES)
    flags_a[GENRES.index("Comedy")] = "1"
    flags_a[GENRES.index("Drama")] = "1"
    flags_b = ["0"] * len(GENRES)
    lines = [
        "|".join(["242", "Kolya (1996)", "24-Jan-1997", "", "http://us.imdb.com/M/title-exact?Kolya%20(1996)",
                  *flags_a]),
        "|".join(["302", "Café Élan (1997)", "01-Jan-1997", "", "", *flags_b]),
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def test_load_ml100k_reads_both_files(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    data = load_ml100k(tmp_path)
    assert list(data.ratings.columns) == RATING_COLUMNS
    assert data.ratings.to_numpy().tolist()[0] == [196, 242, 3, 881250949]
    assert data.n_users == 3 and data.n_items == 2
    items = data.items.set_index("itemId")
    assert items.loc[242, "genres"] == "Comedy|Drama"
    assert items.loc[302, "title"] == "Café Élan (1997)"  # latin-1 decoded
    assert items.loc[302, "genres"] == ""


def test_load_ml100k_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="u.data"):
        load_ml100k(tmp_path)
    _write_fixture(tmp_path)
    (tmp_path / "u.data").write_text("1\t2\t7\t100\n")
    with pytest.raises(ValueError, match="outside 1..5"):
        load_ml100k(tmp_path)


def test_synthetic_has_ml100k_shape_and_is_seeded() -> None:
    data = synthetic_ml100k(seed=0)
    r = data.ratings
    assert len(r) == 100_000 and r["userId"].nunique() == 943 and data.n_items == 1682
    assert r["rating"].between(1, 5).all() and r["rating"].dtype == np.int64
    assert not r.duplicated(["userId", "itemId"]).any()
    assert r.groupby("userId").size().min() >= 20
    assert abs(r["rating"].mean() - 3.53) < 0.05
    popularity = r["itemId"].value_counts()
    assert popularity.iloc[0] > 10 * popularity.median()  # heavy-tailed (ML-100k: 583 vs 27)
    assert (popularity <= 5).mean() > 0.05
    assert synthetic_ml100k(n_users=30, n_items=50, n_ratings=700, seed=4).ratings.equals(
        synthetic_ml100k(n_users=30, n_items=50, n_ratings=700, seed=4).ratings)


def test_synthetic_has_group_structure() -> None:
    # Users of one latent group agree with each other more than with the rest: MF has something to learn.
    data = synthetic_ml100k(n_users=200, n_items=300, n_ratings=12_000, n_groups=3, seed=1)
    m = data.ratings.pivot_table(index="userId", columns="itemId", values="rating").to_numpy()
    centred = np.nan_to_num(m - np.nanmean(m, axis=1, keepdims=True))
    unit = centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-9)
    sim = unit @ unit.T
    np.fill_diagonal(sim, np.nan)
    top = np.nanmax(sim, axis=1)
    assert np.median(top) > 0.3


def test_synthetic_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="n_ratings"):
        synthetic_ml100k(n_users=10, n_items=100, n_ratings=50)
    with pytest.raises(ValueError, match="n_groups"):
        synthetic_ml100k(n_groups=0)


def test_introduce_item_drift_raises_and_clips_without_mutating() -> None:
    ratings = pd.DataFrame({"userId": [1, 1, 2, 2], "itemId": [1, 2, 1, 3], "rating": [3, 2, 5, 1],
                            "timestamp": [1, 2, 3, 4]})
    before = ratings.copy()
    out = introduce_item_drift(ratings, [1, 3], drift_amount=1)
    assert out["rating"].tolist() == [4, 2, 5, 2]
    assert ratings.equals(before)
    down = introduce_item_drift(ratings, [1], drift_amount=-3)
    assert down["rating"].tolist() == [1, 2, 2, 1]
    half = introduce_item_drift(ratings, [2], drift_amount=0.5)
    assert half["rating"].tolist() == [3.0, 2.5, 5.0, 1.0]


def test_request_sampler_follows_popularity_and_is_seeded() -> None:
    ratings = synthetic_ml100k(n_users=100, n_items=200, n_ratings=5000, seed=2).ratings
    a = RequestSampler(ratings, ranked_share=0.5, ranked_size=5, seed=7)
    b = RequestSampler(ratings, ranked_share=0.5, ranked_size=5, seed=7)
    draws = a.sample_many(2000)
    assert draws == b.sample_many(2000)
    with_list = [r for _, r in draws if r is not None]
    assert 0.4 < len(with_list) / len(draws) < 0.6
    assert all(len(r) == 5 and len(set(r)) == 5 for r in with_list)
    counts = pd.Series([m for r in with_list for m in r]).value_counts()
    top_item = a.item_probabilities.idxmax()
    assert counts.idxmax() == top_item or counts[top_item] > counts.median() * 3
    user_counts = pd.Series([u for u, _ in draws]).value_counts()
    assert np.corrcoef(user_counts.reindex(a.user_probabilities.index, fill_value=0),
                       a.user_probabilities)[0, 1] > 0.7


def test_request_sampler_shifts() -> None:
    ratings = synthetic_ml100k(n_users=100, n_items=200, n_ratings=5000, seed=2).ratings
    base = RequestSampler(ratings, ranked_share=1.0, ranked_size=3, seed=0)
    boosted_items = list(range(1, 21))
    shifted = base.with_popularity_shift(boosted_items, factor=20.0)
    share_before = base.item_probabilities.loc[base.item_probabilities.index.isin(boosted_items)].sum()
    drawn = [m for _, r in shifted.sample_many(500) for m in r]
    assert np.isin(drawn, boosted_items).mean() > 2 * share_before
    assert base.item_probabilities.sum() == pytest.approx(1.0)  # the original is untouched

    heavy_users = [1, 2, 3]
    mix = base.with_user_mix_shift(heavy_users, factor=200.0)
    users = [u for u, _ in mix.sample_many(500)]
    assert np.isin(users, heavy_users).mean() > 0.5
    with pytest.raises(ValueError, match="factor"):
        base.with_user_mix_shift(heavy_users, factor=0)


def test_request_sampler_unknown_users_and_validation() -> None:
    ratings = synthetic_ml100k(n_users=50, n_items=80, n_ratings=1500, seed=3).ratings
    s = RequestSampler(ratings, ranked_share=0.0, unknown_user_share=1.0, seed=1)
    assert all(u > s.max_known_user and r is None for u, r in s.sample_many(50))
    with pytest.raises(ValueError, match="ranked_share"):
        RequestSampler(ratings, ranked_share=1.5)
    with pytest.raises(ValueError, match="empty"):
        RequestSampler(ratings.iloc[:0])
