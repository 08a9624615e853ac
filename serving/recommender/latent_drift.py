"""Latent-factor drift: retrain MF on drifted ratings and compare user and item factors.

Two MF fits of the same data are not comparable factor by factor: the loss is unchanged by
any rotation of the latent space (``p_u R . q_i R = p_u . q_i`` for orthogonal ``R``), so two
independent fits land in arbitrary rotations and every factor would look "drifted". Two
measures make the fits comparable:

1. **Same initialisation.** Both fits start from the same tensors (one ``initial_state``
   over the same user and item universes) and visit the same mini-batches in the same order
   (same seed). The trajectories then differ only where the ratings differ.
2. **Orthogonal Procrustes alignment.** What residual rotation the drift induces is removed
   by rotating the drifted factors onto the reference (``R = argmin |[P_d; Q_d] R - [P_r; Q_r]|``
   over orthogonal ``R``, users and items together, since only a common rotation leaves the
   predictions unchanged). What remains is a change of the model, not of its coordinates.

The model keeps biases, and a shift of all ratings of an item lands mostly in its bias
rather than its factors; the frames therefore carry ``bias`` as a column beside
``factor_0 .. factor_{d-1}``. Biases get the analogue of the alignment: each run's biases are
centred on their median, because drift also moves the mean rating, which shifts every
bias of the drifted run by about the same amount without saying anything about one item.

Frames are one row per item (or user), indexed by id: Deepchecks ``FeatureDrift`` compares the
distribution of each column between a reference and a current
:class:`deepchecks.tabular.Dataset`; run on the rows of a group of items (for example the items
suspected of drift, or a genre), it says whether that group's factors moved.
:meth:`LatentFactors.chapter_layout` gives the transposed layout (one column per item) for
single-item checks. :func:`most_drifted` ranks items and users by how far their row moved.

>>> import pandas as pd
>>> from producers.movielens import introduce_item_drift, synthetic_ml100k
>>> data = synthetic_ml100k(n_users=60, n_items=80, n_ratings=2400, seed=0)
>>> drifted = introduce_item_drift(data.ratings, range(1, 11), drift_amount=1)
>>> lf = latent_factor_drift(data.ratings, drifted, latent_dim=4, epochs=3)
>>> lf.items_reference.shape, list(lf.items_reference.columns[-2:])
((80, 5), ['factor_3', 'bias'])
>>> bool(lf.items_drifted.loc[1:10, "bias"].mean() > lf.items_reference.loc[1:10, "bias"].mean())
True

Reference: P. H. Schonemann, "A generalized solution of the orthogonal Procrustes problem",
Psychometrika 31(1), 1966.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import orthogonal_procrustes

from serving.recommender.mf import MFModel


@dataclass(frozen=True)
class LatentFactors:
    """Reference and drifted (aligned) factor frames; rows are ids, columns factors and bias."""

    items_reference: pd.DataFrame
    items_drifted: pd.DataFrame
    users_reference: pd.DataFrame
    users_drifted: pd.DataFrame
    rotation: np.ndarray

    def item_displacement(self) -> pd.Series:
        """Euclidean distance between each item's reference and drifted row."""
        return _row_distance(self.items_reference, self.items_drifted)

    def user_displacement(self) -> pd.Series:
        return _row_distance(self.users_reference, self.users_drifted)

    def chapter_layout(self, kind: str = "item") -> tuple[pd.DataFrame, pd.DataFrame]:
        """Factors transposed to one column per id (``item_factor_<id>``), one row per latent dimension."""
        if kind not in ("item", "user"):
            raise ValueError(f"kind must be 'item' or 'user', got {kind!r}")
        ref, cur = ((self.items_reference, self.items_drifted) if kind == "item"
                    else (self.users_reference, self.users_drifted))
        factors = [c for c in ref.columns if c.startswith("factor_")]
        names = [f"{kind}_factor_{i}" for i in ref.index]
        return (pd.DataFrame(ref[factors].to_numpy().T, columns=names),
                pd.DataFrame(cur[factors].to_numpy().T, columns=names))


def _row_distance(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    return pd.Series(np.linalg.norm(b.to_numpy() - a.to_numpy(), axis=1), index=a.index, name="displacement")


def _frame(factors: np.ndarray, bias: np.ndarray, ids: np.ndarray, id_name: str) -> pd.DataFrame:
    frame = pd.DataFrame(factors, index=pd.Index(ids, name=id_name),
                         columns=[f"factor_{k}" for k in range(factors.shape[1])])
    frame["bias"] = bias - np.median(bias)
    return frame


def latent_factor_drift(
    reference: pd.DataFrame,
    drifted: pd.DataFrame,
    *,
    latent_dim: int = 32,
    epochs: int = 20,
    learning_rate: float = 0.01,
    reg_term: float = 0.05,
    seed: int = 0,
    align: bool = True,
    progress: bool = False,
) -> LatentFactors:
    """Fit MF on ``reference`` and on ``drifted`` ratings from the same start; return aligned frames."""
    user_ids = np.union1d(reference["userId"].unique(), drifted["userId"].unique())
    item_ids = np.union1d(reference["itemId"].unique(), drifted["itemId"].unique())
    params = dict(learning_rate=learning_rate, reg_term=reg_term, latent_dim=latent_dim, epochs=epochs,
                  seed=seed)
    init = MFModel(**params).initial_state(user_ids.size, item_ids.size)
    fits = [MFModel(**params).fit(r, user_ids=user_ids, item_ids=item_ids, init_state=init, progress=progress)
            for r in (reference, drifted)]
    ref, cur = fits
    rotation = np.eye(latent_dim, dtype=np.float32)
    if align:
        rotation, _ = orthogonal_procrustes(np.vstack([cur.user_factors_, cur.item_factors_]),
                                            np.vstack([ref.user_factors_, ref.item_factors_]))
    return LatentFactors(
        items_reference=_frame(ref.item_factors_, ref.item_bias_, item_ids, "itemId"),
        items_drifted=_frame(cur.item_factors_ @ rotation, cur.item_bias_, item_ids, "itemId"),
        users_reference=_frame(ref.user_factors_, ref.user_bias_, user_ids, "userId"),
        users_drifted=_frame(cur.user_factors_ @ rotation, cur.user_bias_, user_ids, "userId"),
        rotation=np.asarray(rotation),
    )


def feature_drift_scores(
    reference: pd.DataFrame, current: pd.DataFrame, rows: Iterable[int] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.Series:
    """Deepchecks ``FeatureDrift`` drift score per column, on the given rows (ids) of both frames.

    Ids in ``rows`` that the frames lack (items nobody rated) are skipped.
    """
    from deepchecks.tabular import Dataset
    from deepchecks.tabular.checks import FeatureDrift

    if rows is not None:
        keep = reference.index.isin(list(rows))
        reference, current = reference[keep], current[keep]
    cols = list(columns) if columns is not None else list(reference.columns)
    check = FeatureDrift(columns=cols, n_top_columns=len(cols), min_samples=min(len(reference), 10))
    result = check.run(Dataset(reference[cols].reset_index(drop=True), cat_features=[]),
                       Dataset(current[cols].reset_index(drop=True), cat_features=[]))
    return pd.Series({c: float(v["Drift score"]) for c, v in result.value.items()}, name="drift_score")[cols]


def most_drifted(factors: LatentFactors, n: int = 10) -> tuple[pd.Series, pd.Series]:
    """The ``n`` items and the ``n`` users whose rows moved most (displacement, largest first)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return (factors.item_displacement().nlargest(n), factors.user_displacement().nlargest(n))
