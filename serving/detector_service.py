"""The ID-card detector as a BentoML service: ``/invocation`` returns detections, ``/render`` draws them.

Both endpoints take a multipart upload in the field ``image`` (JPEG, PNG or TIFF). Every
``/invocation`` request publishes two events (the prediction with the seven image properties
of the decoded input, and the original bytes, by claim-check above the size cap) through an
:class:`~producers.publisher.EventPublisher`, off the request path. Bad input gets a 4xx JSON
error ``{"error", "reason", "request_id"}``, is counted in ``detector_rejected_inputs_total{reason}``
and logged; it never takes the worker down.

Custom metrics on ``/metrics``: ``confidence_score`` (decile buckets),
``detector_detections_per_image``, ``detector_no_detection_total``,
``detector_rejected_inputs_total{reason}``, plus the publisher's counters. Logs are JSON lines
on stdout with the request id and trace id (from ``traceparent`` / ``x-trace-id`` or new).

Run: ``python -m serving.detector_service`` (binds ``settings.host:settings.detector_port``;
health at ``/readyz``). ``DRIFTSTREAM_PUBLISH_ENABLED=0`` turns publishing off.
"""

import io
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftstream.offline_env import apply_offline_env
from driftstream.settings import Settings, get_settings
from serving import bentoml_process

SETTINGS = get_settings()
apply_offline_env(SETTINGS.abs_state_dir)  # before bentoml/ultralytics read their environment

import bentoml  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402
from prometheus_client import Counter, Histogram  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402

from producers.contracts import (  # noqa: E402
    DETECTOR_PREDICTIONS,
    Detection,
    DetectorPrediction,
    ImageProperties,
    new_event_id,
    now,
)
from producers.image_properties import estimate_properties  # noqa: E402
from producers.publisher import EventPublisher, publish_enabled  # noqa: E402
from serving.detector_render import draw_detections, to_png  # noqa: E402
from serving.json_logging import (  # noqa: E402
    configure_json_logging,
    log_context,
    new_trace_id,
    trace_id_from_headers,
)
from serving.request_body import read_bounded_body, replay_body  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVICE_NAME = "detector"
MODEL_NAME = "idcard-yolov8n"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: Pillow format -> the content type recorded with the input.
ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff"}
ROUTES = ("/invocation", "/render")

log = logging.getLogger("serving.detector")

