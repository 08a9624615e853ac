"""What publishing costs the detector: service throughput and latency with publishing on and off,
and the time of the publish call itself.

Two detector services run side by side on free ports (``DRIFTSTREAM_PUBLISH_ENABLED=1`` and
``=0``), against the benchmarks' own Kafka and S3. Closed-loop clients (``--concurrency``) post the same
pool of JPEG scenes; rounds alternate off/on so slow drifts of the machine's load hit both
alike, and the ratio is the median over rounds of the paired ratio on/off (each round's two
runs are adjacent in time; on a shared machine single rounds move by 10 %). Then an in-process
:class:`~producers.publisher.EventPublisher` times ``publish`` for
prediction events and ``publish_input`` for inline and claim-check inputs.

Targets: throughput ratio on/off >= 0.95; publish call p99 <= 1 ms.

Run (on the benchmarks' own Kafka and S3, :mod:`benchmarks.bench_stack`, started if needed)::

    .venv/bin/python -m benchmarks.detector_publish --rounds 8 --seconds 8 --concurrency 2
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from benchmarks.bench_stack import own_stack
from driftstream.settings import Settings
from driftstream.stack import process
from producers.contracts import (
    DETECTOR_PREDICTIONS,
    Detection,
    DetectorPrediction,
    ImageProperties,
    new_event_id,
    now,
)
from producers.idcard_scenes import generate_scene, scene_rng
from producers.publisher import PUBLISH_ENABLED_ENV, EventPublisher

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Service:
    """One detector process on a free port, publishing on or off."""

    def __init__(self, settings: Settings, publish: bool, state_dir: Path) -> None:
        self.publish = publish
        self.port = _free_port()
        self.url = f"http://{settings.host}:{self.port}"
        log = state_dir / "logs" / f"bench-detector-{'on' if publish else 'off'}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT), DRIFTSTREAM_STATE_DIR=str(state_dir),
                   DRIFTSTREAM_DETECTOR_PORT=str(self.port), DRIFTSTREAM_KAFKA_PORT=str(settings.kafka_port),
                   DRIFTSTREAM_S3_PORT=str(settings.s3_port),
                   **{PUBLISH_ENABLED_ENV: "1" if publish else "0"})
        self.rec = process.spawn([sys.executable, "-m", "serving.detector_service"], env=env, cwd=ROOT, log_file=log,
                                 pid_file=state_dir / "run" / f"bench-detector-{'on' if publish else 'off'}.pid")
        self.log = log

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        process.wait_ready(self.rec, lambda: process.http_ok(self.url + "/readyz", timeout_s=2), name="detector",
                           log_file=self.log, timeout_s=timeout_s)

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL after 30 s; BentoML workers that left its group the same way."""
        process.stop(self.rec, timeout_s=30)


def _stats() -> dict[int, list[str]]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
    return out


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (BentoML's workers run in
    sessions of their own, so a process group would miss them)."""
    stats = _stats()
    total = sum(int(stats[pid][11]) + int(stats[pid][12])  # utime, stime
                for pid in [root, *(d.pid for d in process.descendants(root))] if pid in stats)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    requests: int
    seconds: float
    latencies_ms: list[float]
    service_cpu_s: float = 0.0
    kafka_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def load_round(url: str, pool: list[bytes], seconds: float, concurrency: int, service_pid: int | None = None,
               kafka_pid: int | None = None) -> Round:
    """Closed loop: ``concurrency`` clients post back to back for ``seconds``; CPU of the given processes."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    errors: list[str] = []

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            upload = {"image": ("s.jpg", pool[i % len(pool)], "image/jpeg")}
            resp = session.post(url + "/invocation", files=upload, timeout=60)
            ms = (time.perf_counter() - t0) * 1000
            if resp.status_code != 200:
                errors.append(resp.text[:200])
            with lock:
                latencies.append(ms)
            i += concurrency

    cpu0 = cpu_seconds(service_pid) if service_pid else 0.0
    kafka0 = cpu_seconds(kafka_pid) if kafka_pid else 0.0
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    elapsed = time.monotonic() - start
    return Round(len(latencies), elapsed, latencies,
                 service_cpu_s=cpu_seconds(service_pid) - cpu0 if service_pid else 0.0,
                 kafka_cpu_s=cpu_seconds(kafka_pid) - kafka0 if kafka_pid else 0.0)


