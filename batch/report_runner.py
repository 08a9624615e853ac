"""Run the report jobs of archived windows, record their outcome, list and summarise them.

For one window, :func:`run_window_jobs` checks the archive (the manifest exists, every
object matches its checksum), then runs the model family's jobs one after the other:
detector windows get ``image_drift`` and ``heatmaps``, recommender windows
``recommender_drift`` and ``explanations``. Each job's files go to
``reports/<model>/<label>/<job>/`` with a ``status.json`` (ok or failed, with the reason);
a failure of one job or one window never stops the next. :func:`report` runs the same
jobs on demand (``--window`` or ``--since``), :func:`list_reports` lists what exists and
:func:`run_summary` writes the summary of a period and regenerates the report index.

Window references on the command line may be a label, an ISO time or epoch seconds:

>>> from driftstream.settings import Settings
>>> s = Settings(window_preset="default", tumbling_size_s=300)
>>> window_start_of(s, "20261203T171500Z"), window_start_of(s, "2026-12-03T17:16:40Z")
(1796318100.0, 1796318100.0)
>>> window_start_of(s, "1796318399.5")
1796318100.0
>>> parse_since("90m"), parse_since("1h"), parse_since("2d")
(datetime.timedelta(seconds=5400), datetime.timedelta(seconds=3600), datetime.timedelta(days=2))
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import mimetypes
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow.parquet as pq
from botocore.exceptions import ClientError
from prometheus_client import Counter, Gauge

from batch.job_status import JobFailed, JobResult
from batch.window_keys import (
    MODELS,
    REPORTS_ROOT,
    WINDOWS_ROOT,
    Manifest,
    events_key,
    inputs_key,
    iso_utc,
    manifest_key,
    parse_window_label,
    report_key,
    report_prefix,
    sha256_hex,
    window_label,
)
from driftstream.object_store import ObjectStore
from driftstream.settings import Settings

log = logging.getLogger(__name__)

JOBS_TOTAL = Counter("driftstream_batch_jobs", "Batch job runs by outcome", ["job", "status"])
JOB_LAST_STATUS = Gauge("driftstream_batch_job_last_status", "Outcome of the job's last run (1 ok, 0 failed)",
                        ["job"])
JOB_DURATION = Gauge("driftstream_batch_job_duration_seconds", "Duration of the job's last run", ["job"])

STATUS_NAME = "status.json"
SUMMARY_ROOT = f"{REPORTS_ROOT}/summary"
INDEX_KEY = f"{REPORTS_ROOT}/index.html"
SUMMARY_INTERVAL_ENV = "DRIFTSTREAM_SUMMARY_INTERVAL_S"
DEFAULT_SUMMARY_INTERVAL_S = 3600.0


def summary_interval_s() -> float:
    """Seconds between periodic summaries: ``DRIFTSTREAM_SUMMARY_INTERVAL_S`` (default 3600)."""
    raw = os.environ.get(SUMMARY_INTERVAL_ENV, "")
    if not raw.strip():
        return DEFAULT_SUMMARY_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SUMMARY_INTERVAL_ENV} must be a number of seconds, got {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{SUMMARY_INTERVAL_ENV} must be positive, got {raw!r}")
    return value


# --- a window's archived data, checked on the way in ------------------------------------------


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


@dataclass
class WindowData:
    """Lazy, verified access to one archived window; every problem is a :class:`JobFailed`."""

    store: ObjectStore
    manifest: Manifest
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, store: ObjectStore, model: str, window_start: float) -> WindowData:
        key = manifest_key(model, window_start)
        try:
            raw = store.get(key)
        except ClientError as exc:
            if _missing(exc):
                raise JobFailed(f"no archived window at {key} (an empty window is not archived)") from None
            raise
        try:
            return cls(store, Manifest.from_json(raw))
        except (ValueError, TypeError) as exc:
            raise JobFailed(f"corrupt object {key}: {exc}") from None

    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def label(self) -> str:
        return self.manifest.label

    def _get(self, key: str, bucket: str | None = None) -> bytes:
        try:
            if bucket is None or bucket == self.store.bucket:
                return self.store.get(key)
            return self.store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise JobFailed(f"missing object {bucket or self.store.bucket}/{key}") from None
            raise

    def verified(self, key: str) -> bytes:
        """An object of the window, checked against the manifest's sha256."""
        meta = self.manifest.objects.get(key)
        if meta is None:
            raise JobFailed(f"object {key} is not in the manifest {self.manifest.key}")
        data = self._get(key)
        digest = sha256_hex(data)
        if digest != meta["sha256"]:
            raise JobFailed(f"corrupt object {key}: sha256 {digest[:12]}... does not match the manifest's "
                            f"{meta['sha256'][:12]}...")
        return data

    def verify_all(self) -> None:
        """Check every object of the window (missing or changed objects fail the window's jobs)."""
        for key in sorted(self.manifest.objects):
            self.verified(key)

    def _table(self, key: str) -> pd.DataFrame:
        data = self.verified(key)
        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except Exception as exc:  # checksum matched but the writer produced garbage
            raise JobFailed(f"corrupt object {key}: not readable Parquet ({exc})") from None

    def events(self) -> pd.DataFrame:
        """The window's events (``events.parquet``); an empty window fails."""
        if "events" not in self._cache:
            key = self.manifest.events_key or events_key(self.model, self.manifest.window_start)
            frame = self._table(key)
            if frame.empty:
                raise JobFailed(f"empty window: {self.manifest.events_key} has no events")
            self._cache["events"] = frame
        return self._cache["events"]

    def inputs(self) -> pd.DataFrame:
        """Detector: the window's inputs (request id -> image key or claim-check)."""
        if "inputs" not in self._cache:
            key = inputs_key(self.model, self.manifest.window_start)
            self._cache["inputs"] = self._table(key) if key in self.manifest.objects else pd.DataFrame()
        return self._cache["inputs"]

    def image_bytes(self, limit: int | None = None) -> dict[str, bytes]:
        """request_id -> encoded image, inline ones and claim-checked ones, each verified.

        A detector window without any input image fails with "window has no images".
        """
        frame = self.inputs()
        if frame.empty:
            raise JobFailed(f"window has no images: {self.manifest.key} lists no inputs")
        out: dict[str, bytes] = {}
        for row in frame.sort_values(["event_time", "request_id"]).itertuples(index=False):
            if limit is not None and len(out) >= limit:
                break
            if row.storage == "inline":
                data = self.verified(row.key)
            else:
                data = self._get(row.key, row.bucket)
                if sha256_hex(data) != row.sha256:
                    raise JobFailed(f"corrupt object {row.bucket}/{row.key}: sha256 does not match "
                                    "its claim-check")
            out[row.request_id] = data
        return out

    def reference(self) -> Any:
        """The ``ReferenceProfile`` the window was archived against (else the model's current one)."""
        if "reference" in self._cache:
            return self._cache["reference"]
        from stream_apps.reference_profile import ReferenceProfile
        from stream_apps.reference_store import ReferenceMissing, load_reference

        key = self.manifest.reference_key
        if key:
            try:
                data = self._get(key)
            except JobFailed:
                raise JobFailed(f"missing reference: version {self.manifest.reference_version} of model "
                                f"{self.model!r} is not at s3 key {key!r}") from None
            try:
                ref = ReferenceProfile.from_bytes(data)
            except (ValueError, KeyError, TypeError) as exc:
                raise JobFailed(f"corrupt object {key}: not a reference profile ({exc})") from None
        else:
            try:
                ref = load_reference(self.store, self.model)
            except ReferenceMissing as exc:
                raise JobFailed(f"missing reference: {exc}") from None
            except (ValueError, KeyError, TypeError) as exc:
                raise JobFailed(f"corrupt reference of model {self.model!r}: {exc}") from None
        self._cache["reference"] = ref
        return ref


