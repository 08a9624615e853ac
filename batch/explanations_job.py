"""Explanations job: the top-10 EMF recommendations of a window's users, with their explanations.

For every distinct user of the window's recommender events, the job asks the served model
(``serving.recommender.recommend.RecommenderModel``) for its top ``k`` items and stores each
with its explanation ``{rating: number of similar users who gave it}`` (section 11.3.2 of
the chapter), in ``explanations.parquet`` (one row per recommendation; the explanation as
JSON and as five count columns ``similar_rated_1`` .. ``similar_rated_5``) and
``explanations.json`` (per user), plus a short ``explanations.html`` summary.

The window's explanation coverage is the share of these recommendations with a non-empty
explanation; users the model does not know get popular items without explanations, which
lowers it. ``served_explanation_coverage`` is the mean coverage of the responses actually
served in the window (the events' ``explanation_coverage``), for comparison.

>>> explanation_json({5: 6, 4: 2})
'{"4": 2, "5": 6}'
>>> explanation_coverage([{4: 1}, {}, {5: 2}, {}])
0.5

Reference: B. Abdollahi and O. Nasraoui, "Explainable Matrix Factorization for Collaborative
Filtering", WWW 2016 Companion.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batch.job_status import JobFailed, JobResult

JOB = "explanations"
PARQUET_NAME = "explanations.parquet"
JSON_NAME = "explanations.json"
HTML_NAME = "explanations.html"
STARS = (1, 2, 3, 4, 5)
_USER_COLUMNS = ("user_id", "userId")


def explanation_json(explanation: Mapping[int, int]) -> str:
    """A stable JSON text of an explanation: rating keys as strings, in rating order."""
    return json.dumps({str(r): int(explanation[r]) for r in sorted(explanation)})


def explanation_coverage(explanations: Sequence[Mapping[int, int]]) -> float:
    """Share of explanations that are non-empty (0 for none)."""
    return sum(1 for e in explanations if e) / len(explanations) if explanations else 0.0


def window_users(events: pd.DataFrame | None) -> np.ndarray:
    """The distinct user ids of a window's recommender events, ascending."""
    if events is None or len(events) == 0:
        raise JobFailed("window is empty: no recommender events")
    column = next((c for c in _USER_COLUMNS if c in events.columns), None)
    if column is None:
        raise JobFailed(f"recommender events lack a user id column (one of {list(_USER_COLUMNS)})")
    users = pd.to_numeric(events[column], errors="coerce")
    if users.isna().any():
        raise JobFailed(f"recommender events have {int(users.isna().sum())} rows without a valid user id")
    return np.unique(users.to_numpy(dtype=np.int64))


def _html(report: dict[str, Any], table: pd.DataFrame, max_users: int = 20) -> str:
    esc = html.escape
    head = table[table["user_id"].isin(table["user_id"].drop_duplicates().head(max_users))]
    rows = "".join(
        f"<tr><td>{r.user_id}</td><td>{r.rank}</td><td>{r.item_id}</td><td>{r.score:.3f}</td>"
        f"<td>{esc(r.explanation)}</td></tr>"
        for r in head.itertuples(index=False)
    )
    metrics = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in report["metrics"].items())
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Explanations</title></head><body>"
        f"<h1>Recommendations with explanations</h1><ul>{metrics}</ul>"
        f"<p>First {min(max_users, report['metrics']['n_users'])} users; all rows are in {PARQUET_NAME}.</p>"
        "<table border='1' cellpadding='4'><tr><th>user</th><th>rank</th><th>item</th><th>score</th>"
        f"<th>explanation {{rating: similar users}}</th></tr>{rows}</table></body></html>\n"
    )


def explanations_job(
    events: pd.DataFrame | None,
    model: Any,
    out_dir: Path,
    *,
    k: int = 10,
) -> JobResult:
    """Write the window's recommendations and explanations; ``model`` has ``recommend(user_id, k)``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
        raise ValueError(f"k must be an integer in [1, 100], got {k!r}")
    users = window_users(events)
    if model is None:
        raise JobFailed("recommender model is missing")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    per_user: dict[str, list[dict[str, Any]]] = {}
    known_users = 0
    for user in users.tolist():
        known = bool(model.is_known_user(user))
        known_users += known
        recs = model.recommend(user, k=k)
        per_user[str(user)] = []
        for rec in recs:
            explanation = {int(r): int(c) for r, c in rec["explanation"].items()}
            rows.append(
                {
                    "user_id": user,
                    "rank": int(rec["rank"]),
                    "item_id": int(rec["item_id"]),
                    "score": float(rec["score"]),
                    "known_user": known,
                    "explained": bool(explanation),
                    "n_similar_users": sum(explanation.values()),
                    "explanation": explanation_json(explanation),
                    **{f"similar_rated_{s}": explanation.get(s, 0) for s in STARS},
                }
            )
            per_user[str(user)].append(
                {
                    "item_id": int(rec["item_id"]),
                    "rank": int(rec["rank"]),
                    "score": float(rec["score"]),
                    "explanation": {str(r): c for r, c in sorted(explanation.items())},
                }
            )
    columns = [
        "user_id",
        "rank",
        "item_id",
        "score",
        "known_user",
        "explained",
        "n_similar_users",
        "explanation",
        *(f"similar_rated_{s}" for s in STARS),
    ]
    table = pd.DataFrame(rows, columns=columns).astype(
        {
            "user_id": "int64",
            "rank": "int32",
            "item_id": "int64",
            "score": "float64",
            "known_user": "bool",
            "explained": "bool",
            "n_similar_users": "int32",
            **{f"similar_rated_{s}": "int32" for s in STARS},
        }
    )
    served = None
    if "explanation_coverage" in events.columns:
        values = pd.to_numeric(events["explanation_coverage"], errors="coerce").dropna()
        served = float(values.mean()) if len(values) else None
    n_recs = len(table)
    metrics = {
        "k": k,
        "n_users": int(users.size),
        "n_known_users": known_users,
        "n_recommendations": n_recs,
        "explanation_coverage": float(table["explained"].mean()) if n_recs else 0.0,
        "users_with_an_explanation": int(table.loc[table["explained"], "user_id"].nunique()),
        "mean_similar_users": float(table.loc[table["explained"], "n_similar_users"].mean())
        if table["explained"].any()
        else 0.0,
        "served_explanation_coverage": served,
        "model_version": str(getattr(model, "model_version", "")),
        "seconds": time.perf_counter() - start,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet_path, json_path, html_path = out_dir / PARQUET_NAME, out_dir / JSON_NAME, out_dir / HTML_NAME
    table.to_parquet(parquet_path, index=False)
    report = {"job": JOB, "metrics": metrics, "users": per_user}
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    html_path.write_text(_html(report, table))
    return JobResult(
        JOB, outputs={"html": html_path, "parquet": parquet_path, "json": json_path}, metrics=metrics
    )