def time_publish_calls(settings: Settings, state_dir: Path, n: int,
                       inline_jpeg: bytes) -> dict[str, list[float]]:
    """Per-call seconds of publish (predictions) and publish_input (inline and claim-check)."""
    timings: dict[str, list[float]] = {"publish (prediction)": [], "publish_input (inline)": [],
                                       "publish_input (claim-check)": []}
    big = os.urandom(settings.claim_check_bytes + 1)
    bench = Settings(state_dir=state_dir, kafka_port=settings.kafka_port, s3_port=settings.s3_port)
    with EventPublisher(bench, "bench") as pub:
        for i in range(n):
            t = now()
            ev = DetectorPrediction(
                event_id=new_event_id(), request_id=uuid.uuid4().hex, model_name="idcard-yolov8n",
                model_version="bench", event_time=t, published_at=t, latency_ms=40.0,
                detections=[Detection([10.0, 20.0, 300.0, 200.0], "id_card", 0.91)],
                image=ImageProperties(0.75, 307200.0, 0.45, 0.2, 0.34, 0.33, 0.33))
            t0 = time.perf_counter()
            pub.publish(DETECTOR_PREDICTIONS, b"idcard-yolov8n", ev)
            timings["publish (prediction)"].append(time.perf_counter() - t0)
            if i % 10 == 0:
                t0 = time.perf_counter()
                pub.publish_input(uuid.uuid4().hex, "image/jpeg", inline_jpeg, t)
                timings["publish_input (inline)"].append(time.perf_counter() - t0)
            if i % 100 == 0:
                t0 = time.perf_counter()
                pub.publish_input(uuid.uuid4().hex, "image/png", big, t)
                timings["publish_input (claim-check)"].append(time.perf_counter() - t0)
            time.sleep(0.0005)  # a request rate, not a tight loop
        left = pub.flush(60)
    if left:
        raise RuntimeError(f"{left} benchmark events were not acknowledged")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="load rounds per configuration")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one round")
    parser.add_argument("--concurrency", type=int, default=2, help="closed-loop clients")
    parser.add_argument("--publish-calls", type=int, default=5000, help="timed publish calls")
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds of load per service before the rounds (a fresh broker's JIT is slow)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1 or args.publish_calls < 100 or args.warmup < 0:
        parser.error("need rounds >= 1, seconds > 0, concurrency >= 1, publish-calls >= 100, warmup >= 0")

    with own_stack(["kafka", "s3"]) as settings:
        state_dir = settings.abs_state_dir / "detector_publish"
        pool = [_jpeg(generate_scene(scene_rng(0, "val", i)).image) for i in range(16)]

        kafka = process.read_pid(settings.abs_state_dir / "run" / "kafka.pid")
        kafka_pid = kafka.pid if kafka else None
        services = {"off": Service(settings, False, state_dir / "off"),
                    "on": Service(settings, True, state_dir / "on")}
        rounds: dict[str, list[Round]] = {"off": [], "on": []}
        try:
            for svc in services.values():
                svc.wait_ready()
            for svc in services.values():
                load_round(svc.url, pool, args.warmup, args.concurrency)
            for r in range(args.rounds):
                for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    rounds[name].append(load_round(services[name].url, pool, args.seconds, args.concurrency,
                                                   services[name].rec.pid, kafka_pid))
                    last = rounds[name][-1]
                    print(f"round {r + 1} publish {name:3s}: {last.throughput:6.2f} req/s", file=sys.stderr)
        finally:
            for svc in services.values():
                svc.stop()
        calls = time_publish_calls(settings, state_dir / "publisher", args.publish_calls, pool[0])

    print(f"\nDetector service, {args.concurrency} closed-loop clients, {args.rounds} x {args.seconds:.0f} s "
          f"rounds per setting (alternating), {os.cpu_count()} CPUs, "
          f"{settings.detector_inference_threads} inference thread(s), linger {settings.publish_linger_ms} ms\n")
    print("| publishing | throughput (req/s) | p50 latency (ms) | p99 latency (ms) | requests "
          "| service CPU (ms/req) | Kafka CPU (ms/req) |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name in ("off", "on"):
        lat = [x for rd in rounds[name] for x in rd.latencies_ms]
        tput = statistics.median(rd.throughput for rd in rounds[name])
        summary[name] = tput
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        svc_cpu = 1000 * sum(rd.service_cpu_s for rd in rounds[name]) / len(lat)
        kafka_cpu = 1000 * sum(rd.kafka_cpu_s for rd in rounds[name]) / len(lat)
        print(f"| {name} | {tput:.2f} | {p50:.1f} | {p99:.1f} | {len(lat)} "
              f"| {svc_cpu:.1f} | {kafka_cpu:.1f} |")
    paired = [on.throughput / off.throughput for on, off in zip(rounds["on"], rounds["off"], strict=True)]
    ratio = statistics.median(paired)
    overall = {name: sum(rd.requests for rd in rounds[name]) / sum(rd.seconds for rd in rounds[name])
               for name in ("off", "on")}
    verdict = "met" if ratio >= 0.95 else "NOT met"
    print(f"\nthroughput ratio on/off: {ratio:.3f}, median of {len(paired)} paired rounds "
          f"(range {min(paired):.3f}-{max(paired):.3f}; ratio of the medians {summary['on'] / summary['off']:.3f}, "
          f"of all requests {overall['on'] / overall['off']:.3f}) "
          f"(target >= 0.95: {verdict})\n")
    print("| call | calls | p50 (us) | p99 (us) | max (us) |")
    print("|---|---|---|---|---|")
    for name, secs in calls.items():
        us = np.array(secs) * 1e6
        p50, p99 = np.percentile(us, 50), np.percentile(us, 99)
        print(f"| {name} | {len(us)} | {p50:.1f} | {p99:.1f} | {us.max():.1f} |")
    p99 = float(np.percentile(calls["publish (prediction)"], 99)) * 1e3
    print(f"\npublish call p99: {p99:.3f} ms (target <= 1 ms: {'met' if p99 <= 1.0 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
