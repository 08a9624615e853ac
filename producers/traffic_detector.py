"""Traffic for the running detector: synthetic ID-card scenes at a steady rate, optionally shifted.

``run(settings, rate, count, transforms)`` renders a pool of distinct scenes
(:mod:`producers.idcard_scenes`, seeded), applies the transforms
(:mod:`producers.image_transforms`, e.g. ``brightness=0.6`` for the chapter's drift), encodes
them as JPEG and posts them to ``/invocation`` on an open-loop schedule (request ``i`` leaves
at ``i / rate`` seconds) from a small thread pool. Every request carries a W3C ``traceparent``
so its log lines and events can be found. The run is bounded in time; the report gives the
achieved rate and latency percentiles.

Command (the CLI hook calls ``main``)::

    driftstream traffic detector --rate 5 --count 200 --transform brightness=0.6

>>> report = TrafficReport(sent=4, ok=3, statuses={200: 3, 422: 1}, elapsed_s=2.0, latencies_ms=[10, 20, 30])
>>> report.achieved_rate, report.percentile(50)
(2.0, 20.0)

Reference: open-loop load generation, B. Schroeder et al., "Open Versus Closed: A Cautionary
Tale", NSDI 2006.
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import requests
from PIL import Image

from driftstream.settings import Settings, get_settings
from producers.idcard_scenes import generate_scene, scene_rng
from producers.image_transforms import parse_transforms
from producers.open_loop import run_open_loop


@dataclass
class TrafficReport:
    sent: int
    ok: int
    statuses: dict[int | str, int]
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)
    detections: int = 0
    transforms: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    @property
    def achieved_rate(self) -> float:
        """Requests completed per second of the run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms of the completed requests (nan when none completed)."""
        if not 0 <= q <= 100:
            raise ValueError(f"q must be in [0, 100], got {q}")
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0])))
        return (f"sent {self.sent} in {self.elapsed_s:.1f}s ({self.achieved_rate:.2f} req/s), ok {self.ok}, "
                f"failed {self.failed} [{codes}]; latency ms p50 {self.percentile(50):.1f} "
                f"p90 {self.percentile(90):.1f} p99 {self.percentile(99):.1f}; detections {self.detections}"
                + (f"; transforms {' '.join(self.transforms)}" if self.transforms else ""))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an H x W x 3 uint8 RGB array.

    >>> encode_jpeg(np.zeros((8, 8, 3), np.uint8))[:2]
    b'\\xff\\xd8'
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def scene_pool(n: int, transforms: Sequence[str] = (), seed: int = 0, quality: int = 90) -> list[bytes]:
    """``n`` distinct seeded scenes, shifted by ``transforms``, as JPEG bytes."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    shift = parse_transforms(list(transforms), seed=seed)
    return [encode_jpeg(shift(generate_scene(scene_rng(seed, "val", i)).image), quality) for i in range(n)]


def _traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def run(settings: Settings, rate: float, count: int, transforms: Sequence[str] = (), *, seed: int = 0,
        workers: int = 4, distinct: int = 48, url: str | None = None, request_timeout_s: float = 30.0,
        max_duration_s: float | None = None, progress: bool = True) -> TrafficReport:
    """Post ``count`` scenes at ``rate`` a second; stop at ``max_duration_s`` (default 1.5x plan + 60 s)."""
    if rate <= 0 or count < 1 or workers < 1 or distinct < 1:
        raise ValueError(f"rate must be > 0 and count, workers, distinct >= 1; "
                         f"got {rate}, {count}, {workers}, {distinct}")
    parse_transforms(list(transforms))  # a bad spec fails before anything is generated
    target = url or f"http://{settings.host}:{settings.detector_port}/invocation"
    if progress:
        print(f"rendering {min(count, distinct)} scene(s)"
              + (f" with {' '.join(transforms)}" if transforms else ""), file=sys.stderr, flush=True)
    pool = scene_pool(min(count, distinct), transforms, seed)
    budget = max_duration_s if max_duration_s is not None else 1.5 * count / rate + 60.0

    local = threading.local()
    lock = threading.Lock()
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []
    detections = 0

    def send(i: int) -> None:
        nonlocal detections
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        t0 = time.perf_counter()
        try:
            upload = {"image": (f"scene-{i}.jpg", pool[i % len(pool)], "image/jpeg")}
            resp = session.post(target, files=upload, headers={"traceparent": _traceparent()},
                                timeout=request_timeout_s)
            status: int | str = resp.status_code
            found = len(resp.json().get("detections", [])) if resp.status_code == 200 else 0
        except requests.RequestException as exc:
            status, found = type(exc).__name__, 0
        latency = (time.perf_counter() - t0) * 1000.0
        with lock:
            statuses[status] += 1
            detections += found
            if status == 200:
                latencies.append(latency)

    elapsed = run_open_loop((partial(send, i) for i in range(count)), count=count, rate=rate, budget_s=budget,
                            workers=workers, progress_desc="detector traffic" if progress else None)
    with lock:
        return TrafficReport(sent=sum(statuses.values()), ok=statuses.get(200, 0), statuses=dict(statuses),
                             elapsed_s=elapsed, latencies_ms=list(latencies), detections=detections,
                             transforms=list(transforms))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="driftstream traffic detector",
                                     description="Send synthetic ID-card scenes to the running detector.")
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second (default 2)")
    parser.add_argument("--count", type=int, default=50, help="number of requests (default 50)")
    parser.add_argument("--transform", action="append", default=[], metavar="NAME=VALUE",
                        help="shift every image, e.g. brightness=0.6, contrast=0.5, colour_cast=warm, "
                             "blur=2, resize=0.5, noise=8 (repeatable, applied in order)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--workers", type=int, default=4, help="concurrent requests")
    parser.add_argument("--distinct", type=int, default=48, help="distinct scenes to cycle through")
    parser.add_argument("--url", default=None, help="override the /invocation URL")
    parser.add_argument("--max-duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        report = run(get_settings(), args.rate, args.count, args.transform, seed=args.seed,
                     workers=args.workers, distinct=args.distinct, url=args.url,
                     max_duration_s=args.max_duration)
    except ValueError as exc:
        parser.error(str(exc))
    print(report.summary())
    return 0 if report.sent and report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
