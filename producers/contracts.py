"""Event contracts and the topic registry: the one schema both sides import.

Events are ``msgspec`` structs encoded as JSON. msgspec validates while it decodes
(types, ranges, required fields) at about a microsecond per event, so validation at
every consuming boundary never becomes the bottleneck of a stream worker.

Every event is tagged with ``kind`` (name and schema version) and carries a unique
``event_id`` so consumers can drop duplicates after a replay.

>>> ev = DetectorPrediction(
...     event_id="e1", request_id="r1", model_name="idcard-yolov8n", model_version="v1",
...     event_time=1.0, published_at=1.5, latency_ms=12.0, detections=[],
...     image=ImageProperties(1.0, 4096.0, 0.5, 0.2, 0.33, 0.33, 0.34))
>>> decode(DetectorPrediction, encode(ev)) == ev
True
>>> decode(DetectorPrediction, b'{"kind": "detector.prediction/v1", "event_id": 5}')
Traceback (most recent call last):
...
producers.contracts.ContractError: Expected `str`, got `int` - at `$.event_id`
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1

Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNeg = Annotated[float, msgspec.Meta(ge=0.0)]
EventTime = Annotated[float, msgspec.Meta(gt=0.0, description="Seconds since the Unix epoch (UTC).")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ContractError(ValueError):
    """An event that does not satisfy its contract; the message says what is wrong.

    ``reason`` is a bounded class for metric labels: ``malformed`` (not decodable JSON)
    or ``invalid`` (decodes, but breaks the schema).
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every event: a unique id for de-duplication."""

    event_id: Id


# --- detector -------------------------------------------------------------------------


class Detection(msgspec.Struct, frozen=True):
    bbox: Annotated[list[float], msgspec.Meta(min_length=4, max_length=4, description="x1, y1, x2, y2 px")]
    category: Annotated[str, msgspec.Meta(min_length=1)]
    confidence: Unit

    def __post_init__(self) -> None:
        _finite("bbox", *self.bbox)
        x1, y1, x2, y2 = self.bbox
        if x2 < x1 or y2 < y1:
            raise ValueError(f"bbox must satisfy x1<=x2 and y1<=y2, got {self.bbox}")


class ImageProperties(msgspec.Struct, frozen=True, array_like=False):
    """The seven default Deepchecks image properties of one decoded input."""

    aspect_ratio: NonNeg
    area: NonNeg
    brightness: NonNeg
    rms_contrast: NonNeg
    mean_red_relative_intensity: Unit
    mean_green_relative_intensity: Unit
    mean_blue_relative_intensity: Unit

    def __post_init__(self) -> None:
        _finite("image properties", *msgspec.structs.astuple(self))


class ClaimCheck(msgspec.Struct, frozen=True):
    """Where a large input was put instead of the event (claim-check pattern)."""

    bucket: Id
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class DetectorPrediction(Event, frozen=True, tag="detector.prediction/v1"):
    request_id: Id
    model_name: Id
    model_version: Id
    event_time: EventTime
    published_at: EventTime
    latency_ms: NonNeg
    detections: list[Detection]
    image: ImageProperties
    trace_id: str = ""


class DetectorInput(Event, frozen=True, tag="detector.input/v1"):
    """The original request bytes, inline or by claim-check (exactly one of them)."""

    request_id: Id
    event_time: EventTime
    content_type: Id
    image_bytes: bytes | None = None
    claim_check: ClaimCheck | None = None

    def __post_init__(self) -> None:
        if (self.image_bytes is None) == (self.claim_check is None):
            raise ValueError("exactly one of image_bytes and claim_check must be set")


# --- recommender ----------------------------------------------------------------------


class RecommendedItem(msgspec.Struct, frozen=True):
    item_id: Annotated[int, msgspec.Meta(ge=0)]
    score: float
    rank: Annotated[int, msgspec.Meta(ge=1)]
    explained: bool = False

    def __post_init__(self) -> None:
        _finite("score", self.score)


class RecommenderRequest(Event, frozen=True, tag="recommender.request/v1"):
    request_id: Id
    model_name: Id
    model_version: Id
    event_time: EventTime
    published_at: EventTime
    latency_ms: NonNeg
    user_id: Annotated[int, msgspec.Meta(ge=0)]
    k: Annotated[int, msgspec.Meta(ge=1, le=100)]
    ranked_movies_present: bool
    items: list[RecommendedItem]
    explanation_coverage: Unit
    fallback: bool
    ranked_movies: list[int] | None = None
    trace_id: str = ""

    def __post_init__(self) -> None:
        if self.ranked_movies_present != (self.ranked_movies is not None):
            raise ValueError("ranked_movies_present must say whether ranked_movies is set")


class RatingFeedback(Event, frozen=True, tag="recommender.rating/v1"):
    """A rating a user gave after a recommendation: the ground truth MF is retrained on."""

    user_id: Annotated[int, msgspec.Meta(ge=0)]
    item_id: Annotated[int, msgspec.Meta(ge=0)]
    rating: Annotated[float, msgspec.Meta(ge=1.0, le=5.0)]
    event_time: EventTime
    request_id: str = ""


# --- pipeline -------------------------------------------------------------------------


class PartitionRange(msgspec.Struct, frozen=True):
    partition: Annotated[int, msgspec.Meta(ge=0)]
    first_offset: Annotated[int, msgspec.Meta(ge=0)]
    last_offset: Annotated[int, msgspec.Meta(ge=0)]


class WindowClosed(Event, frozen=True, tag="window.closed/v1"):
    model: Literal["detector", "recommender"]
    window_start: EventTime
    window_end: EventTime
    event_count: Annotated[int, msgspec.Meta(ge=0)]
    manifest_key: str
    reference_version: str
    partitions: list[PartitionRange] = []
    drift_detected: bool = False

    def __post_init__(self) -> None:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")


class DeadLetter(Event, frozen=True, tag="dead_letter/v1"):
    """A record a consumer could not accept: the reason and the original bytes."""

    source_topic: Id
    partition: int
    offset: int
    reason: str
    original: bytes
    failed_at: EventTime
    consumer: str = ""


AnyEvent = DetectorPrediction | DetectorInput | RecommenderRequest | RatingFeedback | WindowClosed | DeadLetter
E = TypeVar("E", bound=Event)

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def new_event_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return time.time()


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(event_type: type[E], data: bytes) -> E:
    """Decode and validate; raises :class:`ContractError` saying what is wrong."""
    dec = _decoders.get(event_type)
    if dec is None:
        dec = _decoders[event_type] = msgspec.json.Decoder(event_type)
    try:
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        raise ContractError(str(exc), "invalid") from None
    except msgspec.DecodeError as exc:
        raise ContractError(str(exc), "malformed") from None


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every event, keyed by its ``kind`` tag."""
    out: dict[str, Any] = {}
    for t in (DetectorPrediction, DetectorInput, RecommenderRequest, RatingFeedback, WindowClosed, DeadLetter):
        tag = msgspec.inspect.type_info(t).tag  # type: ignore[attr-defined]
        out[tag] = msgspec.json.schema(t)
    return out


