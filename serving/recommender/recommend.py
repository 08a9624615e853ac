"""The servable recommender: top-N and re-ranking with explanations, from one artefact directory.

:class:`RecommenderModel` holds plain numpy arrays (factors, biases, neighbour lists, the
training ratings and item popularity), so loading needs no torch and a request costs one
dot product over the item table:

* a known user gets the ``k`` unrated items with the highest predicted rating
  ``mu + b_u + b_i + p_u . q_i`` as ``score``;
* with ``ranked_movies`` the user's candidate list is re-ranked instead (duplicates dropped;
  ids the model does not know get the user's baseline ``mu + b_u``);
* an unknown user gets the most popular items (or the candidates ordered by popularity),
  with ``score`` = the share of training users who rated the item, and empty explanations.

Every recommendation carries ``explanation`` ``{rating: similar users who gave it}`` (see
``explainer.py``).

>>> import pandas as pd
>>> from serving.recommender.emf import EMFModel
>>> ratings = pd.DataFrame({"userId": [1, 1, 2, 2, 2, 3, 3], "itemId": [1, 2, 1, 2, 3, 2, 3],
...                         "rating": [5, 4, 5, 4, 5, 1, 2]})
>>> emf = EMFModel(latent_dim=2, epochs=5, knn=1).fit(ratings)
>>> model = RecommenderModel.from_fitted(emf, ratings, model_version="doc")
>>> [(r["item_id"], r["rank"], r["explanation"]) for r in model.recommend(1, k=3)]
[(3, 1, {5: 1})]
>>> [r["item_id"] for r in model.recommend(99, k=2)], model.is_known_user(99)
([2, 1], False)

Reference: Y. Koren, R. Bell and C. Volinsky, "Matrix Factorization Techniques for
Recommender Systems", IEEE Computer 42(8), 2009.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from serving.recommender.explainer import NeighbourExplainer

ARTEFACT_FILE = "recommender.npz"
CARD_FILE = "model_card.json"
MODEL_NAME = "movie-recommender"


class Recommendation(TypedDict):
    item_id: int
    score: float
    rank: int
    explanation: dict[int, int]


def _rows(ids: np.ndarray, universe: np.ndarray) -> np.ndarray:
    # Same as mf.rows_of, repeated here so that serving does not import torch.
    pos = np.clip(np.searchsorted(universe, ids), 0, max(universe.size - 1, 0))
    return np.where(universe[pos] == ids, pos, -1) if universe.size else np.full(ids.shape, -1)


def _dot_rows(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    # einsum's own loop rather than BLAS: on busy shared cores OpenBLAS wakes its worker
    # threads for every request, which measured ~5 ms a call instead of ~0.03 ms.
    return np.einsum("ij,j->i", matrix, vector)


@dataclass(eq=False)
class RecommenderModel:
    """Arrays of a fitted (E)MF model; build with :meth:`from_fitted` or :meth:`load`."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    global_bias: float
    neighbours: np.ndarray
    rating_rows: np.ndarray  # (n, 3) int32: user row, item row, rating
    item_popularity: np.ndarray  # number of training ratings per item row
    model_version: str
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_users, n_items = self.user_ids.size, self.item_ids.size
        if self.user_factors.shape[0] != n_users or self.item_factors.shape[0] != n_items:
            raise ValueError("factor tables do not match the id universes")
        if self.neighbours.shape[0] != n_users or self.item_popularity.shape != (n_items,):
            raise ValueError("neighbours or item_popularity do not match the id universes")
        if not self.model_version:
            raise ValueError("model_version must be a non-empty string")
        dense = np.zeros((n_users, n_items), dtype=np.int8)
        dense[self.rating_rows[:, 0], self.rating_rows[:, 1]] = self.rating_rows[:, 2]
        self._rated = dense > 0
        self._explainer = NeighbourExplainer(self.neighbours, dense)
        self._popular_order = np.argsort(-self.item_popularity, kind="stable")
        self._popularity_share = self.item_popularity / max(n_users, 1)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_fitted(cls, model: Any, ratings: pd.DataFrame, *, model_version: str,
                    card: Mapping[str, Any] | None = None, knn: int = 10) -> RecommenderModel:
        """From a fitted ``MFModel``/``EMFModel`` and the ratings it was fitted on.

        EMF's own neighbour lists are reused; for plain MF they are computed with ``knn``.
        """
        from serving.recommender.emf import rating_matrix, user_neighbours

        u = _rows(ratings["userId"].to_numpy(np.int64), model.user_ids_)
        i = _rows(ratings["itemId"].to_numpy(np.int64), model.item_ids_)
        r = np.rint(ratings["rating"].to_numpy(np.float64)).astype(np.int32)
        if (u < 0).any() or (i < 0).any():
            raise ValueError("ratings hold ids the model was not fitted on")
        neighbours = getattr(model, "neighbours_", None)
        if neighbours is None:
            matrix = rating_matrix(u, i, r.astype(np.float32), model.user_ids_.size, model.item_ids_.size)
            neighbours = user_neighbours(matrix, knn)
        return cls(
            user_ids=model.user_ids_.astype(np.int64), item_ids=model.item_ids_.astype(np.int64),
            user_factors=model.user_factors_.astype(np.float32),
            item_factors=model.item_factors_.astype(np.float32),
            user_bias=model.user_bias_.astype(np.float32), item_bias=model.item_bias_.astype(np.float32),
            global_bias=float(model.global_bias_), neighbours=np.asarray(neighbours, dtype=np.int32),
            rating_rows=np.stack([u, i, r], axis=1).astype(np.int32),
            item_popularity=np.bincount(i, minlength=model.item_ids_.size).astype(np.int32),
            model_version=model_version, card=dict(card or {}),
        )

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``recommender.npz`` and ``model_card.json`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        npz = out / ARTEFACT_FILE
        np.savez_compressed(
            npz, user_ids=self.user_ids.astype(np.int32), item_ids=self.item_ids.astype(np.int32),
            user_factors=self.user_factors, item_factors=self.item_factors, user_bias=self.user_bias,
            item_bias=self.item_bias, global_bias=np.float32(self.global_bias), neighbours=self.neighbours,
            rating_rows=self.rating_rows.astype(np.int16 if self.rating_rows.max() < 2**15 else np.int32),
            item_popularity=self.item_popularity, model_version=np.array(self.model_version),
        )
        card_path = out / CARD_FILE
        card = {"model_name": MODEL_NAME, **self.card, "model_version": self.model_version}
        card_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
        return [npz, card_path]

    @classmethod
    def load(cls, directory: str | Path) -> RecommenderModel:
        """Load what :meth:`save` wrote (the card is optional)."""
        root = Path(directory)
        npz = root / ARTEFACT_FILE
        if not npz.is_file():
            raise FileNotFoundError(f"{npz} not found: run python -m serving.recommender.train --out {root}")
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        card_path = root / CARD_FILE
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        return cls(
            user_ids=arrays["user_ids"].astype(np.int64), item_ids=arrays["item_ids"].astype(np.int64),
            user_factors=arrays["user_factors"], item_factors=arrays["item_factors"],
            user_bias=arrays["user_bias"], item_bias=arrays["item_bias"],
            global_bias=float(arrays["global_bias"]), neighbours=arrays["neighbours"].astype(np.int32),
            rating_rows=arrays["rating_rows"].astype(np.int32), item_popularity=arrays["item_popularity"],
            model_version=str(arrays["model_version"]), card=card,
        )

    # --- queries ------------------------------------------------------------------------

    @cached_property
    def known_items(self) -> frozenset[int]:
        """Ids of the items the model can score."""
        return frozenset(self.item_ids.tolist())

    def is_known_user(self, user_id: int) -> bool:
        return bool(_rows(np.array([user_id], dtype=np.int64), self.user_ids)[0] >= 0)

    def recommend(
        self, user_id: int, k: int = 10, ranked_movies: Iterable[int] | None = None
    ) -> list[Recommendation]:
        """Top-``k`` recommendations for ``user_id``, best first; see the module docstring."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        user_row = int(_rows(np.array([user_id], dtype=np.int64), self.user_ids)[0])
        if ranked_movies is not None:
            candidates = np.asarray(list(dict.fromkeys(int(m) for m in ranked_movies)), dtype=np.int64)
            cand_rows = _rows(candidates, self.item_ids)
            known = cand_rows >= 0
            if user_row >= 0:
                scores = np.full(candidates.size, self.global_bias + float(self.user_bias[user_row]))
                scores[known] += self.item_bias[cand_rows[known]] + _dot_rows(
                    self.item_factors[cand_rows[known]], self.user_factors[user_row])
            else:
                scores = np.where(known, self._popularity_share[np.maximum(cand_rows, 0)], 0.0)
            order = np.argsort(-scores, kind="stable")[:k]
            item_ids, item_rows, top_scores = candidates[order], cand_rows[order], scores[order]
        elif user_row >= 0:
            scores = (self.global_bias + float(self.user_bias[user_row]) + self.item_bias
                      + _dot_rows(self.item_factors, self.user_factors[user_row]))
            scores[self._rated[user_row]] = -np.inf
            n = min(k, int(np.isfinite(scores).sum()))
            if n == 0:
                return []
            top = np.argpartition(-scores, n - 1)[:n]
            item_rows = top[np.argsort(-scores[top], kind="stable")]
            item_ids, top_scores = self.item_ids[item_rows], scores[item_rows]
        else:
            item_rows = self._popular_order[:k]
            item_ids, top_scores = self.item_ids[item_rows], self._popularity_share[item_rows]
        explanations = (self._explainer.explain(user_row, item_rows) if user_row >= 0
                        else [{} for _ in range(len(item_rows))])
        return [
            Recommendation(item_id=int(i), score=float(s), rank=n + 1, explanation=e)
            for n, (i, s, e) in enumerate(zip(item_ids, top_scores, explanations, strict=True))
        ]
