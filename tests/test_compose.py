"""docker-compose.yml: the services a deployment needs, each with a healthcheck, every
mounted file present in the repository, Kafka without topic auto-creation, and configs
that agree with each other (scrape targets, datasource uids, required secrets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from driftstream import dashboards
from driftstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]

REQUIRED = {
    "kafka", "kafka-init", "minio", "minio-init", "prometheus", "alertmanager", "grafana", "loki", "alloy",
    "detector", "recommender", "stream-detector", "stream-recommender", "batch-worker", "alerts-receiver",
}
APP_COMMANDS = {
    "detector": ["driftstream", "serve", "detector"],
    "recommender": ["driftstream", "serve", "recommender"],
    "stream-detector": ["driftstream", "stream", "worker", "detector"],
    "stream-recommender": ["driftstream", "stream", "worker", "recommender"],
    "batch-worker": ["driftstream", "batch", "worker"],
    "alerts-receiver": ["driftstream", "alerts", "receiver"],
}
# Alloy reads container logs from the engine's socket: the one host path outside the repo.
HOST_PATHS_OUTSIDE_REPO = {"/var/run/docker.sock"}


def _bind_sources(service: dict) -> list[str]:
    sources = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            if v.get("type") == "bind":
                sources.append(v["source"])
        elif v.split(":", 1)[0].startswith((".", "/", "~")):
            sources.append(v.split(":", 1)[0])
    return sources


def _named_volumes(service: dict) -> list[str]:
    names = []
    for v in service.get("volumes", []):
        src = v.get("source", "") if isinstance(v, dict) else v.split(":", 1)[0]
        if src and not src.startswith((".", "/", "~")):
            names.append(src)
    return names


def test_required_services_are_present() -> None:
    assert REQUIRED <= set(SERVICES), REQUIRED - set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check and not check.get("disable"), name
    test = check["test"]
    assert test and (isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL")), test


def test_every_bind_mount_exists_in_the_repository() -> None:
    seen = 0
    for name, service in SERVICES.items():
        for src in _bind_sources(service):
            if src in HOST_PATHS_OUTSIDE_REPO:
                continue
            assert src.startswith("./"), f"{name}: mount {src} must be relative to the repository"
            assert (ROOT / src).exists(), f"{name}: {src} does not exist in the repository"
            seen += 1
        for vol in _named_volumes(service):
            assert vol in (COMPOSE.get("volumes") or {}), f"{name}: volume {vol} is not declared"
    assert seen >= 8


def test_kafka_is_kraft_without_auto_create_and_with_16_mb_messages() -> None:
    env = {k: str(v) for k, v in SERVICES["kafka"]["environment"].items()}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)
    limit = str(Settings.model_fields["kafka_max_message_bytes"].default)
    assert limit == str(16 * 1024 * 1024)
    assert env["KAFKA_MESSAGE_MAX_BYTES"] == limit and env["KAFKA_REPLICA_FETCH_MAX_BYTES"] == limit
    assert "ensure_topics" in " ".join(SERVICES["kafka-init"]["command"])


def test_app_services_build_from_the_dockerfile_with_compose_endpoints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt \.", dockerfile)
    for name, command in APP_COMMANDS.items():
        service = SERVICES[name]
        assert service["build"]["context"] == "." and service["build"]["dockerfile"] == "Dockerfile"
        assert service["command"] == command
        env = service["environment"]
        assert env["DRIFTSTREAM_HOST"] == "0.0.0.0"
        assert env["DRIFTSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["DRIFTSTREAM_S3_ENDPOINT_URL"] == "http://minio:9000"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".state", ".git"} <= set(ignored)


def test_dependencies_point_at_services_with_the_needed_state() -> None:
    for name, service in SERVICES.items():
        deps = service.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_completed_successfully":
                assert SERVICES[dep].get("restart") == "no", f"{dep} is a one-shot"


def test_prometheus_scrapes_compose_service_names() -> None:
    cfg = yaml.safe_load((ROOT / "infra" / "compose" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]}
    assert {"detector", "recommender", "stream-detector", "stream-recommender", "batch"} <= set(jobs)
    for targets in jobs.values():
        for target in targets:
            host = target.split(":")[0]
            assert host == "localhost" or host in SERVICES, target
    assert jobs["batch"] == [f"batch-worker:{Settings.model_fields['batch_metrics_port'].default}"]
    [am] = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am.split(":")[0] in SERVICES


def test_grafana_provisioning_matches_the_dashboards() -> None:
    prov = ROOT / "infra" / "grafana" / "provisioning"
    sources = yaml.safe_load((prov / "datasources" / "datasources.yml").read_text())["datasources"]
    assert {(d["type"], d["uid"]) for d in sources} == {("prometheus", dashboards.PROMETHEUS_UID),
                                                         ("loki", dashboards.LOKI_UID)}
    for d in sources:
        assert d["url"].split("//")[1].split(":")[0] in SERVICES
    [provider] = yaml.safe_load((prov / "dashboards" / "driftstream.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./infra/grafana/dashboards"] == provider["options"]["path"]
    assert sorted(p.name for p in (ROOT / "infra" / "grafana" / "dashboards").glob("*.json")) == [
        "models.json", "pipeline.json", "services.json"]


def test_no_secret_is_committed_and_every_required_one_is_documented() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        for key, value in (env.items() if isinstance(env, dict) else ()):
            if re.search(r"PASSWORD|SECRET", key):
                assert str(value).startswith("${"), f"{name}.{key} must come from the environment"
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (ROOT / "infra" / "compose" / "env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, flags=re.M))
    assert required and required <= documented
    alertmanager_env = set(SERVICES["alertmanager"]["environment"])
    assert {"DRIFTSTREAM_SMTP_HOST", "DRIFTSTREAM_SMTP_USER", "DRIFTSTREAM_SMTP_PASSWORD",
            "DRIFTSTREAM_PAGER_WEBHOOK_URL"} <= alertmanager_env <= documented
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert ".env" in gitignore
