"""What the recommender costs: ``/recommend`` throughput and p99 latency with and without publishing,
and the time to train the served model.

    .venv/bin/python -m benchmarks.recommender [--rounds 10] [--seconds 3] [--concurrency 4] [--write-docs]

1. Two services run side by side from the same model, one publishing every request to Kafka
   and one with ``DRIFTSTREAM_PUBLISH_ENABLED=0``; each round loads one and then the other
   for ``--seconds`` (closed loop, ``--concurrency`` keep-alive connections), so drift in the
   machine's load hits both alike. The requests are drawn from the model's training ratings
   like the traffic generator's (30% with 20 ``ranked_movies``, 2% unknown users).
2. What publishing adds to a request in the handler itself: ``EventPublisher.publish`` of a
   typical request event (encode and enqueue), timed in this process against the same Kafka.
3. ``python -m serving.recommender.train --no-eval`` into a temporary directory: the wall time
   of the whole command (data generation, imports, neighbours, fitting) and the fit alone.

The load generator shares the machine's cores with the service, so the requests per second
are a floor of what the service does alone. It runs on the benchmarks' own Kafka
(:mod:`benchmarks.bench_stack`), started if needed. ``--write-docs`` puts the table into
``docs/recommender_service.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_stack import own_stack
from driftstream.settings import Settings
from driftstream.stack import process
from producers.contracts import RECOMMENDER_REQUESTS
from producers.movielens import RequestSampler

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "recommender_service.md"
BEGIN, END = "<!-- benchmark:recommender -->", "<!-- /benchmark:recommender -->"
READY_TIMEOUT_S = 180.0


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def request_bodies(model_dir: Path, n: int = 2000, seed: int = 0) -> list[bytes]:
    """``n`` request bodies drawn from the training ratings stored with the model."""
    with np.load(model_dir / "recommender.npz") as z:
        rows, users, items = z["rating_rows"].astype(np.int64), z["user_ids"], z["item_ids"]
    ratings = pd.DataFrame({"userId": users[rows[:, 0]], "itemId": items[rows[:, 1]], "rating": rows[:, 2]})
    sampler = RequestSampler(ratings, ranked_share=0.3, unknown_user_share=0.02, seed=seed)
    return [json.dumps({"user_id": u, "k": 10, "ranked_movies": r}).encode() for u, r in sampler.sample_many(n)]


def start_service(port: int, model_dir: Path, publish: bool, state_dir: Path, log_file: Path) -> process.PidRecord:
    """The service on ``port``, with a state dir (spool, BentoML home) of its own."""
    env = dict(os.environ, DRIFTSTREAM_RECOMMENDER_PORT=str(port), DRIFTSTREAM_RECOMMENDER_MODEL_DIR=str(model_dir),
               DRIFTSTREAM_PUBLISH_ENABLED="1" if publish else "0", DRIFTSTREAM_STATE_DIR=str(state_dir),
               PYTHONPATH=str(ROOT))
    return process.spawn([sys.executable, "-m", "serving.recommender_service"], env=env, cwd=ROOT,
                         log_file=log_file, pid_file=state_dir / "run" / "recommender.pid")


def wait_ready(rec: process.PidRecord, url: str, log_file: Path) -> None:
    process.wait_ready(rec, lambda: process.http_ok(url + "/readyz", timeout_s=2), name="recommender",
                       log_file=log_file, timeout_s=READY_TIMEOUT_S)


def load(host: str, port: int, bodies: list[bytes], seconds: float, concurrency: int) -> LoadResult:
    """Closed-loop load: ``concurrency`` keep-alive connections, each sending its next request on a reply."""
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}

    def client(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine: list[float] = []
        bad = 0
        i = offset
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += concurrency
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/recommend", body, headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                ok = False
            if ok:
                mine.append((time.perf_counter() - t0) * 1000.0)
            else:
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - t0
    return LoadResult(len(latencies), errors, elapsed, latencies)


def published_events(url: str) -> float:
    """Events of the requests topic the service has handed to Kafka or its spool."""
    text = requests.get(url + "/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "driftstream_publish_events_total" and s.labels.get("topic") == RECOMMENDER_REQUESTS \
                    and s.labels.get("outcome") in ("published", "spooled"):
                total += s.value
    return total


def publish_call_cost(n: int = 20_000) -> tuple[float, float, int]:
    """(median, p99) microseconds of one ``publish`` call of a 10-item request event, and events not delivered."""
    from producers.contracts import RecommendedItem, RecommenderRequest, new_event_id, now
    from producers.publisher import EventPublisher

    with tempfile.TemporaryDirectory(prefix="bench-recommender-publish-") as tmp:
        publisher = EventPublisher(Settings(state_dir=Path(tmp)), "bench-recommender")
        items = [RecommendedItem(100 + i, 4.5 - i / 10, i + 1, i % 3 > 0) for i in range(10)]
        costs = np.empty(n)
        try:
            for i in range(n):
                t = now()
                event = RecommenderRequest(
                    event_id=new_event_id(), request_id=new_event_id(), model_name="movie-recommender",
                    model_version="bench", event_time=t, published_at=t, latency_ms=1.0, user_id=i % 943, k=10,
                    ranked_movies_present=False, items=items, explanation_coverage=0.7, fallback=False)
                t0 = time.perf_counter()
                publisher.publish(RECOMMENDER_REQUESTS, b"bench", event)
                costs[i] = time.perf_counter() - t0
            left = publisher.flush(30.0)
        finally:
            publisher.close(timeout_s=5.0)
    return float(np.median(costs) * 1e6), float(np.percentile(costs, 99) * 1e6), left


def time_training(epochs: int) -> tuple[float, float, int]:
    """(wall seconds of the train command, fit seconds from its card, ratings) on the synthetic set."""
    with tempfile.TemporaryDirectory(prefix="bench-recommender-") as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "serving.recommender.train", "--out", tmp, "--no-eval",
                        "--epochs", str(epochs)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=1800)
        wall = time.perf_counter() - t0
        card = json.loads((Path(tmp) / "model_card.json").read_text())
    return wall, float(card["training"]["fit_seconds"]), int(card["data"]["n_ratings"])


def markdown(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def write_docs(command: str, table: str, load_avg: tuple[float, float]) -> None:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"{DOC} has no {BEGIN} ... {END} block")
    block = (f"{BEGIN}\nMeasured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} cores ({platform.machine()}), "
             f"the load generator on the same cores; the machine's 1-minute load average was "
             f"{load_avg[0]:.1f} before and {load_avg[1]:.1f} after the HTTP rounds:\n\n```\n{command}\n```\n\n"
             f"{table}\n{END}")
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + block + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="load rounds per mode (alternating)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of load per round")
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent keep-alive connections")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="model to serve (default: $DRIFTSTREAM_RECOMMENDER_MODEL_DIR or serving/models/recommender)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the timed training run")
    ap.add_argument("--skip-training", action="store_true", help="do not time the training")
    ap.add_argument("--write-docs", action="store_true", help=f"write the table into {DOC.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1 or args.epochs < 1:
        ap.error("rounds, concurrency and epochs must be >= 1 and seconds > 0")
    model_dir = args.model_dir or Path(os.environ.get("DRIFTSTREAM_RECOMMENDER_MODEL_DIR")
                                       or ROOT / "serving" / "models" / "recommender")
    if not (model_dir / "recommender.npz").is_file():
        ap.error(f"no model in {model_dir}: run python -m serving.recommender.train --out {model_dir}")
    with own_stack(["kafka"]) as settings:
        bodies = request_bodies(model_dir)
        load_before = os.getloadavg()[0]
        ports = {True: settings.recommender_port + 100, False: settings.recommender_port + 101}
        logs = {p: settings.abs_state_dir / "logs" / f"bench-recommender-{'publish' if p else 'nopublish'}.log"
                for p in ports}
        state = Path(tempfile.mkdtemp(prefix="bench-recommender-state-"))
        procs = {p: start_service(ports[p], model_dir, p, state / ("publish" if p else "nopublish"), logs[p])
                 for p in ports}
        results: dict[bool, list[LoadResult]] = {True: [], False: []}
        events = 0.0
        try:
            for p in ports:
                url = f"http://{settings.host}:{ports[p]}"
                wait_ready(procs[p], url, logs[p])
                load(settings.host, ports[p], bodies, 2.0, args.concurrency)  # warm-up
            before = published_events(f"http://{settings.host}:{ports[True]}")
            for r in range(args.rounds):
                for p in (True, False) if r % 2 == 0 else (False, True):
                    res = load(settings.host, ports[p], bodies, args.seconds, args.concurrency)
                    results[p].append(res)
                    print(f"  round {r + 1} {'publishing' if p else 'not publishing':15s} {res.rps:7.0f} req/s  "
                          f"p99 {res.percentile(99):6.1f} ms  errors {res.errors}")
            time.sleep(1.0)
            events = published_events(f"http://{settings.host}:{ports[True]}") - before
        finally:
            for rec in procs.values():
                process.stop(rec, timeout_s=30)
            shutil.rmtree(state, ignore_errors=True)

        load_after = os.getloadavg()[0]
        print("timing publish() calls")
        median_us, p99_us, undelivered = publish_call_cost()
    rows: list[tuple[str, ...]] = []
    for p in (False, True):
        runs = results[p]
        lat = [x for res in runs for x in res.latencies_ms]
        n, secs = sum(r.requests for r in runs), sum(r.seconds for r in runs)
        rows.append((f"/recommend, publishing {'on' if p else 'off'}", f"{n / secs:,.0f} req/s",
                     f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms",
                     f"{n} requests, {sum(r.errors for r in runs)} errors"
                     + (f", {events:.0f} events published" if p else "")))
    rows.append(("publish() call on the request path", f"{median_us:.0f} µs median", f"p99 {p99_us:.0f} µs",
                  f"encode + enqueue of a 10-item event; {undelivered} of 20000 undelivered after flush"))
    if not args.skip_training:
        print(f"timing training ({args.epochs} epochs)")
        wall, fit, n_ratings = time_training(args.epochs)
        rows.append((f"training EMF, {n_ratings:,} ratings, {args.epochs} epochs", f"{wall:.0f} s (command)",
                     f"{fit:.0f} s (fit)", "python -m serving.recommender.train --no-eval"))
    table = markdown(rows, ("measure", "throughput / time", "latency / part", "notes"))
    print()
    print(table)
    if args.write_docs:
        command = ".venv/bin/python -m benchmarks.recommender " + " ".join(argv if argv is not None else sys.argv[1:])
        write_docs(command.strip(), table, (load_before, load_after))
        print(f"\nwrote the table into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
