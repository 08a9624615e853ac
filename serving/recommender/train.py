"""Train the served recommender (EMF) and write its artefacts: ``recommender.npz`` and a model card.

``python -m serving.recommender.train --out serving/models/recommender`` reproduces the
committed artefacts from the synthetic data set (seed 0); ``--ml100k DIR`` trains on the real
MovieLens 100k files instead. Before fitting on all ratings it scores the same configuration
on a held-out split (``evaluate.py``) and records the metrics in the card (``--no-eval``
skips that). The model version is derived from the data source and a hash of the fitted
arrays, so the same inputs give the same version.

>>> from producers.movielens import synthetic_ml100k
>>> data = synthetic_ml100k(n_users=40, n_items=60, n_ratings=1200, seed=2)
>>> model = train_recommender(data, source="synthetic-s2", epochs=2, evaluate=False, progress=False)
>>> model.model_version.startswith("emf-synthetic-s2-"), model.card["data"]["n_ratings"]
(True, 1200)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from producers.movielens import MovieLens, load_ml100k, synthetic_ml100k
from serving.recommender.emf import EMFModel
from serving.recommender.evaluate import evaluate_models, split_ratings
from serving.recommender.recommend import RecommenderModel


def train_recommender(
    data: MovieLens,
    *,
    source: str,
    seed: int = 0,
    epochs: int = 20,
    evaluate: bool = True,
    progress: bool = True,
) -> RecommenderModel:
    """Fit EMF on all of ``data.ratings`` and wrap it for serving, with a model card."""
    metrics: dict[str, float] = {}
    if evaluate:
        train, test = split_ratings(data.ratings, seed=seed)
        table = evaluate_models({"EMF": EMFModel(epochs=epochs, seed=seed)}, train, test, progress=progress)
        metrics = {k: round(float(v), 4) for k, v in table.loc["EMF"].items() if not k.startswith("fit_")}
    emf = EMFModel(epochs=epochs, seed=seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    emf.fit(data.ratings, progress=progress)
    fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    digest = hashlib.sha256()
    for array in (emf.user_factors_, emf.item_factors_, emf.user_bias_, emf.item_bias_):
        digest.update(array.tobytes())
    version = f"emf-{source}-{digest.hexdigest()[:8]}"
    card = {
        "description": "Explainable matrix factorisation (EMF) movie recommender with "
                       "neighbourhood explanations.",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"source": source, "n_users": int(emf.user_ids_.size), "n_items": int(emf.item_ids_.size),
                 "n_ratings": int(len(data.ratings))},
        "params": emf.params(),
        "training": {"fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu_s, 1),
                     "epochs_run": len(emf.history_), "final_train_rmse": round(emf.history_[-1], 4)},
        "held_out_metrics": metrics,
        "reproduce": "python -m serving.recommender.train --out serving/models/recommender",
    }
    return RecommenderModel.from_fitted(emf, data.ratings, model_version=version, card=card)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("serving/models/recommender"))
    parser.add_argument("--ml100k", metavar="DIR", help="MovieLens 100k directory (default: synthetic data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    args = parser.parse_args(argv)

    if args.ml100k:
        data, source = load_ml100k(args.ml100k), "ml100k"
    else:
        data, source = synthetic_ml100k(seed=args.seed), f"synthetic-s{args.seed}"
    model = train_recommender(data, source=source, seed=args.seed, epochs=args.epochs,
                              evaluate=not args.no_eval)
    for path in model.save(args.out):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    print(f"model_version {model.model_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
