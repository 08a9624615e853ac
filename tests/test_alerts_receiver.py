"""The alerts receiver records real Alertmanager-style POSTs and serves them back."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftstream.alerts_receiver import make_server, read_alerts, record_notification

NOTIFICATION = {
    "version": "4",
    "receiver": "pager",
    "status": "firing",
    "groupLabels": {"alertname": "ServiceDown", "job": "detector"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ServiceDown", "job": "detector", "service": "detector",
                       "severity": "critical"},
            "annotations": {"summary": "detector is down", "runbook_url": "docs/runbook.md#servicedown"},
            "startsAt": "2024-01-01T00:00:00Z",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "ServiceDown", "job": "recommender", "service": "recommender"},
            "annotations": {"summary": "recommender is down"},
        },
    ],
}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    record = tmp_path / "alerts" / "received.jsonl"
    server = make_server("127.0.0.1", 0, record)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_post_records_one_line_per_alert_with_path_and_receiver(receiver: tuple[str, Path]) -> None:
    base, record = receiver
    status, body = _post(base + "/pager", json.dumps(NOTIFICATION).encode())
    assert (status, body) == (200, {"recorded": 2})
    status, body = _post(base + "/email", json.dumps({**NOTIFICATION, "receiver": "email",
                                                      "alerts": NOTIFICATION["alerts"][:1]}).encode())
    assert (status, body) == (200, {"recorded": 1})

    lines = record.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["path"] == "/pager" and first["receiver"] == "pager"
    assert first["status"] == "firing" and first["alertname"] == "ServiceDown"
    assert first["labels"]["service"] == "detector"
    assert first["annotations"]["runbook_url"] == "docs/runbook.md#servicedown"
    assert isinstance(first["received_at"], float)
    assert json.loads(lines[1])["status"] == "resolved"

    assert [(a["path"], a["labels"]["job"]) for a in read_alerts(record)] == [
        ("/pager", "detector"), ("/pager", "recommender"), ("/email", "detector")]


def test_get_alerts_lists_and_filters(receiver: tuple[str, Path]) -> None:
    base, _ = receiver
    _post(base + "/pager", json.dumps(NOTIFICATION).encode())
    _post(base + "/email", json.dumps({**NOTIFICATION, "receiver": "email"}).encode())

    status, body = _get(base + "/alerts")
    assert status == 200 and len(json.loads(body)) == 4
    status, body = _get(base + "/alerts?path=/email&status=firing")
    got = json.loads(body)
    assert [(a["path"], a["status"], a["receiver"]) for a in got] == [("/email", "firing", "email")]


def test_health_bad_bodies_and_unknown_paths(receiver: tuple[str, Path]) -> None:
    base, record = receiver
    assert _get(base + "/-/healthy") == (200, b"OK\n")
    assert _get(base + "/nope")[0] == 404
    assert _post(base + "/pager", b"{not json")[0] == 400
    assert _post(base + "/pager", b"[1, 2]")[0] == 400
    status, body = _post(base + "/pager", b'{"receiver": "pager"}')
    assert status == 400 and "alerts" in body["error"]
    assert read_alerts(record) == []
    assert _get(base + "/alerts") == (200, b"[]")


def test_record_notification_rejects_bad_alerts_and_read_skips_torn_lines(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    with pytest.raises(ValueError, match="object"):
        record_notification(record, "/x", {"alerts": ["nope"]})
    record_notification(record, "/x", {"receiver": "r", "alerts": [{"labels": {"alertname": "A"}}]})
    with record.open("a") as f:
        f.write('{"path": "/x", "alertn')  # a line cut short by a concurrent append
    assert [a["alertname"] for a in read_alerts(record)] == ["A"]
    assert read_alerts(tmp_path / "missing.jsonl") == []
