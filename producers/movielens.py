"""MovieLens 100k ratings: the file loader, a synthetic look-alike, drift injection, request sampling.

Every function returns the same two tables:

* ``ratings``: ``userId``, ``itemId``, ``rating`` (1..5), ``timestamp`` (Unix seconds);
* ``items``: ``itemId``, ``title``, ``release_date``, ``genres`` (``|``-joined names).

The real data set (``u.data`` tab-separated, ``u.item`` pipe-separated in latin-1) is read
from a directory the user supplies. Where it is absent, :func:`synthetic_ml100k` draws a
data set of the same schema and roughly the same shape (943 users, 1682 items, ~100k
ratings, ML-100k's rating histogram): users and items belong to latent taste groups, so a
factor model has structure to learn, item popularity is heavy-tailed, and users mostly rate
what they are inclined to like, as people do.

:func:`introduce_item_drift` raises the ratings of chosen items (the drift of section 11.2.2),
and :class:`RequestSampler` draws the requests a traffic generator sends to the recommender,
with switchable shifts of item popularity and of the user mix.

>>> data = synthetic_ml100k(n_users=50, n_items=80, n_ratings=2000, seed=1)
>>> list(data.ratings.columns), len(data.ratings), int(data.ratings.userId.nunique())
(['userId', 'itemId', 'rating', 'timestamp'], 2000, 50)
>>> drifted = introduce_item_drift(data.ratings, range(1, 11), drift_amount=1)
>>> bool((drifted.rating >= data.ratings.rating).all()), int(drifted.rating.max())
(True, 5)
>>> sampler = RequestSampler(data.ratings, ranked_share=0.0, seed=3)
>>> user_id, ranked = sampler.sample()
>>> 1 <= user_id <= 50, ranked
(True, None)

Reference: F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 5(4), 2015 (file formats in the data set's README).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RATING_MIN = 1
RATING_MAX = 5
RATING_COLUMNS = ["userId", "itemId", "rating", "timestamp"]
ITEM_COLUMNS = ["itemId", "title", "release_date", "genres"]
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]
# ML-100k's rating histogram (shares of 1..5 stars) and time span, which the synthetic set copies.
ML100K_RATING_SHARES = np.array([0.061, 0.114, 0.271, 0.341, 0.213])
ML100K_TIME_SPAN = (874_724_710, 893_286_638)


@dataclass(frozen=True)
class MovieLens:
    """A ratings table and its items table (the schema in the module docstring)."""

    ratings: pd.DataFrame
    items: pd.DataFrame

    @property
    def n_users(self) -> int:
        return int(self.ratings["userId"].nunique())

    @property
    def n_items(self) -> int:
        return int(len(self.items))


def load_ml100k(directory: str | Path) -> MovieLens:
    """Read ``u.data`` and ``u.item`` of MovieLens 100k from ``directory``."""
    root = Path(directory)
    data_path, item_path = root / "u.data", root / "u.item"
    for path in (data_path, item_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass the directory that holds MovieLens 100k files")
    ratings = pd.read_csv(
        data_path, sep="\t", header=None, names=RATING_COLUMNS,
        dtype={"userId": "int64", "itemId": "int64", "rating": "int64", "timestamp": "int64"},
    )
    bad = ~ratings["rating"].between(RATING_MIN, RATING_MAX)
    if bad.any():
        raise ValueError(f"{data_path}: {int(bad.sum())} ratings outside {RATING_MIN}..{RATING_MAX}")
    raw = pd.read_csv(item_path, sep="|", header=None, encoding="latin-1", dtype=str, keep_default_na=False)
    if raw.shape[1] != 5 + len(GENRES):
        raise ValueError(f"{item_path}: expected {5 + len(GENRES)} fields a line, got {raw.shape[1]}")
    flags = raw.iloc[:, 5:].to_numpy() == "1"
    items = pd.DataFrame({
        "itemId": raw[0].astype("int64"),
        "title": raw[1],
        "release_date": raw[2],
        "genres": ["|".join(g for g, on in zip(GENRES, row, strict=True) if on) for row in flags],
    })
    return MovieLens(ratings=ratings, items=items)


def synthetic_ml100k(
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    *,
    n_groups: int = 6,
    latent_dim: int = 8,
    seed: int = 0,
) -> MovieLens:
    """Draw a data set shaped like MovieLens 100k, with latent user and item groups.

    A user's taste vector is its group's centre plus noise, likewise for items; the rating is
    the quantile of ``bias_u + bias_i + taste_u . taste_i + noise`` mapped onto ML-100k's
    histogram. Which items a user rates is drawn (without replacement) with weights
    ``popularity_i * exp(taste_u . taste_i)``: popularity is log-normal, so a few items are
    rated by most users and many by a handful. Each user rates at least 20 items, as in ML-100k.
    """
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_groups", n_groups),
                        ("latent_dim", latent_dim)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    min_per_user = min(20, n_items)
    if not n_users * min_per_user <= n_ratings <= n_users * n_items // 2:
        raise ValueError(
            f"n_ratings must be in [{n_users * min_per_user}, {n_users * n_items // 2}] for "
            f"{n_users} users and {n_items} items, got {n_ratings}"
        )
    rng = np.random.default_rng(seed)
    user_group = rng.integers(0, n_groups, n_users)
    item_group = rng.integers(0, n_groups, n_items)
    centres = rng.normal(0.0, 1.0, (2, n_groups, latent_dim))
    user_taste = centres[0][user_group] + rng.normal(0.0, 0.5, (n_users, latent_dim))
    item_taste = centres[1][item_group] + rng.normal(0.0, 0.5, (n_items, latent_dim))
    affinity = user_taste @ item_taste.T / np.sqrt(latent_dim)
    user_bias = rng.normal(0.0, 0.4, n_users)
    item_quality = rng.normal(0.0, 0.5, n_items)
    log_popularity = rng.normal(0.0, 1.3, n_items) + 0.8 * item_quality

    # How many ratings each user gives: 20 plus a heavy tail, rescaled to the requested total.
    extra = rng.lognormal(np.log(45.0), 1.0, n_users)
    extra = extra / extra.sum() * (n_ratings - n_users * min_per_user)
    counts = min_per_user + np.floor(extra).astype(int)
    cap = n_items // 2
    counts = np.minimum(counts, cap)
    short = n_ratings - int(counts.sum())
    while short > 0:  # hand out the rounding remainder to users below the cap
        room = np.flatnonzero(counts < cap)
        take = rng.choice(room, size=min(short, room.size), replace=False)
        counts[take] += 1
        short -= take.size

    # Weighted sampling without replacement for all users at once: top-n of logits plus Gumbel noise.
    keys = log_popularity[None, :] + 1.2 * affinity + rng.gumbel(size=(n_users, n_items))
    order = np.argsort(-keys, axis=1)
    rows = np.repeat(np.arange(n_users), counts)
    cols = np.concatenate([order[u, : counts[u]] for u in range(n_users)])

    score = (user_bias[rows] + item_quality[cols] + affinity[rows, cols]
             + rng.normal(0.0, 0.5, rows.size))
    cuts = np.quantile(score, np.cumsum(ML100K_RATING_SHARES)[:-1])
    rating = np.searchsorted(cuts, score) + RATING_MIN
    start, end = ML100K_TIME_SPAN
    timestamp = rng.integers(start, end, rows.size)

    ratings = pd.DataFrame({
        "userId": rows + 1, "itemId": cols + 1, "rating": rating.astype("int64"), "timestamp": timestamp,
    }).sort_values("timestamp", kind="stable").reset_index(drop=True)
    genre_of_group = rng.choice(np.arange(1, len(GENRES)), size=n_groups, replace=False) \
        if n_groups < len(GENRES) else np.arange(n_groups) % (len(GENRES) - 1) + 1
    years = rng.integers(1930, 1999, n_items)
    items = pd.DataFrame({
        "itemId": np.arange(1, n_items + 1),
        "title": [f"Synthetic movie {i + 1} ({y})" for i, y in enumerate(years)],
        "release_date": [f"01-Jan-{y}" for y in years],
        "genres": [GENRES[genre_of_group[g]] for g in item_group],
    })
    return MovieLens(ratings=ratings, items=items)


def introduce_item_drift(
    ratings: pd.DataFrame, movie_ids: Iterable[int], drift_amount: float = 1.0
) -> pd.DataFrame:
    """A copy of ``ratings`` with the ratings of ``movie_ids`` raised by ``drift_amount``, clipped to 1..5."""
    out = ratings.copy()
    hit = out["itemId"].isin(list(movie_ids))
    shifted = (out.loc[hit, "rating"] + drift_amount).clip(RATING_MIN, RATING_MAX)
    if float(drift_amount).is_integer():
        shifted = shifted.astype(out["rating"].dtype)
    else:
        out["rating"] = out["rating"].astype("float64")
    out.loc[hit, "rating"] = shifted
    return out


class RequestSampler:
    """Draws recommender requests ``(user_id, ranked_movies or None)``.

    Users are drawn in proportion to how many ratings they gave, candidate movies in
    proportion to how many ratings they received (their popularity). A share of requests
    carries a candidate list to re-rank (``ranked_movies``); a share comes from users the model
    has never seen (ids above every known id), which exercises the popularity fallback.
    :meth:`with_popularity_shift` and :meth:`with_user_mix_shift` return samplers whose item or
    user weights are multiplied by ``factor`` for the chosen ids: the traffic of a drift phase.

    >>> ratings = pd.DataFrame({"userId": [1, 1, 2], "itemId": [10, 20, 10],
    ...                         "rating": [4, 3, 5], "timestamp": [1, 2, 3]})
    >>> s = RequestSampler(ratings, ranked_share=1.0, ranked_size=2, seed=0)
    >>> s.item_probabilities.round(3).to_dict()
    {10: 0.667, 20: 0.333}
    >>> s.with_popularity_shift([20], factor=4.0).item_probabilities.round(3).to_dict()
    {10: 0.333, 20: 0.667}
    >>> sorted(s.sample()[1])
    [10, 20]
    """

    def __init__(
        self,
        ratings: pd.DataFrame,
        *,
        ranked_share: float = 0.3,
        ranked_size: int = 20,
        unknown_user_share: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= ranked_share <= 1.0:
            raise ValueError(f"ranked_share must be in [0, 1], got {ranked_share}")
        if not 0.0 <= unknown_user_share <= 1.0:
            raise ValueError(f"unknown_user_share must be in [0, 1], got {unknown_user_share}")
        if ranked_size < 1:
            raise ValueError(f"ranked_size must be >= 1, got {ranked_size}")
        if len(ratings) == 0:
            raise ValueError("ratings is empty: nothing to sample users and items from")
        users = ratings["userId"].value_counts().sort_index()
        items = ratings["itemId"].value_counts().sort_index()
        self._users = users.index.to_numpy(dtype=np.int64)
        self._user_weights = users.to_numpy(dtype=np.float64)
        self._items = items.index.to_numpy(dtype=np.int64)
        self._item_weights = items.to_numpy(dtype=np.float64)
        self.ranked_share = ranked_share
        self.ranked_size = min(ranked_size, self._items.size)
        self.unknown_user_share = unknown_user_share
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._normalise()

    def _normalise(self) -> None:
        self._user_p = self._user_weights / self._user_weights.sum()
        self._item_p = self._item_weights / self._item_weights.sum()

    @property
    def user_probabilities(self) -> pd.Series:
        return pd.Series(self._user_weights / self._user_weights.sum(), index=self._users)

    @property
    def item_probabilities(self) -> pd.Series:
        return pd.Series(self._item_weights / self._item_weights.sum(), index=self._items)

    @property
    def max_known_user(self) -> int:
        return int(self._users.max())

    def sample(self) -> tuple[int, list[int] | None]:
        """One request: a user id and, for a ``ranked_share`` of requests, candidate movie ids."""
        rng = self._rng
        if rng.random() < self.unknown_user_share:
            user = self.max_known_user + 1 + int(rng.integers(0, 1_000_000))
        else:
            user = int(self._users[rng.choice(self._users.size, p=self._user_p)])
        ranked: list[int] | None = None
        if rng.random() < self.ranked_share:
            picks = rng.choice(self._items.size, size=self.ranked_size, replace=False, p=self._item_p)
            ranked = self._items[picks].tolist()
        return user, ranked

    def sample_many(self, n: int) -> list[tuple[int, list[int] | None]]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self.sample() for _ in range(n)]

    def with_popularity_shift(
        self, item_ids: Iterable[int], factor: float = 10.0, *, seed: int | None = None
    ) -> RequestSampler:
        """A sampler whose candidate lists favour ``item_ids`` ``factor`` times more."""
        _check_factor(factor)
        out = self._derived(seed)
        out._item_weights = self._item_weights * np.where(np.isin(self._items, list(item_ids)), factor, 1.0)
        out._normalise()
        return out

    def with_user_mix_shift(
        self, user_ids: Iterable[int], factor: float = 10.0, *, seed: int | None = None
    ) -> RequestSampler:
        """A sampler that draws ``user_ids`` ``factor`` times more often."""
        _check_factor(factor)
        out = self._derived(seed)
        out._user_weights = self._user_weights * np.where(np.isin(self._users, list(user_ids)), factor, 1.0)
        out._normalise()
        return out

    def _derived(self, seed: int | None) -> RequestSampler:
        out = object.__new__(RequestSampler)
        out.__dict__.update(self.__dict__)
        out._user_weights = self._user_weights.copy()
        out._item_weights = self._item_weights.copy()
        out.seed = self.seed if seed is None else seed
        out._rng = np.random.default_rng(out.seed)
        return out


def _check_factor(factor: float) -> None:
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
