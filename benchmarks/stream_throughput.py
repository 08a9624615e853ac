"""Stream worker throughput and freshness, and window drift cost against Deepchecks.

    python -m benchmarks.stream_throughput [--events 200000] [--rate 2000] [--seconds 30]

1. events/s of one detector worker from Kafka through validation, windows, drift and
   metrics (the worker runs as its own process, as in production), next to the ceilings
   measured in the same run: a Faust agent that only counts records (same app settings),
   and a plain confluent-kafka consumer reading the same records;
2. time to score one window's drift (7 KS tests against the reference) with the
   stream code, against Deepchecks' FeatureDrift computing KS on the same values;
3. freshness p99 (now minus the newest processed event time) at a steady rate.

It runs on the benchmarks' own core stack (:mod:`benchmarks.bench_stack`), started if needed and
stopped at the end, so its synthetic events never reach the windows, archive and reports
of the stack you use (`make demo`'s, on the default ports).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.bench_stack import own_stack
from driftstream.settings import Settings
from driftstream.stack import process, stack
from driftstream.topics import ensure_topics
from producers.contracts import (
    DETECTOR_PREDICTIONS,
    Detection,
    DetectorPrediction,
    ImageProperties,
    TopicSpec,
    encode,
    new_event_id,
)

ROOT = Path(__file__).resolve().parent.parent
# The ceilings read a copy of the records from their own topic, so the worker never sees them:
# their event times would move its watermark and make the worker's own records late.
CEILING_TOPIC = "driftstream.bench.ceiling.v1"


def _events(n: int, t0: float, rate: float, rng: np.random.Generator) -> list[bytes]:
    props = rng.uniform(0.2, 0.8, size=(n, 3))
    conf = rng.uniform(0.3, 0.99, size=n)
    out = []
    for i in range(n):
        t = t0 + i / rate
        out.append(encode(DetectorPrediction(
            event_id=new_event_id(), request_id=f"bench-{i}", model_name="idcard-yolov8n", model_version="bench",
            event_time=t, published_at=t, latency_ms=30.0,
            detections=[Detection([10.0, 10.0, 200.0, 120.0], "id_card", float(conf[i]))],
            image=ImageProperties(1.333, 307200.0, float(props[i, 0]), float(props[i, 1]) / 2, 0.33, 0.33, 0.34),
        )))
    return out


def _metric(port: int, name: str) -> float | None:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return None
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    return None


def _start(settings: Settings, module: str, args: list[str], port: int, ready_metric: str) -> process.PidRecord:
    name = module.rsplit(".", 1)[-1]
    log_file = settings.abs_state_dir / "logs" / f"bench-{name}.log"
    rec = process.spawn([sys.executable, "-m", module, *args], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                        log_file=log_file, pid_file=settings.abs_state_dir / "run" / f"bench-{name}.pid")
    process.wait_ready(rec, lambda: _metric(port, ready_metric) is not None, name=name, log_file=log_file,
                       timeout_s=120)
    time.sleep(8)  # let it join its group and finish recovery
    return rec


def _ensure_reference(settings: Settings) -> None:
    """The worker scores drift only against a reference; without one the figure would flatter it."""
    from batch.reference_build import build_reference, describe
    from driftstream.object_store import ObjectStore
    from stream_apps.reference_store import ReferenceMissing, load_reference

    try:
        load_reference(ObjectStore(settings), "detector")
    except ReferenceMissing:
        print("no detector reference yet: building one")
        print(describe(build_reference(settings, "detector")))


def _wait_caught_up(settings: Settings, timeout_s: float = 600) -> None:
    """A backlog from an earlier run would be counted as this run's throughput: drain it first."""
    port = settings.stream_detector_metrics_port
    name = 'driftstream_events_processed_total{model="detector"}'
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = _metric(port, name)
        lag = _metric(port, "driftstream_consumer_lag_messages")
        if value != last:
            last, stable_since = value, time.monotonic()
        elif lag == 0 and time.monotonic() - stable_since > 6:  # the lag probe runs every 5 s
            return
        time.sleep(0.5)
    raise RuntimeError("the stream worker did not catch up with its backlog")


