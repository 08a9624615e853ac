"""Render the Prometheus and Alertmanager configs of the local stack from settings.

The rule files and the routing tree live in ``infra/``; only ports, intervals and
receiver addresses come from settings, so the same files serve compose as well.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from driftstream.settings import Settings

INFRA_DIR = Path(__file__).resolve().parent.parent / "infra"
RULES_DIR = INFRA_DIR / "prometheus" / "rules"


def scrape_targets(settings: Settings) -> dict[str, list[str]]:
    """Job name -> static targets of the local stack."""
    h = settings.host
    return {
        "prometheus": [f"{h}:{settings.prometheus_port}"],
        "alertmanager": [f"{h}:{settings.alertmanager_port}"],
        "detector": [f"{h}:{settings.detector_port}"],
        "recommender": [f"{h}:{settings.recommender_port}"],
        "stream-detector": [f"{h}:{settings.stream_detector_metrics_port}"],
        "stream-recommender": [f"{h}:{settings.stream_recommender_metrics_port}"],
        "batch": [f"{h}:{settings.batch_metrics_port}"],
    }


def render_prometheus(settings: Settings, extra_jobs: dict[str, list[str]] | None = None) -> str:
    jobs = scrape_targets(settings) | (extra_jobs or {})
    cfg = {
        "global": {
            "scrape_interval": settings.scrape_interval,
            "evaluation_interval": settings.evaluation_interval,
        },
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{settings.host}:{settings.alertmanager_port}"]}]}]
        },
        "rule_files": [str(p) for p in sorted(RULES_DIR.glob("*.yml"))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
        ],
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def render_alertmanager(settings: Settings) -> str:
    receiver = f"http://{settings.host}:{settings.alerts_receiver_port}"
    cfg = {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "job"],
            "group_wait": "2s",
            "group_interval": "5s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "default", "webhook_configs": [{"url": f"{receiver}/default"}]}],
    }
    return yaml.safe_dump(cfg, sort_keys=False)
