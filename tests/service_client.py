"""What the service tests read from a running service: its metrics and its JSON log lines."""

from __future__ import annotations

import json
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