# --- jobs -----------------------------------------------------------------------------------

Job = Callable[[WindowData, Path], JobResult]


def _reference_object(data: WindowData, name: str) -> bytes | None:
    """An object stored beside the window's reference profile (``references/<model>/<version>/<name>``)."""
    ref = data.reference()
    folder = data.manifest.reference_key.rsplit("/", 1)[0] if data.manifest.reference_key else \
        f"references/{data.model}/{ref.model_version}"
    try:
        return data.store.get(f"{folder}/{name}")
    except ClientError as exc:
        if _missing(exc):
            return None
        raise


def _image_drift(data: WindowData, out_dir: Path) -> JobResult:
    """Deepchecks ImagePropertyDrift of the window's archived properties against the reference's."""
    from batch.image_drift_report import image_drift_report_from_properties
    from producers.image_properties import PROPERTY_NAMES

    ref = data.reference()
    raw = _reference_object(data, "properties.parquet")
    if raw is not None:  # the reference's images as joint rows
        try:
            reference = pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:
            raise JobFailed(f"corrupt object properties.parquet of reference {ref.model_version}: "
                            f"{exc}") from None
    else:  # only the profile's per-property samples
        missing = [n for n in PROPERTY_NAMES if n not in ref.numeric]
        if missing:
            raise JobFailed(f"reference {data.manifest.reference_version} lacks the image properties "
                            f"{missing}")
        n = min(len(ref.numeric[name]) for name in PROPERTY_NAMES)
        reference = pd.DataFrame({name: ref.numeric[name][:n] for name in PROPERTY_NAMES})
    return image_drift_report_from_properties(reference, data.events(), out_dir)


