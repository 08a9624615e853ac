"""MF and EMF models, explanations, the servable recommender, evaluation and training commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from producers.movielens import GENRES, MovieLens, synthetic_ml100k
from serving.recommender import evaluate, train
from serving.recommender.emf import EMFModel, explainability_matrix, rating_matrix, user_neighbours
from serving.recommender.explainer import NeighbourExplainer
from serving.recommender.mf import MFModel
from serving.recommender.recommend import ARTEFACT_FILE, CARD_FILE, RecommenderModel

ARTEFACTS = Path(__file__).resolve().parents[1] / "serving" / "models" / "recommender"


@pytest.fixture(scope="module")
def small() -> MovieLens:
    return synthetic_ml100k(n_users=200, n_items=300, n_ratings=12_000, seed=5)


@pytest.fixture(scope="module")
def shipped() -> RecommenderModel:
    return RecommenderModel.load(ARTEFACTS)


# --- models ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"learning_rate": 0}, {"learning_rate": float("nan")}, {"reg_term": -1}, {"expl_reg_term": -0.1},
    {"latent_dim": 0}, {"latent_dim": 2.5}, {"epochs": 0}, {"positive_threshold": 6},
    {"positive_threshold": 0}, {"knn": 0}, {"knn": True}, {"batch_size": 0},
])
def test_emf_rejects_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EMFModel(**kwargs)


def test_knn_must_leave_neighbours(small: MovieLens) -> None:
    with pytest.raises(ValueError, match="knn must be smaller"):
        EMFModel(knn=200, epochs=1).fit(small.ratings)


def test_mf_learns_and_is_deterministic(small: MovieLens) -> None:
    train_part, test_part = evaluate.split_ratings(small.ratings, seed=0)
    a = MFModel(latent_dim=8, epochs=10, seed=3).fit(train_part)
    b = MFModel(latent_dim=8, epochs=10, seed=3).fit(train_part)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert a.module_.item_factors.weight.shape == (a.item_ids_.size, 8)
    rmse = np.sqrt(np.mean((a.predict(test_part.userId, test_part.itemId) - test_part.rating) ** 2))
    baseline = np.sqrt(np.mean((train_part.rating.mean() - test_part.rating) ** 2))
    assert rmse < 0.85 * baseline
    assert a.history_[-1] < a.history_[0]


def test_neighbours_skip_dissimilar_users() -> None:
    R = np.array([[5, 0, 0], [4, 0, 0], [0, 0, 3]], dtype=np.float32)
    nbrs = user_neighbours(R, knn=2)
    assert nbrs.tolist() == [[1, -1], [0, -1], [-1, -1]]
    W = explainability_matrix(R, nbrs, positive_threshold=4)
    assert W.tolist() == [[0.5, 0, 0], [0.5, 0, 0], [0, 0, 0]]


def test_explainability_matrix_matches_definition(small: MovieLens) -> None:
    r = small.ratings
    users, items = np.unique(r.userId), np.unique(r.itemId)
    R = rating_matrix(np.searchsorted(users, r.userId), np.searchsorted(items, r.itemId),
                      r.rating.to_numpy(np.float32), users.size, items.size)
    nbrs = user_neighbours(R, knn=7)
    W = explainability_matrix(R, nbrs, positive_threshold=4)
    unit = R / np.linalg.norm(R, axis=1, keepdims=True)
    for u in (0, 17, 123):
        sim = unit @ unit[u]
        sim[u] = -1
        assert set(nbrs[u]) == set(np.argsort(-sim)[:7])
        for i in (0, 5, 250):
            assert W[u, i] == pytest.approx(np.mean(R[nbrs[u], i] >= 4))


def test_emf_beats_mf_on_explainability(small: MovieLens) -> None:
    train_part, test_part = evaluate.split_ratings(small.ratings, seed=0)
    table = evaluate.evaluate_models(
        {"MF": MFModel(epochs=15, seed=0), "EMF": EMFModel(epochs=15, seed=0)}, train_part, test_part)
    assert table.loc["EMF", "MEP@10"] > table.loc["MF", "MEP@10"]
    assert table.loc["EMF", "precision@10"] >= 0.9 * table.loc["MF", "precision@10"]
    assert 0 < table.loc["EMF", "MER@10"] < 1


# --- metrics and split ------------------------------------------------------------------


def test_ranking_metrics_by_hand() -> None:
    top = np.array([[0, 1, 2]])
    relevant = np.array([[False, True, False, True]])
    assert evaluate.precision_at_k(top, relevant) == pytest.approx(1 / 3)
    ideal = 1 + 1 / np.log2(3)
    assert evaluate.ndcg_at_k(top, relevant) == pytest.approx((1 / np.log2(3)) / ideal)
    W = np.array([[0.0, 0.3, 0.0, 0.1]])
    unrated = np.array([[True, True, True, True]])
    assert evaluate.mean_explainability_precision(top, W) == pytest.approx(1 / 3)
    assert evaluate.mean_explainability_recall(top, W, unrated) == pytest.approx(1 / 2)


def test_split_keeps_every_user_in_training(small: MovieLens) -> None:
    train_part, test_part = evaluate.split_ratings(small.ratings, test_fraction=0.2, seed=1)
    assert len(train_part) + len(test_part) == len(small.ratings)
    assert set(test_part.userId) <= set(train_part.userId)
    assert 0.17 < len(test_part) / len(small.ratings) < 0.23
    with pytest.raises(ValueError):
        evaluate.split_ratings(small.ratings, test_fraction=1.0)


# --- explainer ----------------------------------------------------------------------------


def test_explainer_counts_neighbour_ratings() -> None:
    R = np.array([[0, 0, 0], [5, 3, 0], [5, 4, 0], [1, 0, 0]], dtype=np.int8)
    ex = NeighbourExplainer(np.array([[1, 2, 3], [0, -1, -1], [1, -1, -1], [-1, -1, -1]]), R)
    assert ex.explain(0, [0, 1, 2]) == [{1: 1, 5: 2}, {3: 1, 4: 1}, {}]
    assert ex.explain(0, [-1]) == [{}]
    assert ex.explain(3, [0]) == [{}]
    assert ex.explain(0, []) == []
    with pytest.raises(ValueError):
        NeighbourExplainer(np.zeros((2, 1), dtype=int), R)


def test_explaining_a_request_is_fast(shipped: RecommenderModel) -> None:
    ones = np.ones((shipped.user_ids.size, shipped.item_ids.size), np.int8)
    ex = NeighbourExplainer(shipped.neighbours, ones)
    items = np.arange(10)
    ex.explain(0, items)
    runs = []
    for u in range(200):
        t = time.perf_counter()
        ex.explain(u, items)
        runs.append(time.perf_counter() - t)
    assert np.median(runs) < 1e-3


# --- the servable model ---------------------------------------------------------------------


def test_shipped_artefacts_are_small_and_described(shipped: RecommenderModel) -> None:
    size = sum(p.stat().st_size for p in ARTEFACTS.iterdir() if p.is_file())
    assert size < 10 * 1024 * 1024
    card = json.loads((ARTEFACTS / CARD_FILE).read_text())
    assert card["model_version"] == shipped.model_version and shipped.model_version.startswith("emf-")
    assert card["reproduce"] == "python -m serving.recommender.train --out serving/models/recommender"
    assert card["params"]["knn"] == shipped.neighbours.shape[1]


def test_recommend_known_user(shipped: RecommenderModel) -> None:
    user = int(shipped.user_ids[0])
    recs = shipped.recommend(user, k=10)
    assert [r["rank"] for r in recs] == list(range(1, 11))
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    rated = set(shipped.item_ids[shipped.rating_rows[shipped.rating_rows[:, 0] == 0, 1]].tolist())
    assert not rated & {r["item_id"] for r in recs}
    # Explanations are exactly the neighbours' ratings.
    ratings = {(u, i): r for u, i, r in shipped.rating_rows.tolist()}
    nbrs = [n for n in shipped.neighbours[0].tolist() if n >= 0]
    for rec in recs:
        item_row = int(np.searchsorted(shipped.item_ids, rec["item_id"]))
        given = [ratings[(n, item_row)] for n in nbrs if (n, item_row) in ratings]
        assert rec["explanation"] == {s: given.count(s) for s in sorted(set(given))}
        assert all(isinstance(k, int) and 1 <= k <= 5 for k in rec["explanation"])
    assert any(rec["explanation"] for rec in recs)


def test_recommend_reranks_candidates(shipped: RecommenderModel) -> None:
    user = int(shipped.user_ids[3])
    candidates = [int(i) for i in shipped.item_ids[[50, 10, 400, 10, 7]]] + [999_999]
    recs = shipped.recommend(user, k=3, ranked_movies=candidates)
    assert len(recs) == 3 and {r["item_id"] for r in recs} <= set(candidates)
    all_recs = shipped.recommend(user, k=10, ranked_movies=candidates)
    assert len(all_recs) == 5  # duplicates dropped, unknown id kept
    assert [r["item_id"] for r in all_recs[:3]] == [r["item_id"] for r in recs]
    unknown = next(r for r in all_recs if r["item_id"] == 999_999)
    assert unknown["explanation"] == {}
    assert unknown["score"] == pytest.approx(shipped.global_bias + float(shipped.user_bias[3]), rel=1e-5)
    assert shipped.recommend(user, k=3, ranked_movies=[]) == []


def test_recommend_unknown_user_falls_back_to_popularity(shipped: RecommenderModel) -> None:
    stranger = int(shipped.user_ids.max()) + 1
    assert not shipped.is_known_user(stranger) and shipped.is_known_user(int(shipped.user_ids[0]))
    recs = shipped.recommend(stranger, k=5)
    most_popular = shipped.item_ids[np.argsort(-shipped.item_popularity, kind="stable")[:5]]
    assert [r["item_id"] for r in recs] == most_popular.tolist()
    assert all(r["explanation"] == {} and 0 < r["score"] <= 1 for r in recs)
    reranked = shipped.recommend(stranger, k=2, ranked_movies=[int(most_popular[4]), int(most_popular[0])])
    assert [r["item_id"] for r in reranked] == [int(most_popular[0]), int(most_popular[4])]
    assert int(most_popular[0]) in shipped.known_items
    with pytest.raises(ValueError, match="k must be"):
        shipped.recommend(stranger, k=0)


def test_recommend_is_fast(shipped: RecommenderModel) -> None:
    users = shipped.user_ids[:100].tolist()
    shipped.recommend(users[0], k=10)
    runs = []
    for u in users:
        t = time.perf_counter()
        shipped.recommend(u, k=10)
        runs.append(time.perf_counter() - t)
    assert np.median(runs) < 5e-3


def test_save_load_round_trip(small: MovieLens, tmp_path: Path) -> None:
    emf = EMFModel(latent_dim=4, epochs=2, knn=5).fit(small.ratings)
    model = RecommenderModel.from_fitted(emf, small.ratings, model_version="emf-test-1", card={"note": "x"})
    model.save(tmp_path)
    loaded = RecommenderModel.load(tmp_path)
    assert loaded.model_version == "emf-test-1" and loaded.card["note"] == "x"
    for user in (1, 50, 10_000):
        got, want = loaded.recommend(user, k=5), model.recommend(user, k=5)
        assert [(r["item_id"], r["explanation"]) for r in got] == \
            [(r["item_id"], r["explanation"]) for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], rel=1e-6)
    with pytest.raises(FileNotFoundError, match="serving.recommender.train"):
        RecommenderModel.load(tmp_path / "missing")


# --- commands ---------------------------------------------------------------------------


def _write_ml100k(data: MovieLens, root: Path) -> None:
    data.ratings.to_csv(root / "u.data", sep="\t", header=False, index=False)
    genre_flags = [["1" if g in row.split("|") else "0" for g in GENRES] for row in data.items.genres]
    lines = ["|".join([str(i), t, d, "", "", *f])
             for i, t, d, f in zip(data.items.itemId, data.items.title, data.items.release_date, genre_flags,
                                   strict=True)]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def test_evaluate_and_train_commands_on_ml100k_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = synthetic_ml100k(n_users=60, n_items=90, n_ratings=2400, seed=9)
    _write_ml100k(data, tmp_path)
    assert evaluate.main(["--ml100k", str(tmp_path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "| MF |" in out and "| EMF |" in out and "MEP@10" in out
    out_dir = tmp_path / "artefacts"
    assert train.main(["--ml100k", str(tmp_path), "--out", str(out_dir), "--epochs", "2"]) == 0
    assert (out_dir / ARTEFACT_FILE).is_file()
    model = RecommenderModel.load(out_dir)
    assert model.model_version.startswith("emf-ml100k-")
    assert set(model.card["held_out_metrics"]) >= {"RMSE", "precision@10", "nDCG@10", "MEP@10", "MER@10"}
    assert len(model.recommend(int(data.ratings.userId.iloc[0]), k=5)) == 5
