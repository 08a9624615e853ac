"""Recommender drift report: latent-factor drift of MF retrained on the window's ratings (section 11.2.2).

The job fits matrix factorisation twice from the same initialisation
(``serving.recommender.latent_drift.latent_factor_drift``): on the reference ratings, and on
the reference ratings updated with the window's ratings (a window rating replaces the
reference rating of the same user and item, a new pair is added). Both rating tables are put
in the same (user, item) order first, so a window that changes nothing gives two identical
fits and zero drift. The drifted factors are rotated onto the reference ones (Procrustes).

Deepchecks tabular ``FeatureDrift`` then compares reference and drifted factors in two layouts:

- **per factor** (one row per item or user, columns ``factor_k`` and ``bias``), on the rows of
  the items and users that the window rated: did the factors of what the window touched move?
  The largest of these drift scores is the window's drift score; drift is detected when it
  reaches ``threshold`` (0.2, Deepchecks' default condition).
- **per item / per user** (the chapter's transposed layout, one column ``item_factor_<id>`` per
  item, one row per latent dimension), for the ``n_top`` items and users whose factor rows moved
  most (Euclidean distance of factors and bias after alignment): the distribution plots of the
  chapter for the names the report gives.

Outputs: ``recommender_drift.html`` (the four checks as one Deepchecks suite result,
self-contained) and ``recommender_drift.json`` (scores, verdict, most drifted items and users).

>>> ref = pd.DataFrame({"userId": [1, 1, 2], "itemId": [10, 20, 10], "rating": [3, 4, 5]})
>>> win = pd.DataFrame({"user_id": [1, 3], "item_id": [10, 20], "rating": [5, 2]})
>>> updated_ratings(ref, normalise_ratings(win, "window")).to_dict("list")
{'userId': [1, 1, 2, 3], 'itemId': [10, 20, 10, 20], 'rating': [5.0, 4.0, 5.0, 2.0]}

Reference: Y. Koren et al., "Matrix Factorization Techniques for Recommender Systems", IEEE
Computer 42(8), 2009; Deepchecks FeatureDrift
(https://docs.deepchecks.com/stable/tabular/auto_checks/train_test_validation/plot_feature_drift.html).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batch.job_status import JobFailed, JobResult

if TYPE_CHECKING:  # deepchecks is imported when a report runs: its import takes seconds
    from deepchecks.core import CheckResult

JOB = "recommender_drift"
HTML_NAME = "recommender_drift.html"
JSON_NAME = "recommender_drift.json"
DEFAULT_THRESHOLD = 0.2
MIN_ROWS = 10  # FeatureDrift's default min_samples
COLUMNS = ("userId", "itemId", "rating")
_ALIASES = {"user_id": "userId", "item_id": "itemId", "movie_id": "itemId"}

os.environ.setdefault("DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY", "True")


def normalise_ratings(frame: pd.DataFrame | None, what: str) -> pd.DataFrame:
    """``userId``, ``itemId`` (int64) and ``rating`` (float64) from either naming; bad data fails the job."""
    if frame is None:
        raise JobFailed(f"{what} ratings are missing")
    if len(frame) == 0:
        raise JobFailed(f"{what} is empty: no ratings")
    renamed = frame.rename(columns={k: v for k, v in _ALIASES.items() if k in frame.columns})
    missing = [c for c in COLUMNS if c not in renamed.columns]
    if missing:
        raise JobFailed(f"{what} ratings lack the columns {missing} (or user_id/item_id)")
    out = renamed[list(COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = out.isna().any(axis=1) | ~out["rating"].between(1, 5)
    if bad.any():
        raise JobFailed(f"{what} ratings have {int(bad.sum())} rows with missing ids or ratings outside 1..5")
    return out.astype({"userId": "int64", "itemId": "int64", "rating": "float64"}).reset_index(drop=True)


def updated_ratings(reference: pd.DataFrame, window: pd.DataFrame) -> pd.DataFrame:
    """The reference ratings with the window's applied (last rating of a pair wins), sorted by pair."""
    combined = pd.concat([reference[list(COLUMNS)], window[list(COLUMNS)]], ignore_index=True)
    combined = combined.drop_duplicates(["userId", "itemId"], keep="last")
    combined = combined.astype({"rating": "float64"})
    return combined.sort_values(["userId", "itemId"], kind="stable").reset_index(drop=True)


def _feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, header: str, threshold: float | None, n_top: int
) -> CheckResult:
    from deepchecks.tabular import Dataset
    from deepchecks.tabular.checks import FeatureDrift

    check = FeatureDrift(columns=list(reference.columns), n_top_columns=n_top)
    if threshold is not None:
        check = check.add_condition_drift_score_less_than(max_allowed_numeric_score=threshold)
    result = check.run(
        Dataset(reference.reset_index(drop=True), cat_features=[]),
        Dataset(current.reset_index(drop=True), cat_features=[]),
    )
    result.header = header
    return result


def _scores(result: CheckResult) -> dict[str, float]:
    return {
        col: float(entry["Drift score"])
        for col, entry in result.value.items()
        if entry.get("Drift score") is not None
    }


def _rows_for(frame: pd.DataFrame, changed: np.ndarray, rated: np.ndarray) -> np.ndarray:
    """The ids whose ratings the window changed, else those it rated, else all: the first with
    enough rows for a drift test."""
    for ids in (changed, rated):
        inside = np.intersect1d(ids, frame.index.to_numpy())
        if inside.size >= MIN_ROWS:
            return inside
    return frame.index.to_numpy()


