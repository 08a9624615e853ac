"""Neighbourhood explanations of recommendations: how the user's most similar users rated an item.

The explanation of item ``i`` for user ``u`` is ``{rating: number of u's neighbours who gave
it}``, for ratings 1..5, e.g. ``{4: 2, 5: 6}`` reads "8 similar users rated it, 6 of them 5
stars". It is empty when no neighbour rated the item. The neighbours are the ones EMF was
trained with (``emf.user_neighbours``), so a non-empty explanation with ratings at or above
the positive threshold is exactly a non-zero explainability score.

Only the neighbour lists and a dense ``int8`` rating matrix are kept, so explaining a
request is one small fancy-index and a count: a few microseconds for ``k = 10`` items.

>>> R = np.array([[5, 0, 0], [4, 5, 0], [5, 2, 0]], dtype=np.int8)
>>> ex = NeighbourExplainer(np.array([[1, 2], [0, 2], [1, -1]]), R)
>>> ex.explain(0, [0, 1, 2])
[{4: 1, 5: 1}, {2: 1, 5: 1}, {}]

Reference: B. Abdollahi and O. Nasraoui, "Explainable Matrix Factorization for Collaborative
Filtering", WWW 2016 Companion (neighbourhood-style explanations).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_STARS = np.arange(1, 6, dtype=np.int8)


class NeighbourExplainer:
    """Explanations from ``neighbours`` (users x k row indices, -1 = none) and ratings (0 = unrated)."""

    def __init__(self, neighbours: np.ndarray, ratings: np.ndarray) -> None:
        if neighbours.ndim != 2 or ratings.ndim != 2 or neighbours.shape[0] != ratings.shape[0]:
            raise ValueError(
                f"neighbours (users x k) and ratings (users x items) must agree on users, "
                f"got {neighbours.shape} and {ratings.shape}"
            )
        if neighbours.size and neighbours.max() >= ratings.shape[0]:
            raise ValueError("neighbours refer to user rows outside the rating matrix")
        self._ratings = np.clip(np.rint(ratings), 0, 5).astype(np.int8)
        # Ragged lists without the -1 padding, resolved once instead of per request.
        self._neighbours = [row[row >= 0].astype(np.intp) for row in neighbours]

    @property
    def n_users(self) -> int:
        return self._ratings.shape[0]

    def explain(self, user_row: int, item_rows: Sequence[int] | np.ndarray) -> list[dict[int, int]]:
        """One explanation per item row; item rows < 0 (items the model does not know) get ``{}``."""
        items = np.asarray(item_rows, dtype=np.intp)
        nbrs = self._neighbours[user_row]
        if items.size == 0:
            return []
        if nbrs.size == 0:
            return [{} for _ in range(items.size)]
        block = self._ratings[nbrs[:, None], np.maximum(items, 0)[None, :]]  # k x n
        counts = (block[:, :, None] == _STARS).sum(axis=0)  # n x 5
        counts[items < 0] = 0
        return [{int(s): int(c) for s, c in zip(_STARS, row, strict=True) if c} for row in counts]
