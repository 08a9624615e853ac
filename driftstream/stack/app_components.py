"""The project's own processes (services, stream and batch workers) in the local stack.

Each is a :class:`PythonComponent`: a module run with the venv's interpreter, healthy
when its HTTP endpoint answers. :func:`app_components` lists them in start order.
"""

from __future__ import annotations

from driftstream.settings import Settings
from driftstream.stack.components import PythonComponent


def alerts_record_path(s: Settings):  # noqa: ANN201
    return s.abs_state_dir / "alerts" / "received.jsonl"


def app_components(s: Settings) -> list[PythonComponent]:
    """Alert receiver, both services, one stream worker per app, the batch worker: in start order."""
    return [
        _alerts_receiver(s),
        _service(s, "detector", "serving.detector_service", "detector_port"),
        _service(s, "recommender", "serving.recommender_service", "recommender_port"),
        _stream_worker(s, "detector", "stream_detector_metrics_port"),
        _stream_worker(s, "recommender", "stream_recommender_metrics_port"),
        _batch_worker(s),
    ]


def _alerts_receiver(s: Settings) -> PythonComponent:
    return PythonComponent(
        "alerts-receiver", s, {"alerts_receiver_port": s.alerts_receiver_port},
        module_args=["-m", "driftstream.alerts_receiver", "--host", s.host, "--port", str(s.alerts_receiver_port),
                     "--record", str(alerts_record_path(s))],
        health_url=lambda s: f"http://{s.host}:{s.alerts_receiver_port}/-/healthy",
        endpoint_url=lambda s: f"http://{s.host}:{s.alerts_receiver_port}",
    )


def _service(s: Settings, name: str, module: str, port_field: str) -> PythonComponent:
    return PythonComponent(
        name, s, {port_field: getattr(s, port_field)}, start_timeout_s=180,
        module_args=["-m", module],
        health_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}/readyz",
        endpoint_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}",
    )


def _stream_worker(s: Settings, app: str, port_field: str) -> PythonComponent:
    return PythonComponent(
        f"stream-{app}", s, {port_field: getattr(s, port_field)}, start_timeout_s=90,
        module_args=["-m", "stream_apps.worker", app],
        health_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}/metrics",
        endpoint_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}/metrics",
    )


def _batch_worker(s: Settings) -> PythonComponent:
    return PythonComponent(
        "batch", s, {"batch_metrics_port": s.batch_metrics_port}, start_timeout_s=120,
        module_args=["-m", "batch.worker"],
        health_url=lambda s: f"http://{s.host}:{s.batch_metrics_port}/metrics",
        endpoint_url=lambda s: f"http://{s.host}:{s.batch_metrics_port}/metrics",
    )
