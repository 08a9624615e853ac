"""Detector stream app.

    detector predictions topic
      -> validation (invalid records to the dead-letter topic)
      -> hopping windows by event time (changelogged table, partitioned like the topic)
      -> statistics (confidence quantiles, low-confidence share, detections per image,
         image properties) and KS drift against the training reference
      -> Prometheus metrics and the drift sink (S3)

Run with ``driftstream stream worker detector``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faust
from faust.types import Message

from driftstream.settings import Settings
from producers.contracts import DETECTOR_PREDICTIONS
from stream_apps import worker_metrics as m
from stream_apps.detector_window import DetectorWindow
from stream_apps.window_pipeline import WindowPipeline, make_app

APP_ID = "driftstream-stream-detector"
MODEL = "detector"


def publish_detector_metrics(model: str, result: dict[str, Any]) -> None:
    conf = result["confidence"]
    for name, label in (("p10", "0.1"), ("p50", "0.5"), ("p90", "0.9")):
        if conf.get(name) is not None:
            m.CONFIDENCE_QUANTILE.labels(model=model, quantile=label).set(conf[name])
    if conf.get("low_share") is not None:
        m.LOW_CONFIDENCE_RATIO.labels(model=model).set(conf["low_share"])
    det = result["detections"]
    if det.get("per_image_mean") is not None:
        m.WINDOW_STAT.labels(model=model, stat="detections_per_image").set(det["per_image_mean"])
        m.WINDOW_STAT.labels(model=model, stat="no_detection_share").set(det["images_without_detections_share"])


def create_app(settings: Settings) -> tuple[faust.App, WindowPipeline]:
    app = make_app(settings, APP_ID, settings.stream_detector_metrics_port)

    predictions = app.topic(DETECTOR_PREDICTIONS, key_serializer="raw", value_serializer="raw")
    windows = app.Table("detector-windows", partitions=settings.kafka_partitions,
                        key_type=str, value_type=bytes)
    threshold = settings.low_confidence_threshold
    pipeline = WindowPipeline(
        settings, model=MODEL, topic=DETECTOR_PREDICTIONS, table=windows, app_id=APP_ID,
        new_window=lambda ref: DetectorWindow(low_confidence_threshold=threshold),
        load_window=lambda ref, raw: DetectorWindow.from_bytes(raw),
        publish_metrics=publish_detector_metrics,
    )

    @app.batch_agent(predictions)
    def process(messages: Sequence[Message]) -> None:
        pipeline.process_batch(messages)

    _ = process
    _attach_housekeeping(app, pipeline)
    return app, pipeline


def _attach_housekeeping(app: faust.App, pipeline: WindowPipeline) -> None:
    hop = pipeline.windows.hop_s

    @app.timer(interval=max(1.0, hop / 2), name=f"{pipeline.model}-idle-windows")
    async def close_idle_windows() -> None:
        pipeline.tick()

    @app.timer(interval=5.0, name=f"{pipeline.model}-consumer-lag")
    async def consumer_lag() -> None:
        await pipeline.refresh_lag()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:  # noqa: ANN401
        pipeline.revoke({tp.partition for tp in revoked if tp.topic == pipeline.topic})

    _ = (close_idle_windows, consumer_lag, on_revoked)