def recommender_drift_report(
    reference_ratings: pd.DataFrame | None,
    window_ratings: pd.DataFrame | None,
    out_dir: Path,
    *,
    latent_dim: int = 32,
    epochs: int = 20,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    n_top: int = 10,
) -> JobResult:
    """Latent-factor drift of the window's ratings; writes the HTML and JSON report into ``out_dir``."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    if latent_dim < MIN_ROWS:
        raise ValueError(f"latent_dim must be >= {MIN_ROWS} for the per-item drift test, got {latent_dim}")
    reference = normalise_ratings(reference_ratings, "reference")
    window = normalise_ratings(window_ratings, "window")
    from serving.recommender.latent_drift import latent_factor_drift

    start = time.perf_counter()
    base = reference.sort_values(["userId", "itemId"], kind="stable").drop_duplicates(
        ["userId", "itemId"], keep="last"
    )
    drifted = updated_ratings(base, window)
    merged = base.merge(drifted, on=["userId", "itemId"], how="outer", suffixes=("_ref", "_new"))
    changed_pairs = merged[merged["rating_ref"] != merged["rating_new"]]  # new pairs too (NaN != x)
    changed = len(changed_pairs)
    # Unchanged ratings give identical fits; aligning them anyway would add rounding noise that
    # a rank test reads as a drift of 1/n.
    factors = latent_factor_drift(
        base.reset_index(drop=True),
        drifted,
        latent_dim=latent_dim,
        epochs=epochs,
        seed=seed,
        align=changed > 0,
    )
    fit_s = time.perf_counter() - start

    item_rows = _rows_for(
        factors.items_reference, changed_pairs["itemId"].unique(), window["itemId"].unique()
    )
    user_rows = _rows_for(
        factors.users_reference, changed_pairs["userId"].unique(), window["userId"].unique()
    )
    item_move = factors.item_displacement().sort_values(ascending=False, kind="stable")
    user_move = factors.user_displacement().sort_values(ascending=False, kind="stable")
    # Only rows that moved are named: a window that changes nothing has no most drifted items.
    top_items, top_users = item_move[item_move > 0].index[:n_top], user_move[user_move > 0].index[:n_top]
    item_t = factors.chapter_layout("item")
    user_t = factors.chapter_layout("user")
    top_item_cols = [f"item_factor_{i}" for i in top_items]
    top_user_cols = [f"user_factor_{u}" for u in top_users]

    logging.getLogger("deepchecks").setLevel(logging.WARNING)  # progress bars are INFO messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "items": _feature_drift(
                factors.items_reference.loc[item_rows],
                factors.items_drifted.loc[item_rows],
                f"Item factors of {item_rows.size} items the window re-rated",
                threshold,
                8,
            ),
            "users": _feature_drift(
                factors.users_reference.loc[user_rows],
                factors.users_drifted.loc[user_rows],
                f"User factors of {user_rows.size} users who re-rated in the window",
                threshold,
                8,
            ),
        }
        if top_item_cols:
            results["top_items"] = _feature_drift(
                item_t[0][top_item_cols],
                item_t[1][top_item_cols],
                f"Latent factors of the {len(top_items)} items that moved most",
                None,
                n_top,
            )
        if top_user_cols:
            results["top_users"] = _feature_drift(
                user_t[0][top_user_cols],
                user_t[1][top_user_cols],
                f"Latent factors of the {len(top_users)} users who moved most",
                None,
                n_top,
            )
    scores = {name: _scores(result) for name, result in results.items()}
    window_scores = list(scores["items"].values()) + list(scores["users"].values())
    max_score = max(window_scores) if window_scores else 0.0

    def ranked(kind: str, moves: pd.Series, ids: pd.Index) -> list[dict[str, Any]]:
        ref = factors.items_reference if kind == "item" else factors.users_reference
        cur = factors.items_drifted if kind == "item" else factors.users_drifted
        chapter = scores.get("top_items" if kind == "item" else "top_users", {})
        return [
            {
                f"{kind}_id": int(i),
                "displacement": float(moves[i]),
                "bias_change": float(cur.loc[i, "bias"] - ref.loc[i, "bias"]),
                "factor_drift_score": chapter.get(f"{kind}_factor_{i}"),
            }
            for i in ids
        ]

    report = {
        "job": JOB,
        "check": "FeatureDrift",
        "n_reference_ratings": int(len(base)),
        "n_window_ratings": int(len(window)),
        "n_changed_ratings": changed,
        "n_window_items": int(window["itemId"].nunique()),
        "n_window_users": int(window["userId"].nunique()),
        "threshold": threshold,
        "drift_detected": bool(max_score >= threshold),
        "max_drift_score": max_score,
        "item_factor_scores": scores["items"],
        "user_factor_scores": scores["users"],
        "most_drifted_items": ranked("item", item_move, top_items),
        "most_drifted_users": ranked("user", user_move, top_users),
        "model": {
            "latent_dim": latent_dim,
            "epochs": epochs,
            "seed": seed,
            "same_initialisation": True,
            "aligned": "orthogonal Procrustes",
        },
    }
    from deepchecks.core import SuiteResult

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / HTML_NAME, out_dir / JSON_NAME
    html_path.unlink(missing_ok=True)  # save_as_html never overwrites
    suite = SuiteResult("Recommender latent-factor drift", list(results.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite.save_as_html(str(html_path), as_widget=False)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    metrics = {
        k: report[k]
        for k in (
            "n_reference_ratings",
            "n_window_ratings",
            "n_changed_ratings",
            "threshold",
            "drift_detected",
            "max_drift_score",
        )
    }
    metrics |= {
        "most_drifted_items": [e["item_id"] for e in report["most_drifted_items"]],
        "most_drifted_users": [e["user_id"] for e in report["most_drifted_users"]],
        "fit_seconds": fit_s,
        "seconds": time.perf_counter() - start,
    }
    return JobResult(JOB, outputs={"html": html_path, "json": json_path}, metrics=metrics)