# --- topic registry -------------------------------------------------------------------

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic the project declares (auto-creation is off on the broker)."""

    name: str
    schema: type[Event]
    partitions: int | None = None  # None: settings.kafka_partitions
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: Literal["delete", "compact"] = "delete"
    max_message_bytes: int | None = None  # None: settings.kafka_max_message_bytes
    dead_letter: str | None = None
    key: str = ""  # what the record key is, for readers

    def config(self, default_max_bytes: int) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            "max.message.bytes": str(self.max_message_bytes or default_max_bytes),
        }


DETECTOR_PREDICTIONS = "driftstream.detector.predictions.v1"
DETECTOR_INPUTS = "driftstream.detector.inputs.v1"
RECOMMENDER_REQUESTS = "driftstream.recommender.requests.v1"
RECOMMENDER_RATINGS = "driftstream.recommender.ratings.v1"
WINDOWS_CLOSED = "driftstream.windows.closed.v1"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in [
        TopicSpec(DETECTOR_PREDICTIONS, DetectorPrediction, dead_letter=dead_letter_topic(DETECTOR_PREDICTIONS),
                  key="model name (windows are partitioned by model)"),
        TopicSpec(DETECTOR_INPUTS, DetectorInput, retention_ms=2 * DAY_MS,
                  dead_letter=dead_letter_topic(DETECTOR_INPUTS), key="request id"),
        TopicSpec(RECOMMENDER_REQUESTS, RecommenderRequest, dead_letter=dead_letter_topic(RECOMMENDER_REQUESTS),
                  key="model name"),
        TopicSpec(RECOMMENDER_RATINGS, RatingFeedback, dead_letter=dead_letter_topic(RECOMMENDER_RATINGS),
                  key="model name"),
        TopicSpec(WINDOWS_CLOSED, WindowClosed, partitions=1, retention_ms=30 * DAY_MS,
                  dead_letter=dead_letter_topic(WINDOWS_CLOSED), key="model"),
    ]
}
for _spec in list(TOPICS.values()):
    if _spec.dead_letter:
        TOPICS[_spec.dead_letter] = TopicSpec(_spec.dead_letter, DeadLetter, partitions=1,
                                              retention_ms=30 * DAY_MS, key="source topic")
