"""Biased matrix factorisation of explicit ratings, trained with PyTorch on the CPU.

The predicted rating of item ``i`` by user ``u`` is ``mu + b_u + b_i + p_u . q_i``. Training
minimises, over mini-batches of observed ratings,
``sum (r_ui - r_hat_ui)^2 + reg_term * (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)`` with Adam.
Subclasses add a term through :meth:`MFModel._extra_loss` (see ``emf.py``).

Users and items are addressed by row index into the factor tables; ``user_ids_`` and
``item_ids_`` map rows back to ids. Passing the same id universes, ``seed`` and
``init_state`` to two fits makes them start from identical tensors and visit the
mini-batches in the same order, which the latent-drift comparison relies on.

>>> import pandas as pd
>>> ratings = pd.DataFrame({"userId": [1, 1, 2, 2, 3], "itemId": [1, 2, 1, 3, 2],
...                         "rating": [5, 1, 5, 2, 1]})
>>> mf = MFModel(latent_dim=4, epochs=200, batch_size=8, reg_term=0.0).fit(ratings)
>>> [round(float(x)) for x in mf.predict([1, 2], [1, 3])]
[5, 2]

Reference: Y. Koren, R. Bell and C. Volinsky, "Matrix Factorization Techniques for
Recommender Systems", IEEE Computer 42(8), 2009.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

# One intra-op thread: the project shares two cores with Kafka and the services, and with two
# OpenMP threads the small steps of this model ran 10x slower (spinning workers contend with
# the other processes); with one they take ~3 ms per 1024-rating batch.
TORCH_THREADS = 1


class FactorTables(torch.nn.Module):
    """User and item factors and biases plus a global bias: the trainable part of the model."""

    def __init__(self, n_users: int, n_items: int, latent_dim: int) -> None:
        super().__init__()
        self.user_factors = torch.nn.Embedding(n_users, latent_dim)
        self.item_factors = torch.nn.Embedding(n_items, latent_dim)
        self.user_bias = torch.nn.Embedding(n_users, 1)
        self.item_bias = torch.nn.Embedding(n_items, 1)
        self.global_bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors(users) * self.item_factors(items)).sum(-1)
        return self.global_bias + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + dot


def rows_of(ids: Iterable[int] | np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Row index of each id in the sorted array ``universe``; -1 where the id is not in it.

    >>> rows_of([5, 7, 2], np.array([2, 5, 9])).tolist()
    [1, -1, 0]
    """
    ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    if universe.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(universe, ids), 0, universe.size - 1)
    return np.where(universe[pos] == ids, pos, -1).astype(np.int64)


