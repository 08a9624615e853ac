"""Alertmanager configs: amtool accepts the local and the compose config, severities route
to the right receivers, credentials stay out of the config, and a real Alertmanager
delivers to the alerts receiver while inhibiting a down service's drift alerts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftstream.alerts_receiver import make_server, read_alerts
from driftstream.infra_config import COMPOSE_DIR, compose_configs, render_alertmanager
from driftstream.settings import Settings

AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
ENTRYPOINT = COMPOSE_DIR / "alertmanager-entrypoint.sh"
pytestmark = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (Debian package prometheus-alertmanager)"
)

SMTP_ENV = {
    "DRIFTSTREAM_SMTP_HOST": "smtp.example.com:587",
    "DRIFTSTREAM_SMTP_USER": "alerts@example.com",
    "DRIFTSTREAM_SMTP_PASSWORD": "s3cr&t|pa\\ss",
    "DRIFTSTREAM_PAGER_WEBHOOK_URL": "https://pager.example.com/hooks/abc?token=x&y=1",
}


def _check_config(path: Path) -> None:
    res = subprocess.run([str(AMTOOL), "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def _receivers(path: Path, *labels: str) -> list[str]:
    res = subprocess.run([str(AMTOOL), "config", "routes", "test", f"--config.file={path}", *labels],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split(",")


def test_local_config_routes_both_receivers_to_the_alerts_receiver(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, host="127.0.0.1", alerts_receiver_port=15999)
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager(settings, env={}))
    _check_config(path)
    cfg = yaml.safe_load(path.read_text())
    assert cfg["route"]["group_by"] == ["alertname", "job"]
    assert {"group_wait", "group_interval", "repeat_interval"} <= set(cfg["route"])
    urls = {r["name"]: r["webhook_configs"][0]["url"] for r in cfg["receivers"]}
    assert urls == {"pager": "http://127.0.0.1:15999/pager", "email": "http://127.0.0.1:15999/email"}
    assert _receivers(path, "severity=critical", "alertname=ServiceDown") == ["pager"]
    assert _receivers(path, "severity=medium") == ["email"]
    assert _receivers(path, "severity=low") == ["email"]
    [rule] = cfg["inhibit_rules"]
    assert rule["equal"] == ["service"]


def test_local_config_with_smtp_env_renders_email_with_a_password_file(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    text = render_alertmanager(settings, env=SMTP_ENV)
    assert SMTP_ENV["DRIFTSTREAM_SMTP_PASSWORD"] not in text
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    _check_config(path)
    cfg = yaml.safe_load(text)
    secret = Path(cfg["global"]["smtp_auth_password_file"])
    assert secret == tmp_path.resolve() / "secrets" / "smtp_password"
    assert secret.read_text() == SMTP_ENV["DRIFTSTREAM_SMTP_PASSWORD"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert receivers["email"]["email_configs"][0]["to"] == "alerts@example.com"
    assert receivers["pager"]["webhook_configs"][0]["url"] == SMTP_ENV["DRIFTSTREAM_PAGER_WEBHOOK_URL"]
    with pytest.raises(ValueError, match="DRIFTSTREAM_SMTP_USER"):
        render_alertmanager(settings, env={"DRIFTSTREAM_SMTP_HOST": "smtp.example.com:587"})


def test_compose_template_is_current_and_the_entrypoint_renders_a_valid_config(tmp_path: Path) -> None:
    committed = (COMPOSE_DIR / "alertmanager.yml").read_text()
    regenerate = "run `python -m driftstream.infra_config compose`"
    assert committed == compose_configs()["alertmanager.yml"], regenerate
    assert "email_configs" in committed and "${DRIFTSTREAM_SMTP_HOST}" in committed
    out, secret = tmp_path / "alertmanager.yml", tmp_path / "secrets" / "smtp_password"
    env = {"PATH": os.environ["PATH"], **SMTP_ENV, "DRIFTSTREAM_SMTP_PASSWORD_FILE": str(secret)}
    template = str(COMPOSE_DIR / "alertmanager.yml")
    res = subprocess.run(["sh", str(ENTRYPOINT), template, str(out), str(AMTOOL), "check-config", str(out)],
                         env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load(out.read_text())
    assert cfg["global"]["smtp_smarthost"] == "smtp.example.com:587"
    assert cfg["global"]["smtp_auth_password_file"] == str(secret)
    assert secret.read_text() == SMTP_ENV["DRIFTSTREAM_SMTP_PASSWORD"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert SMTP_ENV["DRIFTSTREAM_SMTP_PASSWORD"] not in out.read_text()
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert receivers["email"]["email_configs"][0]["to"] == "alerts@example.com"
    assert receivers["pager"]["webhook_configs"][0]["url"] == SMTP_ENV["DRIFTSTREAM_PAGER_WEBHOOK_URL"]
    assert _receivers(out, "severity=critical") == ["audit", "pager"]
    assert _receivers(out, "severity=medium") == ["audit", "email"]
    assert _receivers(out, "team=none") == ["audit", "email"]

    missing = subprocess.run(["sh", str(ENTRYPOINT), template, str(tmp_path / "x.yml"), "true"],
                             env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "DRIFTSTREAM_SMTP_HOST" in missing.stderr


# --- a real Alertmanager delivering to the alerts receiver ------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    record = tmp_path / "received.jsonl"
    server = make_server("127.0.0.1", 0, record)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _alert(name: str, severity: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels}, "annotations": {"summary": name}}


@pytest.mark.skipif(ALERTMANAGER is None, reason="Alertmanager not installed")
def test_real_alertmanager_routes_and_inhibits(tmp_path: Path, receiver: tuple[int, Path]) -> None:
    receiver_port, record = receiver
    settings = Settings(state_dir=tmp_path, host="127.0.0.1", alerts_receiver_port=receiver_port)
    (tmp_path / "alertmanager.yml").write_text(render_alertmanager(settings, env={}))
    port = _free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [str(ALERTMANAGER), f"--config.file={tmp_path / 'alertmanager.yml'}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v2"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "alertmanager.log").read_text()[-2000:])
                time.sleep(0.2)
        alerts = [
            _alert("ServiceDown", "critical", job="detector", service="detector"),
            _alert("ImagePropertyDrift", "medium", model="detector", service="detector"),
            _alert("RecommenderDrift", "medium", model="recommender", service="recommender"),
            _alert("ConsumerLagHigh", "low", job="stream-detector", service="stream-detector"),
        ]
        req = urllib.request.Request(f"{api}/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

        want = {("/pager", "ServiceDown"), ("/email", "RecommenderDrift"), ("/email", "ConsumerLagHigh")}
        deadline = time.monotonic() + 30
        while True:
            got = {(a["path"], a["alertname"]) for a in read_alerts(record)}
            if want <= got or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert want <= got, got
        # all groups flush after the same group_wait: an inhibited alert would be here by now
        time.sleep(1.0)
        assert "ImagePropertyDrift" not in {a["alertname"] for a in read_alerts(record)}
        assert {a["receiver"] for a in read_alerts(record) if a["path"] == "/pager"} == {"pager"}
        with urllib.request.urlopen(f"{api}/alerts?inhibited=true", timeout=5) as resp:
            states = {a["labels"]["alertname"]: a["status"] for a in json.load(resp)}
        assert states["ImagePropertyDrift"]["state"] == "suppressed"
        assert states["ImagePropertyDrift"]["inhibitedBy"]
        assert states["RecommenderDrift"]["state"] == "active"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