def throughput(producer: Producer, topic: str, n: int, port: int, name: str, event_rate: float) -> float:
    """Events/s from the first record produced until the counter ``name`` has grown by ``n``.

    Event times advance by ``1 / event_rate`` per event and end now, so the run crosses many
    window boundaries: closing, scoring and sinking windows is part of the measured work.
    """
    before = _metric(port, name) or 0.0
    payloads = _events(n, time.time() - n / event_rate, event_rate, np.random.default_rng(1))
    t0 = time.perf_counter()
    for i, p in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, p, key=b"idcard-yolov8n")
                break
            except BufferError:
                producer.poll(0.01)
        if i % 5000 == 0:
            producer.poll(0)
            print(f"  produced {i}/{n}", end="\r", flush=True)
    producer.flush(60)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = (_metric(port, name) or 0.0) - before
        if done >= n:
            break
        print(f"  processed {int(done)}/{n}   ", end="\r", flush=True)
        time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    print()
    if done < n:
        raise RuntimeError(f"only {int(done)} of {n} events counted within 300 s")
    return n / elapsed


def raw_consumer(settings: Settings, topic: str, start: dict[int, int], n: int) -> float:
    """Records/s of a plain confluent-kafka consumer reading ``n`` records from ``start`` offsets."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"bench-raw-{time.time()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 64 << 20})
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    got = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        got += sum(1 for m in consumer.consume(10000, 0.5) if m.error() is None)
    elapsed = time.perf_counter() - t0
    consumer.close()
    return got / elapsed


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "bench-offsets"})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    out = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    consumer.close()
    return out


def freshness(settings: Settings, producer: Producer, rate: float, seconds: float) -> dict[str, float]:
    """Freshness at a steady ``rate``, sampled every 50 ms after a 3 s warm-up.

    ``measured``: now minus the event time of the newest processed event, computed here from
    the worker's processed counter (one partition key, so events are processed in the order
    sent) and the send times: it includes the wait for the next batch. ``gauge``: the
    worker's own ``driftstream_event_freshness_seconds``, set when it processes a batch.
    """
    port = settings.stream_detector_metrics_port
    processed_name = 'driftstream_events_processed_total{model="detector"}'
    rng = np.random.default_rng(2)
    measured: list[float] = []
    gauge: list[float] = []
    event_times: list[float] = []
    before = _metric(port, processed_name) or 0.0
    t_start = time.time()
    while (now := time.time()) - t_start < seconds:
        due = int((now - t_start) * rate)
        if due > len(event_times):
            for p in _events(due - len(event_times), now, 1e9, rng):  # event time = send time
                producer.produce(DETECTOR_PREDICTIONS, p, key=b"idcard-yolov8n")
                event_times.append(now)
            producer.poll(0)
        if now - t_start > 3:
            done = int((_metric(port, processed_name) or 0.0) - before)
            v = _metric(port, 'driftstream_event_freshness_seconds{model="detector"}')
            scraped = time.time()
            if done > 0:
                measured.append(scraped - event_times[min(done, len(event_times)) - 1])
            if v is not None:
                gauge.append(v)
        time.sleep(0.05)
    producer.flush(30)
    return {"p50": float(np.percentile(measured, 50)), "p99": float(np.percentile(measured, 99)),
            "max": float(np.max(measured)), "gauge_p99": float(np.percentile(gauge, 99))}


def drift_cost(window_events: int = 5000, repeats: int = 5) -> tuple[float, float, float]:
    """Seconds per window: stream KS code, Deepchecks FeatureDrift (KS); max |score difference|."""
    os.environ.setdefault("DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY", "True")
    import pandas as pd
    from deepchecks.tabular import Dataset
    from deepchecks.tabular.checks import FeatureDrift

    from stream_apps.detector_window import PROPERTY_NAMES, DetectorWindow, detector_reference

    rng = np.random.default_rng(5)
    ref_rows = rng.normal(0.5, 0.1, size=(5000, 7))
    cur_rows = rng.normal(0.52, 0.1, size=(window_events, 7)).clip(0, None)
    reference = detector_reference("detector", "bench", ref_rows)
    window = DetectorWindow()
    for i, row in enumerate(cur_rows):
        window.update(DetectorPrediction(
            event_id=str(i), request_id=str(i), model_name="m", model_version="v", event_time=1.0 + i,
            published_at=1.0 + i, latency_ms=1.0, detections=[],
            image=ImageProperties(*(float(x) for x in row[:4]), *(min(1.0, float(x)) for x in row[4:])),
        ))
    t0 = time.perf_counter()
    for _ in range(repeats):
        ours = window.drift_tests(reference)
    t_ours = (time.perf_counter() - t0) / repeats

    cur = pd.DataFrame(window.property_sample.values, columns=list(PROPERTY_NAMES))
    ref = pd.DataFrame({k: reference.numeric[k] for k in PROPERTY_NAMES})
    check = FeatureDrift(numerical_drift_method="KS", min_samples=1, n_top_columns=7)
    t0 = time.perf_counter()
    for _ in range(repeats):
        res = check.run(Dataset(ref, cat_features=[]), Dataset(cur, cat_features=[]), with_display=False)
    t_dc = (time.perf_counter() - t0) / repeats
    diff = max(abs(res.value[k]["Drift score"] - ours[k].score) for k in PROPERTY_NAMES)
    return t_ours, t_dc, diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--event-rate", type=float, default=1000.0,
                    help="events per second of event time in the throughput run (windows close as it crosses hops)")
    args = ap.parse_args(argv)
    with own_stack(stack.CORE) as settings:
        _ensure_reference(settings)
        print("drift cost per window (5000 events, 7 features)")
        t_ours, t_dc, diff = drift_cost()
        producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 20,
                             "queue.buffering.max.messages": 500000})
        port = settings.stream_detector_metrics_port
        ensure_topics(settings, [TopicSpec(CEILING_TOPIC, DetectorPrediction, retention_ms=3_600_000)])
        closed_name = 'driftstream_windows_closed_total{model="detector"}'
        print("ceiling 1: a Faust agent that only counts records")
        bare_port = port + 100
        bare = _start(settings, "benchmarks.faust_bare_agent", [str(bare_port), CEILING_TOPIC], bare_port,
                      "bench_bare_agent_events_total")
        try:
            start = end_offsets(settings, CEILING_TOPIC)
            bare_eps = throughput(producer, CEILING_TOPIC, args.events, bare_port, "bench_bare_agent_events_total",
                                  args.event_rate)
        finally:
            process.stop(bare, timeout_s=30)
        print("ceiling 2: a plain confluent-kafka consumer reading the same records")
        raw_eps = raw_consumer(settings, CEILING_TOPIC, start, args.events)
        print("starting one detector stream worker")
        worker = _start(settings, "stream_apps.worker", ["detector"], port, "driftstream_reference_missing")
        try:
            _wait_caught_up(settings)
            print(f"throughput: {args.events} events, {args.event_rate:.0f} events/s of event time")
            closed_before = _metric(port, closed_name) or 0.0
            eps = throughput(producer, DETECTOR_PREDICTIONS, args.events, port,
                             'driftstream_events_processed_total{model="detector"}', args.event_rate)
            closed = (_metric(port, closed_name) or 0.0) - closed_before
            print(f"freshness at {args.rate:.0f} events/s for {args.seconds:.0f}s")
            fresh = freshness(settings, producer, args.rate, args.seconds)
        finally:
            process.stop(worker, timeout_s=30)
    rows = [
        ("worker throughput (events/s)", f"{eps:,.0f}", ">= 20,000", "yes" if eps >= 20000 else "NO"),
        ("bare Faust agent, counting only (events/s)", f"{bare_eps:,.0f}", "", ""),
        ("worker / bare Faust agent", f"{eps / bare_eps:.2f}", "", ""),
        ("plain confluent-kafka consumer (events/s)", f"{raw_eps:,.0f}", "", ""),
        ("windows closed and scored during that run", f"{closed:.0f}", "", ""),
        (f"freshness p50 at {args.rate:.0f}/s (s)", f"{fresh['p50']:.2f}", "", ""),
        (f"freshness p99 at {args.rate:.0f}/s (s)", f"{fresh['p99']:.2f}", "<= 2",
         "yes" if fresh["p99"] <= 2 else "NO"),
        ("freshness max (s)", f"{fresh['max']:.2f}", "", ""),
        ("freshness p99, the worker's own gauge (s)", f"{fresh['gauge_p99']:.2f}", "", ""),
        ("window drift, stream code (ms)", f"{t_ours * 1e3:.1f}", "", ""),
        ("window drift, Deepchecks FeatureDrift KS (ms)", f"{t_dc * 1e3:.1f}", "", ""),
        ("Deepchecks / stream time ratio", f"{t_dc / t_ours:.0f}x", "", ""),
        ("max |KS D difference|", f"{diff:.2e}", "", ""),
    ]
    print()
    print(f"| {'measure':48s} | {'value':>10s} | {'target':9s} | met |")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 11}|-----|")
    for r in rows:
        print(f"| {r[0]:48s} | {r[1]:>10s} | {r[2]:9s} | {r[3]:3s} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
