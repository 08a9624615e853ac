"""Structured JSON logs, one object per line, carrying the request id and trace id of the work at hand.

The ids live in context variables, so every log call made while a request is handled
(in the handler, the model, the publisher) carries them without passing them around.
The trace id comes from a W3C ``traceparent`` header or an ``x-trace-id`` header, or is
generated, so a log line can be joined with the request's events and with other services.

>>> import io
>>> stream = io.StringIO()
>>> logger = logging.getLogger("doctest.json_logging")
>>> handler = configure_json_logging("detector", stream=stream, loggers=("doctest.json_logging",))
>>> with log_context(request_id="r1", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"):
...     logger.warning("no detection", extra={"reason": "nothing above threshold"})
>>> line = json.loads(stream.getvalue())
>>> line["level"], line["service"], line["request_id"], line["reason"]
('WARNING', 'detector', 'r1', 'nothing above threshold')
>>> trace_id_from_headers({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
'4bf92f3577b34da6a3ce929d0e0e4736'

Reference: W3C Trace Context, https://www.w3.org/TR/trace-context/#traceparent-header
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
DEFAULT_LOGGERS: tuple[str, ...] = ("serving", "producers", "driftstream", "stream_apps", "batch")


def new_trace_id() -> str:
    """A random 32-hex-digit trace id (the W3C trace-id format)."""
    return uuid.uuid4().hex


def trace_id_from_headers(headers: Mapping[str, str]) -> str | None:
    """The trace id of a ``traceparent`` header, else a sane ``x-trace-id``, else None.

    >>> trace_id_from_headers({"x-trace-id": "abc-123"}), trace_id_from_headers({"traceparent": "junk"})
    ('abc-123', None)
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    match = _TRACEPARENT.match(lowered.get("traceparent", "").strip().lower())
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    given = lowered.get("x-trace-id", "").strip()
    return given if _TRACE_ID.match(given) else None


@contextlib.contextmanager
def log_context(request_id: str = "", trace_id: str = "") -> Iterator[None]:
    """Within the block, log lines carry these ids."""
    tokens = (request_id_var.set(request_id), trace_id_var.set(trace_id))
    try:
        yield
    finally:
        request_id_var.reset(tokens[0])
        trace_id_var.reset(tokens[1])


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, service, logger, message, ids, extra fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, trace_id = request_id_var.get(), trace_id_var.get()
        if request_id:
            out["request_id"] = request_id
        if trace_id:
            out["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_json_logging(service: str, level: int = logging.INFO, stream: IO[str] | None = None,
                           loggers: Sequence[str] = DEFAULT_LOGGERS) -> logging.Handler:
    """Send the project's loggers to ``stream`` (stdout) as JSON lines; idempotent per logger.

    The loggers stop propagating, so a framework's root handler does not print them twice.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.set_name(f"json:{service}")
    for name in loggers:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if (h.get_name() or "").startswith("json:")]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return handler