def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class MFModel:
    """Biased matrix factorisation; fitted attributes end in ``_`` (numpy arrays)."""

    name = "mf"

    def __init__(
        self,
        learning_rate: float = 0.01,
        reg_term: float = 0.05,
        latent_dim: int = 32,
        epochs: int = 20,
        batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        if not (isinstance(learning_rate, int | float) and math.isfinite(learning_rate)
                and learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        if not (isinstance(reg_term, int | float) and math.isfinite(reg_term) and reg_term >= 0):
            raise ValueError(f"reg_term must be a finite number >= 0, got {reg_term!r}")
        _positive_int("latent_dim", latent_dim)
        _positive_int("epochs", epochs)
        _positive_int("batch_size", batch_size)
        self.learning_rate = float(learning_rate)
        self.reg_term = float(reg_term)
        self.latent_dim = int(latent_dim)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("learning_rate", "reg_term", "latent_dim", "epochs",
                                               "batch_size", "seed")}

    # --- training -----------------------------------------------------------------------

    def initial_state(self, n_users: int, n_items: int) -> dict[str, torch.Tensor]:
        """The tensors a fit starts from, determined by ``seed`` and the table sizes."""
        gen = torch.Generator().manual_seed(self.seed)
        return {
            "user_factors.weight": torch.randn(n_users, self.latent_dim, generator=gen) * 0.1,
            "item_factors.weight": torch.randn(n_items, self.latent_dim, generator=gen) * 0.1,
            "user_bias.weight": torch.zeros(n_users, 1),
            "item_bias.weight": torch.zeros(n_items, 1),
            "global_bias": torch.zeros(()),
        }

    def fit(
        self,
        ratings: pd.DataFrame,
        *,
        user_ids: Iterable[int] | None = None,
        item_ids: Iterable[int] | None = None,
        init_state: Mapping[str, torch.Tensor] | None = None,
        progress: bool = False,
        max_seconds: float = 600.0,
    ) -> Self:
        """Fit on ``ratings`` (``userId``, ``itemId``, ``rating``); returns ``self``.

        ``user_ids``/``item_ids`` fix the id universes (default: the ids in ``ratings``);
        ``init_state`` overrides :meth:`initial_state` (the global bias still starts at the
        mean rating). Training stops early, with a warning in the progress bar, after
        ``max_seconds``.
        """
        if len(ratings) == 0:
            raise ValueError("ratings is empty")
        torch.set_num_threads(TORCH_THREADS)
        self.user_ids_ = np.unique(np.asarray(list(user_ids) if user_ids is not None else ratings["userId"],
                                              dtype=np.int64))
        self.item_ids_ = np.unique(np.asarray(list(item_ids) if item_ids is not None else ratings["itemId"],
                                              dtype=np.int64))
        u = rows_of(ratings["userId"].to_numpy(), self.user_ids_)
        i = rows_of(ratings["itemId"].to_numpy(), self.item_ids_)
        if (u < 0).any() or (i < 0).any():
            raise ValueError("ratings hold user or item ids outside the given user_ids/item_ids")
        r = ratings["rating"].to_numpy(dtype=np.float32)
        n_users, n_items = self.user_ids_.size, self.item_ids_.size

        module = FactorTables(n_users, n_items, self.latent_dim)
        state = dict(init_state) if init_state is not None else self.initial_state(n_users, n_items)
        state["global_bias"] = torch.tensor(float(r.mean()))
        module.load_state_dict({k: v.clone() for k, v in state.items()})
        self._prepare(u, i, r, n_users, n_items)

        users_t, items_t, r_t = torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(r)
        opt = torch.optim.Adam(module.parameters(), lr=self.learning_rate)
        gen = torch.Generator().manual_seed(self.seed + 1)
        n_steps = math.ceil(r.size / self.batch_size)
        deadline = time.monotonic() + max_seconds
        self.history_: list[float] = []
        bar = tqdm(range(self.epochs), desc=f"fit {self.name}", unit="epoch", disable=not progress)
        for _epoch in bar:
            perm = torch.randperm(r.size, generator=gen)
            extra = self._extra_batches(n_steps, gen)
            sq_err = 0.0
            for step in range(n_steps):
                idx = perm[step * self.batch_size:(step + 1) * self.batch_size]
                bu, bi, br = users_t[idx], items_t[idx], r_t[idx]
                pred = module(bu, bi)
                err = ((br - pred) ** 2).sum()
                reg = (module.user_factors(bu).pow(2).sum() + module.item_factors(bi).pow(2).sum()
                       + module.user_bias(bu).pow(2).sum() + module.item_bias(bi).pow(2).sum())
                loss = err + self.reg_term * reg
                if extra is not None:
                    loss = loss + self._extra_loss(module, next(extra))
                opt.zero_grad(set_to_none=True)
                (loss / idx.numel()).backward()
                opt.step()
                sq_err += float(err.detach())
            self.history_.append(math.sqrt(sq_err / r.size))
            bar.set_postfix(train_rmse=f"{self.history_[-1]:.4f}")
            if time.monotonic() > deadline:
                bar.write(f"fit {self.name}: stopped after {len(self.history_)} epochs "
                          f"({max_seconds:.0f} s limit)")
                break
        bar.close()

        self.module_ = module.eval()
        with torch.no_grad():
            self.user_factors_ = module.user_factors.weight.detach().numpy().copy()
            self.item_factors_ = module.item_factors.weight.detach().numpy().copy()
            self.user_bias_ = module.user_bias.weight.detach().numpy()[:, 0].copy()
            self.item_bias_ = module.item_bias.weight.detach().numpy()[:, 0].copy()
            self.global_bias_ = float(module.global_bias.detach())
        return self

    def _prepare(self, u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int) -> None:
        """Hook run before training, with the indexed ratings."""

    def _extra_batches(self, n_steps: int, gen: torch.Generator) -> Iterator[Any] | None:
        """Hook: one extra batch per step for :meth:`_extra_loss`, or ``None`` for plain MF."""
        return None

    def _extra_loss(self, module: FactorTables, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    # --- scoring ------------------------------------------------------------------------

    def predict(self, user_ids: Iterable[int], item_ids: Iterable[int]) -> np.ndarray:
        """Predicted ratings; unknown users or items contribute no bias and no factors."""
        u = rows_of(user_ids, self.user_ids_)
        i = rows_of(item_ids, self.item_ids_)
        known_u, known_i = u >= 0, i >= 0
        pred = np.full(u.shape, self.global_bias_, dtype=np.float64)
        pred[known_u] += self.user_bias_[u[known_u]]
        pred[known_i] += self.item_bias_[i[known_i]]
        both = known_u & known_i
        pred[both] += np.einsum("nd,nd->n", self.user_factors_[u[both]], self.item_factors_[i[both]])
        return pred

    def score_matrix(self, user_rows: np.ndarray | None = None) -> np.ndarray:
        """Predicted ratings of every item for the given user rows (default: all users)."""
        p = self.user_factors_ if user_rows is None else self.user_factors_[user_rows]
        b = self.user_bias_ if user_rows is None else self.user_bias_[user_rows]
        return self.global_bias_ + b[:, None] + self.item_bias_[None, :] + p @ self.item_factors_.T