_MODELS_CACHE: dict[str, Any] = {}


def _detector() -> Any:
    """The committed detector on its torch backend (EigenCAM hooks its layers), loaded once."""
    if "detector" not in _MODELS_CACHE:
        from serving.detector_model import DetectorModel

        try:
            _MODELS_CACHE["detector"] = DetectorModel(backend="torch")
        except (FileNotFoundError, KeyError) as exc:
            raise JobFailed(f"detector model not available: {exc}") from None
    return _MODELS_CACHE["detector"]


def _recommender() -> Any:
    """The served recommender (``serving/models/recommender``), loaded once."""
    if "recommender" not in _MODELS_CACHE:
        from serving.recommender.recommend import RecommenderModel

        directory = Path(__file__).resolve().parent.parent / "serving" / "models" / "recommender"
        try:
            _MODELS_CACHE["recommender"] = RecommenderModel.load(directory)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise JobFailed(f"recommender model not available: {exc}") from None
    return _MODELS_CACHE["recommender"]


def _reference_images(data: WindowData, n: int) -> dict[str, Any]:
    """``n`` reference images: those stored with the reference, else the same training scenes regenerated."""
    from batch.image_drift_report import decode_image
    from batch.reference_build import DETECTOR_REFERENCE_SEED, reference_images_prefix

    version = data.reference().model_version
    keys = sorted(data.store.list(reference_images_prefix(version)))[:n]
    if keys:
        return {k.rsplit("/", 1)[-1]: decode_image(data.store.get(k), k) for k in keys}
    from producers.idcard_scenes import generate_scene

    return {f"scene-{DETECTOR_REFERENCE_SEED + i}": generate_scene(DETECTOR_REFERENCE_SEED + i).image
            for i in range(n)}


def _heatmaps(data: WindowData, out_dir: Path) -> JobResult:
    """EigenCAM overlays of the window's images; on image drift, reference beside window."""
    from batch.heatmap_job import heatmap_job
    from batch.image_drift_report import decode_image

    images = {rid: decode_image(raw, rid) for rid, raw in data.image_bytes().items()}
    events = data.events()
    top = events.groupby("request_id")["max_confidence"].max().fillna(0.0)
    confidences = {str(k): float(v) for k, v in top.items()}
    drift = (job_status(data.store, data.model, data.label, "image_drift") or {}).get("metrics") or {}
    drifted = bool(drift.get("drift_detected"))
    return heatmap_job(images, confidences, _detector(), out_dir, drift_detected=drifted,
                       reference_images=_reference_images(data, 4) if drifted else None)


