"""Where an archived window and its reports live in S3, and what a window's manifest says.

Key layout (every key is deterministic, so a retried write overwrites instead of duplicating)::

    windows/<model>/<label>/events.parquet         the window's prediction events, one row each
    windows/<model>/<label>/inputs.parquet         detector: request_id -> image key or claim-check
    windows/<model>/<label>/images/<request>.<ext> detector: inline input images
    windows/<model>/<label>/manifest.json          written last: its presence means "complete"
    reports/<model>/<label>/<job>/...              a batch job's outputs and its status.json

``<model>`` is the model family (``detector`` or ``recommender``) and ``<label>`` the window
start in UTC, ISO 8601 basic format (``20261203T171500Z``; a fractional start keeps
milliseconds, ``20261203T171500.250Z``). Labels sort in time order.

>>> label = window_label(1796318100.0)
>>> label, parse_window_label(label)
('20261203T171500Z', 1796318100.0)
>>> manifest_key("detector", 1796318100.0)
'windows/detector/20261203T171500Z/manifest.json'
>>> image_key("detector", 1796318100.0, "req/1", "image/png")
'windows/detector/20261203T171500Z/images/req%2F1.png'
>>> report_key("recommender", label, "explanations", "status.json")
'reports/recommender/20261203T171500Z/explanations/status.json'
>>> m = Manifest(model="detector", window_start=1796318100.0, window_end=1796318400.0,
...              reference_version="v3", counts={"events": 2})
>>> Manifest.from_json(m.to_json()) == m
True
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from producers.contracts import DETECTOR_INPUTS, DETECTOR_PREDICTIONS, RECOMMENDER_RATINGS, RECOMMENDER_REQUESTS

MANIFEST_SCHEMA_VERSION = 1
MODELS = ("detector", "recommender")
WINDOWS_ROOT = "windows"
REPORTS_ROOT = "reports"

# Which model family the records of each archived topic belong to.
TOPIC_MODEL = {
    DETECTOR_PREDICTIONS: "detector", DETECTOR_INPUTS: "detector", RECOMMENDER_REQUESTS: "recommender",
    RECOMMENDER_RATINGS: "recommender",
}
# The topic whose records are the window's events (the others are attachments).
EVENTS_TOPIC = {"detector": DETECTOR_PREDICTIONS, "recommender": RECOMMENDER_REQUESTS}

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/webp": "webp",
               "image/bmp": "bmp", "image/tiff": "tiff", "image/gif": "gif"}


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def window_label(window_start: float) -> str:
    """The window start as UTC ISO 8601 basic (``YYYYMMDDTHHMMSSZ``), milliseconds if fractional."""
    if not math.isfinite(window_start):
        raise ValueError(f"window_start must be finite, got {window_start!r}")
    ms = round(window_start * 1000)
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    base = dt.strftime("%Y%m%dT%H%M%S")
    return f"{base}.{ms % 1000:03d}Z" if ms % 1000 else f"{base}Z"


def parse_window_label(label: str) -> float:
    """Inverse of :func:`window_label`: seconds since the epoch."""
    if not label.endswith("Z"):
        raise ValueError(f"window label must end with 'Z' (UTC), got {label!r}")
    body, _, frac = label[:-1].partition(".")
    try:
        dt = datetime.strptime(body, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"window label must look like 20261203T171500Z, got {label!r}") from None
    if frac and not (frac.isdigit() and len(frac) == 3):
        raise ValueError(f"window label fraction must be 3 digits, got {label!r}")
    return dt.timestamp() + (int(frac) / 1000 if frac else 0.0)


def iso_utc(t: float) -> str:
    """Extended ISO 8601 in UTC, for people reading a manifest."""
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


def _label(window: float | str) -> str:
    return window if isinstance(window, str) else window_label(window)


def window_prefix(model: str, window: float | str) -> str:
    """``windows/<model>/<label>/`` for a window start (seconds) or label."""
    _check_model(model)
    return f"{WINDOWS_ROOT}/{model}/{_label(window)}/"


def events_key(model: str, window: float | str) -> str:
    return window_prefix(model, window) + "events.parquet"


def inputs_key(model: str, window: float | str) -> str:
    return window_prefix(model, window) + "inputs.parquet"


def ratings_key(model: str, window: float | str) -> str:
    """The window's rating feedback (recommender): the ground truth MF is retrained on."""
    return window_prefix(model, window) + "ratings.parquet"


def manifest_key(model: str, window: float | str) -> str:
    return window_prefix(model, window) + "manifest.json"


def image_extension(content_type: str) -> str:
    """File extension for an input's content type (``bin`` when unknown)."""
    return _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), "bin")


def image_key(model: str, window: float | str, request_id: str, content_type: str) -> str:
    """Key of an inline input image; the request id is percent-encoded so it stays one path segment."""
    name = f"{quote(request_id, safe='')}.{image_extension(content_type)}"
    return f"{window_prefix(model, window)}images/{name}"


def report_prefix(model: str, window: float | str, job: str) -> str:
    """``reports/<model>/<label>/<job>/``: a job's outputs for one window."""
    _check_model(model)
    if not job or "/" in job:
        raise ValueError(f"job must be a non-empty name without '/', got {job!r}")
    return f"{REPORTS_ROOT}/{model}/{_label(window)}/{job}/"


def report_key(model: str, window: float | str, job: str, name: str) -> str:
    return report_prefix(model, window, job) + name


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Manifest:
    """What one archived window holds; written last, so its presence marks the window complete.

    ``partitions`` maps a topic to the offset ranges the window's records came from:
    ``{topic: [{"partition", "first_offset", "last_offset", "count"}]}``. ``objects``
    maps every other key of the window to ``{"sha256", "size", "content_type"}``;
    ``events_sha256`` repeats the checksum of ``events.parquet`` for readers that only
    want the events.
    """

    model: str
    window_start: float
    window_end: float
    reference_version: str
    counts: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    events_key: str = ""
    events_sha256: str = ""
    reference_key: str = ""  # S3 key of the reference profile the version names ("" when none)
    model_names: list[str] = field(default_factory=list)
    model_versions: list[str] = field(default_factory=list)
    closed_by: str = "watermark"
    archived_at: float = 0.0
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_model(self.model)
        if not self.window_end > self.window_start:
            raise ValueError("window_end must be after window_start")

    @property
    def label(self) -> str:
        return window_label(self.window_start)

    @property
    def key(self) -> str:
        return manifest_key(self.model, self.window_start)

    @property
    def event_count(self) -> int:
        return int(self.counts.get("events", 0))

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["window_label"] = self.label
        doc["window_start_iso"] = iso_utc(self.window_start)
        doc["window_end_iso"] = iso_utc(self.window_end)
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; raises ValueError when it is not one."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("manifest must be a JSON object")
        names = set(cls.__dataclass_fields__)
        missing = {"model", "window_start", "window_end", "reference_version"} - set(doc)
        if missing:
            raise ValueError(f"manifest lacks {sorted(missing)}")
        if doc.get("schema_version", MANIFEST_SCHEMA_VERSION) > MANIFEST_SCHEMA_VERSION:
            raise ValueError(f"manifest schema_version {doc['schema_version']} is newer than this reader")
        return cls(**{k: v for k, v in doc.items() if k in names})
