"""``driftstream stream worker APP``: run one stream app's Faust worker with its metrics server."""

from __future__ import annotations

import logging
import sys

from prometheus_client import start_http_server

from driftstream.settings import Settings, get_settings

APPS = ("detector", "recommender")


def metrics_port(settings: Settings, app: str) -> int:
    return settings.stream_detector_metrics_port if app == "detector" else settings.stream_recommender_metrics_port


def run(app_name: str, settings: Settings | None = None, loglevel: str = "warn") -> None:
    if app_name not in APPS:
        raise ValueError(f"unknown stream app {app_name!r}; choose one of {APPS}")
    settings = settings or get_settings()
    if app_name == "detector":
        from stream_apps.detector_app import create_app
    else:
        from stream_apps.recommender_app import create_app
    from serving.json_logging import configure_json_logging

    # JSON lines on stdout (the stack sends them to .state/logs/); faust's own errors included.
    configure_json_logging(f"stream-{app_name}", loggers=("stream_apps", "driftstream", "faust", "mode", "aiokafka"))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("faust").setLevel(logging.WARNING)
    logging.getLogger("mode").setLevel(logging.WARNING)
    app, _pipeline = create_app(settings)
    start_http_server(metrics_port(settings, app_name), addr=settings.host)
    logging.getLogger(__name__).info("metrics on %s:%d", settings.host, metrics_port(settings, app_name))
    import faust

    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "detector")