def window_ratings(data: WindowData) -> pd.DataFrame:
    """The ratings users gave during the window (rating feedback events), as (user_id, item_id, rating)."""
    from batch.window_keys import ratings_key

    key = ratings_key("recommender", data.manifest.window_start)
    if key not in data.manifest.objects:
        raise JobFailed(f"window has no rating feedback ({key} not archived): nothing to retrain MF on")
    table = pd.read_parquet(io.BytesIO(data.verified(key)))
    if table.empty:
        raise JobFailed("window's rating feedback is empty")
    return table[["user_id", "item_id", "rating"]].astype({"user_id": "int64", "item_id": "int64",
                                                            "rating": "float64"})


def _recommender_drift(data: WindowData, out_dir: Path) -> JobResult:
    """Latent-factor drift: MF refitted with the window's ratings against the training ratings."""
    from batch.recommender_drift_report import recommender_drift_report

    raw = _reference_object(data, "ratings.parquet") if data.manifest.reference_key else None
    if raw is not None:
        reference = pd.read_parquet(io.BytesIO(raw))
    else:  # the served model's training ratings
        model = _recommender()
        rows = model.rating_rows
        reference = pd.DataFrame({"userId": model.user_ids[rows[:, 0]], "itemId": model.item_ids[rows[:, 1]],
                                  "rating": rows[:, 2].astype("float64")})
    return recommender_drift_report(reference, window_ratings(data), out_dir)


def _explanations(data: WindowData, out_dir: Path) -> JobResult:
    """EMF top-10 and explanations for the window's users."""
    from batch.explanations_job import explanations_job

    return explanations_job(data.events(), _recommender(), out_dir)


JOBS: dict[str, list[tuple[str, Job]]] = {
    "detector": [("image_drift", _image_drift), ("heatmaps", _heatmaps)],
    "recommender": [("recommender_drift", _recommender_drift), ("explanations", _explanations)],
}


# --- running and recording ------------------------------------------------------------------


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _upload_outputs(store: ObjectStore, prefix: str, out_dir: Path,
                    outputs: dict[str, Path]) -> dict[str, str]:
    """Upload each output (a file, or a folder of files) under ``prefix``, keeping its path
    relative to ``out_dir`` (so the links between a job's files still work); name -> key."""
    keys: dict[str, str] = {}
    root = out_dir.resolve()

    def key_of(path: Path) -> str:
        path = path.resolve()
        return prefix + (path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name)

    for name, path in outputs.items():
        path = Path(path)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                store.put(key_of(file), file.read_bytes(), _content_type(file))
            keys[name] = key_of(path) + "/"
        elif path.is_file():
            keys[name] = key_of(path)
            store.put(keys[name], path.read_bytes(), _content_type(path))
        else:
            log.warning("job output %s (%s) does not exist", name, path)
    return keys


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def run_job(store: ObjectStore, model: str, window_start: float, job: str, fn: Job,
            data: WindowData | JobFailed) -> dict[str, Any]:
    """Run one job, upload its outputs, write its ``status.json``; returns the status record."""
    label = window_label(window_start)
    prefix = report_prefix(model, label, job)
    started = time.time()
    t0 = time.perf_counter()
    keys: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=f"driftstream-{job}-") as tmp:
        try:
            if isinstance(data, JobFailed):
                raise data
            result = fn(data, Path(tmp))
            keys = _upload_outputs(store, prefix, Path(tmp), result.outputs) if result.ok else {}
        except JobFailed as exc:
            result = JobResult.failed(job, exc)
        except Exception as exc:  # a bug or an outage: record it, never stop the next job
            log.exception("job %s on %s/%s crashed", job, model, label)
            result = JobResult.failed(job, f"{type(exc).__name__}: {str(exc)[:500]}")
    duration = time.perf_counter() - t0
    status = {
        "job": job, "model": model, "window_label": label, "window_start": window_start,
        "status": result.status, "reason": result.reason, "started_at": started, "finished_at": time.time(),
        "duration_s": round(duration, 3), "outputs": keys, "metrics": _jsonable(result.metrics),
        "manifest_key": manifest_key(model, window_start),
        "reference_version": None if isinstance(data, JobFailed) else data.manifest.reference_version,
    }
    JOBS_TOTAL.labels(job=job, status=result.status).inc()
    JOB_LAST_STATUS.labels(job=job).set(1 if result.ok else 0)
    JOB_DURATION.labels(job=job).set(duration)
    try:
        store.put(prefix + STATUS_NAME, json.dumps(status, indent=2).encode(), "application/json")
    except Exception as exc:
        log.error("status of %s on %s/%s not stored: %s", job, model, label, exc)
    log.info("job %s on %s/%s: %s%s (%.1fs)", job, model, label, result.status,
             f" ({result.reason})" if result.reason else "", duration)
    return status


