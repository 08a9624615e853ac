"""The project's own processes (services, stream and batch workers) in the local stack.

Each is a :class:`PythonComponent`: a module run with the venv's interpreter, healthy
when its HTTP endpoint answers. Importing this module registers them in start order.
"""

from __future__ import annotations

from driftstream.settings import Settings
from driftstream.stack.components import PythonComponent
from driftstream.stack.stack import APP_COMPONENTS


def alerts_record_path(s: Settings):  # noqa: ANN201
    return s.abs_state_dir / "alerts" / "received.jsonl"


def _alerts_receiver(s: Settings) -> PythonComponent:
    return PythonComponent(
        "alerts-receiver", s, {"alerts_receiver_port": s.alerts_receiver_port},
        module_args=["-m", "driftstream.alerts_receiver", "--host", s.host, "--port", str(s.alerts_receiver_port),
                     "--record", str(alerts_record_path(s))],
        health_url=lambda s: f"http://{s.host}:{s.alerts_receiver_port}/-/healthy",
        endpoint_url=lambda s: f"http://{s.host}:{s.alerts_receiver_port}",
    )


APP_COMPONENTS["alerts-receiver"] = _alerts_receiver


def _service(name: str, module: str, port_field: str) -> None:
    def factory(s: Settings) -> PythonComponent:
        return PythonComponent(
            name, s, {port_field: getattr(s, port_field)}, start_timeout_s=180,
            module_args=["-m", module],
            health_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}/readyz",
            endpoint_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}",
        )

    APP_COMPONENTS[name] = factory


_service("detector", "serving.detector_service", "detector_port")
_service("recommender", "serving.recommender_service", "recommender_port")


def _stream_worker(app: str, port_field: str) -> None:
    def factory(s: Settings) -> PythonComponent:
        port = getattr(s, port_field)
        return PythonComponent(
            f"stream-{app}", s, {port_field: port}, start_timeout_s=90,
            module_args=["-m", "stream_apps.worker", app],
            health_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}/metrics",
            endpoint_url=lambda s: f"http://{s.host}:{getattr(s, port_field)}/metrics",
        )

    APP_COMPONENTS[f"stream-{app}"] = factory


_stream_worker("detector", "stream_detector_metrics_port")
_stream_worker("recommender", "stream_recommender_metrics_port")


def _batch_worker(s: Settings) -> PythonComponent:
    return PythonComponent(
        "batch", s, {"batch_metrics_port": s.batch_metrics_port}, start_timeout_s=120,
        module_args=["-m", "batch.worker"],
        health_url=lambda s: f"http://{s.host}:{s.batch_metrics_port}/metrics",
        endpoint_url=lambda s: f"http://{s.host}:{s.batch_metrics_port}/metrics",
    )


APP_COMPONENTS["batch"] = _batch_worker
