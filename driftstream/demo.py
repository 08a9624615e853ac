"""``make demo``: the whole pipeline end to end, on a fresh machine, in a few minutes.

1. start everything (Kafka, S3, Prometheus, Alertmanager, alerts receiver, both services,
   the stream workers and the batch worker), with the short window preset;
2. build the training references of both models;
3. replay normal traffic to both services, then drifted traffic (detector: brightness x0.6;
   recommender: items 1-100 rated +1 and a popularity shift);
4. wait until the stream flags the drift and Alertmanager delivers the alerts;
5. print a summary: detection delays, alerts that reached the receiver, reports, heatmaps
   and explanations in S3 (with local copies) and the dashboard PNGs.

Exit status 0 only if both drifts were detected and alerted and nothing was detected
during the normal phase.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DRIFTSTREAM_WINDOW_PRESET", "short")

from driftstream.object_store import ObjectStore  # noqa: E402
from driftstream.settings import Settings, get_settings  # noqa: E402
from driftstream.stack import stack  # noqa: E402

SERVICES = ["alerts-receiver", "detector", "recommender"]
WORKERS = ["stream-detector", "stream-recommender", "batch"]
DRIFT_ALERTS = {"detector": "ImagePropertyDrift", "recommender": "RecommenderDrift"}


@dataclass
class Phase:
    model: str
    normal_start: float = 0.0
    drift_start: float = 0.0
    drift_end: float = 0.0
    reports: list[Any] = field(default_factory=list)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _drift_windows(store: ObjectStore, model: str) -> list[dict[str, Any]]:
    out = []
    for key in store.list(f"drift/{model}/"):
        try:
            out.append(json.loads(store.get(key)))
        except Exception:
            continue
    return sorted(out, key=lambda d: d["window_start"])


def _detector_traffic(settings: Settings, phase: Phase, rate: float, seconds: float) -> None:
    from producers.traffic_detector import run

    count = int(rate * seconds)
    phase.normal_start = time.time()
    phase.reports.append(run(settings, rate, count, (), seed=1, distinct=count, workers=4, progress=False))
    phase.drift_start = time.time()
    phase.reports.append(run(settings, rate, count, ("brightness=0.6",), seed=2, distinct=count, workers=4,
                             progress=False))
    phase.drift_end = time.time()


def _recommender_traffic(settings: Settings, phase: Phase, rate: float, seconds: float) -> None:
    from producers.traffic_recommender import run

    count = int(rate * seconds)
    phase.normal_start = time.time()
    phase.reports.append(run(settings, rate, count, seed=1, progress=False))
    phase.drift_start = time.time()
    phase.reports.append(run(settings, rate, count, drift_items=range(1, 101), drift_amount=1.0,
                             popularity_shift="items=1-100,factor=30", seed=2, progress=False))
    phase.drift_end = time.time()


def _progress_until(threads: list[threading.Thread], phases: list[Phase], store: ObjectStore) -> None:
    while any(t.is_alive() for t in threads):
        time.sleep(10)
        parts = []
        for ph in phases:
            state = "drifted" if ph.drift_start else "normal"
            windows = _drift_windows(store, ph.model)
            parts.append(f"{ph.model}: {state} traffic, {len(windows)} windows scored")
        _say("   " + "; ".join(parts))


def _wait_for_detection(store: ObjectStore, phase: Phase, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in _drift_windows(store, phase.model):
            if w["window_end"] > phase.drift_start and w["result"].get("model_drift_detected"):
                return w
        time.sleep(2)
    return None


def _alerts(settings: Settings) -> list[dict[str, Any]]:
    from driftstream.alerts_receiver import read_alerts
    from driftstream.stack.app_components import alerts_record_path

    return read_alerts(alerts_record_path(settings))


def _wait_for_alert(settings: Settings, alertname: str, since: float, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for a in _alerts(settings):
            if a.get("alertname") == alertname and a.get("status") == "firing" and a.get("received_at", 0) >= since:
                return a
        time.sleep(2)
    return None


def _download(store: ObjectStore, prefix: str, out: Path) -> list[str]:
    keys = list(store.list(prefix))
    for key in keys:
        dest = out / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(store.get(key))
    return keys


def main() -> int:
    t0 = time.monotonic()
    settings = get_settings()
    demo_dir = settings.abs_state_dir / "demo"
    _say("== driftstream demo ==")
    _say(f"state dir {settings.abs_state_dir}; windows (size, hop, tumbling, grace) = {settings.effective_windows()}")

    _say("\n-- 1. starting the stack")
    stack.up(settings, stack.CORE + SERVICES, log=lambda line: _say("   " + line))

    _say("\n-- 2. building the training references")
    from batch.reference_build import build_reference, describe

    for model in ("detector", "recommender"):
        _say("   " + describe(build_reference(settings, model, progress=False)))
    stack.up(settings, WORKERS, log=lambda line: _say("   " + line))

    from driftstream import roundtrip

    rt = roundtrip.run(settings, n_events=10)
    _say(f"   smoke round trip through Kafka and S3: {'ok' if rt.ok else 'FAILED'}")

    _say("\n-- 3. traffic: normal, then drifted (detector brightness x0.6; recommender items 1-100 +1, "
         "popularity shift)")
    store = ObjectStore(settings)
    phases = [Phase("detector"), Phase("recommender")]
    seconds = float(os.environ.get("DRIFTSTREAM_DEMO_PHASE_S", "60"))
    threads = [
        threading.Thread(target=_detector_traffic, args=(settings, phases[0], 6.0, seconds), daemon=True),
        threading.Thread(target=_recommender_traffic, args=(settings, phases[1], 20.0, seconds), daemon=True),
    ]
    for t in threads:
        t.start()
    _progress_until(threads, phases, store)
    for ph in phases:
        for r in ph.reports:
            _say(f"   {ph.model}: {r.summary()}")

    _say("\n-- 4. waiting for drift detection and alerts")
    results: dict[str, dict[str, Any]] = {}
    for ph in phases:
        first = _wait_for_detection(store, ph, timeout_s=90)
        false_alarms = [w for w in _drift_windows(store, ph.model)
                        if ph.normal_start <= w["window_start"] and w["window_end"] <= ph.drift_start
                        and w["result"].get("model_drift_detected")]
        alert = _wait_for_alert(settings, DRIFT_ALERTS[ph.model], ph.drift_start, timeout_s=90) if first else None
        results[ph.model] = {"first": first, "false_alarms": false_alarms, "alert": alert}
        if first:
            delay = first["closed_at"] - ph.drift_start
            feats = sorted(k for k, v in first["result"]["drift"].items() if v.get("drift_detected"))
            _say(f"   {ph.model}: drift detected {delay:.0f}s after onset (window "
                 f"{time.strftime('%H:%M:%S', time.gmtime(first['window_start']))}Z, features {feats})")
        else:
            _say(f"   {ph.model}: drift NOT detected")
        _say(f"   {ph.model}: {len(false_alarms)} windows flagged during the normal phase")
        _say(f"   {ph.model}: alert {DRIFT_ALERTS[ph.model]} "
             + ("reached the receiver" if alert else "did NOT reach the receiver"))

    _say("\n-- 5. batch reports, heatmaps, explanations")
    time.sleep(5)
    keys = _download(store, "reports/", demo_dir)
    by_job: dict[str, int] = {}
    for k in keys:
        parts = k.split("/")
        job = parts[3] if len(parts) > 4 else parts[-1]
        by_job[job] = by_job.get(job, 0) + 1
    for job, n in sorted(by_job.items()):
        _say(f"   {job:28s} {n:4d} objects")
    _say(f"   local copies under {demo_dir / 'reports'}; index: s3://{settings.s3_bucket}/reports/index.html")

    _say("\n-- 6. dashboards")
    from driftstream.dashboards import render_png

    pngs = render_png(f"http://{settings.host}:{settings.prometheus_port}", demo_dir / "dashboards", minutes=10)
    for p in pngs or []:
        _say(f"   {p}")

    ok = all(r["first"] and r["alert"] and not r["false_alarms"] for r in results.values())
    _say("\n-- summary")
    for model, r in results.items():
        delay = f"{r['first']['closed_at'] - next(p for p in phases if p.model == model).drift_start:.0f}s" \
            if r["first"] else "-"
        _say(f"   {model:12s} detected={'yes' if r['first'] else 'NO':3s} delay={delay:>5s} "
             f"alerted={'yes' if r['alert'] else 'NO':3s} false_alarms={len(r['false_alarms'])}")
    _say(f"\ndemo {'OK' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s "
         "(the stack keeps running: `driftstream stack down` stops it)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