def run_window_jobs(settings: Settings, model: str, window_start: float, *, store: ObjectStore | None = None,
                    jobs: list[tuple[str, Job]] | None = None) -> list[dict[str, Any]]:
    """Every job of ``model`` on one archived window; returns their status records."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    from driftstream.offline_env import apply_offline_env

    apply_offline_env(settings.abs_state_dir)  # models and reports never reach for the network
    store = store or ObjectStore(settings)
    todo = JOBS[model] if jobs is None else jobs
    data: WindowData | JobFailed
    try:
        data = WindowData.load(store, model, window_start)
        data.verify_all()
    except JobFailed as exc:
        data = exc
    statuses = []
    for i, (name, fn) in enumerate(todo, 1):
        log.info("window %s/%s: job %d/%d %s", model, window_label(window_start), i, len(todo), name)
        statuses.append(run_job(store, model, window_start, name, fn, data))
    return statuses


def job_status(store: ObjectStore, model: str, window: float | str, job: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get(report_key(model, window, job, STATUS_NAME)))
    except ClientError as exc:
        if _missing(exc):
            return None
        raise
    except json.JSONDecodeError:
        return None


def all_jobs_ok(store: ObjectStore, model: str, window: float | str) -> bool:
    """Whether every job of the window already has an ok status (a re-announced window is skipped)."""
    return all((job_status(store, model, window, name) or {}).get("status") == "ok"
               for name, _ in JOBS[model])


# --- on demand --------------------------------------------------------------------------------


def window_start_of(settings: Settings, window: str | float) -> float:
    """Start of the window containing ``window``: a label, an ISO 8601 time or epoch seconds."""
    size = settings.effective_windows()[2]
    if isinstance(window, int | float):
        t = float(window)
    else:
        text = window.strip()
        try:
            t = float(text)
        except ValueError:
            try:
                t = parse_window_label(text)
            except ValueError:
                try:
                    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"window must be a label like 20261203T171500Z, an ISO time or epoch "
                                     f"seconds, got {window!r}") from None
                t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    return math.floor(t / size) * size


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_since(text: str) -> timedelta:
    """``30m``, ``1h``, ``2d``, ``1w`` or plain seconds."""
    m = _SINCE.match(text)
    if not m:
        raise ValueError(f"since must look like 30m, 1h, 2d (or seconds), got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * unit)


def window_labels(store: ObjectStore, model: str, since: float | None = None,
                  until: float | None = None) -> list[str]:
    """Labels of the window folders of ``model``, oldest first, with start in [since, until)."""
    prefix = f"{WINDOWS_ROOT}/{model}/"
    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": prefix, "Delimiter": "/"}
    if since is not None:
        kwargs["StartAfter"] = prefix + window_label(since)[:-1]  # just before the label of `since`
    labels = []
    for page in store.client.get_paginator("list_objects_v2").paginate(**kwargs):
        for cp in page.get("CommonPrefixes", []):
            label = cp["Prefix"][len(prefix):].rstrip("/")
            try:
                start = parse_window_label(label)
            except ValueError:
                continue
            if (since is None or start >= since) and (until is None or start < until):
                labels.append(label)
    return sorted(labels, key=parse_window_label)


def report(settings: Settings, model: str, window: str | float | None = None, since: timedelta | None = None,
           *, store: ObjectStore | None = None) -> list[dict[str, Any]]:
    """Run the jobs of one window (``window``) or of every archived window since ``now - since``."""
    if (window is None) == (since is None):
        raise ValueError("give exactly one of window and since")
    store = store or ObjectStore(settings)
    if window is not None:
        return run_window_jobs(settings, model, window_start_of(settings, window), store=store)
    assert since is not None
    size = settings.effective_windows()[2]
    first = math.floor((time.time() - since.total_seconds()) / size) * size
    out: list[dict[str, Any]] = []
    for label in window_labels(store, model, since=first):
        out.extend(run_window_jobs(settings, model, parse_window_label(label), store=store))
    return out


# --- listing and summaries ----------------------------------------------------------------------


DRIFT_JOB = {"detector": "image_drift", "recommender": "recommender_drift"}


def _drift_state(statuses: dict[str, dict[str, Any] | None], drift_job: str) -> tuple[bool | None, str]:
    """(drift detected or None when unknown, a word for people: drift, no drift, failed, pending)."""
    st = statuses.get(drift_job)
    if st is None:
        return None, "pending"
    if st.get("status") != "ok":
        return None, "failed"
    detected = (st.get("metrics") or {}).get("drift_detected")
    if detected is None:
        return None, "unknown"
    return bool(detected), "drift" if detected else "no drift"


def _report_links(model: str, label: str, statuses: dict[str, dict[str, Any] | None]) -> dict[str, str]:
    """name -> key of every report file: a job's main page under the job's name, the rest as
    ``<job> <output>`` (heatmap overlays keep their ``heatmap:`` names)."""
    links: dict[str, str] = {}
    for job, st in statuses.items():
        if st is None:
            continue
        outs = dict(st.get("outputs") or {})
        links[job] = outs.pop("html", None) or report_key(model, label, job, STATUS_NAME)
        for name, key in outs.items():
            links[name if name.startswith("heatmap") else f"{job} {name}"] = key
    return links


def window_entry(store: ObjectStore, model: str, label: str) -> dict[str, Any] | None:
    """One listed window: manifest, event count, report keys, each job's status, drift state.

    ``drift`` is True, False or None (unknown); ``drift_status`` says it in words and
    ``failures`` maps a failed job to its reason.
    """
    try:
        manifest = Manifest.from_json(store.get(manifest_key(model, label)))
    except ClientError as exc:
        if _missing(exc):
            return None  # an interrupted write: not a complete window
        raise
    except ValueError:
        manifest = None
    statuses = {name: job_status(store, model, label, name) for name, _ in JOBS[model]}
    drift, drift_status = _drift_state(statuses, DRIFT_JOB[model])
    score = ((statuses.get(DRIFT_JOB[model]) or {}).get("metrics") or {}).get("max_drift_score")
    return {
        "model": model, "window": label, "window_start": parse_window_label(label),
        "window_end": manifest.window_end if manifest else None,
        "manifest": manifest_key(model, label),
        "event_count": manifest.event_count if manifest else None,
        "reference_version": manifest.reference_version if manifest else None,
        "reports": _report_links(model, label, statuses),
        "jobs": {name: (st or {}).get("status", "pending") for name, st in statuses.items()},
        "failures": {name: st.get("reason") for name, st in statuses.items()
                     if st and st.get("status") == "failed"},
        "drift": drift, "drift_status": drift_status, "max_drift_score": score,
    }


def list_reports(settings: Settings, *, store: ObjectStore | None = None, model: str | None = None,
                 since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
    """Archived windows (oldest first) with their reports and drift state, for ``driftstream report list``."""
    store = store or ObjectStore(settings)
    out = []
    for m in MODELS if model is None else (model,):
        for label in window_labels(store, m, since, until):
            entry = window_entry(store, m, label)
            if entry is not None:
                out.append(entry)
    return sorted(out, key=lambda e: (e["window_start"], e["model"]))


def summary_html(summary: dict[str, Any], link_prefix: str = "../../../") -> str:
    """The summary page; links are relative to ``reports/summary/<label>/`` in the bucket."""
    esc = html.escape
    rows = []
    for w in summary["windows"]:
        links = " ".join(f'<a href="{esc(link_prefix + quote(k))}">{esc(n)}</a>'
                         for n, k in w["reports"].items() if not n.startswith("heatmap:"))
        jobs = ", ".join(f"{esc(n)}: {esc(s)}"
                         + (f" ({esc(str(w['failures'][n]))})" if n in w["failures"] else "")
                         for n, s in w["jobs"].items())
        rows.append(f"<tr><td>{esc(w['model'])}</td><td>{esc(w['window'])}</td><td>{w['event_count']}</td>"
                    f"<td>{esc(w['drift_status'])}</td><td>{jobs}</td><td>{links}</td></tr>")
    totals = "".join(f"<li>{esc(m)}: {c['windows']} windows, {c['drift']} with drift, "
                     f"{c['failed_jobs']} failed jobs</li>" for m, c in summary["totals"].items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>driftstream summary</title></head><body>"
        f"<h1>Summary {esc(summary['period_start_iso'])} to {esc(summary['period_end_iso'])}</h1>"
        f"<ul>{totals}</ul><table border='1' cellpadding='4'><tr><th>model</th><th>window</th><th>events</th>"
        f"<th>drift</th><th>jobs</th><th>reports</th></tr>{''.join(rows)}</table></body></html>"
    )


def run_summary(settings: Settings, *, period_s: float | None = None, end: float | None = None,
                store: ObjectStore | None = None) -> dict[str, Any]:
    """Summarise the windows that started in ``[end - period_s, end)``; write JSON, HTML and the index."""
    store = store or ObjectStore(settings)
    period = summary_interval_s() if period_s is None else float(period_s)
    if not (math.isfinite(period) and period > 0):
        raise ValueError(f"period_s must be positive, got {period_s!r}")
    end = time.time() if end is None else float(end)
    start = end - period
    windows = list_reports(settings, store=store, since=start, until=end)
    totals = {m: {"windows": 0, "drift": 0, "failed_jobs": 0, "events": 0} for m in MODELS}
    for w in windows:
        t = totals[w["model"]]
        t["windows"] += 1
        t["drift"] += w["drift"] is True
        t["failed_jobs"] += sum(s == "failed" for s in w["jobs"].values())
        t["events"] += w["event_count"] or 0
    label = window_label(math.floor(start))
    summary = {
        "period_start": start, "period_end": end, "period_start_iso": iso_utc(start),
        "period_end_iso": iso_utc(end), "generated_at": time.time(), "totals": totals, "windows": windows,
        "json_key": f"{SUMMARY_ROOT}/{label}/summary.json",
        "html_key": f"{SUMMARY_ROOT}/{label}/summary.html",
    }
    store.put(summary["json_key"], json.dumps(summary, indent=2).encode(), "application/json")
    store.put(summary["html_key"], summary_html(summary).encode(), "text/html; charset=utf-8")
    summary["index_key"] = regenerate_index(settings, store)
    log.info("summary of %s .. %s: %d windows", summary["period_start_iso"], summary["period_end_iso"],
             len(windows))
    return summary


def regenerate_index(settings: Settings, store: ObjectStore) -> str:
    """Rewrite ``reports/index.html`` (:func:`batch.report_index.render_index`) from every window."""
    from batch.report_index import render_index

    entries = list_reports(settings, store=store)
    series: dict[str, list[tuple[float, float]]] = {}
    for e in entries:
        if e["max_drift_score"] is not None:
            series.setdefault(f"{e['model']} max drift score", []).append((e["window_start"],
                                                                          float(e["max_drift_score"])))
    # links are relative to reports/, so the page works wherever the bucket is served from
    page = render_index(entries, series, threshold=0.2, link_prefix="../")
    store.put(INDEX_KEY, page.encode(), "text/html; charset=utf-8")
    return INDEX_KEY
