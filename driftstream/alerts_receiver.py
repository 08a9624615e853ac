"""A small HTTP receiver that records Alertmanager webhook notifications as JSON lines.

Alertmanager POSTs one notification (a group of alerts) per request. Every alert in it
becomes one line of ``record_path``: the request path (``/pager``, ``/email`` ...), the
receiver name, the alert's status, alertname, labels, annotations and ``received_at``
(Unix seconds). ``GET /alerts`` returns the recorded list as JSON (filter with query
parameters ``path``, ``receiver``, ``status`` or ``alertname``); ``GET /-/healthy``
answers ``OK``.

>>> import tempfile
>>> record = Path(tempfile.mkdtemp()) / "alerts.jsonl"
>>> note = {"receiver": "pager", "alerts": [
...     {"status": "firing", "labels": {"alertname": "ServiceDown", "service": "detector"},
...      "annotations": {"summary": "detector is down"}}]}
>>> record_notification(record, "/pager", note)
1
>>> [(a["path"], a["alertname"], a["status"]) for a in read_alerts(record)]
[('/pager', 'ServiceDown', 'firing')]

Reference: Alertmanager webhook payload,
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
FILTER_KEYS = ("path", "receiver", "status", "alertname")

_write_lock = threading.Lock()


def record_notification(record_path: Path, path: str, payload: dict[str, Any]) -> int:
    """Append one line per alert of an Alertmanager ``payload``; returns how many."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("an Alertmanager notification needs an 'alerts' list")
    now = time.time()
    lines = []
    for alert in alerts:
        if not isinstance(alert, dict):
            raise ValueError(f"each alert must be an object, got {alert!r}")
        labels = alert.get("labels") or {}
        lines.append(
            json.dumps(
                {
                    "path": path,
                    "receiver": payload.get("receiver", ""),
                    "status": alert.get("status", payload.get("status", "")),
                    "alertname": labels.get("alertname", ""),
                    "labels": labels,
                    "annotations": alert.get("annotations") or {},
                    "received_at": now,
                },
                sort_keys=True,
            )
        )
    record_path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock, record_path.open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return len(lines)


def read_alerts(record_path: Path) -> list[dict[str, Any]]:
    """Every recorded alert, oldest first; an absent file means none yet."""
    try:
        text = Path(record_path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    # a line being appended concurrently may be incomplete: skip it
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class _Handler(BaseHTTPRequestHandler):
    server: _RecordingServer

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/-/healthy":
            self._reply(HTTPStatus.OK, b"OK\n", "text/plain")
        elif url.path == "/alerts":
            query = {k: v[-1] for k, v in parse_qs(url.query).items() if k in FILTER_KEYS}
            recorded = read_alerts(self.server.record_path)
            alerts = [a for a in recorded if all(a.get(k) == v for k, v in query.items())]
            self._reply(HTTPStatus.OK, json.dumps(alerts).encode())
        else:
            self._reply(HTTPStatus.NOT_FOUND, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b'{"error": "body too large"}')
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            n = record_notification(self.server.record_path, urlsplit(self.path).path, payload)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            self._reply(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(e)}).encode())
            return
        self._reply(HTTPStatus.OK, json.dumps({"recorded": n}).encode())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], record_path: Path) -> None:
        self.record_path = Path(record_path)
        super().__init__(address, _Handler)


def make_server(host: str, port: int, record_path: Path) -> ThreadingHTTPServer:
    """A bound, not yet serving receiver (port 0 picks a free port: see ``server_address``)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    return _RecordingServer((host, port), record_path)


def serve(host: str, port: int, record_path: Path) -> None:
    """Serve until interrupted."""
    server = make_server(host, port, record_path)
    log.info("alerts receiver on http://%s:%d, recording to %s", host, server.server_address[1], record_path)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record Alertmanager webhook notifications.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=15001)
    parser.add_argument("--record", type=Path, default=Path(".state/alerts/received.jsonl"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port, args.record)


if __name__ == "__main__":
    main()
