"""A BentoML service started as its own process for the tests, and what they read from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


class ServiceClient:
    """Reads a running service's ``/metrics`` and its JSON log lines."""

    def __init__(self, url: str, log_file: Path) -> None:
        self.url = url
        self.log_file = log_file

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        text = requests.get(self.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return sample.value
        return 0.0

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


@contextmanager
def service_process(module: str, url: str, log_file: Path, env: dict[str, str],
                    ready_timeout_s: float) -> Iterator[None]:
    """Run ``python -m module`` until the block ends; ready when ``url/readyz`` answers 200."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            assert proc.poll() is None, f"{module} exited during start-up:\n{log_file.read_text()[-3000:]}"
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{module} not ready in {ready_timeout_s}s"
            time.sleep(0.5)
        yield
    finally:
        # BentoML's workers run in sessions of their own: remember them to be sure they are gone.
        workers = [(pid, _start_ticks(pid)) for pid in _descendants(proc.pid)]
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid, started in workers:
            if _start_ticks(pid) == started:  # still the same process, not a reused pid
                os.kill(pid, signal.SIGKILL)


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError):
        return None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out
