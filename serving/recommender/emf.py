"""Explainable matrix factorisation (EMF) and the explainability matrix it is trained with.

The explainability score ``W[u, i]`` is the share of user ``u``'s ``knn`` nearest neighbours
(cosine similarity of rating vectors; users with no positive similarity are not neighbours)
who rated item ``i`` at or above ``positive_threshold``. EMF adds to the loss of biased
matrix factorisation (``mf.py``) the term ``expl_reg_term * W[u, i] * |p_u - q_i|^2`` over
every pair with ``W[u, i] > 0``, rated or not: an item that the neighbourhood can explain is
pulled towards the user in latent space, so it ranks higher, and the recommendation comes
with an explanation ("k similar users rated it 4 or more").

>>> R = np.array([[5, 4, 0, 0], [5, 5, 4, 0], [0, 0, 5, 5]], dtype=np.float32)
>>> nbrs = user_neighbours(R, knn=1)
>>> nbrs[:, 0].tolist()
[1, 0, 1]
>>> explainability_matrix(R, nbrs, positive_threshold=4).tolist()
[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]

Reference: B. Abdollahi and O. Nasraoui, "Explainable Matrix Factorization for Collaborative
Filtering", WWW 2016 Companion, pp. 5-6.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from serving.recommender.mf import FactorTables, MFModel, _positive_int


def rating_matrix(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """Dense users x items matrix of ratings, 0 where unrated.

    >>> rating_matrix(np.array([0, 1]), np.array([1, 0]), np.array([4.0, 2.0]), 2, 2).tolist()
    [[0.0, 4.0], [2.0, 0.0]]
    """
    out = np.zeros((n_users, n_items), dtype=np.float32)
    out[u, i] = r
    return out


def user_neighbours(matrix: np.ndarray, knn: int, *, chunk: int = 2048) -> np.ndarray:
    """Row indices of each user's ``knn`` most cosine-similar users, best first; -1 pads users
    that have fewer than ``knn`` others with positive similarity."""
    _positive_int("knn", knn)
    n_users = matrix.shape[0]
    if knn >= n_users:
        raise ValueError(f"knn must be smaller than the number of users ({n_users}), got {knn}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=np.float32), where=norms > 0)
    out = np.full((n_users, knn), -1, dtype=np.int32)
    for start in range(0, n_users, chunk):
        sim = unit[start:start + chunk] @ unit.T
        rows = np.arange(sim.shape[0])
        sim[rows, rows + start] = -np.inf  # a user is not its own neighbour
        top = np.argpartition(-sim, knn - 1, axis=1)[:, :knn]
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        top, top_sim = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sim, order, axis=1)
        out[start:start + chunk] = np.where(top_sim > 0, top, -1)
    return out


def explainability_matrix(
    matrix: np.ndarray, neighbours: np.ndarray, positive_threshold: float
) -> np.ndarray:
    """``W[u, i]``: share of ``u``'s neighbours who rated ``i`` at least ``positive_threshold``."""
    n_users, knn = neighbours.shape
    positive = (matrix >= positive_threshold).astype(np.float32)
    valid = neighbours >= 0
    rows = np.repeat(np.arange(n_users), valid.sum(axis=1))
    adjacency = np.zeros((n_users, n_users), dtype=np.float32)
    np.add.at(adjacency, (rows, neighbours[valid]), 1.0)
    return adjacency @ positive / knn


class EMFModel(MFModel):
    """Matrix factorisation with the explainability term; fitted attributes as in ``MFModel``
    plus ``rating_matrix_``, ``neighbours_`` and ``explainability_`` (dense, users x items).

    >>> EMFModel(knn=0)
    Traceback (most recent call last):
    ...
    ValueError: knn must be an integer >= 1, got 0
    """

    name = "emf"

    def __init__(
        self,
        learning_rate: float = 0.01,
        reg_term: float = 0.01,
        expl_reg_term: float = 0.05,
        latent_dim: int = 32,
        epochs: int = 20,
        positive_threshold: float = 4,
        knn: int = 10,
        batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__(learning_rate=learning_rate, reg_term=reg_term, latent_dim=latent_dim,
                         epochs=epochs, batch_size=batch_size, seed=seed)
        if not (isinstance(expl_reg_term, int | float) and math.isfinite(expl_reg_term)
                and expl_reg_term >= 0):
            raise ValueError(f"expl_reg_term must be a finite number >= 0, got {expl_reg_term!r}")
        if not (isinstance(positive_threshold, int | float) and 1 <= positive_threshold <= 5):
            raise ValueError(f"positive_threshold must be a rating in [1, 5], got {positive_threshold!r}")
        _positive_int("knn", knn)
        self.expl_reg_term = float(expl_reg_term)
        self.positive_threshold = float(positive_threshold)
        self.knn = int(knn)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "expl_reg_term": self.expl_reg_term,
                "positive_threshold": self.positive_threshold, "knn": self.knn}

    def _prepare(self, u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int) -> None:
        self.rating_matrix_ = rating_matrix(u, i, r, n_users, n_items)
        self.neighbours_ = user_neighbours(self.rating_matrix_, self.knn)
        self.explainability_ = explainability_matrix(self.rating_matrix_, self.neighbours_,
                                                     self.positive_threshold)
        pu, pi = np.nonzero(self.explainability_)
        self._pairs = (torch.from_numpy(pu.astype(np.int64)), torch.from_numpy(pi.astype(np.int64)),
                       torch.from_numpy(self.explainability_[pu, pi]))

    def _extra_batches(self, n_steps: int, gen: torch.Generator) -> Iterator[Any] | None:
        if self.expl_reg_term == 0 or self._pairs[0].numel() == 0:
            return None
        pu, pi, w = self._pairs
        perm = torch.randperm(pu.numel(), generator=gen)
        size = math.ceil(pu.numel() / n_steps)
        return ((pu[idx], pi[idx], w[idx]) for idx in (perm[s * size:(s + 1) * size] for s in range(n_steps)))

    def _extra_loss(self, module: FactorTables, batch: Any) -> torch.Tensor:
        pu, pi, w = batch
        gap = (module.user_factors(pu) - module.item_factors(pi)).pow(2).sum(-1)
        return self.expl_reg_term * (w * gap).sum()
