"""Recommender stream app.

    recommender requests topic
      -> validation (invalid records to the dead-letter topic)
      -> hopping windows by event time (changelogged table, partitioned like the topic)
      -> statistics (ranked-movies rate, unknown-user rate, explanation coverage, item
         popularity of requests and recommendations, scores) and drift against the reference
      -> Prometheus metrics and the drift sink (S3)

Run with ``driftstream stream worker recommender``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faust
from faust.types import Message

from driftstream.settings import Settings
from producers.contracts import RECOMMENDER_REQUESTS
from stream_apps import worker_metrics as m
from stream_apps.detector_app import _attach_housekeeping
from stream_apps.recommender_window import PopularityBuckets, RecommenderWindow
from stream_apps.reference_profile import ReferenceProfile
from stream_apps.window_pipeline import WindowPipeline, make_app

APP_ID = "driftstream-stream-recommender"
MODEL = "recommender"


def publish_recommender_metrics(model: str, result: dict[str, Any]) -> None:
    for name, value in result["rates"].items():
        if value is not None:
            m.WINDOW_STAT.labels(model=model, stat=f"{name}_rate").set(value)
    mean = result["score_mean"].get("mean")
    if mean is not None:
        m.WINDOW_STAT.labels(model=model, stat="score_mean").set(mean)


def _buckets(ref: ReferenceProfile | None) -> PopularityBuckets | None:
    return PopularityBuckets.from_reference(ref) if ref is not None else None


def create_app(settings: Settings) -> tuple[faust.App, WindowPipeline]:
    app = make_app(settings, APP_ID, settings.stream_recommender_metrics_port)

    requests_topic = app.topic(RECOMMENDER_REQUESTS, key_serializer="raw", value_serializer="raw")
    windows = app.Table("recommender-windows", partitions=settings.kafka_partitions,
                        key_type=str, value_type=bytes)
    pipeline = WindowPipeline(
        settings, model=MODEL, topic=RECOMMENDER_REQUESTS, table=windows, app_id=APP_ID,
        new_window=lambda ref: RecommenderWindow(_buckets(ref)),
        load_window=lambda ref, raw: RecommenderWindow.from_bytes(raw, _buckets(ref)),
        publish_metrics=publish_recommender_metrics,
    )

    @app.batch_agent(requests_topic)
    def process(messages: Sequence[Message]) -> None:
        pipeline.process_batch(messages)

    _ = process
    _attach_housekeeping(app, pipeline)
    return app, pipeline
