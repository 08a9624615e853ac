"""Alert and recording rules: promtool checks and unit tests, plus the conventions every
alert follows (severity, service label, annotations, runbook section, unit-test coverage)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from driftstream.infra_config import COMPOSE_DIR, RULES_DIR, compose_configs, render_prometheus
from driftstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "infra" / "prometheus" / "tests"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)"
)

REQUIRED_ALERTS = {
    "ServiceDown", "MissingUpMetric", "HighErrorRate", "LatencySLOBreach", "LowConfidence",
    "ImagePropertyDrift", "RecommenderDrift", "StreamStalled", "ConsumerLagHigh", "DeadLettersRising",
    "WindowArchiveStalled", "BatchReportFailed",
}


def _rule_files() -> list[Path]:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, RULES_DIR
    return files


def _alerts() -> list[dict]:
    return [r for f in _rule_files() for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)  # type: ignore[list-item]


@needs_promtool
def test_promtool_check_rules() -> None:
    res = _promtool("check", "rules", *map(str, _rule_files()))
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    tests = sorted(TESTS_DIR.glob("*.yml"))
    assert tests
    res = _promtool("test", "rules", *map(str, tests))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(tests)


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert m, duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _runbook_anchors() -> set[str]:
    # GitHub's heading anchors: lower case, spaces to dashes, punctuation dropped
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_follows_the_conventions() -> None:
    alerts = _alerts()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert REQUIRED_ALERTS <= set(names), REQUIRED_ALERTS - set(names)
    anchors = _runbook_anchors()
    for a in alerts:
        name = a["alert"]
        assert a["labels"]["severity"] in {"critical", "medium", "low"}, name
        # the inhibition rule matches on `service`: static, or copied from `job`
        has_service = "service" in a["labels"] or re.search(r'label_replace\([\s\S]*"service"', a["expr"])
        assert has_service, f"{name} has no service label"
        assert {"summary", "description", "runbook_url"} <= set(a["annotations"]), name
        url = a["annotations"]["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", url
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"
        assert 0 < _seconds(a["for"]) <= 30, f"{name}: keep `for` short for the demo"


def _expectations() -> dict[str, set[bool]]:
    """alertname -> {True if a test expects it firing, False if one expects it silent}."""
    seen: dict[str, set[bool]] = {}
    for path in sorted(TESTS_DIR.glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                seen.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    return seen


def test_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    seen = _expectations()
    for name in (a["alert"] for a in _alerts()):
        assert seen.get(name) == {True, False}, f"{name}: unit tests cover {seen.get(name)}"


@needs_promtool
def test_rendered_local_prometheus_config_is_valid(tmp_path: Path) -> None:
    cfg_text = render_prometheus(Settings(state_dir=tmp_path), extra_jobs={"traffic": ["127.0.0.1:18000"]})
    cfg = yaml.safe_load(cfg_text)
    jobs = [j["job_name"] for j in cfg["scrape_configs"]]
    assert jobs == ["prometheus", "alertmanager", "detector", "recommender", "stream-detector",
                    "stream-recommender", "batch", "traffic"]
    assert [Path(p) for p in cfg["rule_files"]] == _rule_files()
    path = tmp_path / "prometheus.yml"
    path.write_text(cfg_text)
    res = _promtool("check", "config", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    with pytest.raises(ValueError, match="host:port"):
        render_prometheus(Settings(), extra_jobs={"bad": ["nohostport"]})
    with pytest.raises(ValueError, match="target"):
        render_prometheus(Settings(), target="cloud")  # type: ignore[arg-type]


@needs_promtool
def test_compose_prometheus_config_is_current_and_valid(tmp_path: Path) -> None:
    committed = (COMPOSE_DIR / "prometheus.yml").read_text()
    regenerate = "run `python -m driftstream.infra_config compose`"
    assert committed == compose_configs()["prometheus.yml"], regenerate
    cfg = yaml.safe_load(committed)
    assert cfg["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    # the container path is where docker-compose.yml mounts infra/prometheus/rules
    cfg["rule_files"] = [str(RULES_DIR / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    res = _promtool("check", "config", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
