"""A Faust agent that only counts records: the framework's own ceiling for a stream worker.

    python -m benchmarks.faust_bare_agent PORT TOPIC

Same app settings and transport as the stream apps (:func:`stream_apps.window_pipeline.make_app`),
a fresh consumer group starting at the end of TOPIC (detector predictions), and
``bench_bare_agent_events_total`` on ``127.0.0.1:PORT/metrics``. Started by
``benchmarks/stream_throughput.py``.
"""

from __future__ import annotations

import sys
import time

import faust
from prometheus_client import Counter, start_http_server

from driftstream.settings import get_settings
from producers.contracts import DETECTOR_PREDICTIONS
from stream_apps.window_pipeline import make_app

EVENTS = Counter("bench_bare_agent_events", "Records the bare agent received")


def main(port: int, topic_name: str) -> None:
    settings = get_settings()
    app = make_app(settings, f"driftstream-bench-bare-{int(time.time())}", port + 1)
    app.conf.consumer_auto_offset_reset = "latest"
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(topic, name="bare-agent")
    async def count(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(2000, within=0.2):
            EVENTS.inc(len(batch))

    _ = count
    start_http_server(port, addr="127.0.0.1")
    faust.Worker(app, loglevel="warn").execute_from_commandline()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else DETECTOR_PREDICTIONS)
