"""Render the Prometheus and Alertmanager configs of the local stack and of docker compose.

The alert and recording rules live in ``infra/prometheus/rules``; this module renders
what differs between deployments: scrape targets, intervals and the Alertmanager
routing tree with its receivers.

Routing: ``severity=critical`` goes to a pager-style webhook, ``medium`` and ``low`` go
to email. A service that is down (``ServiceDown``, ``MissingUpMetric``) inhibits the
confidence and drift alerts carrying the same ``service`` label.

Receiver credentials never live in the repository; they come from the environment:
``DRIFTSTREAM_SMTP_HOST`` (``host:port``), ``DRIFTSTREAM_SMTP_USER``,
``DRIFTSTREAM_SMTP_PASSWORD``, ``DRIFTSTREAM_PAGER_WEBHOOK_URL`` and optionally
``DRIFTSTREAM_SMTP_FROM`` and ``DRIFTSTREAM_ALERT_EMAIL_TO`` (both default to the SMTP
user). In the local stack, without them, both routes end at the project's alerts
receiver: the pager webhook at ``/pager`` and email, which cannot be delivered
locally, as a webhook at ``/email``.

>>> from driftstream.settings import Settings
>>> settings = Settings(host="127.0.0.1", alerts_receiver_port=15001)
>>> cfg = yaml.safe_load(render_alertmanager(settings, env={}))
>>> [(r["receiver"], r["matchers"]) for r in cfg["route"]["routes"]]
[('pager', ['severity="critical"']), ('email', ['severity=~"medium|low"'])]
>>> cfg["receivers"][1]["webhook_configs"][0]["url"]
'http://127.0.0.1:15001/email'

Reference: Prometheus configuration and Alertmanager configuration documentation,
https://prometheus.io/docs/alerting/latest/configuration/
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from driftstream.settings import Settings

INFRA_DIR = Path(__file__).resolve().parent.parent / "infra"
RULES_DIR = INFRA_DIR / "prometheus" / "rules"
COMPOSE_DIR = INFRA_DIR / "compose"

Target = Literal["local", "compose"]

#: Environment variables holding receiver addresses and credentials.
ALERT_ENV_VARS = (
    "DRIFTSTREAM_SMTP_HOST",
    "DRIFTSTREAM_SMTP_USER",
    "DRIFTSTREAM_SMTP_PASSWORD",
    "DRIFTSTREAM_SMTP_FROM",
    "DRIFTSTREAM_ALERT_EMAIL_TO",
    "DRIFTSTREAM_PAGER_WEBHOOK_URL",
)

#: Compose service name and port of the alerts receiver (it records every alert there).
COMPOSE_ALERTS_RECEIVER = "http://alerts-receiver:{port}"

# Alerts a down service makes meaningless: they are inhibited while it is down.
_INHIBITED_WHEN_DOWN = ("LowConfidence", "ImagePropertyDrift", "RecommenderDrift")
_DOWN_ALERTS = ("ServiceDown", "MissingUpMetric")

_TIMING: dict[Target, dict[str, str]] = {
    # short enough that a demo sees a notification within ~15 s of a change
    "local": {"group_wait": "2s", "group_interval": "5s", "repeat_interval": "1h"},
    "compose": {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "3h"},
}


def alert_env(settings: Settings) -> dict[str, str]:
    """Receiver credentials from settings (environment or .env), as ``render_alertmanager`` takes them."""
    out: dict[str, str] = {}
    for var in ALERT_ENV_VARS:
        value = getattr(settings, var.removeprefix("DRIFTSTREAM_").lower(), None)
        if value is not None:
            out[var] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return out


def _default(field: str) -> Any:
    """The default of a Settings field: compose containers run with the defaults."""
    return Settings.model_fields[field].default


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


def compose_scrape_targets() -> dict[str, list[str]]:
    """Job name -> targets in docker compose (service names; the same job names as locally)."""
    return {
        "prometheus": ["localhost:9090"],
        "alertmanager": ["alertmanager:9093"],
        "detector": [f"detector:{_default('detector_port')}"],
        "recommender": [f"recommender:{_default('recommender_port')}"],
        "stream-detector": [f"stream-detector:{_default('stream_detector_metrics_port')}"],
        "stream-recommender": [f"stream-recommender:{_default('stream_recommender_metrics_port')}"],
        "batch": [f"batch-worker:{_default('batch_metrics_port')}"],
        "loki": ["loki:3100"],
        "grafana": ["grafana:3000"],
        "alloy": ["alloy:12345"],
    }


def render_prometheus(
    settings: Settings,
    extra_jobs: dict[str, list[str]] | None = None,
    *,
    target: Target = "local",
) -> str:
    """prometheus.yml for the local stack (absolute rule paths) or for compose (mounted rules)."""
    if target == "local":
        jobs = scrape_targets(settings)
        intervals = {
            "scrape_interval": settings.scrape_interval,
            "evaluation_interval": settings.evaluation_interval,
        }
        alertmanager = f"{settings.host}:{settings.alertmanager_port}"
        rule_files = [str(p) for p in sorted(RULES_DIR.glob("*.yml"))]
    elif target == "compose":
        jobs = compose_scrape_targets()
        intervals = {"scrape_interval": "15s", "evaluation_interval": "15s"}
        alertmanager = "alertmanager:9093"
        rule_files = ["/etc/prometheus/rules/*.yml"]
    else:
        raise ValueError(f"target must be 'local' or 'compose', got {target!r}")
    for job, targets in (extra_jobs or {}).items():
        if not job or not targets or not all(isinstance(t, str) and ":" in t for t in targets):
            raise ValueError(f"extra job {job!r} needs a name and host:port targets, got {targets!r}")
    jobs = jobs | (extra_jobs or {})
    cfg = {
        "global": intervals,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "rule_files": rule_files,
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
        ],
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def _route(target: Target, audit: bool) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    if audit:
        # every alert is also recorded by the alerts receiver; `continue` lets it go on
        routes.append({"receiver": "audit", "continue": True})
    routes += [
        {"receiver": "pager", "matchers": ['severity="critical"']},
        {"receiver": "email", "matchers": ['severity=~"medium|low"']},
    ]
    if audit:
        # once the audit route matched, the root's receiver no longer applies
        routes.append({"receiver": "email"})
    # the default receiver catches alerts without a known severity
    return {"receiver": "email", "group_by": ["alertname", "job"], **_TIMING[target], "routes": routes}


def _inhibit_rules() -> list[dict[str, Any]]:
    return [
        {
            "source_matchers": [f'alertname=~"{"|".join(_DOWN_ALERTS)}"'],
            "target_matchers": [f'alertname=~"{"|".join(_INHIBITED_WHEN_DOWN)}"'],
            "equal": ["service"],
        }
    ]


def _email_receiver(host: str, to: str) -> dict[str, Any]:
    return {"name": "email", "email_configs": [{"to": to, "smarthost": host, "send_resolved": True}]}


def _webhook_receiver(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "webhook_configs": [{"url": url, "send_resolved": True}]}


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)


def _local_alertmanager(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    receiver = f"http://{settings.host}:{settings.alerts_receiver_port}"
    cfg: dict[str, Any] = {"route": _route("local", audit=False)}
    pager_url = env.get("DRIFTSTREAM_PAGER_WEBHOOK_URL") or f"{receiver}/pager"
    smtp_host = env.get("DRIFTSTREAM_SMTP_HOST")
    if smtp_host:
        user = env.get("DRIFTSTREAM_SMTP_USER", "")
        sender = env.get("DRIFTSTREAM_SMTP_FROM") or user
        to = env.get("DRIFTSTREAM_ALERT_EMAIL_TO") or user
        if not sender or not to:
            raise ValueError(
                "DRIFTSTREAM_SMTP_HOST is set: also set DRIFTSTREAM_SMTP_USER "
                "(or DRIFTSTREAM_SMTP_FROM and DRIFTSTREAM_ALERT_EMAIL_TO)"
            )
        smtp: dict[str, Any] = {"smtp_smarthost": smtp_host, "smtp_from": sender, "smtp_require_tls": True}
        if user:
            smtp["smtp_auth_username"] = user
        password = env.get("DRIFTSTREAM_SMTP_PASSWORD")
        if password:
            # the rendered config names a file, so the password never sits in the config
            secret = settings.abs_state_dir / "secrets" / "smtp_password"
            _write_secret(secret, password)
            smtp["smtp_auth_password_file"] = str(secret)
        cfg["global"] = smtp
        email = _email_receiver(smtp_host, to)
    else:
        email = _webhook_receiver("email", f"{receiver}/email")
    cfg["receivers"] = [_webhook_receiver("pager", pager_url), email]
    cfg["inhibit_rules"] = _inhibit_rules()
    return cfg


def _compose_alertmanager(settings: Settings) -> dict[str, Any]:
    # ${...} placeholders are filled from the environment by infra/compose/alertmanager-entrypoint.sh
    audit_url = COMPOSE_ALERTS_RECEIVER.format(port=_default("alerts_receiver_port")) + "/audit"
    return {
        "global": {
            "smtp_smarthost": "${DRIFTSTREAM_SMTP_HOST}",
            "smtp_from": "${DRIFTSTREAM_SMTP_FROM}",
            "smtp_auth_username": "${DRIFTSTREAM_SMTP_USER}",
            "smtp_auth_password_file": "${DRIFTSTREAM_SMTP_PASSWORD_FILE}",
            "smtp_require_tls": True,
        },
        "route": _route("compose", audit=True),
        "receivers": [
            _webhook_receiver("audit", audit_url),
            _webhook_receiver("pager", "${DRIFTSTREAM_PAGER_WEBHOOK_URL}"),
            _email_receiver("${DRIFTSTREAM_SMTP_HOST}", "${DRIFTSTREAM_ALERT_EMAIL_TO}"),
        ],
        "inhibit_rules": _inhibit_rules(),
    }


def render_alertmanager(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    target: Target = "local",
) -> str:
    """alertmanager.yml; ``env`` (default ``os.environ``) supplies receiver credentials.

    ``target="local"`` writes the SMTP password, when given, to
    ``<state_dir>/secrets/smtp_password`` (mode 0600) and references it with
    ``smtp_auth_password_file``. ``target="compose"`` renders the committed template
    whose ``${DRIFTSTREAM_...}`` placeholders the compose entrypoint fills.
    """
    if target == "local":
        cfg = _local_alertmanager(settings, os.environ if env is None else env)
    elif target == "compose":
        cfg = _compose_alertmanager(settings)
    else:
        raise ValueError(f"target must be 'local' or 'compose', got {target!r}")
    return yaml.safe_dump(cfg, sort_keys=False)


_COMPOSE_HEADER = (
    "# Generated by `python -m driftstream.infra_config compose`; edit driftstream/infra_config.py.\n"
)


def compose_configs(settings: Settings | None = None) -> dict[str, str]:
    """File name under infra/compose -> text of the compose Prometheus and Alertmanager configs."""
    settings = settings or Settings()
    am_note = (
        "# A template: alertmanager-entrypoint.sh fills the ${DRIFTSTREAM_...} placeholders from the\n"
        "# environment and keeps the SMTP password in a file; no credential is stored here.\n"
    )
    return {
        "prometheus.yml": _COMPOSE_HEADER + render_prometheus(settings, target="compose"),
        "alertmanager.yml": _COMPOSE_HEADER + am_note + render_alertmanager(settings, target="compose"),
    }


def write_compose_configs(out_dir: Path = COMPOSE_DIR) -> list[Path]:
    """Write the compose configs into ``out_dir``; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in compose_configs().items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("compose", help="write infra/compose/prometheus.yml and alertmanager.yml")
    sub.add_parser("prometheus", help="print the local prometheus.yml")
    sub.add_parser("alertmanager", help="print the local alertmanager.yml")
    args = parser.parse_args(argv)
    if args.what == "compose":
        for path in write_compose_configs():
            print(path)
    elif args.what == "prometheus":
        print(render_prometheus(Settings()), end="")
    else:
        print(render_alertmanager(Settings()), end="")


if __name__ == "__main__":
    main()
