"""The outcome of a batch job on an archived window: ``JobResult``, and ``JobFailed`` for bad input.

A job returns a ``JobResult`` that names the files it wrote (``outputs``: name -> local path)
and the numbers it measured (``metrics``). When its input cannot give a meaningful result (an
empty window, a window without images, a corrupt object, a missing reference) it raises
``JobFailed`` with a one-line reason; the worker turns that into a failed ``JobResult`` with
:meth:`JobResult.failed` and records it like any other outcome.

>>> ok = JobResult("image_drift", outputs={"html": Path("/tmp/r.html")}, metrics={"max_drift_score": 0.6})
>>> ok.status, ok.ok, ok.to_dict()["outputs"]
('ok', True, {'html': '/tmp/r.html'})
>>> try:
...     raise JobFailed("window has no images")
... except JobFailed as exc:
...     failed = JobResult.failed("image_drift", exc)
>>> failed.status, failed.reason, failed.ok
('failed', 'window has no images', False)

Reference: the issue "Window archive to S3 and batch jobs" (failure handling, part 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

STATUSES: tuple[str, ...] = ("ok", "failed")


class JobFailed(Exception):
    """A job cannot run on this input; ``reason`` says why in one line, for people and status records."""

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("reason must be a non-empty string")
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class JobResult:
    """What one job produced: ``status`` ok or failed, the failure ``reason``, files and metrics."""

    job: str
    status: Literal["ok", "failed"] = "ok"
    reason: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.job:
            raise ValueError("job must be a non-empty name")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "failed" and not self.reason:
            raise ValueError("a failed job needs a reason")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, job: str, error: JobFailed | str) -> JobResult:
        """The failed result of ``job``, with the reason of ``error``."""
        reason = error.reason if isinstance(error, JobFailed) else str(error)
        return cls(job=job, status="failed", reason=reason)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; paths become strings."""
        return {
            "job": self.job,
            "status": self.status,
            "reason": self.reason,
            "outputs": {name: str(path) for name, path in self.outputs.items()},
            "metrics": dict(self.metrics),
        }