CONFIDENCE = Histogram("confidence_score", "Confidence of each detection.",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
DETECTIONS_PER_IMAGE = Histogram("detector_detections_per_image", "Detections in one image.",
                                 buckets=(0, 1, 2, 3, 4, 5, 7, 10, 15, 20))
NO_DETECTION = Counter("detector_no_detection", "Requests whose image had no detection.")
REJECTED = Counter("detector_rejected_inputs", "Requests refused for bad input, by reason.", ["reason"])


class InputRejected(Exception):
    """A request the service refuses: a metric label, an HTTP status and a message for the client."""

    def __init__(self, reason: str, status: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    array: np.ndarray  # H x W x 3 uint8 RGB
    image: Image.Image
    content_type: str


def decode_image(data: bytes) -> DecodedImage:
    """Decode an upload with Pillow into RGB; raise InputRejected saying what is wrong."""
    if not data:
        raise InputRejected("not_an_image", 400, "the uploaded file is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputRejected("not_an_image", 400,
                            "the upload is not a readable image; send a JPEG, PNG or TIFF file") from None
    except Image.DecompressionBombError as exc:
        raise InputRejected("too_large", 413, f"the image has too many pixels: {exc}") from None
    except Exception as exc:  # a plugin that half-recognises the bytes raises its own error
        raise InputRejected("not_an_image", 400,
                            f"the upload is not a readable image ({type(exc).__name__}: {exc}); "
                            "send a JPEG, PNG or TIFF file") from None
    if img.format not in ACCEPTED_FORMATS:
        raise InputRejected("unsupported_format", 415,
                            f"{img.format} images are not accepted; send a JPEG, PNG or TIFF file")
    if img.width * img.height > MAX_PIXELS:
        raise InputRejected("too_large", 413,
                            f"the image is {img.width}x{img.height}; "
                            f"at most {MAX_PIXELS} pixels are accepted")
    try:
        img.load()
    except Exception as exc:  # OSError "image file is truncated", SyntaxError for broken PNG chunks, ...
        raise InputRejected("truncated", 400,
                            f"the {img.format} file is truncated or corrupt and cannot be decoded: "
                            f"{exc}") from None
    content_type = ACCEPTED_FORMATS[img.format]
    try:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    except Exception as exc:
        raise InputRejected("unsupported_format", 415,
                            f"a {img.format} image in mode {img.mode} cannot be converted to RGB: "
                            f"{exc}") from None
    return DecodedImage(np.asarray(rgb), rgb, content_type)


def _error_response(exc: InputRejected, request_id: str, trace_id: str) -> JSONResponse:
    return JSONResponse({"error": exc.message, "reason": exc.reason, "request_id": request_id},
                        status_code=exc.status, headers={"x-request-id": request_id, "x-trace-id": trace_id})


def _reject(exc: InputRejected, endpoint: str) -> None:
    REJECTED.labels(exc.reason).inc()
    log.warning("rejected input: %s", exc.message,
                extra={"reason": exc.reason, "status": exc.status, "endpoint": endpoint})


_IMAGE_FIELD = re.compile(rb'content-disposition:[^\r\n]*;\s*name="image"', re.I)
_FILENAME = re.compile(rb"filename\*?=", re.I)


def image_field_problem(body: bytes, content_type: str) -> InputRejected | None:
    """An 'image' form field sent as text rather than as a file, which BentoML would try to fetch as a URL.

    >>> form = b'--b\\r\\nContent-Disposition: form-data; name="image"\\r\\n\\r\\nhello\\r\\n--b--\\r\\n'
    >>> image_field_problem(form, "multipart/form-data; boundary=b").reason
    'missing_image'
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return InputRejected("not_multipart", 400, "the multipart/form-data request has no boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    pos = body.find(delimiter)
    while pos != -1:
        head_start = pos + len(delimiter)
        head_end = body.find(b"\r\n\r\n", head_start)
        if head_end == -1:
            break
        headers = body[head_start:head_end]
        if _IMAGE_FIELD.search(headers) and not _FILENAME.search(headers):
            return InputRejected("missing_image", 400,
                                 "the field 'image' must be a file upload, not a text value")
        pos = body.find(delimiter, head_end)
    return None


class UploadGuard:
    """ASGI middleware in front of the two endpoints: multipart only, at most ``max_bytes``, 'image' a file.

    The body is read here (it is bounded), so an oversized upload is refused as soon as it
    passes the cap, whether or not it announced a Content-Length.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_UPLOAD_BYTES, routes: tuple[str, ...] = ROUTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        content_type = headers.get("content-type", "")
        media_type = content_type.split(";")[0].strip().lower()
        length = headers.get("content-length", "")
        limit = self.max_bytes + 64 * 1024  # allowance for the form's own headers
        body = b""
        problem = None
        if media_type != "multipart/form-data":
            problem = InputRejected("not_multipart", 415, "send the image as a multipart/form-data upload in "
                                    f"the field 'image' (got content type {media_type or 'none'!r})")
        elif length.isdigit() and int(length) > limit:
            problem = InputRejected("too_large", 413,
                                    f"the upload is {int(length)} bytes; "
                                    f"at most {self.max_bytes} are accepted")
        else:
            read = await read_bounded_body(receive, limit)
            if read is None:
                return  # the client went away
            body, too_large = read
            if too_large:
                problem = InputRejected("too_large", 413,
                                        f"the upload exceeds {self.max_bytes} bytes, the most accepted")
            if problem is None:
                problem = image_field_problem(body, content_type)
        if problem is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        request_id = uuid.uuid4().hex
        trace_id = trace_id_from_headers(headers) or new_trace_id()
        with log_context(request_id, trace_id):
            _reject(problem, scope["path"])
        await _error_response(problem, request_id, trace_id)(scope, receive, send)


def _load_model() -> Any:
    from serving.detector_model import serving_model

    return serving_model(get_settings())


def check_image_size(image: np.ndarray) -> None:
    """The model's size limits as an InputRejected: too small (422) or too large (413)."""
    from serving import detector_model

    try:
        detector_model.validate_image_size(image)
    except ValueError as exc:
        if min(image.shape[:2]) < detector_model.MIN_SIDE:
            raise InputRejected("too_small", 422, f"the image is too small to infer on: {exc}") from None
        raise InputRejected("too_large", 413, f"the image is too large to infer on: {exc}") from None


@bentoml.service(
    name=SERVICE_NAME,
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 64},
    http={"host": SETTINGS.host, "port": SETTINGS.detector_port},
    logging={"access": {"enabled": False}},  # the service writes its own JSON access lines
)
class Detector:
    def __init__(self) -> None:
        configure_json_logging(SERVICE_NAME)
        self.settings = get_settings()
        self.model = _load_model()
        self._model_lock = threading.Lock()
        self.model_name = str(getattr(self.model, "model_name", MODEL_NAME))
        self.model_version = str(self.model.model_version)
        self.publisher = EventPublisher(self.settings, SERVICE_NAME, enabled=publish_enabled(self.settings))
        self._warm_up()
        log.info("detector ready", extra={"model_name": self.model_name, "model_version": self.model_version,
                                           "publishing": self.publisher.enabled})

    def _warm_up(self) -> None:
        blank = np.full((480, 640, 3), 127, np.uint8)
        self.model.predict(blank)
        estimate_properties(blank)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.publisher.close(timeout_s=5.0)

    # --- request handling ----------------------------------------------------------------

    def _ids(self, ctx: bentoml.Context) -> tuple[str, str]:
        headers = ctx.request.headers
        return uuid.uuid4().hex, trace_id_from_headers(headers) or new_trace_id()

    def _read_upload(self, image: Path | None) -> bytes:
        if image is None:
            raise InputRejected("missing_image", 400,
                                "the multipart field 'image' with the image file is missing")
        from bentoml._internal.context import request_temp_dir

        path = Path(image).resolve()
        if not path.is_relative_to(Path(request_temp_dir()).resolve()):
            raise InputRejected("missing_image", 400, "'image' must be an uploaded file")
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise InputRejected("too_large", 413,
                                f"the upload is {size} bytes; at most {MAX_UPLOAD_BYTES} are accepted")
        return path.read_bytes()

    def _infer(self, image: Path | None) -> tuple[bytes, DecodedImage, list[dict[str, Any]]]:
        data = self._read_upload(image)
        decoded = decode_image(data)
        check_image_size(decoded.array)
        with self._model_lock:  # the model is not re-entrant, whatever ``threads`` BentoML is given
            return data, decoded, self.model.predict(decoded.array)

    def _finish(self, ctx: bentoml.Context, request_id: str, trace_id: str, status: int) -> None:
        ctx.response.status_code = status
        ctx.response.headers["x-request-id"] = request_id
        ctx.response.headers["x-trace-id"] = trace_id

    def _handle(self, ctx: bentoml.Context, image: Path | None, endpoint: str) -> Any:
        t0 = time.perf_counter()
        event_time = now()
        request_id, trace_id = self._ids(ctx)
        with log_context(request_id, trace_id):
            try:
                data, decoded, detections = self._infer(image)
            except InputRejected as exc:
                _reject(exc, endpoint)
                self._finish(ctx, request_id, trace_id, exc.status)
                return _error_response(exc, request_id, trace_id)
            except Exception:
                log.exception("inference failed", extra={"endpoint": endpoint})
                self._finish(ctx, request_id, trace_id, 500)
                return JSONResponse({"error": "inference failed; see the service log", "reason": "internal",
                                     "request_id": request_id}, status_code=500)
            latency_ms = (time.perf_counter() - t0) * 1000.0
            if endpoint == "/invocation":
                self._observe(detections)
                self._publish(request_id, trace_id, event_time, latency_ms, data, decoded, detections)
            self._finish(ctx, request_id, trace_id, 200)
            log.info("request", extra={"endpoint": endpoint, "status": 200,
                                       "latency_ms": round(latency_ms, 2), "detections": len(detections),
                                       "height": decoded.array.shape[0], "width": decoded.array.shape[1]})
            return request_id, decoded, detections

    def _observe(self, detections: list[dict[str, Any]]) -> None:
        DETECTIONS_PER_IMAGE.observe(len(detections))
        for det in detections:
            CONFIDENCE.observe(float(det["confidence"]))
        if not detections:
            NO_DETECTION.inc()
            threshold = getattr(self.model, "conf", None)
            why = "no ID card found" + (f" with confidence >= {threshold}" if threshold is not None else "")
            log.warning("no detection: %s", why, extra={"reason": why})

    def _publish(self, request_id: str, trace_id: str, event_time: float, latency_ms: float, data: bytes,
                 decoded: DecodedImage, detections: list[dict[str, Any]]) -> None:
        if not self.publisher.enabled:
            return
        try:
            event = DetectorPrediction(
                event_id=new_event_id(), request_id=request_id, model_name=self.model_name,
                model_version=self.model_version, event_time=event_time, published_at=now(),
                latency_ms=latency_ms, trace_id=trace_id,
                detections=[Detection([float(v) for v in d["bbox"]], str(d["category"]),
                                      min(1.0, max(0.0, float(d["confidence"])))) for d in detections],
                image=ImageProperties(**estimate_properties(decoded.array)),
            )
        except Exception:  # an event that breaks its contract is a bug to log, not a failed request
            log.exception("could not build the prediction event")
            return
        self.publisher.publish(DETECTOR_PREDICTIONS, self.model_name.encode(), event)
        self.publisher.publish_input(request_id, decoded.content_type, data, event_time)

    # --- endpoints ------------------------------------------------------------------------

    # ``image: Path = None``: BentoML cannot take an upload as ``Path | None``; a default is never validated,
    # so a request without the field arrives as None and gets this service's own error and metric.
    @bentoml.api(route="/invocation")
    def invocation(self, ctx: bentoml.Context, image: Path = None) -> dict[str, Any]:  # type: ignore[assignment]
        """Detect ID cards: ``{request_id, model_version, detections: [{bbox, category, confidence}]}``."""
        out = self._handle(ctx, image, "/invocation")
        if isinstance(out, Response):
            return out  # type: ignore[return-value]
        request_id, _, detections = out
        return {"request_id": request_id, "model_version": self.model_version, "detections": detections}

    @bentoml.api(route="/render")
    def render(self, ctx: bentoml.Context, image: Path = None) -> Image.Image:  # type: ignore[assignment]
        """The input with the detected boxes and labels drawn, as PNG."""
        out = self._handle(ctx, image, "/render")
        if isinstance(out, Response):
            return out  # type: ignore[return-value]
        _, decoded, detections = out
        # A Response passes through BentoML untouched, so the PNG is encoded exactly once, here.
        return Response(to_png(draw_detections(decoded.image, detections)),  # type: ignore[return-value]
                        media_type="image/png")


Detector.add_asgi_middleware(UploadGuard)


# --- running it ----------------------------------------------------------------------------


def serve_command(settings: Settings) -> list[str]:
    """The command line that serves the detector on ``settings.host:settings.detector_port``."""
    return bentoml_process.serve_command("serving.detector_service:Detector", settings.host, settings.detector_port)


def serve_env(settings: Settings) -> dict[str, str]:
    return bentoml_process.serve_env(settings, SERVICE_NAME, {"DRIFTSTREAM_DETECTOR_PORT": str(settings.detector_port)})


def serve(settings: Settings) -> None:
    """Serve in the foreground, replacing this process (so a pid file keeps pointing at the server)."""
    cmd = serve_command(settings)
    sys.stdout.write(json.dumps({"message": "starting detector", "command": cmd}) + "\n")
    sys.stdout.flush()
    os.execve(cmd[0], cmd, serve_env(settings))


if __name__ == "__main__":
    serve(SETTINGS)
