"""``driftstream stack up | down | status | logs``: the local stack as a whole.

``up`` is idempotent (a healthy component is left alone); ``down`` stops exactly the
processes ``up`` recorded in pid files, in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from driftstream.settings import Settings
from driftstream.stack import process
from driftstream.stack.app_components import app_components
from driftstream.stack.components import (
    AlertmanagerComponent,
    Component,
    KafkaComponent,
    PrometheusComponent,
    SeaweedComponent,
)
from driftstream.stack.process import StackError

CORE = ["kafka", "s3", "prometheus", "alertmanager"]

def core_components(settings: Settings) -> list[Component]:
    s = settings
    return [
        KafkaComponent("kafka", s, {"kafka_port": s.kafka_port, "kafka_controller_port": s.kafka_controller_port},
                       start_timeout_s=90),
        SeaweedComponent("s3", s, {
            "s3_port": s.s3_port, "s3_master_port": s.s3_master_port, "s3_volume_port": s.s3_volume_port,
            "s3_filer_port": s.s3_filer_port, "s3_admin_port": s.s3_admin_port,
        }),
        PrometheusComponent("prometheus", s, {"prometheus_port": s.prometheus_port}),
        AlertmanagerComponent("alertmanager", s, {"alertmanager_port": s.alertmanager_port}),
    ]


def all_components(settings: Settings) -> list[Component]:
    return core_components(settings) + app_components(settings)


def select(settings: Settings, names: list[str] | None) -> list[Component]:
    """The named components in start order; ``None`` means all of them, ``[]`` none."""
    comps = all_components(settings)
    if names is None:
        return comps
    known = {c.name for c in comps}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StackError(f"unknown component(s) {unknown}; known: {sorted(known)}")
    return [c for c in comps if c.name in names]


@dataclass
class ComponentStatus:
    name: str
    healthy: bool
    endpoint: str
    pid: int | None
    running: bool
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "endpoint": self.endpoint, "pid": self.pid,
                "running": self.running, "log": self.log}


def status_of(comp: Component) -> ComponentStatus:
    rec = process.read_pid(comp.pid_file)
    running = bool(rec and rec.alive())
    return ComponentStatus(comp.name, running and comp.healthy(), comp.endpoint,
                           rec.pid if running and rec else None, running, str(comp.log_file))


def _check_ports(comp: Component) -> None:
    for setting, port in comp.ports.items():
        if not process.port_free(comp.settings.host, port):
            env = "DRIFTSTREAM_" + setting.upper()
            raise StackError(
                f"{comp.name}: port {port} on {comp.settings.host} is already in use. "
                f"Fix: stop whatever listens there, or set {env} to a free port."
            )


def start(comp: Component, log: Callable[[str], None] = print) -> ComponentStatus:
    st = status_of(comp)
    if st.healthy:
        log(f"{comp.name:14s} already running (pid {st.pid})")
        return st
    rec = process.read_pid(comp.pid_file)
    if not (rec and rec.alive()):
        _check_ports(comp)
        comp.prepare()
        rec = process.spawn(comp.command(), pid_file=comp.pid_file, log_file=comp.log_file, env=comp.env(),
                            cwd=comp.settings.abs_state_dir)
        log(f"{comp.name:14s} started (pid {rec.pid})")
    process.wait_ready(rec, comp.healthy, name=comp.name, log_file=comp.log_file, timeout_s=comp.start_timeout_s)
    comp.after_start()
    return status_of(comp)


def up(settings: Settings, names: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    settings.abs_state_dir.mkdir(parents=True, exist_ok=True)
    for comp in select(settings, names):
        start(comp, log)


def down(settings: Settings, names: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    for comp in reversed(select(settings, names)):
        rec = process.read_pid(comp.pid_file)
        if rec and rec.alive():
            process.stop(rec)
            log(f"{comp.name:14s} stopped (pid {rec.pid})")
        comp.pid_file.unlink(missing_ok=True)


@contextmanager
def running(settings: Settings, names: list[str], log: Callable[[str], None] = print) -> Iterator[Settings]:
    """``names`` up for the block; on exit stops the ones this block started, never one already running."""
    already = {n for n, st in status(settings, names).items() if st.healthy}
    up(settings, names, log=log)
    try:
        yield settings
    finally:
        down(settings, [n for n in names if n not in already], log=log)


def status(settings: Settings, names: list[str] | None = None) -> dict[str, ComponentStatus]:
    return {c.name: status_of(c) for c in select(settings, names)}
