"""Offline evaluation of MF and EMF on a held-out split: accuracy, ranking and explainability.

For each user the top-``k`` list ranks every item the user did not rate in the training part.

* ``RMSE``: of the predicted ratings of the held-out ratings;
* ``precision@k`` and ``nDCG@k`` (binary gains): relevant items are the user's held-out
  items rated at least ``relevant_threshold``; users without any are skipped;
* ``MEP@k`` (mean explainability precision): the share of the top-``k`` with ``W[u, i] > 0``;
* ``MER@k`` (mean explainability recall): the share of the user's explainable unrated items
  (``W[u, i] > 0``) that made the top-``k``.

``W`` is one explainability matrix, computed from the training part, for every model, so
the explainability columns compare the models on the same yardstick.

Run ``python -m serving.recommender.evaluate`` (synthetic data) or
``python -m serving.recommender.evaluate --ml100k DIR`` (the real MovieLens 100k files).

>>> top = np.array([[2, 0], [1, 3]])
>>> relevant = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
>>> round(precision_at_k(top, relevant), 3), round(ndcg_at_k(top, relevant), 3)
(1.0, 1.0)
>>> W = np.array([[0.1, 0, 0, 0], [0, 0.2, 0.4, 0.3]])
>>> unrated = np.ones((2, 4), dtype=bool)
>>> mep = mean_explainability_precision(top, W)  # user 0: 1 of 2 explainable, user 1: 2 of 2
>>> mer = mean_explainability_recall(top, W, unrated)  # user 0: 1 of its 1, user 1: 2 of its 3
>>> round(mep, 3), round(mer, 3)
(0.75, 0.833)

References: B. Abdollahi and O. Nasraoui, "Using Explainability for Constrained Matrix
Factorization", RecSys 2017 (MEP, MER); K. Jarvelin and J. Kekalainen, "Cumulated Gain-Based
Evaluation of IR Techniques", ACM TOIS 20(4), 2002 (nDCG).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from producers.movielens import load_ml100k, synthetic_ml100k
from serving.recommender.emf import EMFModel, explainability_matrix, rating_matrix, user_neighbours
from serving.recommender.mf import MFModel, rows_of


def split_ratings(
    ratings: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``test_fraction`` of each user's ratings at random (each user keeps one to train on)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    key = pd.Series(rng.random(len(ratings)), index=ratings.index)
    rank = key.groupby(ratings["userId"]).rank(method="first", pct=True)
    size = ratings.groupby("userId")["userId"].transform("size")
    test = (rank <= test_fraction) & (size > 1) & (rank < 1)
    return ratings[~test].reset_index(drop=True), ratings[test].reset_index(drop=True)


def top_k_unrated(model: MFModel, train_matrix: np.ndarray, k: int) -> np.ndarray:
    """Row indices of each user's ``k`` best-scored items among those not rated in training."""
    scores = model.score_matrix()
    scores[train_matrix > 0] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def precision_at_k(top: np.ndarray, relevant: np.ndarray) -> float:
    hits = np.take_along_axis(relevant, top, axis=1)
    users = relevant.any(axis=1)
    return float(hits[users].mean()) if users.any() else float("nan")


def ndcg_at_k(top: np.ndarray, relevant: np.ndarray) -> float:
    k = top.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    hits = np.take_along_axis(relevant, top, axis=1)
    dcg = hits @ discount
    n_rel = np.minimum(relevant.sum(axis=1), k)
    ideal = np.cumsum(discount)[np.maximum(n_rel - 1, 0)]
    users = n_rel > 0
    return float((dcg[users] / ideal[users]).mean()) if users.any() else float("nan")


def mean_explainability_precision(top: np.ndarray, explainability: np.ndarray) -> float:
    return float((np.take_along_axis(explainability, top, axis=1) > 0).mean())


def mean_explainability_recall(top: np.ndarray, explainability: np.ndarray, unrated: np.ndarray) -> float:
    explainable = (explainability > 0) & unrated
    hits = (np.take_along_axis(explainable, top, axis=1)).sum(axis=1)
    n = explainable.sum(axis=1)
    users = n > 0
    return float((hits[users] / n[users]).mean()) if users.any() else float("nan")


def evaluate_models(
    models: dict[str, MFModel],
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    k: int = 10,
    knn: int = 10,
    positive_threshold: float = 4,
    relevant_threshold: float = 4,
    progress: bool = False,
) -> pd.DataFrame:
    """Fit each model on ``train`` and score it on ``test``: one row of metrics per model."""
    user_ids = np.unique(train["userId"].to_numpy())
    item_ids = np.unique(train["itemId"].to_numpy())
    if not 1 <= k < item_ids.size:
        raise ValueError(f"k must be in [1, {item_ids.size - 1}] for {item_ids.size} items, got {k}")
    shape = (user_ids.size, item_ids.size)
    train_matrix = rating_matrix(rows_of(train["userId"], user_ids), rows_of(train["itemId"], item_ids),
                                 train["rating"].to_numpy(np.float32), *shape)
    W = explainability_matrix(train_matrix, user_neighbours(train_matrix, knn), positive_threshold)
    tu, ti = rows_of(test["userId"], user_ids), rows_of(test["itemId"], item_ids)
    known = (tu >= 0) & (ti >= 0)
    relevant = np.zeros(shape, dtype=bool)
    liked = known & (test["rating"].to_numpy() >= relevant_threshold)
    relevant[tu[liked], ti[liked]] = True
    unrated = train_matrix == 0

    rows = []
    for name, model in models.items():
        started, cpu_started = time.perf_counter(), time.process_time()
        model.fit(train, progress=progress)
        fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        pred = model.predict(test["userId"], test["itemId"])
        top = top_k_unrated(model, train_matrix, k)
        rows.append({
            "model": name,
            "RMSE": float(np.sqrt(np.mean((np.clip(pred, 1, 5) - test["rating"].to_numpy()) ** 2))),
            f"precision@{k}": precision_at_k(top, relevant),
            f"nDCG@{k}": ndcg_at_k(top, relevant),
            f"MEP@{k}": mean_explainability_precision(top, W),
            f"MER@{k}": mean_explainability_recall(top, W, unrated),
            "fit_s": fit_s,
            "fit_cpu_s": fit_cpu_s,
        })
    return pd.DataFrame(rows).set_index("model")


def default_models(seed: int = 0, epochs: int = 20) -> dict[str, MFModel]:
    """The two models the project compares, with the parameters it ships."""
    return {
        "MF": MFModel(epochs=epochs, seed=seed),
        "EMF": EMFModel(epochs=epochs, seed=seed),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml100k", metavar="DIR", help="directory with MovieLens 100k u.data and u.item "
                                                        "(default: the synthetic data set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    data = load_ml100k(args.ml100k) if args.ml100k else synthetic_ml100k(seed=args.seed)
    train, test = split_ratings(data.ratings, args.test_fraction, seed=args.seed)
    table = evaluate_models(default_models(args.seed, args.epochs), train, test, k=args.k, progress=True)
    source = (f"MovieLens 100k ({args.ml100k})" if args.ml100k
              else f"synthetic ML-100k look-alike (seed {args.seed})")
    print(f"\n{source}: {len(train)} train / {len(test)} test ratings\n")
    print(markdown_table(table))
    return 0


def markdown_table(table: pd.DataFrame, digits: int = 4) -> str:
    """``table`` (index = first column) as a Markdown table with rounded numbers."""
    header = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
